"""The one-launch kept-block lists (unisparse.kernels.kept) against a stable sort of each mask row,
in Triton's interpreter on a machine without a GPU (and on the GPU where there is one)."""

import pytest
import torch

from unisparse.kernels import kept as K

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def poisoned(shape):
    return torch.full(shape, -7, dtype=torch.int32, device=DEVICE)


@pytest.mark.parametrize("nb", [1, 2, 31, 64, 130])
@pytest.mark.parametrize("causal", [False, True])
def test_lists_equal_a_stable_sort_of_each_row(seed, nb, causal):
    g = torch.Generator().manual_seed(seed)
    density = float(torch.rand(1, generator=g)) * 0.9 + 0.05
    mask = (torch.rand(2, 3, nb, nb, generator=g) < density).to(DEVICE)
    mask[0, 0] = False  # rows that keep nothing
    mask[1, 2] = True  # rows that keep everything
    out = (poisoned(mask.shape), poisoned(mask.shape[:-1]))
    idx, cnt = K.kept_lists(mask, causal, out=out)
    want_idx, want_cnt = K.kept_lists_reference(mask, causal)
    assert idx is out[0] and cnt is out[1]
    assert torch.equal(cnt, want_cnt) and torch.equal(idx, want_idx)
    if causal:
        assert torch.equal(cnt[1, 2], torch.arange(1, nb + 1, dtype=torch.int32, device=DEVICE))


def test_rows_wider_than_one_step_carry_their_counts_across_steps(seed, monkeypatch):
    monkeypatch.setattr(K, "CHUNK", 16)  # 50 blocks in four steps of the kernel's loops
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(1, 2, 50, 50, generator=g) < 0.5).to(DEVICE)
    for causal in (False, True):
        got = K.kept_lists(mask, causal, out=(poisoned(mask.shape), poisoned(mask.shape[:-1])))
        want = K.kept_lists_reference(mask, causal)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_an_expanded_mask_is_read_as_its_values(seed):
    mask = (torch.rand(1, 1, 9, 9) < 0.5).to(DEVICE).expand(2, 4, 9, 9)
    idx, cnt = K.kept_lists(mask)
    want = K.kept_lists_reference(mask.contiguous())
    assert torch.equal(idx, want[0]) and torch.equal(cnt, want[1])


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(4, 5, dtype=torch.bool),
                                 torch.zeros(4, dtype=torch.bool)])
def test_a_mask_that_is_not_square_bool_is_refused(bad):
    with pytest.raises(ValueError, match="bool"):
        K.kept_lists(bad.to(DEVICE))


def test_buffers_of_the_wrong_shape_or_dtype_are_refused():
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool, device=DEVICE)
    with pytest.raises(ValueError, match="int32"):
        K.kept_lists(mask, out=(torch.empty(1, 1, 4, 4, dtype=torch.int64, device=DEVICE), poisoned((1, 1, 4))))
    with pytest.raises(ValueError, match="int32"):
        K.kept_lists(mask, out=(poisoned((1, 1, 4, 4)), poisoned((1, 4))))
