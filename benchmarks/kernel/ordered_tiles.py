"""Launch shapes of the reordered kernel (video-aware selection), and its cost per block against the plain kernels.

Qwen2-VL-7B's heads (28 query, 4 KV, d=128, bf16) over ``unisparse.testing.video_qkv`` grid heads
(frames of 256 tokens) at one length:

* ``spatial``: the video-aware selection with every KV head forced into the spatial order
  (``order_cost=1``), run by the reordered kernel in each launch shape;
* ``identity``: the frame-order selection of the same input, run by the reordered kernel with the
  identity order (the same blocks the plain kernels run), against the plain Triton kernel and the
  warp-specialised Gluon one. ``ordered / gluon`` on it is the reordered kernel's time per block
  against the fastest plain kernel, what ``UniSparseConfig.order_cost`` stands for.

Each variant's output is checked against the plain Triton kernel (identity) or against the first
variant (spatial) before it is timed (medians of ``triton.testing.do_bench``). The last line printed
is ``BEST M,N,WARPS,STAGES`` (fastest correct variant on the spatial selection), for
``UNISPARSE_ORDERED_TILE``.

  python benchmarks/kernel/ordered_tiles.py --seq-len 32768 --output $OUT/ordered_tiles
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

VARIANTS = ["gluon", (64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 2), (128, 64, 4, 2), (128, 64, 8, 3), (128, 128, 8, 2),
            (64, 128, 4, 2)]  # "gluon": the warp-specialized Gluon kernel's ORDERED mode (Hopper); the rest: Triton tiles


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-len", type=int, default=32768)
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    import triton

    import unisparse
    from unisparse.kernels import block_sparse, block_sparse_ordered
    from unisparse.layout import VideoLayout, VideoSpan
    from unisparse.testing import video_qkv

    q, k, v, info = video_qkv(1, 28, 4, args.seq_len, 128, frame_tokens=256, head_mix={"grid": 1}, seed=0,
                              return_layout=True)
    q, k, v = (t.to("cuda", torch.bfloat16) for t in (q, k, v))
    layout = VideoLayout((VideoSpan.contiguous(info["video_start"], info["frames"], 16, 16),))
    sel = unisparse.select_blocks_in_layout(q, k, layout, unisparse.UniSparseConfig(min_seq_len=0, order_cost=1.0))
    heads = sel.order_of_heads(28)
    frame = unisparse.select_blocks(q, k, unisparse.UniSparseConfig(min_seq_len=0))
    identity = torch.zeros_like(heads)
    bench = lambda fn: triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")  # noqa: E731
    plain = block_sparse.block_sparse_attention(q, k, v, frame, 128, None, tile=block_sparse.triton_tile(128))
    rows = {"seq_len": args.seq_len, "gpu": torch.cuda.get_device_name(), "spatial_density": sel.density(),
            "spatial_kv_heads": int((sel.choice == 1).sum()), "frame_density": unisparse.block_density(frame),
            "triton_ms": bench(lambda: block_sparse.block_sparse_attention(q, k, v, frame, 128, None,
                                                                          tile=block_sparse.triton_tile(128))),
            "gluon_ms": bench(lambda: block_sparse.block_sparse_attention(q, k, v, frame, 128, None)),
            "variants": []}
    print(json.dumps({k_: v_ for k_, v_ in rows.items() if k_ != "variants"}), flush=True)
    first = None
    for variant in VARIANTS:
        tile = None if variant == "gluon" else variant
        kw = {"kernel": "gluon"} if variant == "gluon" else {"tile": tile}
        r = {"tile": "gluon" if variant == "gluon" else ",".join(map(str, tile))}
        try:
            out_id = block_sparse_ordered.ordered_attention(q, k, v, frame.expand(1, 28, -1, -1), identity, sel.orders,
                                                            **kw)
            r["identity_err"] = ((out_id.float() - plain.float()).norm() / plain.float().norm()).item()
            out_sp = block_sparse_ordered.ordered_attention(q, k, v, sel.mask, heads, sel.orders, **kw)
            first = out_sp if first is None else first
            r["spatial_err_vs_first"] = ((out_sp.float() - first.float()).norm() / first.float().norm()).item()
            r["ok"] = r["identity_err"] < 2e-2 and r["spatial_err_vs_first"] < 2e-2
            r["identity_ms"] = bench(lambda: block_sparse_ordered.ordered_attention(
                q, k, v, frame.expand(1, 28, -1, -1), identity, sel.orders, **kw))
            r["spatial_ms"] = bench(lambda: block_sparse_ordered.ordered_attention(q, k, v, sel.mask, heads, sel.orders,
                                                                                  **kw))
            r["identity_over_gluon"] = r["identity_ms"] / rows["gluon_ms"]
            r["identity_over_triton"] = r["identity_ms"] / rows["triton_ms"]
        except Exception as err:  # a shape that does not compile or fit in shared memory
            r["error"] = f"{type(err).__name__}: {str(err)[:200]}"
            r["ok"] = False
        rows["variants"].append(r)
        print(json.dumps(r), flush=True)
    good = [r for r in rows["variants"] if r["ok"] and r["tile"] != "gluon"]
    best = min(good, key=lambda r: r["spatial_ms"]) if good else None
    lines = [f"## Reordered kernel launch shapes: {rows['gpu']}, {args.seq_len} tokens, 28/4 heads, d=128, bf16", "",
             f"grid heads (video_qkv, 256-token frames); spatial selection density {rows['spatial_density']:.3f} "
             f"({rows['spatial_kv_heads']}/4 KV heads), frame selection density {rows['frame_density']:.3f}; plain "
             f"kernels on the frame selection: Triton {rows['triton_ms']:.2f} ms, Gluon {rows['gluon_ms']:.2f} ms.", "",
             "| tile (M,N,warps,stages) | spatial ms | identity ms | identity / Gluon | identity / Triton | ok |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows["variants"]:
        if "error" in r:
            lines.append(f"| {r['tile']} | {r['error'][:80]} | | | | no |")
        else:
            lines.append(f"| {r['tile']} | {r['spatial_ms']:.2f} | {r['identity_ms']:.2f} | {r['identity_over_gluon']:.2f} | "
                         f"{r['identity_over_triton']:.2f} | {r['ok']} |")
    lines += ["", f"command: `python benchmarks/kernel/ordered_tiles.py {' '.join(argv or sys.argv[1:])}`"]
    print("\n".join(lines))
    if args.output:
        args.output.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"BEST {best['tile'] if best else '64,64,4,2'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
