"""Fidelity of UniSparse config variants on SmolLM2 (one text, one length): the experiments
behind ``benchmarks/fidelity/NOTES.md``. Each variant is ``name:field=value,field=value`` over
the default ``UniSparseConfig`` with ``min_seq_len=0`` (the sparse path at any length, also below
the library default of 32768 tokens, where production runs dense; a variant may set
``min_seq_len`` itself); results append to ``--output`` (CSV, the columns of
``benchmarks/fidelity/eval_fidelity.py``).

  python -m experiments.fidelity.fidelity_variants --text code --length 8192 \\
      --variants p99:top_p=0.99 q4:top_p=0.98,q_pool=4 --output experiments/fidelity/variants.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import torch


from unisparse import UniSparseConfig
from unisparse.eval.fidelity import corpus_tokens, dense_reference, evaluate_selector
from videoqa.models.smollm2 import load_smollm2
from unisparse.selectors import make_selector


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, fields = text.partition(":")
    changes = {}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        changes[key] = value if key == "screen" else float(value) if "." in value else int(value)
    return name, changes


class ScreenSelector:
    """A ``experiments/fidelity/screen_variants.py`` variant as a selector (PyTorch, unisparse blocks):
    end-to-end runs of candidates that have no library knob yet."""

    name = "screen"
    block_size = 128

    def __init__(self, variant: str, top_p: float):
        from experiments.fidelity.screen_variants import VARIANTS

        self.fn, self.top_p = VARIANTS[variant], top_p

    def __call__(self, q, k, scale=None):
        return self.fn(q, k, scale, self.top_p)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", choices=["code", "prose"], default="code")
    p.add_argument("--length", type=int, default=8192)
    p.add_argument("--variants", nargs="+", required=True,
                   help="name:field=value,...; or name:screen=VARIANT,top_p=P for a screen variant")
    p.add_argument("--recall", action="store_true", help="also measure the exact mass recalled (slower)")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice); set OMP_NUM_THREADS to match")
    args = p.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be a positive integer")
        torch.set_num_threads(args.threads)
    model, tokenizer = load_smollm2("cpu")
    ids = corpus_tokens(tokenizer, args.text, args.length)
    dense = dense_reference(model, ids)
    new = not args.output.exists()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["text", "seq_len", "variant", "config", "density", "ppl_change_pct", "top1_agreement",
                             "mean_recall", "seconds", "density_per_layer"])
        for spec in args.variants:
            name, changes = parse_variant(spec)
            if "screen" in changes:
                config = UniSparseConfig(min_seq_len=0)
                selector = ScreenSelector(changes["screen"], changes["top_p"])
            else:
                config = UniSparseConfig(min_seq_len=0).replace(**changes)
                selector = make_selector("unisparse", config=config)
            start = time.perf_counter()
            r = evaluate_selector(model, ids, selector, dense, config=config, measure_recall=args.recall)
            secs = time.perf_counter() - start
            writer.writerow([args.text, args.length, name, json.dumps(changes), f"{r['density']:.4f}",
                             f"{r['ppl_change_pct']:.3f}", f"{r['top1_agreement']:.4f}",
                             f"{r.get('mean_recall', float('nan')):.4f}", f"{secs:.0f}",
                             json.dumps([round(x, 3) for x in r["density_per_layer"]])])
            handle.flush()
            os.fsync(handle.fileno())
            print(f"{name:10} {changes} density {r['density']:.3f} ppl {r['ppl_change_pct']:+.2f}% "
                  f"top1 {100 * r['top1_agreement']:.1f}% ({secs:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
