"""Qwen-style chat messages, as the model cards write them, answered by the pipeline unchanged.

Code written for Qwen2-VL, Qwen2.5-VL or Qwen3-VL passes a message list such as::

    [{"role": "user", "content": [
        {"type": "video", "video": "file:///path/clip.mp4", "fps": 1.0, "max_pixels": 360 * 420},
        {"type": "text", "text": "Describe this video."}]}]

:func:`answer_messages` reads it: the one video entry's path (``file://`` stripped) and its
sampling keys (``fps``, ``nframes``, ``max_frames``, ``max_pixels``, ``min_pixels``, ``total_pixels``,
``video_start``, ``video_end``, qwen-vl-utils' names) become :func:`videoqa.answer`'s, the user
turn's text entries the question, a system turn the system prompt.

Frames: for a real checkpoint (a model whose video defaults are its family's qwen-vl-utils ones),
where qwen-vl-utils can run (it needs torchvision), they come from its ``fetch_video`` itself,
the code the model cards call, so a message list gives the same frames, sizes and fps as there;
elsewhere (no torchvision, the default model or the random stand-in, which carry their own
budgets, or ``frames_from="videoqa"``) :func:`videoqa.video.sample_frames` samples them by the
same rules (``tests/test_messages.py`` compares the two where torchvision is installed).
"""

from __future__ import annotations

from typing import Sequence

KEYS = {"fps": "fps", "nframes": "num_frames", "max_frames": "max_frames", "max_pixels": "max_pixels",
        "min_pixels": "min_pixels", "total_pixels": "total_pixels", "video_start": "start", "video_end": "end"}


def parse_messages(messages: Sequence[dict]) -> tuple[str, str, dict, str | None]:
    """``(video path, question, sampling keywords, system prompt)``; ValueError for anything else
    than one video and some text in the user turns."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    videos, texts, system = [], [], None
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"each message needs 'role' and 'content', got {m!r}")
        content = m["content"]
        if m["role"] == "system":
            system = content if isinstance(content, str) else " ".join(c.get("text", "") for c in content)
            continue
        if m["role"] != "user":
            raise ValueError(f"only system and user turns can be answered, got role {m['role']!r}")
        for part in [content] if isinstance(content, str) else content:
            if isinstance(part, str):
                texts.append(part)
            elif part.get("type") == "video" or "video" in part:
                videos.append(part)
            elif part.get("type") == "text" or "text" in part:
                texts.append(part["text"])
            else:
                raise ValueError(f"unsupported content part {part!r} (videos and text only)")
    if len(videos) != 1:
        raise ValueError(f"the messages must hold exactly one video, found {len(videos)}")
    video = videos[0]
    path = video.get("video")
    if not isinstance(path, str):
        raise ValueError("the video entry must name a file path (lists of frames are not supported)")
    path = path[len("file://"):] if path.startswith("file://") else path
    if path.startswith(("http://", "https://")):
        raise ValueError(f"download the video first: {path}")
    unknown = sorted(set(video) - set(KEYS) - {"type", "video"})
    if unknown:
        raise ValueError(f"unsupported video keys {unknown}; supported: {sorted(KEYS)}")
    sampling = {ours: video[theirs] for theirs, ours in KEYS.items() if video.get(theirs) is not None}
    return path, "\n".join(t.strip() for t in texts if t.strip()), sampling, system


FRAMES_FROM = ("auto", "qwen-vl-utils", "videoqa")


def qwen_vl_utils_available() -> bool:
    """Whether qwen-vl-utils can sample frames here (it imports torchvision)."""
    from .processor import torchvision_available

    if not torchvision_available():
        return False
    try:
        from qwen_vl_utils import vision_process  # noqa: F401
    except Exception:
        return False
    return True


def qwen_vl_utils_frames(messages: Sequence[dict], patch_size: int = 14):
    """The frames qwen-vl-utils' ``fetch_video`` samples for the message list's video, as a
    :class:`videoqa.video.VideoFrames` (uint8: its bicubic float frames rounded), with its source
    frame indices, their times (index / the file's fps) and its ``sample_fps``."""
    import dataclasses

    import torch
    from qwen_vl_utils.vision_process import extract_vision_info, fetch_video

    from .video import VideoFrames, read_video_info

    path, _, _, _ = parse_messages(messages)
    entry = next(e for e in extract_vision_info(list(messages)) if "video" in e)
    info = read_video_info(path)  # a missing or unreadable file fails here, with our error
    (video, meta), sample_fps = fetch_video({**entry, "video": path}, image_patch_size=patch_size,
                                            return_video_sample_fps=True, return_video_metadata=True)
    fps = float(meta.get("fps") or info.fps)
    indices = [int(i) for i in meta["frames_indices"]]
    frames = video.round().clamp(0, 255).to(torch.uint8)
    info = dataclasses.replace(info, backend=f"qwen-vl-utils ({info.backend})")
    return VideoFrames(frames, [i / fps for i in indices], info, float(sample_fps), indices)


def answer_messages(messages: Sequence[dict], options: Sequence[str] | None = None, *, frames_from: str = "auto",
                    **kwargs):
    """:func:`videoqa.answer` for a Qwen-style message list (see the module docstring); ``kwargs``
    are :func:`videoqa.answer`'s (``model``, ``sparse``, ``config``, ``max_new_tokens``, ...).

    ``frames_from``: ``"qwen-vl-utils"`` (its sampler; an error where it cannot run), ``"videoqa"``
    (ours), or ``"auto"``: qwen-vl-utils for a real checkpoint where it runs and no frame option is
    passed here, else ours. ``Answer.frames.sampled_by`` says which sampled them."""
    from .models import load_model
    from .models.families import FAMILIES, video_defaults
    from .pipeline import answer

    if frames_from not in FRAMES_FROM:
        raise ValueError(f"frames_from must be one of {FRAMES_FROM}, got {frames_from!r}")
    path, question, sampling, system = parse_messages(messages)
    overrides = {k: v for k, v in kwargs.items() if k in set(KEYS.values())}
    rest = {k: v for k, v in kwargs.items() if k not in set(KEYS.values())}
    if system is not None:
        rest.setdefault("system", system)
    use_theirs = frames_from == "qwen-vl-utils"
    if frames_from == "qwen-vl-utils" and not qwen_vl_utils_available():
        raise ValueError("frames_from='qwen-vl-utils' needs qwen-vl-utils and torchvision, which do not import here")
    if frames_from != "videoqa" and not overrides:
        loaded = load_model(rest.pop("model", None), device=rest.pop("device", None), dtype=rest.pop("dtype", None))
        rest["model"] = loaded
        real = FAMILIES.get(loaded.family) is not None and loaded.video_defaults == video_defaults(FAMILIES[loaded.family])
        use_theirs = use_theirs or (frames_from == "auto" and real and qwen_vl_utils_available())
        if use_theirs:
            frames = qwen_vl_utils_frames(messages, loaded.processor.spec.patch_size)
            return answer(frames, question, options, **rest)
    elif use_theirs:
        raise ValueError(f"frame options {sorted(overrides)} cannot go to qwen-vl-utils: put them in the message")
    sampling.update(overrides)
    return answer(path, question, options, **sampling, **rest)
