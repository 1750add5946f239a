"""docs/library.md must run as written: its python blocks are executed in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "library.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_library_doc_examples_run(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 5
    joined = "\n".join(blocks)
    for name in ("PUCT", "entropic_adaptive", "select", "record", "end_step", "state_dict"):
        assert name in joined, f"the library doc no longer shows {name}"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "library_doc"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name}[block {i}]", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "best value" in out and "beta =" in out
    # what the page's code left behind is what the page says it is
    from discover_ttt.estimators import entropic_adaptive, solve_beta

    sampler, rollouts = namespace["sampler"], namespace["ROLLOUTS"]
    # 10 steps of up to GROUPS groups, each recording every rollout (failures included)
    assert sampler.T % rollouts == 0 and 10 * rollouts <= sampler.T <= 10 * namespace["GROUPS"] * rollouts
    rewards_G = namespace["rewards_G"]  # the estimators section's half-failed group
    assert namespace["beta"] == solve_beta(rewards_G) and 0 < namespace["beta"] < 2**20
    advantages = entropic_adaptive(rewards_G)
    assert (advantages[rewards_G == 0] < 0).all() and advantages.argmax() == rewards_G.argmax()
