"""A simple hand-written TriMul for the CUDA tier: torch matmuls plus two fused Triton kernels.

Not a fast kernel, a correct one that satisfies the CUDA tier's contract (a ``@triton.jit``
function, ``custom_kernel(data)``), so that ``kernels_gpu.sh`` can check the whole path:

1. LayerNorm over C, then one matmul for the five C -> H projections (torch);
2. ``_gate_kernel``: left/right = projection · mask · sigmoid(gate), written channel-major
   [B, H, N, N] so that the triangle product is one batched matmul (Triton);
3. the triangle product out[b, d] = left[b, d] @ right[b, d]^T (torch.bmm, float32);
4. ``_out_norm_kernel``: LayerNorm over H of each (b, i, j) row, times sigmoid(out gate) (Triton);
5. the output projection H -> C (torch).

Runs on CPU tensors too under ``TRITON_INTERPRET=1`` (Triton's interpreter), which is how it
is tested without a GPU.
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl


@triton.jit
def _gate_kernel(proj_ptr, mask_ptr, left_ptr, right_ptr, nn, H: tl.constexpr, BLOCK: tl.constexpr):
    # one program per (b, block of BLOCK positions of the N x N grid), all H channels
    b = tl.program_id(0)
    pos = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ch = tl.arange(0, H)
    ok = pos < nn
    rows = (b * nn + pos)[:, None] * (5 * H) + ch[None, :]
    m = tl.load(mask_ptr + b * nn + pos, mask=ok, other=0.0)[:, None]
    lp = tl.load(proj_ptr + rows, mask=ok[:, None], other=0.0)
    rp = tl.load(proj_ptr + rows + H, mask=ok[:, None], other=0.0)
    lg = tl.load(proj_ptr + rows + 2 * H, mask=ok[:, None], other=0.0)
    rg = tl.load(proj_ptr + rows + 3 * H, mask=ok[:, None], other=0.0)
    left = lp * m * tl.sigmoid(lg)
    right = rp * m * tl.sigmoid(rg)
    dst = (b * H + ch[None, :]) * nn + pos[:, None]  # channel-major [B, H, N, N]
    tl.store(left_ptr + dst, left, mask=ok[:, None])
    tl.store(right_ptr + dst, right, mask=ok[:, None])


@triton.jit
def _out_norm_kernel(prod_ptr, proj_ptr, w_ptr, b_ptr, out_ptr, nn, H: tl.constexpr, BLOCK: tl.constexpr):
    # one program per (b, block of positions); prod is channel-major [B, H, N, N]
    b = tl.program_id(0)
    pos = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ch = tl.arange(0, H)
    ok = pos < nn
    x = tl.load(prod_ptr + (b * H + ch[None, :]) * nn + pos[:, None], mask=ok[:, None], other=0.0)
    mean = tl.sum(x, axis=1) / H
    xc = x - mean[:, None]
    var = tl.sum(xc * xc, axis=1) / H
    y = xc / tl.sqrt(var + 1e-5)[:, None] * tl.load(w_ptr + ch)[None, :] + tl.load(b_ptr + ch)[None, :]
    gate = tl.load(proj_ptr + (b * nn + pos)[:, None] * (5 * H) + 4 * H + ch[None, :], mask=ok[:, None], other=0.0)
    tl.store(out_ptr + (b * nn + pos)[:, None] * H + ch[None, :], y * tl.sigmoid(gate), mask=ok[:, None])


def custom_kernel(data):
    x, mask, w, config = data
    c, h = config["dim"], config["hidden_dim"]
    bs, n = x.shape[0], x.shape[1]
    nn, block = n * n, 32
    z = F.layer_norm(x, (c,), w["norm.weight"], w["norm.bias"])
    names = ("left_proj", "right_proj", "left_gate", "right_gate", "out_gate")
    proj = (z.reshape(-1, c) @ torch.cat([w[f"{k}.weight"] for k in names]).t()).contiguous()  # [B*N*N, 5H]
    left = torch.empty((bs, h, n, n), device=x.device, dtype=torch.float32)
    right = torch.empty_like(left)
    grid = (bs, triton.cdiv(nn, block))
    _gate_kernel[grid](proj, mask.contiguous(), left, right, nn, H=h, BLOCK=block)
    prod = torch.bmm(left.view(bs * h, n, n), right.view(bs * h, n, n).transpose(1, 2))  # [B*H, N, N]
    gated = torch.empty((bs, n, n, h), device=x.device, dtype=torch.float32)
    _out_norm_kernel[grid](prod, proj, w["to_out_norm.weight"], w["to_out_norm.bias"], gated, nn, H=h, BLOCK=block)
    return gated @ w["to_out.weight"].t()
