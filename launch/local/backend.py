"""The ``local`` backend: transformers + peft on the CPU or one GPU, sampling and training one model.

torch, transformers and peft are imported when the backend is built, not when this
module is imported, so listing plugins stays fast.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, ClassVar

from discover_ttt.backend import Backend, Completion, TrainItem

from ..lora.budget import call_seed
from ..lora.params import LocalParams

RNG_FILE = "rng.json"
TORCH_RNG_FILE = "torch_rng.pt"


class LocalBackend(Backend):
    """Samples with a KV-cached decode loop and trains the LoRA adapter of the same model.

    ``model``/``tokenizer`` may be passed in (tests build a tiny random model); otherwise
    ``params.model`` is loaded (see ``discover_ttt.launch.models``).
    """

    name: ClassVar[str] = "local"
    can_train: ClassVar[bool] = True
    Params = LocalParams

    def __init__(self, params: LocalParams | None = None, *, model=None, tokenizer=None) -> None:
        from ..lora.trainer import Trainer

        params = params or LocalParams()
        super().__init__(params)
        self.trainer = Trainer(params, model=model, tokenizer=tokenizer)
        self.tokenizer = self.trainer.tokenizer
        self.sample_calls = 0
        self.stop_ids = self._stop_ids()

    @property
    def model(self):
        return self.trainer.model

    def _stop_ids(self) -> set[int]:
        ids = set(self.params.stop_token_ids)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            ids.update([gen_eos] if isinstance(gen_eos, int) else gen_eos)
        if not ids:
            raise ValueError("the tokenizer has no EOS token; set backend.stop_token_ids")
        return ids

    # -- prompts ----------------------------------------------------------------------
    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat template applied to ``messages``, ending with the assistant header."""
        from ..lora.budget import chat_prompt_tokens

        return chat_prompt_tokens(self.tokenizer, messages, self.params.chat_template_kwargs)

    # -- sampling ---------------------------------------------------------------------
    def sample(self, prompts: list[list[dict[str, str]]], n: int) -> list[list[Completion]]:
        import torch

        from ..lora.budget import budgeted_completions
        from . import fastdecode
        from .sampling import decode

        p = self.params
        prompt_rows = [self.prompt_tokens(m) for m in prompts]
        rows = [row for row in prompt_rows for _ in range(n)]  # prompt i's rollouts are rows i*n … i*n+n−1
        generator = torch.Generator(device=self.trainer.device)
        generator.manual_seed(call_seed(p.seed, self.sample_calls))
        self.sample_calls += 1

        meter = self.sampling_meter(len(rows))
        phase = iter(range(2))

        def generate(batch_rows: list[list[int]], budgets: list[int]):
            # with a thinking budget, a row that runs out in phase 1 continues in phase 2
            final = p.thinking_budget is None or next(phase) == 1

            def on_step(tokens: int, stopped: int, exhausted: int) -> None:
                meter.add(rollouts=stopped + (exhausted if final else 0), tokens=tokens)

            pieces = []
            with self.trainer.merged_for_sampling(p.merge_for_sampling) as folded:
                # the compact CPU step reads the base weights, so it needs the adapter folded into them
                fast = p.fast_decode and folded and fastdecode.unsupported_reason(self.model) is None
                # the folded weights, gathered once for every batch of this call
                loop = (
                    functools.partial(
                        fastdecode.fast_decode, decoder=fastdecode.LlamaDecoder(self.model), draft_tokens=p.draft_tokens
                    )
                    if fast
                    else decode
                )
                for k in range(0, len(batch_rows), p.sample_batch_size):
                    pieces += loop(
                        self.model,
                        batch_rows[k : k + p.sample_batch_size],
                        budgets[k : k + p.sample_batch_size],
                        temperature=p.temperature,
                        top_p=p.top_p,
                        stop_ids=self.stop_ids,
                        pad_id=int(self.tokenizer.pad_token_id),
                        generator=generator,
                        on_step=on_step,
                    )
            return pieces

        return budgeted_completions(generate, rows, prompt_rows, self.tokenizer, p, meter)

    # -- training ---------------------------------------------------------------------
    def train(self, batch: list[TrainItem]) -> dict[str, float]:
        return self.trainer.train(batch, temperature=self.params.temperature)

    def logprobs(self, completions: list[Completion], base: bool = False) -> list[list[float]]:
        """Learner (or base-model) log-probs of each completion's tokens, at the sampling temperature."""
        seqs = [(c.prompt_tokens, c.tokens) for c in completions]
        return [lp.tolist() for lp in self.trainer.logprobs(seqs, self.params.temperature, base=base)]

    # -- checkpoints ------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        import torch

        directory = Path(directory)
        self.trainer.save(directory)
        (directory / RNG_FILE).write_text(json.dumps({"seed": self.params.seed, "sample_calls": self.sample_calls}))
        torch.save({"cpu": torch.get_rng_state()}, directory / TORCH_RNG_FILE)

    def load(self, directory: Path) -> None:
        import torch

        directory = Path(directory)
        self.trainer.load(directory)
        state: dict[str, Any] = json.loads((directory / RNG_FILE).read_text())
        self.sample_calls = int(state["sample_calls"])
        torch.set_rng_state(torch.load(directory / TORCH_RNG_FILE, weights_only=True)["cpu"])

    def close(self) -> None:
        import gc

        import torch

        self.trainer = None  # type: ignore[assignment]
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
