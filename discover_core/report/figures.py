"""The report's pictures, drawn with matplotlib (Agg) and returned as SVG text.

Each function takes the tables of ``data.RunData`` and returns one SVG string,
or None when there is nothing to draw yet (a run that has not finished a step).
"""

from __future__ import annotations

import io
from typing import Any

from .data import Node, RunData, StepRow

BEST, STEP, TARGET, SEED = "#c0392b", "#7f8c8d", "#27ae60", "#2c3e50"
KIND_COLORS = ["#2ecc71", "#e67e22", "#9b59b6", "#e74c3c", "#3498db", "#f1c40f", "#1abc9c", "#34495e", "#95a5a6"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _steps_axis(ax, xs: list[int] | None = None) -> None:
    """Steps are whole numbers; a run of a step or two gets one tick per step, not fractions around it."""
    from matplotlib.ticker import MaxNLocator

    if xs and max(xs) - min(xs) < 3:
        ticks = list(range(min(xs), max(xs) + 1))
        ax.set_xticks(ticks)
        ax.set_xlim(ticks[0] - 0.5, ticks[-1] + 0.5)
        return
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def best_score(
    steps: list[StepRow],
    records: dict[str, float],
    target: float | None,
    maximize: bool | None,
    baseline: float | None = None,
) -> str | None:
    """Best score so far (line) and each step's best (dots), with the best seed (where the run started),
    the published records and the target."""
    if not steps:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    xs = [s.step for s in steps]
    ax.plot(xs, [s.best_score for s in steps], color=BEST, lw=2, marker="o", ms=3, label="best so far")
    pts = [(s.step, s.step_best_score) for s in steps if s.step_best_score is not None]
    if pts:
        ax.scatter(*zip(*pts, strict=True), color=STEP, s=12, zorder=3, label="best of the step")
    shades = ["#2c3e50", "#8e44ad", "#d35400", "#16a085", "#7f8c8d"]
    for i, (who, score) in enumerate(sorted(records.items(), key=lambda kv: kv[1])):
        # records often lie within 1e-4 of each other: told apart by colour and the legend, not by labels
        ax.axhline(score, color=shades[i % len(shades)], lw=0.9, ls="--", label=f"{who}: {score:.10g}")
    if target is not None:
        ax.axhline(target, color=TARGET, lw=1.2, label=f"target {target:g}")
    if baseline is not None:
        ax.axhline(baseline, color=SEED, lw=1.2, ls=":", label=f"best seed: {baseline:.6g}")
    ax.set_xlabel("step")
    _steps_axis(ax, xs)
    ax.set_ylabel("score" + ("" if maximize is None else (" (higher is better)" if maximize else " (lower is better)")))
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.ticklabel_format(axis="y", useOffset=False)
    return _svg(fig)


def validity(steps: list[StepRow]) -> str | None:
    """Outcome kinds per step as stacked shares (valid first), the valid rate on top."""
    if not steps:
        return None
    plt = _plt()
    kinds = sorted({k for s in steps for k in s.failures})
    fig, ax = plt.subplots(figsize=(8, 3.2))
    xs = [s.step for s in steps]
    bottom = [0.0] * len(steps)
    for i, kind in enumerate(["valid", *kinds]):
        share = [(s.valid_rate if kind == "valid" else s.failures.get(kind, 0) / max(1, s.rollouts)) for s in steps]
        ax.bar(xs, share, bottom=bottom, color=KIND_COLORS[i % len(KIND_COLORS)], label=kind, width=0.8)
        bottom = [b + v for b, v in zip(bottom, share, strict=True)]
    ax.set_ylim(0, 1)
    ax.set_xlabel("step")
    _steps_axis(ax, xs)
    ax.set_ylabel("share of rollouts")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return _svg(fig)


def distributions(steps: list[StepRow]) -> str | None:
    """Box plots of the rewards and of the advantages of each step's rollouts."""
    if not steps or not any(s.rewards for s in steps):
        return None
    plt = _plt()
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 4.8), sharex=True)
    xs = [s.step for s in steps]
    for ax, attr, label in ((a, "rewards", "reward"), (b, "advantages", "advantage")):
        data = [getattr(s, attr) or [0.0] for s in steps]
        ax.boxplot(data, positions=xs, widths=0.6, showfliers=True, flierprops={"markersize": 2})
        ax.set_ylabel(label)
    b.axhline(0, color="#bbb", lw=0.8)
    b.set_xlabel("step")
    if len(xs) > 20:
        b.set_xticks(xs[:: max(1, len(xs) // 10)])
    return _svg(fig)


def betas(steps: list[StepRow]) -> str | None:
    """β the estimator solved for, one dot per group and step (log scale)."""
    pts = [(s.step, beta) for s in steps for beta in s.betas if beta > 0]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.0))
    ax.scatter(*zip(*pts, strict=True), s=14, color="#2980b9", alpha=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    _steps_axis(ax, [s.step for s in steps])
    ax.set_ylabel("β per group")
    return _svg(fig)


def lineage(run: RunData, chain: list[Node]) -> str | None:
    """Every valid state (grey, by step and score), each improvement on a parent (thin edges),
    and the best state's ancestry through the archive (red)."""
    scored = [n for n in run.nodes.values() if n.score is not None]
    if not scored:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.scatter([n.step for n in scored], [n.score for n in scored], s=6, color="#ccc", zorder=1, label="valid states")
    for n in scored:
        parent = run.nodes.get(n.parent or "")
        if parent is not None and parent.score is not None and n.score != parent.score:
            ax.plot([parent.step, n.step], [parent.score, n.score], color="#3498db", lw=0.5, alpha=0.35, zorder=2)
    path = [n for n in chain if n.score is not None and n.step >= 0]
    if path:
        ax.plot([n.step for n in path], [n.score for n in path], color=BEST, lw=2, marker="o", ms=5, zorder=4)
        ax.plot([], [], color=BEST, lw=2, marker="o", label="lineage of the best")
        for n in path:
            ax.annotate(n.id, (n.step, n.score), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("step the state was made")
    _steps_axis(ax, [n.step for n in scored])
    ax.set_ylabel("score")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.legend(loc="best", fontsize=8, frameon=False)
    return _svg(fig)


def problem_picture(problem: Any, construction: Any, tmp_png: str) -> bytes | None:
    """The problem's own ``plot`` of the best construction, as PNG bytes (None if it has none)."""
    if problem is None or construction is None:
        return None
    try:
        problem.plot(problem.construction_from_record(construction), tmp_png)
    except NotImplementedError:
        return None
    with open(tmp_png, "rb") as f:
        return f.read()
