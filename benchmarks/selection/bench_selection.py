"""Block selection of several UniSparse configs side by side on the GPU: ms per call, density,
total (selection + block-sparse kernel) and dense SDPA cuDNN for scale, all from one run.

Why: a config that changes the estimate (``variance_correction``: a second scoring pass on
features twice as wide) costs selection time; this says how much, next to what it saves.

  python benchmarks/selection/bench_selection.py --lengths 8192 32768 131072 \\
      --configs top_p=0.95 top_p=0.991 top_p=0.991,variance_correction=0.5 --output benchmarks/selection/selection_h200
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


import unisparse
from unisparse import UniSparseConfig
from unisparse.testing import structured_qkv


def parse_config(text: str) -> UniSparseConfig:
    fields = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        fields[key] = float(value) if "." in value else int(value)
    return UniSparseConfig(min_seq_len=0, **fields)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", nargs="+", type=int, default=[8192, 32768, 131072])
    p.add_argument("--configs", nargs="+", default=["top_p=0.95", "top_p=0.991", "top_p=0.991,variance_correction=0.5"])
    p.add_argument("--heads", type=int, nargs=2, default=[28, 4], help="query and KV heads (Qwen2-VL-7B: 28 4)")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--output", help="write PREFIX.json and PREFIX.md")
    a = p.parse_args(argv)
    import triton.testing
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    rows = []
    for L in a.lengths:
        q, k, v = structured_qkv(1, a.heads[0], a.heads[1], L, a.head_dim, dtype=torch.bfloat16, device="cuda")
        ke, ve = (t.repeat_interleave(a.heads[0] // a.heads[1], dim=1) for t in (k, v))  # as bench_attention.py

        def dense():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return torch.nn.functional.scaled_dot_product_attention(q, ke, ve, is_causal=True)

        dense_ms = triton.testing.do_bench(dense)
        del ke, ve
        for text in a.configs:
            cfg = parse_config(text)
            mask = unisparse.select_blocks(q, k, cfg)
            sel_ms = triton.testing.do_bench(lambda: unisparse.select_blocks(q, k, cfg))
            kern_ms = triton.testing.do_bench(lambda: unisparse.block_sparse_attention(q, k, v, mask, block_size=cfg.block_size))
            row = {"L": L, "config": text, "density": round(float(unisparse.block_density(mask)), 4),
                   "select_ms": round(sel_ms, 3), "kernel_ms": round(kern_ms, 3), "total_ms": round(sel_ms + kern_ms, 3),
                   "cudnn_ms": round(dense_ms, 3), "x_cudnn": round(dense_ms / (sel_ms + kern_ms), 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    device = torch.cuda.get_device_name()
    lines = [f"Selection side by side on {device} (torch {torch.__version__}), bf16, heads {a.heads[0]}/{a.heads[1]}, "
             f"d={a.head_dim}, structured inputs, triton.testing.do_bench medians; total = selection + sparse kernel.",
             "", "| L | config | density | selection ms | kernel ms | total ms | SDPA cuDNN ms | x cuDNN |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['L']} | {r['config']} | {r['density']} | {r['select_ms']} | {r['kernel_ms']} | {r['total_ms']} | "
              f"{r['cudnn_ms']} | {r['x_cudnn']} |" for r in rows]
    print("\n".join(lines))
    if a.output:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        Path(a.output + ".json").write_text(json.dumps({"device": device, "rows": rows}, indent=1))
        Path(a.output + ".md").write_text("\n".join(lines) + "\n\nCommand: `python benchmarks/selection/bench_selection.py "
                                          + " ".join(argv if argv is not None else sys.argv[1:]) + "`\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
