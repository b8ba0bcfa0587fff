"""unisparse.testing.video_qkv: video-shaped attention (grid, local and sink heads) as the benchmarks use it."""

import math

import pytest
import torch

from unisparse.testing import video_qkv


def attention(q, k, h, group):
    L, d = q.shape[2], q.shape[3]
    logits = q[0, h] @ k[0, h // group].T / math.sqrt(d)
    i = torch.arange(L)
    return logits.masked_fill(i[:, None] < i[None, :], float("-inf")).softmax(-1)


def test_shapes_layout_and_seeded_determinism():
    q, k, v, lay = video_qkv(1, 8, 2, 1500, 64, frame_tokens=100, text_tokens=40, seed=3, return_layout=True)
    assert q.shape == (1, 8, 1500, 64) and k.shape == v.shape == (1, 2, 1500, 64)
    assert lay["frames"] == 14 and lay["video_start"] == 40 and len(lay["head_kind"]) == 8
    again = video_qkv(1, 8, 2, 1500, 64, frame_tokens=100, text_tokens=40, seed=3)
    assert all(torch.equal(a, b) for a, b in zip((q, k, v), again))
    assert not torch.equal(q, video_qkv(1, 8, 2, 1500, 64, frame_tokens=100, text_tokens=40, seed=4)[0])
    only_grid = video_qkv(1, 8, 2, 1500, 64, frame_tokens=100, head_mix={"grid": 1}, return_layout=True)[3]
    assert only_grid["head_kind"] == ["grid"] * 8


def test_grid_heads_attend_the_same_position_in_other_frames_and_local_heads_nearby():
    P, T, L = 128, 32, 2080
    q, k, _, lay = video_qkv(1, 4, 2, L, 64, frame_tokens=P, text_tokens=T, seed=4,
                             head_mix={"grid": 1, "local": 1}, return_layout=True)
    i = torch.arange(L)
    video = i >= T
    same = ((i[:, None] - i[None, :]) % P == 0) & video[:, None] & video[None, :] & (i[:, None] != i[None, :])
    rows = i >= T + 4 * P  # queries with several earlier frames
    kinds = lay["head_kind"]
    assert set(kinds) == {"grid", "local"}, kinds  # seed 4 draws both
    for h, kind in enumerate(kinds):
        p = attention(q, k, h, 2)
        off_self = 1 - p.diagonal()
        grid_share = ((p * same).sum(-1) / off_self)[rows].mean()
        dist = i[:, None] - i[None, :]
        near_share = ((p * ((dist > 0) & (dist <= 16))).sum(-1) / off_self)[rows].mean()
        if kind == "grid":  # over the background (flat, about half the mass), the other frames' same position
            assert grid_share > 0.4 and near_share < 0.05, (h, grid_share, near_share)
        else:  # the tokens just before, nothing special at the same position
            assert near_share > 0.15 and grid_share < 0.05, (h, grid_share, near_share)


@pytest.mark.parametrize("kwargs,match", [
    (dict(seq_len=100, frame_tokens=256), "at least one frame"),
    (dict(head_mix={"tiles": 1.0}), "head_mix"),
    (dict(head_mix={"grid": 0.0}), "head_mix"),
    (dict(q_heads=6, kv_heads=4), "multiple"),
])
def test_bad_arguments_are_refused(kwargs, match):
    args = dict(batch=1, q_heads=4, kv_heads=2, seq_len=1024, head_dim=64)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        video_qkv(**args)
