"""videoqa.patchify / offline / processor / prompt: pixels as Qwen2-VL's processor makes them, and the prompt.

The patchifier is checked three ways: against a loop-by-loop implementation written from the
layout description (always), against transformers' PIL image processor on videos whose two
frames per temporal patch are equal (always: that processor needs no torchvision), and against
transformers' own ``Qwen2VLVideoProcessor`` -- that test is skipped only when torchvision cannot
be imported, which is the case on this project's CPU set-up.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from videoqa import choices  # noqa: E402
from videoqa.offline import CHAT_TEMPLATE, SPECIAL_TOKENS, offline_tokenizer  # noqa: E402
from videoqa.patchify import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PatchSpec, num_video_tokens, patchify_video  # noqa: E402
from videoqa.processor import VideoQAProcessor, offline_processor, torchvision_available  # noqa: E402
from videoqa.prompt import build_inputs, build_messages, expand_video_token, question_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "videoqa" / "assets" / "samples"
OPTIONS = ["a red circle", "a blue square", "a green triangle", "nothing moves"]


def random_frames(t, h, w, seed):
    return torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def naive_patches(frames, spec=PatchSpec()):
    """Row by row and value by value, in float64, with the textbook (x / 255 - mean) / std."""
    p, tp, m = spec.patch_size, spec.temporal_patch_size, spec.merge_size
    x = frames.double().numpy()
    if x.shape[0] % tp:
        x = np.concatenate([x, np.repeat(x[-1:], tp - x.shape[0] % tp, axis=0)])
    x = (x / 255.0 - np.array(spec.image_mean)[None, :, None, None]) / np.array(spec.image_std)[None, :, None, None]
    gt, gh, gw = x.shape[0] // tp, x.shape[2] // p, x.shape[3] // p
    rows = []
    for t in range(gt):
        for hb in range(gh // m):
            for wb in range(gw // m):
                for hi in range(m):
                    for wi in range(m):
                        y0, x0 = (hb * m + hi) * p, (wb * m + wi) * p
                        patch = x[t * tp:(t + 1) * tp, :, y0:y0 + p, x0:x0 + p]  # [tp, C, p, p]
                        rows.append(patch.transpose(1, 0, 2, 3).reshape(-1))  # (C, tp, y, x)
    return torch.from_numpy(np.stack(rows)), (gt, gh, gw)


@pytest.mark.parametrize("t, h, w", [(2, 28, 28), (4, 56, 84), (6, 84, 56), (3, 28, 56)])
def test_patchify_matches_naive(t, h, w, seed):
    frames = random_frames(t, h, w, seed)
    ours, grid = patchify_video(frames)
    ref, ref_grid = naive_patches(frames)
    assert grid == ref_grid == ((t + 1) // 2, h // 14, w // 14)
    assert ours.dtype == torch.float32 and ours.shape == (grid[0] * grid[1] * grid[2], 3 * 2 * 14 * 14)
    torch.testing.assert_close(ours.double(), ref, rtol=0, atol=2e-6)


def test_patchify_chunks_and_other_geometry(seed, monkeypatch):
    import videoqa.patchify as P

    frames = random_frames(10, 56, 56, seed)
    whole, _ = patchify_video(frames)
    monkeypatch.setattr(P, "_CHUNK", 2)  # 5 temporal patches in chunks of 2, 2, 1
    torch.testing.assert_close(patchify_video(frames)[0], whole, rtol=0, atol=0)
    spec = PatchSpec(patch_size=8, temporal_patch_size=1, merge_size=2, image_mean=(0.5,) * 3, image_std=(0.25,) * 3)
    ours, grid = patchify_video(random_frames(3, 32, 48, seed), spec)
    ref, ref_grid = naive_patches(random_frames(3, 32, 48, seed), spec)
    assert grid == ref_grid == (3, 4, 6)
    torch.testing.assert_close(ours.double(), ref, rtol=0, atol=2e-6)


def test_patchify_matches_transformers_image_processor_on_still_pairs(seed):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    stills = random_frames(3, 56, 84, seed)
    video = stills.repeat_interleave(2, dim=0)  # each temporal patch = one still image twice
    ours, grid = patchify_video(video)
    ref = Qwen2VLImageProcessorPil(do_resize=False)(images=[f.permute(1, 2, 0).numpy() for f in stills],
                                                   return_tensors="pt")
    assert ref["image_grid_thw"].tolist() == [[1, grid[1], grid[2]]] * 3
    torch.testing.assert_close(ours, ref["pixel_values"].float(), rtol=0, atol=1e-5)


@pytest.mark.skipif(not torchvision_available(), reason="transformers' Qwen2VLVideoProcessor needs torchvision, "
                    "which cannot be installed beside this CPU torch")
@pytest.mark.parametrize("t, h, w", [(4, 56, 84), (8, 112, 56)])
def test_patchify_matches_transformers_video_processor(t, h, w, seed):
    from transformers import Qwen2VLVideoProcessor

    frames = random_frames(t, h, w, seed)
    ref = Qwen2VLVideoProcessor()(videos=[frames], do_resize=False, return_tensors="pt", cap_pixels_per_frame=False)
    ours, grid = patchify_video(frames)
    assert ref["video_grid_thw"].tolist() == [list(grid)]
    torch.testing.assert_close(ours, ref["pixel_values_videos"], rtol=0, atol=1e-5)


def test_patchify_rejects_bad_frames():
    with pytest.raises(ValueError, match="multiples of 28"):
        patchify_video(torch.zeros(2, 3, 30, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        patchify_video(torch.zeros(2, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty"):
        patchify_video(torch.zeros(0, 3, 28, 28, dtype=torch.uint8))
    with pytest.raises(TypeError):
        patchify_video(np.zeros((2, 3, 28, 28), dtype=np.uint8))


def test_clip_constants_are_transformers():
    from transformers.utils.constants import OPENAI_CLIP_MEAN as M, OPENAI_CLIP_STD as S

    assert OPENAI_CLIP_MEAN == tuple(M) and OPENAI_CLIP_STD == tuple(S)


# ----------------------------------------------------------------------------- tokenizer, template


def test_offline_tokenizer_round_trip_and_specials():
    tok = offline_tokenizer()
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(256, 256 + len(SPECIAL_TOKENS)))
    text = "Wie viele Kreise? ½ — 円 \n\t<|im_end|>"
    ids = tok(text)["input_ids"]
    assert ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert ids[:-1] == list(text.removesuffix("<|im_end|>").encode("utf-8"))  # byte-level: id = byte
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == text.removesuffix("<|im_end|>")


def test_chat_template_renders_chatml_with_the_video_first():
    tok = offline_tokenizer()
    messages = build_messages("What moves?", video="clip.mp4")
    assert messages == [{"role": "user", "content": [{"type": "video", "video": "clip.mp4"},
                                                     {"type": "text", "text": "What moves?"}]}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|video_pad|><|vision_end|>What moves?<|im_end|>\n<|im_start|>assistant\n")
    sys_msgs = build_messages("Q?", system="Be brief.")
    text = tok.apply_chat_template(sys_msgs, tokenize=False, add_generation_prompt=False)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n") and text.count("system") == 1
    assert not text.endswith("assistant\n")


def test_question_text_and_option_errors():
    assert question_text("  What moves? ") == "What moves?"
    mc = question_text("What moves?", OPTIONS)
    assert mc == choices.multiple_choice_prompt("What moves?", OPTIONS)
    assert "B. a blue square" in mc and mc.endswith(choices.INSTRUCTION)
    for bad in ["", "   ", None]:
        with pytest.raises(ValueError, match="question"):
            question_text(bad)
    for bad in [["only one"], "ABCD", ["A. x", "C. y"], ["x", ""], [f"o{i}" for i in range(11)]]:
        with pytest.raises(ValueError):
            question_text("Q?", bad)


def test_expand_video_token_needs_exactly_one_placeholder():
    assert expand_video_token("a<|video_pad|>b", 3) == "a" + "<|video_pad|>" * 3 + "b"
    for text in ["no video", "<|video_pad|><|video_pad|>"]:
        with pytest.raises(ValueError, match="placeholders"):
            expand_video_token(text, 3)


# ----------------------------------------------------------------------------- model inputs


@pytest.fixture(scope="module")
def frames():
    pytest.importorskip("decord")
    from videoqa.video import sample_frames

    return sample_frames(SAMPLES / "shapes.mp4", num_frames=6, max_pixels=56 * 84)


def test_video_tokens_in_place_and_counted(frames):
    proc = offline_processor(use_video_processor=False)
    prepared = build_inputs(proc, frames, "What moves?", OPTIONS)
    ids = prepared.inputs["input_ids"][0]
    t, h, w = prepared.grid_thw
    assert (t, h * 14, w * 14) == (frames.num_frames // 2, *frames.frames.shape[2:])
    n = t * h * w // 4
    assert prepared.visual_tokens == n == num_video_tokens(prepared.grid_thw)
    video = (ids == proc.video_token_id).nonzero()[:, 0]
    assert len(video) == n and torch.equal(video, torch.arange(video[0], video[0] + n))  # one contiguous run
    assert ids[video[0] - 1] == proc.vision_start_id and ids[video[-1] + 1] == proc.vision_end_id
    before, after = ids[:video[0] - 1].tolist(), ids[video[-1] + 2:].tolist()
    tok = proc.tokenizer
    assert tok.decode(before).endswith("<|im_start|>user\n")  # the video opens the user turn
    assert tok.decode(after) == question_text("What moves?", OPTIONS) + "<|im_end|>\n<|im_start|>assistant\n"
    mm = prepared.inputs["mm_token_type_ids"][0]
    assert torch.equal(mm, (ids == proc.video_token_id).long() * 2)
    assert prepared.inputs["attention_mask"].eq(1).all() and prepared.num_tokens == len(ids)
    assert prepared.inputs["video_grid_thw"].tolist() == [[t, h, w]]
    pixels = prepared.inputs["pixel_values_videos"]
    assert pixels.shape == (4 * n, 1176)
    torch.testing.assert_close(pixels, patchify_video(frames.frames)[0], rtol=0, atol=0)
    assert prepared.second_per_grid_t == pytest.approx(2 / frames.sample_fps)
    assert prepared.pixels_from == "videoqa.patchify"


def test_processor_round_trip_through_a_model_directory(frames, tmp_path):
    proc = offline_processor(use_video_processor=False)
    proc.save_pretrained(tmp_path)
    assert {"tokenizer.json", "preprocessor_config.json"} <= {p.name for p in tmp_path.iterdir()}
    again = VideoQAProcessor.from_pretrained(str(tmp_path), use_video_processor=False)
    assert again.spec == proc.spec and again.eos_token_ids == proc.eos_token_ids
    a = build_inputs(proc, frames, "Which colour?")
    b = build_inputs(again, frames, "Which colour?")
    assert a.text == b.text and torch.equal(a.inputs["input_ids"], b.inputs["input_ids"])


def test_processor_reads_a_legacy_chat_template_json(tmp_path):
    import json

    tok = offline_tokenizer()
    tok.chat_template = None
    tok.save_pretrained(tmp_path)
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"patch_size": 14, "merge_size": 2,
                                                                   "temporal_patch_size": 2, "image_mean": [0.5] * 3}))
    proc = VideoQAProcessor.from_pretrained(str(tmp_path), use_video_processor=False)
    assert proc.chat_template == CHAT_TEMPLATE and proc.spec.image_mean == (0.5, 0.5, 0.5)
    assert proc.spec.image_std == OPENAI_CLIP_STD
    assert "<|video_pad|>" in proc.apply_chat_template(build_messages("Q?"))


def test_processor_rejects_a_tokenizer_without_video_token():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, "[UNK]")),
                                    unk_token="[UNK]")
    with pytest.raises(ValueError, match="video_pad"):
        VideoQAProcessor(plain)


def test_a_processor_with_a_video_processor_uses_it(frames):
    """With torchvision, pixels come from transformers' video processor: the call it gets, and its use."""
    calls = []

    class Recorder:  # stands in for Qwen2VLVideoProcessor: same call, same outputs (computed by our patchifier)
        patch_size, temporal_patch_size, merge_size = 14, 2, 2

        def __call__(self, videos, **kwargs):
            calls.append(kwargs)
            pixels, grid = patchify_video(videos[0])
            return {"pixel_values_videos": pixels + 1.0, "video_grid_thw": torch.tensor([list(grid)])}

    proc = offline_processor(use_video_processor=False)
    proc.video_processor = Recorder()
    prepared = build_inputs(proc, frames, "What moves?")
    assert prepared.pixels_from == "transformers"
    assert calls == [{"do_resize": False, "do_sample_frames": False, "return_tensors": "pt"}]  # frames already sized
    torch.testing.assert_close(prepared.inputs["pixel_values_videos"], patchify_video(frames.frames)[0] + 1.0)
