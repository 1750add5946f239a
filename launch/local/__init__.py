"""The ``local`` backend: transformers + peft on the CPU or one GPU (see ``backend.py``)."""

from ..lora.params import LocalParams
from .backend import LocalBackend

__all__ = ["LocalBackend", "LocalParams"]
