"""A tiny random Llama and a character-level chat tokenizer, built in memory in well under
a second, for tests and smoke runs that must not load real weights (``model: tiny-random``).

The tokenizer has one token per printable ASCII character plus the ChatML specials
(``<|im_start|>``, ``<|im_end|>``), so any prompt text round-trips.

The model can learn a preference. Its logits are W·h, with h the final-norm output
(‖h‖ = √hidden = 8, the norm's weight frozen at 1) and W the output head, which the LoRA
adapter (attention and MLP) cannot change: an adapter can only turn h. With the head tied
to the embeddings (rows of norm ≈ 0.16, Llama's init std 0.02) every logit stays within
≈ ±1.3, and no direction of h gives the ten vowels ``aeiouAEIOU`` more than 0.14 of the
next-token probability (uniform: 0.10) — a learned preference had nothing to be expressed
with. The head is therefore untied and drawn with std ``HEAD_STD`` = 0.1 (rows of norm ≈ 0.8):
the best direction of h now gives the vowels 0.94, while the frozen model stays close to
uniform (next-token entropy 4.28 nats of 4.62, vowel probability 0.105). Measured by
``preference_ceiling`` (gradient ascent on the direction of h from 64 starts);
tests/test_launch_lora_tiny.py keeps it above 0.8.
"""

from __future__ import annotations

TINY_MODEL = "tiny-random"
SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n", "\t"]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + chars)}
    vocab["<unk>"] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


#: std of the untied output head (Llama's init uses 0.02): wide enough logits to learn with
HEAD_STD = 0.1


def tiny_model(vocab_size: int, seed: int = 0, hidden: int = 64, layers: int = 2, head_std: float = HEAD_STD):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, head_std)
    return model.eval()


def tiny_model_and_tokenizer(seed: int = 0):
    tok = tiny_tokenizer()
    return tiny_model(len(tok), seed), tok


def preference_ceiling(model, token_ids: list[int], starts: int = 64, iters: int = 300, seed: int = 0) -> float:
    """The largest next-token probability the tokens ``token_ids`` can get together from any
    final-norm output h (‖h‖ = √hidden, the norm's weight applied): what an adapter that only
    turns h can reach at best. Gradient ascent on the direction of h from ``starts`` random starts."""
    import torch

    head = model.get_output_embeddings().weight.detach().float()
    norm_weight = model.get_decoder().norm.weight.detach().float()
    hidden = head.shape[1]
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(starts, hidden, generator=gen).requires_grad_(True)
    opt = torch.optim.Adam([u], lr=0.05)
    for _ in range(iters):
        h = u / u.norm(dim=1, keepdim=True) * hidden**0.5 * norm_weight
        mass = torch.softmax(h @ head.T, dim=-1)[:, token_ids].sum(-1)
        opt.zero_grad()
        (-mass.sum()).backward()
        opt.step()
    return float(mass.detach().max())
