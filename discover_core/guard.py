"""Calling a problem plugin's hooks so that nothing they do stops the run.

Every hook call goes through ``HookGuard.call``: an exception or a value of the
wrong shape becomes an ``Invalid`` whose reason names the plugin and the hook.
``evaluate`` and ``evaluate_group`` also run under a deadline: their time
outside the sandbox (whose calls have their own limits) may not exceed the
program's limit plus a grace; past it the call is abandoned as a ``timeout``.
Constructions and metrics are converted to JSON values (numpy arrays to lists)
so that a checkpoint can always be written.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from .errors import UserError
from .problem import Invalid

log = logging.getLogger("discover")

#: seconds an evaluate may spend outside sandbox calls beyond the program's limit
GRACE_S = 10.0


class PluginHookError(UserError):
    """A problem hook failed before the first step (no rollout to charge it to)."""


class BadReturn(Exception):
    """A hook returned a value of the wrong type; the message says what was expected."""


def json_safe(x: Any, depth: int = 0) -> Any:
    """``x`` as plain JSON data: numpy arrays and scalars become lists and numbers, tuples lists.

    Raises ``BadReturn`` for anything JSON cannot hold (sets, objects, bytes, non-string keys).
    Non-finite floats stay floats (the run store writes them as strings).
    """
    if depth > 100:
        raise BadReturn("the value is nested more than 100 levels deep")
    if x is None or isinstance(x, bool | int | float | str):
        return x
    if isinstance(x, list | tuple):
        return [json_safe(v, depth + 1) for v in x]
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if not isinstance(k, str):
                raise BadReturn(f"dict keys must be strings, got {type(k).__name__}")
            out[k] = json_safe(v, depth + 1)
        return out
    kind = getattr(getattr(x, "dtype", None), "kind", None)
    if kind is not None and hasattr(x, "tolist"):  # numpy arrays and scalars
        if kind not in "biuf":
            raise BadReturn(f"a numpy value of dtype {x.dtype} is not JSON data")
        return x.tolist()
    raise BadReturn(f"a {type(x).__name__} is not JSON data (use lists, dicts, numbers, strings)")


#: frames of a hook's traceback kept, and characters at most: where it failed, not the whole stack
TRACEBACK_FRAMES = 4
TRACEBACK_CHARS = 2000


def last_frames(exc: BaseException) -> str:
    """The last ``TRACEBACK_FRAMES`` frames of ``exc``'s traceback and its message, at most ``TRACEBACK_CHARS``."""
    frames = traceback.extract_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
    text = "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(exc), exc))
    return text if len(text) <= TRACEBACK_CHARS else "..." + text[-(TRACEBACK_CHARS - 3) :]


def finite(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError, OverflowError):
        return None
    return x if math.isfinite(x) else None


class DeadlineSandbox:
    """The sandbox as an evaluate sees it: counts the time spent outside its calls.

    Delegates everything; ``run`` and ``map`` mark time inside the sandbox, which
    bounds that time itself (its own deadline), so the watchdog only charges the
    plugin's own host-side work.
    """

    def __init__(self, sandbox: Any) -> None:
        self._sandbox = sandbox
        self._lock = threading.Lock()
        self._inside = 0
        self._inside_since = 0.0
        self._inside_s = 0.0
        self._started = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sandbox, name)

    def _enter(self) -> None:
        with self._lock:
            if self._inside == 0:
                self._inside_since = time.monotonic()
            self._inside += 1

    def _exit(self) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0:
                self._inside_s += time.monotonic() - self._inside_since

    def outside_s(self) -> float:
        """Seconds since the start not spent inside a sandbox call."""
        with self._lock:
            now = time.monotonic()
            inside = self._inside_s + (now - self._inside_since if self._inside else 0.0)
            return now - self._started - inside

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self._enter()
        try:
            return self._sandbox.run(*args, **kwargs)
        finally:
            self._exit()

    def map(self, *args: Any, **kwargs: Any) -> Any:
        self._enter()
        try:
            return self._sandbox.map(*args, **kwargs)
        finally:
            self._exit()


class HookGuard:
    """Calls one problem's hooks; failures come back as ``Invalid`` naming plugin and hook."""

    def __init__(self, problem: Any, plugin: str, limit_s: float, stop: threading.Event) -> None:
        self.problem, self.plugin, self.limit_s, self.stop = problem, plugin, float(limit_s), stop

    def where(self, hook: str) -> str:
        return f"problem plugin {self.plugin!r}, hook {hook}()"

    def failed(self, hook: str, exc: BaseException, *, quiet: bool = False) -> Invalid:
        """The Invalid for a hook's failure: a one-paragraph reason, and the exception's last frames.

        The frames go to the rollout's event and, with ``-v``, to the log; ``quiet`` leaves
        the warning to the caller (an error before the start is printed once, by the CLI).
        """
        if isinstance(exc, BadReturn):
            reason = f"{self.where(hook)} returned a bad value: {exc}"
            frames = ""  # the plugin's code ran fine; the value says what was wrong
        else:
            reason = f"{self.where(hook)} raised {type(exc).__name__}: {str(exc)[:500]}"
            frames = last_frames(exc)
        if not quiet:
            log.warning("%s", reason)
        if frames:
            log.debug("%s; the traceback's last frames:\n%s", self.where(hook), frames)
        return Invalid("exception", reason, traceback=frames)

    def call(self, hook: str, *args: Any, check: Callable[[Any], Any] | None = None, quiet: bool = False) -> Any:
        """``problem.<hook>(*args)``, checked by ``check`` (which may convert); Invalid on failure."""
        try:
            value = getattr(self.problem, hook)(*args)
            return check(value) if check is not None else value
        except Exception as e:  # noqa: BLE001 - a plugin bug is a failed rollout, not the end of the run
            return self.failed(hook, e, quiet=quiet)

    def call_before_start(self, hook: str, *args: Any, check: Callable[[Any], Any] | None = None) -> Any:
        """Like ``call``, but a failure is one clear error (nothing to charge it to yet), printed once."""
        out = self.call(hook, *args, check=check, quiet=True)
        if isinstance(out, Invalid):
            more = (
                " For its traceback, run again with discover -v (e.g. discover -v run CONFIG)." if out.traceback else ""
            )
            raise PluginHookError(f"{out.reason}. The run cannot start; fix the plugin or its config.{more}")
        return out

    def seed_values(self, states: list[Any]) -> list[Any]:
        """Seeds valued as every archived state is: ``value(score)``, set by the engine.

        A seed's own value that disagrees is refused: a minimised score stored as the
        value would rank the worst seeds first and report a seed as the best.
        """
        for s in states:
            if s.score is None:
                continue
            v = self.call_before_start("value", s.score, check=check_number)
            if s.value is not None and not math.isclose(s.value, v, rel_tol=1e-9, abs_tol=1e-12):
                raise PluginHookError(
                    f"{self.where('initial_states')} gave a seed value {s.value:g} but value(score {s.score:g}) = "
                    f"{v:g}. The engine computes every archived state's value from its score (a minimised score is "
                    "negated), so leave value unset: State(score=score, ...). The run cannot start."
                )
            s.value = v
        return states

    def call_with_deadline(
        self, hook: str, sandbox: Any, *args: Any, n_programs: int = 1, check: Callable[[Any], Any] | None = None
    ) -> Any:
        """``problem.<hook>(*args, DeadlineSandbox(sandbox))`` on a daemon thread, abandoned past its deadline.

        The deadline is on host-side time: ``limit_s × n_programs + GRACE_S`` seconds
        outside sandbox calls. An abandoned call keeps running in the background (a
        thread cannot be killed) but its result is ignored.
        """
        watched = DeadlineSandbox(sandbox)
        done = threading.Event()
        box: dict[str, Any] = {}

        def target() -> None:
            box["out"] = self.call(hook, *args, watched, check=check)
            done.set()

        threading.Thread(target=target, name=f"discover-{hook}", daemon=True).start()
        budget = self.limit_s * max(1, n_programs) + GRACE_S
        while not done.wait(0.05):
            if self.stop.is_set():
                return Invalid("crash", "the run was interrupted")
            if watched.outside_s() > budget:
                reason = f"{self.where(hook)} did not return within {budget:g} s (outside its programs); abandoned"
                log.warning("%s", reason)
                return Invalid("timeout", reason)
        return box["out"]


# -- what each hook must return ----------------------------------------------------------
def check_prompt(x: Any) -> list[dict[str, str]]:
    ok = isinstance(x, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in x
    )
    if not ok or not x:
        raise BadReturn(f"expected chat messages [{{'role': str, 'content': str}}, ...], got {_short(x)}")
    return x


def check_program(x: Any) -> Any:
    from .problem import Program

    if isinstance(x, Invalid):
        return x
    if isinstance(x, Program) and isinstance(x.source, str) and str(x.entry).isidentifier():
        return x
    raise BadReturn(f"expected a Program (with str source) or an Invalid, got {_short(x)}")


def check_outcome(x: Any) -> Any:
    """An Evaluation (made JSON-safe, with a finite score) or an Invalid."""
    from .problem import Evaluation

    if isinstance(x, Invalid):
        return x
    if not isinstance(x, Evaluation):
        raise BadReturn(f"expected an Evaluation or an Invalid, got {_short(x)}")
    score = finite(x.score)
    if score is None:
        raise BadReturn(f"the score must be a finite number, got {_short(x.score)}")
    if not isinstance(x.metrics, dict):
        raise BadReturn(f"metrics must be a dict, got {_short(x.metrics)}")
    try:
        construction, metrics = json_safe(x.construction), json_safe(x.metrics)
    except BadReturn as e:
        raise BadReturn(f"the construction or metrics are not JSON data: {e}") from None
    return Evaluation(
        score=score,
        construction=construction,
        stdout=x.stdout if isinstance(x.stdout, str) else str(x.stdout),
        metrics=metrics,
        code=x.code if isinstance(x.code, str) else "",
    )


def check_group(n: int) -> Callable[[Any], Any]:
    """evaluate_group: None (evaluate each) or exactly ``n`` outcomes."""

    def check(x: Any) -> Any:
        if x is None:
            return None
        if not isinstance(x, list) or len(x) != n:
            size = f"{len(x)} results" if isinstance(x, list) else _short(x)
            raise BadReturn(f"expected None or a list of {n} outcomes (one per rollout), got {size}")
        out = []
        for o in x:  # one bad entry spoils only its own rollout
            try:
                out.append(check_outcome(o))
            except BadReturn as e:
                out.append(e)
        return out

    return check


def check_number(x: Any) -> float:
    v = finite(x)
    if v is None or isinstance(x, bool):
        raise BadReturn(f"expected a finite number, got {_short(x)}")
    return v


def check_bool(x: Any) -> bool:
    if type(x).__name__ not in ("bool", "bool_"):
        raise BadReturn(f"expected True or False, got {_short(x)}")
    return bool(x)


def check_states(k: int) -> Callable[[Any], Any]:
    """initial_states: a list of ``k`` States with JSON constructions and finite (or no) values."""
    from .state import State

    def check(x: Any) -> list[State]:
        if not isinstance(x, list) or len(x) != k:
            got = f"{len(x)} states" if isinstance(x, list) else _short(x)
            raise BadReturn(f"expected a list of {k} State objects, got {got}")
        for s in x:
            if not isinstance(s, State):
                raise BadReturn(f"expected State objects, got {_short(s)}")
            s.construction, s.metrics = json_safe(s.construction), json_safe(s.metrics)
            for name in ("value", "score"):
                v = getattr(s, name)
                if v is not None and (finite(v) is None or isinstance(v, bool | str)):
                    raise BadReturn(f"a state's {name} must be a finite number or None, got {_short(v)}")
                setattr(s, name, None if v is None else finite(v))
        return x

    return check


def _short(x: Any) -> str:
    text = repr(x)
    return f"{type(x).__name__} {text[:80]}{'...' if len(text) > 80 else ''}"
