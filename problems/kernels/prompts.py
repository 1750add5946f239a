"""Prompt text for the TriMul kernel problem.

The statement names the tier's device, its shapes and its rules; the state
context (last code, runtime before -> after, target, program output) is added
per rollout by ``TriMulProblem.prompt``.
"""

STATEMENT = """\
You are an expert in writing high-performance {device_name} kernels for deep learning. Your task is to make the \
TriMul operator as fast as possible.

## The operator
TriMul is the outgoing triangle multiplicative update of AlphaFold3 (also in Chai and Protenix). For an input \
x of shape [B, N, N, C] and a mask of shape [B, N, N] it applies a LayerNorm over C; two projections C -> H \
(left, right; no bias), each multiplied by the mask and by a sigmoid gate (another projection C -> H); an \
output gate sigmoid(projection C -> H of the normalised x); the triangle product \
out[b, i, j, d] = sum over k of left[b, i, k, d] * right[b, j, k, d]; a LayerNorm over H; the output gate; \
and a final projection H -> C. The reference implementation, in PyTorch:

```python
{reference}
```

## Your program
Define a top-level function

    def custom_kernel(data):
        input, mask, weights, config = data
        ...
        return output

- `input`: float32 tensor [B, N, N, C]; `mask`: float32 tensor [B, N, N] of 0s and 1s; `weights`: a dict \
of float32 tensors with the keys and shapes of `WEIGHT_SHAPES` above; `config`: {{"dim": C, "hidden_dim": H}}. \
All tensors are on the {device} device.
- Return a float32 tensor [B, N, N, C]. It must match the reference within |out - ref| <= 0.02 + 0.02 * |ref| \
elementwise, with NaN and +-inf exactly where the reference has them, on every test case; otherwise the \
attempt gets no reward. Lower precision inside the kernel (bf16/fp16 matmuls) is allowed as long as the \
output passes this check.
- {tier_rules}
- Shapes checked: {shapes}. H = {hidden}; masks are all ones or random 0/1; inputs are normal or \
Cauchy-distributed.
- Every call gets fresh random inputs and every output is checked: caching outputs between calls does not \
work. Do not touch the timers (`time`, `torch.cuda.Event`, `torch.cuda.synchronize`): a program that \
replaces them is rejected.
- Do not read or write files other than temporary ones, and do not use the network.

Your score is the geometric mean over the benchmark shapes of the mean time of one `custom_kernel` call, \
in microseconds; lower is better. The reward is {scale:g} / runtime.
"""

CPU_RULES = (
    "This tier runs on one CPU core with PyTorch {torch_version}: use torch (and numpy); "
    "there is no GPU and no Triton. Time is wall-clock time of the call."
)
CUDA_RULES = (
    "This tier runs on one NVIDIA GPU: write at least part of the computation as a Triton kernel "
    "(`import triton`, `import triton.language as tl`, a function decorated with `@triton.jit`); torch may "
    "do the rest. Time is measured with CUDA events around the call."
)

LAST_CODE = "Here is the last program that was run:\n```python\n{code}\n```"
BEFORE_AFTER = "Runtime before and after the program above (µs, lower is better): {before} -> {after}"
CURRENT = "Current runtime: {after} µs"
TARGET = "Target: {target} µs. Current gap: {gap} µs. Further improvements will also be generously rewarded."
OUTPUT = "Output of that program (last 500 characters):\n```\n{stdout}\n```"
DIFFERENT = (
    "Try a genuinely different idea rather than small edits of the program above: only a meaningful "
    "speed-up is rewarded."
)
NO_CODE = "No previous program is available: write one from scratch."
ANSWER = "Answer with one ```python code block that holds the complete program, imports included."
