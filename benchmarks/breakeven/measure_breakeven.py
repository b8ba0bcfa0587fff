"""Measure the break-even density of the block-sparse kernel against dense attention on this GPU.

For each length, the dense path the fallback runs (``unisparse.dense_attention``: cuDNN first) and,
for reference, SDPA cuDNN and flash with K/V repeated, are timed beside our kernel on random block
masks of densities up to 1.0 (Qwen2-VL-7B heads: 28 query, 4 KV, head dim 128, bf16, causal; the
kernel's time depends on the mask's density, not on the values). The break-even is the density
where kernel time equals dense time (linear between the measured densities; 1.0 when the kernel
is faster even with every block). The table is written as ``breakeven.json`` in the format
``unisparse.breakeven`` reads (merged into an existing file with ``--merge``), plus a Markdown
table of the ratios.

  python benchmarks/breakeven/measure_breakeven.py --output $OUT/breakeven --merge unisparse/breakeven.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

DENSITIES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def break_even(densities, ratios) -> float:
    """Density where ``ratio`` (kernel / dense time) first crosses 1, linear between points; 1.0 if never.

    The first crossing, not the last: where the points are not monotone (launch-bound lengths, e.g.
    4K on an H100: 1.02 and 1.26 at densities 0.5 and 0.6, 0.98 at 1.0), the lower density is the
    safe one. Below the first point the kernel's time is taken as proportional to density."""
    pts = sorted(zip(densities, ratios))
    if pts[0][1] > 1.0:
        return max(0.0, pts[0][0] / pts[0][1])
    for (d0, r0), (d1, r1) in zip(pts, pts[1:]):
        if r0 <= 1.0 < r1:
            return d0 + (1.0 - r0) * (d1 - d0) / (r1 - r0)
    return 1.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536, 131072])
    p.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    p.add_argument("--heads", type=int, default=28)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--rep", type=int, default=200, help="do_bench time per measurement, ms")
    p.add_argument("--output", type=Path, required=True, help="writes OUTPUT.json (table) and OUTPUT.md")
    p.add_argument("--merge", type=Path, default=None, help="an existing table to merge this GPU's entry into")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    import triton
    import triton.testing
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import unisparse
    from unisparse.breakeven import parse_table
    from unisparse.testing import random_block_mask

    name = torch.cuda.get_device_name()
    bench = lambda fn: (fn(), torch.cuda.synchronize(), triton.testing.do_bench(  # noqa: E731
        fn, warmup=25, rep=args.rep, return_mode="median"))[2]
    rows, points = [], []
    for L in args.lengths:
        gen = torch.Generator(device="cuda").manual_seed(L)
        q = torch.randn(1, args.heads, L, args.head_dim, device="cuda", dtype=torch.bfloat16, generator=gen)
        k, v = (torch.randn(1, args.kv_heads, L, args.head_dim, device="cuda", dtype=torch.bfloat16, generator=gen)
                for _ in range(2))
        ke, ve = (t.repeat_interleave(args.heads // args.kv_heads, dim=1) for t in (k, v))
        row = {"L": L, "dense_ms": bench(lambda: unisparse.dense_attention(q, k, v))}
        for label, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            def fn(backend=backend):
                with sdpa_kernel(backend):
                    return torch.nn.functional.scaled_dot_product_attention(q, ke, ve, is_causal=True)
            row[f"{label}_ms"] = bench(fn)
        ke = ve = None
        row["kernel_ms"] = {}
        for d in args.densities:
            mask = random_block_mask(1, args.heads, L, 128, d, seed=1, device="cuda")
            row["kernel_ms"][d] = bench(lambda: unisparse.block_sparse_attention(q, k, v, mask, backend="triton"))
        row["ratio"] = {d: t / row["dense_ms"] for d, t in row["kernel_ms"].items()}
        row["break_even"] = break_even(list(row["ratio"]), list(row["ratio"].values()))
        points.append([L, round(row["break_even"], 3)])
        rows.append(row)
        print(f"L={L}: dense {row['dense_ms']:.3f} ms (cuDNN {row['cudnn_ms']:.3f}, flash {row['flash_ms']:.3f}); "
              f"kernel/dense " + " ".join(f"{d:g}:{r:.3f}" for d, r in row["ratio"].items())
              + f" -> break-even {row['break_even']:.3f}", flush=True)
        torch.cuda.empty_cache()
    entry = {"points": points, "capability": "{}.{}".format(*torch.cuda.get_device_capability()),
             "measured": datetime.date.today().isoformat(), "torch": torch.__version__,
             "triton": triton.__version__, "shape": f"{args.heads}/{args.kv_heads} heads, d={args.head_dim}, bf16",
             "command": " ".join(["python"] + sys.argv)}
    table = {"source": "benchmarks/breakeven/measure_breakeven.py", "devices": {}}
    if args.merge and args.merge.is_file():
        table = json.loads(args.merge.read_text())
    table.setdefault("devices", {})[name] = entry
    parse_table(table, "the merged table")  # what the library will read back
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(table, indent=1) + "\n")
    dens = args.densities
    lines = [f"## Break-even density: {name}, torch {torch.__version__}, triton {triton.__version__}", "",
             f"{args.heads} q / {args.kv_heads} KV heads, d={args.head_dim}, bf16, causal; random block masks; "
             "ratio = our kernel's time / the dense fallback's (`unisparse.dense_attention`); do_bench medians.", "",
             "| L | dense ms | cuDNN ms | flash ms | " + " | ".join(f"d={d:g}" for d in dens) + " | break-even |",
             "|" + " --- |" * (5 + len(dens))]
    for r in rows:
        lines.append(f"| {r['L']} | {r['dense_ms']:.3f} | {r['cudnn_ms']:.3f} | {r['flash_ms']:.3f} | "
                     + " | ".join(f"{r['ratio'][d]:.3f}" for d in dens) + f" | {r['break_even']:.3f} |")
    lines += ["", f"Command: `{entry['command']}`"]
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
