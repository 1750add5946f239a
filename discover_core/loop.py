"""The discovery loop: one synchronous, on-policy RL step after another.

For step t (``reference-algorithm.md`` §2.1):

1. select ``groups`` states with the sampler (once per step);
2. render one prompt per state and sample ``rollouts`` completions each;
3. parse and evaluate every rollout in the sandbox (in parallel); a failure of
   any kind gets reward 0 and counts as a failed visit of its parent;
4. record every rollout with the sampler, in rollout order (deterministic);
5. advantages per group from its raw rewards; constant groups are dropped;
6. one training step on the remaining rollouts (if the backend can train);
7. end the sampler's step (prune the archive), write events and a checkpoint.

Nothing a program or a plugin does stops the run: failures become events.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backend import Backend, Completion, TrainItem
from .components import instantiate
from .config import LoadedConfig, config_changes, load_config
from .errors import UserError
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
from .plugins import Plugins, get_plugins
from .problem import Evaluation, Invalid, Problem, Program
from .progress import Reporter, make_reporter
from .state import State
from .store import RunDirError, RunStore, dumps, write_atomic
from .trackers import open_trackers

log = logging.getLogger("discover")


@dataclass
class Rollout:
    """Everything the loop knows about one rollout."""

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
class RunSummary:
    run_dir: Path
    steps_done: int
    best_score: float | None
    best_value: float | None
    valid_rate: float
    rollouts: int
    metrics: list[dict[str, Any]] = field(default_factory=list)


class Discovery:
    """A run: its components, its run directory, and the loop over steps."""

    def __init__(
        self,
        loaded: LoadedConfig,
        plugins: Plugins | None = None,
        reporter: Reporter | None = None,
        store: RunStore | None = None,
    ):
        self.loaded = loaded
        self.cfg = loaded.config
        self.plugins = plugins or get_plugins()
        self.store = store or RunStore(self.cfg.run.output)
        self.reporter = reporter or make_reporter(self.cfg.log.progress)
        self.rng = np.random.default_rng(self.cfg.run.seed)
        self.step = 0  # next step to run
        self.made = 0  # fresh initial states created so far (for their ids)
        self.best: dict[str, Any] | None = None
        self.totals = {"rollouts": 0, "valid": 0}

        self.problem: Problem = self._build("problem")
        self._stop = threading.Event()  # set on an interrupt: abandon the evaluations in flight
        problem_entry = self.plugins.get("problems", self.cfg.problem.name)
        self.hooks = HookGuard(self.problem, problem_entry.plugin, self.cfg.sandbox.timeout_s, self._stop)
        self._archive_ok: dict[str, bool] = {}  # keep_in_archive, asked once per child
        self.sampler = self._build("sampler")
        self.sampler.accept = self._keep
        self.sampler.make_states = self._fresh_states
        est_entry = self.plugins.get("estimators", self.cfg.estimator.name)
        self.estimator = self._build("estimator")
        self.estimator_stats = est_entry.extra.get("stats")
        est_sig = inspect.signature(self.estimator).parameters
        self._est_runtime = {name for name in ("scores", "correct") if name in est_sig}
        self.backend: Backend | None = None
        self.sandbox = None

    def _build(self, section: str) -> Any:
        kind = {"problem": "problems", "backend": "backends", "sampler": "samplers", "estimator": "estimators"}[section]
        entry = self.plugins.get(kind, getattr(self.cfg, section).name)
        return instantiate(entry.obj, self.loaded.params[section])

    def _start_workers(self) -> None:
        """Backend and sandbox are the expensive parts; built only when a run really starts."""
        from .sandbox.executors import make_sandbox

        if self.backend is None:
            self.backend = self._build("backend")
            if hasattr(self.backend, "set_progress"):
                self.backend.set_progress(self.reporter.sampled)
        if self.sandbox is None:
            settings = self.cfg.sandbox.model_dump()
            if self.problem.sandbox_preload:  # e.g. cvxpy, for problems whose programs use it
                from .sandbox import DEFAULT_PRELOAD

                base = tuple(settings.get("preload") or DEFAULT_PRELOAD)
                settings["preload"] = base + tuple(m for m in self.problem.sandbox_preload if m not in base)
            self.sandbox = make_sandbox(settings, self.problem.program_resources)

    def _selected(self, state: State) -> State:
        """The state a group starts from: the problem may re-draw a selected seed (same id); if the hook fails, itself."""
        out = self.hooks.call("on_selected", state, self.rng)
        return out if isinstance(out, State) and out.id == state.id else state

    def _warm_start(self) -> list[State] | None:
        """Seeds from ``problem.init_from`` (verified; a bad file is a ConfigError), or None."""
        if self.cfg.problem.init_from is None:
            return None
        from .records import warm_start_states

        states = warm_start_states(self.problem, self.cfg.problem.init_from, self.cfg.run.groups)
        for i, s in enumerate(states):
            s.id, s.step = f"init{i}", -1
        return states

    def _fresh_states(self, k: int) -> list[State]:
        states = self.hooks.call_before_start("initial_states", self.rng, k, check=check_states(k))
        self.hooks.seed_values(states)  # the engine sets every archived value from the score
        for s in states:
            s.id = f"seed{self.made}"
            s.step = -1
            self.made += 1
        return states

    # -- start and resume ---------------------------------------------------------------
    def start(self) -> None:
        warm = self._warm_start()  # checked before the run directory exists
        self.store.create(self.loaded.resolved())
        self._start_workers()
        seeds = warm if warm is not None else self._fresh_states(self.cfg.run.groups)
        self.sampler.seed(seeds)
        for s in seeds:
            self._maybe_new_best(s, source="seed")
        self._write_best()  # the seeds' best: no step to discard yet
        log.info("new run in %s: %d seed states", self.store.root, len(seeds))

    def resume(self) -> bool:
        """Continue from the last complete checkpoint. Returns False if there is none (then call start)."""
        if not self.store.holds_run():
            return False
        self.store.acquire()
        ckpt = self.store.latest_checkpoint()
        if ckpt is None:
            return False
        self._check_config()
        try:
            loop_state = json.loads((ckpt / "loop.json").read_text())
            sampler_state = json.loads((ckpt / "sampler.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RunDirError(
                f"Checkpoint {ckpt} is corrupted ({e}). Delete that folder to resume from the one before it."
            ) from None
        self._start_workers()
        self.sampler.load_state_dict(sampler_state)
        self.rng.bit_generator.state = loop_state["rng"]
        self.step = loop_state["step"] + 1
        self.made = loop_state["made"]
        self.best = loop_state["best"]
        self.totals = loop_state["totals"]
        self.backend.load(ckpt / "backend")
        last = loop_state["step"]
        missing = self.store.missing_steps(last)
        dropped = self.store.truncate_events(last)
        if missing:
            log.warning(
                "events.jsonl of %s lacks the events of steps %s (missing or cut) below checkpoint %s; the run "
                "continues from the checkpoint and records the gap",
                self.store.root,
                _ranges(missing),
                ckpt.name,
            )
            self.store.append_events([{"type": "events_gap", "step": last, "missing_steps": missing}])
        if self.best is not None and "construction" in self.best:
            self.store.write_best(self.best)  # best/ always describes this checkpoint
        log.info("resumed %s at step %d (%d events of the step in flight dropped)", self.store.root, self.step, dropped)
        return True

    def resume_or_restart(self) -> None:
        """Resume from the last complete checkpoint; a run without one starts again in place from step 0."""
        try:
            if self.resume():
                return
            if self.store.holds_run():
                log.warning("%s has no complete checkpoint: starting it again from step 0, in place", self.store.root)
                self.store.acquire()
                self.store.reset()
            self.start()
        except BaseException:
            self.close()  # a refused resume leaves the directory unlocked
            raise

    def _check_config(self) -> None:
        """Refuse a resume whose config changes what the steps compute; record the safe changes."""
        saved = self.store.read_config()
        new = self.loaded.resolved()
        unsafe, safe = config_changes(saved, new)
        if unsafe:
            shown = "; ".join(f"{k}: {_at(saved, k)!r} -> {_at(new, k)!r}" for k in unsafe[:8])
            raise RunDirError(
                f"Cannot resume {self.store.root} with a different config ({shown}). Only the number of steps, "
                "checkpointing, logging and sandbox.workers may change on resume; start a new run for the rest."
            )
        if safe:
            log.info("resume with changed %s (written to the run's config.yaml)", ", ".join(safe))
            self.store.write_config(new)

    def _write_best(self) -> None:
        """best/ from the current record, verified once (then kept in the record and the checkpoint)."""
        if self.best is None:
            return
        if "verified" not in self.best:
            self.best["verified"] = self._guard_verify(self.best.get("construction"))
        self.store.write_best(self.best)

    def _checkpoint(self, t: int) -> None:
        if self.best is not None and "verified" not in self.best:
            self.best["verified"] = self._guard_verify(self.best.get("construction"))
        tmp = self.store.ckpt_dir / f".step_{t:06d}.tmp"
        try:
            with self.store.os_errors(f"write the checkpoint of step {t}"):
                tmp = self.store.begin_checkpoint(t)
                (tmp / "backend").mkdir()
                self.backend.save(tmp / "backend")
                write_atomic(tmp / "sampler.json", dumps(self.sampler.state_dict()))
                loop_state = {
                    "step": t,
                    "rng": self.rng.bit_generator.state,
                    "made": self.made,
                    "best": self.best,
                    "totals": self.totals,
                }
                write_atomic(tmp / "loop.json", dumps(loop_state))  # written last: marks the checkpoint complete
                self.store.commit_checkpoint(tmp, t, keep=self.cfg.run.keep_checkpoints)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone after the commit; a half-written one never stays
        self._write_best()  # from the record this checkpoint holds

    # -- one step ---------------------------------------------------------------------------
    def run_step(self, t: int) -> dict[str, Any]:
        cfg = self.cfg.run
        t0 = time.perf_counter()
        parents = [self._selected(s) for s in self.sampler.select(cfg.groups)]
        prompts = [self.hooks.call("prompt", s, check=check_prompt) for s in parents]
        ok = [g for g, p in enumerate(prompts) if not isinstance(p, Invalid)]

        ts = time.perf_counter()
        sampled = self.backend.sample([prompts[g] for g in ok], cfg.rollouts) if ok else []
        sample_s = time.perf_counter() - ts
        # a group whose prompt failed is sampled not at all: its rollouts are that failure
        completions = {g: group for g, group in zip(ok, sampled, strict=True)}
        failed = [Completion(text="", finish_reason="prompt_failed")] * cfg.rollouts
        rollouts = [
            Rollout(group=g, index=j, parent=parent, completion=c)
            for g, parent in enumerate(parents)
            for j, c in enumerate(completions.get(g, failed))
        ]
        failed_prompts = {g: p for g, p in enumerate(prompts) if isinstance(p, Invalid)}
        return self.finish_step(t, parents, rollouts, t0=t0, sample_s=sample_s, failed_prompts=failed_prompts)

    def finish_step(
        self,
        t: int,
        parents: list[State],
        rollouts: list[Rollout],
        *,
        t0: float,
        sample_s: float,
        failed_prompts: dict[int, Invalid] | None = None,
    ) -> dict[str, Any]:
        """Everything after sampling: evaluate, record, advantages, train, end the step, write events.

        ``rollouts`` are updated in place (outcome, reward, advantage). A driver that samples
        elsewhere (the NeMo RL environment in ``launch/nemo_rl``) calls this with its own completions.
        """
        te = time.perf_counter()
        self._evaluate(t, parents, rollouts, failed_prompts or {})
        eval_s = time.perf_counter() - te

        for r in rollouts:  # rollout order, so the archive is the same on every run
            self.sampler.record(r.parent, r.child)
            if r.child is not None:
                self._maybe_new_best(r.child, source=f"step {t}")

        groups_stats, kept = self._advantages(rollouts, len(parents))

        tt = time.perf_counter()
        train_metrics: dict[str, Any] = {}
        if self.backend.can_train and kept:
            items = [TrainItem(r.completion, r.advantage) for r in rollouts if r.group in kept]
            train_metrics = self.backend.train(items)
        elif self.backend.can_train:
            train_metrics = {"skipped": "every group had constant rewards"}
            log.info("step %d: every group had constant rewards; no update", t)
        train_s = time.perf_counter() - tt

        self.sampler.end_step()

        valid = [r for r in rollouts if r.valid]
        rewards = np.array([r.reward for r in rollouts]) if rollouts else np.zeros(0)
        step_best = max((r.child.score for r in valid if r.child.score is not None), key=self._score_key, default=None)
        self.totals["rollouts"] += len(rollouts)
        self.totals["valid"] += len(valid)
        total_s = time.perf_counter() - t0
        metrics = {
            "type": "step",
            "step": t,
            "groups": len(parents),
            "rollouts": len(rollouts),
            "valid_rate": len(valid) / max(1, len(rollouts)),
            "best_score": None if self.best is None else self.best["score"],
            "step_best_score": step_best,
            "reward_mean": float(rewards.mean()) if len(rewards) else 0.0,
            "reward_max": float(rewards.max()) if len(rewards) else 0.0,
            "failures": _count([r.outcome.kind for r in rollouts if isinstance(r.outcome, Invalid)]),
            "groups_kept": sorted(kept),
            "group_stats": groups_stats,
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
        self.store.append_events([self._event(t, r) for r in rollouts] + [metrics])
        return metrics

    def _evaluate(self, t: int, parents: list[State], rollouts: list[Rollout], failed: dict[int, Invalid]) -> None:
        """Outcome of every rollout; ``failed`` maps groups whose prompt failed to that failure."""
        self.reporter.evaluating(len(rollouts))
        programs = [failed[r.group] if r.group in failed else self._parse(r.completion) for r in rollouts]
        outcomes: list[Evaluation | Invalid | None] = [None] * len(rollouts)
        todo = []
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

        pool = ThreadPoolExecutor(max_workers=max(1, self.sandbox.workers))
        try:
            for i, o in zip(todo, pool.map(one, todo), strict=True):
                outcomes[i] = o
        except BaseException:
            self._stop.set()  # Ctrl-C: the pool threads stop waiting at once
            raise
        finally:
            pool.shutdown(wait=not self._stop.is_set(), cancel_futures=True)
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
            extra = {}
            if "correct" in self._est_runtime:
                extra["correct"] = np.array([r.valid for r in members])
            if "scores" in self._est_runtime:
                extra["scores"] = np.array([r.child.score if r.valid else np.nan for r in members], dtype=np.float64)
            advantages_G = np.asarray(self.estimator(rewards_G, **extra), dtype=np.float64)
            for r, a in zip(members, advantages_G, strict=True):
                r.advantage = float(a)
            entry: dict[str, Any] = {"group": g, "state": members[0].parent.id if members else None}
            if self.estimator_stats is not None and len(rewards_G):
                params = dict(getattr(self.estimator, "keywords", {}) or {})
                entry.update(self.estimator_stats(rewards_G, **params))
            entry["constant"] = constant
            stats.append(entry)
            if not (constant and self.cfg.run.drop_constant_groups):
                kept.add(g)
        if not kept and n_groups and self.cfg.run.faithful_constant_groups:
            kept.add(0)  # the reference keeps the first group when all are constant
        for r in rollouts:
            if r.group not in kept:
                r.advantage = 0.0
        return stats, kept

    def _score_key(self, score: float) -> float:
        return score if self.problem.maximize else -score

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

    def _guard_verify(self, construction: Any) -> dict[str, Any]:
        try:
            v = self.problem.verify(construction)
            return {"valid": v.valid, "score": v.score, "reason": v.reason}
        except NotImplementedError:
            return {"valid": None, "score": None, "reason": "the problem has no verify()"}
        except Exception as e:  # noqa: BLE001
            return {"valid": False, "score": None, "reason": f"verify raised {type(e).__name__}: {e}"}

    def _event(self, t: int, r: Rollout) -> dict[str, Any]:
        o = r.outcome
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
            "outcome": "valid" if r.valid else o.kind,
            "reason": None if r.valid else o.reason,
            "score": r.child.score if r.child else None,
            "reward": r.reward,
            "advantage": r.advantage,
            "archived": bool(r.child and self._archive_ok.get(r.child.id)),
            "stdout_tail": (o.stdout or "")[-500:],
            "traceback": None if r.valid else (getattr(o, "traceback", "") or None),  # a hook's last frames
        }

    def commit_step(self, t: int) -> None:
        """After step ``t``: checkpoint every ``save_every`` steps and at the last one; the next step is t + 1."""
        if (t + 1) % self.cfg.run.save_every == 0 or t + 1 == self.cfg.run.steps:
            self._checkpoint(t)
        self.step = t + 1

    # -- the whole run --------------------------------------------------------------------------
    def run(self) -> RunSummary:
        history = []
        trackers = open_trackers(self.cfg.log, self.store.root, self.loaded.resolved(), self.problem)
        restore = _second_interrupt_exits()
        try:
            self.reporter.started(self.cfg, self.step)
            for t in range(self.step, self.cfg.run.steps):
                self.reporter.step_started(t, self.cfg.run.steps, self.best)
                metrics = self.run_step(t)
                self.commit_step(t)
                history.append(metrics)
                self.reporter.step_finished(metrics)
                trackers.log_step(metrics)
        except KeyboardInterrupt:
            self._stop.set()
            raise RunInterrupted(self._interrupted_message()) from None
        finally:
            trackers.close()
            self.reporter.close()
            self.close()
            restore()
        summary = RunSummary(
            run_dir=self.store.root,
            steps_done=self.step,
            best_score=None if self.best is None else self.best["score"],
            best_value=None if self.best is None else self.best["value"],
            valid_rate=self.totals["valid"] / max(1, self.totals["rollouts"]),
            rollouts=self.totals["rollouts"],
            metrics=history,
        )
        self.reporter.finished(summary)
        return summary

    def close(self) -> None:
        self._stop.set()  # evaluations still in flight are abandoned
        for part in (self.sandbox, self.backend):  # the sandbox first: its running programs are killed
            if part is not None:
                part.close()
        self.store.close()

    def _interrupted_message(self) -> str:
        ckpt = self.store.latest_checkpoint()
        kept = (
            f"it keeps every step up to {int(ckpt.name[len('step_') :])} (checkpoint {ckpt.name})"
            if ckpt is not None
            else "no step was checkpointed yet, so a resume starts it again from step 0"
        )
        return f"Interrupted during step {self.step}. The run directory {self.store.root} is intact: {kept}. " + (
            f"Continue it with: discover resume {self.store.root}"
        )


class RunInterrupted(UserError):
    """Ctrl-C: the run stopped cleanly; the message says what was kept and how to continue."""

    exit_code = 130


def _second_interrupt_exits():
    """After the first Ctrl-C (a KeyboardInterrupt that stops the step), a second one exits at once.

    Cleanup after the first is short (programs are killed, files are closed), but a
    second Ctrl-C inside it would print a traceback; this one prints one line instead.
    Returns the function that restores the previous handler.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGINT)
    interrupted = False

    def handler(signum, frame):
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            raise KeyboardInterrupt
        sys.stderr.write("\nInterrupted again: stopping now; the last checkpoint is kept.\n")
        sys.stderr.flush()
        os._exit(130)

    signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


def _at(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


def _ranges(steps: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out, start = [], None
    for i, t in enumerate(steps):
        if start is None:
            start = t
        if i + 1 == len(steps) or steps[i + 1] != t + 1:
            out.append(f"{start}" if start == t else f"{start}-{t}")
            start = None
    return ", ".join(out)


def _count(kinds: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in kinds:
        out[k] = out.get(k, 0) + 1
    return out


def run_config(
    path: str | Path, overrides: list[str] | None = None, *, resume: bool = False, reporter: Reporter | None = None
) -> RunSummary:
    """Validate a config and run it; with ``resume`` continue its run directory (or start it there)."""
    loaded = load_config(path, overrides)
    if resume:
        _refuse_finished(loaded, f"discover run {path} --resume")
        disc = Discovery(loaded, reporter=reporter)
        disc.resume_or_restart()
        return disc.run()
    # never write over an earlier run or the user's files: a fresh, locked folder (runs/x, runs/x-1, ...)
    store = RunStore.claim(loaded.config.run.output)
    loaded.config.run.output = store.root
    disc = None
    try:
        disc = Discovery(loaded, reporter=reporter, store=store)
        disc.start()
    except BaseException:
        (disc or store).close()
        raise
    return disc.run()


def resume_run(run_dir: str | Path, overrides: list[str] | None = None, reporter: Reporter | None = None) -> RunSummary:
    """Continue the run in ``run_dir`` with the config it saved (from step 0 if it has no complete checkpoint)."""
    store = RunStore(Path(run_dir))
    raw = store.read_config()
    raw.setdefault("run", {})["output"] = str(Path(run_dir).resolve())
    loaded = load_config(Path(run_dir), overrides, raw=raw)
    _refuse_finished(loaded, f"discover resume {run_dir}")
    disc = Discovery(loaded, reporter=reporter)
    disc.resume_or_restart()
    return disc.run()


def _refuse_finished(loaded: LoadedConfig, command: str) -> None:
    """A run whose last checkpoint is its last step has nothing left to do: say so, and how to extend it."""
    ckpt = RunStore(loaded.config.run.output).latest_checkpoint()
    try:
        done = json.loads((ckpt / "loop.json").read_text())["step"] + 1 if ckpt else 0
    except (OSError, ValueError, KeyError, TypeError):
        return  # resume reports a corrupted checkpoint itself
    steps = loaded.config.run.steps
    if done >= steps:
        raise RunDirError(
            f"The run in {loaded.config.run.output} is finished: it completed {done} step(s) and run.steps is "
            f"{steps}. To extend it, give it more steps: {command} --set run.steps={done + max(1, steps)}."
        )
