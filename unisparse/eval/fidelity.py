"""Fidelity of sparse prefill on a real trained model, against dense attention.

The model is passed in: any ``transformers`` causal LM that :func:`unisparse.enable` can route
(the project measures SmolLM2-135M-Instruct, which its application loads offline and passes
in; the library itself knows no model files). The texts are
:mod:`unisparse.eval.corpora`'s. For one selector the model runs the whole text in one prefill;
the loss is taken on the second half (so every scored token has a long context), and compared
with the dense run:

* perplexity change against dense, in percent;
* next-token top-1 agreement with dense;
* density (kept / causal blocks), per layer and overall;
* recalled attention mass: the share of the exact attention mass of each query block that the
  selected blocks hold (1.0 = nothing lost), per layer.

The harness measures the method at any length, so by default it runs the sparse path even
below ``UniSparseConfig.min_seq_len`` (32768 by default, the length under which production runs
dense because sparse is slower there): ``evaluate_selector`` without a ``config`` uses
``min_seq_len=0``. A config passed in is used as given, its ``min_seq_len`` included.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch

from ..config import UniSparseConfig
from ..integrations.transformers import disable, enable
from ..recording import record
from ..reference import true_block_mass
from .corpora import CODE_MODULES, corpus_text, corpus_tokens

__all__ = ["CODE_MODULES", "corpus_text", "corpus_tokens", "MassRecallProbe", "DenseReference", "dense_reference",
           "evaluate_selector"]

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
        config = UniSparseConfig(block_size=selector.block_size, min_seq_len=0, max_density=1.0)
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
