"""The ``videoqa`` command: ``ask`` a question about a video, ``info`` about a video file, ``eval``
(Video-MME), ``demo`` (the web demo).

Progress lines for the long steps go to stderr, results to stdout (``--json`` for machines).
Every expected failure (missing or corrupt video, bad arguments, a model that cannot be loaded)
prints one line, ``videoqa: error: ...``, and exits with status 2; set ``VIDEOQA_DEBUG=1`` to get
the traceback instead.

More subcommands (``demo``, ``eval``) plug in through :data:`COMMANDS`: add a
:class:`Command` with an ``add_arguments(parser)`` and a ``run(args) -> int``, imported lazily so
that ``videoqa info`` stays fast::

    COMMANDS["demo"] = Command("demo", "start the web demo", "videoqa.demo.cli:add_arguments",
                               "videoqa.demo.cli:run")
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Callable

from .args import MIN_SEQ_LEN_HELP, MODEL_HELP, non_negative_int, positive_float, positive_int

EXIT_ERROR = 2


@dataclass(frozen=True)
class Command:
    """A subcommand; ``add_arguments`` and ``run`` are callables or lazy ``"module:function"`` strings."""

    name: str
    help: str
    add_arguments: Callable | str
    run: Callable | str


def _resolve(fn):
    if callable(fn):
        return fn
    module, _, attr = fn.partition(":")
    return getattr(importlib.import_module(module), attr)


def _progress(line: str) -> None:
    print(f"[videoqa] {line}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- info


def _info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file")
    p.add_argument("--json", action="store_true", help="print JSON")


def _run_info(args) -> int:
    from ..video import read_video_info

    info = read_video_info(args.video)
    if args.json:
        print(json.dumps(info.__dict__, indent=2))
        return 0
    rows = [("file", info.path), ("duration", f"{info.duration_s:.3f} s"), ("fps", f"{info.fps:.3f} (average)"),
            ("frames", str(info.num_frames)), ("resolution", f"{info.width}x{info.height} (as displayed)"),
            ("codec", info.codec or "unknown"), ("rotation", f"{info.rotation} deg"), ("reader", info.backend)]
    for key, value in rows:
        print(f"{key:<11}{value}")
    return 0


# ----------------------------------------------------------------------------- ask


def _ask_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file")
    p.add_argument("question", help="the question (quote it)")
    p.add_argument("--options", nargs="+", metavar="OPTION",
                   help="multiple-choice options, e.g. --options 'A. red' 'B. blue' (or plain texts); for the "
                        "first question")
    p.add_argument("--then", action="append", default=[], metavar="QUESTION",
                   help="another question about the same video (repeatable, free text): the video is decoded, "
                        "encoded and prefilled once for all of them")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--dense", action="store_true", help="dense attention (no UniSparse)")
    p.add_argument("--top-p", type=float, default=None, help="UniSparse Top-P threshold (default 0.95)")
    p.add_argument("--block-size", type=int, default=None, help="UniSparse block size (default 128)")
    p.add_argument("--calibrate", type=non_negative_int, default=None, metavar="N",
                   help="UniSparse: set each head's Top-P from the exact attention of N query blocks, so that "
                        "--top-p is the share of the true attention kept (default 0: off)")
    p.add_argument("--min-seq-len", type=non_negative_int, default=None, metavar="N", help=MIN_SEQ_LEN_HELP)
    p.add_argument("--fps", type=positive_float, default=None, help="frames sampled per second (default 2)")
    p.add_argument("--max-frames", type=positive_int, default=None, help="at most this many frames")
    p.add_argument("--max-pixels", type=positive_int, default=None, help="pixel budget per frame")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="answer length limit (default 64)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")


def _run_ask(args) -> int:
    config = None
    kw = {k: v for k, v in (("top_p", args.top_p), ("block_size", args.block_size),
                            ("min_seq_len", args.min_seq_len), ("calibration_blocks", args.calibrate)) if v is not None}
    if not args.dense and kw:
        from unisparse import UniSparseConfig

        config = UniSparseConfig(**kw)
    common = dict(model=args.model, sparse=not args.dense, config=config, fps=args.fps, max_frames=args.max_frames,
                  max_pixels=args.max_pixels, max_new_tokens=args.max_new_tokens, device=args.device,
                  progress=_progress)
    if args.then:  # several questions: the video is prefilled once (videoqa.session)
        from ..session import answer_many

        results = answer_many(args.video, [args.question, *args.then], [args.options] + [None] * len(args.then),
                              **common)
    else:
        from ..pipeline import answer

        results = [answer(args.video, args.question, args.options, **common)]
    if results[0].random_model:
        from ..models import RANDOM_NOTICE

        _progress(f"note: the model has {RANDOM_NOTICE}")
    if args.json:
        dicts = [r.to_dict() for r in results]
        print(json.dumps(dicts[0] if not args.then else dicts, indent=2))
        return 0
    for i, result in enumerate(results):
        if args.then:
            print(f"Q{i + 1}: {result.question}")
        _print_answer(result)
    return 0


def _print_answer(result) -> None:
    print(result.text)
    if result.options is not None:
        print(f"letter: {result.letter or '(none recognised)'}")
    t = result.timings
    density = "dense" if result.density is None else f"density {result.density:.3f}"
    if result.fallback_layers:
        selected = sum(r.selected_density is not None for r in result.layers)
        density += (f" (selected; {result.fallback_layers} of {selected} layers then computed dense: "
                    f"{'on a CPU' if result.config and result.config.get('max_density') == 0 else 'above the break-even'})")
    f = result.frames
    print(f"[{result.model}{' (random weights)' if result.random_model else ''}] {f.count} frames {f.width}x{f.height}, "
          f"{result.total_tokens} tokens ({result.visual_tokens} visual), {density}")
    shown = ("decode_video", "load_model", "preprocess", "prefix_prefill", "prefill", "vision_encoder", "generate",
             "total")
    print("time: " + ", ".join(f"{name.replace('_', ' ')} {t[name]:.2f} s" + (" (once for the video)" if name in result.reused else "")
                               for name in shown if name in t))


def _run_eval(args) -> int:
    from ..eval.videomme.cli import run_from_args
    from ..models import load_model

    return run_from_args(args, load_model=load_model)


COMMANDS: dict[str, Command] = {
    "ask": Command("ask", "answer a question about a video", _ask_arguments, _run_ask),
    "info": Command("info", "duration, fps, frames, resolution and codec of a video", _info_arguments, _run_info),
    "eval": Command("eval", "Video-MME evaluation (dense, sparse or both; resumable; torchrun shards)",
                    "videoqa.eval.videomme.cli:add_arguments", _run_eval),
    "demo": Command("demo", "start the web demo (Gradio; binds 127.0.0.1 unless --host says otherwise)",
                    "videoqa.demo.cli:add_arguments", "videoqa.demo.cli:run"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="videoqa", description="Long-video question answering with UniSparse "
                                     "block-sparse prefill attention.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        _resolve(cmd.add_arguments)(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, (ValueError, OSError)) else f"{type(err).__name__}: {text}"


def main(argv=None) -> int:
    """Entry point of the ``videoqa`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2 through argparse
    try:
        return int(_resolve(args._run)(args) or 0)
    except KeyboardInterrupt:
        print("videoqa: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one readable line, no traceback (VIDEOQA_DEBUG=1 shows it)
        if os.environ.get("VIDEOQA_DEBUG"):
            raise
        print(f"videoqa: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
