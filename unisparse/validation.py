"""Input checks shared by every entry point.

Bad input must fail here, with the argument named, before it can reach a kernel: a Triton
launch on a malformed tensor either crashes obscurely or silently returns garbage.
"""

from __future__ import annotations

import math
import os

import torch

from .config import BACKENDS, UniSparseConfig

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
TRITON_HEAD_DIMS = (32, 64, 128, 256)


def check_config(config) -> UniSparseConfig:
    """``config`` itself, ``UniSparseConfig()`` for None; TypeError for anything else."""
    if config is None:
        return UniSparseConfig()
    if not isinstance(config, UniSparseConfig):
        raise TypeError(f"config must be a UniSparseConfig, got {type(config).__name__}")
    return config


def check_scale(scale) -> float | None:
    """A finite positive softmax scale, or None (``1/sqrt(head_dim)``)."""
    if scale is None:
        return None
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0 or not math.isfinite(scale):
        raise ValueError(f"scale must be a positive number or None, got {scale!r}")
    return float(scale)


def check_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def check_qk(q: torch.Tensor, k: torch.Tensor) -> None:
    """q ``[B, Hq, L, D]`` and k ``[B, Hkv, L, D]`` with ``Hq % Hkv == 0``, same L, device, dtype."""
    for name, t in (("q", q), ("k", k)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape [batch, heads, seq_len, head_dim], got {tuple(t.shape)}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if k.dtype != q.dtype:
        raise TypeError(f"k has dtype {k.dtype} but q has {q.dtype}: they must match")
    if k.device != q.device:
        raise ValueError(f"k is on {k.device} but q is on {q.device}: they must be on one device")
    bq, hq, lq, dq = q.shape
    bk, hk, lk, dk = k.shape
    if bk != bq:
        raise ValueError(f"k has batch {bk} but q has batch {bq}")
    if dk != dq:
        raise ValueError(f"k has head_dim {dk} but q has head_dim {dq}")
    if lk != lq:
        raise ValueError(
            f"k has seq_len {lk} but q has seq_len {lq}: UniSparse serves causal self-attention "
            "prefill, where both are the same"
        )
    if hk == 0 or hq % hk != 0:
        raise ValueError(f"q heads ({hq}) must be a multiple of k heads ({hk}) for grouped-query attention")
    if lq == 0:
        raise ValueError("q has seq_len 0: nothing to attend")


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """As :func:`check_qk`, and v shaped, typed and placed like k."""
    check_qk(q, k)
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"v must be a torch.Tensor, got {type(v).__name__}")
    if v.shape != k.shape:
        raise ValueError(f"v has shape {tuple(v.shape)} but k has {tuple(k.shape)}: they must match")
    if v.dtype != k.dtype:
        raise TypeError(f"v has dtype {v.dtype} but k has {k.dtype}: they must match")
    if v.device != k.device:
        raise ValueError(f"v is on {v.device} but k is on {k.device}")


def check_head_pool(q_heads: int, kv_heads: int, head_pool: int) -> None:
    """Head pooling must not split a pooled group across unrelated KV heads."""
    group = q_heads // kv_heads
    if q_heads % head_pool != 0:
        raise ValueError(f"head_pool={head_pool} must divide the number of q heads ({q_heads})")
    if group % head_pool != 0 and head_pool % group != 0:
        raise ValueError(
            f"head_pool={head_pool} must divide the GQA group size ({group} q heads per KV head) "
            "or be a multiple of it"
        )


def check_block_mask(mask: torch.Tensor, q: torch.Tensor, k: torch.Tensor, block_size: int) -> None:
    """A boolean ``[B or 1, Hq or Hkv or 1, nb, nb]`` mask on q's device."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"block_mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"block_mask must have dtype torch.bool, got {mask.dtype}")
    if mask.device != q.device:
        raise ValueError(f"block_mask is on {mask.device} but q is on {q.device}")
    b, hq, seq_len, _ = q.shape
    hkv = k.shape[1]
    nb = num_blocks(seq_len, block_size)
    if mask.dim() != 4:
        raise ValueError(f"block_mask must have shape [batch, heads, {nb}, {nb}], got {tuple(mask.shape)}")
    mb, mh, mq, mk = mask.shape
    if mb not in (1, b) or mh not in (1, hq, hkv) or (mq, mk) != (nb, nb):
        raise ValueError(
            f"block_mask has shape {tuple(mask.shape)}; expected [{b} or 1, {hq} (q heads) or {hkv} "
            f"(kv heads) or 1, {nb}, {nb}] for seq_len={seq_len} and block_size={block_size}"
        )


def check_block_size(block_size: int) -> None:
    if not isinstance(block_size, int) or block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size!r}")


def num_blocks(seq_len: int, block_size: int) -> int:
    return -(-seq_len // block_size)


def resolve_backend(backend: str, device: torch.device) -> str:
    """``"auto"`` means Triton on CUDA and the PyTorch reference elsewhere.

    The environment variable ``UNISPARSE_BACKEND`` replaces ``"auto"`` (an explicit choice
    by the caller wins over it).
    """
    check_backend(backend)
    if backend == "auto":
        backend = os.environ.get("UNISPARSE_BACKEND", "auto") or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"UNISPARSE_BACKEND must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" else "torch"
    if backend == "triton" and device.type != "cuda" and not triton_interpreting():
        raise ValueError(
            f"backend='triton' needs CUDA tensors (got {device}); on CPU set TRITON_INTERPRET=1 "
            "before importing unisparse, or use backend='torch'"
        )
    return backend


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0", "false", "False")


def check_triton_inputs(q: torch.Tensor) -> None:
    """What the Triton kernels take: fp16/bf16/fp32 and head dims 32/64/128/256."""
    if q.dtype not in TRITON_DTYPES:
        raise TypeError(
            f"the Triton backend takes float16, bfloat16 or float32 inputs, got {q.dtype}; "
            "use backend='torch' for other dtypes"
        )
    if q.shape[-1] not in TRITON_HEAD_DIMS:
        raise ValueError(
            f"the Triton backend takes head_dim in {TRITON_HEAD_DIMS}, got {q.shape[-1]}; "
            "use backend='torch' for other head sizes"
        )
