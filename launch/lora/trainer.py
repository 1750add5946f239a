"""The learner: a causal LM with a peft LoRA adapter and Adam, taking one step per RL step.

Shared by the ``local`` backend (which also samples from this model) and the ``vllm``
backend (which samples with vLLM and reloads the adapter after every step).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from discover_ttt.backend import TrainItem

from . import objective
from .fused import fuse_lora_forwards
from .params import TrainerParams
from .tiny import TINY_MODEL

ADAPTER_DIR = "adapter"
OPTIMIZER_FILE = "optimizer.pt"

log = logging.getLogger("discover")


class Trainer:
    """Model + LoRA + Adam. ``model`` is the peft model; ``tokenizer`` its tokenizer."""

    def __init__(self, params: TrainerParams, model=None, tokenizer=None) -> None:
        from peft import LoraConfig, get_peft_model

        from discover_ttt.launch import models

        self.params = params
        if model is None and params.model == TINY_MODEL:
            from .tiny import tiny_model_and_tokenizer

            # one model whatever the run seed: the seed changes the noise, never the weights
            model, tokenizer = tiny_model_and_tokenizer()
            model = model.to(models.pick_device(params.device))
        self.device = models.pick_device(params.device) if model is None else str(next(model.parameters()).device)
        if model is None:
            dtype = models.pick_dtype(params.dtype, self.device)
            model = models.load_causal_lm(params.model, params.gguf_file, self.device, dtype)
        if tokenizer is None:
            tok_name = params.tokenizer or params.model
            tokenizer = models.load_tokenizer(tok_name, params.gguf_file if params.tokenizer is None else None)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        config = LoraConfig(
            r=params.lora_rank,
            lora_alpha=params.lora_alpha,
            lora_dropout=params.lora_dropout,
            target_modules=params.lora_target_modules,
            bias="none",
            task_type="CAUSAL_LM",
        )
        # LoRA's A matrices are drawn from torch's global generator: seed it here, and
        # restore it afterwards, so the adapter depends on the run seed only.
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # raised inside peft
            torch.manual_seed(self.params.seed)
            self.model = get_peft_model(model, config)
        self.model.eval()  # dropout is 0 by default; eval keeps any other dropout off in sampling and training alike
        fuse_lora_forwards(self.model)
        if params.gradient_checkpointing:
            enable = getattr(self.model, "activation_checkpointing_enable", None)  # transformers >= 5
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.model.enable_input_require_grads()
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        # No weight decay, no gradient clipping (§5.3).
        self.optimizer = torch.optim.Adam(
            self.trainable, lr=params.lr, betas=tuple(params.betas), eps=params.eps, weight_decay=0.0
        )
        self.steps = 0

    # -- sampling weights -------------------------------------------------------------
    @contextlib.contextmanager
    def merged_for_sampling(self, enabled: bool = True):
        """Sample with the adapter folded into the weights: one matrix product per projection
        instead of three (~10 % of a CPU decoding step).

        Each wrapped projection samples with a new tensor W + ΔW, the adapter switched off,
        and gets its own W back afterwards, untouched: merging in place and subtracting ΔW
        again would move W by rounding at every step, so a resumed run would no longer
        sample what the uninterrupted one did. The copies cost the memory of the wrapped
        weights while sampling, so this is done for float32 weights only (the CPU default);
        bfloat16/float16 models on a GPU keep the adapter separate.

        Yields whether the adapter is folded (the base weights then compute the adapted model).
        """
        from peft.tuners.lora import LoraLayer
        from peft.tuners.lora.layer import Linear as LoraLinear

        lora = [m for m in self.model.modules() if isinstance(m, LoraLayer)]
        foldable = all(  # plain LoRA on linear layers (no DoRA, no adapter bias) folds into W exactly as it computes
            type(m) is LoraLinear
            and m.get_base_layer().weight.dtype == torch.float32
            and not any(getattr(m, "use_dora", {}).values())
            and not any(getattr(m, "lora_bias", {}).values())
            for m in lora
        )
        if not (enabled and lora and foldable):
            yield False
            return
        swapped = []
        try:
            with torch.no_grad():
                for m in lora:
                    weight = m.get_base_layer().weight
                    merged = weight.data.clone()
                    for name in m.active_adapters:
                        if name in m.lora_A:
                            merged += m.get_delta_weight(name)
                    swapped.append((weight, weight.data))
                    weight.data = merged
            with self.model.disable_adapter():
                yield True
        finally:
            for weight, original in swapped:
                weight.data = original

    # -- log-probs --------------------------------------------------------------------
    def logprobs(self, sequences, temperature: float = 1.0, base: bool = False) -> list[torch.Tensor]:
        """Completion log-probs (no gradient) under the adapter, or under the base model when ``base``.

        Each distinct prompt is run once (``objective.SharedPrefix``); its completions follow
        in micro-batches.
        """
        out: list[torch.Tensor | None] = [None] * len(sequences)
        mb = self.params.micro_batch_size
        with torch.no_grad(), self.model.disable_adapter() if base else contextlib.nullcontext():
            for prompt, idx in objective.group_by_prompt([p for p, _ in sequences]):
                prefix = objective.SharedPrefix(self.model, prompt)
                for k in range(0, len(idx), mb):
                    rows = idx[k : k + mb]
                    for i, lp in zip(rows, prefix.logprobs([sequences[i][1] for i in rows], temperature), strict=True):
                        out[i] = lp.detach()
        return out  # type: ignore[return-value]

    def adapter_is_zero(self) -> bool:
        """Whether every LoRA product B·A is zero (a fresh adapter: peft starts B at zero), so that
        the adapted model is the base model."""
        from peft.tuners.lora import LoraLayer

        for m in self.model.modules():
            if isinstance(m, LoraLayer):
                for name in m.active_adapters:
                    if name in m.lora_A and m.lora_A[name].weight.any() and m.lora_B[name].weight.any():
                        return False
        return True

    def base_from_sampler(self, completions) -> bool:
        """Whether ℓ^base of ``completions`` is what their sampler recorded (``_base_logprobs``)."""
        return all(c.model_logprobs is not None for c in completions) and self.adapter_is_zero()

    def _base_logprobs(self, completions, sequences, temperature: float) -> list[torch.Tensor]:
        """ℓ^base of each completion. While the adapter is zero (the first step) the model that sampled
        was the base model, and the log-probs its sampler recorded before the top-p cut
        (``Completion.model_logprobs``) are ℓ^base at this temperature: no forward pass. Otherwise a
        pass with the adapter switched off."""
        if self.base_from_sampler(completions):
            return [torch.tensor(c.model_logprobs, dtype=torch.float32) for c in completions]
        return self.logprobs(sequences, temperature, base=True)

    def _learner_logprobs(self, sequences, temperature: float):
        """(rows, learner log-probs with gradient, finish) for each micro-batch of the step.

        Without gradient checkpointing a group's prompt is run once, with gradient through
        the LoRA, and ``finish`` carries the gathered gradients through it after the group's
        last micro-batch. transformers' activation checkpointing drops a passed-in cache, so
        with it on every rollout is run whole (its prompt included).
        """
        mb = self.params.micro_batch_size
        if self.params.gradient_checkpointing:
            for k in range(0, len(sequences), mb):
                rows = list(range(k, min(k + mb, len(sequences))))
                yield rows, objective.completion_logprobs(self.model, [sequences[i] for i in rows], temperature), None
            return
        for prompt, idx in objective.group_by_prompt([p for p, _ in sequences]):
            prefix = objective.SharedPrefix(self.model, prompt, trainable=True)
            for k in range(0, len(idx), mb):
                rows = idx[k : k + mb]
                last = k + mb >= len(idx)
                lps = prefix.logprobs([sequences[i][1] for i in rows], temperature)
                yield rows, lps, (prefix.backward if last else None)

    # -- one optimizer step -------------------------------------------------------------
    def train(self, batch: list[TrainItem], temperature: float = 1.0) -> dict[str, float]:
        """Forward/backward over ``batch`` in micro-batches, summing gradients, then one Adam step."""
        start = time.perf_counter()
        items = [it for it in batch if it.completion.tokens]
        # a NaN or ±inf sampler log-prob would make the loss NaN and Adam would write NaN into the
        # adapter: such a rollout keeps its reward but stays out of the update
        finite = [it for it in items if all(math.isfinite(x) for x in it.completion.logprobs or [])]
        dropped = {"dropped_nonfinite": float(len(items) - len(finite))} if len(finite) < len(items) else {}
        if dropped:
            log.warning(
                "%d rollout(s) with NaN or infinite sampler log-probs left out of the train step "
                "(a sampler precision problem: check backend.dtype)",
                len(items) - len(finite),
            )
        items = finite
        if not items:
            return {"skipped": 1.0, "rollouts": 0.0, "tokens": 0.0, **dropped}
        sequences = [(it.completion.prompt_tokens, it.completion.tokens) for it in items]
        shaped = objective.shape_batch(
            [it.completion for it in items],
            [it.advantage for it in items],
            lambda: self._base_logprobs([it.completion for it in items], sequences, temperature),
            self.params.kl_coef,
            self.params.train_forced_tokens,
            self.device,
            kl_in_reward=self.params.kl_in_reward,
        )
        sampler_lp, loss_masks, adv_tok, d_mean = (
            shaped.sampler_logprobs,
            shaped.loss_masks,
            shaped.advantages,
            shaped.kl_sampler_base,
        )

        # transformers checkpoints activations only in train mode; dropout is 0, so train mode
        # changes nothing else for the models we target.
        self.model.train(self.params.gradient_checkpointing)
        self.optimizer.zero_grad(set_to_none=True)
        cap = self.params.ratio_cap
        loss_of = objective.is_loss if cap is None else functools.partial(objective.truncated_is_loss, cap=cap)
        loss_total, ratio_sum, ratio_max, abs_gap, n_tok, n_capped = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        for rows, learner_lp, finish in self._learner_logprobs(sequences, temperature):
            loss = sum(loss_of(lp, sampler_lp[i], adv_tok[i]) for i, lp in zip(rows, learner_lp, strict=True))
            loss.backward()
            if finish is not None:
                finish()
            loss_total += float(loss.detach())
            with torch.no_grad():
                for i, lp in zip(rows, learner_lp, strict=True):
                    m = loss_masks[i]
                    log_ratio = (lp.detach() - sampler_lp[i]) * m
                    ratio_sum += float((log_ratio.exp() * m).sum())
                    ratio_max = max(ratio_max, float((log_ratio.exp() * m).max()) if len(m) else 0.0)
                    abs_gap += float(log_ratio.abs().sum())
                    n_tok += float(m.sum())
                    if cap is not None:
                        n_capped += float(((log_ratio.exp() > cap) * m).sum())
        grad_norm = float(
            torch.norm(torch.stack([p.grad.float().norm() for p in self.trainable if p.grad is not None]))
        )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        self.steps += 1
        return {
            "loss": loss_total,
            "kl_sampler_base": d_mean,
            "ratio_mean": ratio_sum / max(n_tok, 1.0),
            "ratio_max": ratio_max,
            "logprob_gap": abs_gap / max(n_tok, 1.0),
            "grad_norm": grad_norm,
            "rollouts": float(len(items)),
            "tokens": n_tok,
            "train_seconds": time.perf_counter() - start,
            **({"ratio_capped": n_capped / max(n_tok, 1.0)} if cap is not None else {}),
            **dropped,
        }

    # -- checkpoints ------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(directory / ADAPTER_DIR), save_embedding_layers=False)
        torch.save({"optimizer": self.optimizer.state_dict(), "steps": self.steps}, directory / OPTIMIZER_FILE)

    def save_adapter(self, directory: Path) -> Path:
        """Only the peft adapter (what a vLLM engine loads); returns its folder."""
        path = Path(directory)
        self.model.save_pretrained(str(path), save_embedding_layers=False)
        return path

    def load(self, directory: Path) -> None:
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        directory = Path(directory)
        weights = load_peft_weights(str(directory / ADAPTER_DIR), device=self.device)
        result = set_peft_model_state_dict(self.model, weights)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(
                f"the adapter in {directory} does not fit this model (unexpected keys {unexpected[:3]}...)"
            )
        state: dict[str, Any] = torch.load(directory / OPTIMIZER_FILE, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
