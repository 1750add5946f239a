"""Run configuration: one YAML file, validated with pydantic, unknown keys rejected.

Component sections (``problem``, ``backend``, ``sampler``, ``estimator``) are
``{name: ..., <params>}``; the params are validated by the component's own
model (see ``components.py``), so the error for a typo names the allowed keys
of that very component. Relative paths (fields typed ``Path``) resolve against
the folder of the YAML file.
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
import pathlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict

from .components import instantiate, params_model
from .errors import UserError
from .plugins import PluginError, Plugins, get_plugins
from .problem import ProgramLimits

log = logging.getLogger("discover")

COMPONENT_KINDS = {"problem": "problems", "backend": "backends", "sampler": "samplers", "estimator": "estimators"}


class ConfigError(UserError):
    """A config that cannot be used; the message is one paragraph for the terminal."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Component(BaseModel):
    """``{name: ..., <params>}``; the params are checked later by the component itself."""

    model_config = ConfigDict(extra="allow")
    name: str


def _not_bool(x: Any) -> Any:
    """YAML reads ``yes``/``true`` as booleans, which pydantic would take as 1."""
    if isinstance(x, bool):
        raise ValueError("expected a number, not a boolean")
    return x


Int = Annotated[int, pydantic.BeforeValidator(_not_bool)]
Float = Annotated[float, pydantic.BeforeValidator(_not_bool)]
#: more rollouts than this per step would not fit in memory on any machine this runs on
MAX_ROLLOUTS_PER_STEP = 65_536


class SandboxConfig(_Strict):
    # a program needs its interpreter (about 270 MiB of address space with numpy and scipy)
    timeout_s: Float = pydantic.Field(60.0, gt=0, le=7 * 24 * 3600)
    memory_mb: Int = pydantic.Field(1024, ge=128)
    cpus: Int = pydantic.Field(1, ge=1, le=4096)
    workers: Int | None = pydantic.Field(None, ge=1, le=4096)
    isolation: Literal["auto", "bwrap", "none"] = "auto"
    # modules each fork server imports once (null: numpy and scipy); add e.g. cvxpy if programs use it
    preload: list[str] | None = None
    # where programs run: this machine's pool, or sandbox pools on Ray actors (docs/scaling.md)
    executor: Literal["local", "ray"] = "local"
    # Ray only: null starts a local Ray instance, "auto" joins a running cluster, or "ray://host:port"
    address: str | None = None
    # "rss" for GPU programs: CUDA reserves far more address space than it uses, so RLIMIT_AS breaks it
    memory_limit: Literal["address_space", "rss"] = "address_space"
    # GPU ids, one per slot (workers = len(gpus)): each program sees only its slot's GPU
    gpus: list[int | str] | None = None


class RunConfig(_Strict):
    steps: Int = pydantic.Field(50, ge=1)
    groups: Int = pydantic.Field(8, ge=1, le=MAX_ROLLOUTS_PER_STEP)
    rollouts: Int = pydantic.Field(64, ge=1, le=MAX_ROLLOUTS_PER_STEP)
    seed: Int = pydantic.Field(0, ge=0)
    output: Path = Path("runs/run")
    # Groups whose rewards are all equal carry no signal and are dropped. If every
    # group is constant the default skips the update; ``faithful_constant_groups``
    # keeps the first group and steps anyway, as the reference does.
    drop_constant_groups: bool = True
    faithful_constant_groups: bool = False
    save_every: Int = pydantic.Field(1, ge=1)
    keep_checkpoints: Int = pydantic.Field(2, ge=1)

    @pydantic.model_validator(mode="after")
    def _fits(self) -> RunConfig:
        if self.groups * self.rollouts > MAX_ROLLOUTS_PER_STEP:
            raise ValueError(
                f"groups × rollouts = {self.groups * self.rollouts} rollouts per step is more than "
                f"{MAX_ROLLOUTS_PER_STEP}, which would exhaust memory; lower run.groups or run.rollouts"
            )
        return self


class LogConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    progress: Literal["auto", "rich", "plain", "none"] = "auto"
    # experiment trackers, each an optional extra (see discover_ttt.trackers)
    trackers: list[Literal["tensorboard", "wandb", "mlflow", "trackio"]] = []
    project: str = "discover"  # the trackers' project / experiment name
    wandb_mode: Literal["offline", "online"] | None = None  # None: $WANDB_MODE, else offline


class ProblemSection(Component):
    """The problem's section: its name and params, and where to start from."""

    # A file holding a construction (a record, a run's best/construction.json, a bare list): the
    # seeds are that construction, verified first, instead of the problem's random ones.
    init_from: Path | None = None


class Config(_Strict):
    problem: ProblemSection
    backend: Component
    sampler: Component = Component(name="puct")
    estimator: Component = Component(name="entropic_adaptive")
    sandbox: SandboxConfig = SandboxConfig()
    run: RunConfig = RunConfig()
    log: LogConfig = LogConfig()


@dataclass
class LoadedConfig:
    """A validated config: the top-level model, each component's validated params, and where it came from."""

    config: Config
    params: dict[str, BaseModel]
    source: str
    base_dir: Path
    raw: dict[str, Any] = field(default_factory=dict)
    #: what one program gets, when the problem declares it (then ``config.sandbox`` holds the same)
    limits: ProgramLimits | None = None

    def resolved(self) -> dict[str, Any]:
        """Every key with its effective value (defaults filled in), for the run directory.

        A fact is written once: when the problem declares a program's limits, the sandbox
        section leaves out ``timeout_s`` and ``cpus`` (the problem's section states them).
        """
        out = self.config.model_dump(mode="json")
        if self.limits is not None:
            for key in LIMIT_KEYS:
                del out["sandbox"][key]
        for section, params in self.params.items():
            out[section] = {"name": getattr(self.config, section).name, **params.model_dump(mode="json")}
        if self.config.problem.init_from is not None:
            out["problem"]["init_from"] = str(self.config.problem.init_from)
        return out


# -- parsing ---------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` → (["a", "b"], value parsed as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE with a dotted key (e.g. run.steps=3), got {text!r}.")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text}: {'.'.join(path[:-1])} is not a section.")
            node = child
        node[path[-1]] = value
    return raw


def _allowed(model: type[BaseModel]) -> list[str]:
    return sorted(model.model_fields)


def _format_errors(source: str, prefix: list[str], exc: pydantic.ValidationError, model: type[BaseModel]) -> str:
    return f"Invalid config {source}: " + describe_errors(prefix, exc, model)


def describe_errors(prefix: list[str], exc: pydantic.ValidationError, model: type[BaseModel]) -> str:
    """One sentence per error: the dotted key, what is wrong, the allowed keys and the closest one."""
    lines = []
    for err in exc.errors():
        loc = [*prefix, *(str(p) for p in err["loc"])]
        key = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, [str(p) for p in err["loc"][:-1]])
            allowed = _allowed(parent) if parent else []
            close = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            lines.append(f"unknown key '{key}'; allowed keys here: {', '.join(allowed)}.{hint}")
        elif err["type"] == "missing":
            lines.append(f"missing required key '{key}'.")
        else:
            ctx = err.get("ctx", {})
            expected = f" (expected {ctx['expected']})" if "expected" in ctx else ""
            got = "" if isinstance(err.get("input"), dict) else f"; got {err.get('input')!r}"
            lines.append(f"'{key}': {err['msg'].removeprefix('Value error, ')}{expected}{got}.")
    return " ".join(lines)


def _model_at(model: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    for part in path:
        f = model.model_fields.get(part)
        if f is None:
            return None
        ann = f.annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


#: sections whose ``seed``, when the config leaves it out, is ``run.seed``
SEEDED_BY_RUN = ("backend", "sampler")


def _seeded_by_run(params: BaseModel, run_seed: int) -> BaseModel:
    """A component's ``seed`` left unset follows ``run.seed``: runs with different seeds draw
    different samples, and runs with the same seed share their noise (common random numbers,
    what paired ablation runs want). A ``seed`` written in the config wins."""
    if "seed" in type(params).model_fields and "seed" not in params.model_fields_set:
        return params.model_copy(update={"seed": run_seed})
    return params


def _resolve_paths(params: BaseModel, base_dir: Path) -> BaseModel:
    """Relative ``Path`` fields resolve against the config file's folder."""
    updates = {}
    for name in type(params).model_fields:
        value = getattr(params, name)
        if isinstance(value, pathlib.PurePath) and not value.is_absolute():
            updates[name] = (base_dir / value).resolve()
    return params.model_copy(update=updates) if updates else params


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    raw: dict[str, Any] | None = None,
    plugins: Plugins | None = None,
) -> LoadedConfig:
    """Read, override and validate a run config. Raises ConfigError with a readable message."""
    plugins = plugins or get_plugins()
    if raw is None:
        if path is None:
            raise ConfigError("no config file given.")
        path = Path(path)
        source = str(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"Cannot read config {source}: {e.strerror or e}.") from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"Config {source} is not valid YAML: {e}") from None
        base_dir = path.resolve().parent
    else:
        source, base_dir = "(in memory)", Path(path).resolve() if path else Path.cwd()
    if not isinstance(raw, dict):
        raise ConfigError(
            f"Config {source} must be a mapping of sections (problem, backend, ...), got {type(raw).__name__}."
        )
    raw = apply_overrides(raw, overrides or [])
    try:
        config = Config(**raw)
    except pydantic.ValidationError as e:
        raise ConfigError(_format_errors(source, [], e, Config)) from None

    run = config.run
    if not run.output.is_absolute():
        config.run.output = (base_dir / run.output).resolve()
    if config.problem.init_from is not None and not config.problem.init_from.is_absolute():
        config.problem.init_from = (base_dir / config.problem.init_from).resolve()

    params: dict[str, BaseModel] = {}
    entries: dict[str, Any] = {}
    for section, kind in COMPONENT_KINDS.items():
        comp: Component = getattr(config, section)
        try:  # an import path 'module:Name' may name a module beside the config file
            entry = plugins.get(kind, comp.name, search=[base_dir])
        except PluginError as e:
            raise ConfigError(f"Invalid config {source}: '{section}.name': {e}") from None
        except KeyError:
            names = plugins.registries[kind].names()
            close = difflib.get_close_matches(comp.name, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"Invalid config {source}: '{section}.name' is {comp.name!r}, which is not a registered "
                f"{kind[:-1]}; allowed values: {', '.join(names) or '(none installed)'}, or an import path "
                f"'package.module:Name'.{hint}{plugins.broken_hint()}"
            ) from None
        model = params_model(entry.obj)
        values = dict(comp.model_extra or {})
        try:
            validated = model(**values)
        except pydantic.ValidationError as e:
            raise ConfigError(_format_errors(source, [section], e, model)) from None
        if section in SEEDED_BY_RUN:
            validated = _seeded_by_run(validated, config.run.seed)
        params[section] = _resolve_paths(validated, base_dir)
        entries[section] = entry
        if section == "estimator":
            _check_estimator(source, entry, validated, config.run.rollouts)
    limits = program_limits(instantiate(entries["problem"].obj, params["problem"]), config.problem.name, source)
    apply_program_limits(config, raw, limits, source)
    return LoadedConfig(config=config, params=params, source=source, base_dir=base_dir, raw=raw, limits=limits)


def _check_estimator(source: str, entry: Any, params: BaseModel, rollouts: int) -> None:
    """An estimator registered with ``check=`` refuses settings the group size makes meaningless."""
    check = entry.extra.get("check")
    if check is None:
        return
    try:
        check(rollouts, **params.model_dump())
    except ValueError as e:
        raise ConfigError(
            f"Invalid config {source}: estimator {entry.name!r} with run.rollouts={rollouts}: {e}"
        ) from None


# -- a program's limits: the problem owns them -----------------------------------------
#: the sandbox keys a problem's ``program_limits()`` sets when it declares them
LIMIT_KEYS = ("timeout_s", "cpus")


def program_limits(problem: Any, name: str, source: str) -> ProgramLimits | None:
    """``problem.program_limits()``, checked: None or a ``ProgramLimits`` of positive numbers."""
    limits = problem.program_limits()
    if limits is None:
        return None
    ok = isinstance(limits, ProgramLimits) and isinstance(limits.cpus, int) and limits.cpus >= 1
    if not (ok and math.isfinite(limits.seconds) and limits.seconds > 0 and limits.margin_s >= 0):
        raise ConfigError(
            f"Invalid config {source}: problem {name!r}: program_limits() must return None or "
            f"ProgramLimits(seconds > 0, cpus >= 1, margin_s >= 0), got {limits!r}."
        )
    return limits


def apply_program_limits(config: Config, raw: dict[str, Any], limits: ProgramLimits | None, source: str) -> None:
    """Give the sandbox the time and CPUs the problem declares; a config may repeat them, never contradict.

    Without declared limits, ``sandbox.timeout_s`` and ``sandbox.cpus`` apply as written.
    With them, a config that sets either to another value is an error naming both keys; one
    that repeats the same value (as configs did when both had to be kept in step by hand)
    is accepted with a warning, and the key should go.
    """
    if limits is None:
        return
    written = raw.get("sandbox") or {}
    seconds_key, cpus_key = (f"problem.{k}" for k in limits.keys)
    owned = {
        "timeout_s": (
            limits.timeout_s,
            f"'{seconds_key}' ({limits.seconds:g} s, stated in the prompt; the sandbox "
            f"stops a program {limits.margin_s:g} s later, at {limits.timeout_s:g} s)",
        ),
        "cpus": (limits.cpus, f"'{cpus_key}' ({limits.cpus}, stated in the prompt and given to each program)"),
    }
    conflicts, repeats = [], []
    for key, (value, owner) in owned.items():
        if key not in written:
            continue
        given = getattr(config.sandbox, key)
        if math.isclose(float(given), float(value), rel_tol=0, abs_tol=1e-9):
            repeats.append(f"sandbox.{key}")
        else:
            conflicts.append(f"'sandbox.{key}' is {given:g} but {owner} sets it.")
    if conflicts:
        raise ConfigError(
            f"Invalid config {source}: " + " ".join(conflicts) + f" Problem {config.problem.name!r} declares a "
            f"program's time and CPUs in its own section; remove {' and '.join(f'sandbox.{k}' for k in LIMIT_KEYS)} "
            "from the sandbox section, or change the problem's keys."
        )
    if repeats:
        log.warning(
            "config %s: %s repeat%s what problem %r declares (%s, %s); the problem's section is their one owner, "
            "remove %s from the sandbox section (a different value is an error).",
            source,
            " and ".join(repeats),
            "s" if len(repeats) == 1 else "",
            config.problem.name,
            seconds_key,
            cpus_key,
            "it" if len(repeats) == 1 else "them",
        )
    config.sandbox.timeout_s, config.sandbox.cpus = limits.timeout_s, limits.cpus


# -- what a resume may change ------------------------------------------------------------
#: keys (or whole sections, ending in ".") a resumed run may change: they alter how long it
#: runs, how it reports and how many programs run at once, never what the steps compute
SAFE_ON_RESUME = ("run.steps", "run.save_every", "run.keep_checkpoints", "run.output", "log.", "sandbox.workers")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def config_changes(saved: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(unsafe, safe) dotted keys whose values differ between a saved resolved config and a new one.

    A key the saved config lacks (added by a newer version, with its default) is safe. A saved
    ``sandbox.timeout_s``/``cpus`` the new one leaves out is now the problem's to state: its own
    keys are compared, and a saved value that contradicted them failed to load already.
    """
    old_flat, new_flat = _flatten(saved), _flatten(new)
    unsafe: list[str] = []
    safe: list[str] = []
    for key in sorted(set(old_flat) | set(new_flat)):
        if key not in old_flat or old_flat.get(key) == new_flat.get(key):
            continue
        if key in {f"sandbox.{k}" for k in LIMIT_KEYS} and key not in new_flat:
            continue
        is_safe = any(key == s or (s.endswith(".") and key.startswith(s)) for s in SAFE_ON_RESUME)
        (safe if is_safe else unsafe).append(key)
    return unsafe, safe
