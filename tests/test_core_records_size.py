"""Construction size limits: a warm start over the problem's limit is refused naming it; verify warns."""

import json

import pytest
from click.testing import CliRunner

from discover_ttt.cli import cli
from discover_ttt.components import build
from discover_ttt.config import ConfigError
from discover_ttt.plugins import get_plugins
from discover_ttt.records import warm_start_states


@pytest.mark.parametrize(
    "name, key, n", [("erdos", "problem.max_archive_points", 1001), ("ac1", "problem.max_archive_len", 100_001)]
)
def test_a_warm_start_over_the_limit_is_refused_naming_it(tmp_path, name, key, n):
    problem = build(get_plugins().get("problems", name).obj, {})
    path = tmp_path / "big.json"
    path.write_text(json.dumps([0.5] * n))
    with pytest.raises(ConfigError, match=f"too large for a warm start: {n} .*{key}"):
        warm_start_states(problem, path, 2)
    path.write_text(json.dumps([0.5] * (n - 1)))  # at the limit: taken
    assert len(warm_start_states(problem, path, 2)) == 2


def test_verify_warns_about_a_construction_over_the_limit(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps([0.5] * 5000))
    result = CliRunner().invoke(cli, ["verify", "erdos", str(path)])
    assert result.exit_code == 0, result.output
    assert "Warning:" in result.output and "problem.max_archive_points" in result.output
