"""The autocorrelation problems AC1 and AC2: verifiers, records, seeds, prompts and replay runs."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from discover_ttt.cli import cli
from discover_ttt.components import build
from discover_ttt.config import load_config
from discover_ttt.loop import Discovery
from discover_ttt.plugins import get_plugins
from discover_ttt.problems.autocorrelation import verifier as V
from discover_ttt.progress import Reporter

DATA = Path(__file__).parent / "data"
RECORDS = {
    "ac1": DATA / "records" / "ac1_ttt_discover_30000.json",
    "ac2": DATA / "records" / "ac2_ttt_discover_50000.json",
}


def problem(name, **params):
    return build(get_plugins().get("problems", name).obj, params)


# -- the formulas ------------------------------------------------------------------------------------


def ac1_direct(seq):
    a = np.asarray(seq, dtype=np.float64)
    return 2 * a.size * np.max(np.convolve(a, a)) / np.sum(a) ** 2


@pytest.mark.parametrize("n", [1, 2, 3, 17, 400, 2500])
def test_fft_path_agrees_with_the_direct_formulas(n):
    rng = np.random.default_rng(n)
    a = rng.random(n) * (rng.random(n) < 0.7)  # zeros too, as real constructions have
    a[0] += 0.1
    assert V.ac1_bound(a, fast=True) == pytest.approx(ac1_direct(a), rel=1e-12, abs=0)
    assert V.ac1_bound(a, fast=False) == pytest.approx(ac1_direct(a), rel=1e-15, abs=0)
    assert V.ac2_bound(a, fast=True) == pytest.approx(V.ac2_bound_reference(a.tolist()), rel=1e-12, abs=0)
    assert V.ac2_bound(a, fast=False) == pytest.approx(V.ac2_bound_reference(a.tolist()), rel=1e-12, abs=0)


def test_a_plateau_of_equal_peaks_falls_back_to_the_direct_convolution(monkeypatch):
    monkeypatch.setattr(V, "MAX_PEAK_LAGS", 2)
    a = np.ones(3000)
    a[::2] = 0.0  # every other lag ties near the peak
    assert V.ac1_bound(a, fast=True) == pytest.approx(ac1_direct(a), rel=1e-15)


def test_constant_sequences_have_the_known_bounds():
    # a constant step function: f*f is a triangle, C1 bound 2, C2 bound 2/3
    assert V.ac1_bound(np.full(1234, 0.3)) == pytest.approx(2.0, rel=1e-12)
    assert V.ac2_bound(np.full(1234, 0.3)) == pytest.approx(2 / 3, rel=1e-6)


@pytest.mark.parametrize(
    "seq, needle",
    [
        (np.ones(5), "Python list"),
        ((1.0, 2.0), "Python list"),
        ([], "empty"),
        ([1.0, True], "item 1 is a bool"),
        ([1.0, "2"], "item 1 is a str"),
        ([1.0, float("nan")], "NaN or infinite"),
        ([1.0, float("inf")], "NaN or infinite"),
        ([0.001, 0.002], "below 0.01"),
        ([-5.0, 0.005], "below 0.01"),
    ],
)
def test_sequences_that_break_a_rule_are_rejected_with_the_rule(seq, needle):
    with pytest.raises(V.InvalidSequence, match=needle):
        V.check_sequence(seq)
    assert V.evaluate_ac1(seq) == np.inf
    with pytest.raises(ValueError):
        V.evaluate_ac2(seq)


def test_negatives_and_huge_heights_are_clamped_as_the_reference_does():
    a = V.check_sequence([-3, 2.0, 5000.0, 1])
    assert a.tolist() == [0.0, 2.0, 1000.0, 1.0]
    assert V.evaluate_ac1([-3, 2.0, 5000.0, 1]) == pytest.approx(ac1_direct([0.0, 2.0, 1000.0, 1.0]), rel=1e-15)


# -- the records, through the command line ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["ac1", "ac2"])
def test_records_reproduce_through_discover_verify(name):
    record = json.loads(RECORDS[name].read_text())
    result = CliRunner().invoke(cli, ["verify", name, str(RECORDS[name]), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["valid"] is True
    assert out["metrics"]["n"] == record["n"]
    assert out["score"] == pytest.approx(record["value"], rel=1e-12, abs=0)


def test_a_record_of_the_other_problem_is_still_a_sequence_but_a_bad_file_is_an_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"construction": {"centers": [[0.1, 0.2]]}}))
    result = CliRunner().invoke(cli, ["verify", "ac1", str(bad)])
    assert result.exit_code == 2 and "does not hold a ac1 construction" in result.output
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps([1.0, True]))
    result = CliRunner().invoke(cli, ["verify", "ac2", str(bare)])
    assert result.exit_code == 1 and "bool" in result.output


def test_record_formats():
    ac1 = problem("ac1")
    for record in ([0.5, 1.0], {"values": [0.5, 1.0]}, {"heights": [0.5, 1.0]}, {"sequence": [0.5, 1.0]},
                   {"construction": {"values": [0.5, 1.0]}}):  # fmt: skip
        assert ac1.construction_from_record(record) == [0.5, 1.0]
    with pytest.raises(ValueError, match="no ac1 construction in this record"):
        ac1.construction_from_record({"centers": [[0.5, 0.5]], "radii": [0.1]})  # a packing's radii are not heights


# -- states and prompts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, score", [("ac1", 2.0), ("ac2", 2 / 3)])
def test_seeds_are_one_random_height_repeated_with_the_starter_program(name, score):
    p = problem(name, budget_s=20)
    seeds = p.initial_states(np.random.default_rng(0), 4)
    again = p.initial_states(np.random.default_rng(0), 4)
    assert [s.construction for s in seeds] == [s.construction for s in again]  # from the run's RNG
    for s in seeds:
        assert 1000 <= len(s.construction) <= 7999 and len(set(s.construction)) == 1
        assert s.score == pytest.approx(score, rel=1e-6) and s.value == p.value(s.score)
        assert f"def {p.entry}(seed=42, budget_s=20" in s.code and "linprog" in s.code
        assert p.keep_in_archive(s)
    assert len({len(s.construction) for s in seeds}) > 1


def test_archive_keeps_lengths_from_1000_to_100000():
    p = problem("ac1")
    from discover_ttt.state import State

    assert [p.keep_in_archive(State(construction=[1.0] * n)) for n in (999, 1000, 100000, 100001)] == [
        False,
        True,
        True,
        False,
    ]


def test_a_selected_random_seed_is_redrawn_from_the_run_rng():
    p = problem("ac2")
    seed = p.initial_states(np.random.default_rng(0), 1)[0]
    seed.id = "seed0"
    a = p.on_selected(seed, np.random.default_rng(5))
    b = p.on_selected(seed, np.random.default_rng(5))
    assert a.id == "seed0" and a.construction == b.construction and a.construction != seed.construction
    assert a.score == pytest.approx(V.ac2_bound(np.asarray(a.construction)), rel=1e-15)
    assert seed.construction == p.initial_states(np.random.default_rng(0), 1)[0].construction  # archive untouched
    child = seed.child(construction=[1.0] * 1000, value=0.7, score=0.7)
    assert p.on_selected(child, np.random.default_rng(5)) is child
    assert problem("ac2", rerandomize_seeds=False).on_selected(seed, np.random.default_rng(5)) is seed


def test_prompts_state_the_contract_and_the_parent_context():
    p = problem("ac1", budget_s=30, cpus=2)
    seed = p.initial_states(np.random.default_rng(1), 1)[0]
    text = p.prompt(seed)[0]["content"]
    for needle in ("propose_candidate", "30 seconds", "2 CPU", "height_sequence_1", "Matolcsi", "1.503", "tolist()"):
        assert needle in text, needle
    child = seed.child(construction=[1.0] * 1200, value=-1.6, score=1.6, code="def propose_candidate(): ...")
    text = p.prompt(child)[0]["content"]
    assert "2.0000000000 -> 1.6000000000" in text and "Length of the current construction: 1200" in text
    text2 = problem("ac2").prompt(problem("ac2").initial_states(np.random.default_rng(1), 1)[0])[0]["content"]
    assert "construct_function" in text2 and "0.97" in text2 and "higher is better" in text2


def test_target_is_the_problem_method_the_report_calls():
    # discover report calls Problem.target(); an instance attribute of that name once hid it (a float)
    for name in ("ac1", "ac2"):
        p = problem(name)
        assert p.target() == type(p).default_target
    p = problem("ac1", target=1.45)
    assert p.target() == 1.45
    child = p.initial_states(np.random.default_rng(1), 1)[0].child(construction=[1.0] * 1200, value=-1.6, score=1.6)
    assert "1.45" in p.prompt(child)[0]["content"]


# -- replay runs -----------------------------------------------------------------------------------------


def replay_config(tmp_path, name, n_programs, *overrides):
    raw = {
        "problem": {"name": name, "budget_s": 2, "timeout_margin_s": 1.0, "cpus": 1},
        # one group: the replies, in name order
        "backend": {"name": "replay", "path": str(DATA / "programs" / name)},
        "sampler": {"name": "puct", "c": 1.0},
        "estimator": {"name": "entropic_adaptive"},
        "sandbox": {"memory_mb": 1024, "workers": 2, "isolation": "none"},
        "run": {"steps": 1, "groups": 1, "rollouts": n_programs, "seed": 0, "output": str(tmp_path / "run")},
        "log": {"progress": "none"},
    }
    return load_config(tmp_path, list(overrides), raw=raw)


def run_events(summary):
    events = [json.loads(line) for line in (summary.run_dir / "events.jsonl").read_text().splitlines()]
    return [e for e in events if e["type"] == "rollout"]


@pytest.mark.slow  # a replay run with the real verifier: seconds
def test_ac1_replay_run_improves_the_seed_and_records_each_failure(tmp_path):
    disc = Discovery(replay_config(tmp_path, "ac1", 5), reporter=Reporter())
    disc.start()
    assert "cvxpy" in disc.sandbox.preload and "numpy" in disc.sandbox.preload  # the problem's preload, added
    seed_len = len(disc.sampler.states[0].construction)
    summary = disc.run()
    by_name = {e["index"]: e for e in run_events(summary)}
    assert [by_name[i]["outcome"] for i in range(5)] == [
        "valid",
        "invalid_construction",
        "invalid_construction",
        "valid",
        "no_code",
    ]
    lp, short = by_name[0], by_name[3]
    assert lp["score"] < 1.9 and lp["reward"] == pytest.approx(1 / (1e-8 + lp["score"])) and lp["archived"]
    assert "LP steps" in lp["stdout_tail"]
    assert short["score"] == pytest.approx(2.0, rel=1e-12) and not short["archived"]  # 600 items: scored, not kept
    # the selected seed was re-drawn before its rollouts: they saw another length than the archived draw
    started_from = int(short["stdout_tail"].split("started from")[1].split()[0])
    assert started_from != seed_len and 1000 <= started_from <= 7999
    assert "Python list" in by_name[1]["reason"] and "numpy.ndarray" in by_name[1]["reason"]
    assert "item 7" in by_name[2]["reason"] and "bool" in by_name[2]["reason"]
    assert all(by_name[i]["reward"] == 0 for i in (1, 2, 4))

    best = json.loads((summary.run_dir / "best" / "score.json").read_text())
    assert best["verified"]["valid"] and best["verified"]["score"] == pytest.approx(summary.best_score, rel=1e-12)
    assert summary.best_score == lp["score"]
    result = CliRunner().invoke(cli, ["verify", "ac1", str(summary.run_dir / "best" / "construction.json"), "--json"])
    assert json.loads(result.output.strip().splitlines()[-1])["score"] == pytest.approx(summary.best_score, rel=1e-12)


@pytest.mark.slow  # a replay run with the real verifier: seconds
def test_ac2_replay_run_improves_the_seed_and_records_each_failure(tmp_path):
    disc = Discovery(replay_config(tmp_path, "ac2", 4), reporter=Reporter())
    disc.start()
    seed_score = max(s.score for s in disc.sampler.states)
    summary = disc.run()
    by_name = {e["index"]: e for e in run_events(summary)}
    assert [by_name[i]["outcome"] for i in range(4)] == ["valid", "exception", "invalid_construction", "valid"]
    lp, long = by_name[0], by_name[3]
    assert lp["score"] > seed_score + 0.01 and lp["reward"] == pytest.approx(lp["score"]) and lp["archived"]
    assert long["archived"] is False  # over 100000 items
    assert "below 0.01" in by_name[1]["reason"] and "NaN" in by_name[2]["reason"]
    assert summary.best_score == pytest.approx(lp["score"], rel=1e-12)
    # the seed re-drawn at selection is the parent the rollouts saw: its value is in the child's lineage
    child = next(s for s in disc.sampler.states if s.id == lp["child_id"])
    assert child.parent_values[0] == pytest.approx(2 / 3, rel=1e-6)
