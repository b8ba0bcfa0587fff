"""Compare Video-MME runs of the same command: answers and report equal apart from timings.

Each folder is a finished ``videoqa eval`` output. ``results.jsonl`` lines are compared without
their ``timings`` and ``session`` fields (when and where a question ran), and ``report.json``
without its time columns (``prefill_*``); everything else (every response, letter, density,
every accuracy) must be identical. Writes a markdown summary with the wall times given.

  python benchmarks/multigpu/compare_runs.py --reference one --runs two killed \\
      --wall one=812.4 two=431.0 --notes "killed: rank 1 killed after 5 answers, then rerun" --output $OUT/multigpu.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VOLATILE_LINE = ("timings", "session")


def answers(folder: Path) -> list[dict]:
    lines = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in x.items() if k not in VOLATILE_LINE} for x in lines]


def without_times(obj):
    """``report.json`` with every time-derived entry removed (``prefill_*`` keys), recursively."""
    if isinstance(obj, dict):
        return {k: without_times(v) for k, v in obj.items() if not k.startswith("prefill")}
    if isinstance(obj, list):
        return [without_times(v) for v in obj]
    return obj


def differences(reference: Path, other: Path) -> list[str]:
    """What differs between two output folders (empty: the same answers and report)."""
    out = []
    a, b = answers(reference), answers(other)
    if len(a) != len(b):
        out.append(f"{len(a)} result lines against {len(b)}")
    for x, y in zip(a, b):
        if x != y:
            keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
            out.append(f"{x.get('question_id')} {x.get('mode')}: {', '.join(keys)} differ")
    ra = without_times(json.loads((reference / "report.json").read_text()))
    rb = without_times(json.loads((other / "report.json").read_text()))
    if ra != rb:
        out.append("report.json differs outside its time columns")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", type=Path, required=True, help="the one-process run")
    p.add_argument("--runs", type=Path, nargs="+", required=True)
    p.add_argument("--wall", nargs="*", default=[], metavar="NAME=SECONDS", help="wall time of each run, by folder name")
    p.add_argument("--notes", default="")
    p.add_argument("--title", default="Video-MME: several processes against one")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    wall = dict(w.split("=", 1) for w in args.wall)
    n = len(answers(args.reference))
    lines = [f"## {args.title}", "", f"Reference: `{args.reference}` ({n} answers). {args.notes}".rstrip(), "",
             "| run | answers | wall s | x reference | same answers and report |", "| --- | --- | --- | --- | --- |"]
    ref_s = float(wall[args.reference.name]) if args.reference.name in wall else None
    lines.append(f"| {args.reference.name} | {n} | {wall.get(args.reference.name, '-')} | 1.00 | (reference) |")
    failed = False
    for run in args.runs:
        diff = differences(args.reference, run)
        failed |= bool(diff)
        s = float(wall[run.name]) if run.name in wall else None
        speed = f"{ref_s / s:.2f}" if ref_s and s else "-"
        lines.append(f"| {run.name} | {len(answers(run))} | {wall.get(run.name, '-')} | {speed} | "
                     f"{'yes' if not diff else 'NO: ' + '; '.join(diff[:5])} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
