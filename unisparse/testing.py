"""Inputs with real attention structure, for tests and benchmarks.

Flat Gaussian q and k give nearly uniform causal attention: every block carries about the same
mass, so a Top-P selector keeps almost everything, and a sparse-attention benchmark on such inputs
measures nothing about selection. ``structured_qkv`` plants instead the patterns seen in trained
LLMs and VLMs, each as an additive logit bonus: a key gets a component ``c * u`` along a unit
direction ``u``, a query gets ``a * u``, adding ``a * c / sqrt(D)`` to their logit (the usual
scale). The directions are rows of one random orthonormal basis of ``R^D``, so patterns do not
interfere; on top, every q and k entry carries unit Gaussian noise (logit noise of standard
deviation about 1: the "background"). A pattern of ``n`` keys gets the bonus ``ln(L / n) + o``,
which gives it odds of about ``e**o`` against the ``~L`` background keys, at any length.

Patterns (names for ``patterns=``):

* ``"sink"``: the first ``SINK_TOKENS`` keys share a direction that every query of the head is
  aligned with: an attention sink at the start of the sequence.
* ``"local"``: a RoPE-like positional code in ``D / 2`` dimensions: pairs rotate at log-spaced
  frequencies from 1 down to ``1 / LOCAL_WIDTH`` rad per token, so ``q_i . k_t`` follows the mean
  of ``cos(w_j (i - t))``: largest at ``i = t`` and falling about linearly in ``log |i - t|`` up
  to ``LOCAL_WIDTH``, then a small, distance-dependent ripple. Attention weights decay like a
  power of the distance: a diagonal band with a soft tail.
* ``"vertical"``: per KV head, one key column per ``STRIPE_EVERY`` tokens (random positions, each
  at its own strength in [0.6, 1]) carries a shared "stripe" direction; every query of the head
  aligns with it, so these columns are attended by all later queries: vertical stripes.
* ``"retrieval"``: per KV head, ``NEEDLES`` needles. A span of ``SPAN`` keys (in the first half)
  gets a private random direction and a span of ``SPAN`` queries much later gets the same
  direction: those queries look up the distant span strongly, no other query does.

Heads differ: each query head has one dominant pattern at log-odds ``DOMINANT_ODDS`` (heads cycle
through the requested patterns in a seeded order) and the others at log-odds drawn uniformly from
``ODDS_RANGE``; stripe columns and needle spans are drawn per batch element and KV head. So a
good selector must choose per head. With the defaults, the oracle Top-P (0.95) block density
over heads is about 0.54 at 2K tokens and 0.45 at 8K (128-blocks, head dim 128; run this module
to see every head), near the ~0.52 the paper reports; flat noise gives 0.96. Values are unit
Gaussian. Everything is drawn on the CPU with one ``torch.Generator``, then moved, so a seed gives
the same tensors on any device and in any dtype. Entries stay O(1) (|x| up to about 10), so
bfloat16 and float16 are fine.

``video_qkv`` plants the structure of a video LLM's prompt instead (frames of a few hundred
tokens; grid heads that attend to the same spatial position in other frames, local and sink
heads). ``random_block_mask`` gives block masks of an exact density for kernel tests and benchmarks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

PATTERNS = ("sink", "local", "vertical", "retrieval")
SINK_TOKENS = 4
STRIPE_EVERY = 512
NEEDLES = 2
SPAN = 32
LOCAL_WIDTH = 256  # tokens over which the local pattern decays
DOMINANT_ODDS = 4.0  # log-odds of a head's dominant pattern against the background
ODDS_RANGE = (-2.0, 2.0)  # log-odds of its other patterns, uniform


def _base_bonus(seq_len: int, span: int) -> dict[str, float]:
    """Logit bonus at which a pattern's keys draw as much mass as all other keys together.

    A pattern of ``n`` keys with bonus ``ln(L / n) + o`` has odds of about ``e**o`` against the
    ``~L`` background keys (local: bonus at ``i = t``, which the positional code spreads out).
    Per-head log-odds ``o`` are added on top, see ``structured_qkv``.
    """
    log_l = math.log(max(seq_len, 2))
    return {
        "sink": log_l - math.log(SINK_TOKENS),
        "local": log_l,
        "vertical": log_l - math.log(max(1, seq_len // STRIPE_EVERY)),
        "retrieval": log_l - math.log(span),
    }


def _layout(batch, kv_heads, seq_len, span, gen):
    """Positions of stripes and needles, per (batch, KV head)."""
    n_stripes = max(1, seq_len // STRIPE_EVERY)
    stripes, needles = [], []
    for _ in range(batch * kv_heads):
        low = min(SINK_TOKENS, seq_len - 1)
        cols = low + torch.randperm(seq_len - low, generator=gen)[:n_stripes]
        stripes.append(cols.sort().values)
        spans = []
        for _ in range(NEEDLES):
            k0 = int(torch.randint(0, max(1, seq_len // 2 - span), (1,), generator=gen))
            q_lo = min(k0 + max(4 * span, (seq_len - k0) // 2), seq_len - span)
            q0 = q_lo + int(torch.randint(0, max(1, seq_len - span - q_lo + 1), (1,), generator=gen))
            spans.append((k0, q0, span))
        needles.append(spans)
    return stripes, needles


def structured_qkv(
    batch: int,
    q_heads: int,
    kv_heads: int,
    seq_len: int,
    head_dim: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    patterns: tuple[str, ...] = PATTERNS,
    strength: float | Mapping[str, float] = 1.0,
    return_layout: bool = False,
):
    """q ``[B, Hq, L, D]`` and k, v ``[B, Hkv, L, D]`` whose causal attention has real structure.

    Args:
        patterns: which of ``PATTERNS`` to plant (see the module docstring).
        strength: multiplies every pattern's logit bonus (0 gives flat noise); a mapping gives one
            multiplier per pattern name.
        return_layout: also return a dict with the planted positions and per-head mixtures:
            ``head_odds [Hq, 4]`` (log-odds, in ``PATTERNS`` order), ``sink_tokens``,
            ``stripes[b][h]`` (key columns), ``needles[b][h]`` as ``(key_start, query_start,
            length)``, with ``h`` a KV head.
    """
    if q_heads % kv_heads:
        raise ValueError(f"q_heads={q_heads} must be a multiple of kv_heads={kv_heads}")
    unknown = set(patterns) - set(PATTERNS)
    if unknown:
        raise ValueError(f"unknown patterns {sorted(unknown)}; choose from {PATTERNS}")
    n_freq = max(2, head_dim // 4)
    if head_dim < 2 * n_freq + 3:
        raise ValueError(f"head_dim must be >= 8, got {head_dim}")
    B, Hq, Hkv, L, D = batch, q_heads, kv_heads, seq_len, head_dim
    group = Hq // Hkv
    gen = torch.Generator().manual_seed(seed)
    span = max(1, min(SPAN, L // 16))

    # Per-head log-odds of each pattern against the background: one dominant pattern per head.
    odds = torch.rand(Hq, len(PATTERNS), generator=gen) * (ODDS_RANGE[1] - ODDS_RANGE[0]) + ODDS_RANGE[0]
    active = [PATTERNS.index(p) for p in patterns]
    if active:
        order = [active[i] for i in torch.randperm(len(active), generator=gen).tolist()]
        for h in range(Hq):
            odds[h, order[h % len(order)]] = DOMINANT_ODDS
    odds[:, [i for i in range(len(PATTERNS)) if i not in active]] = -math.inf  # not planted
    base = _base_bonus(L, span)
    mult = torch.tensor([
        (strength.get(p, 1.0) if isinstance(strength, Mapping) else strength) * (p in patterns)
        for p in PATTERNS
    ])
    bonus = (torch.tensor([base[p] for p in PATTERNS]) + odds).clamp_min(0.0) * mult  # [Hq, 4]

    # Split each bonus b into a key-side magnitude c (shared by the heads) and a query-side one a,
    # with a * c / sqrt(D) = b.
    root_d = math.sqrt(D)
    c = (bonus.amax(0).clamp_min(1e-6) * root_d).sqrt()  # [4]
    a = (bonus * root_d / c).view(1, Hq, 1, len(PATTERNS))
    c_sink, c_local, c_stripe, c_needle = c.tolist()

    # Orthonormal directions: [local pairs | sink | stripe | the rest, for needles].
    basis = torch.linalg.qr(torch.randn(D, D, generator=gen)).Q.T
    pos_dirs, sink_dir, stripe_dir = basis[: 2 * n_freq], basis[2 * n_freq], basis[2 * n_freq + 1]
    free = basis[2 * n_freq + 2 :]

    q = torch.randn(B, Hq, L, D, generator=gen)
    k = torch.randn(B, Hkv, L, D, generator=gen)
    v = torch.randn(B, Hkv, L, D, generator=gen)

    # local: unit-norm rotating code, q_i . k_t proportional to mean_j cos(w_j (i - t)).
    freqs = torch.logspace(0.0, -math.log10(LOCAL_WIDTH), n_freq)
    angle = torch.arange(L, dtype=torch.float32)[:, None] * freqs[None, :]
    code = torch.stack([angle.cos(), angle.sin()], dim=-1).reshape(L, 2 * n_freq) / math.sqrt(n_freq)
    code = code @ pos_dirs  # [L, D]
    k += c_local * code
    q += a[..., 1:2] * code

    # sink: the first tokens; every query of the head aligned with them.
    k[:, :, :SINK_TOKENS] += c_sink * sink_dir
    q += a[..., 0:1] * sink_dir

    # vertical stripes and retrieval needles, positions per (batch, KV head).
    stripes, needles = _layout(B, Hkv, L, span, gen)
    q += a[..., 2:3] * stripe_dir
    for b in range(B):
        for h in range(Hkv):
            cols = stripes[b * Hkv + h]
            col_strength = torch.rand(len(cols), 1, generator=gen) * 0.4 + 0.6
            k[b, h, cols] += c_stripe * col_strength * stripe_dir
            heads = slice(h * group, (h + 1) * group)
            for k0, q0, n in needles[b * Hkv + h]:
                needle = torch.randn(free.shape[0], generator=gen) @ free
                needle = needle / needle.norm()
                k[b, h, k0 : k0 + n] += c_needle * needle
                q[b, heads, q0 : q0 + n] += a[0, heads, :, 3:4] * needle

    out = tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))
    if not return_layout:
        return out
    layout = {
        "head_odds": odds,
        "sink_tokens": SINK_TOKENS if "sink" in patterns else 0,
        "stripes": [[stripes[b * Hkv + h] for h in range(Hkv)] for b in range(B)],
        "needles": [[needles[b * Hkv + h] for h in range(Hkv)] for b in range(B)],
    }
    return (*out, layout)


VIDEO_PATTERNS = ("grid", "local", "sink")
# Non-dominant patterns of a video head: weaker than structured_qkv's, because every pattern also
# adds at the query's own key (a grid head's own position is a "same position" too), where a
# strong local term would swamp the other frames.
VIDEO_ODDS_RANGE = (-6.0, -2.0)


def video_qkv(
    batch: int,
    q_heads: int,
    kv_heads: int,
    seq_len: int,
    head_dim: int,
    *,
    frame_tokens: int = 256,
    text_tokens: int = 32,
    head_mix: Mapping[str, float] | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    return_layout: bool = False,
):
    """q ``[B, Hq, L, D]`` and k, v ``[B, Hkv, L, D]`` shaped like a video LLM's prompt: a short text
    prefix, then frames of ``frame_tokens`` tokens each (frame-major, as Qwen2-VL lays them out), then
    whatever is left as text.

    Patterns, planted as in :func:`structured_qkv` (additive logit bonuses along orthogonal
    directions, unit Gaussian background):

    * ``"grid"``: a token attends to the keys at **the same spatial position in other frames**
      (MMInference's grid heads). Each spatial position has its own random direction in a subspace
      of ``D / 2`` dimensions, carried by every frame's key at that position and by the query; in
      frame order this draws slashes at the frame's period, touching every block a little.
    * ``"local"``: the positional band of :func:`structured_qkv` (width about one frame).
    * ``"sink"``: the first text tokens.

    Every key carries all three; each query head has one dominant pattern (log-odds
    ``DOMINANT_ODDS``) drawn by the weights of ``head_mix`` (default ``{"grid": 1, "local": 1,
    "sink": 1}``; ``{"grid": 1}`` makes every head a grid head) and the others at odds drawn from
    ``VIDEO_ODDS_RANGE``. ``return_layout`` adds ``{"head_kind": [Hq names], "video_start", "frames",
    "frame_tokens"}``.
    """
    if q_heads % kv_heads:
        raise ValueError(f"q_heads={q_heads} must be a multiple of kv_heads={kv_heads}")
    if head_dim < 16:
        raise ValueError(f"head_dim must be >= 16, got {head_dim}")
    if frame_tokens < 1 or text_tokens < 0 or seq_len < text_tokens + frame_tokens:
        raise ValueError(f"seq_len={seq_len} must hold text_tokens={text_tokens} and at least one frame "
                         f"of frame_tokens={frame_tokens}")
    mix = dict(head_mix or {p: 1.0 for p in VIDEO_PATTERNS})
    unknown = set(mix) - set(VIDEO_PATTERNS)
    if unknown or not any(w > 0 for w in mix.values()):
        raise ValueError(f"head_mix needs positive weights over {VIDEO_PATTERNS}, got {mix}")
    B, Hq, Hkv, L, D = batch, q_heads, kv_heads, seq_len, head_dim
    gen = torch.Generator().manual_seed(seed)
    frames = (L - text_tokens) // frame_tokens
    video_end = text_tokens + frames * frame_tokens

    # Which pattern dominates each query head: a seeded draw by the mix's weights.
    kinds = list(mix)
    weights = torch.tensor([mix[k] for k in kinds], dtype=torch.float32)
    pick = torch.multinomial(weights, Hq, replacement=True, generator=gen).tolist()
    head_kind = [kinds[i] for i in pick]
    low, high = VIDEO_ODDS_RANGE
    odds = torch.rand(Hq, len(VIDEO_PATTERNS), generator=gen) * (high - low) + low
    for h, kind in enumerate(head_kind):
        odds[h, VIDEO_PATTERNS.index(kind)] = DOMINANT_ODDS
    log_l = math.log(max(L, 2))
    base = torch.tensor([math.log(frame_tokens), log_l, log_l - math.log(SINK_TOKENS)])
    bonus = (base + odds).clamp_min(0.0)  # [Hq, 3]
    root_d = math.sqrt(D)
    c = (bonus.amax(0) * root_d).sqrt()
    # a pattern no head carries (every bonus clamped to 0) gets c = 0: its weights are 0, not 0/0
    a = (bonus * root_d / c.clamp_min(1e-12)).view(1, Hq, 1, len(VIDEO_PATTERNS))
    c_grid, c_local, c_sink = c.tolist()

    n_freq = max(2, D // 8)
    basis = torch.linalg.qr(torch.randn(D, D, generator=gen)).Q.T
    grid_space = basis[: D // 2]
    pos_dirs = basis[D // 2: D // 2 + 2 * n_freq]
    sink_dir = basis[D // 2 + 2 * n_freq]

    q = torch.randn(B, Hq, L, D, generator=gen)
    k = torch.randn(B, Hkv, L, D, generator=gen)
    v = torch.randn(B, Hkv, L, D, generator=gen)

    # grid: position s of every frame shares a direction; text tokens get directions of their own
    spatial = torch.randn(frame_tokens, grid_space.shape[0], generator=gen) @ grid_space
    spatial = spatial / spatial.norm(dim=-1, keepdim=True)
    code_grid = torch.randn(L, grid_space.shape[0], generator=gen) @ grid_space
    code_grid = code_grid / code_grid.norm(dim=-1, keepdim=True)
    code_grid[text_tokens:video_end] = spatial.repeat(frames, 1)
    k += c_grid * code_grid
    q += a[..., 0:1] * code_grid

    # local: the rotating positional code, decaying over about one frame
    freqs = torch.logspace(0.0, -math.log10(max(2, frame_tokens)), n_freq)
    angle = torch.arange(L, dtype=torch.float32)[:, None] * freqs[None, :]
    code = torch.stack([angle.cos(), angle.sin()], dim=-1).reshape(L, 2 * n_freq) / math.sqrt(n_freq)
    code = code @ pos_dirs
    k += c_local * code
    q += a[..., 1:2] * code

    # sink: the first text tokens
    k[:, :, :SINK_TOKENS] += c_sink * sink_dir
    q += a[..., 2:3] * sink_dir

    out = tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))
    if not return_layout:
        return out
    return (*out, {"head_kind": head_kind, "video_start": text_tokens, "frames": frames,
                   "frame_tokens": frame_tokens})


def causal_block_count(nb: int) -> int:
    """Blocks on or below the diagonal of an ``nb x nb`` block grid."""
    return nb * (nb + 1) // 2


def random_block_mask(
    batch: int,
    heads: int,
    seq_len: int,
    block_size: int,
    density: float,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Random causal block mask ``[B, H, nb, nb]`` (bool) keeping ``density`` of the causal blocks.

    The diagonal is always kept; of the strictly lower blocks, exactly
    ``round(density * causal_block_count(nb)) - nb`` (at least 0) are kept per (batch, head),
    chosen uniformly. ``density=1.0`` keeps every causal block. Deterministic given ``seed``.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    nb = -(-seq_len // block_size)
    rows, cols = torch.tril_indices(nb, nb, offset=-1)
    n_keep = min(len(rows), max(0, round(density * causal_block_count(nb)) - nb))
    mask = torch.eye(nb, dtype=torch.bool).repeat(batch, heads, 1, 1)
    if n_keep:
        gen = torch.Generator().manual_seed(seed)
        pick = torch.rand(batch, heads, len(rows), generator=gen).topk(n_keep, dim=-1).indices
        b_idx = torch.arange(batch)[:, None, None]
        h_idx = torch.arange(heads)[None, :, None]
        mask[b_idx, h_idx, rows[pick], cols[pick]] = True
    return mask.to(device)


def _self_check(seq_len: int, strength: float, head_dim: int = 128, block: int = 128) -> None:
    """Print, per head, the causal attention mass each planted pattern carries (queries past the
    first block) and the oracle block density: the fewest blocks per query block that hold 95% of
    its mass, over the causal blocks."""
    L, Hq, Hkv = seq_len, 8, 2
    q, k, _, lay = structured_qkv(1, Hq, Hkv, L, head_dim, strength=strength, return_layout=True)
    i = torch.arange(L)
    dist = i[:, None] - i[None, :]
    nb, rows = L // block, i >= block
    print(f"L={L} D={head_dim} strength={strength}")
    print("head  dominant   sink  local(<128)  stripes(>=128)  needle(its rows)  median max-p  oracle density")
    densities = []
    for h in range(Hq):
        hk = h // (Hq // Hkv)
        logits = q[0, h] @ k[0, hk].T / math.sqrt(head_dim)
        p = logits.masked_fill(dist < 0, float("-inf")).softmax(-1)
        sink = p[rows, : lay["sink_tokens"]].sum(-1).mean()
        local = (p * (dist < block)).sum(-1)[rows].mean()
        cols = lay["stripes"][0][hk]
        stripe = (p[:, cols] * (dist[:, cols] >= block)).sum(-1)[rows].mean()
        needle = torch.stack([p[q0 : q0 + n, k0 : k0 + n].sum(-1).mean() for k0, q0, n in lay["needles"][0][hk]]).mean()
        max_p = p.max(-1).values[rows].median()
        tiles = p.reshape(nb, block, nb, block).sum((1, 3))
        share = (tiles / tiles.sum(-1, keepdim=True)).sort(-1, descending=True).values
        densities.append(float(((share.cumsum(-1) - share) < 0.95).sum()) / causal_block_count(nb))
        dom = PATTERNS[int(lay["head_odds"][h].argmax())] if strength else "-"
        print(f"{h:4d}  {dom:9s}  {sink:5.3f}  {local:11.3f}  {stripe:14.3f}  {needle:16.3f}"
              f"  {max_p:12.3f}  {densities[-1]:14.3f}")
    print(f"mean oracle density at top_p 0.95: {sum(densities) / Hq:.3f}\n")


if __name__ == "__main__":
    _self_check(2048, 0.0)
    _self_check(2048, 1.0)
    _self_check(8192, 1.0)
    m = random_block_mask(2, 3, 4096, 128, 0.25, seed=1)
    print(f"random_block_mask(density=0.25): {float(m.sum()) / (6 * causal_block_count(32)):.4f},",
          f"diagonal kept: {bool(m.diagonal(dim1=-2, dim2=-1).all())}, upper empty: {not m.triu(1).any()}")
