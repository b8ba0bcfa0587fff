"""Where video-aware selection spends its time: a torch.profiler trace of ``select_blocks_in_layout``.

Issue "Video-aware selection" asks selection with the layout on to cost at most 12% of a dense cuDNN
call from 32K; on the H200 it cost 20-32% at 32K (``families/families_video_aware_h200.md``) while
frame-order selection costs 7%. This script says where the difference goes: per call, the GPU time
of each op (kernels and copies), the number of kernel launches, and the wall-clock time, for the
frame order alone and with the layout (the library's defaults, the layout applied at every length),
after warm-up calls so the per-prompt caches are filled as they are from a model's second layer on.

  python benchmarks/attention/profile_video_select.py --seq-len 32768 --output $OUT/profile_video_select
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from bench_families import make_family


def wall_ms(fn, reps: int = 20) -> float:
    """Median wall-clock ms of ``fn`` with the GPU synchronised around each call (launch overhead included)."""
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def profile(fn, calls: int, rows: int) -> tuple[str, int, float]:
    """(top ops by GPU time, kernel launches per call, GPU busy ms per call)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    events = prof.key_averages()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.time_range.elapsed_us() for e in kernels) / 1e3 / calls
    table = events.table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=60)
    return table, len(kernels) // calls, busy


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-len", type=int, nargs="+", default=[32768])
    p.add_argument("--families", nargs="+", default=["video_grid", "video_mixed"])
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    import unisparse

    cfg = unisparse.UniSparseConfig().replace(video_aware_min_len=0)
    out = [f"# Video-aware selection profiled: {torch.cuda.get_device_name()}, torch {torch.__version__}", "",
           f"Config: {cfg}", f"Command: `python {' '.join(sys.argv)}`", ""]
    for L in args.seq_len:
        for family in args.families:
            q, k, v, layout = make_family(family, L, 0)
            q, k = (t.to("cuda", torch.bfloat16).contiguous() for t in (q, k))
            frame = lambda: unisparse.select_blocks(q, k, cfg)  # noqa: E731
            aware = lambda: unisparse.select_blocks_in_layout(q, k, layout, cfg)  # noqa: E731
            for _ in range(3):
                frame(), aware()
            torch.cuda.synchronize()
            out.append(f"## {family}, L={L}")
            for label, fn in (("frame order (select_blocks)", frame), ("with the layout (select_blocks_in_layout)", aware)):
                table, launches, busy = profile(fn, args.calls, args.rows)
                wall = wall_ms(fn)
                out += [f"### {label}: wall {wall:.2f} ms per call, GPU busy {busy:.2f} ms, {launches} kernel launches",
                        "", "```", table, "```", ""]
                print(f"{family} L={L} {label}: wall {wall:.2f} ms, GPU busy {busy:.2f} ms, {launches} launches", flush=True)
            del q, k, v
            torch.cuda.empty_cache()
    text = "\n".join(out) + "\n"
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".md").write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
