"""Argument types and help texts that several commands share (``ask``, ``eval``, ``demo``)."""

from __future__ import annotations

import argparse

MIN_SEQ_LEN_HELP = ("UniSparse runs on prompts of at least N tokens, dense attention on shorter ones "
                    "(default 32768, the library default: below it, on inputs whose attention keeps most blocks, "
                    "selection plus the sparse kernel is slower than dense cuDNN on an H200, "
                    "benchmarks/attention/families/); "
                    "0 runs sparse at any length")
MODEL_HELP = ("model directory or hub id (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5 and their MoE variants); default: "
              "$VIDEOQA_MODEL, the embedded default "
              "model, else a random stand-in whose answers are meaningless")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value
