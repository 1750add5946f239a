"""``discover report``: one self-contained HTML page for a run directory.

Everything is inline (SVG and PNG as data URIs, CSS in a ``<style>``, no script,
no font or CDN), so the file opens offline and can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from . import figures
from .data import RunData, StepRow, read_run

log = logging.getLogger("discover.report")

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1040px;
       padding: 1rem 1.5rem 4rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2.2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.sub { color: #666; margin-top: 0; } .note { color: #666; font-size: .9em; }
figure { margin: .5rem 0; } figure img { max-width: 100%; }
table { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
th, td { padding: .2rem .55rem; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
td.wrap { white-space: normal; min-width: 9rem; } #steps { font-size: 12px; }
#steps th { white-space: normal; } #steps th, #steps td { padding: .2rem .4rem; }
th { background: #f6f6f6; } td.l, th.l { text-align: left; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: .15rem 1rem; }
dl.kv dt { color: #666; } dl.kv dd { margin: 0; font-variant-numeric: tabular-nums; }
.hl { overflow-x: auto; font-size: 12px; padding: .6rem; border-radius: 4px; }
.hl pre { margin: 0; } .scroll { overflow-x: auto; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def num(x: float | None) -> str:
    """How every score appears in the report (tests compare against the events with it)."""
    return "–" if x is None else f"{x:.10g}"


def short(x: float | None) -> str:
    """Rewards, β and changes: four significant digits (a score keeps ten: records differ in the 7th)."""
    return "–" if x is None else f"{x:.4g}"


def _img(svg_or_png: str | bytes | None, alt: str) -> str:
    if svg_or_png is None:
        return f'<p class="note">No data for this picture yet ({_e(alt)}).</p>'
    if isinstance(svg_or_png, bytes):
        uri = "data:image/png;base64," + base64.b64encode(svg_or_png).decode()
    else:
        uri = "data:image/svg+xml;base64," + base64.b64encode(svg_or_png.encode()).decode()
    return f'<figure><img alt="{_e(alt)}" src="{uri}"></figure>'


def _highlight(code: str, language: str) -> tuple[str, str]:
    """(HTML, CSS) of ``code`` highlighted by pygments."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name

    fmt = HtmlFormatter(cssclass="hl", style="friendly")
    return highlight(code, get_lexer_by_name(language), fmt), fmt.get_style_defs(".hl")


def load_problem(config: dict[str, Any], root: Path | None = None) -> tuple[Any, str | None]:
    """The run's problem built from its saved config (for records, target and plot), or why not.

    A ``module:Class`` problem is imported from where the run found it (``root``'s import path).
    """
    from ..components import build
    from ..plugins import get_plugins, use_import_path
    from ..store import RunStore

    if root is not None:
        use_import_path(RunStore(Path(root)).import_path())
    section = dict(config.get("problem") or {})
    name = section.pop("name", None)
    try:
        entry = get_plugins().get("problems", name)
        return build(entry.obj, section), None
    except Exception as e:  # noqa: BLE001 - a report must render even without the plugin
        return None, f"the problem plugin {name!r} could not be loaded here ({type(e).__name__}: {e})"


def _step_table(steps: list[StepRow]) -> str:
    head = (
        "<tr><th>step</th><th>rollouts</th><th>valid</th><th>best so far</th><th>best of step</th>"
        "<th>reward mean</th><th>reward max</th><th>β min</th><th>β max</th><th>groups kept</th>"
        "<th>archive</th><th>seconds</th><th class=l>failures</th></tr>"
    )
    rows = []
    for s in steps:
        fails = ", ".join(f"{k}: {v}" for k, v in sorted(s.failures.items())) or "–"
        cells = [
            s.step,
            s.rollouts,
            f"{s.valid_rate:.1%}",
            num(s.best_score),
            num(s.step_best_score),
            short(s.reward_mean),
            short(s.reward_max),
            short(min(s.betas)) if s.betas else "–",
            short(max(s.betas)) if s.betas else "–",
            f"{s.groups_kept}/{s.groups}",
            s.archive_size,
            f"{s.seconds:.1f}",
        ]
        tds = "".join(f"<td>{_e(c)}</td>" for c in cells) + f'<td class="l wrap">{_e(fails)}</td>'
        rows.append(f'<tr id="step-{s.step}">{tds}</tr>')
    return f'<div class="scroll"><table id="steps">{head}{"".join(rows)}</table></div>'


def _lineage_table(chain) -> str:
    rows, prev = [], None
    for n in chain:
        gain = "–" if prev is None or n.score is None else short(n.score - prev)
        step = "seed" if n.step < 0 else n.step
        cells = f"<td class=l>{_e(n.id)}</td><td>{_e(step)}</td><td>{num(n.score)}</td><td>{gain}</td>"
        rows.append(f'<tr id="lineage-{_e(n.id)}">{cells}</tr>')
        prev = n.score if n.score is not None else prev
    head = "<tr><th class=l>state</th><th>step</th><th>score</th><th>change on parent</th></tr>"
    return f'<table id="lineage-table">{head}{"".join(rows)}</table>'


def render(run: RunData) -> str:
    """The report page of ``run`` as one HTML string."""
    problem, problem_error = load_problem(run.config, run.root)
    records = problem.records() if problem is not None else {}
    target = problem.target() if problem is not None else None
    maximize = getattr(problem, "maximize", None)
    chain = run.lineage()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            picture = figures.problem_picture(problem, run.best_construction, str(Path(tmp) / "best.png"))
        except Exception as e:  # noqa: BLE001 - a plot bug must not cost the rest of the report
            log.warning("the problem's plot failed: %s", e)
            picture = None

    planned = run.planned_steps
    state = "finished" if run.finished else "in progress (or stopped)"
    best = run.best or {}
    verified = best.get("verified") or {}
    summary = [
        ("problem", run.problem),
        ("model", run.model),
        ("steps", f"{len(run.steps)} of {planned if planned is not None else '?'} ({state})"),
        ("best score", num(run.best_score)),
        ("best state", f"{best.get('state_id', '–')} (step {best.get('step', '–')})"),
        ("verified from scratch", f"{verified.get('valid')}, score {num(verified.get('score'))}" if verified else "–"),
        ("valid rate (all rollouts)", "–" if run.valid_rate is None else f"{run.valid_rate:.1%}"),
        ("target", num(target)),
        *[(f"record: {who}", num(score)) for who, score in records.items()],
        ("last update", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.updated))),
    ]
    code_html, code_css = _highlight(run.best_code or "# no best program yet", "python")
    cfg_text = (run.root / "config.yaml").read_text() if (run.root / "config.yaml").exists() else ""
    cfg_html, _ = _highlight(cfg_text, "yaml")
    notes = f'<p class="note">{_e(problem_error)}</p>' if problem_error else ""

    sections = [
        (
            "summary",
            "Summary",
            '<dl class="kv">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in summary) + "</dl>" + notes,
        ),
        (
            "best-score",
            "Best score per step",
            _img(figures.best_score(run.steps, records, target, maximize, run.seed_baseline), "best score per step"),
        ),
        ("validity", "Valid rate and failure kinds per step", _img(figures.validity(run.steps), "outcomes per step")),
        (
            "distributions",
            "Reward and advantage distributions per step",
            _img(figures.distributions(run.steps), "reward and advantage distributions"),
        ),
        ("beta", "β per group", _img(figures.betas(run.steps), "beta per group")),
        (
            "lineage",
            "Lineage of the best state through the archive",
            _img(figures.lineage(run, chain), "lineage") + _lineage_table(chain),
        ),
        (
            "construction",
            "Best construction",
            _img(picture, "the problem's picture of the best construction")
            if picture
            else '<p class="note">No picture: no best construction yet, or the problem has no plot.</p>',
        ),
        ("program", "Best program", code_html),
        ("steps-table", "Steps", _step_table(run.steps)),
        ("config", "Resolved config", cfg_html),
    ]
    body = "".join(f'<section id="{sid}"><h2>{_e(title)}</h2>{content}</section>' for sid, title, content in sections)
    title = f"discover report: {run.problem}, {run.root.name}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,"><title>{_e(title)}</title>'
        f"<style>{CSS}{code_css}</style></head><body><h1>{_e(title)}</h1>"
        f'<p class="sub">{_e(run.root)}</p>{body}</body></html>'
    )


def write_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Render the report of ``run_dir`` to ``output`` (default ``RUN_DIR/report.html``)."""
    run = read_run(run_dir)
    out = Path(output) if output is not None else run.root / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(run))
    return out
