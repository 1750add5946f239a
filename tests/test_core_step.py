"""The step as a public unit: plan(t) and finish(plan, completions), and the callers that share it."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from discover_ttt.cli import cli
from discover_ttt.config import load_config
from discover_ttt.launch.replay import ReplayBackend
from discover_ttt.loop import Discovery, run_config
from discover_ttt.preview import first_prompts
from discover_ttt.problems.autocorrelation.problem import AutocorrelationProblem
from discover_ttt.progress import Reporter
from discover_ttt.step import Step

ROOT = Path(__file__).parent.parent
TOY = Path(__file__).parent / "toy"


# -- discover prompt is the first half of step 0 -----------------------------------------------------------
def ac1_config(tmp_path) -> Path:
    """AC1 with three random seeds, each re-drawn by on_selected when chosen; replies without code run nothing."""
    replies = tmp_path / "replies.jsonl"
    replies.write_text(json.dumps({"text": "No program this time."}) + "\n")
    raw = {
        "problem": {"name": "ac1"},
        "backend": {"name": "replay", "path": str(replies)},
        "sampler": {"name": "puct", "c": 1.0},
        "estimator": {"name": "entropic_adaptive"},
        "sandbox": {"workers": 1, "isolation": "none"},
        "run": {"steps": 1, "groups": 3, "rollouts": 4, "seed": 7, "output": str(tmp_path / "run")},
        "log": {"progress": "none"},
    }
    path = tmp_path / "ac1.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_discover_prompt_shows_exactly_the_prompts_step_0_sends(tmp_path, monkeypatch):
    config = ac1_config(tmp_path)
    result = CliRunner().invoke(cli, ["prompt", str(config), "--all", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)

    sent = []
    sample = ReplayBackend.sample

    def recording(self, prompts, n):
        sent.extend(prompts)
        return sample(self, prompts, n)

    monkeypatch.setattr(ReplayBackend, "sample", recording)
    summary = run_config(config, reporter=Reporter())
    assert summary.steps_done == 1 and len(sent) == 3
    assert shown == sent

    # the seeds were re-drawn on selection: without on_selected the prompts would differ
    monkeypatch.setattr(AutocorrelationProblem, "on_selected", lambda self, state, rng: state)
    assert first_prompts(config) != sent


def test_discover_prompt_names_a_failing_prompt_hook(tmp_path, monkeypatch):
    monkeypatch.setattr(AutocorrelationProblem, "prompt", lambda self, state: 42)
    result = CliRunner().invoke(cli, ["prompt", str(ac1_config(tmp_path))])
    assert result.exit_code != 0
    assert "hook prompt()" in result.output and "group 0 of step 0" in result.output
    assert "Traceback" not in result.output


# -- plan and finish -----------------------------------------------------------------------------------------
def toy_run(tmp_path, *overrides) -> Discovery:
    sets = [f"run.output={tmp_path / 'run'}", "sandbox.isolation=none", *overrides]
    disc = Discovery(load_config(TOY / "config.yaml", sets), reporter=Reporter())
    disc.start()
    return disc


def test_a_failed_prompt_is_kept_in_the_plan_and_its_group_fails_without_sampling(tmp_path, monkeypatch):
    import toy_problem

    disc = toy_run(tmp_path, "run.groups=3", "run.rollouts=2")
    step: Step = disc.stepper
    prompt = toy_problem.ToyProblem.prompt

    def second_fails(self, state):
        if state.id == "seed1":
            raise RuntimeError("no prompt for this one")
        return prompt(self, state)

    monkeypatch.setattr(toy_problem.ToyProblem, "prompt", second_fails)
    try:
        plan = step.plan(0)
        g = next(g for g, s in enumerate(plan.parents) if s.id == "seed1")
        assert list(plan.failed) == [g] and "no prompt for this one" in plan.failed[g].reason
        assert plan.sampled_groups == [x for x in range(3) if x != g] and len(plan.to_sample) == 2

        sampled = disc.backend.sample(plan.to_sample, 2)
        with pytest.raises(ValueError, match="1 groups of completions for 2 sampled groups"):
            step.finish(plan, sampled[:1])
        result = step.finish(plan, sampled)
    finally:
        disc.close()
    assert [(r.group, r.index) for r in result.rollouts] == [(x, j) for x in range(3) for j in range(2)]
    failed = [r for r in result.rollouts if r.group == g]
    assert all(r.completion.finish_reason == "prompt_failed" and r.outcome.kind == "exception" for r in failed)
    assert all("hook prompt()" in r.outcome.reason and r.reward == 0 for r in failed)
    others = [r for r in result.rollouts if r.group != g]
    assert [r.completion for r in others] == [c for group in sampled for c in group]
    assert result.metrics["rollouts"] == 6 and result.metrics["failures"]["exception"] >= 2
    events = [json.loads(line) for line in (disc.store.root / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events] == ["rollout"] * 6 + ["step"]


def test_finish_trains_on_the_kept_groups_only_when_given_a_trainer(tmp_path):
    disc = toy_run(tmp_path, "run.groups=2", "run.rollouts=4")
    try:
        plan = disc.stepper.plan(0)
        batches = []
        result = disc.stepper.finish(
            plan, disc.backend.sample(plan.to_sample, 4), train=lambda items: batches.append(items) or {"loss": 1.5}
        )
    finally:
        disc.close()
    kept = set(result.metrics["groups_kept"])
    assert len(batches) == 1 and result.metrics["train"] == {"loss": 1.5}
    assert [(i.completion, i.advantage) for i in batches[0]] == [
        (r.completion, r.advantage) for r in result.rollouts if r.group in kept
    ]


# -- nobody reaches into the step's or the loop's private parts ---------------------------------------------
OWNERS = {"discover_core/step.py": "Step", "discover_core/loop.py": "Discovery"}
SOURCES = ("discover_core", "samplers", "estimators", "launch", "problems", "tests", "benchmarks", "scripts")


def private_names() -> set[str]:
    """Private methods and attributes of Step and Discovery (``_x`` defined on or assigned to ``self``)."""
    names = set()
    for path, cls in OWNERS.items():
        tree = ast.parse((ROOT / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == cls:
                for sub in ast.walk(node):
                    if isinstance(sub, ast.FunctionDef) and sub.name.startswith("_") and not sub.name.endswith("__"):
                        names.add(sub.name)
                    if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "self":
                        if sub.attr.startswith("_") and not sub.attr.endswith("__"):
                            names.add(sub.attr)
    return names


def private_uses(tree: ast.AST, names: set[str]) -> list[str]:
    """``x._name`` (x not self or cls) and ``setattr(Step|Discovery, "_name", ...)`` for the given names."""
    found: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in names:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append((node.lineno, node.col_offset, f"line {node.lineno}: .{node.attr}"))
        if isinstance(node, ast.Call) and len(node.args) >= 2:
            owner, name = node.args[0], node.args[1]
            if isinstance(owner, ast.Name) and owner.id in OWNERS.values():
                if isinstance(name, ast.Constant) and name.value in names:
                    found.append((node.lineno, node.col_offset, f"line {node.lineno}: {owner.id}.{name.value} by name"))
    return [text for *_, text in sorted(found)]


def test_no_caller_outside_its_module_touches_the_steps_private_parts():
    names = private_names()
    assert {"_selected", "_settle", "_checkpoint"} <= names  # the scan sees both classes
    offenders = {}
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in OWNERS:
                continue
            uses = private_uses(ast.parse(path.read_text()), names)
            if uses:
                offenders[rel] = uses
    assert offenders == {}


def test_the_scan_finds_a_reach_into_the_loop():
    names = private_names()
    src = (
        "disc = Discovery(loaded)\n"
        "disc._start_workers() or disc.stepper._selected(state)\n"
        "monkeypatch.setattr(Discovery, '_checkpoint', None)\n"
        "self._selected(x)\n"
    )
    assert private_uses(ast.parse(src), names) == [
        "line 2: ._start_workers",
        "line 2: ._selected",
        "line 3: Discovery._checkpoint by name",
    ]
