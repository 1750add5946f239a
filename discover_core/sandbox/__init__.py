"""Run untrusted generated programs: fresh processes, hard limits, JSON results.

    from discover_ttt.sandbox import run_program, Sandbox

    r = run_program(source, "run", timeout_s=10, memory_mb=1024)
    if r.ok:
        use(r.value)
    else:
        print(r.kind, r.error)

See docs/sandbox.md for what is isolated and how each failure is reported.
"""

from .isolation import isolation_available
from .runner import DEFAULT_PRELOAD, KINDS, Sandbox, SandboxError, SandboxResult, run_program

__all__ = [
    "DEFAULT_PRELOAD",
    "KINDS",
    "Sandbox",
    "SandboxError",
    "SandboxResult",
    "isolation_available",
    "run_program",
]
