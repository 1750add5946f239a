"""Messages a plugin author meets: a broken outside plugin, DISCOVER_PLUGINS, import paths, verify's parameters."""

import json
import os
import textwrap

import pytest
import yaml

from discover_ttt.config import ConfigError, load_config

RECORDS = os.path.join(os.path.dirname(__file__), "data", "records")
ERDOS_RECORD = os.path.join(RECORDS, "erdos_haugland_51.json")
MISSING = "No module named 'a_dependency_that_is_not_installed'"


@pytest.fixture
def broken_site(tmp_path):
    """An installed distribution 'discover-broken' whose plugin module fails to import."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "discover_broken_plugin.py").write_text("import a_dependency_that_is_not_installed\n")
    info = site / "discover_broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: discover-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[discover]\nbrokenp = discover_broken_plugin\n")
    return site


def discover(discover_cli, *args, site=None, cwd=None, **env_extra):
    """``discover ARGS`` in this process (tests/conftest.py), with ``site`` on the path as PYTHONPATH."""
    return discover_cli(*args, site=site, cwd=cwd, env={"DISCOVER_PLUGINS": None, **env_extra})


def test_broken_plugin_does_not_stop_other_commands(broken_site, discover_cli):
    p = discover(discover_cli, "verify", "erdos", ERDOS_RECORD, site=broken_site)
    assert p.returncode == 0, p.stderr
    assert "erdos: valid" in p.stdout
    # reported once, with its name, its distribution and the real exception
    assert p.stderr.count("failed to load") == 1
    assert "'brokenp'" in p.stderr and "discover-broken" in p.stderr and MISSING in p.stderr


def test_broken_plugin_is_listed(broken_site, discover_cli):
    p = discover(discover_cli, "plugins", "--json", site=broken_site)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    broken = [r for r in rows if r["kind"] == "broken"]
    assert broken == [
        {
            "kind": "broken",
            "name": "brokenp",
            "plugin": "brokenp",
            "distribution": "discover-broken",
            "error": f"ModuleNotFoundError: {MISSING}",
        }
    ]
    assert any(r["name"] == "erdos" for r in rows)
    text = discover(discover_cli, "plugins", site=broken_site).stdout
    assert "broken (not loaded):" in text and "discover-broken" in text


def test_command_that_needs_the_broken_plugin_shows_its_error(broken_site, discover_cli):
    p = discover(discover_cli, "verify", "brokenp", ERDOS_RECORD, site=broken_site)
    assert p.returncode == 2
    assert "needed for the problem 'brokenp'" in p.stderr and MISSING in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("value", ["brokenp", "discover_broken", "discover-broken"])
def test_plugin_filter_accepts_entry_point_and_distribution_names(broken_site, discover_cli, value):
    p = discover(discover_cli, "plugins", "--json", site=broken_site, DISCOVER_PLUGINS=value)
    assert any(r["name"] == "brokenp" for r in json.loads(p.stdout))
    assert "neither" not in p.stderr


def test_plugin_filter_warns_about_unknown_names(broken_site, discover_cli):
    p = discover(discover_cli, "plugins", "--json", site=broken_site, DISCOVER_PLUGINS="discover-sprd")
    assert not any(r["name"] == "brokenp" for r in json.loads(p.stdout))
    assert "DISCOVER_PLUGINS names 'discover-sprd'" in p.stderr
    assert "discover-broken (brokenp)" in p.stderr  # what could have been meant


def _config_with_problem(tmp_path, name):
    with open(TOY_CONFIG) as f:
        data = yaml.safe_load(f)
    data["problem"] = {"name": name}
    data["backend"]["path"] = str(TOY_REPLIES)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


TOY_CONFIG = os.path.join(os.path.dirname(__file__), "toy", "config.yaml")
TOY_REPLIES = os.path.join(os.path.dirname(__file__), "toy", "replies.jsonl")


def test_import_path_finds_a_module_beside_the_config(tmp_path):
    (tmp_path / "my_local_problem.py").write_text(
        textwrap.dedent(
            """
            from toy_problem import ToyProblem

            class LocalToy(ToyProblem):
                name = "local_toy"
            """
        )
    )
    loaded = load_config(_config_with_problem(tmp_path, "my_local_problem:LocalToy"))
    assert loaded.config.problem.name == "my_local_problem:LocalToy"


def test_import_path_that_fails_shows_the_import_error(tmp_path):
    (tmp_path / "my_broken_problem.py").write_text("import numpy\nimport not_a_real_module_abc\n")
    with pytest.raises(ConfigError) as e:
        load_config(_config_with_problem(tmp_path, "my_broken_problem:Thing"))
    msg = str(e.value)
    assert "No module named 'not_a_real_module_abc'" in msg
    assert "not a registered problem" not in msg
    assert str(tmp_path) in msg  # where it looked


def test_import_path_with_a_wrong_attribute(tmp_path):
    (tmp_path / "my_other_problem.py").write_text("class Real:\n    pass\n")
    with pytest.raises(ConfigError, match="has no attribute 'Typo'; it defines: Real"):
        load_config(_config_with_problem(tmp_path, "my_other_problem:Typo"))


# -- discover verify ------------------------------------------------------------------------


def _run_dir(tmp_path, problem_section):
    """A run directory as the loop leaves it: config.yaml, events.jsonl and best/construction.json."""
    run = tmp_path / "runs" / "cp"
    (run / "best").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "events.jsonl").write_text("")
    (run / "config.yaml").write_text(yaml.safe_dump({"problem": problem_section, "run": {"steps": 1}}))
    # two circles whose radii overlap the square and each other by 5e-13: valid only with tolerance
    construction = {"centers": [[0.25, 0.5], [0.75, 0.5]], "radii": [0.25 + 5e-13, 0.25]}
    (run / "best" / "construction.json").write_text(json.dumps(construction))
    return run / "best" / "construction.json"


def test_verify_uses_the_runs_problem_parameters(tmp_path, discover_cli):
    section = {"name": "circle_packing", "n": 2, "strict": True, "target": 1.0, "init_from": "/some/record.json"}
    best = _run_dir(tmp_path, section)
    p = discover(discover_cli, "verify", "circle_packing", str(best))
    assert p.returncode == 1, p.stdout + p.stderr  # strict, as the run was: the overlap counts
    assert "INVALID" in p.stdout
    p = discover(discover_cli, "verify", "circle_packing", str(best), "-p", "strict=false")
    assert p.returncode == 0, p.stdout + p.stderr  # -p overrides the run's value


def test_verify_refuses_a_file_of_another_problems_run(tmp_path, discover_cli):
    best = _run_dir(tmp_path, {"name": "circle_packing", "n": 2, "target": 1.0})
    p = discover(discover_cli, "verify", "erdos", str(best))
    assert p.returncode == 2
    assert "ran the problem 'circle_packing', not 'erdos'" in p.stderr


def test_param_errors_read_like_config_errors(discover_cli):
    p = discover(discover_cli, "verify", "erdos", ERDOS_RECORD, "-p", "budgets=3")
    assert p.returncode == 2
    assert "unknown key 'budgets'" in p.stderr and "Did you mean 'budget_s'?" in p.stderr
    assert "pydantic" not in p.stderr and "Traceback" not in p.stderr
    p = discover(discover_cli, "verify", "erdos", ERDOS_RECORD, "-p", "budget_s=-1")
    assert p.returncode == 2 and "'budget_s'" in p.stderr and "got -1" in p.stderr
    p = discover(discover_cli, "verify", "erdos", ERDOS_RECORD, "-p", "budget_s")
    assert p.returncode == 2 and "-p expects KEY=VALUE" in p.stderr


def test_unknown_problem_suggests_the_closest(discover_cli):
    p = discover(discover_cli, "verify", "erdoss", ERDOS_RECORD)
    assert p.returncode == 2
    assert "Did you mean 'erdos'?" in p.stderr
