"""The video language models the pipeline runs, by ``model_type``, and what differs between them.

What a family fixes for the pipeline:

* the transformers class that loads it;
* the prompt layout of a video: ``"single"`` (Qwen2-VL, Qwen2.5-VL: one ``<|vision_start|>``, the
  video's tokens, one ``<|vision_end|>``) or ``"timestamped"`` (Qwen3-VL, Qwen3.5: per temporal
  patch, ``<t.t seconds>`` then ``<|vision_start|>``, that patch's tokens, ``<|vision_end|>``, the
  way their processors write it, with ``t`` the mean time of the patch's two frames);
* the patch geometry its vision tower expects when a checkpoint does not say (14-pixel patches
  and CLIP normalisation for Qwen2/2.5-VL; 16-pixel patches and mean/std 0.5 for Qwen3-VL/3.5),
  so frame sides are multiples of 28 or 32;
* whether positions are time-aligned (Qwen2.5-VL's ``second_per_grid_ts``);
* whether its language model mixes linear-attention layers with full-attention ones (Qwen3.5:
  ``config.layer_types``); only the full-attention layers take UniSparse.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..patchify import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PatchSpec


@dataclass(frozen=True)
class Family:
    model_type: str
    class_name: str
    layout: str  # "single" or "timestamped"
    spec: PatchSpec  # the vision tower's patch geometry and normalisation when a checkpoint does not say
    time_aligned: bool = False  # Qwen2.5-VL: positions follow seconds (second_per_grid_ts)
    hybrid: bool = False  # linear-attention layers beside the full-attention ones
    label: str = ""


_QWEN2 = PatchSpec(patch_size=14, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
_QWEN3 = PatchSpec(patch_size=16, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))

FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("qwen2_vl", "Qwen2VLForConditionalGeneration", "single", _QWEN2, label="Qwen2-VL"),
    Family("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", "single", _QWEN2, time_aligned=True,
           label="Qwen2.5-VL"),
    Family("qwen3_vl", "Qwen3VLForConditionalGeneration", "timestamped", _QWEN3, label="Qwen3-VL"),
    Family("qwen3_vl_moe", "Qwen3VLMoeForConditionalGeneration", "timestamped", _QWEN3, label="Qwen3-VL MoE"),
    Family("qwen3_5", "Qwen3_5ForConditionalGeneration", "timestamped", _QWEN3, hybrid=True, label="Qwen3.5"),
    Family("qwen3_5_moe", "Qwen3_5MoeForConditionalGeneration", "timestamped", _QWEN3, hybrid=True,
           label="Qwen3.5 MoE"),
)}


def family(model_type: str | None, where: str = "this model") -> Family:
    """The :class:`Family` of ``model_type``; ValueError naming the families the pipeline knows."""
    found = FAMILIES.get(model_type or "")
    if found is None:
        known = ", ".join(f"{f.label} ({t})" for t, f in FAMILIES.items())
        raise ValueError(f"{where} is a {model_type!r} model; videoqa runs {known}")
    return found


# qwen-vl-utils 0.0.14's video defaults (vision_process.py): 128 to 768 tokens a frame pair, and a
# whole-video budget of 0.9 x MODEL_SEQ_LEN (128,000) tokens, which it spreads as 2 * total / frames
# per frame; videoqa.video.sample_frames spreads total_pixels / frames, hence the factor 2 here.
QWEN_MIN_TOKENS, QWEN_MAX_TOKENS, QWEN_TOTAL_TOKENS = 128, 768, 0.9 * 128000


def video_defaults(fam: Family) -> dict:
    """qwen-vl-utils' video defaults for a real model of this family (2 fps, up to 768 frames, 128
    to 768 merged tokens a frame pair, the whole video within its token budget), in the family's
    own frame-side multiple: what the model cards' code samples when a message sets nothing."""
    f = fam.spec.factor
    return {"fps": 2.0, "max_frames": 768, "max_pixels": QWEN_MAX_TOKENS * f * f, "min_pixels": QWEN_MIN_TOKENS * f * f,
            "total_pixels": int(2 * QWEN_TOTAL_TOKENS * f * f), "size_multiple": f}
