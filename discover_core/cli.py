"""The ``discover`` command line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from .config import ConfigError
from .errors import UserError
from .plugins import KINDS, PluginError, get_plugins
from .records import read_construction


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


class DiscoverGroup(click.Group):
    """Turns the errors a user can fix into one paragraph on stderr, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as e:
            _fail(str(e), getattr(e, "exit_code", 2))
        except KeyboardInterrupt:
            _fail("interrupted; the run directory keeps every completed step (continue with --resume).", 130)


@click.group(cls=DiscoverGroup)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="discover-ttt")
def cli(verbose: bool) -> None:
    """Test-time discovery: a model writes programs, a verifier scores them, the model learns from them."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


_SET = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable)."
)


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@_SET
@click.option("--resume", is_flag=True, help="Continue the run directory's last complete step, if there is one.")
def run(config: str, overrides: tuple[str, ...], resume: bool) -> None:
    """Run discovery with CONFIG (a YAML file)."""
    from .loop import run_config

    run_config(config, list(overrides), resume=resume)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@_SET
def resume(run_dir: str, overrides: tuple[str, ...]) -> None:
    """Continue the run in RUN_DIR from its last complete step."""
    from .loop import resume_run

    resume_run(run_dir, list(overrides))


def _problem(name: str, params: tuple[str, ...], file: str, command: str):
    from .problem_args import build_problem

    return build_problem(name, params, file, command)


_PARAM = click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="A problem parameter.")


@cli.command()
@click.argument("problem")
@click.argument("file", type=click.Path(dir_okay=False))
@_PARAM
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(problem: str, file: str, params: tuple[str, ...], as_json: bool) -> None:
    """Recompute the score of the construction in FILE from scratch.

    FILE is a record (a JSON object with a "construction" key), a run's
    best/construction.json, or a bare JSON list of numbers. Exits 1 if invalid.
    A file inside a run directory is checked with that run's problem parameters
    (its config.yaml); -p overrides them.
    """
    prob = _problem(problem, params, file, "verify")
    try:
        construction = read_construction(prob, file)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"{file} does not hold a {problem} construction: {e}") from None
    too_large = getattr(prob, "size_limit", lambda c: None)(construction)
    if too_large:
        click.echo(f"Warning: {file} is larger than a run takes ({too_large}); verified anyway.", err=True)
    v = _hook(problem, "verify", prob.verify, construction)
    if as_json:
        click.echo(
            json.dumps(
                {"problem": problem, "valid": v.valid, "score": v.score, "reason": v.reason, "metrics": v.metrics}
            )
        )
    else:
        status = "valid" if v.valid else f"INVALID: {v.reason}"
        click.echo(f"{problem}: {status}; score {v.score!r}")
        for k, val in v.metrics.items():
            click.echo(f"  {k}: {val}")
    sys.exit(0 if v.valid else 1)


@cli.command()
@click.argument("problem")
@click.argument("file", type=click.Path(dir_okay=False))
@_PARAM
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="PNG to write (default: FILE with .png).")
def plot(problem: str, file: str, params: tuple[str, ...], output: str | None) -> None:
    """Draw the construction in FILE as a PNG."""
    prob = _problem(problem, params, file, "plot")
    construction = read_construction(prob, file)
    out = output or str(Path(file).with_suffix(".png"))
    _hook(problem, "plot", prob.plot, construction, out)
    click.echo(out)


def _hook(problem: str, name: str, fn, *args):
    """A problem hook called from the command line: its failure is one paragraph, not a traceback."""
    try:
        return fn(*args)
    except UserError:
        raise
    except NotImplementedError as e:
        raise ConfigError(f"problem {problem!r} has no {name}(): {e}") from None
    except Exception as e:  # noqa: BLE001 - a plugin bug
        raise ConfigError(f"problem {problem!r}, hook {name}() raised {type(e).__name__}: {e}") from None


@cli.command("new-problem")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Where (default: ./discover-NAME).")
def new_problem(name: str, directory: str | None) -> None:
    """Write a complete problem plugin package for NAME: pyproject, problem module, configs, test, README."""
    from .scaffold import new_problem as scaffold

    root = scaffold(name, directory, installed=get_plugins().registries["problems"].names())
    click.echo(f"wrote {root}/; next:")
    click.echo(f"  pip install -e {root}")
    click.echo(f"  cd {root} && discover run config.yaml")


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@_SET
@click.option("--all", "every", is_flag=True, help="Every group's prompt of the first step, not only the first.")
@click.option("--json", "as_json", is_flag=True, help="The chat messages as JSON.")
def prompt(config: str, overrides: tuple[str, ...], every: bool, as_json: bool) -> None:
    """Print the first prompt a run of CONFIG would send to the model (nothing is run or written)."""
    from .preview import first_prompts, format_chat

    chats = first_prompts(config, list(overrides))
    chats = chats if every else chats[:1]
    if as_json:
        click.echo(json.dumps(chats if every else chats[0], indent=1))
        return
    click.echo("\n\n".join(format_chat(c) for c in chats))


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json: bool) -> None:
    """Every registered problem, sampler, estimator and backend, with the distribution that supplied it."""
    pl = get_plugins()
    rows = [
        {"kind": kind[:-1], "name": e.name, "plugin": e.plugin, "distribution": e.dist}
        for kind in KINDS
        for e in sorted(pl.registries[kind].entries.values(), key=lambda e: e.name)
    ]
    broken = [
        {"kind": "broken", "name": b.name, "plugin": b.name, "distribution": b.dist, "error": b.error}
        for b in pl.broken.values()
    ]
    if as_json:
        click.echo(json.dumps(rows + broken, indent=1))
        return
    for kind in KINDS:
        click.echo(f"{kind}:")
        for r in rows:
            if r["kind"] == kind[:-1]:
                click.echo(f"  {r['name']:<20} {r['distribution']} ({r['plugin']})")
    if broken:
        click.echo("broken (not loaded):")
        for r in broken:
            click.echo(f"  {r['name']:<20} {r['distribution']}: {r['error']}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="HTML file to write (default RUN_DIR/report.html)."
)
def report(run_dir: str, output: str | None) -> None:
    """Write a self-contained HTML report of the run in RUN_DIR (finished or in progress)."""
    from .report import write_report

    click.echo(write_report(run_dir, output))


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("-o", "--output", default="compare.html", show_default=True, type=click.Path(dir_okay=False))
def compare(run_dirs: tuple[str, ...], output: str) -> None:
    """Write one self-contained HTML page comparing the runs in RUN_DIRS: best-score and valid-rate
    curves on shared axes, each run labelled by what its config does differently."""
    from .report.compare import write_compare

    click.echo(write_compare(list(run_dirs), output))


@cli.command()
@click.argument("directory", default="runs", type=click.Path(file_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def runs(directory: str, as_json: bool) -> None:
    """A table of the runs under DIRECTORY (default runs/): problem, model, steps, best score, valid rate."""
    from .report.runs import COLUMNS, cells, run_rows

    rows = run_rows(directory)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*COLUMNS, box=None, pad_edge=False)
    for row in rows:
        table.add_row(*cells(row))
    Console(soft_wrap=True).print(table if rows else f"no runs under {directory}")


def main() -> None:
    try:
        get_plugins().pm.hook.register_commands(cli=cli)
    except PluginError as e:
        _fail(str(e))
    cli()
