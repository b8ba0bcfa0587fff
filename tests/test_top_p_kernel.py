"""The one-launch Top-P kernel (unisparse.kernels.top_p) against the definition (unisparse.masks.top_p_mask),
in Triton's interpreter on a machine without a GPU."""

import pytest
import torch

from unisparse import masks
from unisparse.kernels import top_p as K

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def scores_with_ties(shape, seed):
    """Block scores as selection gives them (non-negative, rows of different mass), with exact ties
    and zeros so that the tie order (lower block first) decides."""
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(shape, generator=g) ** 3
    s[torch.rand(shape, generator=g) < 0.2] = 0.0
    ties = torch.rand(shape, generator=g) < 0.3
    s[ties] = 0.125  # many equal scores
    return s.to(DEVICE)


# Small shapes: the interpreter runs one sort per row in numpy (a 130-block square takes minutes);
# wide rows are checked on a few query blocks below, and at full size on the GPU (tests/test_gpu.py).
@pytest.mark.parametrize("nb,top_p,sink,local", [(1, 0.9, 1, 2), (7, 0.9, 1, 2), (20, 0.95, 2, 1), (17, 0.5, 0, 3)])
def test_matches_the_definition_on_causal_rows(seed, nb, top_p, sink, local):
    s = scores_with_ties((1, 2, nb, nb), seed)
    got = K.top_p_mask(s, top_p, sink_blocks=sink, local_blocks=local)
    want = masks.top_p_mask(s, top_p, sink_blocks=sink, local_blocks=local)
    assert got.dtype == torch.bool and got.shape == want.shape
    assert torch.equal(got, want)


def test_matches_the_definition_with_visible_blocks_and_some_rows(seed):
    nb = 40
    s = scores_with_ties((1, 4, 5, nb), seed)
    rows = torch.tensor([0, 9, 17, 30, 39], device=DEVICE)
    g = torch.Generator().manual_seed(seed + 1)
    visible = (torch.rand(5, nb, generator=g) < 0.7).to(DEVICE)
    visible[2] = False  # a row that sees nothing keeps nothing
    got = K.top_p_mask(s, 0.9, sink_blocks=1, local_blocks=2, visible=visible, rows=rows)
    want = masks.top_p_mask(s, 0.9, sink_blocks=1, local_blocks=2, visible=visible, rows=rows)
    assert torch.equal(got, want)
    assert not got[..., 2, :].any()
    causal_rows = K.top_p_mask(s, 0.8, sink_blocks=1, local_blocks=2, rows=rows)
    assert torch.equal(causal_rows, masks.top_p_mask(s, 0.8, sink_blocks=1, local_blocks=2, rows=rows))


def test_matches_the_definition_on_wide_rows(seed):
    nb = 130  # a 256-wide sort: past one warp's worth of blocks and not a power of two
    rows = torch.tensor([0, 64, 127, 129], device=DEVICE)
    s = scores_with_ties((1, 1, 4, nb), seed)
    got = K.top_p_mask(s, 0.99, sink_blocks=1, local_blocks=2, rows=rows)
    assert torch.equal(got, masks.top_p_mask(s, 0.99, sink_blocks=1, local_blocks=2, rows=rows))
    assert got[0, 0, 3].sum() > 64  # a long row keeps many blocks, not just the forced ones


def test_top_p_one_and_other_shapes_go_to_the_definition(seed):
    s = scores_with_ties((1, 2, 9, 9), seed)
    assert torch.equal(K.top_p_mask(s, 1.0, sink_blocks=1, local_blocks=1),
                       masks.causal_block_mask(9, s.device).expand(1, 2, 9, 9))
    visible = torch.ones(2, 9, 9, dtype=torch.bool, device=DEVICE)  # per-head visibility: not the kernel's shape
    assert torch.equal(K.top_p_mask(s, 0.9, sink_blocks=1, local_blocks=1, visible=visible),
                       masks.top_p_mask(s, 0.9, sink_blocks=1, local_blocks=1, visible=visible))
