"""The Tinker backend against an in-process fake of the SDK (``fake_tinker.py``): requests,
training that makes a positive-advantage completion more likely, the same per-token
advantages as the local trainer, checkpoints, failures, and a full run killed and resumed."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from fake_tinker import (  # noqa: E402
    APIConnectionError,
    AuthenticationError,
    FakeTinker,
    Killed,
    RateLimitError,
    scripted_logits,  # noqa: E402
)

from discover_ttt.backend import Completion, TrainItem  # noqa: E402
from discover_ttt.errors import MissingExtra, UserError  # noqa: E402
from discover_ttt.install import install_command  # noqa: E402
from discover_ttt.launch import tinker as tinker_backend  # noqa: E402
from discover_ttt.launch.lora import objective  # noqa: E402
from discover_ttt.launch.lora.tiny import tiny_tokenizer  # noqa: E402
from discover_ttt.launch.tinker import SDK_CALLS, TinkerBackend, TinkerParams, TinkerServiceError  # noqa: E402

PROMPTS = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "a second prompt"}]]
PROGRAM = "```python\ndef run():\n    return [0.3, 0.3, 0.X]\n```"
DIGIT = PROGRAM.index("X")
TOKENIZER = tiny_tokenizer()


def fake_api(root) -> FakeTinker:
    base = scripted_logits(TOKENIZER, PROGRAM, {DIGIT: "13579"}, len(TOKENIZER))
    return FakeTinker(root, base, TOKENIZER)


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("TINKER_API_KEY", "test-key")


def make(tmp_path, api=None, **overrides) -> TinkerBackend:
    kw = {"model": "toy", "max_new_tokens": 64, "context_window": 4096, "backoff_s": 0.0, **overrides}
    return TinkerBackend(TinkerParams(**kw), api=api or fake_api(tmp_path / "service"))


def digit(c: Completion) -> str:
    return c.text[DIGIT]


def test_without_the_sdk_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tinker", None)  # import tinker raises ImportError
    with pytest.raises(MissingExtra, match=re.escape(install_command("tinker"))):
        TinkerBackend(TinkerParams())


def test_without_a_key_the_error_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("TINKER_API_KEY")
    with pytest.raises(UserError, match="TINKER_API_KEY"):
        make(tmp_path)


def test_tempered_sampling_is_refused():
    with pytest.raises(ValueError, match="temperature 1"):
        TinkerParams(temperature=0.7)


def test_one_request_per_rollout_with_token_logprobs_and_distinct_seeds(tmp_path):
    b = make(tmp_path)
    sent = []
    real = b._sampling_client().sample
    b.sampler.sample = lambda **kw: sent.append(kw) or real(**kw)
    progress = []
    b.set_progress(progress.append)
    out = b.sample(PROMPTS, 3)
    assert [(x.done, x.total) for x in progress][:1] == [(0, 6)] and progress[-1].done == 6
    assert progress[-1].tokens == sum(len(c.tokens) for g in out for c in g)  # reported as responses arrive
    assert [kw["prompt"].to_ints() for kw in sent] == [b.prompt_tokens(p) for p in PROMPTS for _ in range(3)]
    assert [kw["num_samples"] for kw in sent] == [1] * 6
    sp = sent[0]["sampling_params"]
    assert sp.stop == [TOKENIZER.eos_token_id] and sp.max_tokens == 64
    assert len({kw["sampling_params"].seed for kw in sent}) == 6
    c = out[1][2]
    assert c.prompt_tokens == b.prompt_tokens(PROMPTS[1]) and c.finish_reason == "stop"
    assert len(c.logprobs) == len(c.tokens) and all(lp <= 0 for lp in c.logprobs)
    assert c.text.startswith("```python") and digit(c) in "13579"
    assert len({c.text for g in out for c in g}) > 1  # the seeds differ per request


def test_the_fake_returns_copies_for_a_seeded_multi_sample_request(tmp_path):
    """The reported service behaviour the backend works around.

    github.com/thinking-machines-lab/tinker-feedback/issues/79
    """
    api = fake_api(tmp_path)
    client = api.ServiceClient(api_key="k").create_sampling_client(base_model="toy").result()
    prompt = api.ModelInput.from_ints(tokens=TOKENIZER.encode("<|im_start|>assistant\n"))

    def texts(seed):
        sp = api.SamplingParams(max_tokens=64, seed=seed, stop=[TOKENIZER.eos_token_id])
        return [
            tuple(s.tokens) for s in client.sample(prompt=prompt, num_samples=8, sampling_params=sp).result().sequences
        ]

    assert len(set(texts(seed=7))) == 1
    assert len(set(texts(seed=None))) > 1


def test_a_group_holds_distinct_draws_where_one_seeded_request_gave_copies(tmp_path):
    b = make(tmp_path)
    (group,) = b.sample(PROMPTS[:1], 8)
    assert len({digit(c) for c in group}) > 1  # 8 draws of the free digit (5 choices) are not all equal


def test_each_step_samples_from_fresh_weights(tmp_path):
    b = make(tmp_path, lr=0.05)
    group = b.sample(PROMPTS[:1], 4)[0]
    assert b.api.calls.count(("TrainingClient.save_weights_and_get_sampling_client", ())) == 1
    b.sample(PROMPTS[:1], 1)  # no update in between: the same sampling client
    assert b.api.calls.count(("TrainingClient.save_weights_and_get_sampling_client", ())) == 1
    b.train([TrainItem(c, 1.0 if i == 0 else -1.0) for i, c in enumerate(group)])
    b.sample(PROMPTS[:1], 1)
    assert b.api.calls.count(("TrainingClient.save_weights_and_get_sampling_client", ())) == 2


def test_training_makes_the_positive_advantage_completion_more_likely(tmp_path):
    b = make(tmp_path, lr=0.05, kl_coef=0.1)
    group = b.sample(PROMPTS[:1], 8)[0]
    good = next(c for c in group if digit(c) == "3")
    bad = [c for c in group if digit(c) != "3"]

    def logprob(c):
        rows = b._sampling_client().logprob_rows(c.prompt_tokens + c.tokens)[len(c.prompt_tokens) :]
        return float(sum(rows[j, t] for j, t in enumerate(c.tokens)))

    before = logprob(good), [logprob(c) for c in bad]
    metrics = b.train([TrainItem(good, 1.0)] + [TrainItem(c, -1.0 / len(bad)) for c in bad])
    after = logprob(good), [logprob(c) for c in bad]
    assert after[0] > before[0] + 0.05
    assert all(a < x for a, x in zip(after[1], before[1], strict=True))
    # on-policy: the service's ℓ^θ before the step equals the sampler's log-probs
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-4) and metrics["logprob_gap"] < 1e-4
    # ratio 1 and Σ_t λ·(d̄ − d_t) = 0 over the batch: the loss is −Σ_i A_i · (tokens of i)
    expected = -(len(good.tokens) - sum(len(c.tokens) for c in bad) / len(bad))
    assert metrics["rollouts"] == 1 + len(bad) and metrics["loss"] == pytest.approx(expected, abs=1e-3)


def with_forced(c: Completion) -> Completion:
    """A copy whose tokens 2..4 are forced (log-prob 0), as the thinking budget makes them."""
    forced = [2 <= j < 5 for j in range(len(c.tokens))]
    logprobs = [0.0 if f else lp for lp, f in zip(c.logprobs, forced, strict=True)]
    return Completion(c.text, c.prompt_tokens, c.tokens, logprobs, forced, c.finish_reason)


@pytest.mark.parametrize(("faithful", "kl_in_reward"), [(False, False), (True, False), (False, True)])
def test_advantages_sent_equal_the_local_trainers(tmp_path, monkeypatch, faithful, kl_in_reward):
    """Same rollouts, sampler and base log-probs: the per-token advantages (KL shaping
    included) the Tinker datums carry are those the local trainer computes."""
    pytest.importorskip("peft")
    from discover_ttt.launch.lora.params import TrainerParams
    from discover_ttt.launch.lora.trainer import Trainer

    b = make(tmp_path, kl_coef=0.1, train_forced_tokens=faithful, kl_in_reward=kl_in_reward)
    group = [with_forced(c) if i % 2 else c for i, c in enumerate(b.sample(PROMPTS, 3)[0] + b.sample(PROMPTS, 3)[1])]
    advs = [0.9, -0.4, 0.1, 1.3, -0.7, -1.2]
    base_lp = b.base_logprobs(group)
    seen = []
    real_shape = objective.shape_batch
    monkeypatch.setattr(objective, "shape_batch", lambda *a, **k: seen.append(real_shape(*a, **k)) or seen[-1])
    fb = []
    real_fb = b.training.forward_backward
    b.training.forward_backward = lambda **kw: fb.append(kw) or real_fb(**kw)
    b.train([TrainItem(c, a) for c, a in zip(group, advs, strict=True)])

    trainer = Trainer(
        TrainerParams(
            model="tiny-random", device="cpu", kl_coef=0.1, train_forced_tokens=faithful, kl_in_reward=kl_in_reward
        )
    )
    real_lp = trainer.logprobs
    monkeypatch.setattr(
        trainer,
        "logprobs",
        lambda seqs, temperature=1.0, base=False: (
            [torch.tensor(x) for x in base_lp] if base else real_lp(seqs, temperature)
        ),
    )
    trainer.train([TrainItem(c, a) for c, a in zip(group, advs, strict=True)])

    sent, local = seen
    assert not np.isnan(sent.kl_sampler_base) and sent.kl_sampler_base == local.kl_sampler_base
    for s, loc in zip(sent.advantages, local.advantages, strict=True):
        assert torch.equal(s, loc)
    forced_adv = [float(a[2:5].abs().sum()) for a in local.advantages[1::2]]
    assert all((x > 0) == faithful for x in forced_adv)
    # and those are the numbers on the wire, after prompt positions of 0
    for d, c, adv in zip(fb[0]["data"], group, sent.advantages, strict=True):
        wire = d.loss_fn_inputs["advantages"].to_numpy()
        assert len(wire) == len(c.prompt_tokens) + len(c.tokens) - 1
        assert not wire[: len(c.prompt_tokens) - 1].any()
        np.testing.assert_array_equal(wire[len(c.prompt_tokens) - 1 :], adv.numpy())
        np.testing.assert_array_equal(d.loss_fn_inputs["target_tokens"].to_numpy(), (c.prompt_tokens + c.tokens)[1:])
    assert fb[0]["loss_fn"] == "importance_sampling"


def test_save_load_continues_identically(tmp_path):
    a = make(tmp_path, lr=0.05)
    group = a.sample(PROMPTS[:1], 4)[0]
    a.train([TrainItem(c, a_) for c, a_ in zip(group, [1.0, -1.0, 0.5, -0.5], strict=True)])
    (tmp_path / "ckpt").mkdir()
    a.save(tmp_path / "ckpt")
    state = json.loads((tmp_path / "ckpt" / "tinker_state.json").read_text())
    assert state["state_path"].startswith("tinker://") and state["sample_calls"] == 1

    def go_on(backend):
        out = backend.sample(PROMPTS, 3)
        items = [TrainItem(c, float(i % 3) - 1.0) for i, c in enumerate(out[0] + out[1])]
        metrics = backend.train(items)
        return [c.tokens for g in out for c in g], metrics["loss"], backend.sample(PROMPTS, 2)

    first = go_on(a)
    b = make(tmp_path, api=fake_api(tmp_path / "service"))  # a new process, the same service
    b.load(tmp_path / "ckpt")
    assert b.api.calls[-1] == ("ServiceClient.create_training_client_from_state_with_optimizer", ("path",))
    second = go_on(b)
    assert first[0] == second[0] and first[1] == second[1]
    assert [[c.tokens for c in g] for g in first[2]] == [[c.tokens for c in g] for g in second[2]]


def test_load_refuses_another_model(tmp_path):
    a = make(tmp_path)
    (tmp_path / "ckpt").mkdir()
    a.save(tmp_path / "ckpt")
    with pytest.raises(UserError, match="resume with the model"):
        make(tmp_path, model="other").load(tmp_path / "ckpt")


def test_transient_errors_are_retried_then_named(tmp_path, caplog, monkeypatch):
    waits = []
    monkeypatch.setattr(tinker_backend.time, "sleep", waits.append)
    b = make(tmp_path, retries=2, backoff_s=1.5)
    b.api.failures["SamplingClient.sample"] = [RateLimitError("slow down"), APIConnectionError("reset")]
    assert len(b.sample(PROMPTS[:1], 1)[0]) == 1  # one rollout, one request: it meets both failures
    assert "retrying" in caplog.text and waits == [1.5, 3.0]  # doubling back-off
    b.api.failures["SamplingClient.sample"] = [RateLimitError("slow down")] * 3
    with pytest.raises(TinkerServiceError, match=r"while sampling after 3 attempts: RateLimitError.*discover resume"):
        b.sample(PROMPTS[:1], 1)
    b.api.failures["SamplingClient.compute_logprobs"] = [AuthenticationError("bad key")]
    with pytest.raises(TinkerServiceError, match="while computing base-model log-probs: AuthenticationError"):
        b.base_logprobs(b.sample(PROMPTS[:1], 1)[0])  # not transient: no retry


def test_a_failed_training_step_is_not_retried(tmp_path):
    b = make(tmp_path)
    group = b.sample(PROMPTS[:1], 2)[0]
    sampler = b.sampler
    b.api.failures["TrainingClient.forward_backward"] = [APIConnectionError("reset")]
    with pytest.raises(TinkerServiceError, match="training step 0: APIConnectionError.*not retried"):
        b.train([TrainItem(group[0], 1.0), TrainItem(group[1], -1.0)])
    assert b.api.calls.count(("TrainingClient.forward_backward", ("data", "loss_fn"))) == 1
    assert b.sampler is sampler and b.train_steps == 0


# -- a whole run through `discover run`, killed in a step and resumed --------------------------
KEEP = ("type", "step", "group", "index", "parent_id", "child_id", "text", "score", "reward", "advantage")


def run_config(tmp_path, out) -> str:
    cfg = {
        "problem": {"name": "toy_problem:ToyProblem"},
        "backend": {"name": "tinker", "model": "toy", "max_new_tokens": 64, "context_window": 4096, "lr": 0.05},
        "sampler": {"name": "puct"},
        "estimator": {"name": "entropic_adaptive"},
        "sandbox": {"timeout_s": 5, "memory_mb": 1024, "workers": 2, "isolation": "none"},
        "run": {"steps": 2, "groups": 2, "rollouts": 3, "seed": 0, "output": str(out)},
        "log": {"progress": "none"},
    }
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def events(run_dir):
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [{k: e.get(k) for k in KEEP} for e in map(json.loads, lines)]


@pytest.mark.slow  # two runs with the fake service: seconds
def test_discover_run_killed_mid_step_resumes_to_the_same_events(tmp_path, monkeypatch):
    from discover_ttt.cli import cli

    apis = []

    def api_for(root):
        def make_api():
            apis.append(fake_api(root))
            return apis[-1]

        return make_api

    monkeypatch.setattr(tinker_backend, "_tinker_api", api_for(tmp_path / "service-full"))
    full = CliRunner().invoke(cli, ["run", run_config(tmp_path, tmp_path / "full")])
    assert full.exit_code == 0, full.output
    steps = [e for e in map(json.loads, (tmp_path / "full" / "events.jsonl").read_text().splitlines())]
    trained = [e["train"] for e in steps if e.get("type") == "step"]
    assert len(trained) == 2 and all("loss" in t for t in trained)  # every step updated the weights
    assert {name for name, _ in apis[0].calls} >= {"TrainingClient.forward_backward", "TrainingClient.save_state"}
    for name, kwargs in apis[0].calls:  # every SDK call and keyword is under the contract test
        assert name in SDK_CALLS and set(kwargs) <= set(SDK_CALLS[name]), (name, kwargs)

    monkeypatch.setattr(tinker_backend, "_tinker_api", api_for(tmp_path / "service-killed"))
    out = tmp_path / "killed"
    original = FakeTinker.__init__

    def dies_in_step_1(self, *a, **k):
        original(self, *a, **k)
        self.failures["TrainingClient.forward_backward"] = [None, Killed()]

    monkeypatch.setattr(FakeTinker, "__init__", dies_in_step_1)
    with pytest.raises(Killed):
        CliRunner().invoke(cli, ["run", run_config(tmp_path, out)], catch_exceptions=False)
    monkeypatch.setattr(FakeTinker, "__init__", original)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000000"]

    resumed = CliRunner().invoke(cli, ["resume", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert "ServiceClient.create_training_client_from_state_with_optimizer" in {name for name, _ in apis[-1].calls}
    assert events(out) == events(tmp_path / "full")
