"""Our problem, sandbox and PUCT archive as a NeMo RL environment.

NeMo RL's GRPO asks an environment to score each batch of message logs
(``EnvironmentInterface.step(message_log_batch, metadata) -> EnvironmentReturn``,
``nemo_rl/environments/interfaces.py``). ``DiscoveryEnvironment`` does that with a
``Discovery`` run of ours inside, so that one step of NeMo RL is one step of our loop:

    next_states(G)  PUCT selects G states; the dataset renders their prompts
    step(logs, md)  NeMo RL sampled R completions per state; we parse the last assistant
                    message of each, evaluate it in our sandbox, record it with PUCT,
                    compute the estimator's advantages per state, end the step and write
                    events, ``best/`` and a checkpoint to our run directory
    last_step()     the rewards and advantages of that step, in NeMo RL's row order,
                    for the advantage hook (:mod:`.advantages`)

The class needs neither Ray nor NeMo RL: :func:`environment_actor` wraps it as a Ray
actor (and as a subclass of NeMo RL's ``EnvironmentInterface`` where that imports).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

from discover_ttt.backend import Backend, Completion
from discover_ttt.config import load_config
from discover_ttt.errors import MissingExtra, UserError
from discover_ttt.loop import Discovery, Rollout
from discover_ttt.problem import Invalid
from discover_ttt.progress import Reporter

log = logging.getLogger("discover.nemo_rl")

#: NeMo RL routes each datum to the environment registered under its task name.
TASK_NAME = "discover"


class EnvironmentOrderError(UserError):
    """NeMo RL called the environment out of the order one synchronous GRPO step has."""


class ExternalBackend(Backend):
    """The model side of a run whose sampling and training happen elsewhere (NeMo RL).

    It holds nothing, so checkpoints store only our loop, sampler and RNG state; the
    policy's own checkpoints are NeMo RL's.
    """

    name = "external"
    can_train = False

    def sample(self, prompts, n):  # pragma: no cover - never called: NeMo RL samples
        raise RuntimeError("completions of a NeMo RL run come from NeMo RL, not from a discover backend")


class _EnvironmentReturn(NamedTuple):
    """The fields of NeMo RL's ``EnvironmentReturn``, used where nemo_rl is not installed."""

    observations: list[dict[str, str]]
    metadata: list[dict | None]
    next_stop_strings: list[list[str] | None]
    rewards: Any
    terminateds: Any


def environment_return_type() -> type:
    try:
        from nemo_rl.environments.interfaces import EnvironmentReturn
    except ImportError:
        return _EnvironmentReturn
    return EnvironmentReturn


def last_assistant_text(message_log: list[dict[str, Any]]) -> str:
    """The content of the last assistant message: the completion NeMo RL sampled."""
    for message in reversed(message_log):
        if message.get("role") == "assistant":
            return str(message.get("content", ""))
    return ""


class DiscoveryEnvironment:
    """One of our runs, driven by NeMo RL: it selects states, scores rollouts, writes the run directory.

    ``config`` is our run config (a path, or an already-parsed mapping); ``run_dir``
    overrides its ``run.output``. An existing run directory with a checkpoint is resumed.
    """

    def __init__(self, config: str | Path | dict[str, Any], run_dir: str | Path | None = None) -> None:
        if isinstance(config, dict):
            loaded = load_config(None, raw=config)
        else:
            loaded = load_config(config)
        if run_dir is not None:
            loaded.config.run.output = Path(run_dir).resolve()
        self.disc = Discovery(loaded, reporter=Reporter())
        self.disc.backend = ExternalBackend()
        if not self.disc.resume():
            self.disc.start()
        self._selection: tuple[int, list[Any], float] | None = None
        self._last: dict[str, Any] | None = None

    @property
    def run_dir(self) -> Path:
        return self.disc.store.root

    # -- what the dataset asks -------------------------------------------------------------
    def next_states(self, k: int) -> list[dict[str, Any]]:
        """Select ``k`` states with the sampler and return their prompts (chat messages)."""
        if self._selection is not None:
            raise EnvironmentOrderError(
                "the dataset asked for new states before the previous step's rollouts were scored. "
                "Run NeMo RL with data.num_workers: 0 (no prefetching) and one rollout turn per step "
                "(grpo.max_rollout_turns: 1), as `discover export nemo-rl` writes it."
            )
        t = self.disc.step
        parents = self.disc.sampler.select(k)
        self._selection = (t, parents, time.perf_counter())
        return [
            {"state_id": s.id, "step": t, "group": g, "messages": self.disc.problem.prompt(s)}
            for g, s in enumerate(parents)
        ]

    # -- what NeMo RL asks -----------------------------------------------------------------
    def step(self, message_log_batch: list[list[dict[str, Any]]], metadata: list[dict | None], *args, **kwargs):
        """Score one batch: every rollout of the states chosen by the last ``next_states``."""
        if self._selection is None:
            raise EnvironmentOrderError("step() was called before any states were selected with next_states().")
        t, parents, t0 = self._selection
        group_of = {s.id: g for g, s in enumerate(parents)}
        counts = [0] * len(parents)
        rollouts_B: list[Rollout] = []
        for log_, meta in zip(message_log_batch, metadata, strict=True):
            state_id = (meta or {}).get("state_id")
            if state_id not in group_of:
                raise EnvironmentOrderError(
                    f"a rollout names state {state_id!r}, which is not among the states selected for step {t} "
                    f"({', '.join(group_of)})."
                )
            g = group_of[state_id]
            completion = Completion(text=last_assistant_text(log_))
            rollouts_B.append(Rollout(group=g, index=counts[g], parent=parents[g], completion=completion))
            counts[g] += 1
        # our loop records rollouts group by group; do the same so the archive matches a local run
        ordered = sorted(rollouts_B, key=lambda r: (r.group, r.index))
        metrics = self.disc.finish_step(t, parents, ordered, t0=t0, sample_s=0.0)
        self.disc.commit_step(t)  # the same checkpoint cadence as our own loop, last step included
        self._selection = None
        self._last = {
            "step": t,
            "rewards": [r.reward for r in rollouts_B],
            "advantages": [r.advantage for r in rollouts_B],
            "metrics": metrics,
        }
        return self._environment_return(rollouts_B, metadata)

    def _environment_return(self, rollouts_B: list[Rollout], metadata: list[dict | None]):
        import torch

        observations, metadata_out = [], []
        for r, meta in zip(rollouts_B, metadata, strict=True):
            if r.valid:
                content = f"valid: score {r.child.score!r}, reward {r.reward:.6g}"
                outcome = "valid"
            else:
                assert isinstance(r.outcome, Invalid)
                content = f"{r.outcome.kind}: {r.outcome.reason}"
                outcome = r.outcome.kind
            observations.append({"role": "environment", "content": content})
            metadata_out.append({**(meta or {}), "outcome": outcome, "child_id": r.child.id if r.child else None})
        rewards_B = torch.tensor([r.reward for r in rollouts_B], dtype=torch.float32)
        return environment_return_type()(
            observations=observations,
            metadata=metadata_out,
            next_stop_strings=[None] * len(rollouts_B),
            rewards=rewards_B,
            terminateds=torch.ones(len(rollouts_B), dtype=torch.bool),
        )

    def last_step(self) -> dict[str, Any] | None:
        """Rewards and advantages of the last scored batch, in the order NeMo RL sent its rows."""
        return self._last

    def global_post_process_and_metrics(self, batch: Any) -> tuple[Any, dict[str, float]]:
        """NeMo RL logs these after each step: our step metrics, flattened to numbers."""
        metrics: dict[str, float] = {}
        last = (self._last or {}).get("metrics") or {}
        for key in ("valid_rate", "best_score", "step_best_score", "reward_mean", "reward_max", "archive_size"):
            value = last.get(key)
            if isinstance(value, int | float):
                metrics[f"discover/{key}"] = float(value)
        for kind, count in (last.get("failures") or {}).items():
            metrics[f"discover/failures/{kind}"] = float(count)
        return batch, metrics

    def shutdown(self) -> None:
        self.disc.close()


def environment_actor(config: str | Path | dict[str, Any], run_dir: str | Path | None = None, **options: Any):
    """Start :class:`DiscoveryEnvironment` as a Ray actor (``num_gpus=0`` unless ``options`` say otherwise).

    Where NeMo RL is installed the actor class also subclasses its ``EnvironmentInterface``.
    """
    try:
        import ray
    except ImportError as e:
        raise MissingExtra("the NeMo RL environment (a Ray actor)", "Ray", "ray", e) from None
    bases: tuple[type, ...] = (DiscoveryEnvironment,)
    try:
        from nemo_rl.environments.interfaces import EnvironmentInterface

        bases += (EnvironmentInterface,)
    except ImportError:
        pass
    cls = type("DiscoveryEnvironmentActor", bases, {})
    options = {"num_gpus": 0, "max_concurrency": 1, **options}
    return ray.remote(cls).options(**options).remote(config, run_dir)
