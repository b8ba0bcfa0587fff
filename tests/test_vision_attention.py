"""videoqa.vision_attention: one SDPA call per piece length gives the attention of transformers' per-piece loop."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import Qwen2VLConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

import videoqa.models.loading as M
from videoqa.vision_attention import batch_vision_attention, piecewise_attention

# frames of one size (the common case, one reshape), then sizes mixed as in a batch of an image and videos
GRIDS = [[(6, 4, 4), (6, 4, 4)], [(6, 4, 4), (1, 6, 4), (3, 2, 4), (2, 4, 4)]]


def _tower(seed=0, implementation="sdpa"):
    cfg = Qwen2VLConfig(vision_config=dict(depth=2, embed_dim=32, num_heads=2, mlp_ratio=2, hidden_size=48,
                                           patch_size=14, temporal_patch_size=2, spatial_merge_size=2)).vision_config
    cfg._attn_implementation = implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Qwen2VisionTransformerPretrainedModel(cfg).float().train()


def _run(tower, x, grid):
    tower.zero_grad(set_to_none=True)
    y = tower(x, grid_thw=grid).pooler_output
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y.detach(), {n: p.grad.clone() for n, p in tower.named_parameters()}


def _count_sdpa(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def counted(*a, **k):
        calls.append(a[0].shape)
        return real(*a, **k)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counted)
    return calls


@pytest.mark.parametrize("grids", GRIDS)
def test_batched_tower_matches_the_per_piece_loop_forward_and_backward(grids, monkeypatch):
    loop = _tower()
    batched = copy.deepcopy(loop)
    assert batch_vision_attention(batched) == 2 and batch_vision_attention(batched) == 0  # idempotent
    grid = torch.tensor(grids)
    x = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(1))
    calls = _count_sdpa(monkeypatch)
    y0, g0 = _run(loop, x, grid)
    pieces = sum(t for t, _, _ in grids)  # one piece per temporal patch: transformers calls SDPA for each
    assert len(calls) == 2 * pieces
    calls.clear()
    y1, g1 = _run(batched, x, grid)
    assert len(calls) == 2 * len({h * w for _, h, w in grids})  # one call per distinct piece length and layer
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-6)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-6, msg=name)


def test_piecewise_attention_keeps_each_patch_inside_its_piece():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(10, 2, 8, generator=g) for _ in range(3))
    cu = torch.tensor([0, 3, 3, 7, 10])  # lengths 3, 0, 4, 3: an empty piece, two of one length out of order
    out = piecewise_attention(q, k, v, cu, scale=0.5)
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        if b > a:
            want = F.scaled_dot_product_attention(*(t[a:b].transpose(0, 1) for t in (q, k, v)), scale=0.5)
            torch.testing.assert_close(out[a:b], want.transpose(0, 1))
    v2 = v.clone()
    v2[7:] += 100.0  # values of the last piece change nothing before it
    torch.testing.assert_close(piecewise_attention(q, k, v2, cu, scale=0.5)[:7], out[:7])


def test_other_implementations_keep_transformers_forward(monkeypatch):
    eager = _tower(implementation="eager")
    patched = copy.deepcopy(eager)
    batch_vision_attention(patched)
    grid = torch.tensor(GRIDS[1])
    x = torch.randn(int(grid.prod(-1).sum()), 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(3))
    calls = _count_sdpa(monkeypatch)
    y1, _ = _run(patched, x, grid)
    assert calls == []  # eager attention: the original path ran, not the batched SDPA one
    y0, _ = _run(eager, x, grid)
    torch.testing.assert_close(y1, y0)


def test_loaded_models_get_the_batched_forward():
    loaded = M.load_model("random", device="cpu", cache=False)
    attn = [m for m in loaded.model.modules() if type(m).__name__ == "VisionAttention"]
    assert attn and all(hasattr(m, "_videoqa_original_forward") for m in attn)


def test_a_score_budget_splits_the_batch_without_changing_the_result(monkeypatch):
    import videoqa.vision_attention as VA

    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(40, 2, 8, generator=g) for _ in range(3))
    # ten pieces of 4: five calls of two; pieces of 4, 4 | 3, 3, 3 | 23: one call per length (23 alone, over budget)
    for cu, expected in ((torch.arange(0, 41, 4), 5), (torch.tensor([0, 4, 8, 11, 14, 17, 40]), 3)):
        whole = piecewise_attention(q, k, v, cu, scale=0.3)
        calls = _count_sdpa(monkeypatch)
        budget = 2 * 2 * 4 * 4  # two pieces of 4 patches (2 heads) per call
        monkeypatch.setattr(VA, "MAX_SCORES_PER_CALL", budget)
        torch.testing.assert_close(piecewise_attention(q, k, v, cu, scale=0.3), whole)
        assert all(n * h * length * length <= budget or n == 1 for n, h, length, _ in calls)
        assert len(calls) == expected
        monkeypatch.undo()
