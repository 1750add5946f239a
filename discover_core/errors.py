"""Errors a user can fix (a bad config, a missing extra, a corrupted run directory).

The CLI prints their message, one paragraph, without a traceback. Plugins
raise subclasses of ``UserError`` for the same treatment.
"""


class UserError(Exception):
    """An error whose message tells the user what was wrong and what to do."""


class MissingExtra(UserError, ImportError):
    """An optional part of discover-ttt is not installed (vLLM, Tinker, Ray, a tracker, NeMo RL).

    One paragraph, printed without a traceback, naming the extra and the command that
    installs it; ``__init__`` holds its wording, for every such error. Also an
    ``ImportError``, so code that falls back when a module is missing still catches it.

    ``what`` is the part of discover that needs it ("the 'vllm' backend"), ``needs`` the
    package ("vLLM"), ``extra`` the pip extra that installs it ("vllm"), ``cause`` the
    import's own error; ``install`` is the instruction, a sentence, for a package no extra
    of ours installs (NeMo RL); ``instead`` what else the user may do ("use backend 'local'").
    """

    def __init__(
        self,
        what: str,
        needs: str,
        extra: str | None,
        cause: BaseException | None = None,
        *,
        instead: str = "",
        install: str | None = None,
    ) -> None:
        from .install import install_command

        self.extra = extra
        why = f" ({cause})" if cause is not None else ""
        how = install[:1].upper() + install[1:] if install else f"Install the {extra!r} extra: {install_command(extra)}"
        super().__init__(
            f"{what} needs {needs}, which does not import here{why}. {how}" + (f"; or {instead}." if instead else ".")
        )
