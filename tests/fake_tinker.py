"""An in-process stand-in for the Tinker SDK, for the ``tinker`` backend's tests.

It mimics the documented behaviour of the classes the backend uses (``ServiceClient``,
``TrainingClient``, ``SamplingClient`` and the ``types``), with the same method and
keyword names, on a toy policy that trains for real:

* the policy is a categorical per position, counted from the last ``<|im_start|>``
  token: token t at position k has logit base_KV[k, t] + delta_KV[k, t]; the LoRA-like
  ``delta`` starts at zero, so a fresh training client samples like the base model;
* ``sample`` draws from softmax(logits) and returns each sampled token's log-prob and the
  stop reason. As the service has been reported to do
  (github.com/thinking-machines-lab/tinker-feedback/issues/79), a request with a ``SamplingParams.seed`` restarts the generator from that seed for each of its
  ``num_samples`` samples, so they come back token-identical; with ``seed=None`` the
  samples are distinct draws (from the fake's own generator, seeded once);
* ``compute_logprobs`` scores a sequence under the base model (None at position 0);
* ``forward_backward(loss_fn="importance_sampling")`` accumulates the gradient of
  L = − Σ_datum Σ_t exp(ℓ^θ_t − ℓ^samp_t) · A_t (a token sum) and returns ℓ^θ of every
  target and ``loss:sum``; ``optim_step(AdamParams)`` takes one Adam step (AdamW with no
  weight decay, as the service documents) and clears the gradient;
* ``save_state`` writes weights and Adam moments under ``root``, so a new ``FakeTinker``
  on the same root (a resumed process) restores them with
  ``create_training_client_from_state_with_optimizer``.

Every call is recorded in ``calls`` as (``Class.method``, keyword names); ``failures``
maps such a name to exceptions raised on successive calls (None lets a call through).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ANCHOR = 1  # <|im_start|> in the tiny tokenizer: positions are counted from its last occurrence


class APIConnectionError(Exception):
    pass


class RateLimitError(Exception):
    pass


class AuthenticationError(Exception):
    pass


class Killed(BaseException):
    """Stands for the process dying mid-call (not an Exception: nothing catches it)."""


# -- types ------------------------------------------------------------------------------
@dataclass
class ModelInput:
    tokens: list[int]

    @classmethod
    def from_ints(cls, tokens: list[int]) -> ModelInput:
        return cls([int(t) for t in tokens])

    def to_ints(self) -> list[int]:
        return list(self.tokens)

    @property
    def length(self) -> int:
        return len(self.tokens)


@dataclass
class SamplingParams:
    max_tokens: int | None = None
    seed: int | None = None
    stop: Any = None
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0


@dataclass
class AdamParams:
    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0


@dataclass
class TensorData:
    data: list
    dtype: str
    shape: list[int] | None = None

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> TensorData:
        dtype = "int64" if array.dtype.kind in "iu" else "float32"
        return cls(array.reshape(-1).tolist(), dtype, list(array.shape))

    def to_numpy(self) -> np.ndarray:
        return np.asarray(self.data, dtype=np.int64 if self.dtype == "int64" else np.float32)


@dataclass
class Datum:
    model_input: ModelInput
    loss_fn_inputs: dict[str, TensorData]

    def __post_init__(self):
        n = self.model_input.length
        for k, v in self.loss_fn_inputs.items():
            if len(v.data) != n:
                raise ValueError(f"loss_fn_inputs[{k!r}] has {len(v.data)} entries for {n} input tokens")


@dataclass
class SampledSequence:
    stop_reason: str
    tokens: list[int]
    logprobs: list[float] | None


@dataclass
class SampleResponse:
    sequences: list[SampledSequence]


@dataclass
class ForwardBackwardOutput:
    loss_fn_output_type: str
    loss_fn_outputs: list[dict[str, TensorData]]
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class SaveWeightsResponse:
    path: str


class Done:
    """A finished future (``result``/``timeout`` as ``APIFuture``)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self, timeout: float | None = None) -> Any:
        if isinstance(self.value, BaseException):
            raise self.value  # as the SDK: a failed request raises when its result is asked for
        return self.value


# -- the toy policy -----------------------------------------------------------------------
def positions(tokens: list[int]) -> list[int]:
    """Position of each token, counted from the last ANCHOR before it."""
    out, last = [], None
    for j, t in enumerate(tokens):
        out.append(j if last is None else j - last - 1)
        if t == ANCHOR:
            last = j
    return out


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class FakeTinker:
    """The ``tinker`` module as the backend sees it. ``base_KV``: the base model's logits."""

    APIConnectionError = APIConnectionError
    RateLimitError = RateLimitError
    AuthenticationError = AuthenticationError
    ModelInput = ModelInput
    SamplingParams = SamplingParams
    AdamParams = AdamParams
    TensorData = TensorData
    Datum = Datum

    def __init__(self, root: Path, base_KV: np.ndarray, tokenizer) -> None:
        self.root = Path(root)
        (self.root / "states").mkdir(parents=True, exist_ok=True)
        self.base_KV = base_KV
        self.tokenizer = tokenizer
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.unseeded = np.random.default_rng(12345)  # the service's own randomness for seed=None
        self.failures: dict[str, list[BaseException | None]] = {}
        api = self

        class ServiceClient:
            def __init__(self, user_metadata=None, project_id=None, *, display_name=None, base_url=None, api_key=None):
                api._sync("ServiceClient", api_key=api_key, base_url=base_url)
                if not api_key:
                    raise AuthenticationError("no key")

            def create_lora_training_client(
                self,
                base_model,
                rank=32,
                seed=None,
                train_mlp=True,
                train_attn=True,
                train_unembed=True,
                user_metadata=None,
                optimizer=None,
            ):
                error = api._enter(
                    "ServiceClient.create_lora_training_client",
                    base_model=base_model,
                    rank=rank,
                    seed=seed,
                    train_mlp=train_mlp,
                    train_attn=train_attn,
                    train_unembed=train_unembed,
                )
                if error is not None:
                    return Done(error)
                return Done(TrainingClient(base_model))

            def create_training_client_from_state_with_optimizer(
                self, path, base_model=None, user_metadata=None, weights_access_token=None
            ):
                if (
                    error := api._enter("ServiceClient.create_training_client_from_state_with_optimizer", path=path)
                ) is not None:
                    return Done(error)
                name = path.removeprefix("tinker://fake/")
                saved = np.load(api.root / "states" / f"{name}.npz")
                client = TrainingClient(str(saved["base_model"]))
                client.delta, client.m, client.v = saved["delta"], saved["m"], saved["v"]
                client.t = int(saved["t"])
                return Done(client)

            def create_sampling_client(
                self, model_path=None, base_model=None, retry_config=None, record_stability_info=False
            ):
                if (error := api._enter("ServiceClient.create_sampling_client", base_model=base_model)) is not None:
                    return Done(error)
                return Done(SamplingClient(np.zeros_like(api.base_KV)))

            def close(self, status, detail=None):
                return Done(api._enter("ServiceClient.close", status=status))

        class TrainingClient:
            def __init__(self, base_model: str) -> None:
                self.base_model = base_model
                self.delta = np.zeros_like(api.base_KV)
                self.grad = np.zeros_like(api.base_KV)
                self.m = np.zeros_like(api.base_KV)
                self.v = np.zeros_like(api.base_KV)
                self.t = 0

            def get_tokenizer(self):
                api._sync("TrainingClient.get_tokenizer")
                return api.tokenizer

            def save_weights_and_get_sampling_client(
                self, name=None, retry_config=None, record_stability_info=False, kind="snapshot"
            ):
                if (error := api._enter("TrainingClient.save_weights_and_get_sampling_client")) is not None:
                    return Done(error)
                return Done(SamplingClient(self.delta.copy()))

            def forward_backward(self, data, loss_fn, loss_fn_config=None):
                if (error := api._enter("TrainingClient.forward_backward", data=data, loss_fn=loss_fn)) is not None:
                    return Done(error)
                assert loss_fn == "importance_sampling"
                logits = api.base_KV + self.delta
                total, outputs = 0.0, []
                for d in data:
                    tokens = d.model_input.to_ints()
                    target = d.loss_fn_inputs["target_tokens"].to_numpy()
                    samp = d.loss_fn_inputs["logprobs"].to_numpy().astype(np.float64)
                    adv = d.loss_fn_inputs["advantages"].to_numpy().astype(np.float64)
                    # the token at index j+1 is predicted from tokens[:j+1]; its position counts from the anchor
                    pos = positions(tokens + [int(target[-1])])[1:]
                    rows = np.minimum(pos, len(logits) - 1)
                    logp = log_softmax(logits[rows])
                    lp = logp[np.arange(len(target)), target]
                    w = np.exp(lp - samp) * adv  # d(−Σ w)/d logits = −w · (onehot − softmax)
                    total += float(-w.sum())
                    g = np.exp(logp) * w[:, None]
                    g[np.arange(len(target)), target] -= w
                    np.add.at(self.grad, rows, g)
                    outputs.append({"logprobs": TensorData.from_numpy(lp.astype(np.float32))})
                return Done(ForwardBackwardOutput("ArrayRecord", outputs, {"loss:sum": total}))

            def optim_step(self, optim_params=None, *, adam_params=None):
                if (error := api._enter("TrainingClient.optim_step", optim_params=optim_params)) is not None:
                    return Done(error)
                p = optim_params
                self.t += 1
                self.m = p.beta1 * self.m + (1 - p.beta1) * self.grad
                self.v = p.beta2 * self.v + (1 - p.beta2) * self.grad**2
                m_hat = self.m / (1 - p.beta1**self.t)
                v_hat = self.v / (1 - p.beta2**self.t)
                self.delta = self.delta - p.learning_rate * m_hat / (np.sqrt(v_hat) + p.eps)
                self.grad = np.zeros_like(self.grad)
                return Done({"step": self.t})

            def save_state(self, name, ttl_seconds=None, overwrite=False, user_metadata=None):
                if (error := api._enter("TrainingClient.save_state", name=name, overwrite=overwrite)) is not None:
                    return Done(error)
                target = api.root / "states" / f"{name}.npz"
                if target.exists() and not overwrite:
                    raise ValueError(f"a state named {name} exists")
                np.savez(target, delta=self.delta, m=self.m, v=self.v, t=self.t, base_model=self.base_model)
                return Done(SaveWeightsResponse(f"tinker://fake/{name}"))

        class SamplingClient:
            def __init__(self, delta: np.ndarray) -> None:
                self.logits = api.base_KV + delta

            def logprob_rows(self, tokens: list[int]) -> np.ndarray:
                return log_softmax(self.logits[np.minimum(positions(tokens), len(self.logits) - 1)])

            def sample(self, prompt, num_samples, sampling_params, include_prompt_logprobs=False, **_):
                if (
                    error := api._enter(
                        "SamplingClient.sample", prompt=prompt, num_samples=num_samples, sampling_params=sampling_params
                    )
                ) is not None:
                    return Done(error)
                sp = sampling_params
                assert sp.temperature == 1.0 and sp.top_p == 1.0
                stop = set(sp.stop or [])
                seqs = []
                for _ in range(num_samples):
                    rng = api.unseeded if sp.seed is None else np.random.default_rng(sp.seed)  # the reported copies
                    ctx, toks, lps, reason = prompt.to_ints(), [], [], "length"
                    for _ in range(sp.max_tokens):
                        logp = self.logprob_rows(ctx + [0])[-1]  # the next token's position
                        t = int(rng.choice(len(logp), p=np.exp(logp) / np.exp(logp).sum()))
                        ctx.append(t)
                        toks.append(t)
                        lps.append(float(logp[t]))
                        if t in stop:
                            reason = "stop"
                            break
                    seqs.append(SampledSequence(reason, toks, lps))
                return Done(SampleResponse(seqs))

            def compute_logprobs(self, prompt, prompt_logprobs_last_n=None):
                if (error := api._enter("SamplingClient.compute_logprobs", prompt=prompt)) is not None:
                    return Done(error)
                tokens = prompt.to_ints()
                logp = self.logprob_rows(tokens)
                return Done([None] + [float(logp[j, tokens[j]]) for j in range(1, len(tokens))])

        self.ServiceClient = ServiceClient
        self.TrainingClient = TrainingClient
        self.SamplingClient = SamplingClient

    def _enter(self, _call: str, **kwargs: Any) -> BaseException | None:
        """Record the call; the failure queued for it, if any (raised now or by the future's ``result``)."""
        self.calls.append((_call, tuple(sorted(kwargs))))
        queue = self.failures.get(_call)
        return queue.pop(0) if queue else None

    def _sync(self, _call: str, **kwargs: Any) -> None:
        error = self._enter(_call, **kwargs)
        if error is not None:
            raise error


def scripted_logits(tokenizer, text: str, choices: dict[int, str], vocab: int, sharp: float = 12.0) -> np.ndarray:
    """Base logits that write ``text`` (then EOS) after the assistant header; at the offsets in
    ``choices`` any of the given characters, equally likely."""
    header = len(tokenizer.encode("assistant\n", add_special_tokens=False))
    ids = tokenizer.encode(text, add_special_tokens=False) + [int(tokenizer.eos_token_id)]
    logits = np.zeros((header + len(ids) + 8, vocab))
    for k, t in enumerate(ids):
        options = choices.get(k)
        if options is None:
            logits[header + k, t] = sharp
        else:
            for ch in options:
                logits[header + k, tokenizer.convert_tokens_to_ids(ch)] = sharp
    return logits
