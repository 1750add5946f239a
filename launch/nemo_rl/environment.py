"""Our problem, sandbox and PUCT archive as a NeMo RL environment.

NeMo RL's GRPO asks an environment to score each batch of message logs
(``EnvironmentInterface.step(message_log_batch, metadata) -> EnvironmentReturn``,
``nemo_rl/environments/interfaces.py``). ``DiscoveryEnvironment`` does that with a
``Discovery`` run of ours inside, so that one step of NeMo RL is one step of our loop
(``discover_ttt.step``: ``plan`` then ``finish``):

    next_states(G)  the step's plan: PUCT selects G states, the problem may re-draw them
                    (``on_selected``) and renders their prompts through the hook guard; the
                    same plan again for every further call until the step is scored, so
                    NeMo RL's data loader may replay batches after a restart
    step(logs, md)  NeMo RL sampled R completions per state; we hand the last assistant
                    message of each to ``finish`` (parse, sandbox, PUCT, the estimator's
                    advantages per state, events), checkpoint, and answer with NeMo RL's
                    own ``EnvironmentReturn``
    last_step()     the rewards and advantages of that step, in NeMo RL's row order,
                    for the advantage hook (:mod:`.advantages`)

The class needs neither Ray nor NeMo RL: :func:`environment_actor` wraps it as a Ray
actor (and as a subclass of NeMo RL's ``EnvironmentInterface`` where that imports).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

from discover_ttt.backend import Completion
from discover_ttt.config import load_config
from discover_ttt.errors import MissingExtra, UserError
from discover_ttt.loop import Discovery
from discover_ttt.problem import Invalid
from discover_ttt.progress import Reporter
from discover_ttt.step import Plan, Rollout

from .backend import NemoRLBackend
from .versions import refusal

log = logging.getLogger("discover.nemo_rl")

#: NeMo RL routes each datum to the environment registered under its task name.
TASK_NAME = "discover"


class EnvironmentOrderError(UserError):
    """NeMo RL called the environment out of the order one synchronous GRPO step has."""


class _EnvironmentReturn(NamedTuple):
    """The fields of NeMo RL's ``EnvironmentReturn`` (0.4 and later), used where nemo_rl is not installed."""

    observations: list[dict[str, str]]
    metadata: list[dict | None]
    next_stop_strings: list[list[str] | None]
    rewards: Any
    terminateds: Any
    answers: list[str | None] | None


def environment_return_type() -> type:
    try:
        from nemo_rl.environments.interfaces import EnvironmentReturn
    except ImportError:
        return _EnvironmentReturn
    return EnvironmentReturn


def make_environment_return(cls: type[Any], **values: Any):
    """``cls`` (a release's ``EnvironmentReturn``) from the fields we fill: the ones it declares.

    0.3 has five fields, 0.4 on add ``answers``; a field we do not know and that has no
    default means a NeMo RL the adapter was not checked against.
    """
    fields = list(cls._fields)
    unknown = [f for f in fields if f not in values and f not in getattr(cls, "_field_defaults", {})]
    if unknown:
        raise refusal(f"this NeMo RL's EnvironmentReturn has fields the adapter does not fill ({', '.join(unknown)})")
    return cls(**{f: values[f] for f in fields if f in values})


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
        self.disc.backend = NemoRLBackend(NemoRLBackend.Params())
        if not self.disc.resume():
            self.disc.start()
        self._plan: Plan | None = None
        self._last: dict[str, Any] | None = None

    @property
    def run_dir(self) -> Path:
        return self.disc.store.root

    # -- what the dataset asks -------------------------------------------------------------
    def next_states(self, k: int) -> list[dict[str, Any]]:
        """The prompts of the current step's ``k`` states (chat messages, or the failure of the prompt hook).

        The plan is made once per step: asked again before ``step`` scored it (NeMo RL's
        data loader replays its batches when a job restarts), it is the same plan.
        """
        if k != self.disc.cfg.run.groups:
            raise EnvironmentOrderError(
                f"the dataset asked for {k} states a step; this run has run.groups = {self.disc.cfg.run.groups}. "
                "Set grpo.num_prompts_per_step to run.groups, as `discover export nemo-rl` writes it."
            )
        if self._plan is None or self._plan.step != self.disc.step:
            self._plan = self.disc.stepper.plan(self.disc.step)
        plan = self._plan
        return [
            {
                "state_id": s.id,
                "step": plan.step,
                "group": g,
                "messages": None if isinstance(p, Invalid) else p,
                "prompt_failed": f"{p.kind}: {p.reason}" if isinstance(p, Invalid) else None,
            }
            for g, (s, p) in enumerate(zip(plan.parents, plan.prompts, strict=True))
        ]

    # -- what NeMo RL asks -----------------------------------------------------------------
    def step(self, message_log_batch: list[list[dict[str, Any]]], metadata: list[dict | None], *args, **kwargs):
        """Score one batch: every rollout of the states of the current plan."""
        plan = self._plan
        if plan is None:
            steps = sorted({(m or {}).get("step") for m in metadata}, key=str)
            raise EnvironmentOrderError(
                f"step() was called with rollouts of step(s) {steps} while no states are planned (the next step is "
                f"{self.disc.step}): a batch was scored twice or prefetched. Run NeMo RL with data.num_workers: 0 and "
                "grpo.max_rollout_turns: 1, as `discover export nemo-rl` writes it."
            )
        group_of = {s.id: g for g, s in enumerate(plan.parents)}
        rows_G: list[list[int]] = [[] for _ in plan.parents]  # NeMo RL's rows of each group, in its order
        texts: list[str] = []
        for row, (log_, meta) in enumerate(zip(message_log_batch, metadata, strict=True)):
            meta = meta or {}
            state_id = meta.get("state_id")
            if state_id not in group_of or meta.get("step", plan.step) != plan.step:
                raise EnvironmentOrderError(
                    f"a rollout names state {state_id!r} of step {meta.get('step')!r}, which is not among the states "
                    f"planned for step {plan.step} ({', '.join(group_of)})."
                )
            rows_G[group_of[state_id]].append(row)
            texts.append(last_assistant_text(log_))
        rollouts = self.disc.cfg.run.rollouts
        if any(len(rows) != rollouts for rows in rows_G):
            raise EnvironmentOrderError(
                f"step {plan.step}: NeMo RL sent {[len(rows) for rows in rows_G]} rows per state, not {rollouts} each "
                "(grpo.num_generations_per_prompt must be run.rollouts, as `discover export nemo-rl` writes it)."
            )
        completions = [[Completion(text=texts[i]) for i in rows_G[g]] for g in plan.sampled_groups]
        result = self.disc.stepper.finish(plan, completions)
        self.disc.commit_step(plan.step)  # the same checkpoint cadence as our own loop, last step included
        self._plan = None
        # finish's rollouts run group by group; give them back in NeMo RL's row order
        by_row: dict[int, Rollout] = {rows_G[r.group][r.index]: r for r in result.rollouts}
        rollouts_B = [by_row[row] for row in range(len(texts))]
        self._last = {
            "step": plan.step,
            "rewards": [r.reward for r in rollouts_B],
            "advantages": [r.advantage for r in rollouts_B],
            "metrics": result.metrics,
        }
        return self._environment_return(rollouts_B, metadata)

    def _environment_return(self, rollouts_B: list[Rollout], metadata: list[dict | None]):
        import torch

        observations, metadata_out = [], []
        for r, meta in zip(rollouts_B, metadata, strict=True):
            if r.child is not None:  # valid
                content = f"valid: score {r.child.score!r}, reward {r.reward:.6g}"
                outcome = "valid"
            else:
                assert isinstance(r.outcome, Invalid)
                content = f"{r.outcome.kind}: {r.outcome.reason}"
                outcome = r.outcome.kind
            observations.append({"role": "environment", "content": content})
            metadata_out.append({**(meta or {}), "outcome": outcome, "child_id": r.child.id if r.child else None})
        return make_environment_return(
            environment_return_type(),
            observations=observations,
            metadata=metadata_out,
            next_stop_strings=[None] * len(rollouts_B),
            rewards=torch.tensor([r.reward for r in rollouts_B], dtype=torch.float32),
            terminateds=torch.ones(len(rollouts_B), dtype=torch.bool),
            # the program each valid rollout ran: what NeMo RL logs as the turn's answer
            answers=[r.child.code if r.child else None for r in rollouts_B],
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
