"""Other ways training saves a model: a full transformers checkpoint, and a vision tower's weights.

Full (:func:`save_full`): ``model.save_pretrained`` + the processor, LoRA merged. Any tool that
loads a Qwen2-VL directory loads it (:func:`videoqa.models.load_model` with no special case), but
it weighs about 270 MB in bfloat16: too large to keep in git. The compact format the package
ships is :mod:`videoqa.models.compact`.
"""

from __future__ import annotations

import copy
import os

import torch

from videoqa.models.compact import read_trained


def tower_state(path) -> dict:
    """A vision tower's float32 state dict from a stage-0 file (``.pt``) or a compact export's directory."""
    if os.path.isdir(path):
        return {k: v.float() for k, v in read_trained(path).vision.items()}
    return torch.load(path, map_location="cpu")


def save_full(model, processor, path, *, lora=None, dtype: torch.dtype | None = torch.bfloat16) -> None:
    """A plain transformers checkpoint (LoRA merged into a copy; ``model`` is left as it is)."""
    model = copy.deepcopy(model)
    if lora is not None:
        lora.merge_into(model)
    if dtype is not None:
        model.to(dtype)
    model.save_pretrained(path)
    processor.save_pretrained(path)
