"""``discover runs``: one row per run directory under a folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..store import RunDirError
from .data import find_runs, read_run

COLUMNS = ("run", "problem", "model", "steps", "best", "valid", "updated")


def run_rows(root: str | Path) -> list[dict[str, Any]]:
    """Problem, model, steps done / planned, best score, valid rate and last update of each run under ``root``."""
    rows: list[dict[str, Any]] = []
    for path in find_runs(root):
        try:
            run = read_run(path)
        except RunDirError as e:
            rows.append({"run": str(path), "problem": "?", "error": str(e)})
            continue
        rows.append(
            {
                "run": str(path.relative_to(root)) if path != Path(root) else path.name,
                "problem": run.problem,
                "model": run.model,
                "steps_done": len(run.steps),
                "steps_planned": run.planned_steps,
                "best_score": run.best_score,
                "valid_rate": run.valid_rate,
                "updated": run.updated,
            }
        )
    return rows


def cells(row: dict[str, Any]) -> list[str]:
    """A row as the table's text cells, in ``COLUMNS`` order."""
    if "error" in row:
        return [row["run"], "?", row["error"], "", "", "", ""]
    planned = "?" if row["steps_planned"] is None else row["steps_planned"]
    return [
        row["run"],
        row["problem"],
        row["model"],
        f"{row['steps_done']}/{planned}",
        "–" if row["best_score"] is None else f"{row['best_score']:.10g}",
        "–" if row["valid_rate"] is None else f"{row['valid_rate']:.1%}",
        time.strftime("%Y-%m-%d %H:%M", time.localtime(row["updated"])),
    ]
