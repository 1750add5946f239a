"""The NeMo RL adapter against NeMo RL's own sources, one snapshot at a time.

Each release archive (v0.3.1 … v0.7.0, and main at 7ea279abf) is unpacked once per session;
for each we check the four places the adapter meets NeMo RL:

- import: ``nemo_rl.environments.interfaces`` imports (torch alone; 0.6's video import stood in);
- return type: our environment, run in a fresh interpreter where that snapshot's ``nemo_rl``
  imports, answers ``step`` with that snapshot's own ``EnvironmentReturn``;
- config schema: the export for that release (main: the newest) has every key the schema
  requires and every key ``grpo.setup``/``grpo_train`` read without a default, and NeMo RL's
  own loader reads it, alone and with ``--defaults`` of the release's example config;
- setup arity: the values ``grpo.setup`` returns are those the driver unpacks, in order, and
  ``grpo_train``'s parameters are those it passes.

Without the archives (``DISCOVER_UPSTREAM`` or ``../shared/upstream``) every test skips, saying so.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import nemo_rl_upstream as up  # noqa: E402

from discover_ttt.launch.nemo_rl import driver, versions  # noqa: E402
from discover_ttt.launch.nemo_rl.environment import _EnvironmentReturn  # noqa: E402
from discover_ttt.launch.nemo_rl.export import export_nemo_rl  # noqa: E402

pytestmark = pytest.mark.contract

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "toy"
ARCHIVES = up.archives()
NO_SOURCES = (
    f"no NeMo RL sources in {up.upstream_candidate()}/nemo-rl: set DISCOVER_UPSTREAM to the folder of the "
    "release archives (../shared/upstream beside the repository)"
)
NAMES = list(ARCHIVES) or [pytest.param("none", marks=pytest.mark.skip(reason=NO_SOURCES))]


@pytest.fixture(scope="session")
def snapshots(tmp_path_factory) -> dict[str, Path]:
    """Every archive unpacked once: snapshot name → the folder holding ``nemo_rl/``."""
    base = tmp_path_factory.mktemp("nemo-rl")
    return {name: up.unpack(archive, base / name) for name, archive in ARCHIVES.items()}


def export_version(name: str) -> str:
    """The ``--nemo-rl-version`` for a snapshot: its release, or the newest for the main branch."""
    release = up.release(name)
    return versions.NEWEST if release == "main" else release


def _has(tree, dotted: str) -> bool:
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


# -- import and return type ---------------------------------------------------------------------

ENV_STEP = """
sys.path.insert(1, {toy!r})  # the toy problem
from pathlib import Path
import yaml
from discover_ttt.launch.nemo_rl.environment import DiscoveryEnvironment, environment_return_type
from nemo_rl.environments.interfaces import EnvironmentInterface, EnvironmentReturn
import inspect
raw = yaml.safe_load(Path({toy!r}, "config.yaml").read_text())
raw["backend"]["path"] = str(Path({toy!r}, "replies.jsonl"))
raw["run"]["output"] = {out!r}
raw["run"]["rollouts"] = 2
env = DiscoveryEnvironment(raw)
states = env.next_states(raw["run"]["groups"])
valid = "```python\\ndef run():\\n    return [0.3, 0.3, 0.3]\\n```"
logs, md = [], []
for s in states:
    for reply in (valid, "no code"):
        logs.append([{{"role": "user", "content": "p"}}, {{"role": "assistant", "content": reply}}])
        md.append({{"state_id": s["state_id"], "step": s["step"]}})
out = env.step(logs, md)
env.shutdown()
print(json.dumps({{
    "type_is_real": environment_return_type() is EnvironmentReturn,
    "instance": isinstance(out, EnvironmentReturn),
    "fields": list(EnvironmentReturn._fields),
    "answers": list(out.answers) if "answers" in EnvironmentReturn._fields else None,
    "rewards": [float(x) for x in out.rewards],
    "step_params": list(inspect.signature(EnvironmentInterface.step).parameters)[:3],
}}))
"""


@pytest.mark.parametrize("name", NAMES)
def test_environment_answers_with_the_snapshots_own_environment_return(name, snapshots, tmp_path):
    root = snapshots[name]
    got = up.run_in(root, ENV_STEP.format(toy=str(TOY), out=str(tmp_path / "run")), timeout=300)
    assert got["type_is_real"] and got["instance"], got
    assert got["step_params"] == ["self", "message_log_batch", "metadata"]
    assert got["rewards"][1] == 0.0 and got["rewards"][0] == pytest.approx(1.0)  # [0.3]*3 scores 0
    if up.release(name) == "0.3.1":
        assert got["fields"] == ["observations", "metadata", "next_stop_strings", "rewards", "terminateds"]
    else:  # 0.4 on: answers, without a default; ours: the program each valid rollout ran
        assert got["fields"][-1] == "answers"
        assert "def run()" in got["answers"][0] and got["answers"][1] is None


def test_the_stand_in_has_exactly_the_newest_fields(snapshots):
    if not snapshots:
        pytest.skip(NO_SOURCES)
    newest = list(snapshots)[-1]
    assert list(_EnvironmentReturn._fields) == up.environment_return_fields(snapshots[newest])
    releases = [n for n in snapshots if n.startswith("v")]
    assert list(_EnvironmentReturn._fields) == up.environment_return_fields(snapshots[releases[-1]])


# -- config schema ----------------------------------------------------------------------------------

LOADER = """
from omegaconf import OmegaConf
from nemo_rl.utils.config import load_config
from discover_ttt.launch.nemo_rl.driver import register_resolvers
register_resolvers()
config = OmegaConf.to_container(load_config({path!r}), resolve=True)
print(json.dumps(config, default=str))
"""


def _loader_imports() -> None:
    """NeMo RL's loader needs omegaconf and hydra-core (the dev extra installs both)."""
    for module in ("omegaconf", "hydra"):
        pytest.importorskip(module, reason=f"{module} is not installed: pip install -e '.[dev]'")


def _exports(name: str, tmp_path: Path) -> dict[str, Path]:
    """The paper's config exported for this snapshot: LoRA (where the release has it) and full weights."""
    version = export_version(name)
    out = {}
    paper = ROOT / "problems" / "erdos" / "config.paper.yaml"
    full = ["backend.name=vllm", "backend.model=Qwen/Qwen3-8B"]
    export_nemo_rl(paper, tmp_path / "full", overrides=full, version=version, full_weights=True)
    out["full"] = tmp_path / "full"
    if versions.parse(version) >= (0, 5):
        export_nemo_rl(paper, tmp_path / "lora", version=version, num_nodes=8)
        out["lora"] = tmp_path / "lora"
    return out


@pytest.mark.parametrize("name", NAMES)
def test_export_satisfies_the_snapshots_schema_and_loader(name, snapshots, tmp_path):
    _loader_imports()
    root = snapshots[name]
    schema = up.Schema(root)
    read = up.keys_read_without_default(root, "nemo_rl.algorithms.grpo", "setup") | up.keys_read_without_default(
        root, "nemo_rl.algorithms.grpo", "grpo_train"
    )
    assert read, "no key read found: the reader lost track of grpo.py"
    for kind, outdir in _exports(name, tmp_path).items():
        written = yaml.safe_load((outdir / "nemo_rl.yaml").read_text())
        loaded = up.run_in(root, LOADER.format(path=str(outdir / "nemo_rl.yaml")))
        assert loaded == json.loads(json.dumps(written, default=str)), "NeMo RL's loader read something else"
        assert schema.missing(loaded) == [], f"{kind}: keys the schema of {name} requires"
        assert sorted(k for k in read if not _has(loaded, k)) == [], f"{kind}: keys {name}'s GRPO reads"
        choices = (outdir / "choices.txt").read_text()
        for req in up_required(export_version(name), lora=kind == "lora"):
            assert f"{req} = " in choices, f"{req} is not listed in choices.txt"


def up_required(version: str, *, lora: bool) -> list[str]:
    from discover_ttt.launch.nemo_rl.schema import required_for

    return [r.key for r in required_for(versions.parse(version), lora=lora)]


@pytest.mark.parametrize("name", NAMES)
def test_export_with_the_snapshots_example_as_defaults(name, snapshots, tmp_path):
    """``--defaults`` of the release's own example: its ``${mul:…}`` resolve, our values win, the schema holds."""
    _loader_imports()
    root = snapshots[name]
    example = root / "examples" / "configs" / "grpo_math_1B.yaml"
    version = export_version(name)
    overrides = ["backend.name=vllm", "backend.model=Qwen/Qwen3-8B"]
    out = tmp_path / "exp"
    paper = ROOT / "problems" / "erdos" / "config.paper.yaml"
    export_nemo_rl(paper, out, overrides=overrides, defaults=str(example), version=version, full_weights=True)
    # the folder moves as it is: the copy of the example travels with it
    moved = tmp_path / "moved"
    shutil.move(str(out), moved)
    named = yaml.safe_load((moved / "nemo_rl.yaml").read_text())["defaults"]
    assert not Path(named).is_absolute() and (moved / named).is_file()
    loaded = up.run_in(root, LOADER.format(path=str(moved / "nemo_rl.yaml")))
    assert loaded["grpo"]["num_generations_per_prompt"] == 64 and loaded["grpo"]["max_num_steps"] == 50
    assert loaded["policy"]["model_name"] == "Qwen/Qwen3-8B"
    assert loaded["policy"]["generation"]["max_new_tokens"] == 26000
    # no gap beyond those of NeMo RL's own example (0.3.1's example lacks megatron keys its schema names)
    schema = up.Schema(root)
    own = schema.missing(up.run_in(root, LOADER.format(path=str(example))))
    assert set(schema.missing(loaded)) <= set(own)
    raw = (example).read_text()
    if "${mul:" in raw or "${max:" in raw:
        assert "${" not in json.dumps(loaded), "an interpolation was left unresolved"


# -- setup arity and grpo_train's parameters ---------------------------------------------------------

#: the names NeMo RL's sources give the values the driver names otherwise
SOURCE_NAMES = {"grpo_state": {"grpo_save_state"}, "dataloader": {"wrapped_dataloader"}, "nemo_gym": {"nemo_gym_actor"}}


def _same(ours: str, theirs: str) -> bool:
    return ours == theirs or theirs in SOURCE_NAMES.get(ours, set())


@pytest.mark.parametrize("name", NAMES)
def test_setup_returns_what_the_driver_unpacks(name, snapshots):
    root = snapshots[name]
    arity = up.setup_arity(root)
    assert arity in driver.SETUP_RESULTS, f"{name}: setup returns {arity} values"
    fn = up.function(root, "nemo_rl.algorithms.grpo", "setup")
    returned = [
        n
        for stmt in fn.body
        for n in up.own_nodes(stmt)
        if isinstance(n, ast.Return) and isinstance(n.value, ast.Tuple)
    ][-1].value.elts
    for ours, theirs in zip(driver.SETUP_RESULTS[arity], returned, strict=True):
        if ours == "cluster":
            continue  # one cluster, or (train, inference) from 0.7: passed on to nothing
        assert _same(ours, ast.unparse(theirs)), f"{name}: setup's value {ours!r} is {ast.unparse(theirs)!r} there"
    params = [a.arg for a in up.function(root, "nemo_rl.algorithms.grpo", "grpo_train").args.args]
    assert all(_same(o, t) for o, t in zip(driver.TRAIN_ARGS, params, strict=False)), params
    setup_params = [a.arg for a in fn.args.args][:4]
    assert setup_params == ["master_config", "tokenizer", "dataset", "val_dataset"]
    schema = up.Schema(root)
    datum = schema.fields(*schema.find("nemo_rl.data.interfaces", "DatumSpec"))
    ours = {"message_log", "length", "extra_env_info", "loss_multiplier", "idx", "task_name"}  # dataset.py's keys
    assert ours <= set(datum), f"{name}: DatumSpec lacks {ours - set(datum)}"
    lacking = [k for k, (required, _, _) in datum.items() if required and k not in ours]
    assert not lacking, f"{name}: DatumSpec requires {lacking}, which the dataset does not give"
    source = (root / "nemo_rl" / "algorithms" / "grpo.py").read_text()
    hooks = [h for h in ("_create_advantage_estimator", "calculate_baseline_and_std_per_prompt") if f"{h}(" in source]
    assert hooks, f"{name}: neither advantage hook"


@pytest.mark.parametrize("name", NAMES)
def test_typed_config_from_0_7(name, snapshots):
    """``MasterConfig`` is a TypedDict up to 0.6 and a pydantic model later: the driver passes each its kind."""
    root = snapshots[name]
    found = up.Schema(root).find("nemo_rl.algorithms.grpo", "MasterConfig")
    kind = up.Schema(root).kind(*found)
    expected = "model" if versions.parse(export_version(name)) >= (0, 7) else "typeddict"
    assert kind == expected
