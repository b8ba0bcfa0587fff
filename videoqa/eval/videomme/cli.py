"""Command line of the Video-MME evaluation: ``videoqa eval`` / ``videoqa eval``.

Kept separate from the run loop so that the ``videoqa`` command can mount it as a subcommand
(``add_arguments`` + ``run_from_args``, or ``main(argv)``) and so that tests and other
backends can inject the answering function and the model loader.

    videoqa eval --dataset DIR --output DIR [--model M] [--mode dense|sparse|both] [--limit N]
                 [--duration short|medium|long] [--subtitles] [--fps F] [--max-frames N]
                 [--min-seq-len N]

Multi-GPU: ``torchrun --nproc-per-node 8 -m videoqa eval ...`` (see videoqa.eval.videomme.run).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

from ...cli.args import MIN_SEQ_LEN_HELP, non_negative_int
from .dataset import DEFAULT_SUBTITLE_CHARS, DURATIONS, DatasetError
from .run import JournalError, RunLocked, SettingsMismatch, run_eval


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--dataset", required=True, help="Video-MME folder (videomme/*.parquet or a JSON table, "
                   "videos/, subtitles/) or the question table file")
    p.add_argument("--output", required=True, help="folder for the journals, results.jsonl and the report; "
                   "rerun with the same folder to resume")
    p.add_argument("--questions", default=None, help="the question table, when the folder holds several")
    p.add_argument("--model", default=None, help="model hub id or local path, passed to the answerer")
    p.add_argument("--mode", choices=("dense", "sparse", "both"), default="both",
                   help="attention during prefill; 'both' answers each question twice on the same frames "
                        "(default)")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions (by question id)")
    p.add_argument("--duration", action="append", choices=DURATIONS, default=None,
                   help="only this duration class (repeatable)")
    p.add_argument("--subtitles", action="store_true", help="put the video's subtitles before the question")
    p.add_argument("--subtitle-select", choices=("frames", "all"), default="frames",
                   help="subtitle cues on screen at the sampled frames (default, as Video-MME does) or all")
    p.add_argument("--subtitle-max-chars", type=int, default=DEFAULT_SUBTITLE_CHARS,
                   help=f"subtitle budget in characters, 0 for none (default {DEFAULT_SUBTITLE_CHARS})")
    p.add_argument("--fps", type=float, default=None, help="frames sampled per second (pipeline default if unset)")
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames per video")
    p.add_argument("--min-seq-len", type=non_negative_int, default=None, metavar="N",
                   help="sparse mode: " + MIN_SEQ_LEN_HELP)
    p.add_argument("--max-new-tokens", type=int, default=16, help="tokens generated per answer (default 16)")
    p.add_argument("--skip-missing", action="store_true",
                   help="evaluate the questions whose videos are present (default: stop, listing the missing)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--answerer", default=None, metavar="MODULE:FUNCTION",
                     help="answering function to use instead of videoqa.pipeline.answer")
    who.add_argument("--dry-run", action="store_true",
                     help="a deterministic fake answerer that only opens the videos: checks the dataset "
                          "and the harness; its numbers mean nothing")
    return p


def load_callable(spec: str) -> Callable:
    """``"package.module:function"`` -> the function."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"--answerer must look like MODULE:FUNCTION, got {spec!r}")
    return getattr(importlib.import_module(module), name)


def run_from_args(args: argparse.Namespace, *, answer_fn: Callable | None = None,
                  load_model: Callable | None = None) -> int:
    """Run with parsed arguments. ``answer_fn`` overrides ``--answerer``/the pipeline; with
    ``load_model``, ``--model`` is loaded once per process and the object goes to every call."""
    if answer_fn is None and args.dry_run:
        answer_fn = load_callable("videoqa.eval.videomme.dryrun:answer")
    elif answer_fn is None and args.answerer:
        answer_fn = load_callable(args.answerer)
    config = None
    if getattr(args, "min_seq_len", None) is not None:
        from unisparse import UniSparseConfig

        config = UniSparseConfig(min_seq_len=args.min_seq_len)
    model = load_model(args.model) if load_model is not None and args.model is not None else args.model
    try:
        report = run_eval(args.dataset, args.output, answer_fn=answer_fn, model=model, model_name=args.model,
                          config=config, mode=args.mode, limit=args.limit, durations=args.duration,
                          subtitles=args.subtitles,
                          subtitle_select=args.subtitle_select, subtitle_max_chars=args.subtitle_max_chars or None,
                          fps=args.fps, max_frames=args.max_frames, max_new_tokens=args.max_new_tokens,
                          skip_missing=args.skip_missing, questions_table=args.questions,
                          progress=not args.no_progress)
    except (DatasetError, SettingsMismatch, JournalError, RunLocked) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if report is not None:
        from .score import render_markdown

        print(render_markdown(report).split("\n## ")[0].rstrip())
    return 0


def main(argv=None, *, answer_fn: Callable | None = None, load_model: Callable | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(
        prog="videoqa eval", description="Video-MME evaluation, dense and/or UniSparse prefill; resumable, "
                                         "shards over torchrun processes."))
    return run_from_args(parser.parse_args(argv), answer_fn=answer_fn, load_model=load_model)


if __name__ == "__main__":
    sys.exit(main())
