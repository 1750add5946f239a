"""A GGUF model is de-quantised once; later loads read the float32 copy kept in the cache.

The GGUF reader is replaced by a stand-in that returns the tiny random Llama (what
transformers hands back for a GGUF file: a float model marked as GGUF-quantised); the
saving and the reloading are the real ones.
"""

from __future__ import annotations

import logging
import os

import pytest
import torch
import transformers

from discover_ttt.launch import models
from discover_ttt.launch.lora.tiny import tiny_model_and_tokenizer


@pytest.fixture
def gguf(tmp_path, monkeypatch):
    """A GGUF file whose reading is counted: ``conversions["model"]`` loads read the file."""
    path = tmp_path / "models" / "Tiny.Q4_1.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF stand-in")
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    conversions = {"model": 0, "tokenizer": 0}
    real_model, real_tok = transformers.AutoModelForCausalLM.from_pretrained, transformers.AutoTokenizer.from_pretrained

    def model_from(name, *args, gguf_file=None, **kwargs):
        if gguf_file is None:
            return real_model(name, *args, **kwargs)
        assert os.path.join(name, gguf_file) == str(path)
        conversions["model"] += 1
        model, _ = tiny_model_and_tokenizer(seed=3)
        model.config.quantization_config = {"quant_method": "gguf"}  # as a GGUF load marks it
        return model.to(kwargs.get("dtype", torch.float32))

    def tokenizer_from(name, *args, gguf_file=None, **kwargs):
        if gguf_file is None:
            return real_tok(name, *args, **kwargs)
        conversions["tokenizer"] += 1
        return tiny_model_and_tokenizer()[1]

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_from)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer_from)
    return path, conversions


def _logits(model, tokenizer):
    ids = tokenizer("hello run()", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits


def test_second_load_reads_the_cache_and_gives_the_same_model(gguf):
    path, conversions = gguf
    first = models.load_causal_lm(str(path), None, "cpu", torch.float32)
    tok_first = models.load_tokenizer(str(path))
    cache = models.gguf_cache_dir(str(path.parent), path.name)
    assert (cache / models.CONVERTED).is_file() and conversions["model"] == 1
    second = models.load_causal_lm(str(path), None, "cpu", torch.float32)
    tok_second = models.load_tokenizer(str(path))
    assert conversions["model"] == 1  # not read again
    assert tok_second("a\nb")["input_ids"] == tok_first("a\nb")["input_ids"]
    assert tok_second.chat_template == tok_first.chat_template
    assert torch.equal(_logits(first, tok_first), _logits(second, tok_second))
    assert not hasattr(second.config, "quantization_config")


def test_a_changed_file_is_converted_again(gguf):
    path, conversions = gguf
    models.load_causal_lm(str(path), None, "cpu", torch.float32)
    before = models.gguf_cache_dir(str(path.parent), path.name)
    path.write_bytes(b"GGUF stand-in, a newer release")
    models.load_causal_lm(str(path), None, "cpu", torch.float32)
    assert conversions["model"] == 2 and models.gguf_cache_dir(str(path.parent), path.name) != before


def test_only_float32_conversions_are_kept(gguf):
    path, conversions = gguf
    models.load_causal_lm(str(path), None, "cpu", torch.bfloat16)
    assert models._converted(str(path.parent), path.name) is None
    models.load_causal_lm(str(path), None, "cpu", torch.float32)
    lm = models.load_causal_lm(str(path), None, "cpu", torch.bfloat16)  # now read from the float32 copy
    assert conversions["model"] == 2 and lm.dtype == torch.bfloat16


def test_cache_off(gguf, monkeypatch):
    path, conversions = gguf
    monkeypatch.setenv(models.CACHE_ENV, "off")
    for _ in range(2):
        models.load_causal_lm(str(path), None, "cpu", torch.float32)
    assert conversions["model"] == 2 and models.gguf_cache_dir(str(path.parent), path.name) is None


def test_an_unwritable_cache_costs_speed_not_the_run(gguf, monkeypatch, tmp_path, caplog):
    path, conversions = gguf
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(models.CACHE_ENV, str(blocker / "cache"))
    with caplog.at_level(logging.WARNING, logger="discover"):
        lm = models.load_causal_lm(str(path), None, "cpu", torch.float32)
    assert lm is not None and "could not be cached" in caplog.text
    models.load_causal_lm(str(path), None, "cpu", torch.float32)
    assert conversions["model"] == 2
    assert blocker.read_text() == "not a folder"


def test_an_incomplete_cache_folder_is_redone(gguf):
    path, conversions = gguf
    target = models.gguf_cache_dir(str(path.parent), path.name)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{")  # a copy interrupted by hand, no completion marker
    models.load_causal_lm(str(path), None, "cpu", torch.float32)
    assert (target / models.CONVERTED).is_file()
    models.load_causal_lm(str(path), None, "cpu", torch.float32)
    assert conversions["model"] == 1


def test_a_copy_of_the_file_elsewhere_shares_the_conversion(gguf, tmp_path):
    path, conversions = gguf
    models.load_causal_lm(str(path), None, "cpu", torch.float32)
    copy = tmp_path / "another-venv" / path.name
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    models.load_causal_lm(str(copy), None, "cpu", torch.float32)
    assert conversions["model"] == 1
