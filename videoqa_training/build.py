"""SmolLM2-135M-Instruct transplanted into a ``Qwen2VLForConditionalGeneration`` with a fresh vision tower.

Why a transplant works: SmolLM2 is a Llama (RMSNorm, SwiGLU MLP, grouped-query attention, RoPE,
tied embeddings) with 30 layers, hidden size 576, 9 query heads, 3 KV heads, head dim 64. Qwen2-VL's
text model has the same blocks with three differences, each neutralised here:

1. q/k/v projections carry biases: set to zero.
2. Rotary positions are multimodal (M-RoPE): the rotary frequencies are split into temporal,
   height and width sections, each rotated by its own position id. On text all three ids are
   the token index, so M-RoPE is plain RoPE there. Sections: Qwen2-VL's 16/24/24 (of 64
   frequency pairs) scaled to SmolLM2's 32 pairs, i.e. 8/12/12.
3. The vocabulary must hold Qwen2-VL's vision tokens (``<|vision_start|>``, ``<|video_pad|>``, ...):
   they are added to SmolLM2's tokenizer after its 49,152 tokens. Their embedding rows (which
   are also their output rows: the embeddings stay tied) start at the mean of SmolLM2's
   embeddings plus a little seeded noise, so they are distinct from each other and no more likely
   to be generated than an average token. ``<|video_pad|>``/``<|image_pad|>`` rows are never
   read anyway: the vision features replace them.

Everything else (names, shapes, norms' epsilon, rope theta) is copied, so on text the result
computes what SmolLM2 computes (``tests/test_default_model.py`` checks the logits). The vision
tower (patch 14, temporal patch 2, merge 2, as Qwen2-VL) is small and randomly initialised,
its merger's last layer scaled so that its outputs start at the size of a token embedding;
training it is :mod:`videoqa_training.training`'s job.

The tokenizer is SmolLM2's own plus the vision tokens, with a ChatML template in Qwen2-VL's
layout (the one :mod:`videoqa.offline` renders) but SmolLM2's default system prompt, the one it
was tuned with.
"""

from __future__ import annotations

import copy

import torch

from videoqa.models.smollm2 import Source, smollm2_source
from videoqa.models.transplant import transplant_language_model

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
# SmolLM2-Instruct's own default system prompt (from its chat template).
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# The proposed vision tower: about 2.9M parameters (5.7 MB in bfloat16). Head dim 64.
DEFAULT_VISION = {"depth": 4, "embed_dim": 192, "num_heads": 3, "mlp_ratio": 4}
# Geometry that must stay Qwen2-VL's, so that videoqa.patchify/prompt work unchanged.
QWEN2VL_GEOMETRY = {"patch_size": 14, "temporal_patch_size": 2, "spatial_merge_size": 2, "in_channels": 3}


def tiny_source(seed: int = 0, *, head_dim: int = 16, layers: int = 2) -> Source:
    """A tiny random Llama and a byte-level ChatML tokenizer (no vision tokens): for tests and dry runs.

    Same structure as SmolLM2 (GQA, tied embeddings, ChatML specials but no vision tokens), so
    the whole transplant path runs in a second.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from videoqa.offline import byte_alphabet

    vocab = {ch: b for b, ch in byte_alphabet().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                        bos_token="<|im_start|>", model_max_length=8192,
                                        clean_up_tokenization_spaces=False)
    ids = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=4 * head_dim, intermediate_size=8 * head_dim,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         initializer_range=0.2,  # logits that can peak (at 0.02 a tiny LM is stuck near uniform)
                         bos_token_id=ids[0], eos_token_id=ids[1], pad_token_id=ids[1],
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Source(model, tokenizer, f"tiny-llama(seed={seed},head_dim={head_dim},layers={layers})")


def mrope_sections(head_dim: int) -> list[int]:
    """Qwen2-VL's M-RoPE split (16/24/24 of 64 frequency pairs) scaled to ``head_dim / 2`` pairs."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def chat_template(system: str = SMOLLM2_SYSTEM) -> str:
    """ChatML with Qwen2-VL's vision markers (:data:`videoqa.offline.CHAT_TEMPLATE`), with ``system`` as default."""
    from videoqa.offline import CHAT_TEMPLATE, DEFAULT_SYSTEM

    if CHAT_TEMPLATE.count(DEFAULT_SYSTEM) != 1:
        raise RuntimeError("videoqa.offline.CHAT_TEMPLATE no longer has exactly one default system prompt")
    return CHAT_TEMPLATE.replace(DEFAULT_SYSTEM, system)


def _token_id(tokenizer, token: str):
    i = tokenizer.convert_tokens_to_ids(token)
    return None if i is None or i == getattr(tokenizer, "unk_token_id", None) else i


def add_vision_tokens(tokenizer, system: str = SMOLLM2_SYSTEM) -> list[str]:
    """Add Qwen2-VL's vision tokens (special, never split) and set the chat template. Returns the tokens added.

    The tokenizer is modified in place; the new ids follow the existing vocabulary in
    :data:`VISION_TOKENS` order.
    """
    from tokenizers import AddedToken

    for needed in ("<|im_start|>", "<|im_end|>"):
        if _token_id(tokenizer, needed) is None:
            raise ValueError(f"the source tokenizer has no {needed} token: not a ChatML model")
    missing = [t for t in VISION_TOKENS if _token_id(tokenizer, t) is None]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    tokenizer.chat_template = chat_template(system)
    return missing


def check_source_config(config) -> None:
    """ValueError unless the Llama config maps onto Qwen2-VL's text model without changing the function."""
    problems = []
    if getattr(config, "model_type", None) != "llama":
        problems.append(f"model_type {config.model_type!r} (expected 'llama')")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim * config.num_attention_heads != config.hidden_size:
        problems.append("head_dim * num_attention_heads != hidden_size (Qwen2-VL derives head_dim from them)")
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(config, flag, False):
            problems.append(f"{flag}=True")
    rope = dict(getattr(config, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope_type {rope.get('rope_type')!r} (only plain RoPE maps onto M-RoPE)")
    if getattr(config, "pretraining_tp", 1) != 1:
        problems.append("pretraining_tp != 1")
    if config.hidden_act != "silu":
        problems.append(f"hidden_act {config.hidden_act!r}")
    if problems:
        raise ValueError("cannot transplant this model into Qwen2-VL: " + "; ".join(problems))


def qwen2vl_config(source_config, tokenizer, vision_config: dict | None = None):
    """The ``Qwen2VLConfig``: the source LM's text shapes, the vision tokens' ids, a small vision tower."""
    from transformers import Qwen2VLConfig

    check_source_config(source_config)
    c = source_config
    head_dim = c.hidden_size // c.num_attention_heads
    vision = {**DEFAULT_VISION, **(vision_config or {})}
    for key, value in QWEN2VL_GEOMETRY.items():
        if vision.setdefault(key, value) != value:
            raise ValueError(f"vision_config[{key!r}] must stay {value} (Qwen2-VL's patch geometry)")
    vision["hidden_size"] = c.hidden_size  # the merger projects into the language model's width
    if (vision["embed_dim"] // vision["num_heads"]) % 4:
        raise ValueError("vision head dim (embed_dim / num_heads) must be a multiple of 4 (2-D rotary)")
    ids = {t: _token_id(tokenizer, t) for t in (*VISION_TOKENS, "<|im_end|>", "<|endoftext|>")}
    eos = ids["<|im_end|>"]
    pad = c.pad_token_id if c.pad_token_id is not None else eos
    text = dict(vocab_size=len(tokenizer), hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                num_key_value_heads=c.num_key_value_heads, hidden_act=c.hidden_act,
                max_position_embeddings=c.max_position_embeddings, rms_norm_eps=c.rms_norm_eps,
                initializer_range=c.initializer_range, attention_dropout=0.0, use_sliding_window=False,
                bos_token_id=c.bos_token_id, eos_token_id=eos, pad_token_id=pad, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": float(c.rope_parameters["rope_theta"]),
                                 "mrope_section": mrope_sections(head_dim)})
    return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True,
                         image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                         vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                         eos_token_id=eos, pad_token_id=pad, bos_token_id=c.bos_token_id)


@torch.no_grad()
def match_merger_scale(model, seed: int = 0) -> float:
    """Scale the merger's last layer so its outputs' RMS equals the token embeddings' RMS on a noise video.

    A random merger's outputs can be several times larger or smaller than token embeddings;
    starting at the same size keeps the frozen language model in its usual input range at step 0.
    Returns the factor applied.
    """
    visual = model.model.visual
    cfg = visual.config
    gen = torch.Generator().manual_seed(seed)
    grid = torch.tensor([[2, 8, 8]])
    pixels = torch.randn(int(grid.prod()), 3 * cfg.temporal_patch_size * cfg.patch_size ** 2, generator=gen)
    out = visual(pixels.to(visual.dtype), grid_thw=grid).pooler_output.float()
    target = model.model.language_model.embed_tokens.weight.float().pow(2).mean().sqrt()
    factor = float(target / out.pow(2).mean().sqrt().clamp_min(1e-12))
    last = visual.merger.mlp[-1]
    last.weight.mul_(factor)
    last.bias.mul_(factor)
    return factor


def build_default_model(vision_config: dict | None = None, *, source: Source | None = None, seed: int = 0,
                        system: str = SMOLLM2_SYSTEM):
    """``(model, processor)``: the transplanted Qwen2-VL (float32, CPU, eval mode) and its :class:`VideoQAProcessor`.

    Args:
        vision_config: overrides of :data:`DEFAULT_VISION` (``depth``, ``embed_dim``, ``num_heads``,
            ``mlp_ratio``); the patch geometry stays Qwen2-VL's.
        source: the language model to transplant (default: SmolLM2-135M-Instruct, :func:`smollm2_source`).
        seed: initialises the vision tower and the new token rows (same seed, same weights).
        system: the chat template's default system prompt.

    All language-model parameters come back with ``requires_grad=False``; the vision tower's with True.
    """
    from transformers import Qwen2VLForConditionalGeneration

    from videoqa.patchify import PatchSpec
    from videoqa.processor import VideoQAProcessor
    from videoqa.vision_attention import batch_vision_attention

    source = source if source is not None else smollm2_source()
    tokenizer = copy.deepcopy(source.tokenizer)
    add_vision_tokens(tokenizer, system)
    config = qwen2vl_config(source.model.config, tokenizer, vision_config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config)
    model.eval()
    transplant_language_model(source.model, model, seed=seed)
    match_merger_scale(model, seed)
    batch_vision_attention(model)  # training's needle batches are thousands of frames (vision_attention.py)
    for p in model.model.language_model.parameters():
        p.requires_grad_(False)
    for p in model.model.visual.parameters():
        p.requires_grad_(True)
    model.generation_config.eos_token_id = getattr(config, "eos_token_id", None) or config.text_config.eos_token_id
    model.generation_config.pad_token_id = getattr(config, "pad_token_id", None) or config.text_config.pad_token_id
    model.config.videoqa_source = source.name  # kept in config.json: where the language model came from
    v = config.vision_config
    spec = PatchSpec(patch_size=v.patch_size, temporal_patch_size=v.temporal_patch_size, merge_size=v.spatial_merge_size)
    return model, VideoQAProcessor(tokenizer, spec)


def vision_parameters(model) -> dict[str, torch.nn.Parameter]:
    """The vision tower's and merger's parameters by name (what training updates)."""
    return {f"model.visual.{n}": p for n, p in model.model.visual.named_parameters()}


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
