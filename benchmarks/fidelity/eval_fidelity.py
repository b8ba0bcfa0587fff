"""Fidelity of every block selector on a real trained model (SmolLM2-135M-Instruct, offline).

For each text kind (code, prose), length and selector setting, one prefill through our one
block-sparse kernel, compared with dense attention (see unisparse/eval/fidelity.py for the metrics):
density, perplexity change, next-token top-1 agreement, recalled attention mass per layer.
Writes a CSV and a density-vs-fidelity plot. Runs on CPU (about an hour for the default grid
at 4K and 8K on 2 cores) or on a GPU. Every length runs the sparse path (``min_seq_len=0``),
including those below the library default ``min_seq_len`` (32768), where production runs dense.

    python benchmarks/fidelity/eval_fidelity.py --lengths 4096 8192 --output benchmarks/fidelity
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time

import torch

from unisparse import UniSparseConfig
from unisparse.eval.fidelity import corpus_tokens, dense_reference, evaluate_selector
from videoqa.models.smollm2 import load_smollm2
from unisparse.selectors import make_selector

# (selector, parameter name, values): each peer as its authors run it, swept over its threshold.
GRID = [
    ("unisparse", "top_p", (0.9, 0.95, 0.98)),
    ("oracle", "top_p", (0.9, 0.95, 0.98)),
    ("xattention", "threshold", (0.8, 0.9, 0.95)),
    ("flexprefill", "gamma", (0.9, 0.95)),
    # MInference's default head budget (1000 vertical, 6096 slash) keeps every block below ~8K
    # tokens; smaller budgets at the same 1:6 ratio put it on the curve.
    ("minference", "vertical_size", (30, 100)),
]
CSV_FIELDS = ["text", "seq_len", "selector", "param", "value", "density", "ppl_dense", "ppl", "ppl_change_pct",
              "top1_agreement", "mean_recall", "seconds", "density_per_layer", "recall_per_layer"]


def build(name: str, param: str, value, config: UniSparseConfig):
    if name == "unisparse":
        return make_selector(name, config=config.replace(**{param: value}))
    if name == "minference":
        # keep the authors' 1:6 vertical:slash ratio (1000 vertical, 6096 slash by default)
        return make_selector(name, vertical_size=value, slash_size=int(value * 6.096))
    return make_selector(name, **{param: value})


def write_rows(rows: list[dict], path: str) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "density_per_layer": json.dumps([round(x, 4) for x in row["density_per_layer"]]),
                             "recall_per_layer": json.dumps([round(x, 4) for x in row["recall_per_layer"]])})


def read_rows(path: str) -> list[dict]:
    numeric = ("seq_len", "density", "ppl_dense", "ppl", "ppl_change_pct", "top1_agreement", "mean_recall", "seconds")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in numeric:
            row[key] = int(row[key]) if key == "seq_len" else float(row[key])
        row["density_per_layer"] = json.loads(row["density_per_layer"])
        row["recall_per_layer"] = json.loads(row["recall_per_layer"])
    return rows


def summary_table(rows: list[dict]) -> str:
    """Markdown table, one line per run, for README and the closing note."""
    lines = ["| text | tokens | selector | setting | density | ppl change | top-1 agreement | mass recalled |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['text']} | {r['seq_len']} | {r['selector']} | {r['param']}={r['value']} | "
                     f"{r['density']:.3f} | {r['ppl_change_pct']:+.2f}% | {100 * r['top1_agreement']:.1f}% | "
                     f"{r['mean_recall']:.3f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["text"], r["seq_len"]) for r in rows})
    fig, axes = plt.subplots(2, len(groups), figsize=(4.2 * len(groups), 7), squeeze=False)
    for col, (text, seq_len) in enumerate(groups):
        for name in [g[0] for g in GRID]:
            pts = sorted((r["density"], r["ppl_change_pct"], r["top1_agreement"]) for r in rows
                         if r["selector"] == name and r["text"] == text and r["seq_len"] == seq_len)
            if not pts:
                continue
            style = "--" if name == "oracle" else "-"
            axes[0, col].plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=name)
            axes[1, col].plot([p[0] for p in pts], [100 * p[2] for p in pts], style, marker="o", label=name)
        axes[0, col].set_title(f"{text}, {seq_len} tokens")
        axes[0, col].set_ylabel("perplexity change vs dense (%)")
        axes[1, col].set_ylabel("top-1 agreement with dense (%)")
        for ax in axes[:, col]:
            ax.set_xlabel("density (kept / causal blocks)")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("SmolLM2-135M-Instruct: fidelity vs density, one kernel, different selectors")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192],
                        help="tokens per text (default 4096 8192); every length runs the sparse path "
                             "(min_seq_len=0), also below the library default of 32768")
    parser.add_argument("--texts", nargs="+", default=["code", "prose"], choices=["code", "prose"])
    parser.add_argument("--selectors", nargs="+", default=[g[0] for g in GRID])
    parser.add_argument("--output", default="benchmarks/fidelity", help="path prefix for .csv and .png")
    parser.add_argument("--no-recall", action="store_true", help="skip the exact-mass recall (faster)")
    parser.add_argument("--merge", nargs="+", metavar="CSV",
                        help="no runs: merge these result CSVs (e.g. one per text, run in parallel) into --output")
    args = parser.parse_args(argv)
    if args.merge:
        rows = [row for path in args.merge for row in read_rows(path)]
        write_rows(rows, args.output + ".csv")
        plot(rows, args.output + ".png")
        print(summary_table(rows))
        return

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_smollm2(device)
    config = UniSparseConfig(min_seq_len=0)  # measure the method at every length, not the dense fallback
    rows = []
    print(f"# {' '.join(sys.argv)}\n# device: {torch.cuda.get_device_name() if device == 'cuda' else platform.processor() or 'cpu'}"
          f", torch {torch.__version__}")
    print(f"{'text':6} {'L':>5} {'selector':12} {'setting':>20} {'density':>7} {'ppl chg%':>8} {'top1':>6} {'recall':>6} {'s':>5}")
    for text in args.texts:
        for seq_len in args.lengths:
            ids = corpus_tokens(tokenizer, text, seq_len).to(device)
            dense = dense_reference(model, ids)
            for name, param, values in GRID:
                if name not in args.selectors:
                    continue
                for value in values:
                    start = time.perf_counter()
                    result = evaluate_selector(model, ids, build(name, param, value, config), dense,
                                               config=config, measure_recall=not args.no_recall)
                    row = {"text": text, "param": param, "value": value, "seconds": time.perf_counter() - start,
                           **result}
                    rows.append(row)
                    print(f"{text:6} {seq_len:>5} {name:12} {f'{param}={value}':>20} {row['density']:7.3f} "
                          f"{row['ppl_change_pct']:8.2f} {row['top1_agreement']:6.3f} {row['mean_recall']:6.3f} "
                          f"{row['seconds']:5.0f}", flush=True)
            write_rows(rows, args.output + ".csv")
            plot(rows, args.output + ".png")
    print(summary_table(rows))


if __name__ == "__main__":
    main()
