"""The Sampler interface (samplers/base.py) is what the engine uses, all of it, and what the hook spec lists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from discover_ttt import hookspecs
from discover_ttt.samplers import PUCT, Greedy, NoReuse, Sampler

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = {
    "accept",
    "make_states",
    "states",
    "seed",
    "select",
    "record",
    "end_step",
    "best",
    "state_dict",
    "load_state_dict",
}


def test_the_protocol_has_exactly_these_members():
    declared = set(Sampler.__annotations__) | {n for n in vars(Sampler) if not n.startswith("_")}
    assert declared == MEMBERS


def engine_uses() -> set[str]:
    """Every ``<...>.sampler.<name>`` or ``sampler.<name>`` the engine reads, calls or sets."""
    used = set()
    for path in (ROOT / "discover_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                owner = node.value
                name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
                if name == "sampler":
                    used.add(node.attr)
    return used


def test_the_engine_uses_the_protocol_and_nothing_else():
    assert engine_uses() <= MEMBERS, engine_uses() - MEMBERS


def test_the_hook_spec_lists_the_whole_protocol():
    doc = hookspecs.register_samplers.__doc__
    named = set(re.findall(r"``(\w+)", doc))
    assert MEMBERS <= named, MEMBERS - named


@pytest.mark.parametrize("cls", [PUCT, Greedy, NoReuse])
def test_the_built_in_samplers_implement_it(cls):
    sampler = cls()
    assert isinstance(sampler, Sampler)
    assert sampler.accept is None and sampler.make_states is None and sampler.states == []
