"""The ``local`` backend: transformers + peft on the CPU or one GPU (see ``backend.py``)."""

from .backend import LocalBackend
from .params import LocalParams

__all__ = ["LocalBackend", "LocalParams"]
