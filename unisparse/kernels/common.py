"""Small decisions shared by the kernel launchers."""

from __future__ import annotations

import torch

from ..validation import triton_interpreting

LOG2E = 1.4426950408889634  # exp(x) = exp2(x * LOG2E): the kernels work in base 2


def dot_precision(dtype: torch.dtype) -> str:
    """float32 inputs get exact float32 products; half types use the tensor cores as they are."""
    return "ieee" if dtype == torch.float32 else "tf32"


def needs_upcast(dtype: torch.dtype) -> bool:
    """Triton's CPU interpreter returns garbage from ``tl.dot`` on bfloat16 (seen with Triton 3.9 in its interpreter):
    there, bf16 tiles are widened to float32 before each dot. On the GPU nothing changes."""
    return dtype == torch.bfloat16 and triton_interpreting()
