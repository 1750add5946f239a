"""The ``vllm`` backend: sampling with vLLM's offline engine, training with the local trainer.

Needs the optional extra: ``pip install 'discover-ttt[vllm]'`` (a CUDA machine). This module
imports without vLLM; building the backend without it raises ``VllmNotInstalled``.

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
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

from pydantic import ConfigDict, Field

from discover_ttt.backend import Backend, Completion, TrainItem

from .lora.budget import call_seed
from .lora.params import LocalParams

INSTALL_HINT = "pip install 'discover-ttt[vllm]'"
STATE_FILE = "vllm_state.json"


class VllmNotInstalled(ImportError):
    """vLLM is missing: the ``vllm`` extra is not installed."""


def _vllm_api() -> SimpleNamespace:
    """The vLLM names this backend uses (a function, so tests can hand in fakes)."""
    try:
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest
    except ImportError as e:
        raise VllmNotInstalled(
            f"the 'vllm' backend needs vLLM, which is not installed here ({e}). Install the extra with "
            f"{INSTALL_HINT} on a machine with a CUDA GPU, or use backend 'local' (transformers) or 'openai'."
        ) from None
    return SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams, TokensPrompt=TokensPrompt, LoRARequest=LoRARequest)


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

    device: str = "cuda"
    gpu_memory_utilization: float = Field(
        0.5, gt=0, le=1, description="Share of GPU memory vLLM may take; the learner needs the rest."
    )
    tensor_parallel_size: int = Field(1, ge=1)
    max_loras: int = Field(1, ge=1)
    enable_sleep_mode: bool = Field(False, description="Put the engine to sleep during train to free GPU memory.")
    adapter_dir: str | None = Field(
        None,
        description="Where refreshed adapters are written; default a temporary folder under /dev/shm when present.",
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
        self.engine = engine if engine is not None else self._make_engine()
        root = params.adapter_dir or ("/dev/shm" if Path("/dev/shm").is_dir() else None)
        if root:
            Path(root).mkdir(parents=True, exist_ok=True)
        self._tmp = tempfile.mkdtemp(prefix="discover-lora-", dir=root)
        self.adapter_version = 0  # the LoRARequest id in use; 0 = base model, no adapter yet
        self.lora_request = None
        self.sample_calls = 0
        self.stop_ids = sorted({int(self.tokenizer.eos_token_id), *params.stop_token_ids})

    def _make_engine(self):
        from .models import resolve_model

        p = self.params
        name, gguf = resolve_model(p.model, p.gguf_file)
        kwargs: dict[str, Any] = {
            "model": str(Path(name) / gguf) if gguf else name,
            "enable_lora": True,
            "max_lora_rank": p.lora_rank,
            "max_loras": p.max_loras,
            "max_model_len": p.context_window,
            "gpu_memory_utilization": p.gpu_memory_utilization,
            "tensor_parallel_size": p.tensor_parallel_size,
            "seed": p.seed,
            "logprobs_mode": "processed_logprobs",
            "enable_sleep_mode": p.enable_sleep_mode,
        }
        if gguf:
            kwargs["tokenizer"] = p.tokenizer or name
        kwargs.update(p.engine_kwargs)
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
        self.lora_request = self.api.LoRARequest(f"discover-v{self.adapter_version}", self.adapter_version, str(path))
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
