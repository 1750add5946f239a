"""Hostile files given to ``discover verify``, ``plot`` and warm starts: one paragraph each, never a traceback."""

import json

import pytest
from click.testing import CliRunner

from discover_ttt.cli import cli
from discover_ttt.config import ConfigError
from discover_ttt.plugins import get_plugins
from discover_ttt.records import read_construction


@pytest.fixture
def deep(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    return path


def test_deeply_nested_json_is_one_paragraph(deep):
    problem = get_plugins().get("problems", "erdos").obj()
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_construction(problem, deep)


@pytest.mark.parametrize("command", ["verify", "plot"])
def test_verify_and_plot_of_a_deeply_nested_file(deep, command):
    result = CliRunner().invoke(cli, [command, "erdos", str(deep)])
    assert result.exit_code == 2, result.output
    assert "nested too deeply" in result.output and "Traceback" not in result.output


def test_a_record_nested_just_below_the_parser_limit(tmp_path):
    """Parsed, but too deep for the problem's reading of it: still one paragraph."""
    path = tmp_path / "deep.json"
    path.write_text(json.dumps({"construction": json.loads("[" * 900 + "]" * 900)}))
    problem = get_plugins().get("problems", "erdos").obj()
    with pytest.raises(ConfigError):
        read_construction(problem, path)
