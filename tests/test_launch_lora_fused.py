"""The one-product LoRA forward (launch/lora/fused.py) is peft's forward: outputs and gradients."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from discover_ttt.launch.lora.fused import fuse_lora_forwards  # noqa: E402
from discover_ttt.launch.lora.params import TrainerParams  # noqa: E402
from discover_ttt.launch.lora.trainer import Trainer  # noqa: E402


def trainer() -> Trainer:
    t = Trainer(TrainerParams(model="tiny-random", lora_rank=4))
    with torch.no_grad():  # a non-zero adapter, so that its product matters
        for name, p in t.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.05)
    return t


def loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids).logits
    loss = logits.float().logsumexp(-1).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


def test_same_outputs_and_gradients_as_peft():
    t = trainer()
    ids = torch.randint(3, t.model.config.vocab_size, (2, 17))
    fused_logits, fused_grads = loss_and_grads(t.model, ids)
    from peft.tuners.lora.layer import Linear as LoraLinear

    layers = [m for m in t.model.modules() if type(m) is LoraLinear]
    assert layers and all("forward" in vars(m) for m in layers)  # the trainer fused every layer
    for m in layers:
        del m.forward  # back to peft's own
    peft_logits, peft_grads = loss_and_grads(t.model, ids)
    torch.testing.assert_close(fused_logits, peft_logits, rtol=1e-5, atol=1e-5)
    assert fused_grads.keys() == peft_grads.keys() and any("lora_A" in n for n in fused_grads)
    for name in fused_grads:
        torch.testing.assert_close(fused_grads[name], peft_grads[name], rtol=1e-4, atol=1e-6)
    assert fuse_lora_forwards(t.model) == len(layers)


def test_disabled_adapter_is_the_base_model():
    t = trainer()
    ids = torch.randint(3, t.model.config.vocab_size, (1, 9))
    with torch.no_grad():
        adapted = t.model(input_ids=ids).logits
        with t.model.disable_adapter():
            base = t.model(input_ids=ids).logits
        with t.model.disable_adapter():
            for m in t.model.modules():
                m.__dict__.pop("forward", None)
            peft_base = t.model(input_ids=ids).logits
    assert not torch.allclose(adapted, base)
    torch.testing.assert_close(base, peft_base, rtol=0, atol=0)
