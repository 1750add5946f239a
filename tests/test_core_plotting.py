"""Long constructions are drawn in at most PLOT_POINTS blocks (mean with its min-max band)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from discover_ttt.cli import cli
from discover_ttt.plotting import PLOT_POINTS, envelope


def test_envelope_keeps_the_integral_and_the_spikes():
    y = np.zeros(100_003)
    y[12_345] = 7.0  # one piece wide
    mean, lo, hi, bounds = envelope(y, 1000)
    assert mean.size == lo.size == hi.size == 1000 and bounds[0] == 0 and bounds[-1] == y.size
    assert np.dot(mean, np.diff(bounds)) == pytest.approx(y.sum())
    assert hi.max() == 7.0 and lo.min() == 0.0 and np.all(lo <= mean) and np.all(mean <= hi)
    small = np.arange(5.0)
    assert [list(v) for v in envelope(small, 1000)[:3]] == [list(small)] * 3


@pytest.mark.parametrize("problem", ["erdos", "ac1"])
def test_plot_of_a_long_construction_draws_blocks(tmp_path, monkeypatch, problem):
    import matplotlib.axes

    drawn = []
    for name in ("stairs", "plot", "fill_between"):
        real = getattr(matplotlib.axes.Axes, name)

        def record(self, *args, _real=real, **kwargs):
            drawn.append(max((np.size(a) for a in args), default=0))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(matplotlib.axes.Axes, name, record)
    n = 200_000
    path = tmp_path / "c.json"
    path.write_text(json.dumps((0.5 + 0.4 * np.sin(np.arange(n) / 1e3)).tolist()))
    result = CliRunner().invoke(cli, ["plot", problem, str(path), "-o", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.png").stat().st_size > 0
    assert drawn and max(drawn) <= PLOT_POINTS + 1, drawn
