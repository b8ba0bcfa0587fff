"""Public API contract: argument checks, backend choice, the short-sequence fallback."""

import pytest
import torch

import unisparse
from unisparse.testing import structured_qkv
from unisparse import UniSparseConfig

from helpers import naive_attention, rel_err


def qkv(hq=4, hkv=2, seq_len=256, d=64, dtype=torch.float32):
    return (torch.randn(1, h, seq_len, d, dtype=dtype) for h in (hq, hkv, hkv))


@pytest.mark.parametrize("field,value", [
    ("top_p", 0.0), ("top_p", 1.5), ("top_p", -0.1), ("top_p", "0.9"),
    ("block_size", 100), ("block_size", 8), ("q_pool", 3), ("k_pool", 256),
    ("head_pool", 0), ("local_blocks", 0), ("sink_blocks", -1), ("min_seq_len", 1.5),
    ("variance_correction", -0.5), ("variance_correction", float("nan")),
    ("variance_correction", float("inf")), ("variance_correction", "0.5"), ("variance_correction", True),
    ("max_density", 1.5), ("max_density", -0.1), ("max_density", "0.5"), ("max_density", True),
])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        UniSparseConfig(**{field: value})


def test_config_defaults_follow_the_paper():
    cfg = UniSparseConfig()
    assert (cfg.block_size, cfg.q_pool, cfg.k_pool, cfg.head_pool, cfg.top_p) == (128, 8, 8, 1, 0.95)
    assert cfg.q_per_block == 16


@pytest.mark.parametrize("case,error,match", [
    ("rank", ValueError, "q must have shape"),
    ("gqa", ValueError, "multiple of k heads"),
    ("length", ValueError, "seq_len"),
    ("dtype_int", TypeError, "floating-point"),
    ("dtype_mismatch", TypeError, "dtype"),
    ("head_dim", ValueError, "head_dim"),
    ("batch", ValueError, "batch"),
    ("not_tensor", TypeError, "torch.Tensor"),
    ("v_shape", ValueError, "v has shape"),
])
def test_bad_tensors_raise_clear_errors(case, error, match):
    q, k, v = qkv()
    if case == "rank":
        q = q[0]
    elif case == "gqa":
        q = torch.randn(1, 3, 256, 64)
    elif case == "length":
        k = torch.randn(1, 2, 200, 64)
        v = k.clone()
    elif case == "dtype_int":
        q = q.to(torch.int32)
    elif case == "dtype_mismatch":
        k, v = k.half(), v.half()
    elif case == "head_dim":
        k, v = torch.randn(1, 2, 256, 32), torch.randn(1, 2, 256, 32)
    elif case == "batch":
        k, v = torch.randn(2, 2, 256, 64), torch.randn(2, 2, 256, 64)
    elif case == "not_tensor":
        q = q.numpy()
    elif case == "v_shape":
        v = torch.randn(1, 2, 256, 32)
    with pytest.raises(error, match=match):
        unisparse.sparse_attention(q, k, v, backend="torch")


def test_bad_masks_raise_clear_errors():
    q, k, v = qkv(seq_len=300)
    good = torch.ones(1, 4, 3, 3, dtype=torch.bool)
    unisparse.block_sparse_attention(q, k, v, good, backend="torch")
    for bad, error in [
        (good.float(), TypeError),
        (torch.ones(1, 4, 2, 2, dtype=torch.bool), ValueError),
        (torch.ones(1, 3, 3, 3, dtype=torch.bool), ValueError),
        (torch.ones(2, 4, 3, 3, dtype=torch.bool), ValueError),
        (torch.ones(4, 3, 3, dtype=torch.bool), ValueError),
    ]:
        with pytest.raises(error, match="block_mask"):
            unisparse.block_sparse_attention(q, k, v, bad, backend="torch")


def test_other_bad_arguments():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="backend"):
        unisparse.sparse_attention(q, k, v, backend="cuda")
    with pytest.raises(TypeError, match="config"):
        unisparse.sparse_attention(q, k, v, {"top_p": 0.9})
    with pytest.raises(ValueError, match="scale"):
        unisparse.sparse_attention(q, k, v, scale=-1.0)
    with pytest.raises(ValueError, match="head_pool"):
        unisparse.select_blocks(*list(qkv(hq=6, hkv=2))[:2],
                                UniSparseConfig(head_pool=4))
    with pytest.raises(ValueError, match="block_size"):
        unisparse.block_sparse_attention(q, k, v, torch.ones(1, 1, 3, 3, dtype=torch.bool), block_size=96)


def test_sequence_shorter_than_a_block():
    q, k, v = qkv(seq_len=100)
    with pytest.raises(ValueError, match="shorter than one block"):
        unisparse.select_blocks(q, k, UniSparseConfig())
    out, mask = unisparse.sparse_attention(q, k, v, return_mask=True)  # falls back to dense
    assert mask.shape == (1, 4, 1, 1) and mask.all()
    assert rel_err(out, naive_attention(q, k, v)) < 1e-5


def test_default_config_runs_dense_below_32768_tokens_and_sparse_from_there(monkeypatch):
    # The default min_seq_len is where UniSparse end to end is no slower than cuDNN on every input
    # family measured on an H200 (benchmarks/attention/families/): dense below 32768, sparse from it.
    # Selection is real; the block-sparse kernel is replaced by a spy (the reference one takes
    # ~10 s on CPU at this length, and the kernels are tested elsewhere).
    config = UniSparseConfig()
    assert config.min_seq_len == 32768
    kernel_calls = []

    def spy(q, k, v, block_mask, **kwargs):
        kernel_calls.append(q.shape[2])
        return unisparse.dense_attention(q, k, v)

    monkeypatch.setattr(unisparse.api, "block_sparse_attention", spy)
    for seq_len, sparse in [(32768 - config.block_size, False), (32768, True)]:
        q, k, v = structured_qkv(1, 1, 1, seq_len, 16, seed=0)
        out, mask = unisparse.sparse_attention(q, k, v, config, return_mask=True, backend="torch")
        assert (unisparse.block_density(mask) < 1.0) == sparse, seq_len
        assert out.shape == q.shape
    assert kernel_calls == [32768]


def test_a_selection_above_max_density_runs_dense_and_below_runs_sparse():
    q, k, v = qkv(seq_len=512)
    cfg = UniSparseConfig(block_size=64, top_p=0.5, sink_blocks=0, min_seq_len=0)
    mask = unisparse.select_blocks(q, k, cfg, backend="torch")
    density = unisparse.block_density(mask)
    assert 0 < density < 1
    dense = naive_attention(q, k, v)
    sparse = unisparse.block_sparse_attention(q, k, v, mask, block_size=64, backend="torch")
    assert rel_err(sparse, dense) > 1e-3  # the two paths differ: the test can tell which ran
    above, m1 = unisparse.sparse_attention(q, k, v, cfg.replace(max_density=density - 0.01), return_mask=True,
                                           backend="torch")
    below, m2 = unisparse.sparse_attention(q, k, v, cfg.replace(max_density=density + 0.01), return_mask=True,
                                           backend="torch")
    assert rel_err(above, dense) < 1e-5 and torch.equal(m1, mask)  # the mask selected is still returned
    assert rel_err(below, sparse) < 1e-6 and torch.equal(m2, mask)


def test_fallback_density_resolution(monkeypatch):
    cfg = UniSparseConfig()
    assert unisparse.fallback_density(cfg.replace(max_density=0.7), "cpu", 4096, "torch") == 0.7
    assert unisparse.fallback_density(cfg, "cpu", 4096, "torch") is None  # the reference always runs the method
    assert unisparse.fallback_density(cfg, "cpu", 4096, "triton") is None  # Triton's interpreter on the CPU too
    seen = []

    def table(device, seq_len):
        seen.append((str(device), seq_len))
        return 0.8, "NVIDIA H200"

    monkeypatch.setattr("unisparse.breakeven.break_even_density", table)
    assert unisparse.fallback_density(cfg, torch.device("cuda", 0), 32768, "triton") == 0.8
    assert seen == [("cuda:0", 32768)]


def test_min_seq_len_falls_back_to_dense():
    q, k, v = qkv(seq_len=512)
    out, mask = unisparse.sparse_attention(
        q, k, v, UniSparseConfig(top_p=0.1, min_seq_len=1024), return_mask=True, backend="torch")
    assert unisparse.block_density(mask) == 1.0
    assert rel_err(out, naive_attention(q, k, v)) < 1e-5


def test_triton_dtype_and_head_dim_limits():
    on = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: the interpreter (conftest)
    q, k, v = (t.to(on) for t in qkv(d=48))
    with pytest.raises(ValueError, match="head_dim"):
        unisparse.sparse_attention(q, k, v, backend="triton")
    q, k, v = (t.to(on) for t in qkv(dtype=torch.float64))
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        unisparse.sparse_attention(q, k, v, backend="triton")
    # the reference takes both
    unisparse.sparse_attention(*qkv(d=48), backend="torch")
    unisparse.sparse_attention(*qkv(dtype=torch.float64), backend="torch")


def test_backend_resolution_and_env_override(monkeypatch):
    from unisparse.validation import resolve_backend

    cpu = torch.device("cpu")
    monkeypatch.delenv("UNISPARSE_BACKEND", raising=False)
    assert resolve_backend("auto", cpu) == "torch"
    assert resolve_backend("auto", torch.device("cuda")) == "triton"
    monkeypatch.setenv("UNISPARSE_BACKEND", "torch")
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    assert resolve_backend("triton", torch.device("cuda")) == "triton"  # explicit choice wins
    monkeypatch.setenv("UNISPARSE_BACKEND", "nope")
    with pytest.raises(ValueError, match="UNISPARSE_BACKEND"):
        resolve_backend("auto", cpu)
    monkeypatch.delenv("UNISPARSE_BACKEND")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        resolve_backend("triton", cpu)
