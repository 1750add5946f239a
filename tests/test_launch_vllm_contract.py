"""The vllm backend against vLLM's own sources (0.10.2 and 0.33.0), read with ``ast``: every
keyword the backend passes to ``LLM``, ``SamplingParams``, ``LoRARequest``, ``TokensPrompt``,
``generate``, ``sleep``/``wake_up`` exists there, and every value it passes for a closed set
(``max_lora_rank``, ``dtype``, ``logprobs_mode``) is in vLLM's set. The keywords are recorded from
the backend itself running one sample + train step, so a keyword added later is checked too."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from test_launch_vllm import PROMPTS, FakeLLM  # noqa: E402
from vllm_upstream import GGUF_LOADER, SKIP_REASON, VERSIONS, release, upstream_dir  # noqa: E402

from discover_ttt.backend import TrainItem  # noqa: E402
from discover_ttt.launch import vllm  # noqa: E402
from discover_ttt.launch.lora.trainer import Trainer  # noqa: E402

pytestmark = [
    pytest.mark.contract,
    pytest.mark.skipif(upstream_dir() is None, reason=SKIP_REASON),
]


class RecordingEngine(FakeLLM):
    def __init__(self, eos, calls):
        super().__init__(eos)
        self.record = calls

    def generate(self, *args, **kwargs):
        self.record["generate"].append((len(args), set(kwargs)))
        return super().generate(*args, **kwargs)

    def sleep(self, *args, **kwargs):
        self.record["sleep"].append((len(args), set(kwargs)))

    def wake_up(self, *args, **kwargs):
        self.record["wake_up"].append((len(args), set(kwargs)))

    def reset_prefix_cache(self, *args, **kwargs):
        self.record["reset_prefix_cache"].append((len(args), set(kwargs)))
        super().reset_prefix_cache()


@pytest.fixture(scope="module")
def used(tmp_path_factory):
    """{vLLM name: [(positional count, keywords)]} as the backend calls them in start-up, a
    sample and a train step (sleep mode on), and the values of the engine's keywords."""
    calls: dict[str, list] = defaultdict(list)
    values: dict = {}
    params = vllm.VllmParams(
        model="tiny-random",
        device="cpu",
        context_window=4096,
        adapter_dir=str(tmp_path_factory.mktemp("adapters")),
        max_new_tokens=8,
        enable_sleep_mode=True,
        lr=1e-2,
    )
    trainer = Trainer(params)

    def make(name, result):
        def call(*args, **kwargs):
            calls[name].append((len(args), set(kwargs)))
            if name == "LLM":
                values.update(kwargs)
            return result(kwargs)

        return call

    api = SimpleNamespace(
        LLM=make("LLM", lambda kw: RecordingEngine(trainer.tokenizer.eos_token_id, calls)),
        SamplingParams=make("SamplingParams", lambda kw: SimpleNamespace(**kw)),
        TokensPrompt=make("TokensPrompt", dict),
        LoRARequest=make("LoRARequest", lambda kw: SimpleNamespace(**kw)),
        gguf=True,
    )
    backend = vllm.VllmBackend(params, trainer=trainer, api=api)
    group = backend.sample(PROMPTS[:1], 2)[0]
    backend.train([TrainItem(c, a) for c, a in zip(group, [1.0, -1.0], strict=True)])
    assert set(calls) == {"LLM", "SamplingParams", "TokensPrompt", "LoRARequest"} | {
        "generate",
        "sleep",
        "wake_up",
        "reset_prefix_cache",
    }
    return calls, values


def keywords(calls, name) -> set[str]:
    assert all(n == 0 for n, _ in calls[name]), f"{name} is called with positional arguments"
    return set().union(*(kw for _, kw in calls[name]))


@pytest.mark.parametrize("version", VERSIONS)
def test_llm_keywords_exist(used, version):
    r = release(version)
    _, accepted, forwards = r.params("llm", "LLM", "__init__")
    assert forwards  # LLM(**kwargs) hands the rest to EngineArgs
    engine_args = r.fields("engine_args", "EngineArgs")
    unknown = keywords(used[0], "LLM") - accepted - engine_args
    assert not unknown, f"vLLM {version} knows no LLM keyword {sorted(unknown)}"


@pytest.mark.parametrize("version", VERSIONS)
def test_request_keywords_exist(used, version):
    calls, _ = used
    r = release(version)
    for name, module in [("SamplingParams", "sampling"), ("LoRARequest", "lora_request"), ("TokensPrompt", "inputs")]:
        unknown = keywords(calls, name) - r.fields(module, name)
        assert not unknown, f"vLLM {version}'s {name} has no field {sorted(unknown)}"
    assert {"lora_name", "lora_int_id", "lora_path"} <= r.fields("lora_request", "LoRARequest")


@pytest.mark.parametrize("version", VERSIONS)
def test_engine_method_arguments_exist(used, version):
    calls, _ = used
    r = release(version)
    for method in ("generate", "sleep", "wake_up", "reset_prefix_cache"):
        positional, accepted, _ = r.params("llm", "LLM", method)
        for n_args, kw in calls[method]:
            assert n_args <= len(positional), f"LLM.{method} of vLLM {version} takes {positional} positionally"
            assert kw <= accepted, f"LLM.{method} of vLLM {version} has no parameter {sorted(kw - accepted)}"
    assert r.params("llm", "LLM", "generate")[0][:2] == ["prompts", "sampling_params"]


@pytest.mark.parametrize("version", VERSIONS)
def test_imported_names_are_exported(version):
    r = release(version)
    assert {"LLM", "SamplingParams"} <= r.names_text("init")  # from vllm import LLM, SamplingParams
    assert "TokensPrompt" in r.names_text("inputs_init")  # from vllm.inputs import TokensPrompt


@pytest.mark.parametrize("version", VERSIONS)
def test_every_rank_we_pass_is_one_vllm_accepts(version):
    r = release(version)
    name = "possible_max_ranks" if version == "0.10.2" else "MaxLoRARanks"
    allowed = r.constants("lora_config", name)
    assert set(vllm.VLLM_LORA_RANKS) <= allowed
    passed = {vllm.engine_lora_rank(rank) for rank in range(1, max(vllm.VLLM_LORA_RANKS) + 1)}
    assert passed <= allowed
    if version == "0.10.2":  # the unrounded ranks that made vLLM raise
        assert not {4, 12, 24} & allowed


@pytest.mark.parametrize("version", VERSIONS)
def test_dtype_and_logprobs_mode_values_are_vllms(used, version):
    r = release(version)
    dtypes = r.constants("model_config", "ModelDType")
    assert {vllm.torch_dtype_name(d) for d in (torch.float32, torch.bfloat16, torch.float16)} <= dtypes
    assert used[1]["dtype"] in dtypes
    assert used[1]["logprobs_mode"] in r.constants("model_config", "LogprobsMode")


def test_the_gguf_probe_names_the_loader_0_10_has_and_0_33_lacks():
    assert GGUF_LOADER in release("0.10.2").paths
    assert GGUF_LOADER not in release("0.33.0").paths
    assert vllm.GGUF_LOADER_MODULE == GGUF_LOADER.removesuffix(".py").replace("/", ".")
