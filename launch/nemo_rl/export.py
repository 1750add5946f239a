"""``discover export nemo-rl CONFIG OUTDIR``: one of our configs as a NeMo RL GRPO run.

Writes into OUTDIR:

- ``nemo_rl.yaml``: NeMo RL's GRPO config translated from ours (the schema of NeMo RL's
  ``examples/configs/grpo_math_1B.yaml``; ``--defaults`` instead inherits every key we do
  not set from a config of the user's NeMo RL checkout);
- ``discover.yaml``: our resolved config, its ``run.output`` pointing at ``OUTDIR/run``:
  the environment actor reads it (problem, sandbox, sampler, estimator);
- ``run.sh``: the driver invocation; ``slurm.sbatch``: a Ray cluster over a SLURM
  allocation that runs ``run.sh`` on the head node;
- ``untranslated.txt``: every setting of ours NeMo RL has no place for, and why.

NeMo RL accepts unknown keys silently, so nothing is dropped without a line in
``untranslated.txt`` (also printed).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from discover_ttt.config import load_config
from discover_ttt.errors import UserError

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


@dataclass
class Export:
    nemo: dict[str, Any]
    ours: dict[str, Any]
    untranslated: list[str] = field(default_factory=list)


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[last] = value


def translate(resolved: dict[str, Any], outdir: Path, *, gpus_per_node: int = 8, num_nodes: int = 1) -> Export:
    """Our resolved config → NeMo RL's GRPO config, plus the list of what had no place there."""
    backend = dict(resolved["backend"])
    run = resolved["run"]
    untranslated: list[str] = []
    model = backend.get("model")
    if not isinstance(model, str) or model.startswith("package:") or model.endswith(".gguf"):
        untranslated.append(
            f"backend.model = {model!r}: NeMo RL needs a Hugging Face model id or folder; "
            "set policy.model_name and policy.tokenizer.name in nemo_rl.yaml"
        )
    window = int(backend.get("context_window") or 32768)
    lora_rank = backend.get("lora_rank")
    full_weights = lora_rank is None
    precision = {"auto": "bfloat16", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
    dtype = backend.get("dtype", "auto")
    nemo: dict[str, Any] = {
        "grpo": {
            "num_prompts_per_step": run["groups"],
            "num_generations_per_prompt": run["rollouts"],
            "max_rollout_turns": 1,
            "max_num_steps": run["steps"],
            # advantages come from our estimator through the driver's hook (advantages.py)
            "normalize_rewards": False,
            "use_leave_one_out_baseline": False,
            "val_period": 0,
            "val_at_start": False,
            "max_val_samples": 0,
            "val_batch_size": run["groups"],
        },
        "loss_fn": {
            "reference_policy_kl_penalty": float(backend.get("kl_coef", 0.0) or 0.0),
            # the method's loss has no clipping; on-policy with one optimizer step the ratio is 1
            # at the start of the step, so a wide clip keeps NeMo RL's loss equal to ours there
            "ratio_clip_min": 1.0e9,
            "ratio_clip_max": 1.0e9,
            "ratio_clip_c": None,
            "use_on_policy_kl_approximation": False,
            "use_importance_sampling_correction": True,
            "token_level_loss": True,
        },
        "checkpointing": {
            "enabled": True,
            "checkpoint_dir": str(outdir / "nemo_checkpoints"),
            "metric_name": None,
            "higher_is_better": True,
            "keep_top_k": run["keep_checkpoints"],
            "save_period": run["save_every"],
        },
        "policy": {
            "model_name": model,
            "tokenizer": {"name": backend.get("tokenizer") or model},
            "train_global_batch_size": run["groups"] * run["rollouts"],
            "train_micro_batch_size": backend.get("micro_batch_size", 1),
            "generation_batch_size": run["groups"] * run["rollouts"],
            "logprob_batch_size": backend.get("micro_batch_size", 1),
            "max_total_sequence_length": window,
            "precision": precision.get(dtype, "bfloat16"),
            "fsdp_offload_enabled": False,
            "activation_checkpointing_enabled": bool(backend.get("gradient_checkpointing", False)),
            "dtensor_cfg": {
                "enabled": True,
                "cpu_offload": False,
                "sequence_parallel": False,
                "activation_checkpointing": bool(backend.get("gradient_checkpointing", False)),
                "tensor_parallel_size": 1,
                "custom_parallel_plan": None,
            },
            "dynamic_batching": {"enabled": False},
            "make_sequence_length_divisible_by": 1,
            # the method clips nothing (reference-algorithm.md §5.3)
            "max_grad_norm": None,
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
                    "precision": precision.get(dtype, "bfloat16"),
                    "tensor_parallel_size": int(backend.get("tensor_parallel_size", 1) or 1),
                    "pipeline_parallel_size": 1,
                    "gpu_memory_utilization": float(backend.get("gpu_memory_utilization", 0.6) or 0.6),
                    "max_model_len": window,
                },
                "colocated": {"enabled": True, "resources": {"gpus_per_node": None, "num_nodes": None}},
            },
        },
        # states come from PUCT one step at a time: no worker may prefetch (dataset.py)
        "data": {"max_input_seq_length": window, "shuffle": False, "num_workers": 0, "add_system_prompt": False},
        "env": {"discover": {"discover_config": str(outdir / "discover.yaml")}},
        "logger": {
            "log_dir": str(outdir / "nemo_logs"),
            "num_val_samples_to_print": 0,
            "wandb_enabled": False,
            "tensorboard_enabled": True,
            "monitor_gpus": False,
            "wandb": {"project": "discover", "name": Path(str(run["output"])).name},
            "tensorboard": {},
        },
        "cluster": {"gpus_per_node": gpus_per_node, "num_nodes": num_nodes},
    }
    if not full_weights:
        _set(
            nemo,
            "policy.dtensor_cfg.lora_cfg",
            {
                "enabled": True,
                "dim": int(lora_rank),
                "alpha": float(backend.get("lora_alpha", lora_rank)),
                "dropout": float(backend.get("lora_dropout", 0.0)),
                "target_modules": backend.get("lora_target_modules"),
            },
        )
        _set(nemo, "policy.dtensor_cfg._v2", True)  # NeMo RL's LoRA lives in the DTensor v2 path
    for key in sorted(backend):
        value = backend[key]
        if key in TRANSLATED or value in (None, False, [], {}):
            continue  # translated, or unset: nothing is lost
        if key == "thinking_style" and backend.get("thinking_budget") is None:
            continue  # the style only matters with a thinking budget
        reason = NOT_TRANSLATED.get(key, "NeMo RL has no setting for it")
        if key != "name":
            untranslated.append(f"backend.{key} = {value!r}: {reason}")
    if backend.get("name") not in (None, "local", "vllm", "tinker"):
        untranslated.append(
            f"backend.name = {backend['name']!r}: only the settings it shares with the local backend carry over"
        )
    log = resolved.get("log") or {}
    for key, value in sorted(log.items()):
        if key not in ("level", "progress"):
            untranslated.append(f"log.{key} = {value!r}: use NeMo RL's logger section (wandb, tensorboard, mlflow)")
    ours = dict(resolved)
    ours["run"] = {**run, "output": str(outdir / "run")}
    return Export(nemo=nemo, ours=ours, untranslated=untranslated)


def run_script(outdir: Path) -> str:
    return (
        "#!/usr/bin/env bash\n"
        "# GRPO in NeMo RL with a discover problem; run where both nemo_rl and discover-ttt import\n"
        "# (for NeMo RL's uv environment: uv run --with discover-ttt bash run.sh).\n"
        "set -euo pipefail\n"
        f"exec python -m discover_ttt.launch.nemo_rl.driver --config {shlex.quote(str(outdir / 'nemo_rl.yaml'))} "
        f'--discover-config {shlex.quote(str(outdir / "discover.yaml"))} "$@"\n'
    )


def slurm_script(outdir: Path, num_nodes: int, gpus_per_node: int) -> str:
    run_sh = shlex.quote(str(outdir / "run.sh"))
    return f"""#!/usr/bin/env bash
#SBATCH --job-name=discover-nemo-rl
#SBATCH --nodes={num_nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus_per_node}
#SBATCH --exclusive
#SBATCH --output={outdir}/slurm-%j.out
# A Ray head on the first node, a worker on each other node, then run.sh on the head.
set -euo pipefail
nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
head=${{nodes[0]}}
port=${{RAY_PORT:-6379}}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{{print $1}}')
srun --nodes=1 --ntasks=1 -w "$head" ray start --head --node-ip-address="$head_ip" --port="$port" \\
  --num-gpus={gpus_per_node} --block &
sleep 15
for node in "${{nodes[@]:1}}"; do
  srun --nodes=1 --ntasks=1 -w "$node" ray start --address="$head_ip:$port" --num-gpus={gpus_per_node} --block &
done
sleep 15
export RAY_ADDRESS="$head_ip:$port"
srun --overlap --nodes=1 --ntasks=1 -w "$head" bash {run_sh}
"""


def export_nemo_rl(
    config: str | Path,
    outdir: str | Path,
    *,
    overrides: list[str] | None = None,
    defaults: str | None = None,
    gpus_per_node: int = 8,
    num_nodes: int = 1,
) -> Export:
    """Write the NeMo RL run for ``config`` into ``outdir``; returns what was written."""
    loaded = load_config(config, overrides)
    outdir = Path(outdir).resolve()
    if outdir.exists() and any(outdir.iterdir()):
        raise UserError(f"{outdir} already holds files; export into a new or empty folder.")
    exported = translate(loaded.resolved(), outdir, gpus_per_node=gpus_per_node, num_nodes=num_nodes)
    if defaults:
        exported.nemo = {"defaults": str(Path(defaults).resolve()), **exported.nemo}
    outdir.mkdir(parents=True, exist_ok=True)
    header = f"# NeMo RL GRPO config written by `discover export nemo-rl {config}`; see untranslated.txt.\n"
    (outdir / "nemo_rl.yaml").write_text(header + yaml.safe_dump(exported.nemo, sort_keys=False))
    (outdir / "discover.yaml").write_text(yaml.safe_dump(exported.ours, sort_keys=False))
    for name, text in (
        ("run.sh", run_script(outdir)),
        ("slurm.sbatch", slurm_script(outdir, num_nodes, gpus_per_node)),
    ):
        (outdir / name).write_text(text)
        (outdir / name).chmod(0o755)
    lines = exported.untranslated or ["(every setting was translated)"]
    (outdir / "untranslated.txt").write_text("\n".join(lines) + "\n")
    return exported
