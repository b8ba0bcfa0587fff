"""The logits of a query tile against a key tile with visibility applied: the device helper shared by
the block-score kernel (:mod:`.selection`) and the split-key exact-mass kernels (:mod:`.exact_mass`)."""

from __future__ import annotations

import triton
import triton.language as tl

FAR = tl.constexpr(2**30)  # a position after every real one: keys past the end, pad query rows


@triton.jit
def masked_logits(q, q_base, offs_m, n_q, k_base, offs_n, last_q_token, n_k, qk_scale, k_first_ptr,
                  K_POOL: tl.constexpr, HEAD_DIM: tl.constexpr, D_CHUNK: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, UPCAST: tl.constexpr,
                  DOT_PRECISION: tl.constexpr, ORDERED: tl.constexpr):
    """Base-2 logits of a composite-query tile against composite keys ``offs_n``; -inf where
    the key starts after the query's last token or lies past the end. ``ORDERED``: the tokens
    are in another order, and "starts" and "last" are original positions (``k_first_ptr`` holds
    each composite key's earliest; ``last_q_token`` each composite query's latest).

    ``D_CHUNK == HEAD_DIM``: the query tile ``q`` sits in registers. Wider features (the
    antidiagonal estimator's ``stride * head_dim``) do not fit there: then the dot product runs
    over ``D_CHUNK``-wide slices of queries (re-read from ``q_base``, cache-resident) and keys."""
    if D_CHUNK == HEAD_DIM:
        offs_d = tl.arange(0, HEAD_DIM)
        k = tl.load(k_base + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=offs_n[:, None] < n_k, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    else:
        offs_c = tl.arange(0, D_CHUNK)
        s = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for c in range(0, HEAD_DIM, D_CHUNK):
            qc = tl.load(q_base + offs_m[:, None] * HEAD_DIM + c + offs_c[None, :],
                         mask=offs_m[:, None] < n_q, other=0.0)
            kc = tl.load(k_base + offs_n[:, None] * HEAD_DIM + c + offs_c[None, :],
                         mask=offs_n[:, None] < n_k, other=0.0)
            if UPCAST:
                qc = qc.to(tl.float32)
                kc = kc.to(tl.float32)
            s += tl.dot(qc, tl.trans(kc), input_precision=DOT_PRECISION)
    s = s * qk_scale
    if ORDERED:
        k_first = tl.load(k_first_ptr + offs_n, mask=offs_n < n_k, other=2**30)
        visible = (k_first[None, :] <= last_q_token[:, None]) & (offs_n[None, :] < n_k)
    else:
        visible = ((offs_n * K_POOL)[None, :] <= last_q_token[:, None]) & (offs_n[None, :] < n_k)
    return tl.where(visible, s, float("-inf"))
