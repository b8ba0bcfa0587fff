"""Where calibrated selection spends its time on a GPU: each stage timed alone, then a kernel table.

The H100 run of ``calibrated_top_p.py`` at 32K found calibrated selection at 2.6-3.3 ms against
0.67 ms plain (frame order), and 8-18 ms video-aware; this script splits that up, per family:

* ``scores``: the fused block-score kernel (what plain selection mostly is);
* ``exact mass``: :func:`unisparse.kernels.selection.exact_row_mass` on the sampled rows (by default
  the keys split over programs, two launches; ``exact_mass_one_launch``: one launch;
  ``exact_mass_key_splits_N``: N ranges; ``exact_mass_one_pass_N``: N ranges, the logits once);
* ``recall``: :func:`unisparse.calibration.recall_per_candidate` (Top-P at every candidate, the definition);
  ``recall_top_p_kernel``: the same through the one-launch Top-P kernel (what the GPU path uses);
* ``calibrate``: :func:`unisparse.calibration.calibrated_top_p` whole (the three above but scores);
* the public entry points, plain and calibrated, frame order and video-aware;

then ``torch.profiler`` tables (CUDA time per kernel, and host-side synchronisations) for one call
of each calibrated entry point. Medians of ``triton.testing.do_bench`` (ms), bf16, 28/4 heads, d=128.

  python benchmarks/attention/profile_calibrated_selection.py --length 32768 --output $OUT/profile_32k
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from calibrated_top_p import family  # this folder's script (run as a script, the folder is on the path)

from unisparse import UniSparseConfig, calibration
from unisparse.api import dense_attention, select_blocks, select_blocks_in_layout


def stages(name: str, seq_len: int, calibration_blocks: int) -> dict:
    import triton.testing

    from unisparse.kernels import selection
    from unisparse.kernels import top_p as top_p_kernel

    q, k, v, layout = family(name, seq_len, 0)
    q, k, v = (t.to("cuda", torch.bfloat16).contiguous() for t in (q, k, v))
    plain = UniSparseConfig(min_seq_len=0, top_p=0.95)
    cal = plain.replace(calibration_blocks=calibration_blocks)

    def bench(fn):
        fn()
        torch.cuda.synchronize()
        return triton.testing.do_bench(fn, warmup=5, rep=30, return_mode="median")

    scores = selection.block_scores(q, k, cal)
    nb = scores.shape[-1]
    blocks = calibration.sample_query_blocks(nb, calibration_blocks, q.device)
    pos = calibration.sample_positions(blocks, cal.block_size, cal.calibration_rows, seq_len)
    exact = selection.exact_row_mass(q, k, pos, cal.calibration_rows, cal.block_size)
    candidates = torch.tensor(calibration.CANDIDATES, device=q.device)
    row = {"family": name, "L": seq_len,
           "scores": bench(lambda: selection.block_scores(q, k, cal)),
           "exact_mass": bench(lambda: selection.exact_row_mass(q, k, pos, cal.calibration_rows, cal.block_size)),
           "exact_mass_one_launch": bench(lambda: selection.exact_row_mass(q, k, pos, cal.calibration_rows,
                                                                           cal.block_size, key_splits=1)),
           **{f"exact_mass_key_splits_{n}": bench(lambda n=n: selection.exact_row_mass(
               q, k, pos, cal.calibration_rows, cal.block_size, key_splits=n)) for n in (4, 8, 16)},
           **{f"exact_mass_one_pass_{n}": bench(lambda n=n: selection.exact_row_mass(
               q, k, pos, cal.calibration_rows, cal.block_size, key_splits=n, one_pass=True)) for n in (8, 16)},
           "recall": bench(lambda: calibration.recall_per_candidate(scores[:, :, blocks], exact, blocks, cal, candidates)),
           "recall_top_p_kernel": bench(lambda: calibration.recall_per_candidate(
               scores[:, :, blocks], exact, blocks, cal, candidates, rule=top_p_kernel.top_p_mask)),
           "calibrate": bench(lambda: calibration.calibrated_top_p(q, k, scores, cal, exact_mass=selection.exact_row_mass,
                                                                   rule=top_p_kernel.top_p_mask)),
           "select_plain": bench(lambda: select_blocks(q, k, plain)),
           "select_cal": bench(lambda: select_blocks(q, k, cal)),
           "cudnn": bench(lambda: dense_attention(q, k, v))}
    if layout is not None:
        row["aware_plain"] = bench(lambda: select_blocks_in_layout(q, k, layout, plain))
        row["aware_cal"] = bench(lambda: select_blocks_in_layout(q, k, layout, cal))
    return row, (q, k, layout, cal)


def profile_table(fn, rows: int = 25) -> str:
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    averages = prof.key_averages()
    syncs = {e.key: e.count for e in averages if "Synchronize" in e.key or "Memcpy" in e.key}
    table = averages.table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=70)
    return f"host synchronisations and copies: {syncs}\n{table}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=32768)
    parser.add_argument("--families", nargs="+", default=["video_mixed", "grid_400"])
    parser.add_argument("--calibration-blocks", type=int, default=16)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    rows, text = [], [f"# {torch.cuda.get_device_name()}, torch {torch.__version__}\n"]
    for name in args.families:
        row, (q, k, layout, cal) = stages(name, args.length, args.calibration_blocks)
        rows.append(row)
        print(json.dumps(row), flush=True)
        text.append(f"## {name} L={args.length}: select_blocks, calibrated\n")
        text.append(profile_table(lambda: select_blocks(q, k, cal)))
        if layout is not None:
            text.append(f"## {name} L={args.length}: select_blocks_in_layout, calibrated\n")
            text.append(profile_table(lambda: select_blocks_in_layout(q, k, layout, cal)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    args.output.with_suffix(".txt").write_text("\n".join(text))
    print("\n".join(text)[:6000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
