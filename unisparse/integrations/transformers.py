"""UniSparse inside any Hugging Face ``transformers`` model, through its attention registry.

``enable(model)`` registers one attention function under the name ``"unisparse"``, points the
language model (and only it: a multimodal model's vision tower keeps its own implementation) at
it, and attaches a routing plan to each of the language model's attention modules. The model
code never changes. Per call, the function serves causal self-attention prefill with a block
selector plus the block-sparse kernel, and hands everything else to the stock SDPA path:

* decoding and chunked prefill (query length differs from key length: a cache is in use);
* padded batches (an attention mask arrives; UniSparse would ignore the padding);
* non-causal modules, dropout in training, sliding-window layers, soft-capping;
* sequences shorter than ``max(block_size, config.min_seq_len)``;
* selections whose kept density is above the break-even (``config.max_density``, by default the
  density measured for the GPU and length, :mod:`unisparse.breakeven`): the dense kernel is faster
  there, and the selection already spent is the only cost (recorded as ``"above_break_even"``,
  with the selected density and its mask);
* layers listed in ``dense_layers`` (keeping the first layers dense is a common need);
* inputs the Triton kernels do not take (dtype or head dim), with a warning once.

Inside ``with unisparse.video_layout(layout):`` prefill calls whose sequence holds the layout's
video spans select video-aware (:func:`unisparse.api.select_blocks_in_layout`: per KV head, the
prompt's order or the video's spatial-major order, whichever keeps fewer blocks) and record each
query head's order in ``LayerRecord.head_orders``. :func:`unisparse.layout.layout_from_inputs`
builds the layout from a Qwen-VL processor's output.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Iterable

import torch

from ..api import (block_density, block_sparse_attention, dense_attention, fallback_density,
                   ordered_block_sparse_attention, select_blocks_in_layout)
from ..config import UniSparseConfig
from ..layout import active_layout
from ..recording import LayerRecord, Stopwatch, active
from ..validation import TRITON_DTYPES, TRITON_HEAD_DIMS, check_backend, check_config, resolve_backend

ATTENTION_NAME = "unisparse"
_PLAN_ATTR = "_unisparse_plan"
_PREVIOUS_ATTR = "_unisparse_previous_attn"


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """What one attention module does with a prefill call."""

    selector: object  # unisparse.selectors.base.Selector
    block_size: int
    min_seq_len: int
    dense: bool
    backend: str
    config: UniSparseConfig  # for the fallback density (max_density)


def _sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward


def _dense_reason(module, query, key, attention_mask, dropout, is_causal, kwargs) -> str | None:
    """Why this call must run dense, or None when UniSparse can serve it exactly."""
    plan = module.__dict__.get(_PLAN_ATTR)
    if plan is None:
        return "not_enabled"
    q_len, kv_len = query.shape[2], key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if not causal:
        return "not_causal"
    if q_len != kv_len:
        return "decode" if q_len == 1 else "cached_prefix"
    if attention_mask is not None:
        return "attention_mask"
    if dropout and module.training:
        return "dropout"
    if kwargs.get("sliding_window") or kwargs.get("softcap") or kwargs.get("position_bias") is not None:
        return "unsupported_variant"
    if plan.dense:
        return "dense_layer"
    if q_len < max(plan.block_size, plan.min_seq_len):
        return "short"
    if resolve_backend(plan.backend, query.device) == "triton" and (
        query.dtype not in TRITON_DTYPES or query.shape[-1] not in TRITON_HEAD_DIMS
    ):
        warnings.warn(
            f"UniSparse: the Triton kernels take {TRITON_DTYPES} and head dims {TRITON_HEAD_DIMS}; "
            f"got {query.dtype}, head_dim={query.shape[-1]}: this model runs dense attention",
            stacklevel=2,
        )
        return "unsupported_input"
    return None


def unisparse_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
):
    """The registry function: ``(module, q, k, v, mask, ...) -> (out [B, L, Hq, D], None)``."""
    reason = _dense_reason(module, query, key, attention_mask, dropout, is_causal, kwargs)
    rec = active()
    if reason is not None:
        if rec is not None and query.shape[2] == key.shape[2] and query.shape[2] > 1:
            rec.add(LayerRecord(getattr(module, "layer_idx", None), query.shape[2], 0, reason, 1.0))
        return _sdpa()(module, query, key, value, attention_mask, dropout=dropout,
                       scaling=scaling, is_causal=is_causal, **kwargs)
    plan: LayerPlan = module.__dict__[_PLAN_ATTR]
    seq_len = query.shape[2]
    layout = _usable_layout(plan, seq_len)
    selection = None
    with Stopwatch(query.device, enabled=rec is not None) as select_time:
        if layout is not None:
            selection = select_blocks_in_layout(query, key, layout, plan.selector.config, scale=scaling,
                                                backend=plan.backend)
            mask = selection.mask
        else:
            mask = plan.selector(query, key, scale=scaling)
        limit = fallback_density(plan.config, query.device, seq_len, resolve_backend(plan.backend, query.device))
        density = None
        if limit is not None or rec is not None:
            density = selection.density() if selection is not None else block_density(mask)
    above = limit is not None and density > limit
    with Stopwatch(query.device, enabled=rec is not None) as attend_time:
        if above:  # causal self-attention prefill without a mask (else _dense_reason had said so)
            out = dense_attention(query, key, value, scaling)
        elif selection is not None:
            out = ordered_block_sparse_attention(query, key, value, selection, block_size=plan.block_size,
                                                 scale=scaling, backend=plan.backend)
        else:
            out = block_sparse_attention(query, key, value, mask, block_size=plan.block_size,
                                         scale=scaling, backend=plan.backend)
        out = out.transpose(1, 2).contiguous()
    if rec is not None:
        orders = None
        if selection is not None:
            orders = tuple(selection.names[i] for i in selection.order_of_heads()[0].tolist())
        rec.add(LayerRecord(getattr(module, "layer_idx", None), seq_len, plan.block_size,
                            "above_break_even" if above else "sparse", 1.0 if above else density,
                            select_time.ms, attend_time.ms, selected_density=density, max_density=limit,
                            head_orders=orders), mask)
    return out, None


def _usable_layout(plan: LayerPlan, seq_len: int):
    """The video layout this call selects with (:func:`unisparse.video_layout`), or None: no layout
    in force, one that reorders nothing or does not fit this sequence, ``video_aware=False``, a sequence
    shorter than ``video_aware_min_len``, or a
    selector other than UniSparse's own (the peers select in the prompt's order)."""
    from ..selectors import UniSparseSelector

    layout = active_layout()
    if layout is None or not layout.reorders or not layout.fits(seq_len):
        return None
    selector = plan.selector
    if not isinstance(selector, UniSparseSelector) or not selector.config.video_aware:
        return None
    if seq_len < selector.config.video_aware_min_len:
        return None
    if selector.config.variance_correction > 0:
        return None
    return layout


def register() -> None:
    """Register the attention function and its mask function under ``"unisparse"`` (idempotent).

    The mask function is SDPA's: without one, transformers would pass no mask at all, and
    padded batches would silently lose their padding.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, unisparse_attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def _text_config(model):
    config = model.config
    return getattr(config, "text_config", None) or config


def text_attention_modules(model) -> list[torch.nn.Module]:
    """The language model's self-attention modules: they hold its config and a layer index."""
    text_config = _text_config(model)
    found = [m for m in model.modules()
             if getattr(m, "config", None) is text_config and hasattr(m, "layer_idx")
             and hasattr(m, "num_key_value_groups")]
    if not found:
        raise ValueError(
            f"found no causal self-attention modules in {type(model).__name__}: UniSparse plugs into "
            "transformers models whose attention layers use the attention registry (Llama, Qwen2, Qwen2-VL, ...)"
        )
    return found


def enable(
    model,
    config: UniSparseConfig | None = None,
    *,
    selector=None,
    dense_layers: Iterable[int] = (),
    backend: str = "auto",
):
    """Route the language model's prefill attention through UniSparse. Returns the model.

    Args:
        config: UniSparse parameters (default ``UniSparseConfig()``); its ``block_size`` and
            ``min_seq_len`` also apply when another ``selector`` is given.
        selector: any :class:`unisparse.selectors.base.Selector` (XAttention, oracle, ...);
            default: UniSparse selection with ``config``.
        dense_layers: layer indices that always run dense attention.
        backend: "auto", "triton" or "torch", as in the functional API.
    """
    config = check_config(config)
    check_backend(backend)
    if selector is None:
        from ..selectors import UniSparseSelector

        selector = UniSparseSelector(config, backend=backend)
    elif getattr(selector, "block_size", config.block_size) != config.block_size:
        raise ValueError(
            f"selector block_size {selector.block_size} differs from config.block_size {config.block_size}"
        )
    register()
    modules = text_attention_modules(model)
    dense_layers = set(dense_layers)
    for module in modules:
        module.__dict__[_PLAN_ATTR] = LayerPlan(
            selector, config.block_size, config.min_seq_len, module.layer_idx in dense_layers, backend, config)
    text_config = _text_config(model)
    if _PREVIOUS_ATTR not in model.__dict__:
        model.__dict__[_PREVIOUS_ATTR] = text_config._attn_implementation
    set_text_attention(model, ATTENTION_NAME)
    return model


def routing(model) -> list[dict]:
    """Per decoder layer of the language model, what prefill attention goes where and why:
    ``{"layer", "kind", "unisparse", "why"}``. Full causal attention layers are routed to UniSparse
    (when :func:`enable` was called); linear-attention layers (Qwen3.5's Gated DeltaNet, Qwen3-Next)
    have no attention matrix to skip and never call the attention registry; sliding-window layers
    are routed but every call runs stock attention (``record()`` says ``unsupported_variant``);
    ``dense_layers`` always run dense. Vision towers are never routed."""
    text = _text_config(model)
    routed = {m.layer_idx: m.__dict__.get(_PLAN_ATTR) for m in text_attention_modules(model)}
    kinds = list(getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers)
    out = []
    for i, kind in enumerate(kinds):
        plan = routed.get(i)
        if i not in routed:
            why = ("linear attention: no attention matrix, never calls the registry" if "linear" in kind
                   else "no attention module found")
            out.append({"layer": i, "kind": kind, "unisparse": False, "why": why})
        elif plan is None:
            out.append({"layer": i, "kind": kind, "unisparse": False, "why": "UniSparse not enabled"})
        elif plan.dense:
            out.append({"layer": i, "kind": kind, "unisparse": False, "why": "dense_layers"})
        elif "sliding" in kind:
            out.append({"layer": i, "kind": kind, "unisparse": False, "why": "sliding window: stock attention"})
        else:
            out.append({"layer": i, "kind": kind, "unisparse": True,
                        "why": f"causal prefill of at least {max(plan.block_size, plan.min_seq_len)} tokens"})
    return out


def disable(model):
    """Undo :func:`enable`: the language model gets its previous attention back. Returns the model."""
    for module in model.modules():
        module.__dict__.pop(_PLAN_ATTR, None)
    previous = model.__dict__.pop(_PREVIOUS_ATTR, None)
    if previous is not None:
        set_text_attention(model, previous)
    return model


def is_enabled(model) -> bool:
    return _PREVIOUS_ATTR in model.__dict__


def set_text_attention(model, name: str) -> None:
    if getattr(model.config, "text_config", None) is not None:
        model.set_attn_implementation({"text_config": name})
    else:
        model.set_attn_implementation(name)
