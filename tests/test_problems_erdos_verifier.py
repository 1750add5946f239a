"""The Erdős verifier: published records, the FFT path, every kind of invalid construction."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from discover_ttt.problems.erdos import ErdosProblem
from discover_ttt.problems.erdos.verifier import (
    InvalidConstruction,
    c5_direct,
    c5_fft,
    check_h,
    peak_lags,
    verify_erdos,
)

RECORDS = Path(__file__).parent / "data" / "records"
ERDOS_RECORDS = sorted(RECORDS.glob("erdos_*.json"))


def load(path):
    return json.loads(path.read_text())


def test_there_are_erdos_records():
    assert len(ERDOS_RECORDS) == 3


@pytest.mark.parametrize("path", ERDOS_RECORDS, ids=lambda p: p.stem)
def test_record_reproduces_its_value(path):
    record = load(path)
    problem = ErdosProblem()
    v = problem.verify(problem.construction_from_record(record))
    assert v.valid, v.reason
    assert v.score == pytest.approx(record["value"], rel=1e-12, abs=0)
    assert v.metrics["n"] == record["n"]
    assert v.metrics["rescaled"] is False
    # the construction key alone, and a bare list, give the same
    assert problem.verify(problem.construction_from_record(record["construction"])).score == v.score
    assert problem.verify(record["construction"]["values"]).score == v.score


@pytest.mark.parametrize("path", ERDOS_RECORDS, ids=lambda p: p.stem)
def test_record_through_the_cli(path):
    from discover_ttt.cli import cli

    record = load(path)
    result = CliRunner().invoke(cli, ["verify", "erdos", str(path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["valid"] is True
    assert out["score"] == pytest.approx(record["value"], rel=1e-12, abs=0)


def test_cli_rejects_an_invalid_file(tmp_path):
    from discover_ttt.cli import cli

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([0.5, 1.5, 0.0, 0.0]))
    result = CliRunner().invoke(cli, ["verify", "erdos", str(bad), "--json"])
    assert result.exit_code == 1
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["valid"] is False and "[0, 1]" in out["reason"]


# -- the formula and the FFT path -----------------------------------------------------------------


def test_c5_matches_the_definition_on_a_small_case():
    h = np.array([0.0, 1.0, 1.0, 0.0])  # sum 2 = n/2
    g = 1 - h
    by_lag = [sum(h[i + k] * g[i] for i in range(4) if 0 <= i + k < 4) for k in range(-3, 4)]
    assert c5_direct(h) == pytest.approx(max(by_lag) * 2 / 4, rel=1e-15)


@pytest.mark.parametrize("n", [1, 2, 3, 17, 100, 999, 1000, 4096, 12000])
def test_fft_path_agrees_with_the_direct_formula_to_the_last_bit(n):
    rng = np.random.default_rng(n)
    for _ in range(3 if n < 4096 else 1):
        h = rng.uniform(0, 1, n)
        assert c5_fft(h) == c5_direct(h)


def test_fft_path_agrees_on_flat_and_near_optimal_inputs():
    flat = np.full(5000, 0.5)  # every lag's correlation is a multiple of 0.25: many near-ties
    assert c5_fft(flat) == c5_direct(flat)
    for path in ERDOS_RECORDS:
        h = np.array(load(path)["construction"]["values"])
        assert c5_fft(h) == c5_direct(h)
        upsampled = np.repeat(h, 10)  # the same step function on a 10x finer grid: the same C5
        assert c5_fft(upsampled) == c5_direct(upsampled)


def test_few_lags_are_valued_exactly_on_long_smooth_constructions():
    """The exact sums are O(n) each: the FFT must narrow the peak down to a handful of lags
    (a looser threshold once left thousands on upsampled records, most of the time spent)."""
    record = np.array(load(ERDOS_RECORDS[0])["construction"]["values"])
    assert 1 <= len(peak_lags(np.repeat(record, 50))) <= 64
    h = np.repeat(record, 10)
    corr = np.correlate(h, 1 - h, "full")
    assert int(np.argmax(corr)) - (h.size - 1) in set(peak_lags(h).tolist())


def test_reverification_uses_the_fast_exact_path(monkeypatch):
    """A new best and discover verify call ErdosProblem.verify: long arrays never take the O(n^2) sum."""
    from discover_ttt.problems.erdos import verifier

    # long = past the FFT threshold; 4 times it keeps the O(n^2) reference below a second
    h = np.random.default_rng(0).uniform(0.2, 0.8, 4 * verifier.FFT_MIN_N)
    want = c5_direct(verifier.check_h(h))

    def refuse(x):
        raise AssertionError(f"O(n^2) formula called on n = {np.size(x)}")

    monkeypatch.setattr(verifier, "c5_direct", refuse)
    v = ErdosProblem().verify(h.tolist())
    assert v.valid and v.score == want


def test_rescaling_scores_the_rescaled_array():
    h = np.full(50, 0.4)  # sum 20, needs factor 1.25 to reach 25
    scored, c5 = verify_erdos(h)
    assert scored.sum() == pytest.approx(25.0, rel=1e-15)
    assert np.allclose(scored, 0.5)
    assert c5 == c5_direct(scored)
    v = ErdosProblem().verify(h.tolist())
    assert v.valid and v.score == c5 and v.metrics["rescaled"] is True


# -- invalid constructions -------------------------------------------------------------------------

INVALID = [
    ("length", lambda h: (h, 0.5, len(h) + 1), "length"),
    ("2-D", lambda h: (h.reshape(-1, 2), None, None), "1-D"),
    ("empty", lambda h: ([], None, None), "empty"),
    ("NaN", lambda h: (np.where(np.arange(len(h)) == 3, np.nan, h), None, None), "NaN"),
    ("inf", lambda h: (np.where(np.arange(len(h)) == 5, np.inf, h), None, None), "infinite"),
    ("negative", lambda h: (np.where(np.arange(len(h)) == 7, -0.1, h), None, None), "[0, 1]"),
    ("above one", lambda h: (np.where(np.arange(len(h)) == 9, 1.5, h), None, None), "[0, 1]"),
    ("rescale above one", lambda h: (np.r_[np.ones(10), np.zeros(len(h) - 10)], None, None), "exceed 1"),
    ("all zero", lambda h: (np.zeros(len(h)), None, None), "normalised"),
    ("not numbers", lambda h: (["a"] * len(h), None, None), "real numbers"),
    ("ragged", lambda h: ([[0.5], [0.5, 0.5]], None, None), "real numbers"),
    ("n_points not a number", lambda h: (h, 0.5, "many"), "n_points"),
    ("false c5", lambda h: (h, c5_direct(h) - 2e-4, len(h)), "does not match"),
    ("c5 not a number", lambda h: (h, "small", len(h)), "not a number"),
]


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_constructions_are_rejected_with_a_reason(case):
    _, make, words = case
    h = np.full(40, 0.5)
    values, c5, n = make(h)
    with pytest.raises(InvalidConstruction, match=words.replace("[", r"\[").replace("]", r"\]")):
        verify_erdos(values, c5, n)


def test_verify_reports_the_reason_instead_of_raising():
    v = ErdosProblem().verify([0.5, 0.5, float("nan"), 0.5])
    assert not v.valid and v.score is None and "NaN" in v.reason and "h[2]" in v.reason


def test_reported_c5_within_the_reference_tolerance_is_accepted_but_never_used():
    h = np.full(40, 0.5)
    true = c5_direct(h)
    scored, c5 = verify_erdos(h, true - 5e-5, 40)
    assert c5 == true


def test_check_h_returns_float64_copies():
    h = [0, 1, 1, 0]
    out = check_h(h)
    assert out.dtype == np.float64 and out.tolist() == [0.0, 1.0, 1.0, 0.0]
