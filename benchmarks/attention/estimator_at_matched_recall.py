"""Does a sharper compressed estimate keep fewer blocks for the same recall? Kept blocks at matched recall.

UniSparse at Top-P 0.95 keeps 1.2-1.5x the blocks of the exact-mass oracle at the same Top-P on
structured and video-shaped attention. Pooling 8 queries and 8 keys shrinks the spread of the
composite logits, so the compressed softmax is flatter than the true block mass; two cheap
corrections of that are measured here against the plain estimate:

* ``t<x>``: the composite logits multiplied by ``x`` (a temperature below 1), which sharpens;
* ``vc<a>``: ``variance_correction = a`` (the key-spread term, kept as a union with the plain mask);
* ``q<m>k<n>`` (``--variants``): finer composite tokens, ``q_pool = m``, ``k_pool = n`` (the scoring
  costs 64 / (m n) times the default's), to tell the pooling's resolution from the estimate's shape.

Per family and variant, the kept density (in units of the causal block count) and the exact mass
it recalls at Top-P 0.95, and the lowest density over a grid of Top-P whose recall still reaches
0.95: a variant that ranks blocks better reaches that recall with fewer blocks. The oracle is
Top-P 0.95 on the exact causal block mass, with the same forced blocks. Frame order only
(no video layout); 28 query / 4 KV heads, d=128, float32 on the CPU (counts, no timing).

  python benchmarks/attention/estimator_at_matched_recall.py --lengths 8192 16384 --output benchmarks/attention/estimator_at_matched_recall
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from bench_families import make_family  # this folder's scripts (run as a script, the folder is on the path)
from video_orders import exact_block_mass

from unisparse import UniSparseConfig, masks, reference as R

GRID = (0.8, 0.85, 0.875, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99)
TARGET = 0.95
VARIANTS = {"plain": (0.0, 1.0), "t1.25": (0.0, 1.25), "t1.5": (0.0, 1.5), "t2": (0.0, 2.0),
            "vc0.5": (0.5, 1.0), "vc1": (1.0, 1.0)}  # name: (variance_correction, logit multiplier)
POOLS = {"q8k4": (8, 4), "q4k8": (4, 8), "q4k4": (4, 4), "q2k2": (2, 2)}  # name: (q_pool, k_pool), plain estimate


def measure(name: str, seq_len: int, seed: int, variants=tuple(VARIANTS)) -> dict:
    q, k, _, _ = make_family(name, seq_len, seed)
    mass = exact_block_mass(q[0], k[0], torch.arange(seq_len)[None], 128)[0]  # [Hq, nb, nb]
    nb = mass.shape[-1]
    unit = q.shape[1] * nb * (nb + 1) / 2
    cfg = UniSparseConfig(min_seq_len=0, top_p=TARGET)

    def recall(mask):
        return float((mass * mask[0].double()).sum()) / (q.shape[1] * seq_len)

    oracle = masks.top_p_mask(mass.float()[None], TARGET, sink_blocks=cfg.sink_blocks, local_blocks=cfg.local_blocks)
    row = {"family": name, "seq_len": seq_len, "oracle_density": float(oracle.sum()) / unit,
           "oracle_recall": recall(oracle), "variants": {}}
    plain_scores = {}  # per logit multiplier: the plain estimate, shared by the variance variants' unions
    for variant in variants:
        if variant in POOLS:
            c = cfg.replace(q_pool=POOLS[variant][0], k_pool=POOLS[variant][1])
            scores, plain = R.block_scores(q, k, c), None
        else:
            vc, mult = VARIANTS[variant]
            scale = mult / math.sqrt(q.shape[-1])
            if mult not in plain_scores:
                plain_scores[mult] = R.block_scores(q, k, cfg, scale)
            c = cfg.replace(variance_correction=vc)
            scores = R.block_scores(q, k, c, scale) if vc > 0 else plain_scores[mult]
            plain = plain_scores[mult] if vc > 0 else None
        sweep = []
        for top_p in GRID:
            m = R.top_p_mask(scores, c.replace(top_p=top_p))
            if plain is not None:
                m = m | R.top_p_mask(plain, cfg.replace(top_p=top_p))
            sweep.append({"top_p": top_p, "density": float(m.sum()) / unit, "recall": recall(m)})
        at = next(s for s in sweep if s["top_p"] == TARGET)
        ok = [s for s in sweep if s["recall"] >= TARGET]
        row["variants"][variant] = {"at_target": at, "matched": min(ok, key=lambda s: s["density"]) if ok else None,
                                    "sweep": sweep}
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["Kept density (units of the causal block count) and recalled exact mass at Top-P 0.95; lowest density "
             "whose recall reaches 0.95 over Top-P in " + ", ".join(map(str, GRID)) + " (its Top-P); / oracle: that "
             "density over the oracle's at 0.95. CPU, float32, seed 3.", "",
             "| family | L | oracle density (recall) | variant | density @0.95 | recall @0.95 | density at recall >= 0.95 "
             "(top_p) | / oracle |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        for name, v in r["variants"].items():
            at, m = v["at_target"], v["matched"]
            matched = f"{m['density']:.3f} ({m['top_p']})" if m else "not reached"
            ratio = f"{m['density'] / r['oracle_density']:.2f}" if m else "-"
            lines.append(f"| {r['family']} | {r['seq_len']} | {r['oracle_density']:.3f} ({r['oracle_recall']:.3f}) | "
                         f"{name} | {at['density']:.3f} | {at['recall']:.3f} | {matched} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[8192])
    p.add_argument("--families", nargs="+", default=["structured", "video_mixed", "video_heldout", "flat"])
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS) + list(POOLS))
    p.add_argument("--output", type=Path, default=None, help="writes OUTPUT.md and OUTPUT.json")
    args = p.parse_args(argv)
    rows = []
    for n in args.lengths:
        for fam in args.families:
            rows.append(measure(fam, n, args.seed, args.variants))
            print(markdown(rows[-1:]), flush=True)
    md = markdown(rows) + f"\nCommand: `python benchmarks/attention/estimator_at_matched_recall.py {' '.join(argv or sys.argv[1:])}`\n"
    print(md)
    if args.output:
        args.output.with_suffix(".md").write_text(md)
        args.output.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
