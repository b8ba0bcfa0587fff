"""The kernel equivalence tests on a CUDA GPU, in bfloat16 at real sizes (up to 32K tokens).

Run on the device machine with ``pytest -m gpu``. Inputs are structured (sinks, local band,
stripes, retrieval) at Qwen2-VL-7B's language-model head layout; references run in float32
on the same GPU (float64 naive attention is too slow at 32K).
"""

import pytest
import torch

import unisparse
from unisparse import reference as R
from unisparse.config import UniSparseConfig
from unisparse.kernels import block_sparse, selection
from unisparse.testing import random_block_mask, structured_qkv

from helpers import TOLERANCE, poisoned_like, rel_err, top_p_violations

pytestmark = pytest.mark.gpu


def inputs(hq, hkv, seq_len, d, dtype, seed):
    return (t.to("cuda", dtype) for t in structured_qkv(1, hq, hkv, seq_len, d, seed=seed))


def check_selection(q, k, cfg, tol):
    """Scores match the reference, and the mask is Top-P of the reference scores up to near-ties:
    every block where it differs is one that the kernel's score error (per row: twice the largest
    and the summed absolute error) can swap with another or move across the threshold
    (:func:`helpers.top_p_violations`, which fails deliberately wrong masks in the CPU suite)."""
    nb = -(-q.shape[2] // cfg.block_size)
    out = poisoned_like((q.shape[0], q.shape[1] // cfg.head_pool, nb, nb), torch.float32, "cuda")
    scores = selection.block_scores(q, k, cfg, out=out)
    ref = R.block_scores(q, k, cfg)
    assert rel_err(scores, ref) < tol
    row_err = ((scores - ref).abs().sum(-1) / ref.sum(-1)).max().item()
    assert row_err < 1e-2, row_err
    mask = unisparse.select_blocks(q, k, cfg, backend="triton")
    hp = cfg.head_pool
    assert torch.equal(R.expand_heads(mask[:, ::hp], hp), mask)
    err = (scores.double() - ref.double()).abs()
    floor = 1e-6 * ref.double().sum(-1, keepdim=True)
    bad = top_p_violations(mask[:, ::hp], [ref], cfg, 2 * err.amax(-1, keepdim=True) + floor,
                           2 * err.sum(-1, keepdim=True) + floor)
    assert bad == 0, f"{bad} blocks not explained by the score error (worst row L1 error {row_err:.2e})"
    return mask


def check_attention(q, k, v, mask, block_size, dtype):
    out = block_sparse.block_sparse_attention(q, k, v, mask, block_size, out=poisoned_like(q.shape, dtype, "cuda"))
    ref = R.block_sparse_attention(q.float(), k.float(), v.float(), mask, block_size)
    err = rel_err(out, ref)
    assert err < TOLERANCE[dtype], err
    return err


@pytest.mark.parametrize("seq_len,head_dim", [(4096, 128), (8191, 64), (16384, 128), (32768, 128), (32768, 64)])
def test_bf16_selection_and_attention_qwen2vl_shapes(seed, seq_len, head_dim):
    q, k, v = inputs(28, 4, seq_len, head_dim, torch.bfloat16, seed)
    cfg = UniSparseConfig(top_p=0.95)
    mask = check_selection(q, k, cfg, tol=2e-3)
    density = unisparse.block_density(mask)
    assert 0.0 < density < 1.0
    err = check_attention(q, k, v, mask, 128, torch.bfloat16)
    print(f"L={seq_len} D={head_dim}: density {density:.3f}, attention rel. error {err:.2e}")


# Qwen2-VL-7B (28 q heads, 4 KV heads: groups of 7) and -2B (12 q, 2 KV: groups of 6); head_pool
# must divide the group or be a multiple of it.
@pytest.mark.parametrize("hq,hkv,head_pool", [(28, 4, 7), (28, 4, 14), (28, 4, 28), (12, 2, 2), (12, 2, 3), (12, 2, 12)])
def test_bf16_head_pooling(seed, hq, hkv, head_pool):
    q, k, v = inputs(hq, hkv, 8192, 128, torch.bfloat16, seed)
    cfg = UniSparseConfig(top_p=0.9, head_pool=head_pool)
    mask = check_selection(q, k, cfg, tol=2e-3)
    check_attention(q, k, v, mask, 128, torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("head_dim", [32, 64, 128, 256])
@pytest.mark.parametrize("mask_heads", ["q", "kv"])
def test_dtypes_head_dims_random_masks(seed, dtype, head_dim, mask_heads):
    hq, hkv, seq_len = 8, 2, 3001
    q, k, v = inputs(hq, hkv, seq_len, head_dim, dtype, seed)
    mask = random_block_mask(1, hq if mask_heads == "q" else hkv, seq_len, 128, 0.4, seed=seed).cuda()
    check_attention(q, k, v, mask, 128, dtype)


@pytest.mark.parametrize("block_size", [64, 256])
def test_other_block_sizes(seed, block_size):
    q, k, v = inputs(8, 2, 5000, 128, torch.bfloat16, seed)
    cfg = UniSparseConfig(block_size=block_size, top_p=0.9)
    mask = check_selection(q, k, cfg, tol=2e-3)
    check_attention(q, k, v, mask, block_size, torch.bfloat16)


def test_sparse_attention_matches_flex_attention_with_same_mask(seed):
    """An independent implementation as a cross-check: FlexAttention with our block mask."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    q, k, v = inputs(28, 4, 8192, 128, torch.bfloat16, seed)
    out, mask = unisparse.sparse_attention(q, k, v, UniSparseConfig(min_seq_len=0, max_density=1.0), return_mask=True)

    def mask_mod(b, h, q_idx, kv_idx):
        return mask[b, h, q_idx // 128, kv_idx // 128] & (kv_idx <= q_idx)

    block_mask = create_block_mask(mask_mod, 1, 28, 8192, 8192, device="cuda")
    ref = flex_attention(q, k, v, block_mask=block_mask, enable_gqa=True)
    assert rel_err(out, ref) < TOLERANCE[torch.bfloat16]
