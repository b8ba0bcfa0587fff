"""Qwen-style message lists (the model cards' format) answered unchanged; qwen-vl-utils' sampling
compared with ours where it can run (torchvision installed)."""

from pathlib import Path

import pytest

from videoqa.messages import parse_messages
from videoqa.models.families import FAMILIES, video_defaults
from videoqa.processor import torchvision_available
from videoqa.sampling import FrameSampling

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "videoqa" / "assets" / "samples" / "shapes.mp4"


def test_the_model_cards_messages_are_read():
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "video", "video": f"file://{SHAPES}", "fps": 1.0, "max_pixels": 360 * 420,
                     "nframes": 8, "video_start": 1.0, "video_end": 9.0},
                    {"type": "text", "text": "Describe this video."}, {"type": "text", "text": "Briefly."}]}]
    path, question, sampling, system = parse_messages(messages)
    assert path == str(SHAPES) and question == "Describe this video.\nBriefly." and system == "Be brief."
    assert sampling == {"fps": 1.0, "num_frames": 8, "max_pixels": 360 * 420, "start": 1.0, "end": 9.0}


@pytest.mark.parametrize("messages, match", [
    ([], "non-empty"),
    ([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "exactly one video"),
    ([{"role": "user", "content": [{"video": "a.mp4"}, {"video": "b.mp4"}]}], "exactly one video"),
    ([{"role": "user", "content": [{"type": "video", "video": "https://x/y.mp4"}]}], "download"),
    ([{"role": "user", "content": [{"type": "video", "video": "a.mp4", "speed": 2}]}], "unsupported video keys"),
    ([{"role": "user", "content": [{"type": "video", "video": "a.mp4", "resized_height": 280}]}], "unsupported video keys"),
    ([{"role": "assistant", "content": "no"}], "only system and user"),
    ([{"role": "user", "content": [{"type": "image", "image": "a.png"}]}], "unsupported content"),
])
def test_bad_messages_get_clear_errors(messages, match):
    with pytest.raises(ValueError, match=match):
        parse_messages(messages)


def test_answer_messages_answers_like_answer():
    pytest.importorskip("transformers")
    from videoqa import answer, answer_messages
    from videoqa.models import load_model

    loaded = load_model("random")
    messages = [{"role": "user", "content": [{"type": "video", "video": str(SHAPES), "nframes": 4},
                                             {"type": "text", "text": "What moves?"}]}]
    a = answer_messages(messages, model=loaded, sparse=False, max_new_tokens=3)
    b = answer(SHAPES, "What moves?", model=loaded, sparse=False, num_frames=4, max_new_tokens=3)
    assert (a.text, a.total_tokens, a.frames.count) == (b.text, b.total_tokens, 4)


@pytest.mark.skipif(not torchvision_available(), reason="qwen-vl-utils' video reader needs torchvision")
@pytest.mark.parametrize("video_keys", [{"fps": 2.0}, {"nframes": 8}, {"fps": 1.0, "max_pixels": 128 * 28 * 28}])
def test_our_sampler_gives_qwen_vl_utils_frames_sizes_and_fps(video_keys, monkeypatch):
    monkeypatch.setenv("FORCE_QWENVL_VIDEO_READER", "decord")
    from qwen_vl_utils import process_vision_info

    from videoqa.video import sample_frames

    messages = [{"role": "user", "content": [{"type": "video", "video": str(SHAPES), **video_keys},
                                             {"type": "text", "text": "?"}]}]
    _, videos, kwargs = process_vision_info(messages, return_video_kwargs=True)
    theirs = videos[0]
    _, _, sampling, _ = parse_messages(messages)
    # what the pipeline samples for a Qwen2-VL checkpoint: the message's keys over the family's defaults
    ours = sample_frames(SHAPES, **FrameSampling(**sampling).resolve(video_defaults(FAMILIES["qwen2_vl"])))
    assert tuple(ours.frames.shape) == tuple(theirs.shape)
    assert abs(ours.sample_fps - float(kwargs["fps"][0])) < 1e-3


# qwen-vl-utils 0.0.14's output for shapes.mp4 (320x240, 10 s), recorded on the GPU machine, where it
# runs (docs/runs/gpu/2026-12-03b/cuda_tests.log): frames x channels x height x width
QWEN_VL_UTILS_SHAPES = [({"fps": 2.0}, (20, 3, 280, 392)), ({"nframes": 8}, (8, 3, 280, 392)),
                        ({"fps": 1.0, "max_pixels": 128 * 28 * 28}, (10, 3, 280, 392))]


@pytest.mark.parametrize("video_keys, shape", QWEN_VL_UTILS_SHAPES)
def test_a_qwen2_vl_checkpoint_samples_what_qwen_vl_utils_recorded(video_keys, shape):
    # small frames are raised to 128 tokens (min_pixels) as qwen-vl-utils does, on the CPU too
    from videoqa.video import sample_frames

    messages = [{"role": "user", "content": [{"type": "video", "video": str(SHAPES), **video_keys},
                                             {"type": "text", "text": "?"}]}]
    _, _, sampling, _ = parse_messages(messages)
    ours = sample_frames(SHAPES, **FrameSampling(**sampling).resolve(video_defaults(FAMILIES["qwen2_vl"])))
    assert tuple(ours.frames.shape) == shape


def test_min_pixels_in_a_message_reaches_the_sampler():
    _, _, sampling, _ = parse_messages([{"role": "user", "content": [
        {"type": "video", "video": "a.mp4", "min_pixels": 64 * 28 * 28}, {"type": "text", "text": "?"}]}])
    assert sampling == {"min_pixels": 64 * 28 * 28}


def _qwen2_vl_tiny():
    """A tiny Qwen2-VL whose video defaults are the family's qwen-vl-utils ones (a "real checkpoint")."""
    import torch

    from videoqa.models import LoadedModel, context_tokens

    from tiny_models import tiny_family

    model, processor = tiny_family("qwen2_vl")
    return LoadedModel(model, processor, "tiny-qwen2_vl", None, torch.device("cpu"), torch.float32, "qwen2_vl", False,
                       video_defaults(FAMILIES["qwen2_vl"]), context_tokens(model))


@pytest.mark.skipif(not torchvision_available(), reason="qwen-vl-utils' video reader needs torchvision")
def test_a_real_checkpoint_answers_messages_on_qwen_vl_utils_frames(monkeypatch):
    monkeypatch.setenv("FORCE_QWENVL_VIDEO_READER", "decord")
    from qwen_vl_utils import process_vision_info

    from videoqa import answer_messages

    messages = [{"role": "user", "content": [{"type": "video", "video": f"file://{SHAPES}", "nframes": 4},
                                             {"type": "text", "text": "What moves?"}]}]
    loaded = _qwen2_vl_tiny()
    a = answer_messages(messages, model=loaded, sparse=False, max_new_tokens=2)
    _, videos, kwargs = process_vision_info(messages, return_video_kwargs=True)
    assert a.frames.sampled_by.startswith("qwen-vl-utils")
    assert (a.frames.count, a.frames.height, a.frames.width) == (videos[0].shape[0], *videos[0].shape[2:])
    # the same frames as our sampler takes, answered the same way
    ours = answer_messages(messages, model=loaded, sparse=False, max_new_tokens=2, frames_from="videoqa")
    assert ours.frames.sampled_by in ("decord", "pyav")
    assert (ours.frames.count, ours.frames.height, ours.frames.width) == (a.frames.count, a.frames.height, a.frames.width)
    assert abs(a.frames.sample_fps - float(kwargs["fps"][0])) < 1e-6


def test_frames_from_qwen_vl_utils_is_refused_clearly_where_it_cannot_run_or_options_bypass_it(monkeypatch):
    import videoqa.messages as M
    from videoqa import answer_messages

    messages = [{"role": "user", "content": [{"type": "video", "video": str(SHAPES)}, {"type": "text", "text": "?"}]}]
    with pytest.raises(ValueError, match="frames_from must be one of"):
        answer_messages(messages, frames_from="torchvision")
    monkeypatch.setattr(M, "qwen_vl_utils_available", lambda: False)
    with pytest.raises(ValueError, match="needs qwen-vl-utils and torchvision"):
        answer_messages(messages, frames_from="qwen-vl-utils")
    monkeypatch.setattr(M, "qwen_vl_utils_available", lambda: True)
    with pytest.raises(ValueError, match="cannot go to qwen-vl-utils"):
        answer_messages(messages, frames_from="qwen-vl-utils", num_frames=4)


def test_answer_takes_frames_already_sampled_and_refuses_frame_options_for_them():
    from videoqa import answer
    from videoqa.models import load_model
    from videoqa.video import sample_frames

    loaded = load_model("random")
    frames = sample_frames(SHAPES, num_frames=4, max_pixels=64 * 28 * 28)
    a = answer(frames, "What moves?", model=loaded, sparse=False, max_new_tokens=2)
    b = answer(SHAPES, "What moves?", model=loaded, sparse=False, max_new_tokens=2, num_frames=4,
               max_pixels=64 * 28 * 28)
    assert (a.text, a.total_tokens) == (b.text, b.total_tokens)
    with pytest.raises(ValueError, match="already sampled"):
        answer(frames, "What moves?", model=loaded, num_frames=8)
