"""What would stop or spoil a first real vLLM run, checked at start-up without a GPU: the LoRA
rank vLLM accepts, GGUF models, the default model and context, free GPU memory against
``gpu_memory_utilization`` (also in the shipped one-GPU configs), where adapters are written,
and the engine's dtype."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from test_launch_vllm import FakeLLM, fake_api  # noqa: E402

from discover_ttt.launch import vllm  # noqa: E402
from discover_ttt.launch.lora.trainer import Trainer  # noqa: E402
from discover_ttt.launch.vllm import VllmBackend, VllmConfigError, VllmParams  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


def build(tmp_path, api=None, trainer=None, **overrides):
    """A backend whose engine is made by ``api.LLM`` (recording its keywords); the learner runs on the CPU."""
    overrides.setdefault("adapter_dir", str(tmp_path / "adapters"))
    overrides.setdefault("context_window", 4096)
    overrides.setdefault("model", "tiny-random")
    params = VllmParams(**overrides)
    trainer = trainer or Trainer(params.model_copy(update={"model": "tiny-random", "device": "cpu"}))
    made: dict = {}
    api = api or fake_api()
    api.LLM = lambda **kw: made.update(kw) or FakeLLM(trainer.tokenizer.eos_token_id)
    return VllmBackend(params, trainer=trainer, api=api), made


@pytest.mark.parametrize(("rank", "engine_rank"), [(1, 8), (4, 8), (8, 8), (12, 16), (24, 32), (32, 32), (300, 320)])
def test_max_lora_rank_is_rounded_up_to_a_rank_vllm_accepts(tmp_path, rank, engine_rank):
    _, made = build(tmp_path, device="cpu", lora_rank=rank)
    assert made["max_lora_rank"] == engine_rank


def test_a_rank_above_vllms_largest_is_a_clear_error(tmp_path):
    with pytest.raises(VllmConfigError, match="at most 512"):
        vllm.engine_lora_rank(513)


def test_the_default_model_is_one_vllm_loads_with_a_context_it_holds():
    from transformers import LlamaConfig

    p = VllmParams()
    assert p.model == vllm.DEFAULT_MODEL and not p.model.startswith("package:")
    smollm2 = LlamaConfig(max_position_embeddings=8192)  # SmolLM2-135M-Instruct's config
    vllm.check_context_window(p.context_window, smollm2, p.model)
    with pytest.raises(VllmConfigError, match=r"context_window is 32768 .* at most 8192"):
        vllm.check_context_window(32768, smollm2, p.model)


def test_a_context_window_beyond_the_models_stops_before_the_engine_starts(tmp_path):
    with pytest.raises(VllmConfigError, match="at most 4096"):  # the tiny model's max_position_embeddings
        build(tmp_path, device="cpu", context_window=8192)


def test_rope_scaling_extends_the_context_limit():
    from transformers import LlamaConfig

    config = LlamaConfig(max_position_embeddings=32768, rope_scaling={"rope_type": "yarn", "factor": 4.0})
    assert vllm.model_context_limit(config) == 131072


def _gguf_file(tmp_path) -> Path:
    path = tmp_path / "m.Q4_1.gguf"
    path.write_bytes(b"GGUF")
    return path


def test_a_gguf_model_is_refused_clearly_where_vllm_has_no_gguf_loader(tmp_path):
    api = fake_api()
    api.gguf = False  # vLLM 0.11 on
    with pytest.raises(VllmConfigError, match=r"no GGUF loader.*SmolLM2-135M-Instruct"):
        build(tmp_path, api=api, device="cpu", model=str(_gguf_file(tmp_path)))


def test_a_gguf_model_goes_to_vllm_0_10_as_the_file_with_its_tokenizer(tmp_path, caplog):
    path = _gguf_file(tmp_path)
    with caplog.at_level("WARNING", logger="discover"):
        _, made = build(tmp_path, device="cpu", model=str(path))
    assert "quantised GGUF weights" in caplog.text  # sampler and learner do not run the same weights
    # vLLM 0.10.2 recognises GGUF by the file name (check_gguf_file) for the model and the tokenizer alike
    assert made["model"] == str(path) and made["tokenizer"] == str(path)
    _, made = build(tmp_path, device="cpu", model=str(path), tokenizer="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert made["tokenizer"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def _cuda(monkeypatch, free, total):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (free, total))


def test_too_little_free_gpu_memory_stops_with_the_value_that_fits(tmp_path, monkeypatch):
    _cuda(monkeypatch, free=60 * GIB, total=80 * GIB)
    with pytest.raises(VllmConfigError, match=r"gpu_memory_utilization to at most 0\.73"):
        build(tmp_path, device="cuda", gpu_memory_utilization=0.85)
    _, made = build(tmp_path, device="cuda", gpu_memory_utilization=0.7)
    assert made["gpu_memory_utilization"] == 0.7


# Qwen3-8B: 8.19e9 parameters in bf16, plus a rank-32 adapter (0.35 GB in float32) with Adam's two moments
QWEN3_8B_LEARNER = 8.19e9 * 2 + 3 * 0.35e9
H100_TOTAL = int(79.1 * GIB)  # what torch reports for an 80 GB H100
LEARNER_CONTEXT = GIB // 2


@pytest.mark.parametrize("config", ["problems/kernels/config.cuda.yaml", "problems/erdos/config.qwen3-8b.yaml"])
def test_shipped_one_gpu_configs_leave_vllm_the_memory_it_asks_for(config):
    backend = yaml.safe_load((ROOT / config).read_text())["backend"]
    assert backend["name"] == "vllm" and backend["model"] == "Qwen/Qwen3-8B"
    free = H100_TOTAL - int(QWEN3_8B_LEARNER) - LEARNER_CONTEXT
    vllm.check_gpu_memory(backend["gpu_memory_utilization"], free, H100_TOTAL)
    vllm.engine_lora_rank(backend["lora_rank"])


def test_adapters_leave_dev_shm_when_it_is_too_small(tmp_path, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    shm, tmp = tmp_path / "shm", tmp_path / "tmp"
    shm.mkdir(), tmp.mkdir()
    monkeypatch.setattr(vllm, "SHM_DIR", str(shm))
    monkeypatch.setattr(vllm.tempfile, "tempdir", str(tmp))
    real = vllm.shutil.disk_usage
    monkeypatch.setattr(vllm.shutil, "disk_usage", lambda p: Usage(64e6, 64e6, 100) if p == str(shm) else real(p))
    b, _ = build(tmp_path, device="cpu", adapter_dir=None)
    assert Path(b._tmp).parent == tmp  # Docker's 64 MB /dev/shm, nearly full: the temporary folder
    monkeypatch.setattr(vllm.shutil, "disk_usage", lambda p: Usage(64e9, 0, 64e9))
    b, _ = build(tmp_path, device="cpu", adapter_dir=None)
    assert Path(b._tmp).parent == shm  # room to spare: memory, fast to reload
    assert vllm.adapter_root(None, 349e6) == str(shm)  # room for a few Qwen3-8B rank-32 adapters
    monkeypatch.setattr(vllm.shutil, "disk_usage", lambda p: Usage(64e6, 0, 64e6))
    assert vllm.adapter_root(None, 349e6) is None  # one such adapter would not fit in Docker's default
    assert vllm.adapter_root(str(tmp_path / "mine"), 349e6) == str(tmp_path / "mine")


def test_the_engine_samples_in_the_learners_dtype(tmp_path):
    params = VllmParams(model="tiny-random", device="cpu", context_window=4096, adapter_dir=str(tmp_path))
    trainer = Trainer(params)
    trainer.model.get_base_model().to(torch.bfloat16)
    _, made = build(tmp_path, trainer=trainer, device="cpu")
    assert made["dtype"] == "bfloat16"
