"""The ``tinker`` backend: sampling and LoRA training on Tinker, the hosted fine-tuning service.

This is how the paper's results were produced (gpt-oss-120b, LoRA rank 32). Needs the
optional extra, ``pip install -e '.[tinker]'`` in the checkout, and a key in ``TINKER_API_KEY``;
the model runs on the service, this process only renders prompts and builds the update.
The SDK is imported when the backend is built, not when this module is imported.

One RL step (reference-algorithm §2.1, §9.2):

1. ``sample``: a sampling client of the current weights
   (``TrainingClient.save_weights_and_get_sampling_client``), made afresh after every
   update; prompts are rendered here with the model's chat template and sent as token
   ids; ``SamplingClient.sample`` returns tokens, their log-probs and the stop reason.
   The two-phase thinking budget is the one the local and vLLM backends use
   (``launch/lora/budget.py``): a rollout that reached the budget without starting its
   answer gets the forced text and a second request.
2. ``train``: per-token advantages A_{i,t}, KL shaping included, are built by
   ``objective.shape_batch``, the function the local trainer calls (ℓ^base from a
   base-model sampling client's ``compute_logprobs``). One ``Datum`` per rollout (input =
   prompt + completion[:−1], targets shifted by one, sampler log-probs and advantages 0
   on prompt positions), then ``forward_backward(data, loss_fn="importance_sampling")``,
   whose loss is − Σ_i Σ_t exp(ℓ^θ_{i,t} − ℓ^samp_{i,t}) · A_{i,t}, and one
   ``optim_step(AdamParams(4e-5, 0.9, 0.95, 1e-8))``, both submitted before either is
   awaited.
3. ``save``: ``save_state`` on the service; the returned ``tinker://`` path and the sample
   call counter go into the run's checkpoint. ``load`` restores weights and Adam moments
   with ``create_training_client_from_state_with_optimizer``.

Failures: calls that can be repeated safely (sampling, log-probs, saving, making clients)
are retried on connection errors, timeouts, 429 and 5xx with doubling back-off, then end
in ``TinkerServiceError``. A training step is never retried (the service may have applied
part of it): it fails at once, and ``discover resume`` continues from the last checkpoint,
which the loop never touches before the next one is complete.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, model_validator

from discover_ttt.backend import Backend, Completion, TrainItem
from discover_ttt.errors import MissingExtra, UserError

from .lora.budget import call_seed
from .lora.params import SamplerParams, UpdateParams

log = logging.getLogger("discover")

STATE_FILE = "tinker_state.json"
#: Error classes of the SDK worth retrying: the request may succeed a moment later.
TRANSIENT = ("APIConnectionError", "APITimeoutError", "RateLimitError", "InternalServerError", "TimeoutError")
#: Error classes that say the request itself was refused: waiting for the service will not help.
REFUSED = ("AuthenticationError", "PermissionDeniedError", "BadRequestError", "NotFoundError")

#: Every SDK name this module uses, with the keyword arguments it passes. The contract test
#: checks each against the installed ``tinker`` (``inspect.signature``), so an SDK change
#: fails CI instead of a run; the fake used by the other tests records its calls, and they
#: must all be listed here.
SDK_CALLS: dict[str, tuple[str, ...]] = {
    "ServiceClient": ("api_key", "base_url"),
    "ServiceClient.create_lora_training_client": (
        "base_model",
        "rank",
        "seed",
        "train_mlp",
        "train_attn",
        "train_unembed",
    ),
    "ServiceClient.create_training_client_from_state_with_optimizer": ("path",),
    "ServiceClient.create_sampling_client": ("base_model",),
    "ServiceClient.close": ("status",),
    "TrainingClient.save_weights_and_get_sampling_client": (),
    "TrainingClient.forward_backward": ("data", "loss_fn"),
    "TrainingClient.optim_step": ("optim_params",),
    "TrainingClient.save_state": ("name", "overwrite"),
    "TrainingClient.get_tokenizer": (),
    "SamplingClient.sample": ("prompt", "num_samples", "sampling_params"),
    "SamplingClient.compute_logprobs": ("prompt",),
    "ModelInput.from_ints": ("tokens",),
    "SamplingParams": ("max_tokens", "seed", "stop", "temperature", "top_p"),
    "AdamParams": ("learning_rate", "beta1", "beta2", "eps"),
    "Datum": ("model_input", "loss_fn_inputs"),
    "TensorData.from_numpy": ("array",),
}


class TinkerServiceError(UserError):
    """A Tinker call failed (after retries, where retrying is safe)."""


def _tinker_api() -> Any:
    """The ``tinker`` module (a function, so tests can hand in a fake)."""
    try:
        import tinker
    except ImportError as e:
        raise MissingExtra(
            "the 'tinker' backend", "the Tinker SDK", "tinker", e, instead="use backend 'local', 'vllm' or 'openai'"
        ) from None
    return tinker


class TinkerParams(UpdateParams, SamplerParams):
    """The shared update (rank, Adam, λ) and sampling (budgets, chat template), plus the service's."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("openai/gpt-oss-120b", description="Base model on the service (Tinker's model name).")
    tokenizer: str | None = Field(
        None,
        description="Local tokenizer folder; default: the service's (TrainingClient.get_tokenizer, which may "
        "download it from the Hugging Face hub once).",
    )
    train_attn: bool = True
    train_mlp: bool = True
    train_unembed: bool = Field(True, description="LoRA on the unembedding too, as the paper (Tinker's default).")
    sample_batch_size: int = Field(64, ge=1, description="Requests in flight at once (samples, base log-probs).")
    api_key_env: str = Field("TINKER_API_KEY", description="NAME of the environment variable holding the key.")
    base_url: str | None = Field(None, description="Service URL; default the SDK's (TINKER_BASE_URL or production).")
    retries: int = Field(4, ge=0, description="Retries of a failed call that is safe to repeat.")
    backoff_s: float = Field(2.0, ge=0, description="First back-off; doubled after each retry.")
    timeout_s: float = Field(3600.0, gt=0, description="Longest wait for one result from the service.")

    @model_validator(mode="after")
    def _service_scores_at_t1(self) -> TinkerParams:
        # The service's importance-sampling loss and compute_logprobs score tokens under the
        # untempered model, so the ratio exp(ℓ^θ − ℓ^samp) is only right when sampling is too.
        if self.temperature != 1.0 or self.top_p != 1.0:
            raise ValueError(
                f"the tinker backend trains with temperature 1 and top_p 1 only (got {self.temperature}, "
                f"{self.top_p}): the service scores tokens under the untempered model."
            )
        return self


def _ready(x: Any) -> Any:
    """A client from a client-creation call: newer SDKs return a future of it, older ones the client."""
    result = getattr(type(x), "result", None)
    return x.result() if callable(result) else x


class TinkerBackend(Backend):
    """Samples from and trains a LoRA adapter of ``params.model`` on the Tinker service.

    ``api`` replaces the ``tinker`` module (tests pass an in-process fake); the key is read
    from the environment variable ``params.api_key_env`` and handed to ``ServiceClient``.
    """

    name: ClassVar[str] = "tinker"
    can_train: ClassVar[bool] = True
    Params = TinkerParams

    def __init__(self, params: TinkerParams | None = None, *, api: Any = None, tokenizer: Any = None) -> None:
        params = params or TinkerParams()
        super().__init__(params)
        self.failed = False
        self.started = False  # True once connected: before that no run exists to resume
        self.api = api or _tinker_api()  # first, so a missing SDK is reported before the key
        key = os.environ.get(params.api_key_env)
        if not key:
            raise UserError(
                f"the tinker backend needs an API key in the environment variable {params.api_key_env}, which is "
                f"not set. Create a key in the Tinker console, then `export {params.api_key_env}=...` (keys never go "
                "in a config file), or choose another backend."
            )
        log.info(
            "tinker: connecting to the service (%s) with the key in %s; without a network the SDK waits for its own "
            "connection timeout before each of %d attempts",
            params.base_url or "the default address",
            params.api_key_env,
            1 + params.retries,
        )
        self.service = self._call("connecting", lambda: self.api.ServiceClient(api_key=key, base_url=params.base_url))
        log.info(
            "tinker: creating a LoRA training client of %s (rank %d) on the service", params.model, params.lora_rank
        )
        self.training = self._call(
            f"creating a LoRA training client of {params.model}",
            lambda: _ready(
                self.service.create_lora_training_client(
                    base_model=params.model,
                    rank=params.lora_rank,
                    seed=params.seed,
                    train_mlp=params.train_mlp,
                    train_attn=params.train_attn,
                    train_unembed=params.train_unembed,
                )
            ),
        )
        if tokenizer is None and params.tokenizer:
            from .models import load_tokenizer

            tokenizer = load_tokenizer(params.tokenizer)
        if tokenizer is None:
            tokenizer = self._call("loading the tokenizer", self.training.get_tokenizer)
        self.tokenizer = tokenizer
        self.stop_ids = sorted({int(tokenizer.eos_token_id), *params.stop_token_ids})
        self.sampler = None  # sampling client of the current weights; None after every update
        self.base_sampler: Any = None  # the base model's sampling client, made on first use
        self.sample_calls = 0
        self.train_steps = 0
        self.tag = uuid.uuid4().hex[:8]  # names this run's saved states on the service
        self.started = True

    # -- calling the service ------------------------------------------------------------
    def _call(self, what: str, fn, *, retry: bool = True):
        """``fn()``, retried with doubling back-off on transient errors; a UserError naming ``what`` otherwise."""
        attempts = 1 + (self.params.retries if retry else 0)
        for k in range(attempts):
            try:
                return fn()
            except (TypeError, AttributeError, NameError, AssertionError):
                raise  # a bug here or an SDK whose interface changed: keep the traceback
            except Exception as e:  # every service failure becomes one clear error
                transient = type(e).__name__ in TRANSIENT
                if transient and k + 1 < attempts:
                    wait = self.params.backoff_s * 2**k
                    log.warning("tinker: %s failed (%s: %s); retrying in %.0f s", what, type(e).__name__, e, wait)
                    time.sleep(wait)
                    continue
                tried = f" after {k + 1} attempts" if k else ""
                hint = (
                    " A training step is not retried, since the service may have applied part of it."
                    if not retry
                    else ""
                )
                self.failed = True
                raise TinkerServiceError(
                    f"Tinker failed while {what}{tried}: {type(e).__name__}: {e}.{hint}{self._then(e)}"
                ) from e
        raise AssertionError("unreachable")

    def _then(self, e: Exception) -> str:
        """What to do after a failure: it depends on whether the request was refused and whether the run started."""
        again = (
            " Then `discover resume <run directory>` continues from its last checkpoint (or from step 0)."
            if self.started
            else " Nothing was started; run the same command again."
        )
        if type(e).__name__ in REFUSED:
            return (
                f" The service refused the request, so waiting will not help: check the key in "
                f"{self.params.api_key_env} (a malformed or revoked key is refused) and the model name.{again}"
            )
        if not self.started:
            return " The service did not answer (check the network and base_url)." + again
        return " The service may answer later." + again

    def _wait(self, future):
        return future.result(timeout=self.params.timeout_s)

    def _gather(self, what: str, requests: list) -> list:
        """Results of ``requests`` (each sends one call and returns its future), in order: all
        are sent before the first wait; one that fails is sent again under ``_call``'s retries."""

        def send(request):
            try:
                return request()
            except Exception:  # noqa: BLE001 - sent again below, with retries and a clear error
                return None

        in_flight = [send(r) for r in requests]
        out = []
        for request, future in zip(requests, in_flight, strict=True):
            pending = [future]

            def attempt(request=request, pending=pending):
                first = pending.pop() if pending else None
                return self._wait(first if first is not None else request())

            out.append(self._call(what, attempt))
        return out

    # -- sampling ---------------------------------------------------------------------
    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        from .lora.budget import chat_prompt_tokens

        return chat_prompt_tokens(self.tokenizer, messages, self.params.chat_template_kwargs)

    def _sampling_client(self):
        if self.sampler is None:
            self.sampler = self._call(
                "publishing the current weights for sampling",
                lambda: _ready(self.training.save_weights_and_get_sampling_client()),
            )
        return self.sampler

    def _generate(self, rows: list[list[int]], budgets: list[int], base_seed: int, meter, final: bool):
        """One request per row, ``num_samples=1``, its own seed ``base_seed + k``; progress goes
        to ``meter`` as responses arrive (``final``: no later phase for these rows).

        One request per rollout, not one per group with ``num_samples`` = the group size: the
        service has been reported to return token-identical sequences for a multi-sample
        request that carries a seed (github.com/thinking-machines-lab/tinker-feedback/issues/79),
        and copies in a group carry no signal. Per-row seeds keep the draws distinct and reproducible; the service's
        prefix cache shares the prompt across a group's requests."""
        from .lora.budget import Piece

        api, p = self.api, self.params
        client = self._sampling_client()

        def request(k: int):
            sp = api.SamplingParams(
                max_tokens=budgets[k], seed=(base_seed + k) % 2**63, stop=self.stop_ids, temperature=1.0, top_p=1.0
            )
            prompt = api.ModelInput.from_ints(tokens=list(rows[k]))
            return client.sample(prompt=prompt, num_samples=1, sampling_params=sp)

        pieces: list[Piece] = []
        for start in range(0, len(rows), p.sample_batch_size):
            ks = range(start, min(start + p.sample_batch_size, len(rows)))
            for response in self._gather("sampling", [partial(request, k) for k in ks]):
                seqs = list(response.sequences)
                if len(seqs) != 1:
                    raise TinkerServiceError(f"Tinker returned {len(seqs)} samples where 1 was asked for.")
                seq = seqs[0]
                tokens, logprobs = list(seq.tokens), seq.logprobs
                if logprobs is None or len(logprobs) != len(tokens):
                    raise TinkerServiceError("Tinker returned a sample without per-token log-probs.")
                pieces.append(Piece(tokens, [float(x) for x in logprobs], seq.stop_reason == "stop"))
                meter.add(rollouts=int(final or seq.stop_reason == "stop"), tokens=len(tokens))
        return pieces

    def sample(self, prompts: list[list[dict[str, str]]], n: int) -> list[list[Completion]]:
        from .lora.budget import budgeted_completions

        p = self.params
        prompt_rows = [self.prompt_tokens(m) for m in prompts]
        rows = [row for row in prompt_rows for _ in range(n)]  # prompt i's rollouts are rows i*n … i*n+n−1
        base_seed = call_seed(p.seed, self.sample_calls)
        self.sample_calls += 1
        meter = self.sampling_meter(len(rows))
        phase = iter(range(2))

        def generate(batch_rows, budgets):
            k = next(phase)  # phase 2 requests get seeds disjoint from phase 1's
            final = p.thinking_budget is None or k == 1  # else a row that ran out goes on in phase 2
            return self._generate(batch_rows, budgets, base_seed + k * len(rows), meter, final)

        return budgeted_completions(generate, rows, prompt_rows, self.tokenizer, p, meter)

    # -- training -----------------------------------------------------------------------
    def base_logprobs(self, completions: list[Completion]) -> list[list[float]]:
        """ℓ^base of each completion's tokens: the base model's ``compute_logprobs`` of prompt + completion."""
        api = self.api
        if self.base_sampler is None:
            self.base_sampler = self._call(
                "creating a base-model sampling client",
                lambda: _ready(self.service.create_sampling_client(base_model=self.params.model)),
            )
        client = self.base_sampler

        def request(c: Completion):
            return client.compute_logprobs(
                prompt=api.ModelInput.from_ints(tokens=list(c.prompt_tokens) + list(c.tokens))
            )

        out = []
        for start in range(0, len(completions), self.params.sample_batch_size):
            chunk = completions[start : start + self.params.sample_batch_size]
            results = self._gather("computing base-model log-probs", [partial(request, c) for c in chunk])
            for c, logprobs in zip(chunk, results, strict=True):
                lp = logprobs[len(c.prompt_tokens) :]
                if len(lp) != len(c.tokens) or any(x is None for x in lp):
                    raise TinkerServiceError("Tinker returned no base-model log-prob for some completion token.")
                out.append([float(x) for x in lp])
        return out

    def datum(self, completion: Completion, sampler_lp, advantages):
        """input = prompt + completion[:−1]; targets shifted by one; prompt positions carry 0."""
        import numpy as np

        api = self.api
        tokens = list(completion.prompt_tokens) + list(completion.tokens)
        pad = np.zeros(len(completion.prompt_tokens) - 1, dtype=np.float32)
        inputs = {
            "target_tokens": np.asarray(tokens[1:], dtype=np.int64),
            "logprobs": np.concatenate([pad, np.asarray(sampler_lp, dtype=np.float32)]),
            "advantages": np.concatenate([pad, np.asarray(advantages, dtype=np.float32)]),
        }
        return api.Datum(
            model_input=api.ModelInput.from_ints(tokens=tokens[:-1]),
            loss_fn_inputs={k: api.TensorData.from_numpy(array=v) for k, v in inputs.items()},
        )

    def train(self, batch: list[TrainItem]) -> dict[str, float]:
        import numpy as np

        from .lora import objective

        start = time.perf_counter()
        items = [it for it in batch if it.completion.tokens]
        if not items:
            return {"skipped": 1.0, "rollouts": 0.0, "tokens": 0.0}
        completions = [it.completion for it in items]
        p = self.params
        shaped = objective.shape_batch(
            completions,
            [it.advantage for it in items],
            lambda: self.base_logprobs(completions),
            p.kl_coef,
            p.train_forced_tokens,
            kl_in_reward=p.kl_in_reward,
        )
        data = [
            self.datum(c, lp.numpy(), adv.numpy())
            for c, lp, adv in zip(completions, shaped.sampler_logprobs, shaped.advantages, strict=True)
        ]
        adam = self.api.AdamParams(learning_rate=p.lr, beta1=p.betas[0], beta2=p.betas[1], eps=p.eps)

        def step():
            fb = self.training.forward_backward(data=data, loss_fn="importance_sampling")
            opt = self.training.optim_step(optim_params=adam)  # submitted before either is awaited
            return self._wait(fb), self._wait(opt)

        fb_out, _ = self._call(f"training step {self.train_steps}", step, retry=False)
        self.sampler = None  # the next sample call publishes the new weights
        self.train_steps += 1
        # ℓ^θ the service computed (before the step) against ℓ^samp: the on-policy check.
        gaps, ratios = [], []
        for out, c, lp, m in zip(
            fb_out.loss_fn_outputs, completions, shaped.sampler_logprobs, shaped.loss_masks, strict=True
        ):
            learner = np.asarray(out["logprobs"].to_numpy(), dtype=np.float64)[len(c.prompt_tokens) - 1 :]
            keep = m.numpy() > 0
            log_ratio = learner[keep] - lp.numpy()[keep]
            gaps.append(np.abs(log_ratio))
            ratios.append(np.exp(log_ratio))
        ratio = np.concatenate(ratios) if ratios else np.zeros(0)
        loss = fb_out.metrics.get("loss:sum")
        return {
            "loss": float(loss) if loss is not None else float("nan"),
            "kl_sampler_base": shaped.kl_sampler_base,
            "ratio_mean": float(ratio.mean()) if len(ratio) else float("nan"),
            "ratio_max": float(ratio.max()) if len(ratio) else float("nan"),
            "logprob_gap": float(np.concatenate(gaps).mean()) if len(ratio) else float("nan"),
            "rollouts": float(len(items)),
            "tokens": float(sum(float(m.sum()) for m in shaped.loss_masks)),
            "train_seconds": time.perf_counter() - start,
        }

    # -- checkpoints ------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        name = f"discover-{self.tag}-{self.train_steps:05d}"
        # overwrite: a run killed after this save but before its checkpoint was complete
        # redoes the step under the same name.
        saved = self._call(
            f"saving state {name}", lambda: self._wait(self.training.save_state(name=name, overwrite=True))
        )
        state = {
            "state_path": saved.path,
            "base_model": self.params.model,
            "sample_calls": self.sample_calls,
            "train_steps": self.train_steps,
            "tag": self.tag,
        }
        (Path(directory) / STATE_FILE).write_text(json.dumps(state, indent=1))

    def load(self, directory: Path) -> None:
        state = json.loads((Path(directory) / STATE_FILE).read_text())
        if state["base_model"] != self.params.model:
            raise UserError(
                f"the checkpoint in {directory} trained {state['base_model']}, but backend.model is "
                f"{self.params.model}; resume with the model the run started with."
            )
        path = state["state_path"]
        self.training = self._call(
            f"restoring weights and optimizer from {path}",
            lambda: _ready(self.service.create_training_client_from_state_with_optimizer(path=path)),
        )
        self.sampler = None
        self.sample_calls = int(state["sample_calls"])
        self.train_steps = int(state["train_steps"])
        self.tag = state["tag"]

    def close(self) -> None:
        """End the service session (its saved states stay); best effort, a run is over either way."""
        self.sampler = self.base_sampler = None
        try:
            self._wait(self.service.close(status="errored" if self.failed else "success"))
        except Exception as e:  # noqa: BLE001
            log.warning("tinker: closing the session failed (%s: %s)", type(e).__name__, e)
