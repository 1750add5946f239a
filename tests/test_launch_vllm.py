"""The vLLM backend without a GPU: the missing-extra error, and the request and adapter
bookkeeping against a fake engine (the learner is the real local trainer on a tiny model)."""

from __future__ import annotations

import importlib.util
import random
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from discover_ttt.backend import TrainItem
from discover_ttt.errors import MissingExtra
from discover_ttt.install import install_command
from discover_ttt.launch.vllm import VllmBackend, VllmParams

PROMPTS = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "a second prompt"}]]
LETTERS = list(range(10, 60))  # printable characters in the tiny tokenizer


class FakeLLM:
    """Mimics ``vllm.LLM.generate``: per request, tokens drawn from the request's seed; a
    stop token ends it when the budget allows more than 5 tokens."""

    def __init__(self, eos: int) -> None:
        self.eos = eos
        self.calls: list[dict] = []
        self.prefix_resets = 0

    def generate(self, prompts, sampling, lora_request=None, use_tqdm=True):
        self.calls.append({"prompts": prompts, "sampling": sampling, "lora": lora_request})
        outs = []
        for sp in sampling:
            rng = random.Random(sp.seed)
            n_tok = min(sp.max_tokens, 5)
            tokens = [rng.choice(LETTERS) for _ in range(n_tok)]
            finish = "length"
            if sp.max_tokens > 5:
                tokens.append(self.eos)
                finish = "stop"
            logprobs = [{t: SimpleNamespace(logprob=-0.25 * (k + 1))} for k, t in enumerate(tokens)]
            outs.append(
                SimpleNamespace(outputs=[SimpleNamespace(token_ids=tokens, logprobs=logprobs, finish_reason=finish)])
            )
        return outs

    def reset_prefix_cache(self):
        self.prefix_resets += 1


def fake_api():
    return SimpleNamespace(
        LLM=None,
        SamplingParams=lambda **kw: SimpleNamespace(**kw),
        TokensPrompt=lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids},
        LoRARequest=lambda lora_name, lora_int_id, lora_path: SimpleNamespace(
            lora_name=lora_name, lora_int_id=lora_int_id, lora_path=lora_path
        ),
        gguf=True,
    )


def make(tmp_path, **overrides):
    from discover_ttt.launch.lora.trainer import Trainer

    overrides.setdefault("adapter_dir", str(tmp_path))
    overrides.setdefault("context_window", 4096)  # the tiny model's own
    params = VllmParams(model="tiny-random", device="cpu", max_new_tokens=8, **overrides)
    trainer = Trainer(params)
    return VllmBackend(params, engine=FakeLLM(trainer.tokenizer.eos_token_id), trainer=trainer, api=fake_api())


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_the_error_names_the_extra():
    with pytest.raises(MissingExtra, match=re.escape(install_command("vllm"))):
        VllmBackend(VllmParams(model="tiny-random", device="cpu"))


def test_requests_carry_token_prompts_logprobs_and_distinct_seeds(tmp_path):
    b = make(tmp_path, temperature=1.0, top_p=0.9)
    out = b.sample(PROMPTS, 3)
    call = b.engine.calls[0]
    assert [p["prompt_token_ids"] for p in call["prompts"]] == [b.prompt_tokens(PROMPTS[0])] * 3 + [
        b.prompt_tokens(PROMPTS[1])
    ] * 3
    sp = call["sampling"][0]
    assert (sp.n, sp.logprobs, sp.temperature, sp.top_p, sp.max_tokens) == (1, 0, 1.0, 0.9, 8)
    assert len({s.seed for s in call["sampling"]}) == 6
    assert call["lora"] is None  # before the first step the adapter is zero: the base model samples
    c = out[1][2]
    assert c.tokens[-1] == b.tokenizer.eos_token_id and c.finish_reason == "stop"
    assert c.logprobs == [-0.25 * (k + 1) for k in range(len(c.tokens))]
    assert c.prompt_tokens == b.prompt_tokens(PROMPTS[1]) and not any(c.forced)


def test_train_refreshes_the_adapter_with_a_new_id_and_resets_the_prefix_cache(tmp_path):
    b = make(tmp_path, lr=1e-2)
    batch = [TrainItem(c, a) for c, a in zip(b.sample(PROMPTS[:1], 2)[0], [1.0, -1.0], strict=True)]
    # the fake engine's log-probs are not the model's: the ratio is off-policy but the step still runs
    b.train(batch)
    first = b.lora_request
    assert (first.lora_int_id, first.lora_name) == (1, "discover-v1") and b.engine.prefix_resets == 1
    assert (Path(first.lora_path) / "adapter_model.safetensors").exists()
    assert (Path(first.lora_path) / "adapter_config.json").exists()
    b.sample(PROMPTS[:1], 1)
    assert b.engine.calls[-1]["lora"] is first
    b.train(batch)
    assert b.lora_request.lora_int_id == 2 and b.engine.prefix_resets == 2
    assert not Path(first.lora_path).exists()  # the stale adapter is removed
    assert b.train([])["skipped"] == 1.0 and b.lora_request.lora_int_id == 2  # no step, no refresh


def test_save_load_restores_adapter_and_sampling_position(tmp_path):
    a = make(tmp_path / "a", lr=1e-2)
    a.train([TrainItem(c, 1.0) for c in a.sample(PROMPTS[:1], 2)[0]])
    a.save(tmp_path / "ckpt")
    next_a = a.sample(PROMPTS, 2)
    b = make(tmp_path / "b", lr=1e-2)
    b.load(tmp_path / "ckpt")
    assert b.lora_request.lora_int_id == 2 and b.engine.prefix_resets == 1
    from safetensors.torch import load_file

    wa = load_file(str(Path(a.lora_request.lora_path) / "adapter_model.safetensors"))
    wb = load_file(str(Path(b.lora_request.lora_path) / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    seeds = lambda be: [s.seed for s in be.engine.calls[-1]["sampling"]]  # noqa: E731
    next_b = b.sample(PROMPTS, 2)
    assert seeds(a) == seeds(b)
    assert [[c.tokens for c in g] for g in next_a] == [[c.tokens for c in g] for g in next_b]


def test_thinking_budget_sends_a_second_request_with_the_forced_text(tmp_path):
    b = make(tmp_path, thinking_budget=None)
    b.params.thinking_budget = len(b.prompt_tokens(PROMPTS[0])) + 5  # phase 1 = 5 tokens, no stop
    b.params.context_window = 400
    out = b.sample(PROMPTS[:1], 1)[0][0]
    assert len(b.engine.calls) == 2
    second = b.engine.calls[1]["prompts"][0]["prompt_token_ids"]
    assert second[: len(out.prompt_tokens) + 5] == out.prompt_tokens + out.tokens[:5]
    n_forced = sum(out.forced)
    assert n_forced > 0 and out.forced[5 : 5 + n_forced] == [True] * n_forced
    assert b.tokenizer.decode(out.tokens[5 : 5 + n_forced]).rstrip().endswith("</think>")
    assert out.finish_reason == "stop" and out.tokens[-1] == b.tokenizer.eos_token_id


def test_sampling_progress_is_reported_per_phase(tmp_path):
    b = make(tmp_path)
    seen = []
    b.set_progress(seen.append)
    out = b.sample(PROMPTS, 3)
    assert seen[0].done == 0 and seen[-1].done == seen[-1].total == 6
    assert seen[-1].tokens == sum(len(c.tokens) for g in out for c in g)


def test_every_setting_reaches_the_engine_and_each_request(tmp_path):
    """Values other than the defaults, so that a setting dropped on the way shows."""
    from discover_ttt.launch.lora.budget import call_seed
    from discover_ttt.launch.lora.trainer import Trainer

    params = VllmParams(
        model="tiny-random",
        device="cpu",
        adapter_dir=str(tmp_path),
        seed=11,
        temperature=0.6,
        top_p=0.85,
        max_new_tokens=7,
        stop_token_ids=[40, 41],
        lora_rank=8,
        max_loras=2,
        context_window=4096,
        gpu_memory_utilization=0.33,
        tensor_parallel_size=2,
        enable_sleep_mode=True,
        engine_kwargs={"enforce_eager": True},
    )
    trainer = Trainer(params)
    made = {}
    engine = FakeLLM(trainer.tokenizer.eos_token_id)
    api = fake_api()
    api.LLM = lambda **kwargs: made.update(kwargs) or engine
    b = VllmBackend(params, trainer=trainer, api=api)
    assert made == {
        "model": "tiny-random",
        "dtype": "float32",  # the learner's
        "enable_lora": True,
        "max_lora_rank": 8,
        "max_loras": 2,
        "max_model_len": 4096,
        "gpu_memory_utilization": 0.33,
        "tensor_parallel_size": 2,
        "seed": 11,
        "logprobs_mode": "processed_logprobs",
        "enable_sleep_mode": True,
        "enforce_eager": True,
    }
    b.sample(PROMPTS, 2)
    requests = engine.calls[0]["sampling"]
    for sp in requests:
        assert (sp.n, sp.temperature, sp.top_p, sp.max_tokens, sp.logprobs) == (1, 0.6, 0.85, 7, 0)
        assert sp.stop_token_ids == sorted({40, 41, b.tokenizer.eos_token_id}) and sp.skip_special_tokens is False
    base = call_seed(11, 0)
    assert [sp.seed for sp in requests] == [(base + k) % 2**63 for k in range(4)]


def test_sleep_mode_frees_the_learner_cache_before_waking_the_engine(tmp_path, monkeypatch):
    import torch

    events = []
    b = make(tmp_path, lr=1e-2, enable_sleep_mode=True)
    b.engine.sleep = lambda level: events.append(f"sleep {level}")
    b.engine.wake_up = lambda: events.append("wake_up")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: events.append("empty_cache"))
    batch = [TrainItem(c, a) for c, a in zip(b.sample(PROMPTS[:1], 2)[0], [1.0, -1.0], strict=True)]
    b.train(batch)
    assert events == ["sleep 1", "empty_cache", "wake_up"]
