"""Check and time launch variants of the block-sparse forward kernel in one GPU call.

Every variant is first checked at 8K (random block mask on the query heads, against the float32
PyTorch reference; and at density 1.0 against SDPA cuDNN), then timed at ``--length`` with every
causal block kept and with random masks of lower density. SDPA flash and cuDNN (causal, dense)
are timed in the same run, so the ratios are side by side. A variant that fails to compile or
to match is reported, not fatal. Inputs: ``structured_qkv``, bf16, Qwen2-VL-7B heads (28 q, 4 KV).

  python scripts/tune_block_sparse.py --head-dim 128 --length 32768 --output $OUT/tune_d128
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "kernels"))

from unisparse import reference as R  # noqa: E402
from unisparse.kernels import block_sparse as K  # noqa: E402
from unisparse.testing import random_block_mask, structured_qkv  # noqa: E402

VARIANTS = {  # name: (module, Tile)
    128: [
        ("v1 128x64 w8 s3", "v1", K.Tile(128, 64, 8, 3)),
        ("v2 128x64 w8 s3", "v2", K.Tile(128, 64, 8, 3)),
        ("v2 128x128 w8 s3", "v2", K.Tile(128, 128, 8, 3)),
        ("v2 128x128 w8 s2", "v2", K.Tile(128, 128, 8, 2)),
        ("v2 128x64 w4 s3", "v2", K.Tile(128, 64, 4, 3)),
        ("v2 64x64 w4 s3", "v2", K.Tile(64, 64, 4, 3)),
        ("v2 64x128 w4 s3", "v2", K.Tile(64, 128, 4, 3)),
        ("v2 tma 128x64 w8 s3", "v2", K.Tile(128, 64, 8, 3, tma=True)),
        ("v2 tma 128x128 w8 s3", "v2", K.Tile(128, 128, 8, 3, tma=True)),
        ("v2 tma 128x128 w8 s4", "v2", K.Tile(128, 128, 8, 4, tma=True)),
        ("v2 tma ws 128x128 w8 s3", "v2", K.Tile(128, 128, 8, 3, tma=True, warp_specialize=True)),
        ("v2 tma ws 128x64 w8 s3", "v2", K.Tile(128, 64, 8, 3, tma=True, warp_specialize=True)),
        ("v2 ws 128x128 w8 s3", "v2", K.Tile(128, 128, 8, 3, warp_specialize=True)),
    ],
    64: [
        ("v1 128x64 w4 s3", "v1", K.Tile(128, 64, 4, 3)),
        ("v2 128x64 w4 s3", "v2", K.Tile(128, 64, 4, 3)),
        ("v2 128x128 w4 s3", "v2", K.Tile(128, 128, 4, 3)),
        ("v2 128x128 w8 s3", "v2", K.Tile(128, 128, 8, 3)),
        ("v2 tma 128x64 w4 s3", "v2", K.Tile(128, 64, 4, 3, tma=True)),
        ("v2 tma 128x128 w4 s3", "v2", K.Tile(128, 128, 4, 3, tma=True)),
        ("v2 tma 128x128 w8 s3", "v2", K.Tile(128, 128, 8, 3, tma=True)),
        ("v2 tma ws 128x128 w4 s3", "v2", K.Tile(128, 128, 4, 3, tma=True, warp_specialize=True)),
    ],
}


def run_variant(module, tile, q, k, v, mask):
    if module == "v1":
        import block_sparse_v1 as V1

        old = V1._tile_config
        V1._tile_config = lambda d: tuple(tile[:4])
        try:
            return V1.block_sparse_attention(q, k, v, mask, 128)
        finally:
            V1._tile_config = old
    return K.block_sparse_attention(q, k, v, mask, 128, tile=tile)


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--head-dim", type=int, default=128, choices=sorted(VARIANTS))
    p.add_argument("--length", type=int, default=32768)
    p.add_argument("--densities", type=float, nargs="+", default=[0.25])
    p.add_argument("--only", nargs="*", default=None, help="variant names to run")
    p.add_argument("--rep", type=int, default=200)
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    import triton
    import triton.testing
    from torch.nn.attention import SDPBackend, sdpa_kernel

    d, L = args.head_dim, args.length
    bench = lambda fn: (fn(), torch.cuda.synchronize(), triton.testing.do_bench(fn, warmup=25, rep=args.rep, return_mode="median"))[2]  # noqa: E731
    flops = 2 * 28 * L * L * d  # causal: 4*H*L*L*D/2
    qs, ks, vs = (t.cuda().to(torch.bfloat16) for t in structured_qkv(1, 28, 4, 8192, d, seed=1))
    check_mask = random_block_mask(1, 28, 8192, 128, 0.4, seed=1, device="cuda")
    ref = R.block_sparse_attention(qs.float(), ks.float(), vs.float(), check_mask, 128)
    q, k, v = (t.cuda().to(torch.bfloat16) for t in structured_qkv(1, 28, 4, L, d, seed=0))
    ke, ve = (t.repeat_interleave(7, dim=1) for t in (k, v))
    dense = {}
    for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
        def f(be=be):
            with sdpa_kernel(be):
                return torch.nn.functional.scaled_dot_product_attention(q, ke, ve, is_causal=True)
        dense[name] = bench(f)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        cudnn_out = torch.nn.functional.scaled_dot_product_attention(q, ke, ve, is_causal=True)
    full = random_block_mask(1, 28, L, 128, 1.0, device="cuda")
    masks = {dd: random_block_mask(1, 28, L, 128, dd, seed=2, device="cuda") for dd in args.densities}
    rows = []
    for name, module, tile in VARIANTS[d]:
        if args.only and name not in args.only:
            continue
        row = {"variant": name}
        try:
            out = run_variant(module, tile, qs, ks, vs, check_mask)
            row["err_vs_ref"] = rel(out, ref)
            row["err_d1_vs_cudnn"] = rel(run_variant(module, tile, q, k, v, full), cudnn_out)
            ok = row["err_vs_ref"] < 1e-2 and row["err_d1_vs_cudnn"] < 1e-2
            row["ok"] = ok
            if ok:
                row["d1_ms"] = bench(lambda: run_variant(module, tile, q, k, v, full))
                row["d1_tflops"] = flops / row["d1_ms"] / 1e9
                row["d1_vs_cudnn"] = dense["cudnn"] / row["d1_ms"]
                for dd, m in masks.items():
                    row[f"d{dd}_ms"] = bench(lambda: run_variant(module, tile, q, k, v, m))
        except Exception as err:  # report, go on
            row["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:150] if str(err).strip() else ''}"
        rows.append(row)
        print(row, flush=True)
        torch.cuda.empty_cache()
    head = (f"## Block-sparse kernel variants: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
            f"triton {triton.__version__}\n\nL={L}, head dim {d}, bf16, 28 q / 4 KV heads, causal; "
            f"SDPA flash {dense['flash']:.2f} ms ({flops / dense['flash'] / 1e9:.0f} TFLOP/s), "
            f"cuDNN {dense['cudnn']:.2f} ms ({flops / dense['cudnn'] / 1e9:.0f} TFLOP/s); do_bench median\n")
    cols = ["variant", "err_vs_ref", "err_d1_vs_cudnn", "d1_ms", "d1_tflops", "d1_vs_cudnn"] + [f"d{dd}_ms" for dd in args.densities]
    fmt = lambda x: f"{x:.3g}" if isinstance(x, float) else str(x)  # noqa: E731
    lines = [head, "| " + " | ".join(cols) + " | error |", "|" + " --- |" * (len(cols) + 1)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + f" | {r.get('error', '')} |" for r in rows]
    md = "\n".join(lines) + "\n"
    print(md)
    if args.output:
        args.output.with_suffix(".md").write_text(md)
        args.output.with_suffix(".json").write_text(json.dumps({"dense_ms": dense, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
