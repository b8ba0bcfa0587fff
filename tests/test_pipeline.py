"""videoqa.answer end to end on the CPU: the random stand-in Qwen2-VL on the sample videos, sparse and dense.

The random model's words are meaningless, so answers are steered, where a test needs known text,
with transformers' ``sequence_bias`` (a generation option that adds to chosen tokens' logits):
that checks decoding and letter extraction through the whole pipeline without faking the model.
"""

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("decord")

import unisparse  # noqa: E402
from unisparse import UniSparseConfig  # noqa: E402
from videoqa import Answer, VideoError, answer  # noqa: E402
import videoqa.models.loading as M  # noqa: E402
from videoqa.choices import extract_letter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "videoqa" / "assets" / "samples" / "shapes.mp4"
COUNTING = ROOT / "videoqa" / "assets" / "samples" / "counting.mp4"
OPTIONS = ["a red circle", "a blue square", "a green triangle", "nothing moves"]
STEPS = ("decode_video", "load_model", "preprocess", "prefill", "vision_encoder", "generate", "total")


@pytest.fixture(scope="module")
def loaded():
    return M.load_model("random")


def force(text, loaded):
    """sequence_bias that makes greedy decoding write ``text`` then stop (longer prefixes weigh more)."""
    ids = loaded.processor.tokenizer(text, add_special_tokens=False)["input_ids"] + [loaded.processor.eos_token_ids[0]]
    return {"sequence_bias": {tuple(ids[:i + 1]): 100.0 * (i + 1) for i in range(len(ids))}}


def test_sparse_answer_goes_through_unisparse(loaded):
    cfg = UniSparseConfig(block_size=128, top_p=0.5, min_seq_len=0, max_density=1.0)  # the sparse path itself
    a = answer(SHAPES, "What moves from left to right?", OPTIONS, model=loaded, config=cfg, max_new_tokens=6)
    assert isinstance(a, Answer) and a.sparse and a.random_model and a.model == "random"
    # frames: 2 fps over 10 s, resized to 28-multiples; visual tokens follow from them
    f = a.frames
    assert f.count == 20 and len(f.timestamps_s) == 20 and f.video_size == (320, 240)
    assert f.width % 28 == 0 and f.height % 28 == 0
    assert a.visual_tokens == (f.count // 2) * (f.height // 14) * (f.width // 14) // 4
    assert a.total_tokens > a.visual_tokens + 40  # the question and the options are there too
    # every language-model layer's prefill took the sparse path, over the whole prompt
    n_layers = loaded.model.config.text_config.num_hidden_layers
    assert [r.layer for r in a.layers] == list(range(n_layers))
    assert all(r.path == "sparse" and r.seq_len == a.total_tokens and r.block_size == 128 for r in a.layers)
    nb = -(-a.total_tokens // 128)
    for r in a.layers:
        mask = r.mask
        assert mask.shape == (1, loaded.model.config.text_config.num_attention_heads, nb, nb)
        assert not mask.triu(1).any() and mask.diagonal(dim1=-2, dim2=-1).all()
        assert r.density == pytest.approx(unisparse.block_density(mask))
    assert a.density == pytest.approx(sum(r.density for r in a.layers) / n_layers)
    assert 0 < a.density < 1  # top_p 0.5 really skipped blocks
    assert a.config["top_p"] == 0.5
    assert 1 <= a.new_tokens <= 6
    assert a.letter == extract_letter(a.text, OPTIONS)
    assert set(a.timings) == set(STEPS) and all(v >= 0 for v in a.timings.values())
    assert a.timings["prefill"] > 0 and a.timings["vision_encoder"] <= a.timings["prefill"]
    assert a.timings["total"] >= sum(a.timings[k] for k in STEPS if k not in ("total", "vision_encoder")) - 1e-6


def test_on_a_cpu_unisparse_selects_and_records_but_computes_dense_attention(loaded):
    """The CPU default (videoqa.models.set_sparsity): blocks are selected and their masks kept for
    display, then dense SDPA computes the attention, because the reference sparse path is slower."""
    kw = dict(model=loaded, num_frames=8, max_new_tokens=6)
    dense = answer(SHAPES, "What moves?", OPTIONS, sparse=False, **kw)
    a = answer(SHAPES, "What moves?", OPTIONS, config=UniSparseConfig(top_p=0.5, min_seq_len=0), **kw)
    n_layers = loaded.model.config.text_config.num_hidden_layers
    assert a.config["max_density"] == 0.0 and a.fallback_layers == n_layers
    assert [r.path for r in a.layers] == ["above_break_even"] * n_layers
    assert all(r.mask is not None and r.selected_density == pytest.approx(unisparse.block_density(r.mask))
               for r in a.layers)
    assert 0 < a.density < 1 and a.density == pytest.approx(sum(r.selected_density for r in a.layers) / n_layers)
    assert a.text == dense.text  # dense attention computed the answer


def test_dense_and_top_p_one_agree_and_dense_records_nothing(loaded):
    kw = dict(model=loaded, num_frames=8, max_new_tokens=10)
    unisparse.enable(loaded.model)  # left on by an earlier call: sparse=False must switch it off
    dense = answer(COUNTING, "Which digits appear?", sparse=False, **kw)
    assert not unisparse.is_enabled(loaded.model)
    full = answer(COUNTING, "Which digits appear?", config=UniSparseConfig(top_p=1.0, min_seq_len=0, max_density=1.0),
                  **kw)
    assert unisparse.is_enabled(loaded.model)
    assert not dense.sparse and dense.density is None and dense.layers == [] and dense.config is None
    assert full.density == 1.0 and all(r.path == "sparse" for r in full.layers)
    assert full.text == dense.text and full.new_tokens == dense.new_tokens
    assert dense.letter is None and full.letter is None  # no options, no letter
    assert dense.frames.count == 8 and dense.total_tokens == full.total_tokens


@pytest.mark.parametrize("text, letter", [("B", "B"), ("The answer is (C).", "C"), ("a green triangle", "C"),
                                          ("I am not sure", None)])
def test_letter_extracted_from_the_generated_text(loaded, text, letter):
    a = answer(SHAPES, "What appears at the end?", OPTIONS, model=loaded, num_frames=4, max_pixels=28 * 28 * 12,
               max_new_tokens=40, generate_kwargs=force(text, loaded))
    assert a.text == text and a.letter == letter
    assert a.new_tokens == len(text.encode()) + 1  # the text, then the end-of-turn token


def test_short_prompt_runs_dense_and_reports_no_density(loaded):
    a = answer(SHAPES, "Colour?", model=loaded, num_frames=2, max_pixels=28 * 28, max_new_tokens=2,
               config=UniSparseConfig(block_size=128, min_seq_len=4096))
    assert a.sparse and a.density is None
    assert a.layers and all(r.path == "short" for r in a.layers)


def test_errors(loaded, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        answer(SHAPES, "   ", model=loaded)
    with pytest.raises(ValueError, match="options"):
        answer(SHAPES, "Q?", ["only one"], model=loaded)
    with pytest.raises(ValueError):
        answer(SHAPES, "Q?", "ABCD", model=loaded)
    with pytest.raises(ValueError, match="max_new_tokens"):
        answer(SHAPES, "Q?", model=loaded, max_new_tokens=0)
    with pytest.raises(VideoError, match="not found"):
        answer(tmp_path / "missing.mp4", "Q?", model=loaded)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(SHAPES.read_bytes()[:5000])
    with pytest.raises(VideoError, match="broken.mp4"):
        answer(broken, "Q?", model=loaded)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)
    with pytest.raises(VideoError):
        answer(text, "Q?", model=loaded)


def test_model_cache_device_dtype_and_random_determinism():
    assert M.load_model("random") is M.load_model("random")
    assert M.resolve_device("cpu") == torch.device("cpu")
    assert M.resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert M.resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert M.resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError):
        M.resolve_dtype("int3", torch.device("cpu"))
    state = torch.random.get_rng_state()
    a, _ = M.random_model(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    b, _ = M.random_model(seed=3)
    c, _ = M.random_model(seed=4)
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], pc[k]) for k in pa)
    with pytest.raises(OSError, match="not found"):
        M.load_model(str(Path("/nonexistent") / "model"), cache=False)


def test_default_model_directory_is_picked_up(loaded, tmp_path, monkeypatch):
    """A saved model in videoqa/assets/default_model (here: a temporary one) replaces the random stand-in."""
    monkeypatch.delenv("VIDEOQA_MODEL", raising=False)
    monkeypatch.setattr(M, "DEFAULT_MODEL_DIR", tmp_path / "default")
    assert M.resolve_name(None) == M.RANDOM
    loaded.model.save_pretrained(tmp_path / "default")  # the stand-in's weights, saved as a real model
    loaded.processor.save_pretrained(tmp_path / "default")
    assert M.resolve_name(None) == str(tmp_path / "default")
    real = M.load_model(None, cache=False)
    assert not real.random and real.family == "qwen2_vl" and real.path == str(tmp_path / "default")
    assert real.video_defaults == M.REAL_VIDEO_DEFAULTS
    kw = dict(num_frames=4, max_pixels=28 * 28 * 20, max_new_tokens=8, sparse=False)
    from_dir = answer(SHAPES, "What moves?", model=real, **kw)
    stand_in = answer(SHAPES, "What moves?", model=loaded, **kw)
    assert from_dir.text == stand_in.text and not from_dir.random_model and from_dir.model == str(tmp_path / "default")
    monkeypatch.setenv("VIDEOQA_MODEL", "random")  # the environment variable wins over the directory
    assert M.resolve_name(None) == M.RANDOM


def test_import_videoqa_is_cheap():
    import subprocess
    import sys

    code = "import sys, videoqa; assert 'transformers' not in sys.modules; print(videoqa.answer.__module__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "videoqa.pipeline"


def test_qwen2_5_vl_directory_gets_its_class_and_seconds_per_grid(loaded, tmp_path, monkeypatch):
    """A Qwen2.5-VL checkpoint loads with its own class, and its time-aligned M-RoPE gets the real frame rate."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    base = M.random_config()
    cfg = Qwen2_5_VLConfig(
        text_config=base.text_config.to_dict(),
        vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128,
                           window_size=56, fullatt_block_indexes=[1], tokens_per_second=2),
        image_token_id=base.image_token_id, video_token_id=base.video_token_id,
        vision_start_token_id=base.vision_start_token_id, vision_end_token_id=base.vision_end_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Qwen2_5_VLForConditionalGeneration(cfg).save_pretrained(tmp_path)
    loaded.processor.save_pretrained(tmp_path)
    q25 = M.load_model(str(tmp_path), cache=False)
    assert q25.family == "qwen2_5_vl" and type(q25.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    seen = []
    real = q25.model.model.get_rope_index

    def spy(*args, **kwargs):
        seen.append(kwargs.get("second_per_grid_ts"))
        return real(*args, **kwargs)

    monkeypatch.setattr(q25.model.model, "get_rope_index", spy)
    a = answer(SHAPES, "What moves?", model=q25, num_frames=8, max_pixels=28 * 28 * 20, max_new_tokens=3,
               config=UniSparseConfig(block_size=64, min_seq_len=0, max_density=1.0))
    assert seen and seen[0].tolist() == pytest.approx([2 / a.frames.sample_fps])
    assert a.layers and all(r.path == "sparse" for r in a.layers)


def test_video_span_marks_the_video_tokens_and_frames_are_kept_on_request(loaded):
    """Answer.video_span is where the <|video_pad|> run sits in the prompt; frame_token_spans maps it to frames."""
    from videoqa.pipeline import video_token_runs, video_token_span
    from videoqa.prompt import build_inputs
    from videoqa.video import sample_frames

    kw = dict(num_frames=6, max_pixels=28 * 28 * 12, max_new_tokens=2, sparse=False)
    a = answer(COUNTING, "Which digit comes last?", model=loaded, keep_frames=True, **kw)
    # the same prompt, built independently: the span holds exactly the video tokens
    frames = sample_frames(COUNTING, num_frames=6, max_pixels=28 * 28 * 12)
    ids = build_inputs(loaded.processor, frames, "Which digit comes last?").inputs["input_ids"][0]
    start, end = a.video_span
    vid = loaded.processor.video_token_id
    assert end - start == a.visual_tokens and len(ids) == a.total_tokens
    assert (ids[start:end] == vid).all() and not (ids[:start] == vid).any() and not (ids[end:] == vid).any()
    assert 0 < start and end < a.total_tokens  # the chat template's text comes before, the question after
    t, h, w = a.video_grid_thw
    assert t == 3 and t * h * w // 4 == a.visual_tokens
    spans = a.frame_token_spans()
    assert [s[:2] for s in spans] == [(start + i * (end - start) // 3, start + (i + 1) * (end - start) // 3)
                                      for i in range(3)]
    ts = a.frames.timestamps_s
    assert [s[2:] for s in spans] == [(ts[0], ts[1]), (ts[2], ts[3]), (ts[4], ts[5])]
    # kept frames are the frames the model saw; a size scales them down; they never reach to_dict
    assert torch.equal(a.frame_images, frames.frames)
    small = answer(COUNTING, "Which digit comes last?", model=loaded, keep_frames=40, **kw)
    assert small.frame_images.shape[:2] == (6, 3) and max(small.frame_images.shape[2:]) == 40
    assert small.frame_images.dtype == torch.uint8
    d = small.to_dict()
    assert "frame_images" not in d and d["video_span"] == (start, end)
    assert answer(COUNTING, "Q?", model=loaded, **kw).frame_images is None  # off by default
    with pytest.raises(ValueError, match="keep_frames"):
        answer(COUNTING, "Q?", model=loaded, keep_frames=-3, **kw)
    # the helpers: none; split runs (the timestamped layout: one run per temporal patch) are listed
    assert video_token_span(torch.tensor([[1, 2, 3]]), vid) is None
    assert video_token_span(torch.tensor([[vid, 1, vid, vid]]), vid) == (0, 4)
    assert video_token_runs(torch.tensor([[vid, 1, vid, vid, 5]]), vid) == [(0, 1), (2, 4)]
