"""The ``vllm`` backend: sampling with vLLM's offline engine, training with the local trainer.

Needs the optional extra: ``pip install -e '.[vllm]'`` in the checkout (a CUDA machine). This module
imports without vLLM; building the backend without it raises ``MissingExtra``.

Per RL step (reference-algorithm §9.3):

1. ``sample``: token-id prompts (the chat template applied by our tokenizer) go to
   ``LLM.generate`` with ``SamplingParams(temperature, top_p, max_tokens, logprobs=0,
   seed)``; ``logprobs=0`` returns the log-prob of each sampled token, which with the
   engine's ``logprobs_mode="processed_logprobs"`` is taken after temperature and top-p,
   as the local sampler does. One request per rollout (vLLM's prefix cache shares the
   prompt), so the two-phase thinking budget can give each row its own budget.
2. ``train``: the transformers + peft learner (``discover_ttt.launch.lora.trainer``) takes the step.
3. refresh: the adapter is written (peft safetensors) to a fresh folder, a new
   ``LoRARequest`` with a new positive integer id names it, and the prefix cache is reset
   so that no KV block computed under the old adapter is reused.

Start-up checks, so that a first run on a GPU fails at once with what to change rather than
deep inside vLLM: the context window against the model's, the free GPU memory against
``gpu_memory_utilization`` (vLLM refuses to start when less is free than it was told to take,
and the learner is already on the GPU), a GGUF model only where vLLM still has a GGUF loader.
``max_lora_rank`` is rounded up to a rank vLLM accepts, and the engine runs in the learner's
dtype so that sampler and learner log-probs come from the same precision.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

from pydantic import ConfigDict, Field

from discover_ttt.backend import Backend, Completion, TrainItem
from discover_ttt.errors import MissingExtra, UserError

from .lora.budget import call_seed
from .lora.params import LocalParams

STATE_FILE = "vllm_state.json"
#: The default model: the CPU default (SmolLM2-135M-Instruct) in the safetensors form vLLM loads.
DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
#: ``max_lora_rank`` values both supported vLLM releases accept (0.10.2: a tuple checked in
#: vllm/config/lora.py; 0.33.0: a Literal there, which also allows 1). The contract test reads both.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
#: vLLM's engine runs in its own process with its own CUDA context: room kept free for it.
ENGINE_CONTEXT_BYTES = 2**30
#: /dev/shm is used for adapters only when it has this many times an adapter's size free
#: (the new version is written before the old one is removed; Docker's default is 64 MB).
SHM_HEADROOM = 4
SHM_DIR = "/dev/shm"
#: vLLM's GGUF loader (0.10.x has it, later releases do not)
GGUF_LOADER_MODULE = "vllm.model_executor.model_loader.gguf_loader"

log = logging.getLogger("discover")


class VllmConfigError(UserError):
    """A ``vllm`` backend setting this vLLM or this GPU cannot run."""


def _vllm_api() -> SimpleNamespace:
    """The vLLM names this backend uses (a function, so tests can hand in fakes)."""
    try:
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest
    except ImportError as e:
        raise MissingExtra(
            "the 'vllm' backend",
            "vLLM",
            "vllm",
            e,
            instead="use backend 'local' (transformers) or 'openai'; vLLM needs a machine with a CUDA GPU",
        ) from None
    # 0.10.x loads GGUF files; later releases dropped the loader
    gguf = importlib.util.find_spec(GGUF_LOADER_MODULE) is not None
    return SimpleNamespace(
        LLM=LLM, SamplingParams=SamplingParams, TokensPrompt=TokensPrompt, LoRARequest=LoRARequest, gguf=gguf
    )


def engine_lora_rank(rank: int) -> int:
    """The smallest rank vLLM accepts as ``max_lora_rank`` that holds an adapter of ``rank``
    (vLLM serves any adapter up to ``max_lora_rank``; 4, 12 or 24 themselves are refused)."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise VllmConfigError(
        f"backend.lora_rank {rank} is above the largest LoRA rank vLLM serves ({VLLM_LORA_RANKS[-1]}); "
        f"set lora_rank to at most {VLLM_LORA_RANKS[-1]}, or use backend 'local'."
    )


def model_context_limit(config) -> int | None:
    """Positions the model was built for (times a RoPE scaling factor), as vLLM derives its
    largest ``max_model_len``; None when the config does not say."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    limit = getattr(text, "max_position_embeddings", None)
    if limit is None:
        return None
    scaling = getattr(text, "rope_scaling", None) or {}
    factor = scaling.get("factor") if isinstance(scaling, dict) else None
    return int(limit * factor) if factor and factor > 1 else int(limit)


def check_context_window(context_window: int, config, model: str) -> None:
    limit = model_context_limit(config)
    if limit is not None and context_window > limit:
        raise VllmConfigError(
            f"backend.context_window is {context_window} but {model} holds at most {limit} positions, and vLLM "
            f"refuses a max_model_len above that; set backend.context_window to at most {limit} "
            "(and max_new_tokens / thinking_budget below it)."
        )


def check_gpu_memory(utilization: float, free_bytes: int, total_bytes: int) -> None:
    """vLLM stops at start-up when less memory is free than ``utilization`` × the GPU's; the learner
    (model, adapter, Adam) is already there, and the engine's own CUDA context needs room too."""
    usable = free_bytes - ENGINE_CONTEXT_BYTES
    if utilization * total_bytes > usable:
        fits = max(0.0, int(100 * usable / total_bytes) / 100)
        gib = 2**30
        raise VllmConfigError(
            f"backend.gpu_memory_utilization is {utilization} ({utilization * total_bytes / gib:.1f} GiB of this "
            f"{total_bytes / gib:.1f} GiB GPU) but only {free_bytes / gib:.1f} GiB are free with the learner loaded "
            f"(about 1 GiB more goes to vLLM's own CUDA context); vLLM would refuse to start. Set "
            f"backend.gpu_memory_utilization to at most {fits:.2f}, or use a smaller model."
        )


def torch_dtype_name(dtype) -> str:
    """The learner's torch dtype as vLLM's ``dtype`` keyword spells it."""
    return str(dtype).removeprefix("torch.")


def adapter_root(adapter_dir: str | None, adapter_bytes: int) -> str | None:
    """Where refreshed adapters go: ``adapter_dir`` when set; else /dev/shm (memory, fast to reload)
    when it has room for a few adapters; else the system's temporary folder (None)."""
    if adapter_dir:
        Path(adapter_dir).mkdir(parents=True, exist_ok=True)
        return adapter_dir
    if Path(SHM_DIR).is_dir():
        free = shutil.disk_usage(SHM_DIR).free
        if free >= SHM_HEADROOM * adapter_bytes:
            return SHM_DIR
        log.info(
            "vllm: %s has %.0f MB free, too little for %.0f MB adapters; writing them under %s",
            SHM_DIR,
            free / 1e6,
            adapter_bytes / 1e6,
            tempfile.gettempdir(),
        )
    return None


def free_learner_cache() -> None:
    """Return the memory torch's caching allocator keeps after a train step to the device."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class VllmParams(LocalParams):
    """The local backend's parameters (model, LoRA, objective, sampling) plus the engine's."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        DEFAULT_MODEL,
        description="Hugging Face id or local folder of a model vLLM serves; a GGUF file only with vLLM 0.10.",
    )
    context_window: int = Field(
        8192, ge=64, description="vLLM's max_model_len; at most the model's own context (8192 for the default)."
    )
    device: str = "cuda"
    gpu_memory_utilization: float = Field(
        0.5, gt=0, le=1, description="Share of GPU memory vLLM may take; the learner needs the rest."
    )
    tensor_parallel_size: int = Field(1, ge=1)
    max_loras: int = Field(1, ge=1)
    enable_sleep_mode: bool = Field(False, description="Put the engine to sleep during train to free GPU memory.")
    adapter_dir: str | None = Field(
        None,
        description="Where refreshed adapters are written; default /dev/shm when it has room for them, "
        "else the system's temporary folder.",
    )
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments of vllm.LLM.")


class VllmBackend(Backend):
    """vLLM sampling with LoRA refresh after every ``train``; learner from ``discover_ttt.launch.lora``."""

    name: ClassVar[str] = "vllm"
    can_train: ClassVar[bool] = True
    Params = VllmParams

    def __init__(self, params: VllmParams | None = None, *, engine=None, trainer=None, api=None) -> None:
        params = params or VllmParams()
        super().__init__(params)
        self.api = api or _vllm_api()  # first, so a missing vLLM is reported before any model loads
        if trainer is None:
            from .lora.trainer import Trainer

            trainer = Trainer(params)
        self.trainer = trainer
        self.tokenizer = trainer.tokenizer
        check_context_window(params.context_window, trainer.model.config, params.model)
        self.engine_lora_rank = engine_lora_rank(params.lora_rank)
        self.engine = engine if engine is not None else self._make_engine()
        adapter_bytes = sum(t.numel() * t.element_size() for t in trainer.trainable)
        self._tmp = tempfile.mkdtemp(prefix="discover-lora-", dir=adapter_root(params.adapter_dir, adapter_bytes))
        self.adapter_version = 0  # the LoRARequest id in use; 0 = base model, no adapter yet
        self.lora_request = None
        self.sample_calls = 0
        self.stop_ids = sorted({int(self.tokenizer.eos_token_id), *params.stop_token_ids})

    def _make_engine(self) -> Any:  # a vllm.LLM
        from .models import resolve_model

        p = self.params
        name, gguf = resolve_model(p.model, p.gguf_file)
        kwargs: dict[str, Any] = {
            "model": name,
            "dtype": torch_dtype_name(self.trainer.model.get_base_model().dtype),
            "enable_lora": True,
            "max_lora_rank": self.engine_lora_rank,
            "max_loras": p.max_loras,
            "max_model_len": p.context_window,
            "gpu_memory_utilization": p.gpu_memory_utilization,
            "tensor_parallel_size": p.tensor_parallel_size,
            "seed": p.seed,
            "logprobs_mode": "processed_logprobs",
            "enable_sleep_mode": p.enable_sleep_mode,
        }
        if gguf:
            if not getattr(self.api, "gguf", False):
                raise VllmConfigError(
                    f"backend.model {p.model!r} is a GGUF file, and this vLLM has no GGUF loader (vLLM 0.10 had "
                    "one; later releases do not). Name the original Hugging Face model instead (for the CPU "
                    f"default: {DEFAULT_MODEL}), or use backend 'local', which reads GGUF files."
                )
            # vLLM 0.10 recognises a GGUF model by its file name, and reads the tokenizer from the same file
            kwargs["model"] = str(Path(name) / gguf)
            kwargs["tokenizer"] = p.tokenizer or kwargs["model"]
            log.warning(
                "vllm: %s is sampled from its quantised GGUF weights while the learner trains their de-quantised "
                "copy, so sampler and learner log-probs differ (watch ratio_mean / ratio_max; ratio_cap bounds "
                "them); the original Hugging Face model avoids this.",
                gguf,
            )
        kwargs.update(p.engine_kwargs)
        import torch

        if str(p.device).startswith("cuda") and torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            check_gpu_memory(kwargs["gpu_memory_utilization"], free, total)  # engine_kwargs may set it
        return self.api.LLM(**kwargs)

    # -- sampling ---------------------------------------------------------------------
    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        from .lora.budget import chat_prompt_tokens

        return chat_prompt_tokens(self.tokenizer, messages, self.params.chat_template_kwargs)

    def _generate(self, rows: list[list[int]], budgets: list[int], base_seed: int):
        from .lora.budget import Piece

        p, api = self.params, self.api
        prompts = [api.TokensPrompt(prompt_token_ids=list(r)) for r in rows]
        sampling = [
            api.SamplingParams(
                n=1,
                temperature=p.temperature,
                top_p=p.top_p,
                max_tokens=b,
                logprobs=0,
                seed=(base_seed + k) % (2**63),
                stop_token_ids=self.stop_ids,
                skip_special_tokens=False,
            )
            for k, b in enumerate(budgets)
        ]
        outputs = self.engine.generate(prompts, sampling, lora_request=self.lora_request, use_tqdm=False)
        pieces = []
        for out in outputs:
            c = out.outputs[0]
            tokens = list(c.token_ids)
            if c.logprobs is None or len(c.logprobs) != len(tokens):
                raise RuntimeError("vLLM returned no per-token log-probs; is SamplingParams.logprobs supported here?")
            logprobs = [float(step[t].logprob) for t, step in zip(tokens, c.logprobs, strict=True)]
            pieces.append(Piece(tokens, logprobs, c.finish_reason == "stop"))
        return pieces

    def sample(self, prompts: list[list[dict[str, str]]], n: int) -> list[list[Completion]]:
        from .lora.budget import budgeted_completions

        p = self.params
        prompt_rows = [self.prompt_tokens(m) for m in prompts]
        rows = [row for row in prompt_rows for _ in range(n)]
        base_seed = call_seed(p.seed, self.sample_calls)
        self.sample_calls += 1
        phase = iter(range(2))  # phase 2 rows get seeds disjoint from phase 1's
        meter = self.sampling_meter(len(rows))

        def generate(batch_rows, budgets):
            k = next(phase)
            pieces = self._generate(batch_rows, budgets, base_seed + k * len(rows))
            # the offline engine returns a phase at once: report it as a whole
            final = p.thinking_budget is None or k == 1
            done = sum(1 for x in pieces if x.stopped or final)
            meter.add(rollouts=done, tokens=sum(len(x.tokens) for x in pieces))
            return pieces

        return budgeted_completions(generate, rows, prompt_rows, self.tokenizer, p, meter)

    # -- training and refresh ---------------------------------------------------------
    def train(self, batch: list[TrainItem]) -> dict[str, float]:
        sleeping = self.params.enable_sleep_mode
        if sleeping:
            self.engine.sleep(level=1)
        try:
            metrics = self.trainer.train(batch, temperature=self.params.temperature)
        finally:
            if sleeping:
                free_learner_cache()  # the step's freed blocks go back to the device before the engine wakes
                self.engine.wake_up()
        if not metrics.get("skipped"):
            self.refresh()
        return metrics

    def refresh(self, version: int | None = None) -> None:
        """Hand the learner's current adapter to the engine under a new LoRARequest id."""
        previous = Path(self._tmp) / f"v{self.adapter_version}"
        self.adapter_version = self.adapter_version + 1 if version is None else version
        path = self.trainer.save_adapter(Path(self._tmp) / f"v{self.adapter_version}")
        self.lora_request = self.api.LoRARequest(
            lora_name=f"discover-v{self.adapter_version}", lora_int_id=self.adapter_version, lora_path=str(path)
        )
        # KV blocks computed under the previous adapter must not be reused.
        self.engine.reset_prefix_cache()
        if previous != path and previous.exists():
            shutil.rmtree(previous, ignore_errors=True)

    # -- checkpoints ------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        self.trainer.save(directory)
        state = {"sample_calls": self.sample_calls, "adapter_version": self.adapter_version}
        (directory / STATE_FILE).write_text(json.dumps(state))

    def load(self, directory: Path) -> None:
        directory = Path(directory)
        self.trainer.load(directory)
        state = json.loads((directory / STATE_FILE).read_text())
        self.sample_calls = int(state["sample_calls"])
        # a fresh id above the saved one: the engine may still hold an adapter under the old id
        self.refresh(version=int(state["adapter_version"]) + 1)

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)
        self.engine = None
