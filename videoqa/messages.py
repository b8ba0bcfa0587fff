"""Qwen-style chat messages, as the model cards write them, answered by the pipeline unchanged.

Code written for Qwen2-VL, Qwen2.5-VL or Qwen3-VL passes a message list such as::

    [{"role": "user", "content": [
        {"type": "video", "video": "file:///path/clip.mp4", "fps": 1.0, "max_pixels": 360 * 420},
        {"type": "text", "text": "Describe this video."}]}]

:func:`answer_messages` reads it: the one video entry's path (``file://`` stripped) and its
sampling keys (``fps``, ``nframes``, ``max_frames``, ``max_pixels``, ``min_pixels``, ``total_pixels``,
``video_start``, ``video_end``, qwen-vl-utils' names) become :func:`videoqa.answer`'s, the user
turn's text entries the question, a system turn the system prompt. Frames are sampled by
:func:`videoqa.video.sample_frames`, which follows qwen-vl-utils' rules (``tests/test_messages.py``
compares the two where qwen-vl-utils can run, i.e. with torchvision installed).
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


def answer_messages(messages: Sequence[dict], options: Sequence[str] | None = None, **kwargs):
    """:func:`videoqa.answer` for a Qwen-style message list (see the module docstring); ``kwargs``
    are :func:`videoqa.answer`'s (``model``, ``sparse``, ``config``, ``max_new_tokens``, ...)."""
    from .pipeline import answer

    path, question, sampling, system = parse_messages(messages)
    sampling.update({k: v for k, v in kwargs.items() if k in sampling.keys() | set(KEYS.values())})
    rest = {k: v for k, v in kwargs.items() if k not in set(KEYS.values())}
    if system is not None:
        rest.setdefault("system", system)
    return answer(path, question, options, **sampling, **rest)
