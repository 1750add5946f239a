"""Registers the built-in backends. Each backend module keeps its heavy imports
(torch, vllm, httpx) inside its methods, so listing plugins stays fast."""

from discover_core import hookimpl


@hookimpl
def register_backends(register):
    from .replay import ReplayBackend

    register(ReplayBackend)

    from .local import LocalBackend
    from .openai import OpenAIBackend
    from .vllm import VllmBackend

    register(LocalBackend)
    register(VllmBackend)
    register(OpenAIBackend)
