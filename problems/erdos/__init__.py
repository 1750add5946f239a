"""The Erdős minimum-overlap problem (upper bounds on C5): the reference problem plugin."""

from .problem import ErdosProblem

__all__ = ["ErdosProblem"]
