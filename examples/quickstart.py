"""Quickstart: UniSparse on one attention call, against dense (no model, no video).

Builds q/k/v with real attention structure (sinks, local band, vertical stripes, retrieval;
see unisparse/testing.py) at Qwen2-VL-7B's language-model head layout, runs selection and
block-sparse attention, and prints for each Top-P threshold the density (kept / causal blocks)
and the relative error of the output against dense causal attention. Runs on CPU in well under
a minute; on a GPU it uses the Triton kernels. The configs have ``min_seq_len=0`` so that the
sparse path runs at any ``--seq-len`` (the library default runs dense below 32768 tokens).
"""

from __future__ import annotations

import argparse
import time

import torch

import unisparse
from unisparse.testing import structured_qkv


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=28)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--top-p", type=float, nargs="+", default=[0.8, 0.9, 0.95, 0.99, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q, k, v = (t.to(device, dtype) for t in structured_qkv(
        1, args.heads, args.kv_heads, args.seq_len, args.head_dim, seed=args.seed))
    print(f"UniSparse {unisparse.__version__} on {device} ({dtype}); q {tuple(q.shape)}, k/v {tuple(k.shape)}")
    dense = unisparse.dense_attention(q, k, v).float()
    print(f"{'top_p':>6} {'density':>8} {'rel. error':>11} {'time (s)':>9}")
    for top_p in args.top_p:
        config = unisparse.UniSparseConfig(top_p=top_p, min_seq_len=0)
        start = time.perf_counter()
        out, mask = unisparse.sparse_attention(q, k, v, config, return_mask=True)
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        err = ((out.float() - dense).norm() / dense.norm()).item()
        print(f"{top_p:>6.2f} {unisparse.block_density(mask):>8.3f} {err:>11.2e} {elapsed:>9.2f}")


if __name__ == "__main__":
    main()
