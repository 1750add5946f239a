"""``discover prompt CONFIG``: the prompts of a run's first step, without a model or a sandbox.

Prompts are not in the events (they are rebuilt from states); this shows exactly
what the model would read first. It is the first half of step 0 (``Step.plan(0)``)
after the seeds a run starts from (``run.groups`` fresh ones from ``run.seed``, or the
warm start of ``problem.init_from``): selected by the configured sampler, re-drawn by
the problem's ``on_selected``, rendered by its ``prompt``.
"""

from __future__ import annotations

from pathlib import Path

from .config import load_config
from .guard import PluginHookError
from .loop import Discovery
from .progress import Reporter


def first_prompts(config: str | Path, overrides: list[str] | None = None) -> list[list[dict[str, str]]]:
    """One chat (a list of messages) per group of step 0, in group order."""
    loaded = load_config(config, overrides)
    step = Discovery(loaded, reporter=Reporter()).stepper  # builds problem, sampler and step; writes nothing
    step.seed(step.warm_start())  # as a run starts, without its run directory
    plan = step.plan(0)
    for g, failure in plan.failed.items():
        raise PluginHookError(f"{failure.reason}. (The prompt of group {g} of step 0; a run records it as failed.)")
    return plan.prompts


def format_chat(messages: list[dict[str, str]]) -> str:
    return "\n".join(f"--- {m.get('role', '?')} ---\n{m.get('content', '')}" for m in messages)
