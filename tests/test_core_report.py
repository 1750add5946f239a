"""``discover report`` and ``discover runs`` on replay runs: sections, numbers equal to the events, offline."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from discover_ttt.cli import cli
from discover_ttt.loop import run_config
from discover_ttt.progress import Reporter
from discover_ttt.report import read_run, render, run_rows
from discover_ttt.report.html import num, short

TOY = Path(__file__).parent / "toy"
SECTIONS = [
    "summary",
    "best-score",
    "validity",
    "distributions",
    "beta",
    "lineage",
    "construction",
    "program",
    "steps-table",
    "config",
]


class Page(HTMLParser):
    """Section ids, image sources, external references and the cells of each table row by id."""

    def __init__(self) -> None:
        super().__init__()
        self.ids, self.srcs, self.hrefs, self.scripts = [], [], [], 0
        self.rows: dict[str, list[str]] = {}
        self._row: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if "src" in a:
            self.srcs.append(a["src"])
        if "href" in a:
            self.hrefs.append(a["href"])
        if tag == "script":
            self.scripts += 1
        if tag == "tr":
            self._row = a.get("id")
            if self._row:
                self.rows[self._row] = []
        if tag == "td" and self._row:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[self._row].append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def events(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "run"
    sets = [f"run.output={out}", "sandbox.isolation=none"]
    return run_config(TOY / "config.yaml", sets, reporter=Reporter()).run_dir


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    return p


def test_report_has_every_section_and_the_numbers_of_the_events(toy_run):
    page = render(read_run(toy_run))
    p = parse(page)
    assert [i for i in p.ids if i in SECTIONS] == SECTIONS
    steps = [e for e in events(toy_run) if e["type"] == "step"]
    rolls = [e for e in events(toy_run) if e["type"] == "rollout"]
    assert len(steps) == 3
    for s in steps:
        cells = p.rows[f"step-{s['step']}"]
        assert cells[0] == str(s["step"]) and cells[1] == str(s["rollouts"])
        assert cells[2] == f"{s['valid_rate']:.1%}"
        assert cells[3] == num(s["best_score"]) and cells[4] == num(s["step_best_score"])
        assert cells[5] == short(s["reward_mean"]) and cells[6] == short(s["reward_max"])
        betas = [g["beta"] for g in s["group_stats"] if "beta" in g and not g["constant"]]
        assert cells[7] == (short(min(betas)) if betas else "–") and cells[8] == (short(max(betas)) if betas else "–")
        assert cells[9] == f"{len(s['groups_kept'])}/{s['groups']}" and cells[10] == str(s["archive_size"])
        for kind, n in s["failures"].items():
            assert f"{kind}: {n}" in cells[12]
    # the summary: best score and the valid rate over all rollouts
    best = json.loads((toy_run / "best" / "score.json").read_text())
    valid = sum(e["outcome"] == "valid" for e in rolls) / len(rolls)
    assert f"<dd>{num(best['score'])}</dd>" in page and f"<dd>{valid:.1%}</dd>" in page
    assert "3 of 3 (finished)" in page
    # lineage: the best state's ancestry ends in it, each link is a parent in the events
    chain = read_run(toy_run).lineage()
    assert chain[-1].id == best["state_id"] and chain[0].id.startswith("seed")
    parents = {e["child_id"]: e["parent_id"] for e in rolls if e["child_id"]}
    assert all(parents[b.id] == a.id for a, b in zip(chain, chain[1:], strict=False))
    assert best["state_id"] in page
    # the best program, highlighted, and the resolved config
    assert 'class="hl"' in page and "def" in page and "entropic_adaptive" in page
    # pictures are inline; nothing is fetched
    assert len([s for s in p.srcs if s.startswith("data:image/svg+xml;base64,")]) >= 5
    assert all(s.startswith("data:") for s in p.srcs + p.hrefs) and p.scripts == 0


def test_report_of_a_run_in_progress(toy_run, tmp_path):
    """A copy of the run cut after step 1 (a step's lines are written when it ends) reads as 2 of 3."""
    run = tmp_path / "partial"
    run.mkdir()
    for name in ("config.yaml",):
        (run / name).write_text((toy_run / name).read_text())
    lines = (toy_run / "events.jsonl").read_text().splitlines()
    keep = [line for line in lines if json.loads(line)["step"] <= 1]
    (run / "events.jsonl").write_text("\n".join(keep) + '\n{"type": "rollout", "st')  # a torn last line
    page = render(read_run(run))
    assert "2 of 3 (in progress (or stopped))" in page and "step-1" in page and "step-2" not in page
    assert "No picture" in page  # no best/ yet


def test_cli_report_and_runs(toy_run, tmp_path):
    out = tmp_path / "r.html"
    res = CliRunner().invoke(cli, ["report", str(toy_run), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("<!DOCTYPE html>")
    res = CliRunner().invoke(cli, ["runs", str(toy_run.parent), "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.output)
    steps = [e for e in events(toy_run) if e["type"] == "step"]
    assert row["problem"] == "toy_problem:ToyProblem" and row["steps_done"] == row["steps_planned"] == 3
    assert row["best_score"] == steps[-1]["best_score"] and row["model"].startswith("replay")
    res = CliRunner().invoke(cli, ["runs", str(toy_run.parent)])
    assert res.exit_code == 0 and "3/3" in res.output and num(steps[-1]["best_score"]) in res.output


def test_runs_lists_each_run_under_a_folder(toy_run, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.yaml").write_text((toy_run / "config.yaml").read_text())
    (tmp_path / "a" / "events.jsonl").write_text("")
    rows = run_rows(tmp_path)
    assert [r["run"] for r in rows] == ["a"] and rows[0]["steps_done"] == 0 and rows[0]["best_score"] is None


@pytest.mark.slow  # the erdos_run fixture: a two-step Erdős run
def test_erdos_report_draws_records_target_and_the_construction(erdos_run):
    page = render(read_run(erdos_run))
    assert "record: TTT-Discover (2026)" in page and num(0.3808753232) in page
    assert "<dt>target</dt><dd>0.3808</dd>" in page
    section = re.search(r'<section id="construction">(.*?)</section>', page, re.S).group(1)
    assert "data:image/png;base64," in section
    chart = re.search(r'<section id="best-score">.*?src="data:image/svg\+xml;base64,([^"]+)"', page, re.S).group(1)
    svg = base64.b64decode(chart).decode()
    assert "lower is better" in svg and "TTT-Discover (2026)" in svg and "target 0.3808" in svg


# -- where the run started: the seeds ---------------------------------------------------------
def _seeds(run_dir):
    ckpt = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    states = json.loads((ckpt / "sampler.json").read_text())["states"]
    return {s["id"]: s for s in states if not s["parents"]}


def _svg_text(page, section):
    src = re.search(rf'<section id="{section}">.*?src="data:image/svg\+xml;base64,([^"]+)"', page, re.S).group(1)
    return base64.b64decode(src).decode()


def test_the_lineage_shows_the_seed_score_and_the_first_change(toy_run):
    run = read_run(toy_run)
    seeds = _seeds(toy_run)
    chain = run.lineage()
    seed, first = chain[0], chain[1]
    assert seed.id in seeds and seed.score == seeds[seed.id]["score"]
    cells = parse(render(run)).rows[f"lineage-{seed.id}"]
    assert cells == [seed.id, "seed", num(seeds[seed.id]["score"]), "–"]
    assert parse(render(run)).rows[f"lineage-{first.id}"][3] == short(first.score - seed.score)


def test_the_best_score_curve_has_the_best_seed_as_its_baseline(toy_run):
    seeds = _seeds(toy_run)
    best_seed = max(seeds.values(), key=lambda s: s["value"])
    run = read_run(toy_run)
    assert run.seed_baseline == best_seed["score"]
    assert f"best seed: {best_seed['score']:.6g}" in _svg_text(render(run), "best-score")


def test_a_one_step_run_gets_whole_step_ticks():
    from discover_ttt.report.figures import _plt, _steps_axis

    fig, ax = _plt().subplots()
    ax.plot([0], [1.0])
    _steps_axis(ax, [0])
    assert list(ax.get_xticks()) == [0] and ax.get_xlim() == (-0.5, 0.5)
    _plt().close(fig)


def test_a_constant_group_beta_of_an_older_run_is_not_shown(toy_run, tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.yaml").write_text((toy_run / "config.yaml").read_text())
    lines = []
    for line in (toy_run / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["type"] == "step":
            for g in e["group_stats"]:
                g["constant"], g["beta"] = True, 2.0**20  # as older runs wrote a constant group
        lines.append(json.dumps(e))
    (run / "events.jsonl").write_text("\n".join(lines) + "\n")
    assert all(s.betas == [] for s in read_run(run).steps)
