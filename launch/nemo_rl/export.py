"""``discover export nemo-rl CONFIG OUTDIR``: one of our configs as a NeMo RL GRPO run.

Writes into OUTDIR, every path in it relative to OUTDIR (copy the folder to the cluster as is):

- ``nemo_rl.yaml``: NeMo RL's GRPO config for the release ``--nemo-rl-version`` names
  (default the newest supported): our settings translated, plus every key that release reads
  without a default or its schema requires (:mod:`.schema`); ``--defaults FILE`` makes it
  inherit every other key from a config of the user's NeMo RL checkout, copied into
  ``nemo_rl_defaults/`` with the configs it inherits from;
- ``discover.yaml``: our resolved config for the environment actor (problem, sandbox,
  sampler, estimator), its backend the ``nemo_rl`` one and its run directory ``run/``;
- ``run.sh``: the driver invocation; ``slurm.sbatch``: a Ray cluster over a SLURM
  allocation that runs ``run.sh`` on the head node once Ray reports every node;
- ``choices.txt``: each value the export chose rather than translated, and why;
- ``untranslated.txt``: every setting of ours NeMo RL has no place for, and why.

NeMo RL accepts unknown keys silently, so nothing is dropped without a line in
``untranslated.txt`` (also printed). Tensor parallelism and vLLM's memory share follow the
model's size and the cluster (:mod:`.sizing`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from discover_ttt.config import load_config
from discover_ttt.errors import UserError

from . import schema, sizing, versions
from .backend import NemoRLBackend
from .versions import NEWEST

#: backend keys and where they go; the value says how
TRANSLATED = {
    "model": "policy.model_name (and policy.tokenizer.name)",
    "tokenizer": "policy.tokenizer.name",
    "dtype": "policy.precision",
    "lora_rank": "policy.dtensor_cfg.lora_cfg.dim",
    "lora_alpha": "policy.dtensor_cfg.lora_cfg.alpha",
    "lora_dropout": "policy.dtensor_cfg.lora_cfg.dropout",
    "lora_target_modules": "policy.dtensor_cfg.lora_cfg.target_modules",
    "lr": "policy.optimizer.kwargs.lr",
    "betas": "policy.optimizer.kwargs.betas",
    "eps": "policy.optimizer.kwargs.eps",
    "kl_coef": "loss_fn.reference_policy_kl_penalty",
    "micro_batch_size": "policy.train_micro_batch_size",
    "gradient_checkpointing": "policy.dtensor_cfg.activation_checkpointing",
    "temperature": "policy.generation.temperature",
    "top_p": "policy.generation.top_p",
    "max_new_tokens": "policy.generation.max_new_tokens",
    "context_window": "policy.max_total_sequence_length",
    "stop_token_ids": "policy.generation.stop_token_ids",
    "chat_template_kwargs": "applied by the PUCT dataset when it renders prompts",
    "gpu_memory_utilization": "policy.generation.vllm_cfg.gpu_memory_utilization",
    "tensor_parallel_size": "policy.generation.vllm_cfg.tensor_parallel_size",
}

#: backend keys NeMo RL has no place for
NOT_TRANSLATED = {
    "name": "NeMo RL samples with vLLM and trains with its own policy workers",
    "device": "NeMo RL places the policy on the cluster's GPUs (cluster.gpus_per_node, cluster.num_nodes)",
    "gguf_file": "NeMo RL loads Hugging Face checkpoints, not GGUF files",
    "seed": "NeMo RL seeds its own workers; our run.seed still seeds PUCT and the problem",
    "sample_batch_size": "vLLM batches requests itself",
    "thinking_budget": "NeMo RL has no two-phase thinking budget: completions stop at "
    "policy.generation.max_new_tokens, with no forced final answer",
    "thinking_style": "no forced final-answer text without the two-phase budget",
    "train_forced_tokens": "no forced tokens without the two-phase budget",
}


#: settings the export fixes whatever the config says, and why (listed in choices.txt)
FIXED: tuple[tuple[str, Any, str], ...] = (
    ("grpo.max_rollout_turns", 1, "one completion per prompt, scored once: one step of our loop"),
    ("grpo.normalize_rewards", False, "advantages come from our estimator through the driver's hook"),
    ("grpo.use_leave_one_out_baseline", False, "advantages come from our estimator through the driver's hook"),
    ("grpo.val_period", 0, "a discover run has no validation set"),
    ("grpo.val_at_start", False, "a discover run has no validation set"),
    ("grpo.max_val_samples", 0, "a discover run has no validation set"),
    ("loss_fn.ratio_clip_min", 1.0e9, "the method clips nothing: on-policy with one optimizer step the ratio is 1"),
    ("loss_fn.ratio_clip_max", 1.0e9, "the method clips nothing: on-policy with one optimizer step the ratio is 1"),
    ("loss_fn.ratio_clip_c", None, "no dual clipping"),
    ("loss_fn.use_on_policy_kl_approximation", False, "KL against the reference policy as the method defines it"),
    ("loss_fn.use_importance_sampling_correction", True, "the ratio against the sampling policy, as ours"),
    ("loss_fn.token_level_loss", True, "a token-level loss, as ours"),
    ("policy.max_grad_norm", None, "the method clips no gradients (reference-algorithm.md §5.3)"),
    ("policy.dynamic_batching", {"enabled": False}, "fixed micro-batches of backend.micro_batch_size"),
    ("policy.make_sequence_length_divisible_by", 1, "no padding beyond the longest sequence"),
    ("data.shuffle", False, "PUCT orders the states"),
    ("data.num_workers", 0, "states are chosen after the previous step's rewards: no worker may prefetch"),
    ("data.add_system_prompt", False, "our problem writes the whole prompt"),
    ("checkpointing.enabled", True, "NeMo RL's checkpoints hold the policy; ours hold PUCT and the archive"),
    ("checkpointing.metric_name", None, "keep the newest checkpoints (no validation metric)"),
    ("checkpointing.higher_is_better", True, "unused without a metric; the schema requires it"),
    ("checkpointing.checkpoint_dir", "nemo_checkpoints", "relative to the export folder (run.sh runs there)"),
    ("logger.log_dir", "nemo_logs", "relative to the export folder (run.sh runs there)"),
    ("logger.num_val_samples_to_print", 0, "no validation"),
    ("logger.wandb_enabled", False, "our run directory has the events; turn on in nemo_rl.yaml if wanted"),
    ("logger.tensorboard_enabled", True, "NeMo RL's training curves, next to our events"),
    ("logger.monitor_gpus", False, "off by default; turn on in nemo_rl.yaml if wanted"),
    ("env.discover.discover_config", "discover.yaml", "relative to the export folder (run.sh runs there)"),
)


@dataclass
class Export:
    nemo: dict[str, Any]
    ours: dict[str, Any]
    version: str = NEWEST
    untranslated: list[str] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[last] = value


def _get(tree: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        tree = tree[key]
    return tree


def _has(tree: Any, dotted: str) -> bool:
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def _sizes(backend: dict[str, Any], params_b: float | None, *, gpus_per_node, num_nodes, gpu_gb, lora):
    """(tensor parallel size, vLLM memory share, why): the user's where set, else :mod:`.sizing`'s rule."""
    tp, memory = backend.get("tensor_parallel_size"), backend.get("gpu_memory_utilization")
    if tp and memory:
        return int(tp), float(memory), "backend.tensor_parallel_size and backend.gpu_memory_utilization"
    if params_b is None:
        raise UserError(
            f"cannot tell the size of backend.model = {backend.get('model')!r} from its name, and the export "
            "sets tensor parallelism and vLLM's memory share from it. Pass --model-size (e.g. --model-size 8B), "
            "or set backend.tensor_parallel_size and backend.gpu_memory_utilization (with --set)."
        )
    chosen = sizing.plan(params_b, gpus_per_node=gpus_per_node, num_nodes=num_nodes, gpu_gb=gpu_gb, lora=lora)
    return int(tp or chosen.tensor_parallel_size), float(memory or chosen.gpu_memory_utilization), chosen.why


@dataclass(frozen=True)
class Target:
    """What the export writes for: a NeMo RL release and a cluster.

    ``model_size`` ("8B") where the model's name does not say; ``full_weights`` trains every
    weight instead of the LoRA adapter our config describes (NeMo RL before 0.5 has no LoRA),
    and the adapter's settings are then listed as untranslated.
    """

    version: str = NEWEST
    gpus_per_node: int = 8
    num_nodes: int = 1
    gpu_gb: float = 80.0
    model_size: str | None = None
    full_weights: bool = False


def translate(resolved: dict[str, Any], target: Target | None = None) -> Export:
    """Our resolved config → the target release's GRPO config, what had no place there, and what we chose."""
    target = target or Target()
    version, gpus_per_node, num_nodes = target.version, target.gpus_per_node, target.num_nodes
    gpu_gb, model_size, full_weights = target.gpu_gb, target.model_size, target.full_weights
    release = versions.parse(version)
    backend = dict(resolved["backend"])
    run = resolved["run"]
    untranslated: list[str] = []
    choices: list[str] = []
    model = backend.get("model")
    if not isinstance(model, str) or model.startswith("package:") or model.endswith(".gguf"):
        untranslated.append(
            f"backend.model = {model!r}: NeMo RL needs a Hugging Face model id or folder; "
            "set policy.model_name and policy.tokenizer.name in nemo_rl.yaml"
        )
    window = int(backend.get("context_window") or 32768)
    lora_rank = backend.get("lora_rank")
    lora = lora_rank is not None and not full_weights
    if lora and release < (0, 5):
        raise UserError(
            f"backend.lora_rank = {lora_rank}, but NeMo RL {release[0]}.{release[1]}'s policy has no LoRA "
            "(policy.dtensor_cfg.lora_cfg arrives in 0.5) and would silently train every weight instead. Export "
            "for NeMo RL 0.5 or later (--nemo-rl-version), or pass --full-weights to train every weight."
        )
    if full_weights and lora_rank is not None:
        for key in ("lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules"):
            if backend.get(key) not in (None, [], {}):
                untranslated.append(f"backend.{key} = {backend[key]!r}: --full-weights trains every weight")
            backend.pop(key, None)
    if model_size:
        params_b = sizing.params_from_name(model_size)
        if params_b is None:
            raise UserError(f"--model-size expects a size such as 8B or 135M, got {model_size!r}.")
    else:
        params_b = sizing.params_from_name(model if isinstance(model, str) else None)
    tp, memory, size_why = _sizes(
        backend, params_b, gpus_per_node=gpus_per_node, num_nodes=num_nodes, gpu_gb=gpu_gb, lora=lora
    )
    precision = {"auto": "bfloat16", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
    dtype = precision.get(backend.get("dtype", "auto"), "bfloat16")
    checkpointing = bool(backend.get("gradient_checkpointing", False))
    nemo: dict[str, Any] = {
        "grpo": {
            "num_prompts_per_step": run["groups"],
            "num_generations_per_prompt": run["rollouts"],
            "max_num_steps": run["steps"],
            "val_batch_size": run["groups"],
            "seed": run["seed"],
        },
        "loss_fn": {"reference_policy_kl_penalty": float(backend.get("kl_coef", 0.0) or 0.0)},
        "checkpointing": {"keep_top_k": run["keep_checkpoints"], "save_period": run["save_every"]},
        "policy": {
            "model_name": model,
            "tokenizer": {"name": backend.get("tokenizer") or model},
            "train_global_batch_size": run["groups"] * run["rollouts"],
            "train_micro_batch_size": backend.get("micro_batch_size", 1),
            "generation_batch_size": run["groups"] * run["rollouts"],
            "logprob_batch_size": backend.get("micro_batch_size", 1),
            "max_total_sequence_length": window,
            "precision": dtype,
            "fsdp_offload_enabled": False,
            "activation_checkpointing_enabled": checkpointing,
            "dtensor_cfg": {
                "enabled": True,
                "cpu_offload": False,
                "sequence_parallel": False,
                "activation_checkpointing": checkpointing,
                "tensor_parallel_size": tp,
                "custom_parallel_plan": None,
            },
            "optimizer": {
                "name": "torch.optim.AdamW",
                "kwargs": {
                    "lr": float(backend.get("lr", 4e-5)),
                    "weight_decay": 0.0,
                    "betas": list(backend.get("betas", (0.9, 0.95))),
                    "eps": float(backend.get("eps", 1e-8)),
                    "foreach": False,
                    "fused": False,
                },
            },
            "scheduler": [
                {"name": "torch.optim.lr_scheduler.ConstantLR", "kwargs": {"factor": 1.0, "total_iters": 1}},
            ],
            "generation": {
                "backend": "vllm",
                "max_new_tokens": int(backend.get("max_new_tokens") or window),
                "temperature": float(backend.get("temperature", 1.0)),
                "top_p": float(backend.get("top_p", 1.0)),
                "top_k": None,
                "stop_token_ids": list(backend.get("stop_token_ids") or []) or None,
                "stop_strings": None,
                "vllm_cfg": {
                    "async_engine": False,
                    "precision": dtype,
                    "tensor_parallel_size": tp,
                    "pipeline_parallel_size": 1,
                    "gpu_memory_utilization": memory,
                    "max_model_len": window,
                },
                "colocated": {"enabled": True, "resources": {"gpus_per_node": None, "num_nodes": None}},
            },
        },
        "data": {"max_input_seq_length": window},
        "env": {"discover": {}},
        "logger": {"wandb": {"project": "discover", "name": Path(str(run["output"])).name}, "tensorboard": {}},
        "cluster": {"gpus_per_node": gpus_per_node, "num_nodes": num_nodes},
    }
    choices.append(f"policy.generation.vllm_cfg.tensor_parallel_size = {tp}: {size_why}")
    choices.append(f"policy.dtensor_cfg.tensor_parallel_size = {tp}: training shards as generation does")
    choices.append(f"policy.generation.vllm_cfg.gpu_memory_utilization = {memory}: {size_why}")
    for key, value, why in FIXED:
        _set(nemo, key, value)
        choices.append(f"{key} = {value!r}: {why}")
    if lora and lora_rank is not None:  # (lora implies a rank)
        _set(
            nemo,
            "policy.dtensor_cfg.lora_cfg",
            {
                "enabled": True,
                "dim": int(lora_rank),
                "alpha": float(backend.get("lora_alpha", int(lora_rank))),
                "dropout": float(backend.get("lora_dropout", 0.0)),
                "target_modules": backend.get("lora_target_modules"),
            },
        )
        _set(nemo, "policy.dtensor_cfg._v2", True)  # NeMo RL's LoRA lives in the DTensor v2 path
        choices.append("policy.dtensor_cfg._v2 = True: NeMo RL's LoRA lives in its DTensor v2 policy worker")
    for req in schema.required_for(release, lora=lora):
        value = _get(nemo, req.value.key) if isinstance(req.value, schema.Same) else req.value
        _set(nemo, req.key, value)
        choices.append(f"{req.key} = {value!r}: {req.why}")
    for key in sorted(backend):
        value = backend[key]
        if key in TRANSLATED or value in (None, False, [], {}):
            continue  # translated, or unset: nothing is lost
        if key == "thinking_style" and backend.get("thinking_budget") is None:
            continue  # the style only matters with a thinking budget
        reason = NOT_TRANSLATED.get(key, "NeMo RL has no setting for it")
        if key != "name":
            untranslated.append(f"backend.{key} = {value!r}: {reason}")
    if backend.get("name") not in (None, "local", "vllm", "tinker", NemoRLBackend.name):
        untranslated.append(
            f"backend.name = {backend['name']!r}: only the settings it shares with the local backend carry over"
        )
    log = resolved.get("log") or {}
    for key, value in sorted(log.items()):
        if key not in ("level", "progress"):
            untranslated.append(f"log.{key} = {value!r}: use NeMo RL's logger section (wandb, tensorboard, mlflow)")
    ours = dict(resolved)
    # the environment samples nothing itself: NeMo RL does; the section says so, and keeps what the
    # dataset still needs (the chat template's arguments)
    ours["backend"] = {
        "name": NemoRLBackend.name,
        "model": model if isinstance(model, str) else None,
        "chat_template_kwargs": dict(backend.get("chat_template_kwargs") or {}),
    }
    ours["run"] = {**run, "output": "run"}  # relative to discover.yaml's folder
    return Export(nemo=nemo, ours=ours, version=version, untranslated=untranslated, choices=choices)


def run_script() -> str:
    return """#!/usr/bin/env bash
# GRPO in NeMo RL with a discover problem. Paths in nemo_rl.yaml and discover.yaml are relative
# to this folder, so the folder can be copied to the cluster as it is.
#
# Run it with a Python where nemo_rl imports (NeMo RL's own environment, e.g.
# PYTHON=/path/to/NeMo-RL/.venv/bin/python) and where discover-ttt is installed as well.
# discover-ttt is not on PyPI: install it from a checkout of its repository, once:
#   uv pip install --python "$PYTHON" -e /path/to/discover      (or: "$PYTHON" -m pip install -e ...)
# or set DISCOVER_SRC=/path/to/discover and this script installs it before the run.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}
if [ -n "${DISCOVER_SRC:-}" ]; then
  if command -v uv >/dev/null 2>&1; then
    uv pip install -q --python "$PY" -e "$DISCOVER_SRC"
  else
    "$PY" -m pip install -q -e "$DISCOVER_SRC"
  fi
fi
if ! "$PY" -c "import discover_ttt" 2>/dev/null; then
  echo "run.sh: discover-ttt does not import in $PY; install it from its repository" \\
    "(pip install -e /path/to/discover) or set DISCOVER_SRC to a checkout of it." >&2
  exit 1
fi
exec "$PY" -m discover_ttt.launch.nemo_rl.driver --config nemo_rl.yaml --discover-config discover.yaml "$@"
"""


def slurm_script(num_nodes: int, gpus_per_node: int) -> str:
    return f"""#!/usr/bin/env bash
# A Ray head on the first node, a worker on each other node, then run.sh on the head once Ray
# reports every node alive. Submit from the export folder: cd OUTDIR && sbatch slurm.sbatch
#   PYTHON          NeMo RL's Python, with discover-ttt installed (default: python)
#   RAY_PORT        the head's port (default 6379)
#   READY_TIMEOUT_S how long to wait for the nodes to join (default 600)
#SBATCH --job-name=discover-nemo-rl
#SBATCH --nodes={num_nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus_per_node}
#SBATCH --exclusive
#SBATCH --output=slurm-%j.out
set -euo pipefail
cd "${{SLURM_SUBMIT_DIR:-.}}"
if [ ! -f run.sh ]; then
  echo "slurm.sbatch: submit it from the export folder (cd OUTDIR && sbatch slurm.sbatch)" >&2
  exit 1
fi
PY=${{PYTHON:-python}}
port=${{RAY_PORT:-6379}}
timeout_s=${{READY_TIMEOUT_S:-600}}
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head=${{nodes[0]}}
head_ip=$(srun --nodes=1 --ntasks=1 --overlap -w "$head" hostname --ip-address | awk '{{print $1}}')
address="$head_ip:$port"
srun --nodes=1 --ntasks=1 --overlap -w "$head" ray start --head --node-ip-address="$head_ip" --port="$port" \\
  --num-gpus={gpus_per_node} --block &
for node in "${{nodes[@]:1}}"; do
  srun --nodes=1 --ntasks=1 --overlap -w "$node" ray start --address="$address" --num-gpus={gpus_per_node} --block &
done
# ask Ray until every node is alive (the workers retry until the head is up)
deadline=$((SECONDS + timeout_s))
until "$PY" - "$address" "${{#nodes[@]}}" <<'PY' 2>/dev/null
import sys, ray
ray.init(address=sys.argv[1], logging_level="error", log_to_driver=False)
sys.exit(0 if sum(1 for n in ray.nodes() if n["Alive"]) >= int(sys.argv[2]) else 1)
PY
do
  if [ $SECONDS -ge $deadline ]; then
    echo "slurm.sbatch: Ray did not report ${{#nodes[@]}} live nodes within $timeout_s s" >&2
    exit 1
  fi
  sleep "${{RAY_POLL_S:-5}}"
done
export RAY_ADDRESS="$address"
srun --overlap --nodes=1 --ntasks=1 -w "$head" bash run.sh
"""


def _copy_defaults(source: Path, into: Path) -> str:
    """Copy a NeMo RL config and every config it inherits from (``defaults:``) into ``into``;
    returns the copy's name relative to the export folder. NeMo RL resolves ``defaults``
    relative to the file that names them, so the copies name each other by their new names."""
    into.mkdir(exist_ok=True)
    names: dict[Path, str] = {}

    def copy(path: Path) -> str:
        path = path.resolve()
        if path in names:
            return names[path]
        if not path.is_file():
            raise UserError(f"--defaults: {path} does not exist (named by a NeMo RL config's defaults).")
        name = f"{len(names)}_{path.name}"
        names[path] = name
        data = yaml.safe_load(path.read_text()) or {}
        parents = data.get("defaults")
        if parents is not None:
            listed = [parents] if isinstance(parents, str) else list(parents)
            copied = [copy(Path(p) if Path(p).is_absolute() else path.parent / p) for p in map(str, listed)]
            data["defaults"] = copied[0] if isinstance(parents, str) else copied
            (into / name).write_text(yaml.safe_dump(data, sort_keys=False))
        else:
            (into / name).write_text(path.read_text())
        return name

    return f"{into.name}/{copy(source)}"


def export_nemo_rl(
    config: str | Path,
    outdir: str | Path,
    *,
    overrides: list[str] | None = None,
    defaults: str | None = None,
    **target: Any,
) -> Export:
    """Write the NeMo RL run for ``config`` into ``outdir``; returns what was written.

    ``target`` are the fields of :class:`Target` (``version``, ``num_nodes``, ...).
    """
    target_ = Target(**target)
    loaded = load_config(config, overrides)
    outdir = Path(outdir).resolve()
    if outdir.exists() and any(outdir.iterdir()):
        raise UserError(f"{outdir} already holds files; export into a new or empty folder.")
    exported = translate(loaded.resolved(), target_)
    outdir.mkdir(parents=True, exist_ok=True)
    if defaults:
        exported.nemo = {"defaults": _copy_defaults(Path(defaults), outdir / "nemo_rl_defaults"), **exported.nemo}
    header = (
        f"# NeMo RL {exported.version} GRPO config written by `discover export nemo-rl`; "
        "choices.txt says why each fixed value is what it is, untranslated.txt what had no place here.\n"
    )
    (outdir / "nemo_rl.yaml").write_text(header + yaml.safe_dump(exported.nemo, sort_keys=False))
    (outdir / "discover.yaml").write_text(yaml.safe_dump(exported.ours, sort_keys=False))
    for name, text in (
        ("run.sh", run_script()),
        ("slurm.sbatch", slurm_script(target_.num_nodes, target_.gpus_per_node)),
    ):
        (outdir / name).write_text(text)
        (outdir / name).chmod(0o755)
    lines = exported.untranslated or ["(every setting was translated)"]
    (outdir / "untranslated.txt").write_text("\n".join(lines) + "\n")
    (outdir / "choices.txt").write_text("\n".join(exported.choices) + "\n")
    return exported
