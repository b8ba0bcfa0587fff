"""Long real texts for fidelity runs, found in every CPython installation (reproducible anywhere).

``code``: the source of a few standard-library modules; ``prose``: the English documentation
topics that ``pydoc`` ships.
"""

from __future__ import annotations

import importlib
import inspect

import torch

CODE_MODULES = ("argparse", "typing", "dataclasses", "inspect", "pathlib", "subprocess", "tarfile", "logging")


def corpus_text(kind: str) -> str:
    """Long real text that every Python installation has: ``"code"`` or ``"prose"``."""
    if kind == "code":
        return "\n\n".join(inspect.getsource(importlib.import_module(name)) for name in CODE_MODULES)
    if kind == "prose":
        from pydoc_data.topics import topics

        return "\n\n".join(topics[key] for key in sorted(topics))
    raise ValueError(f"corpus kind must be 'code' or 'prose', got {kind!r}")


def corpus_tokens(tokenizer, kind: str, n_tokens: int) -> torch.Tensor:
    """The first ``n_tokens`` token ids ``[1, n_tokens]`` of a corpus; ValueError if it is shorter."""
    ids = tokenizer(corpus_text(kind), return_tensors="pt").input_ids[:, :n_tokens]
    if ids.shape[1] < n_tokens:
        raise ValueError(f"the {kind} corpus has only {ids.shape[1]} tokens, fewer than {n_tokens}")
    return ids
