"""Recall-calibrated Top-P (``UniSparseConfig.calibration_blocks``) against the plain threshold and the oracle.

Per input family and length, in the prompt's (frame) order, every count in units of the causal
block count (28 query / 4 KV heads, d=128):

* ``oracle``: Top-P 0.95 on the **exact** block mass (frame order), and ``oracle best``: per KV head
  the better of the frame and the spatial order (families with a video; what issue 23 measures
  against);
* ``plain``: UniSparse at Top-P 0.95 (the default), its recall of the exact mass (mean over heads
  and query rows) and its worst head's recall; ``plain @0.95``: the plain rule with the lowest Top-P
  of a grid whose mean recall still reaches 0.95 (the fair comparison: the estimator over-recalls);
* ``calibrated n``: each head's threshold from the exact attention of ``n`` query blocks x
  ``--rows`` rows (recall target 0.95), its recall and worst head's recall;
* ``video-aware`` (families with a video): :func:`unisparse.select_blocks_in_layout` (per KV head the
  frame or the spatial order, chosen by block count, ``order_cost=1`` as the oracle's choice), plain
  and calibrated (each head calibrated in the order it took), against ``oracle best``.

With ``--device cuda`` it also times, per family, the plain and calibrated selection, the kernel
on the calibrated mask, and dense cuDNN (medians of ``triton.testing.do_bench``), so that the
saving in blocks is weighed against the calibration's cost on the same GPU in the same run.

Families: ``flat``, ``structured``, ``video_mixed``, ``video_grid``, ``video_heldout`` (frames of 196
tokens, another head mix and seed: held out) from ``bench_families.py``, and ``mixed_144`` /
``grid_400`` (held out) from ``video_orders.py``. The calibration grid and sampling were set on
``video_mixed`` at 8K; every other family and length is held out for it.

  python benchmarks/attention/calibrated_top_p.py --lengths 8192 --output benchmarks/attention/calibrated_top_p/cpu_8k
  python benchmarks/attention/calibrated_top_p.py --lengths 32768 --device cuda --output $OUT/calibrated_h200
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from bench_families import make_family  # this folder's scripts (run as a script, the folder is on the path)
from video_orders import SYNTHETIC, exact_block_mass, synthetic

from unisparse import UniSparseConfig, masks
from unisparse.api import block_sparse_attention, ordered_block_sparse_attention, select_blocks, select_blocks_in_layout
from unisparse.layout import ORDERS, token_order

TARGET = 0.95
MATCH_GRID = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95)
FAMILIES = ("flat", "structured", "video_mixed", "video_grid", "video_heldout", "mixed_144", "grid_400")


def family(name: str, seq_len: int, seed: int):
    """``(q, k, v, layout)`` of a family (layout None where there is no video)."""
    if name in SYNTHETIC:
        q, k, layout = synthetic(name, seq_len, 28, 4, 128, seed)
        return q, k, torch.randn(k.shape, generator=torch.Generator().manual_seed(seed)), layout
    return make_family(name, seq_len, seed)


def per_head_recall(mass: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[Hq]``: each head's share of the exact mass inside its kept blocks (``mass`` sums each query
    token's attention, so a block row sums to its token count and a head to the sequence length)."""
    return (mass * mask.double()).sum((-1, -2)) / mass[0].sum()


def measure(name: str, seq_len: int, seed: int, device: torch.device, n_blocks: list[int], rows: int,
            bench) -> dict:
    q, k, v, layout = family(name, seq_len, seed)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v = (t.to(device, dtype).contiguous() for t in (q, k, v))
    backend = "auto" if device.type == "cuda" else "torch"
    orders = torch.stack([token_order(seq_len, layout, o, device) for o in (ORDERS if layout is not None else ("frame",))])
    mass = exact_block_mass(q[0], k[0], orders, 128)  # [O, Hq, nb, nb], float64
    nb = mass.shape[-1]
    hq, hkv = q.shape[1], k.shape[1]
    unit = hq * nb * (nb + 1) / 2
    base = UniSparseConfig(min_seq_len=0, top_p=TARGET)
    from video_orders import oracle_mask, per_kv

    oracle = [oracle_mask(mass[o].float(), orders[o], base) for o in range(len(orders))]
    best = torch.stack([per_kv(m, hkv) for m in oracle]).min(0).values
    row = {"family": name + (" (held out)" if name in ("video_heldout", "mixed_144", "grid_400") else ""),
           "seq_len": seq_len, "oracle": float(oracle[0].sum()) / unit, "oracle_best": float(best.sum()) / unit}
    frame_mass = mass[0]

    def counts(mask):
        rec = per_head_recall(frame_mass, mask[0].to(frame_mass.device))
        return float(mask.sum()) / unit, float(rec.mean()), float(rec.min())

    plain = select_blocks(q, k, base, backend=backend)
    row["plain"], row["plain_recall"], row["plain_min_head_recall"] = counts(plain)
    for top_p in MATCH_GRID:
        d, r, _ = counts(select_blocks(q, k, base.replace(top_p=top_p), backend=backend))
        if r >= TARGET or top_p == MATCH_GRID[-1]:
            row["plain_matched"], row["plain_matched_top_p"], row["plain_matched_recall"] = d, top_p, r
            break
    row["ms_select_plain"] = bench(lambda: select_blocks(q, k, base, backend=backend))
    if device.type == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        ke, ve = (t.repeat_interleave(hq // hkv, dim=1) for t in (k, v))
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            row["ms_cudnn"] = bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, ke, ve, is_causal=True))
        ke = ve = None
        row["ms_kernel_plain"] = bench(lambda: block_sparse_attention(q, k, v, plain, backend=backend))
    for n in n_blocks:
        cfg = base.replace(calibration_blocks=n, calibration_rows=rows)
        mask = select_blocks(q, k, cfg, backend=backend)
        d, r, m = counts(mask)
        row[f"cal{n}"], row[f"cal{n}_recall"], row[f"cal{n}_min_head_recall"] = d, r, m
        row[f"cal{n}_over_oracle"] = d / row["oracle"]
        row[f"cal{n}_over_oracle_best"] = d / row["oracle_best"]
        row[f"ms_select_cal{n}"] = bench(lambda: select_blocks(q, k, cfg, backend=backend))
        if device.type == "cuda":
            row[f"ms_kernel_cal{n}"] = bench(lambda: block_sparse_attention(q, k, v, mask, backend=backend))
            row[f"x_cudnn_cal{n}"] = row["ms_cudnn"] / (row[f"ms_select_cal{n}"] + row[f"ms_kernel_cal{n}"])
    if layout is not None:  # video-aware, plain and calibrated, each head's mass in its own order
        va = base.replace(order_cost=1.0)

        head_unit = nb * (nb + 1) / 2
        oracle_heads = [m.flatten(1).sum(-1).float() / head_unit for m in oracle]  # per order, [Hq]

        def ordered_counts(sel, label):
            heads = sel.order_of_heads(hq)[0]
            rec = torch.stack([per_head_recall(mass[heads[h]][h:h + 1], sel.mask[0, h:h + 1].to(mass.device))[0]
                               for h in range(hq)])
            kept = sel.mask[0].flatten(1).sum(-1).float().cpu() / head_unit
            row[f"{label}_heads"] = [{"order": ORDERS[int(heads[h])], "kept": float(kept[h]), "recall": float(rec[h]),
                                      **{f"oracle_{ORDERS[o]}": float(oracle_heads[o][h]) for o in range(len(orders))}}
                                     for h in range(hq)]
            return float(sel.mask.sum()) / unit, float(rec.mean()), float(rec.min()), int(sel.choice.eq(1).sum())

        for label, cfg in [("va_plain", va)] + [(f"va_cal{n}", va.replace(calibration_blocks=n, calibration_rows=rows))
                                                 for n in n_blocks]:
            sel = select_blocks_in_layout(q, k, layout, cfg, backend=backend)
            d, r, m, moved = ordered_counts(sel, label)
            row[label], row[f"{label}_recall"], row[f"{label}_min_head_recall"], row[f"{label}_moved"] = d, r, m, moved
            row[f"{label}_over_oracle_best"] = d / row["oracle_best"]
            row[f"ms_select_{label}"] = bench(lambda: select_blocks_in_layout(q, k, layout, cfg, backend=backend))
            if device.type == "cuda":
                row[f"ms_kernel_{label}"] = bench(lambda: ordered_block_sparse_attention(q, k, v, sel, backend=backend))
                row[f"x_cudnn_{label}"] = row["ms_cudnn"] / (row[f"ms_select_{label}"] + row[f"ms_kernel_{label}"])
    row["plain_over_oracle"] = row["plain"] / row["oracle"]
    row["plain_matched_over_oracle"] = row["plain_matched"] / row["oracle"]
    if device.type == "cuda":
        row["x_cudnn_plain"] = row["ms_cudnn"] / (row["ms_select_plain"] + row["ms_kernel_plain"])
    return row


def table(rows: list[dict], n_blocks: list[int], cuda: bool, per_head: bool = False) -> str:
    head = ["family", "L", "oracle", "oracle best", "plain (recall, worst head)", "plain / oracle",
            "plain @0.95 recall (top_p)", "/ oracle"]
    for n in n_blocks:
        head += [f"calibrated {n} (recall, worst head)", "/ oracle", "/ oracle best"]
    head += ["ms select plain"] + [f"ms select cal {n}" for n in n_blocks]
    if cuda:
        head += ["ms cuDNN", "x cuDNN plain"] + [f"x cuDNN cal {n}" for n in n_blocks]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["family"], str(r["seq_len"]), f"{r['oracle']:.3f}", f"{r['oracle_best']:.3f}",
                 f"{r['plain']:.3f} ({r['plain_recall']:.3f}, {r['plain_min_head_recall']:.3f})",
                 f"{r['plain_over_oracle']:.2f}",
                 f"{r['plain_matched']:.3f} ({r['plain_matched_top_p']})", f"{r['plain_matched_over_oracle']:.2f}"]
        for n in n_blocks:
            cells += [f"{r[f'cal{n}']:.3f} ({r[f'cal{n}_recall']:.3f}, {r[f'cal{n}_min_head_recall']:.3f})",
                      f"**{r[f'cal{n}_over_oracle']:.2f}**", f"{r[f'cal{n}_over_oracle_best']:.2f}"]
        cells += [f"{r['ms_select_plain']:.2f}"] + [f"{r[f'ms_select_cal{n}']:.2f}" for n in n_blocks]
        if cuda:
            cells += [f"{r['ms_cudnn']:.2f}", f"{r['x_cudnn_plain']:.2f}"] + [f"{r[f'x_cudnn_cal{n}']:.2f}" for n in n_blocks]
        out.append("| " + " | ".join(cells) + " |")
    va_rows = [r for r in rows if "va_plain" in r]
    if va_rows:
        head = ["family", "L", "oracle best", "video-aware plain (recall, worst head; KV heads moved)", "/ oracle best"]
        for n in n_blocks:
            head += [f"video-aware calibrated {n} (recall, worst head; moved)", "/ oracle best"]
        head += ["ms select plain"] + [f"ms select cal {n}" for n in n_blocks]
        if cuda:
            head += ["x cuDNN plain"] + [f"x cuDNN cal {n}" for n in n_blocks]
        out += ["", "Video-aware selection (per KV head the cheaper order, by block count):", "",
                "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for r in va_rows:
            cells = [r["family"], str(r["seq_len"]), f"{r['oracle_best']:.3f}"]
            for label in ["va_plain"] + [f"va_cal{n}" for n in n_blocks]:
                cells += [f"{r[label]:.3f} ({r[f'{label}_recall']:.3f}, {r[f'{label}_min_head_recall']:.3f}; "
                          f"{r[f'{label}_moved']}/4)", f"**{r[f'{label}_over_oracle_best']:.2f}**"]
            cells += [f"{r['ms_select_va_plain']:.2f}"] + [f"{r[f'ms_select_va_cal{n}']:.2f}" for n in n_blocks]
            if cuda:
                cells += [f"{r['x_cudnn_va_plain']:.2f}"] + [f"{r[f'x_cudnn_va_cal{n}']:.2f}" for n in n_blocks]
            out.append("| " + " | ".join(cells) + " |")
    if per_head:
        for r in va_rows:
            for n in n_blocks:
                out += ["", f"Per head, {r['family']} at {r['seq_len']}: video-aware calibrated {n} against the oracle "
                        "in each order (blocks in units of one head's causal block count; the oracle's order per KV head "
                        "is the one of fewer blocks over its query heads)", "",
                        "| head | order taken | kept | recall | oracle, frame | oracle, spatial | kept / oracle in that order |",
                        "| --- | --- | --- | --- | --- | --- | --- |"]
                for h, x in enumerate(r[f"va_cal{n}_heads"]):
                    ref = x[f"oracle_{x['order']}"]
                    out.append(f"| {h} | {x['order']} | {x['kept']:.3f} | {x['recall']:.3f} | {x['oracle_frame']:.3f} | "
                               f"{x['oracle_spatial']:.3f} | {x['kept'] / ref:.2f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[8192])
    p.add_argument("--families", nargs="+", default=list(FAMILIES))
    p.add_argument("--calibration-blocks", type=int, nargs="+", default=[16])
    p.add_argument("--rows", type=int, default=16, help="calibration_rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rep", type=int, default=50)
    p.add_argument("--output", type=Path, default=None, help="path without suffix: .json and .md are written")
    p.add_argument("--per-head", action="store_true",
                   help="also a table per family of each head's order, kept blocks and recall against the oracle")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        import triton.testing

        def bench(fn):
            fn()
            torch.cuda.synchronize()
            return triton.testing.do_bench(fn, warmup=10, rep=args.rep, return_mode="median")
        where = torch.cuda.get_device_name()
    else:
        def bench(fn):
            t0 = time.perf_counter()
            fn()
            return 1e3 * (time.perf_counter() - t0)
        where = "CPU (PyTorch reference; milliseconds are wall clock of one call)"
    rows = []
    for seq_len in args.lengths:
        for name in args.families:
            r = measure(name, seq_len, args.seed, device, args.calibration_blocks, args.rows, bench)
            rows.append(r)
            print(json.dumps(r), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    md = (f"## Recall-calibrated Top-P: {where}, torch {torch.__version__}\n\nTarget recall {TARGET}; blocks in units "
          f"of the causal block count; recall = mean share of the exact mass in the kept blocks (worst head in "
          f"brackets); calibration rows {args.rows} per sampled block.\n\n"
          + table(rows, args.calibration_blocks, device.type == "cuda", args.per_head)
          + f"\n\nCommand: `python benchmarks/attention/calibrated_top_p.py {' '.join(argv or sys.argv[1:])}`\n")
    print(md)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".json").write_text(json.dumps({"device": where, "rows": rows}, indent=1))
        args.output.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
