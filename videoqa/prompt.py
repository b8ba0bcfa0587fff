"""The prompt: chat messages with the video and the question, rendered and turned into model inputs.

Messages are written the way Qwen2-VL's own examples write them, one user turn whose content is
the video then the text::

    [{"role": "user", "content": [{"type": "video", "video": "clip.mp4"},
                                  {"type": "text", "text": "What happens?"}]}]

The processor's chat template renders them with a single ``<|video_pad|>`` between
``<|vision_start|>`` and ``<|vision_end|>``; :func:`build_inputs` expands it into one token per
merged patch (``grid_t * grid_h * grid_w / merge_size**2``), as ``Qwen2VLProcessor`` does, then
tokenises and marks the video tokens in ``mm_token_type_ids`` (0 text, 1 image, 2 video), which
transformers 5's Qwen2-VL needs for its multimodal rotary positions. Pixels come from transformers'
video processor when the processor has one (torchvision installed), else from
:func:`videoqa.patchify.patchify_video`, which computes the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .choices import multiple_choice_prompt, normalize_options
from .patchify import grid_thw as _grid_thw, num_video_tokens, patchify_video
from .processor import VIDEO_TOKEN, VISION_END, VISION_START


def check_question(question) -> str:
    """The question, stripped; ValueError when it is empty or not a string."""
    if not isinstance(question, str):
        raise ValueError(f"question must be a string, got {type(question).__name__}")
    if not question.strip():
        raise ValueError("question is empty")
    return question.strip()


def check_options(options) -> list[str] | None:
    """The options as a list (None stays None); ValueError for anything that is not 2-10 non-empty options."""
    if options is None:
        return None
    try:
        normalize_options(options)
    except TypeError as e:
        raise ValueError(str(e)) from None
    return [str(o) for o in options]


def question_text(question: str, options: Sequence[str] | None = None) -> str:
    """The user's text: the question alone, or the Video-MME style multiple-choice prompt."""
    question = check_question(question)
    options = check_options(options)
    return question if options is None else multiple_choice_prompt(question, options)


def build_messages(question: str, options: Sequence[str] | None = None, *, video="video",
                   system: str | None = None) -> list[dict]:
    """Qwen2-VL chat messages: an optional system turn, then the video and the question text.

    ``video`` only labels the video part (a path, as in Qwen2-VL's examples); the template emits
    the same placeholder whatever it is.
    """
    content = [{"type": "video", "video": str(video)}, {"type": "text", "text": question_text(question, options)}]
    messages = [{"role": "user", "content": content}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return messages


@dataclass
class PromptInputs:
    """Model inputs for one video question, and what went into them."""

    inputs: dict  # input_ids, attention_mask, pixel_values_videos, video_grid_thw, mm_token_type_ids
    text: str  # the rendered prompt, one <|video_pad|> (before expansion)
    grid_thw: tuple[int, int, int]
    visual_tokens: int
    second_per_grid_t: float | None  # seconds per temporal patch (Qwen2.5-VL's second_per_grid_ts)
    pixels_from: str  # "transformers" (its video processor) or "videoqa.patchify"
    messages: list = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return int(self.inputs["input_ids"].shape[1])


def expand_video_token(text: str, count: int, video_token: str = VIDEO_TOKEN) -> str:
    """Replace the template's single video placeholder with ``count`` copies."""
    found = text.count(video_token)
    if found != 1:
        raise ValueError(f"the chat template produced {found} {video_token} placeholders, expected 1")
    return text.replace(video_token, video_token * count)


def timestamped_video(text: str, patch_times: Sequence[float], per_patch: int) -> str:
    """Qwen3-VL / Qwen3.5's video layout: the template's ``<|video_pad|>`` becomes, per temporal patch,
    ``<t.t seconds>`` then ``<|vision_start|>``, ``per_patch`` video tokens and ``<|vision_end|>``,
    exactly as transformers' ``Qwen3VLProcessor.replace_video_token`` writes it (the template's own
    ``<|vision_start|>``/``<|vision_end|>`` around the placeholder stay, as they do there)."""
    found = text.count(VIDEO_TOKEN)
    if found != 1:
        raise ValueError(f"the chat template produced {found} {VIDEO_TOKEN} placeholders, expected 1")
    block = "".join(f"<{t:.1f} seconds>{VISION_START}{VIDEO_TOKEN * per_patch}{VISION_END}" for t in patch_times)
    return text.replace(VIDEO_TOKEN, block)


def patch_times(timestamps_s: Sequence[float], temporal_patch: int) -> list[float]:
    """The time of each temporal patch: the mean of its first and last frame's times (a short last
    patch repeats its last frame, as the pixels do)."""
    ts = list(timestamps_s)
    while len(ts) % temporal_patch:
        ts.append(ts[-1])
    return [(ts[i] + ts[i + temporal_patch - 1]) / 2 for i in range(0, len(ts), temporal_patch)]


def video_pixels(processor, frames: torch.Tensor):
    """``(pixel_values_videos, (t, h, w), source)`` through the processor's video processor or our patchifier."""
    vp = getattr(processor, "video_processor", None)
    if vp is not None:
        extra = {"cap_pixels_per_frame": False} if hasattr(vp, "cap_pixels_per_frame") else {}  # transformers 5.2x
        out = vp(videos=[frames], do_resize=False, do_sample_frames=False, return_tensors="pt", **extra)
        return out["pixel_values_videos"], tuple(int(v) for v in out["video_grid_thw"][0]), "transformers"
    pixels, grid = patchify_video(frames, processor.spec)
    return pixels, grid, "videoqa.patchify"


def build_inputs(processor, frames, question: str, options: Sequence[str] | None = None, *,
                 sample_fps: float | None = None, system: str | None = None, video_label="video",
                 pixels: tuple | None = None) -> PromptInputs:
    """Model inputs (batch of 1) for ``frames`` and the question.

    Args:
        processor: a :class:`videoqa.processor.VideoQAProcessor` (or anything with ``tokenizer``,
            ``spec``, ``video_processor``, ``video_token_id``, ``image_token_id`` and
            ``apply_chat_template``).
        frames: a :class:`videoqa.video.VideoFrames` or uint8 ``[T, 3, H, W]`` with T even and
            H, W multiples of 28.
        sample_fps: sampled frames per second (taken from ``VideoFrames`` when given one); sets
            ``second_per_grid_t`` for Qwen2.5-VL's time-aligned positions.
        pixels: ``(pixel_values_videos, grid_thw, pixels_from)`` of an earlier call on the same
            frames, instead of patchifying them again; ``pixel_values_videos`` may be None where
            only the tokens are wanted (:class:`videoqa.session.VideoSession`'s questions).
    """
    label = video_label
    times = None
    if hasattr(frames, "frames"):  # VideoFrames
        sample_fps = frames.sample_fps if sample_fps is None else sample_fps
        label = frames.info.path if video_label == "video" else video_label
        times = list(frames.timestamps_s)
        frames = frames.frames
    messages = build_messages(question, options, video=label, system=system)
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    pixels, grid, source = video_pixels(processor, frames) if pixels is None else pixels
    expected = _grid_thw(frames.shape[0], frames.shape[2], frames.shape[3], processor.spec)
    if tuple(grid) != expected:
        raise RuntimeError(f"video grid {grid} differs from the expected {expected}")
    n_video = num_video_tokens(grid, processor.spec.merge_size)
    if getattr(processor, "layout", "single") == "timestamped":
        if times is None:
            fps = sample_fps or 1.0
            times = [i / fps for i in range(frames.shape[0])]
        expanded = timestamped_video(text, patch_times(times, processor.spec.temporal_patch_size), n_video // grid[0])
    else:
        expanded = expand_video_token(text, n_video)
    encoded = processor.tokenizer(expanded, return_tensors="pt")
    ids = encoded["input_ids"]
    got = int((ids == processor.video_token_id).sum())
    if got != n_video:
        raise RuntimeError(f"tokenised prompt holds {got} video tokens, expected {n_video}")
    mm = torch.zeros_like(ids)
    mm[ids == processor.image_token_id] = 1
    mm[ids == processor.video_token_id] = 2
    inputs = {"input_ids": ids, "attention_mask": encoded.get("attention_mask", torch.ones_like(ids)),
              "pixel_values_videos": pixels, "video_grid_thw": torch.tensor([list(grid)], dtype=torch.long),
              "mm_token_type_ids": mm}
    spg = processor.spec.temporal_patch_size / sample_fps if sample_fps else None
    return PromptInputs(inputs, text, tuple(grid), n_video, spg, source, messages)
