"""Scores of a Video-MME run: accuracy per mode, sparse/dense ratio, density and prefill speedup.

Kept apart from the runner so that a report can be recomputed from any ``results.jsonl`` (one
JSON object per (question, mode)) without a model, and so that the arithmetic is tested on
hand-made results.

Definitions (per group: overall, each duration class, domain, sub-category and task type):

- ``accuracy`` of a mode: correct answers / questions answered in that mode. A response with no
  readable letter, or an error line (a video that could not be read), counts as wrong.
- ``accuracy_ratio``: sparse correct / dense correct over the questions answered in *both* modes
  (so an interrupted run compares like with like); ``None`` without pairs or with 0 dense correct.
- ``mean_density``: the mean of the sparse answers' densities (kept blocks / causal blocks).
- ``prefill_speedup``: total dense prefill seconds / total sparse prefill seconds over the paired
  questions that have both timings (a ratio of sums, so long videos weigh by their time). An
  answer from a one-video session counts its own (question) prefill plus its share of the
  session's prefix prefill (``timings.prefix_share``), so each video's prefill counts once.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

from .dataset import DURATIONS, natural_key

MODES = ("dense", "sparse")
GROUPS = ("duration", "domain", "sub_category", "task_type")


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _prefill(line):
    """A line's prefill seconds; an answer from a session adds its share of the session's one-time
    prefix prefill (``prefix_share``), so that the video's prefill counts once per session."""
    t = line.get("timings") or {}
    v = t.get("prefill")
    return float(v) + float(t.get("prefix_share") or 0.0) if v is not None else None


def score_group(lines: Sequence[dict]) -> dict:
    """The numbers of one group of result lines (see the module docstring)."""
    by_mode: dict[str, dict[str, dict]] = defaultdict(dict)
    for line in lines:
        by_mode[line["mode"]][line["question_id"]] = line
    row: dict = {"questions": len({line["question_id"] for line in lines})}
    for mode in MODES:
        got = by_mode.get(mode)
        if not got:
            continue
        n, c = len(got), sum(bool(x.get("correct")) for x in got.values())
        row[mode] = {"answered": n, "correct": c, "accuracy": c / n,
                     "no_letter": sum(x.get("letter") is None and not x.get("error") for x in got.values()),
                     "errors": sum(bool(x.get("error")) for x in got.values())}
    dense, sparse = by_mode.get("dense", {}), by_mode.get("sparse", {})
    paired = sorted(set(dense) & set(sparse))
    row["paired"] = len(paired)
    dc = sum(bool(dense[q].get("correct")) for q in paired)
    sc = sum(bool(sparse[q].get("correct")) for q in paired)
    row["accuracy_ratio"] = sc / dc if paired and dc else None
    row["mean_density"] = _mean(x.get("density") for x in sparse.values())
    timed = [q for q in paired if _prefill(dense[q]) is not None and _prefill(sparse[q]) is not None]
    td = sum(_prefill(dense[q]) for q in timed)
    ts = sum(_prefill(sparse[q]) for q in timed)
    row["prefill_dense_s"] = td if timed else None
    row["prefill_sparse_s"] = ts if timed else None
    row["prefill_speedup"] = td / ts if timed and ts > 0 else None
    return row


def _order(values):
    known = [d for d in DURATIONS if d in values]
    return known + sorted((v for v in values if v not in DURATIONS), key=natural_key)


def score(lines: Iterable[dict]) -> dict:
    """Overall and per-group scores of result lines (each line needs question_id, mode, correct
    and the group fields; density and timings where known)."""
    lines = list(lines)
    report = {"modes": [m for m in MODES if any(x["mode"] == m for x in lines)],
              "overall": score_group(lines)}
    for g in GROUPS:
        groups: dict[str, list] = defaultdict(list)
        for x in lines:
            groups[str(x.get(g))].append(x)
        report[f"by_{g}"] = {k: score_group(groups[k]) for k in _order(groups)}
    return report


def _pct(row, mode):
    return f"{100 * row[mode]['accuracy']:.1f}%" if mode in row else "-"


def _num(v, fmt):
    return "-" if v is None else format(v, fmt)


def render_markdown(report: dict, title: str = "Video-MME results", settings: dict | None = None) -> str:
    """The report as Markdown: the main table by duration class, then accuracy by the other groups."""
    out = [f"# {title}", ""]
    if settings:
        out += ["Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), ""]
    out += ["| duration | questions | dense acc | sparse acc | sparse/dense | mean density | prefill speedup |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    rows = list(report["by_duration"].items()) + [("overall", report["overall"])]
    for name, r in rows:
        speed = "-" if r["prefill_speedup"] is None else f"{r['prefill_speedup']:.2f}x"
        out.append(f"| {name} | {r['questions']} | {_pct(r, 'dense')} | {_pct(r, 'sparse')} | "
                   f"{_num(r['accuracy_ratio'], '.3f')} | {_num(r['mean_density'], '.3f')} | {speed} |")
    o = report["overall"]
    notes = [f"{o[m]['no_letter']} {m} answer(s) without a readable letter, {o[m]['errors']} error(s)"
             for m in MODES if m in o and (o[m]["no_letter"] or o[m]["errors"])]
    if notes:
        out += ["", "Counted as wrong: " + "; ".join(notes) + "."]
    for g in GROUPS[1:]:
        out += ["", f"## By {g.replace('_', ' ')}", "", f"| {g} | questions | dense acc | sparse acc |",
                "| --- | --- | --- | --- |"]
        for name, r in report[f"by_{g}"].items():
            out.append(f"| {name} | {r['questions']} | {_pct(r, 'dense')} | {_pct(r, 'sparse')} |")
    return "\n".join(out) + "\n"
