"""Stage 0 (videoqa_training.grounding): pixel-derived token labels, word targets, and a tower that learns them."""

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from videoqa_training import grounding as G  # noqa: E402
from videoqa_training.synthetic import make_example  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_token_labels_follow_the_drawn_pixels():
    for i in range(10):
        ex = make_example("train", i, kind=("digit", "color", "count")[i % 3], num_frames=4, noise=0)
        t, _, h, w = ex.frames.shape
        labels = G.token_labels(ex)
        gh, gw = h // 28, w // 28
        assert len(labels) == (t // 2) * gh * gw
        assert labels[:gh * gw] == labels[gh * gw:]  # static: both temporal patches read the same
        objects = G.object_masks(ex)
        colours = {" " + c for _, c, _ in objects}
        named = [lab for lab in labels[:gh * gw] if lab != (G.BACKGROUND_WORD,)]
        assert named and all(lab[0] in colours for lab in named)
        if ex.kind == "digit":  # digits as the bare digit token, as SmolLM2 writes them
            assert {lab[1] for lab in named} == {str(ex.meta["digit"])}
        # a token named after an object really has that object's colour in its window
        frame = ex.frames[0].permute(1, 2, 0).numpy().astype(int)
        for k, lab in enumerate(labels[:gh * gw]):
            y, x = divmod(k, gw)
            win = frame[28 * y:28 * y + 28, 28 * x:28 * x + 28].reshape(-1, 3)
            bg = np.array(ex.meta["background"])
            off = np.abs(win - bg).sum(-1) > 0
            if lab != (G.BACKGROUND_WORD,):
                assert off.mean() >= 0.15 - 1e-9
            elif len(objects) == 1:
                assert off.mean() < 0.15
    with pytest.raises(ValueError, match="static kinds"):
        G.object_masks(make_example("train", 0, kind="motion"))


def test_word_targets_have_the_embedding_norm_and_differ():
    from transformers import AutoTokenizer  # noqa: F401
    from videoqa_training.build import tiny_source

    src = tiny_source(0)
    emb = src.model.get_input_embeddings().weight
    targets = G.WordTargets(src.tokenizer, emb)
    a, b = targets((" red", " circle")), targets((" blue", " circle"))
    assert a.norm().item() == pytest.approx(targets.norm, rel=1e-5)
    assert not torch.allclose(a, b)
    t, is_obj = targets.batch([(" red", " circle"), (G.BACKGROUND_WORD,)])
    assert t.shape == (2, emb.shape[1]) and is_obj.tolist() == [True, False]


def test_grounding_lowers_the_loss_on_a_tiny_tower():
    from videoqa_training.training import TrainConfig, build

    model, processor, _, _ = build(TrainConfig(lora_rank=0, tiny=True))
    hist = G.ground(model, processor, G.GroundConfig(steps=40, batch_size=2, lr=3e-3, warmup=5, device="cpu"),
                    log=lambda rec: None)
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"], [h["loss"] for h in hist]


def test_digit_only_targets_and_weighted_kinds():
    ex = make_example("train", 3, kind="digit", num_frames=2, noise=0)
    both, alone = G.token_labels(ex), G.token_labels(ex, digit_only=True)
    digit = str(ex.meta["digit"])
    assert {lab for lab in both if lab != (G.BACKGROUND_WORD,)} == {(" " + ex.meta["color"], digit)}
    assert {lab for lab in alone if lab != (G.BACKGROUND_WORD,)} == {(digit,)}
    assert [lab == (G.BACKGROUND_WORD,) for lab in both] == [lab == (G.BACKGROUND_WORD,) for lab in alone]
    shapes = make_example("train", 4, kind="color", num_frames=2, noise=0)
    assert G.token_labels(shapes, digit_only=True) == G.token_labels(shapes)  # only digits change
    cfg = G.GroundConfig(batch_size=12, kinds=("digit", "digit", "count"))
    kinds = [e.kind for s in range(4) for e in G.step_examples(cfg, s)]
    assert set(kinds) == {"digit", "count"} and kinds.count("digit") > kinds.count("count")
    with pytest.raises(ValueError, match="grounding kinds"):
        G.step_examples(G.GroundConfig(kinds=("motion",)), 0)
    still = G.step_examples(G.GroundConfig(batch_size=4, kinds=("digit_on_color",)), 0)
    assert {e.kind for e in still} == {"digit_on_color"}
    for e in still:  # the digit's tokens read as the digit; the dot and the palette background as background
        labels = G.token_labels(e, digit_only=True)
        assert (e.meta["digit"],) in {(int(w[0]),) for w in labels if w[0].isdigit()}
        assert labels.count((G.BACKGROUND_WORD,)) > len(labels) // 2


def test_command_line_trains_saves_and_continues(tmp_path):
    first, again = tmp_path / "a.pt", tmp_path / "b.pt"
    assert G.main(["--tiny", "--steps", "2", "--batch-size", "2", "--kinds", "digit,count", "--digit-only",
                   "--output", str(first)]) == 0
    assert G.main(["--tiny", "--steps", "0", "--init", str(first), "--output", str(again)]) == 0
    a, b = torch.load(first), torch.load(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # no steps: the tower it started from


def test_contrastive_term_is_a_cross_entropy_over_the_batch_words():
    from videoqa_training.training import TrainConfig, build

    model, processor, _, _ = build(TrainConfig(lora_rank=0, tiny=True))
    visual = model.model.visual
    targets = G.WordTargets(processor.tokenizer, model.model.language_model.embed_tokens.weight)
    batch = G.prepare([make_example("train", i, kind="digit", num_frames=2, noise=0) for i in range(3)],
                      processor.spec, digit_only=True)
    plain, _ = G.ground_loss(visual, batch, targets, 0.75, "cpu")
    both, info = G.ground_loss(visual, batch, targets, 0.75, "cpu", contrastive=2.0, temperature=0.1)
    # the same cross-entropy written out: object tokens against every word of the batch
    labels = batch[2]
    words = sorted(set(labels))
    with torch.no_grad():
        out = visual(batch[0], grid_thw=batch[1]).pooler_output.float()
    table = torch.stack([targets(w) for w in words])
    d2 = ((out[:, None] - table[None]) ** 2).sum(-1) / targets.norm ** 2
    obj = torch.tensor([lab != (G.BACKGROUND_WORD,) for lab in labels])
    true = torch.tensor([words.index(lab) for lab in labels])
    ce = torch.nn.functional.cross_entropy(-d2[obj] / 0.1, true[obj])
    assert obj.any() and (both - plain).item() == pytest.approx(2.0 * ce.item(), rel=1e-4)
    assert 0.0 <= info["word_acc_objects"] <= 1.0
    assert G.GroundConfig().contrastive == 0.0  # off by default: stage 0 as before
