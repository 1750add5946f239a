"""The circle-packing plugin: published records, strict mode, invalid packings, evaluate(), prompts."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_problems_erdos import StandInSandbox, _real_sandbox, load_with_available_backend

from discover_ttt.plugins import get_plugins
from discover_ttt.problems.circle_packing import CirclePackingProblem
from discover_ttt.problems.circle_packing.verifier import (
    InvalidConstruction,
    check_packing,
    packing_metrics,
    validate_packing,
)

RECORDS = Path(__file__).parent / "data" / "records"
PACKING_RECORDS = sorted(RECORDS.glob("circle_packing_*.json"))


def load(path):
    return json.loads(path.read_text())


def problem(**params):
    return CirclePackingProblem(CirclePackingProblem.Params(**params))


def grid_packing(k=5, extra=1):
    """k x k touching circles of radius 1/(2k), plus ``extra`` circles of radius 0 in a gap between four."""
    r = 1 / (2 * k)
    centers = [[r + 2 * r * i, r + 2 * r * j] for i in range(k) for j in range(k)] + [[0.2, 0.2]] * extra
    radii = [r] * (k * k) + [0.0] * extra
    return centers, radii


@pytest.fixture(scope="module", params=["stand-in", "real"])
def sandbox(request):
    box = StandInSandbox() if request.param == "stand-in" else _real_sandbox()
    yield box
    box.close()


# -- published records -------------------------------------------------------------------------------


def test_there_are_packing_records():
    assert {load(p)["n"] for p in PACKING_RECORDS} == {26, 32}


# The published statements, independent of anything computed here ("improved it to 2.635" in the
# AlphaEvolve notebook, "2.63598308" in ThetaEvolve's README, sum_radii in TTT-Discover's results file),
# with the number of decimals each source states.
PUBLISHED = {
    "circle_packing_26_alphaevolve": (2.635, 3),
    "circle_packing_26_thetaevolve": (2.63598308, 8),
    "circle_packing_26_ttt_discover": (2.6359773947542573, 16),
    "circle_packing_32_alphaevolve": (2.937, 3),
}


@pytest.mark.parametrize("path", PACKING_RECORDS, ids=lambda p: p.stem)
def test_record_agrees_with_its_published_statement(path):
    stated, decimals = PUBLISHED[path.stem]
    record = load(path)
    assert record["stated_value"] == stated
    p = problem()
    score = p.verify(p.construction_from_record(record)).score
    # the sources round (ThetaEvolve) or truncate (AlphaEvolve's text): agree within one unit of the last decimal
    assert abs(score - stated) < 10.0**-decimals
    if decimals >= 16:
        assert score == pytest.approx(stated, rel=1e-15, abs=0)


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("path", PACKING_RECORDS, ids=lambda p: p.stem)
def test_record_reproduces_its_value(path, strict):
    record = load(path)
    p = problem(strict=strict)
    v = p.verify(p.construction_from_record(record))
    assert record["valid_at_zero_tolerance"]  # all four pass strict mode
    assert v.valid, v.reason
    assert v.score == pytest.approx(record["value"], rel=1e-12, abs=0)
    assert v.metrics["n"] == record["n"]
    assert v.metrics["valid_at_zero_tolerance"] is True
    assert v.metrics["tolerance"] == (0.0 if strict else 1e-12)
    assert v.metrics["min_pair_gap"] == pytest.approx(record["min_pair_gap"], abs=1e-15)
    assert v.metrics["min_boundary_slack"] == pytest.approx(record["min_boundary_slack"], abs=1e-15)


@pytest.mark.parametrize("path", PACKING_RECORDS, ids=lambda p: p.stem)
def test_record_through_the_cli(path):
    from discover_ttt.cli import cli

    record = load(path)
    for extra in ([], ["-p", "strict=true"]):
        result = CliRunner().invoke(cli, ["verify", "circle_packing", str(path), "--json", *extra])
        assert result.exit_code == 0, result.output
        out = json.loads(result.output.strip().splitlines()[-1])
        assert out["valid"] is True
        assert out["score"] == pytest.approx(record["value"], rel=1e-12, abs=0)
        assert out["metrics"]["valid_at_zero_tolerance"] is True


def test_other_record_layouts():
    p = problem()
    record = load(RECORDS / "circle_packing_26_ttt_discover.json")["construction"]
    rows = [[*c, r] for c, r in zip(record["centers"], record["radii"], strict=True)]
    pair = [record["centers"], record["radii"]]
    expected = p.verify(record).score
    assert p.verify(p.construction_from_record(rows)).score == expected
    assert p.verify(p.construction_from_record(pair)).score == expected
    assert p.verify(p.construction_from_record({"circles": rows, "sum_radii": 9.9})).score == expected
    assert p.verify(p.construction_from_record({"packing": rows})).score == expected
    with pytest.raises(ValueError, match="centers"):
        p.construction_from_record({"values": [1]})


# -- tolerance and strict mode --------------------------------------------------------------------------------


def two_circles(overlap):
    """Two circles of radius 0.25 side by side, overlapping by ``overlap``."""
    return [[0.25, 0.5], [0.75 - overlap, 0.5]], [0.25, 0.25]


def test_tolerance_1e12_and_strict_mode():
    centers, radii = two_circles(5e-13)
    assert validate_packing(centers, radii) == 0.5
    v = problem().verify({"centers": centers, "radii": radii})
    assert v.valid and v.metrics["valid_at_zero_tolerance"] is False
    assert v.metrics["min_pair_gap"] < 0
    strict = problem(strict=True).verify({"centers": centers, "radii": radii})
    assert not strict.valid and "overlap" in strict.reason
    centers, radii = two_circles(2e-12)
    assert not problem().verify({"centers": centers, "radii": radii}).valid
    touching = problem(strict=True).verify({"centers": [[0.25, 0.5], [0.75, 0.5]], "radii": [0.25, 0.25]})
    assert touching.valid and touching.metrics["min_pair_gap"] == 0.0


# -- invalid packings -----------------------------------------------------------------------------------------


def _set(values, index, value):
    values = [list(v) if isinstance(v, list) else v for v in values]
    values[index] = value
    return values


INVALID = [
    ("wrong n", lambda c, r: (c[:-1], r[:-1]), "expected 26 circles; got 25"),
    ("centers shape", lambda c, r: ([x + [0.0] for x in c], r), r"centers must have shape \(n, 2\)"),
    ("radii shape", lambda c, r: (c, [[x] for x in r]), r"radii must have shape \(n,\)"),
    ("length mismatch", lambda c, r: (c, r[:-1]), "26 rows but radii has 25"),
    ("ragged", lambda c, r: (_set(c, 3, [0.1]), r), "not a numeric array"),
    ("not numbers", lambda c, r: (c, ["big"] * 26), "not a numeric array"),
    ("NaN center", lambda c, r: (_set(c, 2, [math.nan, 0.5]), r), "centers contains 1 NaN"),
    ("NaN radius", lambda c, r: (c, _set(r, 4, math.nan)), "radii contains 1 NaN"),
    ("negative radius", lambda c, r: (c, _set(r, 25, -0.01)), "circle 25 has radius -0.01"),
    ("outside left", lambda c, r: (_set(c, 0, [0.05, 0.1]), r), "circle 0 .* left side"),
    ("outside top", lambda c, r: (_set(c, 24, [0.9, 0.95]), r), "circle 24 .* top side"),
    ("overlap", lambda c, r: (c, _set(r, 25, 0.05)), "circles 0 and 25 overlap"),
]


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_packings_are_rejected_with_a_reason(case):
    _, make, pattern = case
    centers, radii = make(*grid_packing())
    with pytest.raises(InvalidConstruction, match=pattern):
        check_packing(centers, radii, n=26)
    if "expected 26" not in pattern:  # verify() takes n from the construction
        v = problem().verify({"centers": centers, "radii": radii})
        assert not v.valid and v.score is None and v.reason


def test_verify_rejects_a_missing_construction():
    assert "empty" in problem().verify(None).reason
    assert "centers" in problem().verify([1, 2]).reason


def test_metrics_of_a_grid():
    centers, radii = grid_packing()
    m = packing_metrics(*check_packing(centers, radii))
    assert m["n"] == 26 and m["min_boundary_slack"] == pytest.approx(0.0, abs=1e-15)
    assert m["min_pair_gap"] == pytest.approx(0.0, abs=1e-15)  # neighbours touch, up to rounding
    zero = m["min_pair_gap"] >= 0 and m["min_boundary_slack"] >= 0
    assert m["valid_at_zero_tolerance"] is zero


# -- params, seeds, prompt -----------------------------------------------------------------------------------


def test_registered_and_params():
    assert get_plugins().get("problems", "circle_packing").obj is CirclePackingProblem
    assert problem().params.target == 2.636 and problem(n=32).params.target == 2.940
    assert problem(n=10, target=2.0).params.target == 2.0
    with pytest.raises(ValueError, match="target"):
        problem(n=10)
    with pytest.raises(ValueError, match="extra"):
        problem(circles=26)


@pytest.mark.parametrize("name, n", [("config.yaml", 26), ("config.n32.yaml", 32)])
def test_configs_are_accepted(name, n):
    loaded = load_with_available_backend(Path(__file__).parents[1] / "problems" / "circle_packing" / name)
    params = loaded.params["problem"]
    assert params.n == n and params.target == {26: 2.636, 32: 2.940}[n]
    assert loaded.config.sandbox.timeout_s == params.budget_s + params.timeout_margin_s  # the problem's, stated once
    assert loaded.config.sandbox.cpus == params.cpus


def test_seeds_are_empty():
    states = problem().initial_states(np.random.default_rng(0), 3)
    assert len(states) == 3 and len({s.id for s in states}) == 3
    assert all(s.value == 0.0 and s.score == 0.0 and s.code == "" and s.construction is None for s in states)
    assert problem().reward(2.5) == 2.5 and problem().value(2.5) == 2.5


def test_prompts():
    p = problem(n=32, budget_s=300, cpus=4)
    (seed,) = p.initial_states(np.random.default_rng(0), 1)
    text = p.prompt(seed)[0]["content"]
    assert "pack 32 disjoint circles" in text and "shape (32, 2)" in text
    assert "Return within 300 seconds" in text and "4 CPU cores" in text
    assert "def check_packing" in text and "def validate_packing" in text
    assert "2.939572" in text and "Target: 2.94. Current gap: 2.9400000000" in text
    assert "<strategy>" in text and "slack of 1e-12" in text
    child = seed.child(value=2.5, score=2.5, code="def run_packing():\n    pass\n", stdout="done")
    text = p.prompt(child)[0]["content"]
    assert "0.0000000000 -> 2.5000000000" in text and "def run_packing():\n    pass" in text and "done" in text
    assert "no slack at all" in problem(strict=True).prompt(seed)[0]["content"]


# -- evaluate() --------------------------------------------------------------------------------------------


def reply(body):
    return f"<strategy>a grid</strategy>\n```python\nimport numpy as np\n\n{body}\n```"


GRID = """
def run_packing():
    k = 5
    r = 1 / (2 * k)
    centers = [[r + 2 * r * i, r + 2 * r * j] for i in range(k) for j in range(k)] + [[0.2, 0.2]]
    radii = [r] * 25 + [0.0]
    total = validate_packing(np.array(centers), np.array(radii))
    print("sum", total)
    return np.array(centers), np.array(radii), {reported}
"""


def test_evaluate_scores_the_verified_sum_and_ignores_the_reported_one(sandbox):
    p = problem(budget_s=5)
    (seed,) = p.initial_states(np.random.default_rng(0), 1)
    out = p.evaluate(p.parse(reply(GRID.format(reported="99.0"))), seed, sandbox)
    assert out.__class__.__name__ == "Evaluation", out
    assert out.score == pytest.approx(2.5, rel=1e-15)
    assert len(out.construction["centers"]) == 26 and len(out.construction["radii"]) == 26
    assert out.metrics["n"] == 26 and "sum 2.5" in out.stdout


def test_evaluate_rejects_bad_packings(sandbox):
    p = problem(budget_s=5)
    (seed,) = p.initial_states(np.random.default_rng(0), 1)
    overlap = GRID.replace("[0.0]", "[0.1]").replace(
        "total = validate_packing(np.array(centers), np.array(radii))", "total = 0"
    )
    out = p.evaluate(p.parse(reply(overlap.format(reported="2.5"))), seed, sandbox)
    assert out.kind == "invalid_construction" and "overlap" in out.reason
    nan = "def run_packing():\n    return np.full((26, 2), np.nan), np.zeros(26), 0.0"
    out = p.evaluate(p.parse(reply(nan)), seed, sandbox)
    assert out.kind == "invalid_construction" and "NaN" in out.reason
    short = "def run_packing():\n    return np.full((26, 2), 0.5), np.zeros(26)"
    out = p.evaluate(p.parse(reply(short)), seed, sandbox)
    assert out.kind == "invalid_construction" and "(centers, radii, sum_radii)" in out.reason
    wrong_n = "def run_packing():\n    return np.full((25, 2), 0.5), np.zeros(25), 0.0"
    out = p.evaluate(p.parse(reply(wrong_n)), seed, sandbox)
    assert out.kind == "invalid_construction" and "expected 26 circles" in out.reason


def test_evaluate_strict_mode_and_its_preamble(sandbox):
    body = (
        "def run_packing():\n"
        "    centers = np.full((26, 2), 0.5)\n"
        "    centers[0] = [0.25, 0.5]\n"
        "    centers[1] = [0.75 - 5e-13, 0.5]\n"
        "    radii = np.zeros(26)\n"
        "    radii[:2] = 0.25\n"
        "    try:\n"
        "        validate_packing(centers, radii)\n"
        "        print('validator: ok')\n"
        "    except ValueError as e:\n"
        "        print('validator:', e)\n"
        "    return centers, radii, 0.5\n"
    )
    lenient, strict = problem(budget_s=5), problem(budget_s=5, strict=True)
    (seed,) = lenient.initial_states(np.random.default_rng(0), 1)
    out = lenient.evaluate(lenient.parse(reply(body)), seed, sandbox)
    assert out.score == 0.5 and "validator: ok" in out.stdout
    out = strict.evaluate(strict.parse(reply(body)), seed, sandbox)
    assert out.kind == "invalid_construction" and "overlap" in out.reason


def test_evaluate_timeout(sandbox):
    p = problem(budget_s=0.5, timeout_margin_s=0.5)
    (seed,) = p.initial_states(np.random.default_rng(0), 1)
    out = p.evaluate(p.parse(reply("def run_packing():\n    while True:\n        pass")), seed, sandbox)
    assert out.kind == "timeout"


def test_plot_writes_a_png(tmp_path):
    p = problem()
    record = load(RECORDS / "circle_packing_26_thetaevolve.json")
    path = tmp_path / "packing.png"
    p.plot(p.construction_from_record(record), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10000
