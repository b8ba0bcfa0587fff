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


@pytest.mark.parametrize("dtype,head_dim,seq_len", [(torch.bfloat16, 128, 2000), (torch.float16, 64, 1664),
                                                    (torch.bfloat16, 128, 8192)])
def test_ordered_gluon_kernel_matches_the_reference(seed, dtype, head_dim, seq_len):
    """The warp-specialized Gluon kernel's ORDERED mode (Hopper): heads in the spatial order, kept
    blocks anywhere (above the diagonal too), a row that keeps nothing, a partial last block;
    against masked attention over original positions (reordered.attention in float32)."""
    from unisparse import reordered
    from unisparse.kernels import block_sparse_ordered as O
    from unisparse.layout import VideoLayout, VideoSpan, token_order
    from unisparse.testing import video_qkv

    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the Gluon kernels are for Hopper")
    q, k, v, info = video_qkv(1, 8, 2, seq_len, head_dim, frame_tokens=64, seed=seed, return_layout=True)
    q, k, v = (t.to("cuda", dtype) for t in (q, k, v))
    layout = VideoLayout((VideoSpan.contiguous(info["video_start"], info["frames"], 8, 8),))
    orders = torch.stack([token_order(seq_len, layout, n, "cuda") for n in ("frame", "spatial")])
    nb = -(-seq_len // 128)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    mask = torch.rand(1, 8, nb, nb, device="cuda", generator=gen) < 0.4
    mask[0, 3, 1] = False  # a row that keeps nothing gets zeros
    sel = reordered.Selection(mask, torch.tensor([[1, 1]], device="cuda"), orders, ("frame", "spatial"),
                              torch.zeros(1, 2, 2, dtype=torch.long))
    heads = sel.order_of_heads()
    work = poisoned_like(q.shape, dtype, "cuda")
    qo = torch.gather(q, 2, orders[heads][..., None].expand(-1, -1, -1, head_dim)).contiguous()
    assert O.ordered_kernel_for(qo, qo[:, :2], qo[:, :2], work) == "gluon"
    out = O.ordered_attention(q, k, v, mask, heads, orders, 128, out=poisoned_like(q.shape, dtype, "cuda"),
                              work=work, kernel="gluon")
    ref = reordered.attention(q.float(), k.float(), v.float(), sel, 128)
    err = rel_err(out, ref)
    assert err < TOLERANCE[dtype], err
    tri = O.ordered_attention(q, k, v, mask, heads, orders, 128, kernel="triton")
    assert rel_err(out, tri) < TOLERANCE[dtype]


@pytest.mark.parametrize("choice", [[[1, 1]], [[0, 1]], [[1, 0], [1, 1]]])
def test_ordered_attention_waits_on_nothing_once_the_selection_is_on_the_host(seed, choice):
    """After the one host read of a selection (its density, which the fallback decision needs), the
    reordered attention launches without a device sync (every head moved, some heads moved, batch
    rows that differ), and matches masked attention over original positions."""
    from unisparse import reordered
    from unisparse.layout import VideoLayout, VideoSpan, token_order
    from unisparse.testing import video_qkv

    b, seq_len = len(choice), 4096
    q, k, v, info = video_qkv(b, 8, 2, seq_len, 128, frame_tokens=64, seed=seed, return_layout=True)
    q, k, v = (t.to("cuda", torch.bfloat16) for t in (q, k, v))
    layout = VideoLayout((VideoSpan.contiguous(info["video_start"], info["frames"], 8, 8),))
    orders = torch.stack([token_order(seq_len, layout, n, "cuda") for n in ("frame", "spatial")])
    nb = seq_len // 128
    gen = torch.Generator(device="cuda").manual_seed(seed)
    mask = torch.rand(b, 8, nb, nb, device="cuda", generator=gen) < 0.3
    sel = reordered.Selection(mask, torch.tensor(choice, device="cuda"), orders, ("frame", "spatial"),
                              torch.zeros(b, 2, 2, dtype=torch.long))
    assert 0 < sel.density() and sel.reorders
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = unisparse.ordered_block_sparse_attention(q, k, v, sel, backend="triton")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ref = reordered.attention(q.float(), k.float(), v.float(), sel, 128)
    assert rel_err(out, ref) < TOLERANCE[torch.bfloat16]


@pytest.mark.parametrize("splits,one_pass", [(4, False), (16, False), (16, True)])
def test_exact_mass_with_keys_split_matches_the_one_launch_kernel(seed, splits, one_pass):
    """Calibration's exact row mass with the keys split over programs (two launches) against the
    one-launch kernel at 16K tokens, bf16, 28/4 heads: the same mass per block, rows summing to 1."""
    from unisparse import calibration

    q, k, _ = inputs(28, 4, 16384, 128, torch.bfloat16, seed)
    blocks = calibration.sample_query_blocks(128, 16, "cuda")
    pos = calibration.sample_positions(blocks, 128, 16, 16384)
    want = selection.exact_row_mass(q, k, pos, 16, 128, key_splits=1)
    got = selection.exact_row_mass(q, k, pos, 16, 128, key_splits=splits, one_pass=one_pass,
                                   out=poisoned_like(want.shape, torch.float32, "cuda"))
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(got.sum(-1), torch.full_like(got[..., 0], 16.0), atol=1e-2, rtol=0)


@pytest.mark.parametrize("nb", [256, 1024])
def test_one_launch_top_p_matches_the_definition(seed, nb):
    """unisparse.kernels.top_p against unisparse.masks.top_p_mask on wide rows: the same blocks up
    to float32 summation order (a block whose preceding mass is at the threshold may flip), causal
    rows, and rows with given visibility (any block, above the diagonal too) for some query blocks."""
    from unisparse import masks
    from unisparse.kernels import top_p as K

    gen = torch.Generator(device="cuda").manual_seed(seed)
    scores = torch.rand(1, 8, nb, nb, device="cuda", generator=gen) ** 4
    cfg = UniSparseConfig(top_p=0.9)
    got = K.top_p_mask(scores, 0.9, sink_blocks=1, local_blocks=2)
    want = masks.top_p_mask(scores, 0.9, sink_blocks=1, local_blocks=2)
    floor = 1e-5 * scores.double().sum(-1, keepdim=True)
    assert top_p_violations(got, [scores], cfg, floor, floor) == 0
    assert (got != want).any(-1).float().mean().item() < 0.01
    rows = torch.arange(0, nb, 7, device="cuda")
    visible = torch.rand(rows.numel(), nb, device="cuda", generator=gen) < 0.6
    some = scores[..., rows, :]
    got = K.top_p_mask(some, 0.8, sink_blocks=1, local_blocks=2, visible=visible, rows=rows)
    want = masks.top_p_mask(some, 0.8, sink_blocks=1, local_blocks=2, visible=visible, rows=rows)
    differs = (got != want).sum(-1)
    assert differs.max().item() <= 1 and (differs > 0).float().mean().item() < 0.01
    assert not (got & ~visible).any()


@pytest.mark.parametrize("seq_len", [8192, 32768])
def test_calibrated_selection_on_video_shaped_attention(seed, seq_len):
    """Recall-calibrated Top-P in bf16 at Qwen2-VL-7B's heads: the one-launch exact mass of the sampled
    rows matches float32 attention, the thresholds the Triton path picks reach the recall on those
    rows, and the mask keeps fewer blocks than the plain rule on video-shaped attention."""
    from unisparse import calibration
    from unisparse.testing import video_qkv

    q, k, _ = (t.to("cuda", torch.bfloat16) for t in video_qkv(1, 28, 4, seq_len, 128, frame_tokens=256, seed=seed))
    cfg = UniSparseConfig(min_seq_len=0, calibration_blocks=16, video_aware=False)
    nb = seq_len // 128
    blocks = calibration.sample_query_blocks(nb, 16, "cuda")
    pos = calibration.sample_positions(blocks, 128, 16, seq_len)
    want = calibration.exact_row_mass(q, k, pos, 16, 128)  # float32 products of the bf16 inputs
    got = selection.exact_row_mass(q, k, pos, 16, 128, out=poisoned_like(want.shape, torch.float32, "cuda"))
    assert (got - want).abs().sum(-1).max().item() < 0.02 * 16  # per sampled block, summed over its 16 rows
    scores = selection.block_scores(q, k, cfg)
    top_p = calibration.calibrated_top_p(q, k, scores, cfg, exact_mass=selection.exact_row_mass)
    mask = unisparse.select_blocks(q, k, cfg, backend="triton")
    share = want / want.sum(-1, keepdim=True)
    recall = (mask[:, :, blocks] * share).sum(-1).mean(-1)  # [1, Hq]
    assert recall.min().item() >= 0.94, recall.min().item()
    plain = unisparse.select_blocks(q, k, cfg.replace(calibration_blocks=0), backend="triton")
    assert mask.sum() < plain.sum()
    assert ((top_p >= 0.5) & (top_p <= 1.0)).all()
