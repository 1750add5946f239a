"""The contract between the tinker backend and the installed Tinker SDK: every class, method
and keyword argument the backend uses (``SDK_CALLS``) exists with a compatible signature,
so an SDK change fails here instead of in a user's run. ``.ci/run`` installs the extra."""

from __future__ import annotations

import inspect
import typing

import pytest

from discover_ttt.launch.tinker import SDK_CALLS, TRANSIENT

tinker = pytest.importorskip("tinker")


def resolve(name: str):
    owner, _, method = name.partition(".")
    obj = getattr(tinker, owner)
    return getattr(obj, method) if method else obj


@pytest.mark.parametrize("name", sorted(SDK_CALLS))
def test_every_call_and_keyword_exists(name):
    target = resolve(name)
    params = inspect.signature(target).parameters
    for kw in SDK_CALLS[name]:
        # named explicitly: a **kwargs catch-all (ServiceClient has one) would hide a rename
        assert kw in params, f"tinker {name} has no parameter {kw!r}; it has {list(params)}"
        assert params[kw].kind in (params[kw].POSITIONAL_OR_KEYWORD, params[kw].KEYWORD_ONLY), (name, kw)
    required = [
        p
        for p in params.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in ("self", "cls")
    ]
    missing = [p.name for p in required if p.name not in SDK_CALLS[name]]
    assert not missing, f"tinker {name} now requires {missing}, which the backend does not pass"


def test_creation_calls_return_a_future_of_the_client():
    ret = inspect.signature(tinker.ServiceClient.create_lora_training_client).return_annotation
    assert "Future" in str(ret)
    assert callable(getattr(tinker.BackcompatTrainingClientFuture, "result", None))
    assert getattr(tinker.TrainingClient, "result", None) is None  # _ready tells the two apart this way


def test_results_wait_with_a_timeout_and_save_state_returns_a_path():
    assert "timeout" in inspect.signature(tinker.APIFuture.result).parameters
    assert "path" in tinker.types.SaveWeightsResponse.model_fields


def test_importance_sampling_loss_stop_reasons_and_adam_fields():
    assert "importance_sampling" in typing.get_args(tinker.types.LossFnType)
    assert set(typing.get_args(tinker.types.StopReason)) >= {"stop", "length"}
    fields = tinker.AdamParams.model_fields
    assert fields["weight_decay"].default == 0.0 and fields["grad_clip_norm"].default == 0.0  # none, as the paper
    seq_fields = {f.name for f in __import__("dataclasses").fields(tinker.types.SampledSequence)}
    assert {"stop_reason", "tokens_np", "logprobs_np"} <= seq_fields and hasattr(tinker.types.SampledSequence, "tokens")


def test_transient_error_classes_exist():
    for name in TRANSIENT:
        if name != "TimeoutError":
            assert issubclass(getattr(tinker, name), Exception), name


def test_datum_takes_our_tensors():
    import numpy as np

    datum = tinker.Datum(
        model_input=tinker.ModelInput.from_ints(tokens=[1, 2, 3]),
        loss_fn_inputs={
            "target_tokens": tinker.TensorData.from_numpy(array=np.array([2, 3, 4], dtype=np.int64)),
            "logprobs": tinker.TensorData.from_numpy(array=np.zeros(3, dtype=np.float32)),
            "advantages": tinker.TensorData.from_numpy(array=np.array([0, 0.5, -1], dtype=np.float32)),
        },
    )
    assert datum.loss_fn_inputs["advantages"].to_numpy().tolist() == [0, 0.5, -1]
    assert datum.model_input.to_ints() == [1, 2, 3]
    sp = tinker.SamplingParams(max_tokens=5, seed=3, stop=[7], temperature=1.0, top_p=1.0)
    assert (sp.max_tokens, sp.seed, list(sp.stop)) == (5, 3, [7])
