"""Build a registered component from its config section.

Three shapes are supported, so plugin authors write plain Python:

* a class with a pydantic ``Params`` model: built as ``Cls(Params(**section))``
  (problems and backends use this);
* any other class: its ``__init__`` keyword arguments are the params
  (``PUCT(c=1.0, max_states=1000)``);
* a function: its arguments after the first are the params, bound with
  ``functools.partial`` (estimators: ``grpo(rewards, normalize_std=True)``;
  the run binds its estimator as an ``estimator.BoundEstimator``, see ``build_estimator``).

Either way the section is validated by a pydantic model with unknown keys
forbidden, so a typo is an error that names the key.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any, cast

import pydantic

from .estimator import RUNTIME_ARGS, BoundEstimator, Estimator, EstimatorStats


def params_model(obj: Any) -> type[pydantic.BaseModel]:
    """The pydantic model that validates ``obj``'s config section."""
    explicit = getattr(obj, "Params", None)
    if inspect.isclass(explicit) and issubclass(explicit, pydantic.BaseModel):
        return explicit
    fn = obj.__init__ if inspect.isclass(obj) else obj
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    params = list(inspect.signature(fn).parameters.values())
    params = params[1:]  # self, or the rewards array of an estimator
    fields: dict[str, Any] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name.startswith("_") or p.name in RUNTIME_ARGS:
            continue
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (hints.get(p.name, Any), default)
    name = f"{getattr(obj, '__name__', 'Component')}Params"
    return pydantic.create_model(name, __config__=pydantic.ConfigDict(extra="forbid"), **fields)


def instantiate(obj: Any, params: pydantic.BaseModel) -> Any:
    """Build the component from params already validated by ``params_model(obj)``."""
    if getattr(obj, "Params", None) is type(params):
        return obj(params)
    values = {k: getattr(params, k) for k in type(params).model_fields}
    if inspect.isclass(obj):
        return obj(**values)
    bound = functools.partial(obj, **values)
    functools.update_wrapper(bound, obj)
    return bound


def build_estimator(obj: Any, params: pydantic.BaseModel, stats: EstimatorStats | None = None) -> BoundEstimator:
    """A registered estimator (a function, or a class whose instances are called) with its validated params."""
    values = {k: getattr(params, k) for k in type(params).model_fields}
    if inspect.isclass(obj):
        return BoundEstimator(cast(Estimator, obj(**values)), {}, stats)  # a class's instance is called per group
    return BoundEstimator(obj, values, stats)


def build(obj: Any, section: dict[str, Any]) -> Any:
    """Validate ``section`` (without its ``name`` key) and build the component."""
    return instantiate(obj, params_model(obj)(**section))
