"""Does test-time training find better constructions than sampling the same model without it?

Runs arms of the paper's ablation (its Table 8) on one problem, at several seeds, through the
public run API (``discover_ttt.loop.run_config``), each arm one config switch away from the
full method (docs/configuration.md, "Ablations"): ``ttt`` (test-time training, adaptive
entropic, PUCT reuse), ``frozen`` (the same without the update), ``best_of_n`` (no reuse, no
training), and with ``--arms all`` also ``constant_beta``, ``expected_reward``,
``eps_greedy``, ``no_reuse`` and ``naive_rl``. Arms at the same seed share their random
numbers (common random numbers), so their first steps sample the same rollouts.

Writes ``learning.json`` (per arm and seed: the best score so far and the valid rate of every
step, the run folder and its wall time) and ``learning.png`` (per arm, the median across seeds
with a band from the lowest to the highest seed), under ``--out``.

The problem: Erdős minimum overlap with its starter program (``problems/erdos/config.yaml``,
the CPU default run). SmolLM2-135M-Instruct rarely writes the problem's contract from the
statement alone, but with a working program to edit it returns valid, scoreable programs, so
the score curves carry signal; each program runs in seconds, and the score (C5, lower is
better) is continuous, so an improvement of any size shows.

    # smoke run (seconds of sampling): proves the script, the JSON and the PNG
    .venv/bin/python benchmarks/learning.py --seeds 0 --steps 1 --groups 1 --rollouts 2 --max-new-tokens 32
    # the 2-core machine's default (3 arms x 3 seeds x 4 steps of 2 x 4 rollouts)
    .venv/bin/python benchmarks/learning.py
    # the ablation table at small scale on one GPU (docs/results.md)
    .venv/bin/python benchmarks/learning.py --arms all --seeds 0,1,2 --steps 20 --groups 8 --rollouts 16 \\
        --model Qwen/Qwen2.5-Coder-1.5B-Instruct --device cuda --max-new-tokens 1024 --temperature 1.0 \\
        --set backend.name=vllm --set backend.lora_rank=32 --set problem.budget_s=60 --out runs/ablations
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: arm -> the config lines that select it (docs/configuration.md, "Ablations")
ARMS = {
    "ttt": [],
    "frozen": ["backend.train=false"],
    "best_of_n": ["sampler={name: no_reuse}", "backend.train=false"],
    "constant_beta": ["estimator={name: entropic, beta: 2.0}"],
    "expected_reward": ["estimator={name: mean_baseline}"],
    "eps_greedy": ["sampler={name: greedy, epsilon: 0.1}"],
    "no_reuse": ["sampler={name: no_reuse}"],
    "naive_rl": ["sampler={name: no_reuse}", "estimator={name: mean_baseline}"],
}
DEFAULT_ARMS = ("ttt", "frozen", "best_of_n")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "problems" / "erdos" / "config.yaml"))
    ap.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma list of {', '.join(ARMS)}, or all")
    ap.add_argument("--seeds", default="0,1,2", help="comma list of run seeds")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--rollouts", type=int, default=4)
    ap.add_argument("--model", default=None, help="backend.model (default: the config's)")
    ap.add_argument("--device", default=None, help="backend.device (default: the config's)")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--temperature", type=float, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more config overrides")
    ap.add_argument("--out", default=str(ROOT / "runs" / "learning"))
    return ap.parse_args(argv)


def shared_overrides(args: argparse.Namespace) -> list[str]:
    out = [f"run.steps={args.steps}", f"run.groups={args.groups}", f"run.rollouts={args.rollouts}"]
    out.append("log.progress=plain")
    for key, value in (
        ("model", args.model),
        ("device", args.device),
        ("max_new_tokens", args.max_new_tokens),
        ("temperature", args.temperature),
    ):
        if value is not None:
            out.append(f"backend.{key}={value}")
    return out + list(args.set)


def run_arm(config: str, overrides: list[str], output: Path) -> dict:
    from discover_ttt.loop import run_config

    start = time.perf_counter()
    summary = run_config(config, [*overrides, f"run.output={output}"])
    steps = [m for m in summary.metrics if m.get("type") == "step"]
    return {
        "best_score": [m["best_score"] for m in steps],
        "valid_rate": [m["valid_rate"] for m in steps],
        "distinct_completions": [m.get("distinct_completions") for m in steps],
        "run_dir": str(summary.run_dir),
        "seconds": time.perf_counter() - start,
    }


def band(series: list[list[float | None]]):
    """(steps, median, low, high) across seeds; steps where no seed has a value are left out."""
    import numpy as np

    length = max(len(s) for s in series)
    xs, med, lo, hi = [], [], [], []
    for t in range(length):
        vals = [s[t] for s in series if t < len(s) and s[t] is not None]
        if vals:
            xs.append(t)
            med.append(float(np.median(vals)))
            lo.append(min(vals))
            hi.append(max(vals))
    return xs, med, lo, hi


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, (arm, runs) in enumerate(result["arms"].items()):
        color = f"C{k}"
        for ax, key in zip(axes, ("best_score", "valid_rate"), strict=True):
            xs, med, lo, hi = band([r[key] for r in runs.values()])
            if not xs:
                continue
            ax.plot(xs, med, color=color, marker="o", ms=3, label=f"{arm} (median of {len(runs)})")
            ax.fill_between(xs, lo, hi, color=color, alpha=0.2, lw=0)
    maximize = result.get("maximize")
    direction = "" if maximize is None else (" (higher is better)" if maximize else " (lower is better)")
    axes[0].set_ylabel(f"best score so far{direction}")
    axes[1].set_ylabel("valid rate")
    axes[1].set_ylim(-0.02, 1.02)
    for ax in axes:
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, frameon=False)
    s = result["shape"]
    fig.suptitle(
        f"{result['problem']}, {s['model']}: {s['groups']} groups x {s['rollouts']} rollouts, "
        f"{s['steps']} steps; band = lowest to highest of {len(s['seeds'])} seeds",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    from discover_ttt.config import load_config

    args = parse_args(argv)
    arms = list(ARMS) if args.arms == "all" else [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)} or all")
    seeds = [int(s) for s in args.seeds.split(",")]
    shared = shared_overrides(args)
    loaded = load_config(args.config, shared)  # a bad override fails here, before any model loads
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problem = loaded.config.problem.name
    from discover_ttt.plugins import get_plugins

    maximize = getattr(get_plugins().get("problems", problem).obj, "maximize", None)
    result = {
        "problem": problem,
        "maximize": maximize,
        "config": str(args.config),
        "shape": {
            "model": loaded.params["backend"].model_dump().get("model"),
            "device": loaded.params["backend"].model_dump().get("device"),
            "groups": args.groups,
            "rollouts": args.rollouts,
            "steps": args.steps,
            "seeds": seeds,
            "overrides": shared,
        },
        "arms": {arm: {} for arm in arms},
    }
    start = time.perf_counter()
    for seed in seeds:
        for arm in arms:
            overrides = [*shared, *ARMS[arm], f"run.seed={seed}"]
            run = run_arm(args.config, overrides, out / f"{arm}-seed{seed}")
            result["arms"][arm][str(seed)] = run
            print(f"{arm} seed {seed}: best {run['best_score']}, valid {run['valid_rate']}, {run['seconds']:.0f} s")
            (out / "learning.json").write_text(json.dumps(result, indent=1))  # kept as it grows
    result["seconds"] = time.perf_counter() - start
    (out / "learning.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "learning.png")
    print(f"wrote {out / 'learning.json'} and {out / 'learning.png'} in {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
