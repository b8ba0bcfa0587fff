"""UniSparse inside transformers models: tiny random Llama and Qwen2-VL built from configs."""

import pytest
import torch

import unisparse
from unisparse import UniSparseConfig
from unisparse.integrations import transformers as integration

from tiny_models import tiny_llama, tiny_qwen2vl, video_inputs

pytest.importorskip("transformers")

BLOCK = 32


def greedy(model, **inputs):
    return model.generate(**inputs, max_new_tokens=6, do_sample=False, min_new_tokens=6)


def prompt(length=150, batch=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 200, (batch, length), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_llama_generates_the_same_tokens_with_top_p_one(backend):
    model = tiny_llama()
    inputs = prompt()
    expected = greedy(model, **inputs)
    unisparse.enable(model, UniSparseConfig(block_size=BLOCK, top_p=1.0, min_seq_len=0), backend=backend)
    with unisparse.record() as rec:
        got = greedy(model, **inputs)
    assert torch.equal(got, expected)
    assert [r.path for r in rec.layers] == ["sparse", "sparse"]  # prefill only; decode steps not recorded
    assert all(r.density == 1.0 for r in rec.layers)


def test_llama_prefill_logits_match_dense_and_sparse_differs_below_one():
    model = tiny_llama()
    inputs = prompt(300)
    dense = model(**inputs).logits
    unisparse.enable(model, UniSparseConfig(block_size=BLOCK, top_p=1.0, min_seq_len=0), backend="torch")
    torch.testing.assert_close(model(**inputs).logits, dense, rtol=1e-4, atol=1e-4)
    unisparse.enable(model, UniSparseConfig(block_size=BLOCK, top_p=0.3, sink_blocks=0, min_seq_len=0), backend="torch")
    with unisparse.record() as rec:
        sparse = model(**inputs).logits
    assert all(r.density < 1.0 for r in rec.layers)
    assert not torch.allclose(sparse, dense, atol=1e-4)


def test_decode_steps_go_to_sdpa_untouched(monkeypatch):
    model = tiny_llama()
    unisparse.enable(model, UniSparseConfig(block_size=BLOCK, top_p=0.5, min_seq_len=0), backend="torch")
    calls = []
    real = integration._sdpa()

    def spy(module, query, key, *args, **kwargs):
        calls.append((query.shape[2], key.shape[2]))
        return real(module, query, key, *args, **kwargs)

    monkeypatch.setattr(integration, "_sdpa", lambda: spy)
    greedy(model, **prompt())
    assert calls and all(q == 1 for q, _ in calls)  # only decode steps reached SDPA
    assert sorted({k for _, k in calls}) == list(range(151, 151 + 5))


def test_qwen2vl_video_generation_same_with_top_p_one_and_vision_untouched():
    model = tiny_qwen2vl()
    inputs = video_inputs(frames=8, height=112, width=112, text_tokens=60)
    expected = greedy(model, **inputs)
    unisparse.enable(model, UniSparseConfig(block_size=BLOCK, top_p=1.0, min_seq_len=0), backend="torch")
    assert model.config.text_config._attn_implementation == "unisparse"
    assert model.config.vision_config._attn_implementation == "sdpa"
    with unisparse.record() as rec:
        got = greedy(model, **inputs)
    assert torch.equal(got, expected)
    # one prefill record per language-model layer; the vision tower never reached UniSparse
    assert [r.layer for r in rec.layers] == [0, 1]
    assert all(r.seq_len == inputs["input_ids"].shape[1] for r in rec.layers)
    unisparse.disable(model)
    assert model.config.text_config._attn_implementation == "sdpa"
    assert not unisparse.is_enabled(model)


def test_recording_content_masks_and_times():
    model = tiny_qwen2vl()
    inputs = video_inputs(frames=8, height=112, width=112, text_tokens=60)
    cfg = UniSparseConfig(block_size=BLOCK, top_p=0.6, sink_blocks=0, min_seq_len=0)
    unisparse.enable(model, cfg, backend="torch")
    with unisparse.record() as rec:
        model(**inputs)
    seq_len = inputs["input_ids"].shape[1]
    nb = -(-seq_len // BLOCK)
    assert len(rec.layers) == 2
    for r in rec.layers:
        mask = r.mask
        assert mask.dtype == torch.bool and mask.shape == (1, 4, nb, nb)
        assert not mask.triu(1).any() and mask.diagonal(dim1=-2, dim2=-1).all()
        assert r.density == pytest.approx(unisparse.block_density(mask))
        assert r.selection_ms > 0 and r.attention_ms > 0
        assert r.to_dict()["path"] == "sparse"
    assert 0 < rec.mean_density() < 1
    with unisparse.record(keep_masks=False) as rec2:
        model(**inputs)
    assert rec2.layers and all(r.mask is None for r in rec2.layers)
    model(**inputs)  # recording off: nothing collected anywhere
    assert len(rec.layers) == 2 and len(rec2.layers) == 2


def test_padded_batch_short_sequences_and_dense_layers_run_dense():
    model = tiny_llama()
    unisparse.enable(model, UniSparseConfig(block_size=BLOCK, top_p=0.5, min_seq_len=100),
                     dense_layers=[0], backend="torch")
    padded = prompt(150, batch=2)
    padded["attention_mask"][0, :7] = 0
    with unisparse.record() as rec:
        model(**padded)
        model(**prompt(60))
        model(**prompt(150))
    assert [r.path for r in rec.layers] == ["attention_mask"] * 2 + ["dense_layer", "short"] + ["dense_layer", "sparse"]
    unisparse.disable(model)
    reference = model(**padded).logits
    unisparse.enable(model, UniSparseConfig(block_size=BLOCK, top_p=0.5), backend="torch")
    torch.testing.assert_close(model(**padded).logits, reference)


def test_a_selection_above_max_density_runs_stock_attention_and_the_record_says_why():
    model = tiny_llama()
    inputs = prompt(300)
    dense = model(**inputs).logits
    unisparse.enable(model, UniSparseConfig(block_size=BLOCK, top_p=0.5, sink_blocks=0, min_seq_len=0,
                                            max_density=0.0), backend="torch")
    with unisparse.record() as rec:
        logits = model(**inputs).logits
    torch.testing.assert_close(logits, dense, rtol=1e-5, atol=1e-5)  # every layer ran stock SDPA
    assert [r.path for r in rec.layers] == ["above_break_even"] * 2
    for r in rec.layers:
        assert r.density == 1.0 and r.max_density == 0.0 and 0 < r.selected_density < 1
        assert r.selected_density == pytest.approx(unisparse.block_density(r.mask))  # the mask is kept for display
    unisparse.enable(model, UniSparseConfig(block_size=BLOCK, top_p=0.5, sink_blocks=0, min_seq_len=0,
                                            max_density=1.0), backend="torch")
    with unisparse.record() as rec:
        sparse = model(**inputs).logits
    assert [r.path for r in rec.layers] == ["sparse"] * 2
    assert all(r.density == r.selected_density < 1 and r.max_density == 1.0 for r in rec.layers)
    assert not torch.allclose(sparse, dense, atol=1e-4)


def test_enable_rejects_bad_arguments():
    model = tiny_llama()
    with pytest.raises(TypeError, match="config"):
        unisparse.enable(model, {"top_p": 0.5})
    with pytest.raises(ValueError, match="backend"):
        unisparse.enable(model, backend="cuda")
    with pytest.raises(ValueError, match="no causal self-attention"):
        unisparse.enable(_Bare())


class _Bare(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.config = object()


def _layout(inputs):
    from tiny_models import VIDEO_TOKEN

    return unisparse.layout_from_inputs(inputs["input_ids"], merge_size=2, video_token_id=VIDEO_TOKEN,
                                        video_grid_thw=inputs["video_grid_thw"])


def test_a_video_layout_reaches_the_attention_and_spatial_heads_stay_exact(monkeypatch):
    """Inside ``video_layout``, prefill selects per KV head in either order. Forcing every head into
    the spatial order at top_p=1 must still generate exactly the dense tokens: causality follows
    the original positions and the output returns to the prompt's order."""
    from unisparse import reordered

    model = tiny_qwen2vl()
    inputs = video_inputs(frames=16, height=112, width=112, text_tokens=60)  # 8 patches of 16 tokens
    layout = _layout(inputs)
    assert layout.spans[0].frames == 8 and layout.spans[0].frame_tokens == 16
    expected = greedy(model, **inputs)
    with torch.no_grad():
        dense_logits = model(**inputs).logits
    real_choose = reordered.choose

    def all_spatial(masks, orders, names, kv_heads, *rest):
        sel = real_choose(masks, orders, names, kv_heads, *rest)
        sel.choice[:] = names.index("spatial")
        sel.mask = masks[names.index("spatial")].expand(masks[0].shape).clone()
        return sel

    monkeypatch.setattr(reordered, "choose", all_spatial)
    unisparse.enable(model, UniSparseConfig(block_size=BLOCK, top_p=1.0, min_seq_len=0, video_aware_min_len=0),
                     backend="torch")
    with unisparse.video_layout(layout), unisparse.record() as rec:
        got = greedy(model, **inputs)
    assert torch.equal(got, expected)
    assert [r.head_orders for r in rec.layers] == [("spatial",) * 4] * 2
    with unisparse.video_layout(layout), torch.no_grad():
        assert torch.allclose(model(**inputs).logits, dense_logits, atol=1e-5, rtol=1e-4)
    unisparse.disable(model)


def test_the_layout_is_used_only_where_it_fits_and_only_inside_its_block():
    model = tiny_qwen2vl()
    inputs = video_inputs(frames=16, height=112, width=112, text_tokens=60)
    unisparse.enable(model, UniSparseConfig(block_size=BLOCK, top_p=0.6, min_seq_len=0, video_aware_min_len=0),
                     backend="torch")
    seq_len = inputs["input_ids"].shape[1]
    nb = -(-seq_len // BLOCK)
    with unisparse.video_layout(_layout(inputs)), unisparse.record() as rec:
        model(**inputs)
    for r in rec.layers:
        assert r.path == "sparse" and len(r.head_orders) == 4 and set(r.head_orders) <= {"frame", "spatial"}
        assert r.mask.shape == (1, 4, nb, nb)
    with unisparse.record() as outside:
        model(**inputs)
    assert all(r.head_orders is None for r in outside.layers)
    too_long = unisparse.VideoLayout((unisparse.VideoSpan.contiguous(seq_len - 10, 2, 4, 4),))
    with unisparse.video_layout(too_long), unisparse.record() as rec:
        model(**inputs)
    assert all(r.head_orders is None and r.path == "sparse" for r in rec.layers)
    with unisparse.video_layout(_layout(inputs)), unisparse.record() as rec:
        unisparse.enable(model, UniSparseConfig(block_size=BLOCK, top_p=0.6, min_seq_len=0, video_aware=False),
                         backend="torch")
        model(**inputs)
    assert all(r.head_orders is None for r in rec.layers)
    unisparse.disable(model)
