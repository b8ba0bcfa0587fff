"""One video, many questions (videoqa.session): the prefix is prefilled once, every answer matches an
independent answer() on the same frames with dense attention, and the cache never grows."""

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

import unisparse  # noqa: E402
from unisparse import UniSparseConfig  # noqa: E402
from videoqa import answer  # noqa: E402
from videoqa.models import load_model  # noqa: E402
from videoqa.session import SHARED_TIMINGS, VideoSession, answer_many  # noqa: E402

from helpers import ScoreRecorder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "videoqa" / "assets" / "samples"
SHAPES, COUNTING = SAMPLES / "shapes.mp4", SAMPLES / "counting.mp4"
QUESTIONS = ["What moves?", "What colour is the square?", "Which shape appears last?"]
OPTIONS = [None, None, ["a circle", "a square", "a triangle", "nothing"]]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def loaded():
    return load_model("random")


def biased(loaded, seed):
    """Greedy decoding steered by a seeded random bias per token, so that answers are long and differ
    from question to question (the random stand-in alone repeats one token)."""
    gen = torch.Generator().manual_seed(seed)
    bias = {(int(t),): float(b) for t, b in zip(range(40, 200), torch.randn(160, generator=gen) * 3)}
    return {"sequence_bias": bias}


def test_dense_answers_equal_independent_answers_token_for_token(loaded):
    kw = dict(model=loaded, num_frames=8, sparse=False)
    with VideoSession(SHAPES, **kw) as session:
        got = [session.ask(q, o, max_new_tokens=12, generate_kwargs=biased(loaded, i))
               for i, (q, o) in enumerate(zip(QUESTIONS, OPTIONS))]
        assert session._cache.get_seq_length() == session.prefix_len  # cut back after every question
    want = [answer(SHAPES, q, o, max_new_tokens=12, generate_kwargs=biased(loaded, i), **kw)
            for i, (q, o) in enumerate(zip(QUESTIONS, OPTIONS))]
    assert len({a.text for a in want}) == 3 and all(a.new_tokens >= 4 for a in want)  # answers that can differ
    for a, b in zip(got, want):
        assert (a.text, a.new_tokens, a.total_tokens, a.letter) == (b.text, b.new_tokens, b.total_tokens, b.letter)
        assert a.video_span == b.video_span and a.frames == b.frames


def test_timings_say_what_was_reused_and_what_each_question_cost(loaded):
    session = VideoSession(SHAPES, model=loaded, num_frames=8, sparse=False)
    a, b = (session.ask(q, max_new_tokens=3) for q in QUESTIONS[:2])
    assert a.reused == b.reused == SHARED_TIMINGS and a.prefix_tokens == b.prefix_tokens == session.prefix_len
    assert session.prefix_len < a.total_tokens and a.video_span[1] < session.prefix_len
    for ans in (a, b):
        assert {k: ans.timings[k] for k in SHARED_TIMINGS} == {k: session.timings[k] for k in SHARED_TIMINGS}
        own = ans.timings["preprocess"] + ans.timings["prefill"] + ans.timings["generate"]
        assert 0 < own <= ans.timings["total"] + 1e-6
        assert ans.timings["total"] < session.timings["decode_video"] + session.timings["prefix_prefill"] + own
    assert session.timings["prefix_prefill"] > 0 and session.timings["vision_encoder"] > 0
    session.close()
    with pytest.raises(RuntimeError, match="closed"):
        session.ask("Again?")


def test_another_call_on_the_same_model_between_two_questions_changes_nothing(loaded):
    kw = dict(model=loaded, num_frames=8, sparse=False)
    with VideoSession(SHAPES, **kw) as session:
        first = session.ask(QUESTIONS[0], max_new_tokens=8, generate_kwargs=biased(loaded, 7))
        answer(COUNTING, "Which digit?", max_new_tokens=4, **kw)  # other frames: other M-RoPE deltas
        again = session.ask(QUESTIONS[0], max_new_tokens=8, generate_kwargs=biased(loaded, 7))
    assert again.text == first.text and again.new_tokens == first.new_tokens


def test_a_sparse_session_prefills_the_video_through_unisparse_once(loaded):
    cfg = UniSparseConfig(block_size=64, top_p=0.6, min_seq_len=0, max_density=1.0)
    with unisparse.record() as rec:
        answers = answer_many(SHAPES, QUESTIONS, OPTIONS, model=loaded, num_frames=8, config=cfg, max_new_tokens=3)
    n_layers = loaded.model.config.text_config.num_hidden_layers
    prefix = answers[0].prefix_tokens
    # one prefill through UniSparse over the prefix; the questions' suffixes run over the cache (dense)
    assert [r.path for r in rec.layers] == ["sparse"] * n_layers and {r.seq_len for r in rec.layers} == {prefix}
    assert all(all(x is y for x, y in zip(a.layers, answers[0].layers)) and 0 < a.density < 1 and a.sparse
               for a in answers)
    assert answers[0].config["top_p"] == 0.6


def test_bad_requests_fail_before_the_video_is_read(loaded, tmp_path):
    with pytest.raises(ValueError, match="question"):
        answer_many(tmp_path / "missing.mp4", ["What?", "  "], model=loaded)
    with pytest.raises(ValueError, match="one entry per question"):
        answer_many(SHAPES, ["What?", "Why?"], [None], model=loaded)
    with pytest.raises(ValueError, match="at least one"):
        answer_many(SHAPES, [], model=loaded)
    from videoqa import VideoError

    with pytest.raises(VideoError):
        VideoSession(tmp_path / "missing.mp4", model=loaded)
    with VideoSession(SHAPES, model=loaded, num_frames=4) as session:
        with pytest.raises(ValueError, match="question"):
            session.ask("")


def test_a_question_over_the_cache_runs_without_cudnn_attention_on_a_gpu(loaded, monkeypatch):
    """cuDNN builds an SDPA plan per new shape (0.76 s per question over 16K tokens on an H200), so the
    suffix prefill leaves it out there; on the CPU nothing changes."""
    import videoqa.session as session_module
    from videoqa.session import without_cudnn_attention

    before = (torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled())
    with without_cudnn_attention("cuda"):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    assert (torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.flash_sdp_enabled()) == before
    with without_cudnn_attention("cpu"):
        assert torch.backends.cuda.cudnn_sdp_enabled() == before[0]

    seen = []
    real = session_module.without_cudnn_attention
    monkeypatch.setattr(session_module, "without_cudnn_attention", lambda device: seen.append(device) or real(device))
    with VideoSession(SHAPES, model=loaded, num_frames=4, sparse=False) as session:
        session.ask(QUESTIONS[0], max_new_tokens=2)
    assert seen == [loaded.device]


def test_a_long_video_of_small_frames_gets_the_positions_answer_gives_it(loaded):
    """More temporal patches than the frame's larger side has merged tokens: transformers 5.x places the
    text after such a video at its start plus that side rather than after its last temporal position,
    then decodes from the largest position plus one. A session must give its suffix and the decoded tokens the positions answer()
    gives them: the scores of every step must agree (they differed, 2026-12-03, found at 16K tokens
    on Qwen2-VL-7B's shape, where the grid had 64 temporal patches of 16x16)."""
    kw = dict(model=loaded, num_frames=32, max_pixels=4 * 28 * 28, sparse=False)
    with VideoSession(SHAPES, **kw) as session:
        got = []
        for q in QUESTIONS[:2]:
            rec = ScoreRecorder()
            a = session.ask(q, max_new_tokens=4, generate_kwargs={"logits_processor": [rec]})
            got.append((a, rec))
    t, h, w = got[0][0].video_grid_thw
    assert t > max(h, w) // 2  # the case in question
    for (a, rec), q in zip(got, QUESTIONS[:2]):
        ref = ScoreRecorder()
        b = answer(SHAPES, q, max_new_tokens=4, generate_kwargs={"logits_processor": [ref]}, **kw)
        assert a.text == b.text and len(rec.steps) == len(ref.steps)
        for x, y in zip(rec.steps, ref.steps):
            assert (x - y).abs().max().item() < 1e-4


def test_batch_decode_gives_the_answers_asked_one_by_one(loaded):
    """ask_many: every suffix prefilled over the prefix, then one batched decode whose cache holds only the
    questions' own tokens (suffixes of different lengths, padded): the same tokens as ask() one by one."""
    kw = dict(model=loaded, num_frames=8, sparse=False)
    gen = biased(loaded, 3)
    with VideoSession(SHAPES, **kw) as session:
        one_by_one = [session.ask(q, o, max_new_tokens=12, generate_kwargs=gen) for q, o in zip(QUESTIONS, OPTIONS)]
        batched = session.ask_many(QUESTIONS, OPTIONS, max_new_tokens=12, generate_kwargs=gen)
        assert session._cache.get_seq_length() == session.prefix_len
    assert len({a.total_tokens for a in one_by_one}) == 3  # three suffix lengths: the batch pads them
    assert any(a.new_tokens >= 4 for a in one_by_one)
    for a, b in zip(batched, one_by_one):
        assert (a.text, a.new_tokens, a.letter) == (b.text, b.new_tokens, b.letter)
        assert a.reused == b.reused and a.timings["generate"] >= 0
    again = answer_many(SHAPES, QUESTIONS, OPTIONS, max_new_tokens=12, generate_kwargs=gen, batch_decode=True, **kw)
    assert [a.text for a in again] == [a.text for a in one_by_one]
    text = loaded.model.config.text_config if hasattr(loaded.model.config, "text_config") else loaded.model.config
    assert text._attn_implementation != "videoqa_shared_prefix"  # restored after the batch


def test_batch_decode_in_a_sparse_session_keeps_unisparse_for_the_next_prefill(loaded):
    kw = dict(model=loaded, num_frames=8, sparse=True, config=UniSparseConfig(min_seq_len=0))
    gen = biased(loaded, 4)
    with VideoSession(SHAPES, **kw) as session:
        batched = session.ask_many(QUESTIONS[:2], max_new_tokens=8, generate_kwargs=gen)
        one_by_one = [session.ask(q, max_new_tokens=8, generate_kwargs=gen) for q in QUESTIONS[:2]]
    assert [a.text for a in batched] == [a.text for a in one_by_one]
    text = loaded.model.config.text_config if hasattr(loaded.model.config, "text_config") else loaded.model.config
    assert text._attn_implementation == "unisparse"
