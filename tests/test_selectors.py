"""Block selectors: the mask contract for all of them, then hand-checked cases per selector.

Every selector must return a bool ``[B, Hq, nb, nb]`` mask with nothing above the diagonal and
the diagonal kept, for batch > 1, GQA, any length (partial last block, shorter than a block,
shorter than the selector's probe window) and any float dtype. Per selector, small inputs whose
right answer is known: planted columns, diagonals and key blocks, and direct loops in float64.
"""

import math

import pytest
import torch

from unisparse import UniSparseConfig, select_blocks
from unisparse.reference import top_p_mask
from unisparse.selectors import (
    SELECTOR_NAMES,
    DenseSelector,
    FlexPrefillSelector,
    MInferenceSelector,
    OracleSelector,
    Selector,
    UniSparseSelector,
    XAttentionSelector,
    make_selector,
    plot_block_mask,
    save_mask_grid,
)
from unisparse.selectors.flexprefill import sqrt_js_divergence
from unisparse.selectors.minference import vertical_slash_to_blocks
from unisparse.selectors.xattention import antidiagonal_block_scores
from unisparse.testing import structured_qkv

# parameters that keep the selectors selective at test lengths (a few thousand tokens)
SMALL = {"flexprefill": {"min_budget": 128}, "minference": {"vertical_size": 100, "slash_size": 200}}


def selector(name, **params):
    return make_selector(name, **{**SMALL.get(name, {}), **params})


def check_contract(mask, b, hq, seq_len, block_size, device="cpu"):
    nb = -(-seq_len // block_size)
    assert mask.dtype == torch.bool
    assert tuple(mask.shape) == (b, hq, nb, nb)
    assert mask.device.type == torch.device(device).type
    assert not mask.triu(1).any(), "blocks above the diagonal are set"
    assert mask.diagonal(dim1=-2, dim2=-1).all(), "a diagonal block is missing"


def planted_block_inputs(b, hq, hkv, seq_len, d, block, key_block, strength=12.0, dtype=torch.float64, seed=0):
    """Weak noise, plus one key block that every query attends strongly."""
    gen = torch.Generator().manual_seed(seed)
    q = 0.3 * torch.randn(b, hq, seq_len, d, generator=gen, dtype=dtype)
    k = 0.3 * torch.randn(b, hkv, seq_len, d, generator=gen, dtype=dtype)
    u = torch.randn(d, generator=gen, dtype=dtype)
    u = u / u.norm()
    k[:, :, key_block * block : (key_block + 1) * block] += strength * u
    q += strength * u
    return q, k


# --------------------------------------------------------------------------- the contract, all


@pytest.mark.parametrize("name", SELECTOR_NAMES)
@pytest.mark.parametrize("inputs", ["random", "structured"])
def test_contract_batch_gqa_odd_length(name, inputs, seed):
    b, hq, hkv, seq_len, d = 2, 7, 1, 1000, 32  # GQA 7:1, partial last block
    if inputs == "random":
        q, k = torch.randn(b, hq, seq_len, d), torch.randn(b, hkv, seq_len, d)
    else:
        q, k, _ = structured_qkv(b, hq, hkv, seq_len, d, seed=seed)
    sel = selector(name)
    assert isinstance(sel, Selector) and sel.name == name and sel.block_size == 128
    check_contract(sel(q, k), b, hq, seq_len, 128)


@pytest.mark.parametrize("name", SELECTOR_NAMES)
def test_contract_structured_two_kv_heads_block_64(name):
    q, k, _ = structured_qkv(1, 14, 2, 1337, 64, seed=3)  # GQA 7:1 with two KV heads
    params = {"config": UniSparseConfig(block_size=64)} if name == "unisparse" else {"block_size": 64}
    sel = selector(name, **params)
    mask = sel(q, k)
    check_contract(mask, 1, 14, 1337, 64)
    # heads differ in the structured input: a selector that reads the heads gives them different masks
    full = torch.ones_like(mask[0, 0]).tril()
    if name not in ("dense",) and not all(torch.equal(m, full) for m in mask[0]):
        assert len({tuple(mask[0, h].flatten().tolist()) for h in range(14)}) > 1


@pytest.mark.parametrize("name", SELECTOR_NAMES)
@pytest.mark.parametrize("seq_len", [1, 40, 127, 129, 300])
def test_short_sequences_and_probe_windows_clamp(name, seq_len):
    q, k = torch.randn(2, 4, seq_len, 16), torch.randn(2, 2, seq_len, 16)
    check_contract(selector(name)(q, k), 2, 4, seq_len, 128)


@pytest.mark.parametrize("name", SELECTOR_NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_low_precision_inputs(name, dtype):
    q, k, _ = structured_qkv(1, 4, 2, 700, 32, dtype=dtype, seed=1)
    check_contract(selector(name)(q, k), 1, 4, 700, 128)


@pytest.mark.parametrize("name", SELECTOR_NAMES)
def test_scale_argument_is_used_and_checked(name):
    q, k, _ = structured_qkv(1, 4, 2, 1024, 32, seed=2)
    sel = selector(name)
    check_contract(sel(q, k, scale=0.05), 1, 4, 1024, 128)
    with pytest.raises(ValueError, match="scale"):
        sel(q, k, scale=-1.0)


@pytest.mark.parametrize("name", SELECTOR_NAMES)
def test_bad_tensors_raise(name):
    sel = selector(name)
    with pytest.raises(ValueError, match="multiple of k heads"):
        sel(torch.randn(1, 3, 256, 16), torch.randn(1, 2, 256, 16))
    with pytest.raises(ValueError, match="shape"):
        sel(torch.randn(3, 256, 16), torch.randn(1, 2, 256, 16))
    with pytest.raises(ValueError, match="seq_len"):
        sel(torch.randn(1, 2, 256, 16), torch.randn(1, 2, 200, 16))


# --------------------------------------------------------------------------- names and parameters


def test_make_selector_names_and_errors():
    for name in SELECTOR_NAMES:
        assert make_selector(name).name == name
    with pytest.raises(ValueError, match="xattention.*flexprefill.*minference.*oracle.*dense"):
        make_selector("quest")
    sel = make_selector("unisparse", top_p=0.9, block_size=64)
    assert sel.config == UniSparseConfig(top_p=0.9, block_size=64) and sel.block_size == 64
    base = UniSparseConfig(q_pool=16)
    assert make_selector("unisparse", config=base, top_p=0.8).config == base.replace(top_p=0.8)
    with pytest.raises(TypeError, match="unknown UniSparse parameters"):
        make_selector("unisparse", threshold=0.9)
    assert make_selector("xattention", stride=8, threshold=0.95) == XAttentionSelector(stride=8, threshold=0.95)


@pytest.mark.parametrize("cls,kwargs,match", [
    (XAttentionSelector, {"threshold": 0.0}, "threshold"),
    (XAttentionSelector, {"threshold": 1.5}, "threshold"),
    (XAttentionSelector, {"stride": 3}, "stride"),
    (XAttentionSelector, {"stride": 256}, "stride"),
    (XAttentionSelector, {"stride": 0}, "stride"),
    (XAttentionSelector, {"block_size": 100}, "block_size"),
    (XAttentionSelector, {"norm": 0.0}, "norm"),
    (FlexPrefillSelector, {"gamma": 0.0}, "gamma"),
    (FlexPrefillSelector, {"gamma": 1.2}, "gamma"),
    (FlexPrefillSelector, {"tau": -0.1}, "tau"),
    (FlexPrefillSelector, {"min_budget": 0}, "min_budget"),
    (FlexPrefillSelector, {"max_budget": 512}, "max_budget"),
    (FlexPrefillSelector, {"block_size": 48}, "block_size"),
    (MInferenceSelector, {"vertical_size": 0}, "vertical_size"),
    (MInferenceSelector, {"slash_size": -5}, "slash_size"),
    (MInferenceSelector, {"last_q": 0}, "last_q"),
    (MInferenceSelector, {"sink_columns": -1}, "sink_columns"),
    (MInferenceSelector, {"vertical_size": 1.5}, "vertical_size"),
    (OracleSelector, {"top_p": 0.0}, "top_p"),
    (OracleSelector, {"top_p": 1.01}, "top_p"),
    (OracleSelector, {"sink_blocks": -1}, "sink_blocks"),
    (OracleSelector, {"local_blocks": 0}, "local_blocks"),
    (OracleSelector, {"block_size": 100}, "block_size"),
    (DenseSelector, {"block_size": 7}, "block_size"),
])
def test_bad_parameters_raise_naming_them(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_unisparse_selector_bad_arguments():
    with pytest.raises(TypeError, match="UniSparseConfig"):
        UniSparseSelector({"top_p": 0.9})
    with pytest.raises(ValueError, match="backend"):
        UniSparseSelector(backend="cuda")


# --------------------------------------------------------------------------- unisparse, dense


def test_unisparse_selector_is_select_blocks(seed):
    q, k, _ = structured_qkv(2, 6, 2, 777, 32, seed=seed)
    config = UniSparseConfig(top_p=0.9, block_size=64)
    sel = UniSparseSelector(config, backend="torch")
    assert torch.equal(sel(q, k), select_blocks(q, k, config, backend="torch"))
    assert torch.equal(sel(q, k, scale=0.1), select_blocks(q, k, config, scale=0.1, backend="torch"))


def test_dense_selector_keeps_every_causal_block():
    mask = DenseSelector(block_size=32)(torch.randn(2, 4, 100, 8), torch.randn(2, 1, 100, 8))
    assert torch.equal(mask, torch.ones(2, 4, 4, 4, dtype=torch.bool).tril())


# --------------------------------------------------------------------------- oracle


def naive_block_mass(q, k, block):
    """Exact causal attention per block in float64, one head at a time, written out plainly."""
    b, hq, seq_len, d = q.shape
    group = hq // k.shape[1]
    nb = -(-seq_len // block)
    out = torch.zeros(b, hq, nb, nb, dtype=torch.float64)
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
    for h in range(hq):
        logits = q[:, h].double() @ k[:, h // group].double().transpose(-1, -2) / math.sqrt(d)
        p = torch.softmax(logits.masked_fill(~causal, float("-inf")), -1)
        for m in range(nb):
            rows = p[:, m * block : (m + 1) * block]
            for n in range(m + 1):
                out[:, h, m, n] = rows[:, :, n * block : (n + 1) * block].sum(-1).mean(-1)
    return out


def test_oracle_mass_and_mask_match_naive_float64(seed):
    q, k, _ = structured_qkv(2, 6, 2, 700, 32, seed=seed)  # batch 2, GQA 3:1, partial last block
    sel = OracleSelector(top_p=0.9, block_size=64)
    mass = naive_block_mass(q, k, 64)
    assert torch.allclose(sel.block_mass(q, k).double(), mass, atol=2e-6)
    # the selection itself, on float64 inputs so that both rank identical numbers
    q64, k64 = q.double(), k.double()
    mask = sel(q64, k64)
    oracle_rule = UniSparseConfig(block_size=64, top_p=0.9, sink_blocks=0, local_blocks=1)
    expected = top_p_mask(naive_block_mass(q64, k64, 64), oracle_rule)
    assert torch.equal(mask, expected)
    kept = (mass * mask).sum(-1)
    assert (kept >= 0.9 - 1e-6).all()


def test_oracle_sink_and_local_blocks_forced():
    q, k, _ = structured_qkv(1, 2, 1, 1024, 32, seed=4)
    mask = OracleSelector(top_p=0.5, block_size=64, sink_blocks=2, local_blocks=3)(q, k)
    nb = 16
    for i in range(nb):
        assert mask[..., i, : min(2, i + 1)].all() and mask[..., i, max(0, i - 2) : i + 1].all()


# --------------------------------------------------------------------------- xattention


def direct_antidiagonal_scores(q, k, block, stride, scale):
    """XAttention's block scores by direct loops over strided positions and antidiagonals."""
    b, hq, seq_len, d = q.shape
    group = hq // k.shape[1]
    nb = -(-seq_len // block)
    n_strided = nb * block // stride
    n_real = -(-seq_len // stride)
    per = block // stride

    def tok(x, pos):  # zero padding past the end
        return x[..., pos, :] if pos < seq_len else torch.zeros_like(x[..., 0, :])

    out = torch.zeros(b, hq, nb, nb, dtype=torch.float64)
    for h in range(hq):
        qh, kh = q[:, h].double(), k[:, h // group].double()
        logits = torch.full((b, n_strided, n_strided), float("-inf"), dtype=torch.float64)
        for t in range(n_strided):
            for u in range(min(t + 1, n_real)):
                acc = sum((tok(qh, t * stride + stride - 1 - i) * tok(kh, u * stride + i)).sum(-1)
                          for i in range(stride))
                logits[:, t, u] = acc * scale / stride
        probs = torch.softmax(logits, -1)
        probs[:, n_real:] = 0.0
        out[:, h] = probs.view(b, nb, per, nb, per).sum((2, 4))
    return out


@pytest.mark.parametrize("stride", [4, 8])
def test_xattention_antidiagonal_scores_match_direct_loop(stride, seed):
    q, k = torch.randn(2, 4, 203, 16, dtype=torch.float64), torch.randn(2, 2, 203, 16, dtype=torch.float64)
    got = antidiagonal_block_scores(q, k, 32, stride, scale=0.25)
    want = direct_antidiagonal_scores(q, k, 32, stride, scale=0.25)
    assert torch.allclose(got.double(), want, atol=1e-6)
    sel = XAttentionSelector(block_size=32, stride=stride)
    assert torch.allclose(sel.block_scores(q, k).double(), want, atol=1e-6)  # default scale 1/sqrt(16)


def naive_threshold_rule(scores, threshold):
    """XAttention's find_blocks_chunked (causal prefill), one row at a time: block 0 and the
    diagonal first, their mass counted, then descending scores while the mass before < threshold."""
    b, h, nb, _ = scores.shape
    mask = torch.zeros(b, h, nb, nb, dtype=torch.bool)
    for bi in range(b):
        for hi in range(h):
            for i in range(nb):
                row = scores[bi, hi, i, : i + 1].double()
                forced = {0, i}
                kept = sum(row[j].item() for j in forced)
                for j in forced:
                    mask[bi, hi, i, j] = True
                others = sorted((j for j in range(i + 1) if j not in forced), key=lambda j: (-row[j].item(), j))
                for j in others:
                    if kept >= threshold * row.sum().item():
                        break
                    mask[bi, hi, i, j] = True
                    kept += row[j].item()
    return mask


def test_xattention_selection_rule_matches_their_find_blocks(seed):
    q, k, _ = structured_qkv(2, 4, 2, 1100, 32, seed=seed, dtype=torch.float64)
    sel = XAttentionSelector(block_size=64, stride=8, threshold=0.9)
    assert torch.equal(sel(q, k), naive_threshold_rule(sel.block_scores(q, k), 0.9))
    assert sel(q, k)[..., 0].all(), "the first key block is always kept"


@pytest.mark.parametrize("stride", [8, 16])
def test_xattention_selects_a_key_block_every_query_attends(stride):
    q, k = planted_block_inputs(2, 4, 2, 1500, 32, block=128, key_block=4)
    mask = XAttentionSelector(stride=stride, threshold=0.5)(q, k)
    assert mask[:, :, 4:, 4].all()
    # and with so concentrated attention, few other blocks are needed
    assert mask[:, :, 6:, 1:4].float().mean() < 0.5


# --------------------------------------------------------------------------- minference


def naive_token_blocks(columns, offsets, seq_len, block):
    """Blocks touched by kept columns/diagonals, through the full token mask (float-free)."""
    nb = -(-seq_len // block)
    i = torch.arange(seq_len)[:, None]
    j = torch.arange(seq_len)[None, :]
    b, h, _ = columns.shape
    out = torch.zeros(b, h, nb, nb, dtype=torch.bool)
    for bi in range(b):
        for hi in range(h):
            tokens = (columns[bi, hi][j] | offsets[bi, hi][(i - j).clamp(min=0)]) & (j <= i)
            padded = torch.zeros(nb * block, nb * block, dtype=torch.bool)
            padded[:seq_len, :seq_len] = tokens
            out[bi, hi] = padded.view(nb, block, nb, block).any(3).any(1)
    return out | torch.eye(nb, dtype=torch.bool)


@pytest.mark.parametrize("seq_len,block", [(1000, 64), (512, 128), (300, 32)])
def test_minference_block_conversion_matches_token_level(seq_len, block, seed):
    gen = torch.Generator().manual_seed(seed)
    columns = torch.rand(2, 3, seq_len, generator=gen) < 0.01
    offsets = torch.rand(2, 3, seq_len, generator=gen) < 0.01
    got = vertical_slash_to_blocks(columns, offsets, seq_len, block)
    assert torch.equal(got, naive_token_blocks(columns, offsets, seq_len, block))


def test_minference_planted_vertical_column_turns_on_its_key_block():
    seq_len, block, col = 1000, 64, 333  # key block 5
    gen = torch.Generator().manual_seed(0)
    q = 0.3 * torch.randn(2, 4, seq_len, 64, generator=gen, dtype=torch.float64)
    k = 0.3 * torch.randn(2, 2, seq_len, 64, generator=gen, dtype=torch.float64)
    u = torch.randn(64, generator=gen, dtype=torch.float64)
    k[:, :, col] += 12 * u / u.norm()
    q += 12 * u / u.norm()
    sel = MInferenceSelector(vertical_size=31, slash_size=100, block_size=block)  # forced + one column
    columns, offsets = sel.token_pattern(q, k)
    expected_cols = torch.zeros(seq_len, dtype=torch.bool)
    expected_cols[:30] = True
    expected_cols[col] = True
    assert (columns == expected_cols).all()
    assert (offsets == (torch.arange(seq_len) < 100)).all()
    mask = sel(q, k)
    assert mask[:, :, col // block :, col // block].all()
    assert torch.equal(mask, naive_token_blocks(columns, offsets, seq_len, block))


def test_minference_planted_slash_turns_on_its_diagonal_band():
    seq_len, block, offset, last_q = 1000, 64, 5 * 64 + 17, 64  # bands 5 and 6
    gen = torch.Generator().manual_seed(1)
    d = 128
    q = 0.3 * torch.randn(1, 2, seq_len, d, generator=gen, dtype=torch.float64)
    k = 0.3 * torch.randn(1, 1, seq_len, d, generator=gen, dtype=torch.float64)
    dirs = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64)).Q.T[:last_q]
    for i in range(last_q):  # each probe query looks up the key `offset` tokens back
        pos = seq_len - last_q + i
        q[:, :, pos] += 12 * dirs[i]
        k[:, :, pos - offset] += 12 * dirs[i]
    sel = MInferenceSelector(vertical_size=30, slash_size=101, block_size=block)  # forced + one diagonal
    columns, offsets = sel.token_pattern(q, k)
    assert (columns == (torch.arange(seq_len) < 30)).all()
    assert (offsets == ((torch.arange(seq_len) < 100) | (torch.arange(seq_len) == offset))).all()
    mask = sel(q, k)
    nb = mask.shape[-1]
    rows = torch.arange(6, nb)
    assert mask[..., rows, rows - 5].all() and mask[..., rows, rows - 6].all()
    far = torch.arange(9, nb)  # band 8 off the first (sink) column: no kept diagonal, stays off
    assert not mask[..., far, far - 8].any()
    assert torch.equal(mask, naive_token_blocks(columns, offsets, seq_len, block))


def test_minference_default_budgets_are_dense_below_6096_tokens():
    q, k, _ = structured_qkv(1, 2, 1, 2048, 32, seed=0)
    assert torch.equal(MInferenceSelector()(q, k), torch.ones(1, 2, 16, 16, dtype=torch.bool).tril())


# --------------------------------------------------------------------------- flexprefill


def naive_flexprefill(q, k, gamma, tau, min_budget, block):
    """FlexPrefill's get_active_blocks, one (batch, head) at a time in float64, written plainly."""
    b, hq, seq_len, d = q.shape
    group = hq // k.shape[1]
    nb = -(-seq_len // block)
    n = min(block, seq_len)
    scale = 1 / math.sqrt(d)
    min_blocks = math.ceil(min_budget / block)
    out = torch.zeros(b, hq, nb, nb, dtype=torch.bool)
    aware = torch.zeros(b, hq, dtype=torch.bool)
    for bi in range(b):
        for h in range(hq):
            qq, kk = q[bi, h].double(), k[bi, h // group].double()
            logits = qq[seq_len - n :] @ kk.T * scale
            pos = torch.arange(seq_len)
            logits = logits.masked_fill(pos[None, :] > (seq_len - n + torch.arange(n))[:, None], float("-inf"))
            p = torch.softmax(logits, -1)
            vertical = p.mean(0)
            slash = torch.zeros(seq_len, dtype=torch.float64)
            for i in range(n):
                row = seq_len - n + i
                slash.index_add_(0, row - torch.arange(row + 1), p[i, : row + 1] / n)

            def budget(x):
                cum = torch.sort(x, descending=True).values.cumsum(0)
                return min(max(int((cum <= gamma).sum() + 1) // block + 1, min_blocks), nb)

            nv, ns = budget(vertical), budget(slash)
            vb = torch.stack([vertical[j * block : (j + 1) * block].sum() for j in range(nb)])
            sb = torch.stack([slash[s * block : (s + 1) * block].sum() for s in range(nb)])
            kavg = torch.stack([kk[j * block : (j + 1) * block].mean(0) for j in range(nb)])
            est = torch.softmax(qq[seq_len - n :].mean(0) @ kavg.T * scale, -1)
            m = (est + vb) / 2
            js = math.sqrt(0.5 * float((est * (est / m).log()).sum()) + 0.5 * float((vb * (vb / m).log()).sum()))
            aware[bi, h] = js < tau
            if js < tau:
                nv = ns = min_blocks
            vb[0] = sb[0] = float("inf")
            for j in torch.sort(vb, descending=True, stable=True).indices[:nv].tolist():
                out[bi, h, j:, j] = True
            for s in torch.sort(sb, descending=True, stable=True).indices[:ns].tolist():
                for i in range(s, nb):
                    out[bi, h, i, i - s] = True
            if js < tau:
                qavg = torch.stack([qq[j * block : (j + 1) * block].mean(0) for j in range(nb)])
                attn = (qavg @ kavg.T * scale).masked_fill(torch.ones(nb, nb, dtype=torch.bool).triu(1), float("-inf"))
                flat = torch.softmax(attn, -1).flatten()
                vals, idx = torch.sort(flat, descending=True, stable=True)
                for v, ix in zip(vals.cumsum(0).tolist(), idx.tolist()):
                    if v <= gamma * nb:
                        out[bi, h, ix // nb, ix % nb] = True
            out[bi, h] |= torch.eye(nb, dtype=torch.bool)
    return out, aware


@pytest.mark.parametrize("tau", [0.0, 0.1, 1.0])
def test_flexprefill_matches_a_plain_rewrite_of_their_algorithm(tau, seed):
    q, k, _ = structured_qkv(2, 4, 2, 1000, 32, seed=seed, dtype=torch.float64)
    sel = FlexPrefillSelector(gamma=0.9, tau=tau, min_budget=128, block_size=64)
    est = sel.estimate(q, k)
    mask, aware = naive_flexprefill(q, k, 0.9, tau, 128, 64)
    assert torch.equal(est.query_aware, aware)
    assert torch.equal(est.mask, mask)
    if tau == 0.0:
        assert not est.query_aware.any()
    if tau == 1.0:  # sqrt(JS) <= sqrt(ln 2) < 1: every head is query-aware
        assert est.query_aware.all()


@pytest.mark.parametrize("tau", [0.0, 0.1, 1.0])
def test_flexprefill_selects_a_key_block_every_query_attends(tau):
    q, k = planted_block_inputs(2, 4, 2, 2048, 32, block=128, key_block=5)
    # min_budget 256 = 2 blocks: their budget counts the forced first column block, and the
    # planted block holds all of the probe's vertical mass in 128 columns (128 // 128 + 1 = 1)
    est = FlexPrefillSelector(tau=tau, min_budget=256).estimate(q, k)
    assert est.mask[:, :, 5:, 5].all()
    assert est.mask[..., 0].all()
    if tau == 0.1:  # the pooled estimate sees the planted block too: query-aware
        assert est.query_aware.all()


def test_flexprefill_js_distance_and_short_inputs():
    p = torch.tensor([0.5, 0.5, 0.0, 0.0])
    assert sqrt_js_divergence(p, p).item() == pytest.approx(0.0, abs=1e-7)
    assert sqrt_js_divergence(p, p.flip(0)).item() == pytest.approx(math.sqrt(math.log(2)))
    sel = FlexPrefillSelector()  # min_budget 1024: dense up to 1024 tokens, as theirs
    q, k = torch.randn(1, 2, 1024, 16), torch.randn(1, 2, 1024, 16)
    assert sel.estimate(q, k).dense and sel(q, k).sum() == 2 * 8 * 9 // 2
    q, k = torch.randn(1, 2, 1200, 16), torch.randn(1, 2, 1200, 16)
    assert not sel.estimate(q, k).dense


# --------------------------------------------------------------------------- plots


def test_plot_helpers_draw_and_save(tmp_path):
    pytest.importorskip("matplotlib")
    mask = OracleSelector(block_size=64)(*structured_qkv(1, 2, 1, 1024, 32, seed=0)[:2])
    fig = plot_block_mask(mask[0, 0], title="oracle", boundaries=[300, 700], block_size=64)
    assert len(fig.axes) == 1 and "density" in fig.axes[0].get_title()
    path = tmp_path / "grid.png"
    fig = save_mask_grid({"a": mask[0, 0], "b": mask[0, 1], "dense": torch.ones(16, 16, dtype=torch.bool).tril()},
                         path, boundaries=[512], block_size=64)
    assert path.stat().st_size > 1000 and len(fig.axes) == 3
    with pytest.raises(ValueError, match="square"):
        plot_block_mask(mask[0])
