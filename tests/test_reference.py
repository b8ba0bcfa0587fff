"""The PyTorch reference against plain float64 computations and hand-checked cases."""

import math

import pytest
import torch

import unisparse
from unisparse import reference as R
from unisparse.config import UniSparseConfig

from helpers import naive_attention, rel_err, token_mask_from_blocks


def randn(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("seq_len,factor", [(64, 8), (67, 8), (5, 8), (130, 4)])
def test_pool_sequence_averages_groups_and_short_tail(seed, seq_len, factor):
    x = randn(2, 3, seq_len, 16)
    pooled = R.pool_sequence(x, factor)
    n = math.ceil(seq_len / factor)
    assert pooled.shape == (2, 3, n, 16)
    for i in range(n):
        expected = x[:, :, i * factor : (i + 1) * factor].mean(2)
        torch.testing.assert_close(pooled[:, :, i], expected)


@pytest.mark.parametrize("q_heads,kv_heads", [(4, 4), (8, 2), (7, 1)])
@pytest.mark.parametrize("seq_len", [1, 77, 256, 301])
def test_reference_all_blocks_is_dense_attention(seed, q_heads, kv_heads, seq_len):
    q, k, v = randn(2, q_heads, seq_len, 32), randn(2, kv_heads, seq_len, 32), randn(2, kv_heads, seq_len, 32)
    nb = math.ceil(seq_len / 64)
    mask = torch.ones(1, 1, nb, nb, dtype=torch.bool)
    out = R.block_sparse_attention(q, k, v, mask, block_size=64)
    assert rel_err(out, naive_attention(q, k, v)) < 1e-12


@pytest.mark.parametrize("mask_heads", ["q", "kv", "one"])
def test_reference_random_block_mask_matches_naive_masked_attention(seed, mask_heads):
    b, hq, hkv, seq_len, d, bs = 2, 6, 2, 203, 32, 32
    q, k, v = randn(b, hq, seq_len, d), randn(b, hkv, seq_len, d), randn(b, hkv, seq_len, d)
    nb = math.ceil(seq_len / bs)
    heads = {"q": hq, "kv": hkv, "one": 1}[mask_heads]
    mask = torch.rand(b, heads, nb, nb) < 0.5
    mask[:, :, 2, :] = False  # a block row without its diagonal: those queries see nothing
    out = R.block_sparse_attention(q, k, v, mask, block_size=bs, scale=0.3)
    token_mask = token_mask_from_blocks(mask, seq_len, bs, hq).expand(b, hq, seq_len, seq_len)
    ref = naive_attention(q, k, v, token_mask, scale=0.3)
    assert rel_err(out, ref) < 1e-12
    assert torch.all(out[:, :, 2 * bs : 3 * bs] == 0)


def test_block_scores_match_explicit_compressed_attention(seed):
    cfg = UniSparseConfig(block_size=32, q_pool=4, k_pool=8)
    seq_len, d = 150, 16
    q, k = randn(1, 4, seq_len, d), randn(1, 2, seq_len, d)
    scores = R.block_scores(q, k, cfg).double()
    # Explicitly: every composite query against every visible composite key.
    nq, nk, nb = math.ceil(seq_len / 4), math.ceil(seq_len / 8), math.ceil(seq_len / 32)
    expected = torch.zeros(1, 4, nb, nb, dtype=torch.float64)
    for h in range(4):
        qc = torch.stack([q[0, h, i * 4 : (i + 1) * 4].mean(0) for i in range(nq)])
        kc = torch.stack([k[0, h // 2, j * 8 : (j + 1) * 8].mean(0) for j in range(nk)])
        for i in range(nq):
            last = min(i * 4 + 3, seq_len - 1)
            visible = [j for j in range(nk) if j * 8 <= last]
            p = torch.softmax(qc[i] @ kc[visible].T / math.sqrt(d), -1)
            for j, pj in zip(visible, p):
                expected[0, h, i * 4 // 32, j * 8 // 32] += pj
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)
    rows = torch.tensor([min(8, nq - 8 * m) for m in range(nb)], dtype=torch.float64)
    torch.testing.assert_close(scores.sum(-1)[0], rows.expand(4, nb), rtol=1e-5, atol=1e-5)
    assert torch.all(scores.triu(1) == 0)


@pytest.mark.parametrize("hp", [1, 2, 4])
def test_variance_correction_matches_explicit_corrected_logits(seed, hp):
    alpha, seq_len, d = 0.7, 150, 16
    cfg = UniSparseConfig(block_size=32, q_pool=4, k_pool=8, head_pool=hp, variance_correction=alpha)
    q, k = randn(1, 4, seq_len, d), randn(1, 2, seq_len, d)
    scores = R.block_scores(q, k, cfg).double()
    # Explicitly: logit = s qc.kc + alpha s^2 / 2 sum_d qc_d^2 var_d over the group's keys
    # (tokens, and with head_pool the query heads' own KV heads).
    s = 1 / math.sqrt(d)
    nq, nk, nb = math.ceil(seq_len / 4), math.ceil(seq_len / 8), math.ceil(seq_len / 32)
    expected = torch.zeros(1, 4 // hp, nb, nb, dtype=torch.float64)
    for g in range(4 // hp):
        heads = range(g * hp, (g + 1) * hp)
        qc = torch.stack([torch.cat([q[0, h, i * 4 : (i + 1) * 4] for h in heads]).mean(0) for i in range(nq)])
        groups = [torch.cat([k[0, h // 2, j * 8 : (j + 1) * 8] for h in heads]) for j in range(nk)]
        kc = torch.stack([x.mean(0) for x in groups])
        kv = torch.stack([x.var(0, unbiased=False) for x in groups])
        for i in range(nq):
            last = min(i * 4 + 3, seq_len - 1)
            visible = [j for j in range(nk) if j * 8 <= last]
            logits = s * qc[i] @ kc[visible].T + alpha * s * s / 2 * (qc[i] ** 2) @ kv[visible].T
            for j, pj in zip(visible, torch.softmax(logits, -1)):
                expected[0, g, i * 4 // 32, j * 8 // 32] += pj
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)


def test_variance_correction_off_by_default_and_a_no_op_on_constant_groups(seed):
    q, k = randn(1, 2, 256, 32, dtype=torch.float32), randn(1, 2, 256, 32, dtype=torch.float32)
    cfg = UniSparseConfig(block_size=64)
    assert cfg.variance_correction == 0.0
    on = cfg.replace(variance_correction=1.0)
    # keys constant within each composite group: no spread, nothing to correct
    k_flat = k[:, :, ::8].repeat_interleave(8, dim=2)
    torch.testing.assert_close(R.block_scores(q, k_flat, on), R.block_scores(q, k_flat, cfg), rtol=1e-5, atol=1e-6)
    assert not torch.equal(R.block_scores(q, k, on), R.block_scores(q, k, cfg))


def test_variance_correction_raises_a_block_with_one_standout_key():
    # One query; key block 0 holds one key aligned with it among opposite ones (mean ~0), key
    # block 1 holds only weakly aligned keys with a higher mean. The plain estimate prefers
    # block 1; the true mass (and the corrected estimate) prefer block 0.
    d, bs = 4, 16
    q = torch.zeros(1, 1, 3 * bs, d)
    q[..., 0] = 4.0
    k = torch.zeros(1, 1, 3 * bs, d)
    k[0, 0, :bs, 0] = -0.4
    k[0, 0, 3, 0] = 3.0
    k[0, 0, bs : 2 * bs, 0] = 0.3
    k[0, 0, 2 * bs :, 0] = -2.0
    cfg = UniSparseConfig(block_size=bs, q_pool=bs, k_pool=bs, top_p=0.5, sink_blocks=0, local_blocks=1)
    plain = R.block_scores(q, k, cfg)[0, 0, 2]
    corrected = R.block_scores(q, k, cfg.replace(variance_correction=1.0))[0, 0, 2]
    true = R.true_block_mass(q, k, bs)[0, 0, 2]
    assert plain[1] > plain[0] and true[0] > true[1] and corrected[0] > corrected[1]


def test_variance_correction_keeps_the_union_of_both_estimates(seed):
    q, k = randn(1, 4, 640, 32, dtype=torch.float32), randn(1, 2, 640, 32, dtype=torch.float32)
    k = k * (4 * torch.rand(1, 2, 80, 1)).repeat_interleave(8, dim=2)  # groups of unequal spread
    cfg = UniSparseConfig(block_size=64, top_p=0.8)
    on = cfg.replace(variance_correction=1.0)
    mask = unisparse.select_blocks(q, k, on, backend="torch")
    plain = R.top_p_mask(R.block_scores(q, k, cfg), cfg)
    corrected = R.top_p_mask(R.block_scores(q, k, on), on)
    assert torch.equal(mask, plain | corrected)
    assert not torch.equal(plain, corrected)


def _mask_of(row_scores, top_p, **cfg):
    """Top-P on a single query block row placed last in a 4x4 score matrix."""
    scores = torch.zeros(4, 4)
    scores[3] = torch.tensor(row_scores)
    config = UniSparseConfig(block_size=16, top_p=top_p, **{"local_blocks": 1, **cfg})
    kept = R.top_p_mask(scores[None, None], config)[0, 0, 3]
    return [i for i in range(4) if kept[i]]


def test_top_p_hand_checked_cases():
    # diagonal (0.1) forced first; then 0.5 (block 0); 0.3 (block 2) only if mass before < p.
    assert _mask_of([0.5, 0.1, 0.3, 0.1], 0.6, sink_blocks=0) == [0, 3]
    assert _mask_of([0.5, 0.1, 0.3, 0.1], 0.7, sink_blocks=0) == [0, 2, 3]
    assert _mask_of([0.5, 0.1, 0.3, 0.1], 0.95, sink_blocks=0) == [0, 1, 2, 3]
    # a forced sink counts its mass: 0.05 + 0.1 then 0.7 (block 1) reaches 0.8
    assert _mask_of([0.05, 0.7, 0.15, 0.1], 0.8, sink_blocks=1) == [0, 1, 3]
    # local_blocks=2 forces block 2 as well
    assert _mask_of([0.6, 0.3, 0.05, 0.05], 0.5, sink_blocks=0, local_blocks=2) == [0, 2, 3]
    # p = 1 keeps every causal block, even zero-mass ones
    assert _mask_of([0.0, 0.0, 0.0, 1.0], 1.0, sink_blocks=0) == [0, 1, 2, 3]


def test_top_p_ties_break_toward_lower_block_index():
    assert _mask_of([0.25, 0.25, 0.25, 0.25], 0.5, sink_blocks=0) == [0, 3]
    assert _mask_of([0.1, 0.3, 0.3, 0.3], 0.5, sink_blocks=0) == [1, 3]


def test_select_blocks_always_keeps_diagonal_and_nothing_above_it(seed):
    q, k = randn(1, 4, 1000, 32, dtype=torch.float32), randn(1, 2, 1000, 32, dtype=torch.float32)
    for cfg in [UniSparseConfig(block_size=64, top_p=0.05, sink_blocks=0),
                UniSparseConfig(block_size=64, top_p=0.5, sink_blocks=2, local_blocks=3)]:
        mask = unisparse.select_blocks(q, k, cfg, backend="torch")
        nb = mask.shape[-1]
        assert mask.shape == (1, 4, nb, nb) and nb == 16
        assert mask.diagonal(dim1=-2, dim2=-1).all()
        assert not mask.triu(1).any()
        rows = torch.arange(nb)
        assert mask[..., :, : cfg.sink_blocks].tril().eq(torch.ones(nb, cfg.sink_blocks, dtype=torch.bool).tril()).all()
        for back in range(cfg.local_blocks):
            assert mask[..., rows[back:], rows[back:] - back].all()


def test_head_pool_shares_one_selection_per_group(seed):
    from unisparse.testing import structured_qkv

    q, k, _ = structured_qkv(1, 8, 2, 1024, 32, seed=seed)
    cfg = UniSparseConfig(block_size=64, top_p=0.9, head_pool=2)
    mask = unisparse.select_blocks(q, k, cfg, backend="torch")
    assert torch.equal(mask[:, 0::2], mask[:, 1::2])
    qc, kc = R.composite_tokens(q, k, cfg)
    torch.testing.assert_close(qc[:, 1], R.pool_sequence(q[:, 2:4], 8).mean(1))
    torch.testing.assert_close(kc[:, 1], R.pool_sequence(k[:, 0:1], 8)[:, 0])
    # MHA with head_pool=2 averages the keys of the two heads too.
    cfg_mha = UniSparseConfig(block_size=64, head_pool=2)
    _, kc2 = R.composite_tokens(q[:, :4], q[:, :4], cfg_mha)
    torch.testing.assert_close(kc2[:, 1], R.pool_sequence(q[:, 2:4], 8).mean(1))


def test_top_p_one_sparse_attention_equals_dense(seed):
    q, k, v = randn(1, 4, 333, 32), randn(1, 2, 333, 32), randn(1, 2, 333, 32)
    cfg = UniSparseConfig(block_size=32, top_p=1.0, min_seq_len=0)
    out, mask = unisparse.sparse_attention(q, k, v, cfg, return_mask=True, backend="torch")
    assert unisparse.block_density(mask) == 1.0
    assert rel_err(out, naive_attention(q, k, v)) < 1e-12


def test_selection_recalls_the_true_attention_mass_on_structured_inputs(seed):
    """On inputs with real structure the estimate keeps about top_p of the true mass while
    dropping most blocks (flat noise could not show this)."""
    from unisparse.testing import structured_qkv

    seq_len, bs = 2048, 64
    q, k, _ = structured_qkv(1, 4, 2, seq_len, 64, seed=seed)
    cfg = UniSparseConfig(block_size=bs, top_p=0.9)
    mask = unisparse.select_blocks(q, k, cfg, backend="torch")
    logits = q @ k.repeat_interleave(2, 1).transpose(-1, -2) / 8.0
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
    probs = logits.masked_fill(~causal, float("-inf")).softmax(-1)
    nb = seq_len // bs
    true_mass = probs.view(1, 4, nb, bs, nb, bs).sum((3, 5)) / bs  # per query block, sums to 1
    recall = (true_mass * mask).sum(-1)
    assert unisparse.block_density(mask) < 0.6
    # bounds hold with margin over 30 seeds (mean recall 0.83-0.93, 10th percentile >= 0.49)
    assert recall.mean() > 0.78
    assert recall.quantile(0.1) > 0.4
