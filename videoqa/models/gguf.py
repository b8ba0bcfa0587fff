"""Load a GGUF causal LM through transformers, keeping a plain copy so later loads skip dequantising.

transformers converts a GGUF file's tokenizer and dequantises its weights on every load: about
20 s for SmolLM2-135M on 2 CPU cores, paid by every process that loads the embedded default
model or the fidelity model. After the first load the weights (safetensors, in the dtype they
were loaded in), config and tokenizer are written to a cache directory keyed by the GGUF file's
name, size and modification time; later loads read that copy (about 1 s), with the same weights
and tokens. The cache is ``$VIDEOQA_CACHE_DIR`` (``off`` disables it), else
``$XDG_CACHE_HOME/videoqa``, else ``~/.cache/videoqa``. Writing it is best effort: a read-only or
full disk only costs the speed-up, and a half-written copy is never read (it is renamed into
place only once complete).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from pathlib import Path

import torch

CACHE_ENV = "VIDEOQA_CACHE_DIR"
_DONE = "complete"


def cache_root() -> Path | None:
    """Where plain copies go; None when ``$VIDEOQA_CACHE_DIR`` is ``off``."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "videoqa"


def cache_path(gguf: Path, dtype: torch.dtype) -> Path | None:
    root = cache_root()
    if root is None:
        return None
    st = gguf.stat()
    return root / f"{gguf.stem}-{st.st_size}-{st.st_mtime_ns}-{str(dtype).removeprefix('torch.')}"


@contextlib.contextmanager
def _quiet_progress():
    """transformers' progress bars off for the duration (restored as they were)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_gguf_causal_lm(folder, gguf_file: str, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` for ``folder/gguf_file``, on the CPU in ``dtype``, from the plain copy when there is one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = cache_path(Path(folder) / gguf_file, dtype)
    if cached is not None and (cached / _DONE).is_file():
        try:
            with _quiet_progress():  # a plain copy of 135M loads in a blink: no bar for it
                model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype).eval()
            return model, AutoTokenizer.from_pretrained(cached)
        except Exception as e:  # noqa: BLE001 -- a damaged copy, whatever the reader raises: load the GGUF, write a fresh one
            warnings.warn(f"ignoring the damaged cached copy {cached}: {e}")
            shutil.rmtree(cached, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=dtype).eval()
    if cached is not None:
        _write(model, tokenizer, cached)
    return model, tokenizer


def _write(model, tokenizer, target: Path) -> None:
    from safetensors.torch import save_model

    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        config = model.config.__class__.from_dict(model.config.to_dict())
        if hasattr(config, "quantization_config"):  # GGUF weights are dequantised on load: the copy is plain
            del config.quantization_config
        config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))  # drops the tied lm_head duplicate; the config re-ties it
        tokenizer.save_pretrained(tmp)
        (tmp / _DONE).touch()
        try:
            os.replace(tmp, target)
        except OSError:  # another process got there first
            pass
    except OSError as e:
        warnings.warn(f"could not keep a plain copy of the GGUF model in {target}: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
