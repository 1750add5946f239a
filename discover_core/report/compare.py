"""``discover compare``: several runs on one page, their curves on shared axes.

Each run is labelled by what its config does differently from the others (``backend.train=False,
run.seed=1``), read from the run directories' saved configs; keys that never change what a
run computes (its output folder, logging, sandbox workers) are left out. Runs that differ only
in their seeds are arms repeated: they share a colour and differ in line style, so an ablation
at several seeds reads as one band of lines per arm. Self-contained like the report (inline
SVG and CSS, no script).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import SAFE_ON_RESUME, _flatten
from .data import RunData, read_run
from .figures import _plt, _steps_axis, _svg
from .html import CSS, _e, _img, num

#: keys whose difference does not tell two arms apart
IGNORED = SAFE_ON_RESUME
#: keys that pick the noise, not the arm
SEED_KEYS = ("run.seed", "backend.seed", "sampler.seed")
COLORS = ["#c0392b", "#2980b9", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#2c3e50", "#f39c12"]
STYLES = ["-", "--", ":", "-."]


def _ignored(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in IGNORED)


def differences(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each config, the dotted keys (and values) on which the configs do not all agree."""
    flat = [_flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f if not _ignored(k)})
    varying = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    # a component seed that follows run.seed in every run says nothing run.seed does not
    varying = [k for k in varying if not (k in SEED_KEYS[1:] and all(f.get(k) == f.get("run.seed") for f in flat))]
    return [{k: f.get(k) for k in varying} for f in flat]


def labels(runs: list[RunData]) -> tuple[list[str], list[str]]:
    """(label, arm) of each run: the label names every differing key, the arm all but the seeds.
    Runs with identical configs are told apart by their folder's name."""
    diffs = differences([r.config for r in runs])
    full = [", ".join(f"{k}={v}" for k, v in d.items()) for d in diffs]
    arms = [", ".join(f"{k}={v}" for k, v in d.items() if k not in SEED_KEYS) or "same config" for d in diffs]
    out = []
    for run, label in zip(runs, full, strict=True):
        duplicate = full.count(label) > 1
        out.append(f"{label} ({run.root.name})" if label and duplicate else (label or run.root.name))
    return out, arms


def curves(runs: list[RunData], names: list[str], arms: list[str], attr: str, ylabel: str) -> str | None:
    """One line per run of ``StepRow.<attr>`` by step; colour per arm, line style per run within it."""
    drawn = [(r, n, a) for r, n, a in zip(runs, names, arms, strict=True) if r.steps]
    if not drawn:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    arm_order = list(dict.fromkeys(arms))
    within: dict[str, int] = {}
    for run, name, arm in drawn:
        k = within[arm] = within.get(arm, -1) + 1
        xs = [s.step for s in run.steps]
        ys = [getattr(s, attr) for s in run.steps]
        color = COLORS[arm_order.index(arm) % len(COLORS)]
        ax.plot(xs, ys, color=color, ls=STYLES[k % len(STYLES)], lw=1.6, marker="o", ms=2.5, label=name)
    ax.set_xlabel("step")
    _steps_axis(ax, [s.step for r, _, _ in drawn for s in r.steps])
    ax.set_ylabel(ylabel)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return _svg(fig)


def _table(runs: list[RunData], names: list[str]) -> str:
    head = "<tr><th class=l>run</th><th class=l>folder</th><th>steps</th><th>best score</th><th>valid rate</th></tr>"
    rows = []
    for i, (run, name) in enumerate(zip(runs, names, strict=True)):
        valid = "–" if run.valid_rate is None else f"{run.valid_rate:.1%}"
        cells = [f'<td class="l wrap">{_e(name)}</td>', f"<td class=l>{_e(run.root)}</td>"]
        cells += [f"<td>{_e(x)}</td>" for x in (len(run.steps), num(run.best_score), valid)]
        rows.append(f'<tr id="run-{i}">{"".join(cells)}</tr>')
    return f'<div class="scroll"><table id="runs">{head}{"".join(rows)}</table></div>'


def render(runs: list[RunData]) -> str:
    names, arms = labels(runs)
    problems = sorted({r.problem for r in runs})
    title = f"discover compare: {', '.join(problems)}, {len(runs)} runs"
    sections = [
        ("runs", "Runs, labelled by what their configs do differently", _table(runs, names)),
        (
            "best-score",
            "Best score so far per step",
            _img(curves(runs, names, arms, "best_score", "best score"), "best"),
        ),
        ("valid-rate", "Valid rate per step", _img(curves(runs, names, arms, "valid_rate", "valid rate"), "valid")),
    ]
    note = ""
    if len(problems) > 1:
        note = '<p class="note">These runs solve different problems: their scores do not share a scale.</p>'
    body = "".join(f'<section id="{sid}"><h2>{_e(t)}</h2>{content}</section>' for sid, t, content in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><h1>{_e(title)}</h1>{note}{body}</body></html>"
    )


def write_compare(run_dirs: list[str | Path], output: str | Path) -> Path:
    """Render the comparison of ``run_dirs`` to ``output``."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render([read_run(d) for d in run_dirs]))
    return out
