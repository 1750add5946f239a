"""TriMul, the outgoing triangle multiplicative update of AlphaFold3, and its inputs.

For x [B, N, N, C] and mask [B, N, N], with H = hidden_dim:

    z          = LayerNorm_C(x)                                  (weight, bias)
    left       = (z @ W_left^T)  * mask * sigmoid(z @ W_lgate^T)   [B, N, N, H]
    right      = (z @ W_right^T) * mask * sigmoid(z @ W_rgate^T)   [B, N, N, H]
    out[b,i,j] = sum_k left[b,i,k] * right[b,j,k]                  (per channel d)
    y          = (LayerNorm_H(out) * sigmoid(z @ W_ogate^T)) @ W_out^T   [B, N, N, C]

Projections have no bias; matmuls run in full float32 (TF32 off). This module
needs torch alone: its source is shown in the prompt and is part of the checker
program that runs in the sandbox.
"""

import math

import torch
import torch.nn.functional as F

#: weight names and shapes, as the contract's ``weights`` dict carries them
WEIGHT_SHAPES = {
    "norm.weight": ("C",),
    "norm.bias": ("C",),
    "left_proj.weight": ("H", "C"),
    "right_proj.weight": ("H", "C"),
    "left_gate.weight": ("H", "C"),
    "right_gate.weight": ("H", "C"),
    "out_gate.weight": ("H", "C"),
    "to_out_norm.weight": ("H",),
    "to_out_norm.bias": ("H",),
    "to_out.weight": ("C", "H"),
}


def ref_kernel(data):
    """The reference TriMul: data = (input [B,N,N,C], mask [B,N,N], weights, {"dim": C, "hidden_dim": H})."""
    x, mask, w, config = data
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        z = F.layer_norm(x, (config["dim"],), w["norm.weight"], w["norm.bias"])
        m = mask.unsqueeze(-1)
        left = F.linear(z, w["left_proj.weight"]) * m * torch.sigmoid(F.linear(z, w["left_gate.weight"]))
        right = F.linear(z, w["right_proj.weight"]) * m * torch.sigmoid(F.linear(z, w["right_gate.weight"]))
        out = torch.einsum("...ikd,...jkd->...ijd", left, right)
        out = F.layer_norm(out, (config["hidden_dim"],), w["to_out_norm.weight"], w["to_out_norm.bias"])
        out = out * torch.sigmoid(F.linear(z, w["out_gate.weight"]))
        return F.linear(out, w["to_out.weight"])
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def generate_input(seqlen, bs, dim, hiddendim, seed, nomask, distribution="normal", device="cpu"):
    """Inputs of one case from a generator seeded with ``seed`` on ``device``.

    x ~ N(0, 1), or Cauchy(0, 2) as 2·tan(π(u − ½)); mask all ones or random {0, 1};
    LayerNorm weights and biases ~ N(0, 1); projections ~ N(0, 1)/√H; the output
    projection ~ N(0, 1)/√C. Every tensor comes from the seeded generator, so a
    case is reproducible from its seed alone.
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))

    def randn(*shape):
        return torch.randn(shape, device=device, dtype=torch.float32, generator=gen)

    if distribution == "cauchy":
        u = torch.rand((bs, seqlen, seqlen, dim), device=device, dtype=torch.float32, generator=gen)
        x = 2.0 * torch.tan(math.pi * (u - 0.5))
    else:
        x = randn(bs, seqlen, seqlen, dim)
    if nomask:
        mask = torch.ones((bs, seqlen, seqlen), device=device)
    else:
        mask = torch.randint(0, 2, (bs, seqlen, seqlen), device=device, generator=gen).float()
    sizes = {"C": dim, "H": hiddendim}
    weights = {}
    for name, dims in WEIGHT_SHAPES.items():
        t = randn(*(sizes[d] for d in dims))
        if len(dims) == 2:
            t = t / math.sqrt(hiddendim if name != "to_out.weight" else dim)
        weights[name] = t
    return x, mask, weights, {"dim": dim, "hidden_dim": hiddendim}
