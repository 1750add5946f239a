"""``discover prompt CONFIG``: the prompts of a run's first step, without a model or a sandbox.

Prompts are not in the events (they are rebuilt from states); this shows exactly
what the model would read first: the config's seed states (``run.groups`` of them,
from ``run.seed``, or the warm start of ``problem.init_from``), selected by the
configured sampler, rendered by the problem.
"""

from __future__ import annotations

from pathlib import Path

from .config import load_config
from .loop import Discovery
from .progress import Reporter


def first_prompts(config: str | Path, overrides: list[str] | None = None) -> list[list[dict[str, str]]]:
    """One chat (a list of messages) per group of step 0, in group order."""
    loaded = load_config(config, overrides)
    disc = Discovery(loaded, reporter=Reporter())  # builds problem and sampler only; writes nothing
    groups = loaded.config.run.groups
    seeds = disc._warm_start() or disc._fresh_states(groups)  # as Discovery.start, without its run directory
    disc.sampler.seed(seeds)
    parents = [disc._selected(s) for s in disc.sampler.select(groups)]  # as Discovery.run_step
    return [disc.problem.prompt(s) for s in parents]


def format_chat(messages: list[dict[str, str]]) -> str:
    return "\n".join(f"--- {m.get('role', '?')} ---\n{m.get('content', '')}" for m in messages)
