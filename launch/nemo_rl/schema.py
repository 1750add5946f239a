"""Keys each NeMo RL release requires of a GRPO config that no setting of ours fills.

``grpo.setup``/``grpo_train`` read these keys without a default (a ``KeyError`` when
absent), or the release's config schema declares them required (TypedDicts up to 0.6; from
0.7 a pydantic ``MasterConfig`` that validates them). The contract tests read both from each
release's sources and check the export against them. Each value is either our choice, with
the reason, or the value NeMo RL's own ``examples/configs/grpo_math_1B.yaml`` of that release
gives the key ("example default"); ``choices.txt`` lists every one the export wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EXAMPLE = "NeMo RL's example default (examples/configs/grpo_math_1B.yaml)"
OFF_FOR_OUR_ADVANTAGES = (
    "off: the advantage hook checks that GRPO trains on exactly the rewards the discover environment returned"
)


@dataclass(frozen=True)
class Same:
    """The value of another key of the exported config."""

    key: str


@dataclass(frozen=True)
class Required:
    key: str
    value: Any
    why: str
    since: tuple[int, int] = (0, 3)
    until: tuple[int, int] | None = None  # the last release that needs it
    lora: bool = False  # only when a LoRA adapter is trained

    def applies(self, version: tuple[int, int], lora: bool) -> bool:
        in_range = self.since <= version and (self.until is None or version <= self.until)
        return in_range and (lora or not self.lora)


REQUIRED: tuple[Required, ...] = (
    # 0.3
    Required("data.dataset_name", "discover", "the driver hands GRPO our PUCT dataset; the name only fills the schema",
             until=(0, 5)),
    Required("policy.generation.model_name", Same("policy.model_name"), "the policy's model"),
    Required("logger.mlflow_enabled", False, "our run directory has the events; turn on in nemo_rl.yaml if wanted"),
    Required("logger.gpu_monitoring", {"collection_interval": 10, "flush_interval": 10}, EXAMPLE),
    # 0.4
    Required("grpo.max_num_epochs", 1, EXAMPLE, since=(0, 4)),
    Required("grpo.batch_multiplier", 1, EXAMPLE, since=(0, 4)),
    Required("grpo.use_dynamic_sampling", False,
             "off: dynamic sampling drops groups whose rewards are equal, and our estimator has its own rule for those",
             since=(0, 4)),
    Required("grpo.overlong_filtering", False,
             "off: a completion cut at max_new_tokens keeps the reward our sandbox gave it", since=(0, 4)),
    Required("grpo.reward_scaling", {"enabled": False}, OFF_FOR_OUR_ADVANTAGES, since=(0, 4)),
    Required("grpo.reward_shaping", {"enabled": False}, OFF_FOR_OUR_ADVANTAGES, since=(0, 4)),
    Required("checkpointing.checkpoint_must_save_by", None, EXAMPLE, since=(0, 4)),
    Required("logger.swanlab_enabled", False, "our run directory has the events; turn on in nemo_rl.yaml if wanted",
             since=(0, 4)),
    Required("loss_fn.truncated_importance_sampling_ratio", None, EXAMPLE, since=(0, 4)),
    Required("policy.dtensor_cfg.context_parallel_size", 1, EXAMPLE, since=(0, 4)),
    # 0.5
    Required("loss_fn.reference_policy_kl_type", "k3", EXAMPLE, since=(0, 5)),
    Required("loss_fn.kl_input_clamp_value", 20.0, EXAMPLE, since=(0, 5)),
    Required("loss_fn.kl_output_clamp_value", 10.0, EXAMPLE, since=(0, 5)),
    Required("policy.dtensor_cfg.lora_cfg.exclude_modules", [], EXAMPLE, since=(0, 5), lora=True),
    Required("policy.dtensor_cfg.lora_cfg.dropout_position", "post", EXAMPLE, since=(0, 5), lora=True),
    Required("policy.dtensor_cfg.lora_cfg.lora_A_init", "xavier", EXAMPLE, since=(0, 5), lora=True),
    # 0.6
    Required("data.train", {"dataset_name": "discover"},
             "the driver hands GRPO our PUCT dataset; the entry only fills the schema", since=(0, 6)),
    Required("data.use_multiple_dataloader", False, EXAMPLE, since=(0, 6)),
    Required("grpo.val_at_end", False, "off: a discover run has no validation set", since=(0, 6)),
    Required("grpo.seq_logprob_error_threshold", None, EXAMPLE, since=(0, 6)),
    # 0.7 and NeMo RL's main branch after it: validation sampling settings (we run no validation)
    Required("policy.generation.val_temperature", Same("policy.generation.temperature"),
             "the training temperature (no validation runs)", since=(0, 7)),
    Required("policy.generation.val_top_p", Same("policy.generation.top_p"),
             "the training top_p (no validation runs)", since=(0, 7)),
    Required("policy.generation.val_top_k", Same("policy.generation.top_k"),
             "the training top_k (no validation runs)", since=(0, 7)),
)  # fmt: skip


def required_for(version: tuple[int, int], *, lora: bool) -> list[Required]:
    return [r for r in REQUIRED if r.applies(version, lora)]
