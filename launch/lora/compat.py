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
def _cache_keyword(forward_type: type[Any]) -> str:
    params = inspect.signature(forward_type.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(model, cache: Any) -> dict[str, Any]:
    """``{keyword: cache}`` for ``model``'s forward (``model`` unwrapped from peft if needed)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    # a class is hashable; mypy does not see type[Any] as Hashable (python/mypy#11470)
    return {_cache_keyword(type(inner)): cache}  # type: ignore[arg-type]


def output_cache(out) -> Any:
    """The cache a forward with ``use_cache=True`` returned."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def reserve(cache: Any, capacity: int) -> None:
    """Give each plain dynamic layer of ``cache`` room for ``capacity`` positions, so that a
    decoding step writes its keys/values in place instead of concatenating the whole cache
    (a copy that grows with the sequence: a third of a CPU decoding step at ~1k positions).
    Layers of other kinds (sliding windows, …) and caches of older releases are left alone."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # releases without per-layer caches
        return
    for layer in getattr(cache, "layers", ()):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys.numel():
            layer.__class__ = _reserved_layer_class(DynamicLayer)  # type: ignore[arg-type]  # as above
            layer.make_room(capacity)


@lru_cache(maxsize=1)
def _reserved_layer_class(dynamic_layer: type) -> type:
    class ReservedLayer(dynamic_layer):
        """A dynamic layer whose keys/values are views into buffers with spare positions."""

        keys: Any  # torch tensors, [..., positions, head_dim]; keys/values view the buffers
        values: Any
        key_buffer: Any
        value_buffer: Any

        def make_room(self, capacity: int) -> None:
            n = self.keys.shape[-2]
            self.key_buffer = _with_room(self.keys, max(capacity, n))
            self.value_buffer = _with_room(self.values, max(capacity, n))
            self.keys, self.values = self.key_buffer[..., :n, :], self.value_buffer[..., :n, :]

        def update(self, key_states, value_states, *args, **kwargs):
            n, m = self.keys.shape[-2], key_states.shape[-2]
            # keys replaced from outside (batch selection, …) or out of room: start a new buffer
            if self.keys.data_ptr() != self.key_buffer.data_ptr() or n + m > self.key_buffer.shape[-2]:
                self.make_room(max(2 * n, n + m))
            self.key_buffer[..., n : n + m, :] = key_states
            self.value_buffer[..., n : n + m, :] = value_states
            self.keys, self.values = self.key_buffer[..., : n + m, :], self.value_buffer[..., : n + m, :]
            return self.keys, self.values

    return ReservedLayer


def _with_room(states: Any, capacity: int) -> Any:
    buffer = states.new_empty(*states.shape[:-2], capacity, states.shape[-1])
    buffer[..., : states.shape[-2], :] = states
    return buffer
