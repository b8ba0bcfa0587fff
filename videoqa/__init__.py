"""UniSparse VideoQA: long-video question answering with Qwen2-VL and UniSparse prefill attention.

The application layer on top of the ``unisparse`` library (which never imports it).
``videoqa.video`` reads and samples video frames for Qwen2-VL.
"""

from .video import VideoError, VideoFrames, VideoInfo, read_video_info, sample_frames

__all__ = ["read_video_info", "sample_frames", "VideoFrames", "VideoInfo", "VideoError"]
