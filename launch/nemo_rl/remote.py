"""Call a method the same way on a Ray actor handle and on a plain object (tests, one process)."""

from __future__ import annotations

from typing import Any


def call(target: Any, method: str, *args: Any) -> Any:
    fn = getattr(target, method)
    remote = getattr(fn, "remote", None)
    if remote is None:
        return fn(*args)
    import ray

    return ray.get(remote(*args))
