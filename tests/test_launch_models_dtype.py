"""``dtype: auto``: native bf16 only; GPUs before compute capability 8.0 get float16, not torch's
emulated bf16 (which ``torch.cuda.is_bf16_supported()`` reports as supported on T4/V100)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from discover_ttt.launch.models import pick_dtype  # noqa: E402


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((7, 5), torch.float16), ((7, 0), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
)
def test_auto_dtype_follows_the_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what torch says on a T4
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert pick_dtype("auto", "cuda") is expected
    assert pick_dtype("auto", "cpu") is torch.float32
    assert pick_dtype("bfloat16", "cuda") is torch.bfloat16  # an explicit choice is kept
