"""Config validation: errors name the file, the key path and the allowed values."""

from pathlib import Path

import pytest
import yaml

from discover_ttt.components import params_model
from discover_ttt.config import ConfigError, load_config

TOY_CONFIG = Path(__file__).parent / "toy" / "config.yaml"


def write(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def base():
    return yaml.safe_load(TOY_CONFIG.read_text())


def test_toy_config_loads_and_resolves_paths():
    loaded = load_config(TOY_CONFIG)
    assert loaded.params["backend"].path == (TOY_CONFIG.parent / "replies.jsonl").resolve()
    assert loaded.config.run.output == (TOY_CONFIG.parent / "runs" / "toy").resolve()
    resolved = loaded.resolved()
    # defaults are filled in for every component
    assert resolved["sampler"]["c"] == 1.0
    assert resolved["sandbox"]["timeout_s"] == 5.0  # the toy declares no program limits: the sandbox's apply


def test_unknown_top_level_key(tmp_path):
    data = base()
    data["sampelr"] = {"name": "puct"}
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, data))
    msg = str(e.value)
    assert "c.yaml" in msg and "'sampelr'" in msg
    for allowed in ("backend", "estimator", "log", "problem", "run", "sampler", "sandbox"):
        assert allowed in msg
    assert "Did you mean 'sampler'" in msg


def test_unknown_nested_key(tmp_path):
    data = base()
    data["run"]["stesp"] = 3
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, data))
    msg = str(e.value)
    assert "'run.stesp'" in msg and "steps" in msg and "rollouts" in msg


def test_unknown_component_param_names_component_keys(tmp_path):
    data = base()
    data["sampler"]["cc"] = 2.0
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, data))
    msg = str(e.value)
    allowed = params_model(__import__("discover_ttt.samplers", fromlist=["PUCT"]).PUCT).model_fields
    assert "'sampler.cc'" in msg
    for key in allowed:
        assert key in msg


def test_unknown_component_name_lists_registered(tmp_path):
    data = base()
    data["estimator"]["name"] = "entropic_adaptiv"
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, data))
    msg = str(e.value)
    assert "'estimator.name'" in msg and "grpo" in msg and "Did you mean 'entropic_adaptive'" in msg


def test_bad_value_type(tmp_path):
    data = base()
    data["run"]["steps"] = "many"
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, data))
    assert "'run.steps'" in str(e.value) and "many" in str(e.value)


def test_bad_literal_lists_allowed_values(tmp_path):
    data = base()
    data["sandbox"]["isolation"] = "docker"
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, data))
    msg = str(e.value)
    assert "'sandbox.isolation'" in msg and "'auto'" in msg and "'bwrap'" in msg and "'none'" in msg


def test_overrides_are_typed_and_repeatable():
    loaded = load_config(TOY_CONFIG, ["run.steps=7", "sampler.c=0.5", "run.seed=3", "sandbox.isolation=none"])
    assert loaded.config.run.steps == 7 and loaded.config.run.seed == 3
    assert loaded.params["sampler"].c == 0.5
    assert loaded.config.sandbox.isolation == "none"


def test_override_of_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match="'run.stpes'"):
        load_config(TOY_CONFIG, ["run.stpes=7"])


def test_malformed_override():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(TOY_CONFIG, ["run.steps"])


def test_not_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("problem: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_import_path_component():
    loaded = load_config(TOY_CONFIG, ["sampler.name=discover_ttt.samplers:Greedy"])
    assert "epsilon" in loaded.resolved()["sampler"]


def test_cli_error_has_no_traceback(tmp_path, discover_cli):
    data = base()
    data["run"]["stesp"] = 3
    path = write(tmp_path, data)
    p = discover_cli("run", str(path))
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert "'run.stesp'" in p.stderr and "allowed keys here" in p.stderr


@pytest.mark.parametrize(
    "override,key",
    [
        ("sandbox.timeout_s=0", "sandbox.timeout_s"),
        ("sandbox.timeout_s=-5", "sandbox.timeout_s"),
        ("sandbox.memory_mb=0", "sandbox.memory_mb"),
        ("sandbox.memory_mb=-1", "sandbox.memory_mb"),
        ("sandbox.workers=-1", "sandbox.workers"),
        ("sandbox.workers=0", "sandbox.workers"),
        ("sandbox.cpus=0", "sandbox.cpus"),
        ("run.steps=true", "run.steps"),
        ("run.steps=0", "run.steps"),
        ("run.seed=-1", "run.seed"),
        ("run.groups=1000000", "run.groups"),
        ("run.rollouts=yes", "run.rollouts"),
        ("run.save_every=0", "run.save_every"),
    ],
)
def test_nonsense_numbers_are_config_errors(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(TOY_CONFIG, [override])


def test_rollouts_per_step_have_an_upper_bound():
    with pytest.raises(ConfigError, match="exhaust memory"):
        load_config(TOY_CONFIG, ["run.groups=1000", "run.rollouts=1000"])
    assert load_config(TOY_CONFIG, ["run.groups=8", "run.rollouts=64"]).config.run.groups == 8
