"""Models the application runs: which one to load, how, and the embedded default model's runtime pieces.

- :mod:`.loading`: resolve a name (hub id, directory, ``$VIDEOQA_MODEL``, the default model, the
  random stand-in), load it with its processor on a device and dtype, cache it per process,
  switch UniSparse on its language model.
- :mod:`.compact`: the default model's compact format (what ``videoqa/assets/default_model``
  holds) and its loader; :mod:`.transplant`, :mod:`.lora` and :mod:`.smollm2` are what that
  loader needs (the language model is rebuilt from SmolLM2's GGUF); :mod:`.gguf` loads GGUF
  files through transformers and keeps a plain cached copy.

Training the default model is the separate ``videoqa_training`` package; nothing here imports it.
"""

from .loading import (RANDOM, RANDOM_NOTICE, REAL_VIDEO_DEFAULTS, RANDOM_VIDEO_DEFAULTS, SUPPORTED, LoadedModel,
                      clear_cache, context_tokens, is_cached, load_model, random_config, random_model, resolve_device, resolve_dtype,
                      resolve_name, set_sparsity, video_defaults)
from ..assets import DEFAULT_MODEL_DIR

__all__ = ["RANDOM", "RANDOM_NOTICE", "REAL_VIDEO_DEFAULTS", "RANDOM_VIDEO_DEFAULTS", "SUPPORTED", "DEFAULT_MODEL_DIR",
           "LoadedModel", "clear_cache", "context_tokens", "is_cached", "load_model", "random_config", "random_model",
           "resolve_device", "resolve_dtype", "resolve_name", "set_sparsity", "video_defaults"]
