"""Training the default model (tiny random LM and vision tower, CPU): loss, overfitting, checkpoints, resume, export."""

import json

import pytest
import torch

pytest.importorskip("transformers")

from videoqa_training import training as T  # noqa: E402
from videoqa.models.compact import is_compact  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(tmp_path=None, **kw):
    base = dict(steps=3, batch_size=2, tiny=True, size=(56, 56), frames=4, warmup=1, lr=3e-3, eval_every=0,
                checkpoint_every=0, log_every=1, lora_rank=2, seed=0)
    base.update(kw)
    if tmp_path is not None:
        base.setdefault("checkpoint_dir", str(tmp_path / "ckpt"))
    return T.TrainConfig(**base)


def trainable_state(result):
    state = {f"v.{k}": v.clone() for k, v in result["model"].model.visual.state_dict().items()}
    if result["lora"] is not None:
        state.update({f"l.{k}": v.clone() for k, v in result["lora"].state_dict().items()})
    return state


def test_batches_are_a_function_of_the_step():
    cfg = tiny()
    a, b = T.step_examples(cfg, 7), T.step_examples(cfg, 7)
    assert [e.question for e in a] == [e.question for e in b]
    assert all(torch.equal(x.frames, y.frames) for x, y in zip(a, b))
    assert [e.question for e in T.step_examples(cfg, 8)] != [e.question for e in a]
    # the token budget shrinks long batches; every example of a batch has the same geometry
    long = T.TrainConfig(batch_size=16, token_budget=3000, size=(112, 112), frames=128, tiny=True)
    batch = T.step_examples(long, 0)
    assert 1 <= len(batch) <= 3000 // (64 * 16) and len({tuple(e.frames.shape) for e in batch}) == 1


def test_needle_sizes_choose_the_needle_frames_and_keep_old_checkpoints_resumable():
    cfg = T.TrainConfig(batch_size=4, group_weights={"needle": 1.0}, needle_sizes=((224, 224),), tiny=True)
    shapes = {tuple(e.frames.shape[-2:]) for step in range(4) for e in T.step_examples(cfg, step)}
    assert shapes == {(224, 224)}
    # 224x224 needles hold 64 visual tokens a frame pair: the token budget cuts the batch
    batch = T.step_examples(cfg, 0)
    assert len(batch) <= max(1, cfg.token_budget // (batch[0].frames.shape[0] // 2 * 64 + 80))
    default = T.TrainConfig(batch_size=4, group_weights={"needle": 1.0}, tiny=True)
    assert "needle_sizes" not in default.schedule_key()  # an option left unset does not change the key
    assert cfg.schedule_key()["needle_sizes"] == [[224, 224]]
    parsed = T.parse_args(["--needle-sizes", "168x168,224x224"])
    assert parsed.needle_sizes == ((168, 168), (224, 224))
    with pytest.raises(SystemExit):
        T.parse_args(["--needle-sizes", "100x100"])  # argparse: not multiples of 28


def test_clip_group_draws_the_sample_video_kinds_and_adds_them_to_the_eval(tmp_path):
    cfg = T.TrainConfig(batch_size=3, group_weights={"clip": 1.0}, tiny=True, frames=4)
    kinds = {e.kind for step in range(12) for e in T.step_examples(cfg, step)}
    assert kinds <= set(T.CLIP_KINDS) and len(kinds) >= 3
    assert all(e.num_frames == 8 for e in T.step_examples(cfg, 0))  # clips take at least 8 frames
    events = []
    T.train(tiny(tmp_path, steps=1, group_weights={"clip": 1.0}, frames=8, eval_every=1, eval_examples=4),
            log=events.append)
    ev = next(e for e in events if e["event"] == "eval")
    assert ev["n"] == 4 + 2 and set(ev["per_kind"]) & set(T.CLIP_KINDS)


def test_labels_cover_only_the_answer():
    model, processor, _, _ = T.build(tiny())
    ex = T.step_examples(tiny(), 0)[0]
    enc = T.encode(processor, ex)
    answer = enc["input_ids"][enc["labels"] != -100]
    assert processor.tokenizer.decode(answer) == ex.target + "<|im_end|>"
    assert (enc["labels"][: -len(answer)] == -100).all()
    batch = T.collate([enc, T.encode(processor, T.step_examples(tiny(), 1)[0])], pad_id=0)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_still_group_draws_needle_style_digits_and_adds_them_to_the_eval(tmp_path):
    cfg = T.TrainConfig(batch_size=3, group_weights={"still": 1.0, "single": 1.0}, tiny=True)
    examples = [e for step in range(16) for e in T.step_examples(cfg, step)]
    assert {e.kind for e in examples} - set(T.STATIC_KINDS) == {"digit_on_color"}
    assert all(e.num_frames in (2, 4) for e in examples if e.kind == "digit_on_color")
    events = []
    T.train(tiny(tmp_path, steps=1, group_weights={"still": 1.0}, eval_every=1, eval_examples=8), log=events.append)
    ev = next(e for e in events if e["event"] == "eval")
    assert ev["n"] == 8 + 2 and "digit_on_color" in ev["per_kind"]


def test_crowd_group_draws_the_sample_layouts_and_adds_them_to_the_eval(tmp_path):
    cfg = T.TrainConfig(batch_size=3, group_weights={"crowd": 1.0}, tiny=True, max_frames=32)
    examples = [e for step in range(8) for e in T.step_examples(cfg, step)]
    assert {e.kind for e in examples} == {"crowd_mover", "crowd_color", "scene_seq"}
    assert all(e.num_frames <= 32 for e in examples)
    events = []
    T.train(tiny(tmp_path, steps=1, group_weights={"crowd": 1.0}, eval_every=1, eval_examples=8, max_frames=32),
            log=events.append)
    ev = next(e for e in events if e["event"] == "eval")
    assert ev["n"] == 8 + 2 and set(ev["per_kind"]) & {"crowd_mover", "crowd_color"}


def test_count_group_draws_only_counting_questions_and_leaves_the_other_groups_draws_alone():
    cfg = T.TrainConfig(batch_size=3, group_weights={"count": 1.0}, tiny=True)
    examples = [e for step in range(6) for e in T.step_examples(cfg, step)]
    assert {e.kind for e in examples} == {"count"} and all(e.num_frames in (2, 4) for e in examples)
    plain = T.TrainConfig(batch_size=3, group_weights={"single": 1.0, "needle": 1.0}, tiny=True)
    mixed = T.TrainConfig(batch_size=3, group_weights={"single": 1.0, "needle": 1.0, "count": 0.0}, tiny=True)
    assert [e.question for e in T.step_examples(plain, 5)] == [e.question for e in T.step_examples(mixed, 5)]


def test_a_kind_name_is_a_group_of_that_kind_alone_and_where_adds_its_questions_to_the_eval(tmp_path):
    cfg = T.TrainConfig(batch_size=3, group_weights={"travel": 1.0, "where": 1.0}, tiny=True, max_frames=32)
    examples = [e for step in range(10) for e in T.step_examples(cfg, step)]
    assert {e.kind for e in examples} == {"travel", "where"}
    assert all(e.num_frames >= 8 for e in examples if e.kind == "travel")
    assert any(e.num_frames < 8 for e in examples if e.kind == "where")
    assert T._weights("travel=0.2,single=0.8") == {"travel": 0.2, "single": 0.8}
    with pytest.raises(ValueError, match="unknown group 'travels'"):
        T._weights("travels=1")
    events = []
    T.train(tiny(tmp_path, steps=1, group_weights={"where": 1.0}, eval_every=1, eval_examples=8), log=events.append)
    ev = next(e for e in events if e["event"] == "eval")
    assert ev["n"] == 8 + 2 and "where" in ev["per_kind"]
    short = T.TrainConfig(batch_size=3, group_weights={"does": 1.0}, tiny=True, max_frames=32)
    assert any(e.num_frames < 8 for step in range(10) for e in T.step_examples(short, step))  # 2 s clips at 2 fps


def test_right_padded_batch_needs_no_mask():
    """Dropping a right-padded batch's mask (so SDPA runs causal kernels) leaves every real token's output as it was."""
    model, processor, _, _ = T.build(tiny())
    encoded = [T.encode(processor, e) for e in T.step_examples(tiny(), 0)[:2]]
    encoded[1] = {**encoded[1], **{k: encoded[1][k][:-3] for k in ("input_ids", "labels", "mm_token_type_ids")}}
    batch = T.collate(encoded, pad_id=0)
    mask = batch["attention_mask"]
    assert not mask.all() and T._needed_mask(mask) is None
    left = mask.flip(1)  # left padding is not implied by causality: the mask stays
    assert T._needed_mask(left) is left
    kw = dict(input_ids=batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
              pixel_values_videos=batch["pixel_values_videos"], video_grid_thw=batch["video_grid_thw"], use_cache=False)
    with torch.no_grad():
        masked = model.model(attention_mask=mask, **kw).last_hidden_state
        unmasked = model.model(attention_mask=None, **kw).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(unmasked[real], masked[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["causal", "masked", "decode"])
def test_repeated_kv_sdpa_matches_transformers_sdpa(case):
    """The training attention is transformers' SDPA with the key/value heads repeated: same outputs."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    g = torch.Generator().manual_seed(3)
    q_len, kv_len = (1, 37) if case == "decode" else (37, 37)
    q = torch.randn(2, 9, q_len, 64, generator=g)
    k, v = (torch.randn(2, 3, kv_len, 64, generator=g) for _ in range(2))
    mask = None
    if case == "masked":
        mask = torch.ones(kv_len, kv_len).tril().bool()[None, None].repeat(2, 1, 1, 1)
        mask[1, :, :, -5:] = False
        mask[1, :, -5:, 0] = True  # rows that would otherwise see nothing
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    ours, _ = T.repeated_kv_sdpa(module, q, k, v, mask, scaling=0.125)
    theirs, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.125)
    assert ours.shape == theirs.shape == (2, q_len, 9, 64)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_training_attention_leaves_the_model_outputs_unchanged():
    model, processor, _, _ = T.build(tiny())
    batch = T.collate([T.encode(processor, e) for e in T.step_examples(tiny(), 0)[:2]], pad_id=0)
    kw = {k: batch[k] for k in ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw")}
    with torch.no_grad():
        before = model.model(use_cache=False, **kw).last_hidden_state
        T.use_train_attention(model)
        assert model.config.text_config._attn_implementation == T.TRAIN_ATTENTION
        after = model.model(use_cache=False, **kw).last_hidden_state
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_three_steps_finite_loss_and_checkpoint(tmp_path):
    r = T.train(tiny(tmp_path), log=lambda rec: None)
    losses = [h["loss"] for h in r["history"] if h["event"] == "train"]
    assert r["step"] == 3 and r["stopped"] == "done" and len(losses) == 3
    assert all(torch.isfinite(torch.tensor(losses)))
    assert r["checkpoint"].endswith("step-0000003")
    state = json.loads((tmp_path / "ckpt" / "step-0000003" / "state.json").read_text())
    assert state["step"] == 3
    assert (tmp_path / "ckpt" / "log.jsonl").read_text().count('"event": "train"') == 3


@pytest.mark.parametrize("rank", [0, 4])
def test_overfits_one_repeated_batch(rank):
    """The vision tower alone (rank 0), and with LoRA, fits one batch: gradients reach it through the frozen LM."""
    cfg = tiny(lora_rank=rank)
    model, processor, lora, _ = T.build(cfg)
    model.train()
    batch = T.collate([T.encode(processor, e) for e in T.step_examples(cfg, 0)], pad_id=0)
    opt = T.make_optimizer(T.TrainConfig(lr=1e-2, lora_lr=1e-2, tiny=True), model, lora)
    frozen = {k: v.clone() for k, v in model.model.language_model.state_dict().items()}
    losses = []
    for _ in range(20):
        loss, _, _ = T.answer_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    # the language model itself never moved (LoRA lives outside it)
    assert all(torch.equal(v, model.model.language_model.state_dict()[k]) for k, v in frozen.items())


def test_resume_continues_exactly(tmp_path):
    straight = T.train(tiny(tmp_path / "a", steps=4), log=lambda rec: None)
    first = T.train(tiny(tmp_path / "b", steps=4, stop_at=2), log=lambda rec: None)
    assert first["step"] == 2 and first["stopped"] == "stop_at" and first["checkpoint"].endswith("step-0000002")
    events = []
    second = T.train(tiny(tmp_path / "b", steps=4, resume=True), log=events.append)
    assert events[0]["event"] == "resumed" and events[0]["step"] == 2
    assert [e["step"] for e in events if e["event"] == "train"] == [3, 4]
    assert second["step"] == 4
    a, b = trainable_state(straight), trainable_state(second)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-6, msg=k)
    # other settings cannot resume this run
    with pytest.raises(ValueError, match="other settings"):
        T.train(tiny(tmp_path / "b", steps=4, resume=True, lr=1.0), log=lambda rec: None)


def test_data_workers_give_the_same_batches(tmp_path):
    quiet = []
    serial = T.train(tiny(steps=3), log=quiet.append)
    parallel = T.train(tiny(steps=3, workers=2), log=quiet.append)
    assert [h["loss"] for h in serial["history"]] == [h["loss"] for h in parallel["history"]]


def test_time_limit_checkpoints_and_stops(tmp_path):
    r = T.train(tiny(tmp_path, steps=50, time_limit_s=0.5), log=lambda rec: None)
    assert r["stopped"] == "time_limit" and r["step"] < 50
    assert r["checkpoint"].endswith(f"step-{r['step']:07d}")


def test_export_compact_after_the_last_step(tmp_path):
    r = T.train(tiny(tmp_path, steps=2, export=str(tmp_path / "model")), log=lambda rec: None)
    assert r["export"] == str(tmp_path / "model") and is_compact(tmp_path / "model")
    marker = json.loads((tmp_path / "model" / "videoqa_default.json").read_text())
    assert marker["trained_steps"] == 2 and marker["lora"]["rank"] == 2


def test_visual_scale_penalty_pulls_visual_tokens_to_the_text_scale():
    """With only the penalty to minimise (answer loss detached), the merger's RMS moves to the text RMS."""
    cfg = tiny(lora_rank=0)
    model, processor, _, _ = T.build(cfg)
    model.train()
    batch = T.collate([T.encode(processor, e) for e in T.step_examples(cfg, 0)], pad_id=0)
    text_rms = float(model.model.language_model.embed_tokens.weight.float().pow(2).mean().sqrt())
    with torch.no_grad():
        model.model.visual.merger.mlp[-1].weight.mul_(20.0)  # blow the visual tokens up, as training did
        model.model.visual.merger.mlp[-1].bias.mul_(20.0)
    _, _, before = T.answer_loss(model, batch)
    assert before > 5 * text_rms
    opt = torch.optim.Adam(model.model.visual.parameters(), lr=3e-2)
    for _ in range(100):
        plain, _, _ = T.answer_loss(model, batch)
        total, _, rms = T.answer_loss(model, batch, visual_scale_weight=1.0, text_rms=text_rms)
        opt.zero_grad()
        (total - plain).backward()  # the penalty's gradient only
        opt.step()
    _, _, after = T.answer_loss(model, batch)
    assert abs(after / text_rms - 1) < 0.5 < abs(before / text_rms - 1), (before, after, text_rms)


def test_export_on_stop_writes_a_snapshot(tmp_path):
    r = T.train(tiny(tmp_path, steps=50, stop_at=2, export=str(tmp_path / "snap"), export_on_stop=True),
                log=lambda rec: None)
    assert r["stopped"] == "stop_at" and is_compact(tmp_path / "snap")
    assert json.loads((tmp_path / "snap" / "videoqa_default.json").read_text())["trained_steps"] == 2
    r = T.train(tiny(tmp_path / "b", steps=50, stop_at=2, export=str(tmp_path / "none")), log=lambda rec: None)
    assert not (tmp_path / "none").exists()


def test_a_non_finite_step_is_skipped_and_logged(tmp_path, monkeypatch):
    real = T.answer_loss
    calls = []

    def poisoned(model, batch, *a, **kw):
        loss, acc, rms = real(model, batch, *a, **kw)
        calls.append(1)
        return (loss * float("nan"), acc, rms) if len(calls) == 2 else (loss, acc, rms)

    monkeypatch.setattr(T, "answer_loss", poisoned)
    events = []
    r = T.train(tiny(steps=3), log=events.append)
    bad = [e for e in events if e["event"] == "nonfinite"]
    assert r["step"] == 3 and [e["step"] for e in bad] == [2]
    assert all(torch.isfinite(p).all() for p in r["model"].model.visual.parameters())
    calls.clear()
    with pytest.raises(FloatingPointError, match="non-finite"):
        T.train(tiny(steps=3, max_skipped=0), log=lambda rec: None)


def test_text_only_stage_trains_the_lora_alone_and_hands_it_on(tmp_path):
    """Stage A: described scenes, no video; only the LoRA moves, and stage 1 can start from it."""
    r = T.train(tiny(tmp_path, steps=3, text_only=True, eval_every=3, eval_examples=4), log=lambda rec: None)
    evals = [h for h in r["history"] if h["event"] == "eval"]
    assert len(evals) == 1 and evals[0]["n"] == 4 and set(evals[0]["per_kind"]) == {"color", "shape", "digit", "count"}
    built, _, lora0, _ = T.build(tiny(steps=3))
    assert all(torch.equal(a, b) for a, b in zip(r["model"].model.visual.state_dict().values(),
                                                  built.model.visual.state_dict().values()))
    assert any(not torch.equal(a, b) for a, b in zip(r["lora"].state_dict().values(), lora0.state_dict().values()))
    batch = T.collate([T.encode(r["processor"], e, text_only=True) for e in T.step_examples(tiny(text_only=True), 0)], 0)
    assert "pixel_values_videos" not in batch
    assert not (batch["input_ids"] == r["processor"].video_token_id).any()
    ckpt = tmp_path / "ckpt" / "step-0000003" / "trainable.pt"
    _, _, lora1, _ = T.build(tiny(init_lora=str(ckpt)))
    assert all(torch.equal(a, b) for a, b in zip(lora1.state_dict().values(), r["lora"].state_dict().values()))
    with pytest.raises(ValueError, match="lora_rank"):
        T.build(tiny(text_only=True, lora_rank=0))


def test_init_from_an_export_restores_tower_and_lora(tmp_path):
    """A run continued on a fresh machine starts from the export it brought back (float32 export: exact)."""
    from videoqa.models.compact import read_trained

    r = T.train(tiny(tmp_path, steps=2, export=str(tmp_path / "model"), export_format="compact"), log=lambda rec: None)
    # the training export is bfloat16 (LoRA float16): the restored weights are those values, in float32
    trained = read_trained(tmp_path / "model")
    model, _, lora, _ = T.build(tiny(init_from=str(tmp_path / "model")))
    for k, v in model.model.visual.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, trained.vision[k].float()), k
    assert trained.vision["merger.mlp.2.weight"].dtype == torch.bfloat16
    for k, v in lora.state_dict().items():
        assert torch.equal(v, trained.lora[k].float()), k
        torch.testing.assert_close(v, r["lora"].state_dict()[k].detach(), atol=1e-3, rtol=1e-2)
    assert any(b.abs().sum() > 0 for b in lora.B.values())  # really the trained factors, not a fresh B = 0
    with pytest.raises(ValueError, match="same --lora-rank"):
        T.build(tiny(init_from=str(tmp_path / "model"), lora_rank=4))
    with pytest.raises(ValueError, match="not the one this export was trained on"):
        T.build(tiny(init_from=str(tmp_path / "model"), seed=1))  # tiny LM of another seed: other weights
    with pytest.raises(ValueError, match="both give the LoRA"):
        T.build(tiny(init_from=str(tmp_path / "model"), init_lora=str(tmp_path / "x.pt")))
    # a separately grounded tower replaces the export's, the export's LoRA stays
    fresh, _, _, _ = T.build(tiny(seed=1))
    torch.save(fresh.model.visual.state_dict(), tmp_path / "tower.pt")
    model2, _, lora2, _ = T.build(tiny(init_from=str(tmp_path / "model"), init_vision=str(tmp_path / "tower.pt")))
    assert all(torch.equal(a, b) for a, b in zip(model2.model.visual.state_dict().values(),
                                                  fresh.model.visual.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(lora2.state_dict().values(), lora.state_dict().values()))
    # an export's directory also serves as a tower alone (stage 0 --init, --init-vision)
    model3, _, _, _ = T.build(tiny(init_vision=str(tmp_path / "model"), lora_rank=0))
    assert all(torch.equal(v, trained.vision[k].float()) for k, v in model3.model.visual.state_dict().items())
    assert T.parse_args(["--init-from", str(tmp_path / "model")]).init_from == str(tmp_path / "model")
    assert "init_from" in T.TrainConfig().schedule_key()  # a resumed run must start from the same export
