"""The one place that knows how transformers names its key/value cache.

transformers 5.x renamed the forward keyword ``past_key_values`` to ``cache`` (the old
name warns on every call and goes away in 5.40) and the output field likewise; older
releases know only ``past_key_values``. We ask the model which one its forward takes.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=64)
def _cache_keyword(forward_type: type) -> str:
    params = inspect.signature(forward_type.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(model, cache: Any) -> dict[str, Any]:
    """``{keyword: cache}`` for ``model``'s forward (``model`` unwrapped from peft if needed)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {_cache_keyword(type(inner)): cache}


def output_cache(out) -> Any:
    """The cache a forward with ``use_cache=True`` returned."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
