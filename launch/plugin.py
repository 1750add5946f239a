"""Registers the built-in backends. Each backend module keeps its heavy imports
(torch, transformers, vllm, tinker) inside its methods, so listing plugins stays fast."""

from discover_ttt import hookimpl


@hookimpl
def register_backends(register):
    from .local import LocalBackend
    from .nemo_rl.backend import NemoRLBackend
    from .openai import OpenAIBackend
    from .replay import ReplayBackend
    from .tinker import TinkerBackend
    from .vllm import VllmBackend

    register(ReplayBackend)
    register(LocalBackend)
    register(OpenAIBackend)
    register(VllmBackend)
    register(TinkerBackend)
    register(NemoRLBackend)


@hookimpl
def register_commands(cli):
    from .nemo_rl.commands import export

    cli.add_command(export)
