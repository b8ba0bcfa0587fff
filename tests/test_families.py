"""The video model families the pipeline runs (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5 and the MoE
variants), on tiny random models built from configs: prompt layout, frames, UniSparse routing."""

import types

import pytest
import torch

pytest.importorskip("transformers")

import unisparse  # noqa: E402
from unisparse import UniSparseConfig  # noqa: E402
from videoqa import answer  # noqa: E402
from videoqa.assets import SAMPLES_DIR  # noqa: E402
from videoqa.models import LoadedModel, context_tokens, load_model, video_defaults  # noqa: E402
from videoqa.models.families import FAMILIES, family  # noqa: E402
from videoqa.prompt import patch_times, timestamped_video  # noqa: E402

from helpers import ScoreRecorder  # noqa: E402
from tiny_models import tiny_family  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
SHAPES = SAMPLES_DIR / "shapes.mp4"


def loaded_tiny(model_type):
    model, processor = tiny_family(model_type)
    f = processor.spec.factor
    return LoadedModel(model, processor, f"tiny-{model_type}", None, torch.device("cpu"), torch.float32, model_type,
                       True, {"fps": 2.0, "max_frames": 8, "max_pixels": 4 * f * f * 4, "size_multiple": f},
                       context_tokens(model))


def biased(seed=0, vocab=200):
    gen = torch.Generator().manual_seed(seed)
    return {"sequence_bias": {(t,): float(b) for t, b in zip(range(40, vocab), torch.randn(vocab - 40, generator=gen) * 3)}}


def test_unknown_families_are_refused_naming_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"'llava'.*Qwen2-VL \(qwen2_vl\).*Qwen3\.5 \(qwen3_5\)"):
        family("llava", "some/model")
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match="'llama' model; videoqa runs"):
        load_model(str(tmp_path), device="cpu", cache=False)
    assert family("qwen3_vl").spec.factor == 32 and family("qwen2_vl").spec.factor == 28
    assert {f.layout for f in FAMILIES.values()} == {"single", "timestamped"}


def test_the_timestamped_layout_is_what_transformers_writes():
    from transformers import Qwen3VLProcessor
    from transformers.video_utils import VideoMetadata

    hf = Qwen3VLProcessor.__new__(Qwen3VLProcessor)  # only its replacement rule is used: no torchvision needed
    hf.video_token, hf.vision_start_token, hf.vision_end_token = "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"
    hf.video_processor = types.SimpleNamespace(merge_size=2, temporal_patch_size=2)
    for idx, fps, grid in (([0, 12, 25, 37, 50, 62], 25.0, (3, 4, 6)), ([0, 30, 61, 91, 122], 30.0, (3, 2, 2))):
        meta = VideoMetadata(total_num_frames=200, fps=fps, frames_indices=list(idx))
        want = hf.replace_video_token({"video_grid_thw": torch.tensor([grid]), "video_metadata": [meta]}, 0)
        text = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Q?<|im_end|>\n"
        got = timestamped_video(text, patch_times([i / fps for i in idx], 2), grid[1] * grid[2] // 4)
        assert got == text.replace("<|video_pad|>", want)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_each_family_answers_with_top_p_one_exactly_as_stock_attention(model_type):
    loaded = loaded_tiny(model_type)
    fam = FAMILIES[model_type]
    kw = dict(model=loaded, max_new_tokens=8, generate_kwargs=biased(1))
    stock = answer(SHAPES, "What moves?", sparse=False, **kw)
    with unisparse.record() as rec:
        same = answer(SHAPES, "What moves?", config=UniSparseConfig(top_p=1.0, min_seq_len=0, max_density=1.0,
                                                                    block_size=32), **kw)
    assert (same.text, same.new_tokens) == (stock.text, stock.new_tokens) and stock.new_tokens >= 4
    f = stock.frames
    assert f.width % fam.spec.factor == 0 and f.height % fam.spec.factor == 0
    t = stock.video_grid_thw[0]
    assert len(stock.video_runs) == (t if fam.layout == "timestamped" else 1)
    # UniSparse ran on every full-attention layer of the language model, and only there
    route = unisparse.routing(loaded.model)
    full = [r["layer"] for r in route if r["unisparse"]]
    assert [r.layer for r in rec.layers] == full and all(r.path == "sparse" for r in rec.layers)
    if fam.hybrid:
        linear = [r for r in route if not r["unisparse"]]
        assert linear and all("linear" in r["kind"] and "linear attention" in r["why"] for r in linear)
    else:
        assert len(full) == loaded.model.config.text_config.num_hidden_layers
    sparse = answer(SHAPES, "What moves?", config=UniSparseConfig(top_p=0.5, min_seq_len=0, max_density=1.0,
                                                                  block_size=32), **kw)
    assert sparse.density is not None and 0 < sparse.density < 1


def test_a_qwen3_vl_checkpoint_directory_loads_with_its_family_rules(tmp_path):
    model, processor = tiny_family("qwen3_vl")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu", cache=False)
    assert loaded.family == "qwen3_vl" and type(loaded.model).__name__ == "Qwen3VLForConditionalGeneration"
    assert loaded.processor.layout == "timestamped" and loaded.processor.spec.patch_size == 16
    assert loaded.video_defaults["size_multiple"] == 32 == video_defaults(str(tmp_path))["size_multiple"]
    a = answer(SHAPES, "What moves?", model=loaded, sparse=False, max_frames=4, max_pixels=64 * 64, max_new_tokens=2)
    assert a.frames.width % 32 == 0 and len(a.video_runs) == a.video_grid_thw[0] == 2


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_a_session_scores_every_step_as_answer_does_in_each_family(model_type):
    """VideoSession's question and decoded tokens get answer()'s M-RoPE positions in every family,
    on a video with more temporal patches than its frame's side has merged tokens."""
    from videoqa.session import VideoSession

    loaded = loaded_tiny(model_type)
    f = loaded.processor.spec.factor
    kw = dict(model=loaded, num_frames=16, max_pixels=4 * f * f, sparse=False)
    with VideoSession(SHAPES, **kw) as session:
        rec = ScoreRecorder()
        got = session.ask("What moves?", max_new_tokens=3, generate_kwargs={"logits_processor": [rec], **biased()})
    ref = ScoreRecorder()
    want = answer(SHAPES, "What moves?", max_new_tokens=3, generate_kwargs={"logits_processor": [ref], **biased()}, **kw)
    assert got.text == want.text and len(rec.steps) == len(ref.steps) > 0
    assert max((x - y).abs().max().item() for x, y in zip(rec.steps, ref.steps)) < 1e-4


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_a_batched_decode_over_the_shared_prefix_answers_as_the_questions_asked_one_by_one(model_type):
    """VideoSession.ask_many in every family: suffixes of different lengths decoded as one batch over the
    prefix kept once, each row at the positions answer() gives it (16 temporal patches: two rope deltas)."""
    from videoqa.session import VideoSession

    loaded = loaded_tiny(model_type)
    f = loaded.processor.spec.factor
    kw = dict(model=loaded, num_frames=16, max_pixels=4 * f * f, sparse=False)
    questions = ["What moves?", "Which colour does the square have in this video?"]
    with VideoSession(SHAPES, **kw) as session:
        one_by_one = [session.ask(q, max_new_tokens=5, generate_kwargs=biased()) for q in questions]
        batched = session.ask_many(questions, max_new_tokens=5, generate_kwargs=biased())
    assert one_by_one[0].total_tokens != one_by_one[1].total_tokens
    assert [(a.text, a.new_tokens) for a in batched] == [(a.text, a.new_tokens) for a in one_by_one]
    assert any(a.new_tokens > 2 for a in one_by_one)
