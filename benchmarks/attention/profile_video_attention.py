"""Where the reordered attention spends its time: cost per kept block against the plain kernel's.

On the H200 the spatial order cut grid heads' kept blocks to 0.12 of the causal count at 32K, but
the reordered attention took 5.4 ms there, where the plain kernel takes 12.3 ms for 0.84
(``families/families_video_aware_32k_64k_h200.md``): about 3.5 times the plain kernel's time per
kept block. This script splits that time, per input family and length, after warm-up:

* the plain block-sparse kernel on the frame-order selection, and the reordered attention on the
  video-aware one (wall ms, kept blocks, microseconds per thousand kept blocks);
* a torch.profiler table of the reordered attention (its gathers, the kept lists, the kernel, the
  scatter back), the kernel's share of the GPU time, and the kept blocks per query-block row
  (mean, largest) of the chosen order, since a row far longer than the mean bounds the kernel.

  python benchmarks/attention/profile_video_attention.py --seq-len 32768 65536 --output $OUT/profile_video_attention
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from bench_families import make_family
from profile_video_select import profile, wall_ms


def kept_stats(mask: torch.Tensor) -> tuple[int, float, int]:
    """(kept blocks, mean per query-block row, largest row) over all heads."""
    per_row = mask.sum(-1)
    return int(per_row.sum()), float(per_row.float().mean()), int(per_row.max())


def largest_op(fn) -> tuple[str, float]:
    """The op with the most GPU time in one call of ``fn`` (the attention kernel) and its share."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    total = sum(e.self_device_time_total for e in events)
    top = max(events, key=lambda e: e.self_device_time_total)
    return top.key, top.self_device_time_total / max(total, 1e-9)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-len", type=int, nargs="+", default=[32768])
    p.add_argument("--families", nargs="+", default=["video_grid", "video_heldout"])
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--rows", type=int, default=15)
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    import unisparse

    cfg = unisparse.UniSparseConfig().replace(video_aware_min_len=0)
    out = [f"# Reordered attention profiled: {torch.cuda.get_device_name()}, torch {torch.__version__}", "",
           f"Config: {cfg}", f"Command: `python {' '.join(sys.argv)}`", "",
           "| family | L | spatial KV heads | plain: kept blocks | plain ms | plain us / 1K blocks | "
           "reordered: kept blocks | row mean / max | reordered ms | reordered us / 1K blocks | per-block ratio | "
           "largest op's share of GPU time |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    tables = []
    for L in args.seq_len:
        for family in args.families:
            q, k, v, layout = make_family(family, L, 0)
            q, k, v = (t.to("cuda", torch.bfloat16).contiguous() for t in (q, k, v))
            frame_mask = unisparse.select_blocks(q, k, cfg)
            sel = unisparse.select_blocks_in_layout(q, k, layout, cfg)
            plain = lambda: unisparse.block_sparse_attention(q, k, v, frame_mask)  # noqa: E731
            ordered = lambda: unisparse.ordered_block_sparse_attention(q, k, v, sel)  # noqa: E731
            for _ in range(3):
                plain(), ordered()
            torch.cuda.synchronize()
            plain_blocks = kept_stats(frame_mask.expand(*q.shape[:2], *frame_mask.shape[2:]))[0]
            kept, row_mean, row_max = kept_stats(sel.mask)
            plain_ms, ordered_ms = wall_ms(plain), wall_ms(ordered)
            table, launches, busy = profile(ordered, args.calls, args.rows)
            top_name, top_share = largest_op(ordered)
            plain_per, ordered_per = plain_ms * 1e6 / plain_blocks, ordered_ms * 1e6 / max(kept, 1)
            spatial = int(sel.choice.eq(1).sum())
            out.append(f"| {family} | {L} | {spatial}/{sel.choice.numel()} | {plain_blocks} | {plain_ms:.2f} | "
                       f"{plain_per:.2f} | {kept} | {row_mean:.1f} / {row_max} | {ordered_ms:.2f} | {ordered_per:.2f} | "
                       f"{ordered_per / plain_per:.2f} | {top_share:.2f} ({top_name[:40]}) |")
            tables += [f"## {family}, L={L}: reordered attention, wall {ordered_ms:.2f} ms, GPU busy {busy:.2f} ms, "
                       f"{launches} launches", "", "```", table, "```", ""]
            print(out[-1], flush=True)
            del q, k, v, frame_mask, sel
            torch.cuda.empty_cache()
    text = "\n".join(out + [""] + tables) + "\n"
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".md").write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
