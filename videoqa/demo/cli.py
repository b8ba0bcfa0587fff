"""``videoqa demo``: start the web demo. Plugged into :data:`videoqa.cli.main.COMMANDS` by name, so
that other subcommands never import gradio."""

from __future__ import annotations

import argparse

from ..cli.args import MODEL_HELP, positive_float
from . import DEFAULT_MAX_UPLOAD_MB

DEFAULT_HOST = "127.0.0.1"


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be 1-65535, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=_port, default=None, help="port (default: 7860, or the next free one)")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--max-upload-mb", type=positive_float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest video a visitor may upload, in MB (default {DEFAULT_MAX_UPLOAD_MB:g})")


def run(args) -> int:
    from .ui import launch

    launch(host=args.host, port=args.port, model=args.model, device=args.device, max_upload_mb=args.max_upload_mb)
    return 0
