"""Tensor parallelism and vLLM memory for the export, from the model's size and the cluster.

A rule of thumb, stated so that each number it writes can be checked (the export lists them):

- weights in bf16 take ``2·P`` GB for ``P`` billion parameters;
- vLLM and the policy take turns on the same GPUs (NeMo RL's colocated mode), so one vLLM
  replica's weights, ``2·P / tp``, may use at most 40 % of a GPU: the rest is KV cache for
  long generations. ``tp`` is the smallest power of two dividing ``gpus_per_node`` that
  satisfies it (one replica stays on one node); training shards the same way;
- vLLM's ``gpu_memory_utilization`` is that weight share plus 0.4 for the KV cache,
  within [0.6, 0.9] (0.6 is NeMo RL's own example value for small models);
- full-weight training keeps about 16 bytes per parameter (bf16 weights and gradients, fp32
  master weights and two Adam moments) sharded over every GPU, at most 60 % of each; a LoRA
  adapter adds little beyond the bf16 weights.

Where the model's size cannot be read from its name, or the cluster is too small, the export
refuses with what to set.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from discover_ttt.errors import UserError

WEIGHT_SHARE = 0.4  # of one GPU, for one vLLM replica's weights
KV_SHARE = 0.4  # added to the weight share for vLLM's KV cache
TRAIN_SHARE = 0.6  # of one GPU, for sharded training state
FULL_BYTES_PER_PARAM = 16
LORA_BYTES_PER_PARAM = 2


class ClusterTooSmall(UserError):
    """The model does not fit the cluster the export was given."""


_SIZE = re.compile(r"(?<![0-9a-z.])(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)


def params_from_name(model: str | None) -> float | None:
    """Billions of parameters read from a model id: ``openai/gpt-oss-120b`` → 120, ``…-135M-…`` → 0.135.

    Mixture-of-experts ids name the total first (``Qwen3-30B-A3B`` → 30); the largest figure wins.
    """
    if not model:
        return None
    sizes = [float(n) * (1.0 if unit.lower() == "b" else 1e-3) for n, unit in _SIZE.findall(model.rpartition("/")[2])]
    return max(sizes) if sizes else None


@dataclass
class Plan:
    tensor_parallel_size: int
    gpu_memory_utilization: float
    why: str


def plan(params_b: float, *, gpus_per_node: int, num_nodes: int, gpu_gb: float, lora: bool) -> Plan:
    weights_gb = 2.0 * params_b
    tps = [t for t in (1, 2, 4, 8, 16, 32) if t <= gpus_per_node and gpus_per_node % t == 0]
    fitting = [t for t in tps if weights_gb / t <= WEIGHT_SHARE * gpu_gb]
    if not fitting:
        raise ClusterTooSmall(
            f"a {params_b:g}B-parameter model takes about {weights_gb:.0f} GB in bf16, more than "
            f"{WEIGHT_SHARE:.0%} of {max(tps)} GPUs of {gpu_gb:g} GB (one vLLM replica stays on one node). "
            "Export for nodes with more GPUs (--gpus-per-node) or more memory (--gpu-memory-gb), or set "
            "backend.tensor_parallel_size yourself and add pipeline parallelism in nemo_rl.yaml."
        )
    tp = fitting[0]
    share = weights_gb / tp / gpu_gb
    utilization = round(min(0.9, max(0.6, share + KV_SHARE)), 2)
    per_param = LORA_BYTES_PER_PARAM if lora else FULL_BYTES_PER_PARAM
    state_gb = per_param * params_b
    gpus = gpus_per_node * num_nodes
    if state_gb / gpus > TRAIN_SHARE * gpu_gb:
        need = math.ceil(state_gb / (TRAIN_SHARE * gpu_gb) / gpus_per_node)
        raise ClusterTooSmall(
            f"{'LoRA' if lora else 'full-weight'} training of a {params_b:g}B-parameter model keeps about "
            f"{state_gb:.0f} GB of weights and optimizer state ({per_param} bytes a parameter), more than "
            f"{TRAIN_SHARE:.0%} of {gpus} GPUs of {gpu_gb:g} GB can hold. Export with --nodes {need} or more"
            + ("" if lora else ", or train a LoRA adapter (backend.lora_rank)")
            + "."
        )
    why = (
        f"{params_b:g}B parameters ≈ {weights_gb:.0f} GB in bf16: tensor parallelism {tp} keeps one replica's "
        f"weights at {share:.0%} of a {gpu_gb:g} GB GPU; vLLM may use that plus {KV_SHARE:.0%} for its KV cache"
    )
    return Plan(tensor_parallel_size=tp, gpu_memory_utilization=utilization, why=why)
