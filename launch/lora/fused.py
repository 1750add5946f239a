"""The adapter's product added inside one matrix product.

peft computes a LoRA linear layer as ``y = base(x) + B(A(x)) · s``: after the base product it
writes B(A x) to a temporary, scales it in a second pass and adds it in a third. On the CPU
those passes over the (tokens × out) output cost about a seventh of a training step (the
MLP's 1,536-wide outputs above all). Here the same sum is one ``addmm``:

    y = base(x).addmm_(x Aᵀ, Bᵀ, alpha=s) = base(x) + s · (x Aᵀ) Bᵀ

the matrix product accumulating onto base(x) in place (autograd allows it: a linear layer's
backward needs its input and weight, not its output). Same function, rounding aside (the
products are summed in another order, ~1e-7 relative); same gradients, by autograd.

Only the plain case is taken over — one active adapter, no dropout, no DoRA or other variant,
no adapter bias, not merged, adapters enabled, no extra arguments; anything else runs peft's
own forward, so ``disable_adapter()`` (the base model) and merging behave as peft defines.
"""

from __future__ import annotations

import types

import torch
from torch import nn


def fuse_lora_forwards(model) -> int:
    """Give each plain peft LoRA linear layer of ``model`` the one-product forward; returns how many."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if type(module) is LoraLinear:
            module.forward = types.MethodType(_forward, module)
            count += 1
    return count


def _plain_adapter(layer, x: torch.Tensor) -> str | None:
    """The one active adapter when ``layer`` is in the plain case for input ``x``, else None."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}):
        return None
    a, b = layer.lora_A[name], layer.lora_B[name]
    if not isinstance(layer.lora_dropout[name], nn.Identity) or a.bias is not None or b.bias is not None:
        return None
    if x.dtype != a.weight.dtype:
        return None
    return name


def _forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    from peft.tuners.lora.layer import Linear as LoraLinear

    name = None if (args or kwargs) else _plain_adapter(self, x)
    if name is None:
        return LoraLinear.forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    a_w, b_w = self.lora_A[name].weight, self.lora_B[name].weight
    xa = torch.matmul(x, a_w.T).reshape(-1, a_w.shape[0])
    if result.is_contiguous():
        # in place: the base product's output is not kept for its backward, and accumulating into
        # it spares even the copy an out-of-place addmm makes of it
        result.view(-1, result.shape[-1]).addmm_(xa, b_w.T, alpha=self.scaling[name])
        return result
    return torch.addmm(result.reshape(-1, result.shape[-1]), xa, b_w.T, alpha=self.scaling[name]).view(result.shape)
