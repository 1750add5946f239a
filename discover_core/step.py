"""One step of discovery as a public unit: ``plan(t)``, then sampling elsewhere, then ``finish``.

For step t (``reference-algorithm.md`` §2.1):

``plan(t)``
    1. select ``run.groups`` states with the sampler (once per step);
    2. let the problem re-draw each selected seed (``on_selected``, from the run's RNG);
    3. render one prompt per state through the hook guard; a prompt that fails is kept in
       the plan as that failure, and its group is not sampled.

The driver samples ``plan.to_sample`` (``backend.sample(plan.to_sample, run.rollouts)`` in
our own loop; NeMo RL's generation in ``launch/nemo_rl``).

``finish(plan, completions)``
    4. parse and evaluate every rollout in the sandbox (in parallel); a failure of any kind
       gets reward 0 and counts as a failed visit of its parent;
    5. settle each outcome into a child state (reward, value, ``keep_in_archive``);
    6. record every rollout with the sampler, in rollout order (deterministic), and keep the
       best state seen;
    7. advantages per group from its raw rewards; constant groups are dropped;
    8. the training items of the kept groups go to ``train`` (when the driver trains);
    9. end the sampler's step (prune the archive), write one event per rollout and the
       step's metrics.

The lifecycle around it (run directory, resume, checkpoints, signals) is ``loop.Discovery``,
which builds the run's ``Step`` as ``Discovery.stepper``. Nothing a program or a plugin does
stops the step: failures become events.

The API other drivers build on (``discover prompt``, the NeMo RL environment):

- ``Step.seed(states=None)``, ``Step.warm_start()``, ``Step.fresh_states(k)``: the seeds;
- ``Step.plan(t) -> Plan`` (``parents``, ``prompts``, ``sampled_groups``, ``to_sample``, ``failed``);
- ``Step.finish(plan, completions, *, sample_s=0.0, train=None) -> StepResult``
  (``rollouts``: every ``Rollout`` group by group; ``metrics``: the step's event);
- ``Step.best``, ``Step.totals``, ``Step.verify_best()``, ``Step.state_dict()`` /
  ``load_state_dict()``; ``reverify(problem, construction)``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backend import Completion, TrainItem
from .config import RunConfig
from .estimator import BoundEstimator
from .guard import (
    BadReturn,
    HookGuard,
    check_bool,
    check_group,
    check_number,
    check_outcome,
    check_program,
    check_prompt,
    check_states,
    finite,
)
from .problem import Evaluation, Invalid, Problem, Program
from .progress import Reporter
from .state import State

log = logging.getLogger("discover")

#: ``finish``'s ``train``: the training items of one step in, the update's metrics out
Train = Callable[[list[TrainItem]], dict[str, Any]]


@dataclass
class Rollout:
    """Everything the step knows about one rollout."""

    group: int
    index: int
    parent: State
    completion: Completion
    outcome: Evaluation | Invalid | None = None
    child: State | None = None
    reward: float = 0.0
    advantage: float = 0.0

    @property
    def valid(self) -> bool:
        return self.child is not None


@dataclass
class Plan:
    """The first half of step ``step``: the state each group starts from, and the prompt to sample.

    ``parents[g]`` and ``prompts[g]`` belong to group g. A prompt is the problem's chat
    messages, or the ``Invalid`` its ``prompt`` hook failed with: such a group is not sampled,
    and ``finish`` records ``run.rollouts`` failed rollouts for it.
    """

    step: int
    parents: list[State]
    prompts: list[Any]
    #: ``time.perf_counter()`` when the plan was made: the step's clock starts here
    started: float

    @property
    def sampled_groups(self) -> list[int]:
        """The groups to sample, in order: those whose prompt rendered."""
        return [g for g, p in enumerate(self.prompts) if not isinstance(p, Invalid)]

    @property
    def to_sample(self) -> list[Any]:
        """The prompts of ``sampled_groups``, in their order (what a backend's ``sample`` takes)."""
        return [self.prompts[g] for g in self.sampled_groups]

    @property
    def failed(self) -> dict[int, Invalid]:
        """Group -> the failure of its prompt hook."""
        return {g: p for g, p in enumerate(self.prompts) if isinstance(p, Invalid)}


@dataclass
class StepResult:
    """The second half's outcome: every rollout (group by group) and the step's metrics (its event)."""

    step: int
    rollouts: list[Rollout]
    metrics: dict[str, Any]


def reverify(problem: Problem, construction: Any) -> dict[str, Any]:
    """The problem's ``verify`` of a construction, from scratch in this process: the record a best carries.

    ``{"valid": bool | None, "score": float | None, "reason": str}``; a problem without
    ``verify`` gives ``valid`` None, a ``verify`` that raises gives ``valid`` False.
    """
    try:
        v = problem.verify(construction)
        return {"valid": v.valid, "score": v.score, "reason": v.reason}
    except NotImplementedError:
        return {"valid": None, "score": None, "reason": "the problem has no verify()"}
    except Exception as e:  # noqa: BLE001
        return {"valid": False, "score": None, "reason": f"verify raised {type(e).__name__}: {e}"}


class Step:
    """The step of one run, built from its components; it owns what the step changes.

    That is the run's RNG (selection re-draws and fresh seeds), the count of seeds made
    (their ids), the best state so far and the rollout totals: ``state_dict`` and
    ``load_state_dict`` carry them through a checkpoint. The sampler's own state is the
    sampler's. ``sandbox`` is set by the driver before the first ``finish`` (``plan``
    needs none); ``record_events`` receives each step's events (the run store's
    ``append_events``).
    """

    def __init__(
        self,
        *,
        problem: Problem,
        hooks: HookGuard,
        sampler: Any,
        estimator: BoundEstimator,
        run: RunConfig,
        reporter: Reporter,
        record_events: Callable[[list[dict[str, Any]]], None],
        init_from: Path | None = None,
    ) -> None:
        self.problem, self.hooks, self.sampler, self.run = problem, hooks, sampler, run
        self.reporter, self.record_events, self.init_from = reporter, record_events, init_from
        self.estimator = estimator
        self.sandbox: Any = None
        self.rng = np.random.default_rng(run.seed)
        self.made = 0  # fresh initial states created so far (for their ids)
        self.best: dict[str, Any] | None = None
        self.totals = {"rollouts": 0, "valid": 0}
        self._archive_ok: dict[str, bool] = {}  # keep_in_archive, asked once per state
        self._verified: dict[str, dict[str, Any]] = {}  # would-be bests the host re-verified, by state id
        sampler.accept = self._keep
        sampler.make_states = self.fresh_states

    # -- seeds ---------------------------------------------------------------------------
    def warm_start(self) -> list[State] | None:
        """Seeds from ``problem.init_from`` (verified; a bad file is a ConfigError), or None."""
        if self.init_from is None:
            return None
        from .records import warm_start_states

        states = warm_start_states(self.problem, self.init_from, self.run.groups)
        for i, s in enumerate(states):
            s.id, s.step = f"init{i}", -1
        return states

    def fresh_states(self, k: int) -> list[State]:
        """``k`` new states from the problem's ``initial_states`` (ids ``seed0``, ``seed1``, ...)."""
        states = self.hooks.call_before_start("initial_states", self.rng, k, check=check_states(k))
        self.hooks.seed_values(states)  # the engine sets every archived value from the score
        for s in states:
            s.id = f"seed{self.made}"
            s.step = -1
            self.made += 1
        return states

    def seed(self, states: list[State] | None = None) -> list[State]:
        """Seed the sampler with ``states`` (a warm start) or ``run.groups`` fresh ones; returns the seeds."""
        seeds = states if states is not None else self.fresh_states(self.run.groups)
        self.sampler.seed(seeds)
        for s in seeds:
            self._maybe_new_best(s, source="seed")
        return seeds

    # -- the first half ------------------------------------------------------------------
    def plan(self, t: int) -> Plan:
        """Select the step's states, let the problem re-draw them, render their prompts."""
        started = time.perf_counter()
        parents = [self._selected(s) for s in self.sampler.select(self.run.groups)]
        prompts = [self.hooks.call("prompt", s, check=check_prompt) for s in parents]
        return Plan(step=t, parents=parents, prompts=prompts, started=started)

    def _selected(self, state: State) -> State:
        """The state a group starts from: the problem may re-draw a selected seed (same id); if the hook fails, itself."""
        out = self.hooks.call("on_selected", state, self.rng)
        return out if isinstance(out, State) and out.id == state.id else state

    # -- the second half -----------------------------------------------------------------
    def finish(
        self,
        plan: Plan,
        completions: Sequence[Sequence[Completion]],
        *,
        sample_s: float = 0.0,
        train: Train | None = None,
    ) -> StepResult:
        """Score the sampled completions of ``plan`` and end its step.

        ``completions[i]`` are the completions of group ``plan.sampled_groups[i]`` (what
        ``backend.sample(plan.to_sample, n)`` returns). ``sample_s`` is the sampling time for
        the metrics; ``train`` (None when the driver does not train here) gets the items of
        the kept groups, and its metrics go into the step's event.
        """
        sampled = plan.sampled_groups
        if len(completions) != len(sampled):
            raise ValueError(
                f"step {plan.step}: {len(completions)} groups of completions for {len(sampled)} sampled groups"
            )
        by_group = dict(zip(sampled, completions, strict=True))
        # a group whose prompt failed is sampled not at all: its rollouts are that failure
        failed = [Completion(text="", finish_reason="prompt_failed")] * self.run.rollouts
        rollouts = [
            Rollout(group=g, index=j, parent=parent, completion=c)
            for g, parent in enumerate(plan.parents)
            for j, c in enumerate(by_group.get(g, failed))
        ]
        t = plan.step
        te = time.perf_counter()
        self._evaluate(t, plan.parents, rollouts, plan.failed)
        eval_s = time.perf_counter() - te

        for r in rollouts:  # rollout order, so the archive is the same on every run
            if r.child is not None and self._beats_best(r.child):
                self._confirm(r)  # the host's verify has the last word before a rollout becomes the best
            self.sampler.record(r.parent, r.child)
            if r.child is not None:
                self._maybe_new_best(r.child, source=f"step {t}")

        groups_stats, kept = self._advantages(rollouts, len(plan.parents))

        tt = time.perf_counter()
        train_metrics: dict[str, Any] = {}
        if train is not None and kept:
            train_metrics = train([TrainItem(r.completion, r.advantage) for r in rollouts if r.group in kept])
        elif train is not None:
            train_metrics = {"skipped": "every group had constant rewards"}
            log.info("step %d: every group had constant rewards; no update", t)
        train_s = time.perf_counter() - tt

        self.sampler.end_step()

        valid = [r for r in rollouts if r.valid]
        rewards = np.array([r.reward for r in rollouts]) if rollouts else np.zeros(0)
        step_best = max(
            (r.child.score for r in valid if r.child and r.child.score is not None), key=self._score_key, default=None
        )
        self.totals["rollouts"] += len(rollouts)
        self.totals["valid"] += len(valid)
        total_s = time.perf_counter() - plan.started
        distinct = distinct_per_group(rollouts, len(plan.parents))
        copies = [f"group {g}: {d} of {n}" for g, (d, n) in enumerate(distinct) if d < n]
        if copies:
            log.warning("step %d: groups holding identical completions (%s)", t, "; ".join(copies))
        metrics = {
            "type": "step",
            "step": t,
            "groups": len(plan.parents),
            "rollouts": len(rollouts),
            "valid_rate": len(valid) / max(1, len(rollouts)),
            "best_score": None if self.best is None else self.best["score"],
            "step_best_score": step_best,
            "reward_mean": float(rewards.mean()) if len(rewards) else 0.0,
            "reward_max": float(rewards.max()) if len(rewards) else 0.0,
            "failures": _count([r.outcome.kind for r in rollouts if isinstance(r.outcome, Invalid)]),
            "groups_kept": sorted(kept),
            "group_stats": groups_stats,
            "distinct_completions": [d for d, _ in distinct],
            "archive_size": len(self.sampler.states),
            "train": train_metrics,
            "seconds": {
                "sampling": sample_s,
                "evaluation": eval_s,
                "training": train_s,
                "other": total_s - sample_s - eval_s - train_s,
                "total": total_s,
            },
        }
        self.record_events([self._event(t, r) for r in rollouts] + [metrics])
        return StepResult(step=t, rollouts=rollouts, metrics=metrics)

    def _evaluate(self, t: int, parents: list[State], rollouts: list[Rollout], failed: dict[int, Invalid]) -> None:
        """Outcome of every rollout; ``failed`` maps groups whose prompt failed to that failure."""
        self.reporter.evaluating(len(rollouts))
        programs = [failed[r.group] if r.group in failed else self._parse(r.completion) for r in rollouts]
        outcomes: list[Evaluation | Invalid | None] = [None] * len(rollouts)
        todo: list[int] = []
        for g, parent in enumerate(parents):
            idx = [i for i, r in enumerate(rollouts) if r.group == g]
            if g in failed:
                grouped = [failed[g]] * len(idx)
            else:
                grouped = self.hooks.call_with_deadline(
                    "evaluate_group",
                    self.sandbox,
                    [programs[i] for i in idx],
                    parent,
                    n_programs=len(idx),
                    check=check_group(len(idx)),
                )
            if isinstance(grouped, Invalid):  # the group hook failed: every rollout of the group did
                grouped = [grouped] * len(idx)
            if isinstance(grouped, list):
                for i, o in zip(idx, grouped, strict=True):
                    outcomes[i] = self._evaluated(
                        self.hooks.failed("evaluate_group", o) if isinstance(o, BadReturn) else o
                    )
            else:
                todo.extend(i for i in idx if isinstance(programs[i], Program))
                for i in idx:
                    if isinstance(programs[i], Invalid):
                        outcomes[i] = self._evaluated(programs[i])

        def one(i: int) -> Evaluation | Invalid:
            return self._evaluated(
                self.hooks.call_with_deadline(
                    "evaluate", self.sandbox, programs[i], rollouts[i].parent, check=check_outcome
                )
            )

        stop = self.hooks.stop
        pool = ThreadPoolExecutor(max_workers=max(1, self.sandbox.workers))
        try:
            for i, outcome in zip(todo, pool.map(one, todo), strict=True):
                outcomes[i] = outcome
        except BaseException:
            stop.set()  # Ctrl-C: the pool threads stop waiting at once
            raise
        finally:
            pool.shutdown(wait=not stop.is_set(), cancel_futures=True)
        for i, r in enumerate(rollouts):
            self._settle(t, r, outcomes[i], programs[i])

    def _parse(self, completion: Completion) -> Program | Invalid:
        if completion.finish_reason == "prompt_too_long":
            return Invalid(
                "prompt_too_long",
                f"the prompt ({len(completion.prompt_tokens) or 'too many'} tokens) leaves no room in the token budget",
            )
        # only the final answer is parsed: a draft in the reasoning is never run
        return self.hooks.call("parse", completion.answer or "", check=check_program)

    def _keep(self, state: State) -> bool:
        """keep_in_archive, asked once per state; a failure keeps the state out."""
        if state.id not in self._archive_ok:
            keep = self.hooks.call("keep_in_archive", state, check=check_bool)
            self._archive_ok[state.id] = keep is True
        return self._archive_ok[state.id]

    def _evaluated(self, outcome: Any) -> Any:
        """Tell the reporter one rollout is scored (for the live display); returns ``outcome``."""
        score = finite(outcome.score) if isinstance(outcome, Evaluation) else None
        try:
            value = None if score is None else float(self.problem.value(score))
        except Exception:  # noqa: BLE001 - a broken value() is reported by _settle, not here
            value = None
        self.reporter.evaluated(score, value)
        return outcome

    def _settle(self, t: int, r: Rollout, outcome: Evaluation | Invalid | None, program: Program | Invalid) -> None:
        if outcome is None:
            outcome = Invalid("exception", "the problem returned no outcome for this rollout")
        if isinstance(outcome, Evaluation):
            score = outcome.score
            reward = self.hooks.call("reward", score, check=check_number)
            value = self.hooks.call("value", score, check=check_number)
            failure = next((x for x in (reward, value) if isinstance(x, Invalid)), None)
            if failure is not None:
                outcome = dataclasses.replace(failure, stdout=outcome.stdout)
            else:
                child = r.parent.child(
                    id=f"t{t}-g{r.group}-r{r.index}",
                    value=value,
                    score=score,
                    construction=outcome.construction,
                    code=outcome.code or (program.source if isinstance(program, Program) else ""),
                    stdout=outcome.stdout[-2000:],
                    step=t,
                    metrics=outcome.metrics,
                )
                keep = self.hooks.call("keep_in_archive", child, check=check_bool)
                if isinstance(keep, Invalid):
                    outcome = dataclasses.replace(keep, stdout=outcome.stdout)
                else:
                    self._archive_ok[child.id] = keep
                    r.reward, r.child = reward, child
        r.outcome = outcome

    def _advantages(self, rollouts: list[Rollout], n_groups: int) -> tuple[list[dict[str, Any]], set[int]]:
        stats, kept = [], set()
        for g in range(n_groups):
            members = [r for r in rollouts if r.group == g]
            rewards_G = np.array([r.reward for r in members], dtype=np.float64)
            constant = len(rewards_G) == 0 or bool(np.all(rewards_G == rewards_G[0]))
            correct_G = np.array([r.valid for r in members], dtype=bool)
            scores_G = np.array([r.child.score if r.child else np.nan for r in members], dtype=np.float64)
            advantages_G = self.estimator.advantages(rewards_G, scores_G=scores_G, correct_G=correct_G)
            for r, a in zip(members, advantages_G, strict=True):
                r.advantage = float(a)
            entry: dict[str, Any] = {"group": g, "state": members[0].parent.id if members else None}
            entry.update(self.estimator.group_stats(rewards_G))
            entry["constant"] = constant
            stats.append(entry)
            if not (constant and self.run.drop_constant_groups):
                kept.add(g)
        if not kept and n_groups and self.run.faithful_constant_groups:
            kept.add(0)  # the reference keeps the first group when all are constant
        for r in rollouts:
            if r.group not in kept:
                r.advantage = 0.0
        return stats, kept

    def _event(self, t: int, r: Rollout) -> dict[str, Any]:
        failure = r.outcome if isinstance(r.outcome, Invalid) else None  # None for a valid rollout
        return {
            "type": "rollout",
            "step": t,
            "group": r.group,
            "index": r.index,
            "parent_id": r.parent.id,
            "child_id": r.child.id if r.child else None,
            "text": r.completion.text,
            "answer": r.completion.answer,
            "finish_reason": r.completion.finish_reason,
            "outcome": "valid" if failure is None else failure.kind,
            "reason": None if failure is None else failure.reason,
            "score": r.child.score if r.child else None,
            "reward": r.reward,
            "advantage": r.advantage,
            "archived": bool(r.child and self._archive_ok.get(r.child.id)),
            "stdout_tail": ((r.outcome.stdout if r.outcome else "") or "")[-500:],
            "traceback": None if failure is None else (failure.traceback or None),  # a hook's last frames
        }

    # -- the best state and the state a checkpoint carries ------------------------------------
    def _score_key(self, score: float) -> float:
        return score if self.problem.maximize else -score

    def _beats_best(self, state: State) -> bool:
        return state.value is not None and (self.best is None or state.value > self.best["value"])

    def _confirm(self, r: Rollout) -> None:
        """Re-verify a would-be best on the host; when the verifier disagrees the rollout is invalid.

        Its reward becomes 0, its child leaves the archive and never becomes the best, and the
        run counts the disagreement (``totals["reverify_disagreed"]``, in the summary). A problem
        without ``verify`` (valid None) keeps the sandbox's word.
        """
        child, outcome = r.child, r.outcome
        assert child is not None and isinstance(outcome, Evaluation)  # called for valid rollouts only
        verified = reverify(self.problem, child.construction)
        if verified["valid"] is False:
            self.totals["reverify_disagreed"] = self.totals.get("reverify_disagreed", 0) + 1
            log.warning("rollout %s: the host's re-verification disagreed: %s", child.id, verified["reason"])
            self._archive_ok.pop(child.id, None)
            reason = f"the sandbox's evaluation passed but the host's re-verification failed: {verified['reason']}"
            r.outcome = Invalid("invalid_construction", reason, stdout=outcome.stdout)
            r.reward, r.child = 0.0, None
        else:
            self._verified[child.id] = verified

    def _maybe_new_best(self, state: State, source: str) -> None:
        if state.value is None or (self.best is not None and state.value <= self.best["value"]):
            return
        # kept in memory and written with the next checkpoint, so best/ never describes a discarded step
        self.best = {
            "state_id": state.id,
            "value": state.value,
            "score": state.score,
            "step": state.step,
            "source": source,
            "construction": state.construction,
            "code": state.code,
        }
        if state.id in self._verified:  # checked by _confirm before it could become the best
            self.best["verified"] = self._verified.pop(state.id)
        self._verified.clear()

    def verify_best(self) -> dict[str, Any] | None:
        """The best record, its construction re-verified once (kept in the record, so in the checkpoint)."""
        if self.best is not None and "verified" not in self.best:
            self.best["verified"] = reverify(self.problem, self.best.get("construction"))
        return self.best

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the step: RNG, seeds made, best record, totals."""
        return {"rng": self.rng.bit_generator.state, "made": self.made, "best": self.best, "totals": self.totals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best, totals = state["best"], state["totals"]
        if not (best is None or (isinstance(best, dict) and isinstance(best.get("value"), (int, float)))):
            raise ValueError("the best record is not a mapping with a numeric value")
        if not isinstance(state["made"], int) or not isinstance(totals, dict):
            raise ValueError("the count of seeds made or the rollout totals are of the wrong type")
        self.rng.bit_generator.state = state["rng"]
        self.made, self.best, self.totals = state["made"], best, totals


#: finish reasons of rollouts nothing was sampled for
NOT_SAMPLED = ("prompt_failed", "prompt_too_long")


def distinct_per_group(rollouts: Sequence[Rollout], n_groups: int) -> list[tuple[int, int]]:
    """(distinct completions, sampled completions) of each group: token ids, or the text for a
    backend that returns text only. Rollouts of one group should be independent draws; a
    backend that reuses one seed across a group's samples returns copies, which carry no
    signal for the update (``finish`` warns of them)."""
    seen: list[set] = [set() for _ in range(n_groups)]
    sampled = [0] * n_groups
    for r in rollouts:
        c = r.completion
        if c.finish_reason in NOT_SAMPLED:
            continue
        seen[r.group].add(tuple(c.tokens) if c.tokens else c.text)
        sampled[r.group] += 1
    return [(len(s), n) for s, n in zip(seen, sampled, strict=True)]


def _count(kinds: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in kinds:
        out[k] = out.get(k, 0) + 1
    return out
