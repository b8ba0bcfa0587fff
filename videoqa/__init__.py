"""UniSparse VideoQA: long-video question answering with Qwen2-VL and UniSparse prefill attention.

The application layer on top of the ``unisparse`` library (which never imports it).
``videoqa.video`` reads and samples video frames for Qwen2-VL; ``videoqa.prompt`` builds the
chat prompt and model inputs; ``videoqa.models`` loads models; ``videoqa.pipeline.answer`` runs
one question end to end, ``videoqa.session`` many questions about one video from one prefill;
``videoqa.cli`` is the ``videoqa`` command.

``answer`` and ``Answer`` are imported lazily (on first use), so ``import videoqa`` does not
import transformers.
"""

from .video import VideoError, VideoFrames, VideoInfo, read_video_info, sample_frames

__all__ = ["answer", "answer_many", "answer_messages", "Answer", "VideoSession", "FrameSampling", "read_video_info", "sample_frames",
           "VideoFrames", "VideoInfo", "VideoError"]

_LAZY = {"answer": "pipeline", "Answer": "pipeline", "answer_messages": "messages", "answer_many": "session", "VideoSession": "session",
         "FrameSampling": "sampling"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
