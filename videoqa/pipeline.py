"""One call from a video file and a question to an answer, with UniSparse prefill and its measurements.

:func:`answer` samples frames (:mod:`videoqa.video`), builds the prompt and model inputs
(:mod:`videoqa.prompt`), switches UniSparse on or off on the language model
(:func:`videoqa.models.set_sparsity`) and generates greedily, recording every prefill attention
call (:func:`unisparse.record`). The :class:`Answer` carries the text, the chosen option letter,
the token counts, the per-layer densities and masks, and the time of each step; and, for
drawing the masks, where the video's tokens sit in the prompt (``video_span``,
``frame_token_spans()``) and, when asked, the sampled frames themselves.

Timing: ``prefill`` is the time from the start of ``generate`` to the first new token's logits
(the vision encoder plus the language model's prefill: time to first token), taken by a logits
processor that fires once per step; ``generate`` is the rest (decoding). ``vision_encoder`` is the
vision tower's share of ``prefill``. CUDA is synchronised at each boundary, so the numbers are
device time, not launch time.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
import warnings
from typing import Callable, Sequence

import torch
from unisparse.recording import device_clock

from .choices import extract_letter
from .prompt import build_inputs, check_options, check_question
from .sampling import FrameSampling
from .timing import FirstTokenClock, ModuleTimer


@dataclasses.dataclass
class FramesInfo:
    """The frames the model saw."""

    count: int
    timestamps_s: list[float]
    width: int  # after resizing (multiples of 28)
    height: int
    sample_fps: float
    video_duration_s: float
    video_fps: float
    video_size: tuple[int, int]  # source width, height as displayed
    sampled_by: str = ""  # the reader: "decord", "pyav", or "qwen-vl-utils (decord)" (videoqa.answer_messages)


@dataclasses.dataclass
class Answer:
    """The model's answer to one question about one video, and how it was computed."""

    text: str
    letter: str | None  # option letter read from the text (multiple choice); None otherwise or when unclear
    question: str
    options: list[str] | None
    model: str
    random_model: bool  # True: the offline random stand-in answered; the text is meaningless
    sparse: bool
    density: float | None  # mean density UniSparse selected over the layers that selected blocks; None if none did
    visual_tokens: int
    total_tokens: int  # prompt length, visual tokens included
    new_tokens: int  # generated tokens, the end-of-turn token included when the answer ended on it
    frames: FramesInfo
    timings: dict[str, float]  # seconds: decode_video, load_model, preprocess, prefill, vision_encoder, generate, total
    # unisparse LayerRecord per language-model prefill call (masks, densities, times); empty when dense
    layers: list = dataclasses.field(default_factory=list, repr=False)
    # Layers that selected blocks and then computed dense attention (selection above the break-even
    # density, or any selection on a CPU: see videoqa.models.set_sparsity); their masks are kept.
    fallback_layers: int = 0
    # Answers from one VideoSession (videoqa.session): the timings computed once for the video and
    # reused by this question (their values are the session's one-time costs), and the length of the
    # shared prompt prefix (system turn, the user turn's start, the video) prefilled once.
    reused: tuple[str, ...] = ()
    prefix_tokens: int | None = None
    config: dict | None = None  # UniSparseConfig in force (None when dense)
    # Where the video sits in the prompt: token positions [start, end) of the <|video_pad|> run, and
    # the video grid (temporal patches, patch rows, patch columns) that produced those tokens.
    video_span: tuple[int, int] | None = None
    video_runs: list = dataclasses.field(default_factory=list)  # [start, end) of each run of video tokens
    video_grid_thw: tuple[int, int, int] | None = None
    # The video's patches in the prompt (unisparse.VideoLayout), for video-aware selection and for
    # drawing heads selected in the spatial order back in frame order; None without a multi-patch video.
    layout: object | None = None
    # The sampled frames, uint8 [T, 3, H, W], only when answer(keep_frames=...) asked for them
    # (a display aid; never serialised by to_dict).
    frame_images: torch.Tensor | None = dataclasses.field(default=None, repr=False)

    def to_dict(self, *, layers: bool = True) -> dict:
        """JSON-ready: every field but the frame pixels; per-layer records without their masks."""
        skip = ("layers", "frame_images")
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        d["frames"] = dataclasses.asdict(self.frames)
        d["layout"] = None if self.layout is None else [
            {"frame_starts": list(s.frame_starts), "height": s.height, "width": s.width} for s in self.layout.spans]
        if layers:
            d["layers"] = [r.to_dict() for r in self.layers]
        return d

    def frame_token_spans(self) -> list[tuple[int, int, float, float]]:
        """Per temporal patch, ``(first token, end token, first frame's time, last frame's time)``.

        Qwen2-VL merges consecutive frames into one temporal patch and lays out the video tokens
        patch by patch, each taking ``visual_tokens / grid_t`` tokens; this maps token positions
        back to the frames (and seconds) they came from. Empty when the span is unknown.
        """
        if self.video_span is None or self.video_grid_thw is None:
            return []
        steps = int(self.video_grid_thw[0])
        per_frames = max(1, self.frames.count // steps)
        ts = self.frames.timestamps_s
        if len(self.video_runs) == steps:  # the timestamped layout: one run of tokens per patch
            bounds = list(self.video_runs)
        else:
            start, end = self.video_span
            per_step = (end - start) // steps
            bounds = [(start + i * per_step, start + (i + 1) * per_step) for i in range(steps)]
        return [(a, b, float(ts[min(i * per_frames, len(ts) - 1)]), float(ts[min((i + 1) * per_frames - 1, len(ts) - 1)]))
                for i, (a, b) in enumerate(bounds)]


def video_token_runs(input_ids: torch.Tensor, video_token_id: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of consecutive video tokens in a one-prompt batch: one run for
    Qwen2-VL's layout, one per temporal patch for the timestamped one (Qwen3-VL, Qwen3.5)."""
    from unisparse.layout import token_runs

    return token_runs(input_ids[0], video_token_id)


def video_token_span(input_ids: torch.Tensor, video_token_id: int) -> tuple[int, int] | None:
    """``[start, end)`` from the first to the last video token of a one-prompt batch; None without any."""
    runs = video_token_runs(input_ids, video_token_id)
    return (runs[0][0], runs[-1][1]) if runs else None


def _thumbnails(frames: torch.Tensor, keep) -> torch.Tensor:
    """``frames`` kept for display: as sampled (``keep=True``), or scaled to ``keep`` pixels on the longer side."""
    from .video import _resize

    if keep is True or max(frames.shape[2:]) <= int(keep):
        return frames.clone()
    scale = int(keep) / max(frames.shape[2:])
    h, w = max(1, round(frames.shape[2] * scale)), max(1, round(frames.shape[3] * scale))
    return _resize(frames, h, w)


def answer(video, question: str, options: Sequence[str] | None = None, *, model=None, sparse: bool = True,
           config=None, sampling: FrameSampling | None = None, max_new_tokens: int = 64, device=None, dtype=None,
           system: str | None = None, dense_layers=(), backend: str = "auto", keep_masks: bool = True,
           keep_frames: bool | int = False, progress: Callable[[str], None] | None = None,
           generate_kwargs: dict | None = None, **frame_options) -> Answer:
    """Answer ``question`` about ``video`` (a file path, or frames already sampled: a
    :class:`videoqa.video.VideoFrames`), greedily, with UniSparse prefill unless ``sparse=False``.

    Args:
        options: multiple-choice options ("A. ..." or plain texts, 2-10); the prompt then asks
            for a letter and ``Answer.letter`` holds the one read from the text.
        model: a path or hub id, ``"random"``, a :class:`videoqa.models.LoadedModel`, or None
            for the default (see :mod:`videoqa.models`; the random stand-in's answers are meaningless).
        config: a :class:`unisparse.UniSparseConfig` (default: its defaults, which run dense attention
            on prompts shorter than ``min_seq_len`` = 32768 tokens, where sparse is slower; pass
            ``min_seq_len=0`` for sparse prefill at any length).
        sampling, **frame_options: which frames the model sees, a :class:`videoqa.sampling.FrameSampling`
            and/or its fields as keywords (``fps``, ``num_frames``, ``max_frames``, ``max_pixels``,
            ``total_pixels``, ``start``, ``end``; keywords win); unset ones take the model's defaults
            (``LoadedModel.video_defaults``). Rules: :func:`videoqa.video.sample_frames`.
        dense_layers, backend: passed to :func:`unisparse.enable`.
        keep_masks: keep each layer's block mask in ``Answer.layers`` (bit-packed; see :mod:`unisparse.recording`).
        keep_frames: keep the sampled frames in ``Answer.frame_images`` (for display): ``True`` as
            the model saw them, an int to scale them down to that many pixels on the longer side.
            Off by default: a long video's frames take far more memory than the answer.
        progress: called with a short line before each long step (the CLI prints them).
        generate_kwargs: extra arguments for ``model.generate``.

    Raises:
        ValueError: empty question, bad options, bad sampling arguments.
        TypeError: an unknown keyword.
        videoqa.video.VideoError (a ValueError): missing, unreadable or corrupt video.
    """
    from .models import set_sparsity

    t_start = time.perf_counter()
    frame_sampling = FrameSampling.from_options(sampling, **frame_options)
    question, options = check_request(question, options, max_new_tokens, keep_frames)
    say = progress or (lambda line: None)

    # The video first: a missing or corrupt file fails before a (possibly long) model load.
    frames = sample_video(video, model, frame_sampling, say)
    t_decoded = time.perf_counter()
    loaded = load(model, device, dtype, say)
    t_loaded = time.perf_counter()
    prepared, inputs = model_inputs(loaded, frames, question, options, system)
    t_prepared = device_clock(loaded.device)

    import unisparse

    first = FirstTokenClock(loaded.device, lambda s: say(f"prefill done in {s:.3f} s; generating up to "
                                                         f"{max_new_tokens} tokens"))
    gen_args = greedy_args(loaded, max_new_tokens, generate_kwargs, first)
    model_ = loaded.model
    with loaded.lock:
        if sparse:
            used = set_sparsity(loaded, True, config, dense_layers=dense_layers, backend=backend)
        else:
            used = set_sparsity(loaded, False)
        vision = vision_tower(model_)
        timer = ModuleTimer(vision, loaded.device) if vision is not None else None
        say(f"prefill: {prepared.num_tokens} tokens ({prepared.visual_tokens} visual), "
            f"{'UniSparse' if sparse else 'dense'} attention")
        try:
            layout = prompt_layout(loaded, prepared) if sparse else None
            with torch.inference_mode(), unisparse.video_layout(layout), unisparse.record(keep_masks=keep_masks) as rec:
                t0 = first.start = device_clock(loaded.device)
                out = model_.generate(**inputs, **gen_args)
                t_end = device_clock(loaded.device)
        finally:
            if timer is not None:
                timer.remove()
    t_first = first.time if first.time is not None else t_end
    new = out[0, prepared.num_tokens:]
    timings = {
        "decode_video": t_decoded - t_start,
        "load_model": t_loaded - t_decoded,
        "preprocess": t_prepared - t_loaded,
        "prefill": t_first - t0,
        "vision_encoder": timer.total if timer is not None else 0.0,
        "generate": t_end - t_first,
    }
    timings["total"] = time.perf_counter() - t_start
    return make_answer(loaded, frames, prepared, question, options, new, timings, list(rec.layers), sparse, used,
                       keep_frames)


# ----------------------------------------------------------------------------- the steps, shared with videoqa.session


def check_request(question, options, max_new_tokens, keep_frames=False):
    """The question and options, checked and normalised; ValueError for anything a model cannot take."""
    question = check_question(question)
    options = check_options(options)
    if int(max_new_tokens) < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if keep_frames is not True and keep_frames is not False and int(keep_frames) < 1:
        raise ValueError(f"keep_frames must be True, False or a size >= 1 in pixels, got {keep_frames}")
    return question, options


def sample_video(video, model, frame_sampling: FrameSampling, say):
    """The frames the model will see: the caller's sampling over the model's own defaults, or
    ``video`` itself when it is already a :class:`videoqa.video.VideoFrames`."""
    from .models import LoadedModel, video_defaults
    from .video import VideoFrames, sample_frames

    if isinstance(video, VideoFrames):
        if frame_sampling.given():
            raise ValueError(f"the frames are already sampled; frame options {sorted(frame_sampling.given())} "
                             "do not apply to them")
        return video

    say(f"decoding {video}")
    defaults = model.video_defaults if isinstance(model, LoadedModel) else video_defaults(model)
    return sample_frames(video, **frame_sampling.resolve(defaults))


def load(model, device, dtype, say):
    from .models import RANDOM, RANDOM_NOTICE, LoadedModel, is_cached, load_model, resolve_name

    if not isinstance(model, LoadedModel) and not is_cached(model, device=device, dtype=dtype):
        name = resolve_name(model)
        say(f"loading model {name}" + (f" ({RANDOM_NOTICE})" if name == RANDOM else ""))
    return load_model(model, device=device, dtype=dtype)


def model_inputs(loaded, frames, question, options, system, pixels=None, text_only=False):
    """``(prepared, inputs on the model's device)``; a prompt longer than the model's context warns.
    ``pixels``: see :func:`videoqa.prompt.build_inputs`; ``text_only``: move only the token tensors
    to the device (a question asked over a cached video prefix needs no pixels there)."""
    prepared = build_inputs(loaded.processor, frames, question, options, system=system, pixels=pixels)
    if loaded.context_tokens and prepared.num_tokens > loaded.context_tokens:
        warnings.warn(f"the prompt has {prepared.num_tokens} tokens ({prepared.visual_tokens} visual), more than "
                      f"{loaded.name}'s context of {loaded.context_tokens}: its answer may be poor; sample fewer "
                      f"or smaller frames (its defaults: {loaded.video_defaults})", stacklevel=3)
    inputs = {k: v.to(loaded.device) for k, v in prepared.inputs.items()
              if v is not None and not (text_only and k in ("pixel_values_videos", "video_grid_thw"))}
    if prepared.second_per_grid_t is not None and "second_per_grid_ts" in inspect.signature(loaded.model.forward).parameters:
        inputs["second_per_grid_ts"] = torch.tensor([prepared.second_per_grid_t], device=loaded.device)
    return prepared, inputs


def prompt_layout(loaded, prepared):
    """Where the video sits in the prompt (:class:`unisparse.VideoLayout`), for video-aware selection;
    None when the prompt holds no multi-patch video (nothing to reorder), or, with a warning, when
    the video tokens do not match the grid (selection then keeps the prompt's order)."""
    from unisparse import layout_from_inputs

    try:
        return layout_from_inputs(prepared.inputs["input_ids"], merge_size=loaded.processor.spec.merge_size,
                                  video_token_id=loaded.processor.video_token_id,
                                  video_grid_thw=[list(prepared.grid_thw)])
    except ValueError as err:
        warnings.warn(f"video-aware selection is off for this prompt: {err}", stacklevel=2)
        return None


def greedy_args(loaded, max_new_tokens, generate_kwargs, first: FirstTokenClock) -> dict:
    """``model.generate`` arguments for greedy decoding that stops at the end of the turn."""
    from transformers import LogitsProcessorList

    eos = loaded.processor.eos_token_ids
    pad = loaded.processor.tokenizer.pad_token_id
    # Greedy: the sampling knobs of a checkpoint's generation_config are switched off explicitly.
    gen_args = dict(max_new_tokens=int(max_new_tokens), do_sample=False, temperature=None, top_p=None, top_k=None,
                    eos_token_id=eos, pad_token_id=eos[0] if pad is None else pad)
    gen_args.update(generate_kwargs or {})
    gen_args["logits_processor"] = LogitsProcessorList([first, *gen_args.get("logits_processor", [])])
    return gen_args


def vision_tower(model):
    return getattr(model, "visual", None) or getattr(getattr(model, "model", None), "visual", None)


def make_answer(loaded, frames, prepared, question, options, new_ids, timings, layers, sparse, used, keep_frames,
                **extra) -> Answer:
    """The :class:`Answer` for generated token ids ``new_ids`` and the layers recorded during prefill."""
    text = loaded.processor.decode(new_ids).strip()
    selected = [r for r in layers if r.selected_density is not None]
    density = sum(r.selected_density for r in selected) / len(selected) if selected else None
    info = frames.info
    return Answer(
        text=text,
        letter=extract_letter(text, options) if options is not None else None,
        question=question, options=options, model=loaded.name, random_model=loaded.random, sparse=bool(sparse),
        density=density, visual_tokens=prepared.visual_tokens, total_tokens=prepared.num_tokens,
        new_tokens=int(new_ids.numel()),
        frames=FramesInfo(frames.num_frames, list(frames.timestamps_s), int(frames.frames.shape[3]),
                          int(frames.frames.shape[2]), float(frames.sample_fps), float(info.duration_s),
                          float(info.fps), (int(info.width), int(info.height)), info.backend),
        timings=timings, layers=layers,
        config=dataclasses.asdict(used) if used is not None else None,
        fallback_layers=sum(r.path == "above_break_even" for r in layers),
        video_span=video_token_span(prepared.inputs["input_ids"], loaded.processor.video_token_id),
        video_runs=video_token_runs(prepared.inputs["input_ids"], loaded.processor.video_token_id),
        video_grid_thw=tuple(int(v) for v in prepared.grid_thw),
        layout=prompt_layout(loaded, prepared),
        frame_images=_thumbnails(frames.frames, keep_frames) if keep_frames else None,
        **extra,
    )
