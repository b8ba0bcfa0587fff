"""Triton kernels against the PyTorch reference.

On a machine without CUDA these run in Triton's CPU interpreter (conftest.py), where bfloat16
dots are widened to float32 first (the interpreter's tl.dot returns garbage on bf16, seen with
Triton 3.9); on a GPU they run natively. Every
output buffer is poisoned with NaN first, so an element the kernel forgets shows up.
"""

import math

import pytest
import torch

import unisparse
from unisparse import reference as R
from unisparse.config import UniSparseConfig
from unisparse.kernels import block_sparse, pooling, selection
from unisparse.testing import random_block_mask, structured_qkv

from helpers import TOLERANCE, naive_attention, poisoned_like, rel_err, token_mask_from_blocks, top_p_violations

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float16, torch.float32, torch.bfloat16]


def make_qkv(b, hq, hkv, seq_len, d, dtype, structured, seed):
    if structured:
        q, k, v = structured_qkv(b, hq, hkv, seq_len, d, seed=seed)
    else:
        q, k, v = (torch.randn(b, h, seq_len, d) for h in (hq, hkv, hkv))
    return (t.to(DEVICE, dtype) for t in (q, k, v))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("factor,head_group,seq_len", [(8, 1, 203), (4, 2, 64), (8, 3, 9)])
def test_pooling_kernel_matches_reference(seed, dtype, factor, head_group, seq_len):
    x = torch.randn(2, 6, seq_len, 64).to(DEVICE, dtype)
    out = pooling.pool_tokens(x, factor, head_group)
    ref = R.pool_heads(R.pool_sequence(x, factor), head_group).to(dtype)
    assert out.shape == ref.shape
    assert rel_err(out, ref) < (1e-6 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("factor,head_group,seq_len", [(8, 1, 203), (4, 2, 64), (8, 3, 9)])
def test_pooling_kernel_variance_matches_reference(seed, dtype, factor, head_group, seq_len):
    k = (torch.randn(2, 6, seq_len, 64) * 3 + torch.randn(64)).to(DEVICE, dtype)
    q = torch.zeros(2, 6, seq_len, 64, dtype=dtype, device=DEVICE)  # head_pool = head_group, no GQA
    mean, var = pooling.pool_tokens(k, factor, head_group, variance=True)
    cfg = UniSparseConfig(block_size=128, k_pool=factor, head_pool=head_group)
    ref = R.composite_key_variance(q, k, cfg)
    assert var.dtype == torch.float32 and var.shape == ref.shape
    assert rel_err(var, ref) < 1e-5
    assert rel_err(mean, pooling.pool_tokens(k, factor, head_group)) == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("factor,head_group,seq_len,n_index", [(8, 1, 203, 203), (4, 2, 64, 37), (8, 3, 9, 9)])
def test_pooling_through_an_index_is_pooling_the_gathered_tokens(seed, dtype, factor, head_group, seq_len, n_index):
    """A token order pooled in place (no gathered copy): the same composite tokens as gathering first."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 6, seq_len, 64, generator=gen).to(DEVICE, dtype)
    index = torch.randperm(seq_len, generator=gen)[:n_index].to(DEVICE)
    out = pooling.pool_tokens(x, factor, head_group, index=index)
    want = pooling.pool_tokens(x.index_select(2, index), factor, head_group)
    ref = R.pool_heads(R.pool_sequence(x.index_select(2, index), factor), head_group).to(dtype)
    assert out.shape == want.shape == ref.shape
    assert rel_err(out, want) == 0
    assert rel_err(out, ref) < (1e-6 if dtype == torch.float32 else 1e-2)


SCORE_CASES = [
    # b, hq, hkv, seq_len, d, block, q_pool, k_pool, head_pool, dtype, structured
    (1, 4, 4, 517, 64, 64, 8, 8, 1, torch.float32, True),
    (2, 4, 1, 300, 128, 64, 8, 8, 2, torch.float16, False),
    (1, 7, 1, 640, 64, 128, 8, 8, 7, torch.float16, True),
    (1, 6, 2, 449, 64, 64, 4, 8, 1, torch.bfloat16, True),
    (1, 4, 4, 256, 32, 32, 8, 4, 2, torch.float32, False),
]


def checked_block_scores(q, k, cfg):
    """The kernel's block scores (written into a poisoned buffer) against the reference's: ``(scores, ref)``."""
    nb = math.ceil(q.shape[2] / cfg.block_size)
    out = poisoned_like((q.shape[0], q.shape[1] // cfg.head_pool, nb, nb), torch.float32, DEVICE)
    scores = selection.block_scores(q, k, cfg, out=out)
    ref = R.block_scores(q, k, cfg)
    # float16 tensor-core products differ from the float32 reference's summation order (~1e-5 on GPU)
    assert rel_err(scores, ref) < {torch.float32: 1e-5, torch.float16: 5e-5, torch.bfloat16: 2e-3}[q.dtype]
    return scores, ref


def score_errors(pairs):
    """Per-row bounds (largest and summed absolute error, doubled, plus float32 rounding of the
    cumulative sums) over (kernel scores, reference scores) pairs, for :func:`top_p_violations`."""
    abs_err = l1_err = 0
    for scores, ref in pairs:
        err = (scores.double() - ref.double()).abs()
        floor = 1e-6 * ref.double().abs().sum(-1, keepdim=True)
        abs_err = torch.maximum(torch.as_tensor(abs_err), 2 * err.amax(-1, keepdim=True) + floor)
        l1_err = torch.maximum(torch.as_tensor(l1_err), 2 * err.sum(-1, keepdim=True) + floor)
    return abs_err, l1_err


@pytest.mark.parametrize("b,hq,hkv,seq_len,d,block,qp,kp,hp,dtype,structured", SCORE_CASES)
def test_block_scores_kernel_matches_reference(seed, b, hq, hkv, seq_len, d, block, qp, kp, hp, dtype, structured):
    cfg = UniSparseConfig(block_size=block, q_pool=qp, k_pool=kp, head_pool=hp, top_p=0.9)
    q, k, _ = make_qkv(b, hq, hkv, seq_len, d, dtype, structured, seed)
    scores, ref = checked_block_scores(q, k, cfg)

    # Masks agree up to near-ties: every block where the kernel's mask differs from Top-P of the
    # reference scores is one the scores' error can swap or move across the threshold.
    mask = unisparse.select_blocks(q, k, cfg, backend="triton")
    assert torch.equal(R.expand_heads(mask[:, ::hp], hp), mask)
    assert top_p_violations(mask[:, ::hp], [ref], cfg, *score_errors([(scores, ref)])) == 0
    if dtype != torch.bfloat16:
        assert torch.equal(mask, unisparse.select_blocks(q, k, cfg, backend="torch"))


VARIANCE_CASES = [
    # b, hq, hkv, seq_len, d, block, q_pool, k_pool, head_pool, dtype, structured, alpha
    (1, 4, 4, 517, 64, 64, 8, 8, 1, torch.float32, True, 0.5),
    (2, 4, 1, 300, 128, 64, 8, 8, 2, torch.float16, False, 1.0),
    (1, 6, 2, 449, 64, 64, 4, 8, 6, torch.float16, True, 0.5),
    (1, 6, 2, 320, 32, 32, 8, 4, 1, torch.float32, False, 2.0),
    (1, 6, 2, 449, 64, 64, 4, 8, 1, torch.bfloat16, True, 0.5),
]


@pytest.mark.parametrize("b,hq,hkv,seq_len,d,block,qp,kp,hp,dtype,structured,alpha", VARIANCE_CASES)
def test_variance_corrected_block_scores_kernel_matches_reference(
        seed, b, hq, hkv, seq_len, d, block, qp, kp, hp, dtype, structured, alpha):
    cfg = UniSparseConfig(block_size=block, q_pool=qp, k_pool=kp, head_pool=hp, top_p=0.9,
                          variance_correction=alpha)
    q, k, _ = make_qkv(b, hq, hkv, seq_len, d, dtype, structured, seed)
    scores, ref = checked_block_scores(q, k, cfg)
    plain_cfg = cfg.replace(variance_correction=0.0)
    plain, plain_ref = selection.block_scores(q, k, plain_cfg), R.block_scores(q, k, plain_cfg)
    assert rel_err(ref, plain_ref) > 1e-4  # the correction acts

    # The mask is the union of Top-P on both estimates; it agrees up to near-ties (see above).
    mask = unisparse.select_blocks(q, k, cfg, backend="triton")
    errors = score_errors([(scores, ref), (plain, plain_ref)])
    assert top_p_violations(mask[:, ::hp], [ref, plain_ref], cfg, *errors) == 0
    if dtype != torch.bfloat16:
        assert torch.equal(mask, unisparse.select_blocks(q, k, cfg, backend="torch"))


ATTN_CASES = [
    # b, hq, hkv, seq_len, d, block, dtype, mask_heads, structured
    (1, 4, 4, 300, 64, 64, torch.float16, "q", False),
    (2, 4, 1, 517, 128, 128, torch.float16, "kv", True),
    (1, 7, 1, 259, 64, 64, torch.float32, "q", True),
    (1, 8, 2, 200, 128, 32, torch.float32, "one", False),
    (1, 4, 2, 333, 64, 64, torch.bfloat16, "kv", True),
    (1, 2, 1, 100, 32, 64, torch.float16, "q", False),
]


@pytest.mark.parametrize("b,hq,hkv,seq_len,d,block,dtype,mask_heads,structured", ATTN_CASES)
def test_block_sparse_kernel_matches_reference(seed, b, hq, hkv, seq_len, d, block, dtype, mask_heads, structured):
    q, k, v = make_qkv(b, hq, hkv, seq_len, d, dtype, structured, seed)
    heads = {"q": hq, "kv": hkv, "one": 1}[mask_heads]
    mask = random_block_mask(b, heads, seq_len, block, 0.5, seed=seed).to(DEVICE)
    out = block_sparse.block_sparse_attention(
        q, k, v, mask, block, out=poisoned_like(q.shape, dtype, DEVICE))
    token_mask = token_mask_from_blocks(mask.cpu(), seq_len, block, hq).expand(b, hq, seq_len, seq_len)
    ref = naive_attention(q, k, v, token_mask)
    assert rel_err(out, ref) < TOLERANCE[dtype]


def test_block_sparse_kernel_strided_inputs_and_empty_rows(seed):
    """Non-contiguous q/k/v (the [B, L, H, D] layout transposed) and a row without its diagonal."""
    b, hq, hkv, seq_len, d, block = 1, 4, 2, 190, 64, 64
    q = torch.randn(b, seq_len, hq, d).to(DEVICE, torch.float16).transpose(1, 2)
    k = torch.randn(b, seq_len, hkv, d).to(DEVICE, torch.float16).transpose(1, 2)
    v = torch.randn(b, seq_len, hkv, d).to(DEVICE, torch.float16).transpose(1, 2)
    mask = random_block_mask(b, hq, seq_len, block, 0.7, seed=seed).to(DEVICE)
    mask[:, 1, 1, :] = False
    out = unisparse.block_sparse_attention(q, k, v, mask, block_size=block, backend="triton")
    token_mask = token_mask_from_blocks(mask.cpu(), seq_len, block, hq)
    assert rel_err(out, naive_attention(q, k, v, token_mask)) < TOLERANCE[torch.float16]
    assert torch.all(out[:, 1, block : 2 * block] == 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sparse_attention_backends_agree_end_to_end(seed, dtype):
    q, k, v = make_qkv(1, 4, 2, 1100, 64, dtype, True, seed)
    cfg = UniSparseConfig(block_size=128, top_p=0.9, min_seq_len=0, max_density=1.0)  # never the dense fallback
    out_t, mask_t = unisparse.sparse_attention(q, k, v, cfg, return_mask=True, backend="triton")
    ref = R.block_sparse_attention(q.double(), k.double(), v.double(), mask_t, 128)
    assert rel_err(out_t, ref) < TOLERANCE[dtype]
    assert unisparse.block_density(mask_t) < 1.0


def test_top_p_one_triton_equals_dense(seed):
    q, k, v = make_qkv(1, 4, 1, 400, 64, torch.float32, False, seed)
    cfg = UniSparseConfig(block_size=64, top_p=1.0, min_seq_len=0)
    out = unisparse.sparse_attention(q, k, v, cfg, backend="triton")
    assert rel_err(out, naive_attention(q, k, v)) < TOLERANCE[torch.float32]


# XAttention's antidiagonal scores through the fused scoring kernel (features stride * D wide,
# multiplied in slices) against the PyTorch definition in unisparse.selectors.xattention.
@pytest.mark.parametrize("hq,hkv,seq_len,d,stride,dtype", [
    (4, 2, 640, 64, 16, torch.float32),
    (7, 1, 1000, 32, 8, torch.float32),   # GQA 7, a length that is no multiple of stride or block
    (2, 2, 517, 64, 16, torch.float16),
    (4, 1, 384, 128, 4, torch.float32),
])
def test_antidiagonal_kernel_matches_xattention_definition(seed, hq, hkv, seq_len, d, stride, dtype):
    from unisparse.kernels.antidiagonal import antidiagonal_block_scores as fused
    from unisparse.selectors.xattention import antidiagonal_block_scores as definition

    q, k, _ = make_qkv(1, hq, hkv, seq_len, d, dtype, True, seed)
    nb = math.ceil(seq_len / 128)
    out = poisoned_like((1, hq, nb, nb), torch.float32, DEVICE)
    scale = 1.0 / math.sqrt(d)
    scores = fused(q, k, 128, stride, scale, out=out)
    ref = definition(q, k, 128, stride, scale)
    assert rel_err(scores, ref) < {torch.float32: 1e-5, torch.float16: 1e-3}[dtype]
    # rows sum to the strided queries holding a real token
    n_real = math.ceil(seq_len / stride)
    expected = torch.tensor([min(128 * (m + 1), n_real * stride) // stride - 128 * m // stride
                             for m in range(nb)], dtype=torch.float32)
    torch.testing.assert_close(scores.sum(-1)[0].cpu(), expected.expand(hq, nb), atol=1e-3, rtol=1e-4)


def test_xattention_selector_backends_agree(seed):
    from unisparse.selectors import make_selector

    q, k, _ = make_qkv(1, 4, 2, 768, 64, torch.float32, True, seed)
    fast = make_selector("xattention", stride=8, threshold=0.9, backend="triton")(q, k)
    slow = make_selector("xattention", stride=8, threshold=0.9, backend="torch")(q, k)
    assert fast.shape == slow.shape == (1, 4, 6, 6)
    assert (fast == slow).float().mean() > 0.97  # float32: only near-ties may differ


def test_the_top_p_check_takes_near_ties_and_catches_real_selection_errors(seed):
    """The selection check used here and in the GPU suite: it passes a mask chosen from scores off by
    the kernels' error (near-ties may swap, the count may move at the threshold) and fails masks
    that drop a block clearly inside the Top-P set or keep one clearly outside it."""
    from unisparse.masks import top_p_mask

    cfg = UniSparseConfig(block_size=64, top_p=0.9, sink_blocks=1, local_blocks=1)
    q, k, _ = structured_qkv(1, 4, 2, 1024, 64, seed=seed)
    ref = R.block_scores(q, k, cfg)
    noise = ref * 1e-3 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed))
    noisy = ref + noise
    err = noise.abs()
    abs_err, l1_err = err.amax(-1, keepdim=True), err.sum(-1, keepdim=True)
    chosen = top_p_mask(noisy, 0.9, sink_blocks=1, local_blocks=1)
    exact = top_p_mask(ref, 0.9, sink_blocks=1, local_blocks=1)
    assert top_p_violations(exact, [ref], cfg, abs_err, l1_err) == 0
    assert top_p_violations(chosen, [ref], cfg, abs_err, l1_err) == 0

    # deliberately wrong: in a row that keeps some free blocks and drops others, drop the
    # highest-scoring free block, or keep the lowest-scoring dropped one, or drop a forced block
    from unisparse.masks import causal_block_mask, forced_blocks

    free = causal_block_mask(16, ref.device) & ~forced_blocks(16, 1, 1, ref.device)
    kept, dropped = (exact & free).sum(-1), (~exact & free).sum(-1)
    # a row whose forced blocks fall clearly short of Top-P (by far more than the errors allow), so
    # that dropping its best free block cannot pass as a near-tie at the threshold
    row_mass = ref.where(causal_block_mask(16, ref.device), torch.zeros(()))
    forced_mass = (row_mass * forced_blocks(16, 1, 1, ref.device)).sum(-1)
    short = 0.9 * row_mass.sum(-1) - forced_mass > 20 * l1_err[..., 0]
    h, i = [int(x) for x in ((kept > 0) & (dropped > 1) & short).nonzero()[0][1:]]
    scores = ref[0, h, i]
    top = int(scores.masked_fill(~free[i], -1.0).argmax())
    low = int(scores.masked_fill(~free[i] | exact[0, h, i], 9.0).argmin())
    assert exact[0, h, i, top] and not exact[0, h, i, low]
    for j, keep in ((top, False), (low, True), (i, False)):
        wrong = exact.clone()
        wrong[0, h, i, j] = keep
        assert top_p_violations(wrong, [ref], cfg, abs_err, l1_err) >= 1, (h, i, j, keep)
