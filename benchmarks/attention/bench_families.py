"""UniSparse end to end against dense attention on several input families, as a user meets it.

Families (Qwen2-VL-7B's language-model heads: 28 query, 4 KV, head dim 128, bf16, batch 1, causal):

* ``flat``: Gaussian q/k/v (attention with no structure: selection keeps nearly everything);
* ``structured``: ``unisparse.testing.structured_qkv`` (sinks, local band, stripes, retrieval);
* ``video_mixed`` / ``video_grid``: ``unisparse.testing.video_qkv`` with frames of 256 tokens, a mix
  of grid, local and sink heads / grid heads only;
* ``video_heldout``: frames of 196 tokens, twice as many grid heads as others, a longer text
  prefix and another seed (shapes this project did not tune on);
* ``default_model_l<N>``: the trained default model's own post-RoPE queries and keys over a long
  generated video (``capture_default_qk.py``), at the captured length, tiled to 28/4 heads and
  widened to head dim 128 with the logits unchanged (``q' = [q, q] / sqrt(2)``, ``k' = [k, k]``).

Per family and length: the density UniSparse's default config selects, the attention mass those
blocks recall (exact, on every ``--recall-stride``-th query block), selection ms, kernel ms on that
mask, and end to end ``sparse_attention`` with the library's defaults (``min_seq_len`` and the
break-even fallback: a selection above the measured break-even density runs the dense kernel),
with the path it took; against SDPA cuDNN and flash (K/V repeated, timed once per length) and the
dense path the fallback runs (``unisparse.dense_attention``). Medians of ``triton.testing.do_bench``.

  python benchmarks/attention/bench_families.py --lengths 16384 32768 131072 --captured out/default_qk.pt --output $OUT/families
  python benchmarks/attention/bench_families.py --lengths 32768 131072 --video-aware --output $OUT/families_video_aware
  python benchmarks/attention/bench_families.py --lengths 2048 --families video_grid --video-aware --cpu-check

``--video-aware`` adds, for the families with a video (and a capture that records its layout), the
same measurements with video-aware selection (``unisparse.select_blocks_in_layout``: per KV head
the frame or the spatial order) and the reordered kernel. ``--cpu-check`` runs each step once on
the CPU to check the script (no timing claims).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

HQ, HKV, D, BLOCK = 28, 4, 128, 128
FAMILIES = ("flat", "structured", "video_mixed", "video_grid", "video_heldout")


def make_family(name: str, L: int, seed: int):
    """``(q, k, v, layout)``: the layout (where the video's frames sit) is None for the families without video."""
    from unisparse.layout import VideoLayout, VideoSpan
    from unisparse.testing import structured_qkv, video_qkv

    if name == "flat":
        gen = torch.Generator().manual_seed(seed)
        return (*(torch.randn(1, h, L, D, generator=gen) for h in (HQ, HKV, HKV)), None)
    if name == "structured":
        return (*structured_qkv(1, HQ, HKV, L, D, seed=seed), None)
    kw = {"video_mixed": dict(frame_tokens=256, seed=seed),
          "video_grid": dict(frame_tokens=256, head_mix={"grid": 1.0}, seed=seed),
          "video_heldout": dict(frame_tokens=196, text_tokens=100, head_mix={"grid": 2.0, "local": 1.0, "sink": 1.0},
                                seed=seed + 7)}.get(name)
    if kw is None:
        raise ValueError(name)
    q, k, v, info = video_qkv(1, HQ, HKV, L, D, return_layout=True, **kw)
    side = math.isqrt(info["frame_tokens"])
    return q, k, v, VideoLayout((VideoSpan.contiguous(info["video_start"], info["frames"], side, side),))


def captured_layout(cap: dict):
    """The video layout a ``capture_default_qk.py`` file records (None for files written before it did)."""
    from unisparse.layout import VideoLayout, VideoSpan

    if "layout" not in cap:
        return None
    return VideoLayout(tuple(VideoSpan(tuple(s["frame_starts"]), s["height"], s["width"]) for s in cap["layout"]))


def tiled_capture(layer: dict, seed: int):
    """A captured layer's q ``[1, Hc, L, d]`` (one query head per KV head) and k ``[1, Hc, L, d]`` as
    28/4 heads of dim 2d whose logits at the default scale ``1/sqrt(2d)`` equal the model's
    (``[q, q] . [k, k] / sqrt(2) = sqrt(2) q.k``); v Gaussian. Returns ``(q, k, v, scale=None)``."""
    q, k = layer["q"].float(), layer["k"].float()
    hc = k.shape[1]
    kv_src = [j % hc for j in range(HKV)]
    k4 = torch.cat([k[:, kv_src], k[:, kv_src]], -1)
    q28 = torch.cat([q[:, [kv_src[h // (HQ // HKV)] for h in range(HQ)]]] * 2, -1) / math.sqrt(2)
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(k4.shape, generator=gen)
    return q28, k4, v, None  # with head dim 2d's default scale the logits are the model's own


def recalled_mass(q, k, mask, scale, stride: int) -> float:
    """Mean over (head, sampled query block) of the exact causal attention mass inside the kept blocks."""
    L = q.shape[2]
    nb = mask.shape[-1]
    group = q.shape[1] // k.shape[1]
    kx = k.repeat_interleave(group, dim=1).float()
    pos = torch.arange(L, device=q.device)
    total, count = 0.0, 0
    for qb in range(0, nb, stride):
        rows = slice(qb * BLOCK, min(L, (qb + 1) * BLOCK))
        logits = (q[:, :, rows].float() @ kx[:, :, : rows.stop].transpose(-1, -2)) * scale
        logits = logits.masked_fill(pos[None, None, rows, None] < pos[None, None, None, : rows.stop], float("-inf"))
        p = logits.softmax(-1)
        pad = nb * BLOCK - rows.stop
        per_block = torch.nn.functional.pad(p, (0, pad)).view(*p.shape[:3], nb, BLOCK).sum(-1).mean(2)  # [1, H, nb]
        total += (per_block * mask[:, :, qb].float()).sum(-1).mean().item()
        count += 1
    return total / count


def recalled_mass_ordered(q, k, sel, scale, stride: int) -> float:
    """:func:`recalled_mass` of a video-aware selection: each head's kept blocks in its own order,
    mapped to token pairs through that order (same sampled query blocks of the prompt's order)."""
    from unisparse.layout import inverse

    L = q.shape[2]
    nb = sel.mask.shape[-1]
    group = q.shape[1] // k.shape[1]
    heads = sel.order_of_heads()[0]
    blk = torch.stack([inverse(o) // BLOCK for o in sel.orders])  # [O, L]: block of each position in each order
    pos = torch.arange(L, device=q.device)
    total, count = 0.0, 0
    for qb in range(0, nb, stride):
        rows = slice(qb * BLOCK, min(L, (qb + 1) * BLOCK))
        per_head = []
        for h in range(q.shape[1]):
            logits = (q[0, h, rows].float() @ k[0, h // group].float().t()) * scale
            p = logits.masked_fill(pos[rows, None] < pos[None, :], float("-inf")).softmax(-1)
            b = blk[heads[h]]
            kept = sel.mask[0, h][b[rows]][:, b]  # [rows, L]
            per_head.append((p * kept).sum(-1).mean().item())
        total += sum(per_head) / len(per_head)
        count += 1
    return total / count


def video_aware(r: dict, q, k, v, layout, cfg, scale, backend: str, bench, cudnn_ms: float, stride: int = 8) -> None:
    """Video-aware columns of one row: density (kept blocks over the frame order's causal count),
    KV heads in the spatial order, selection ms (the spatial order probed, then scored in full for the
    KV heads that move; and with ``order_probe=1``, both orders in full), the reordered kernel's ms,
    end to end with the layout, and selection's share of a dense cuDNN call."""
    import unisparse

    cfg = cfg.replace(video_aware_min_len=0)  # the layout at every length measured (the library applies it from 64K)
    sel = unisparse.select_blocks_in_layout(q, k, layout, cfg, scale=scale, backend=backend)
    r["va_density"] = sel.density()
    r["va_recall"] = recalled_mass_ordered(q, k, sel, scale or 1 / math.sqrt(D), stride)
    r["va_spatial_kv_heads"] = int((sel.choice[0] == sel.names.index("spatial")).sum()) if "spatial" in sel.names else 0
    r["va_select_ms"] = bench(lambda: unisparse.select_blocks_in_layout(q, k, layout, cfg, scale=scale, backend=backend))
    r["va_kernel_ms"] = bench(lambda: unisparse.ordered_block_sparse_attention(q, k, v, sel, scale=scale,
                                                                                backend=backend))
    r["va_e2e_ms"] = bench(lambda: unisparse.sparse_attention(q, k, v, cfg, scale=scale, layout=layout,
                                                              backend=backend))
    r["va_x_cudnn"] = cudnn_ms / r["va_e2e_ms"]
    r["va_select_share_of_cudnn"] = r["va_select_ms"] / cudnn_ms
    exact = cfg.replace(order_probe=1)  # both orders scored on every row: the exact choice, for comparison
    sel1 = unisparse.select_blocks_in_layout(q, k, layout, exact, scale=scale, backend=backend)
    r["va_exact_density"] = sel1.density()
    r["va_exact_spatial_kv_heads"] = int((sel1.choice[0] == sel1.names.index("spatial")).sum()) if "spatial" in sel1.names else 0
    r["va_exact_select_ms"] = bench(lambda: unisparse.select_blocks_in_layout(q, k, layout, exact, scale=scale,
                                                                              backend=backend))
    print(f"  video-aware: density {r['va_density']:.3f} recall {r['va_recall']:.3f} ({r['va_spatial_kv_heads']} KV heads spatial); select "
          f"{r['va_select_ms']:.2f} kernel {r['va_kernel_ms']:.2f} e2e {r['va_e2e_ms']:.2f} ms; x cuDNN "
          f"{r['va_x_cudnn']:.3f}; exact choice (order_probe=1): density {r['va_exact_density']:.3f}, "
          f"{r['va_exact_spatial_kv_heads']} spatial, select {r['va_exact_select_ms']:.2f} ms", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[16384, 32768, 131072])
    p.add_argument("--families", nargs="+", default=list(FAMILIES))
    p.add_argument("--captured", type=Path, default=None, help="capture_default_qk.py output (optional)")
    p.add_argument("--recall-stride", type=int, default=8)
    p.add_argument("--rep", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=None)
    p.add_argument("--video-aware", action="store_true",
                   help="also time video-aware selection (the family's video layout) and the reordered kernel")
    p.add_argument("--cpu-check", action="store_true",
                   help="run every step once on the CPU (PyTorch reference, wall-clock) to check the script, not to time")
    args = p.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu_check:
        sys.exit("needs a CUDA GPU (or --cpu-check)")
    import triton
    import triton.testing
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import unisparse
    from unisparse.breakeven import break_even_density

    dev = "cpu" if args.cpu_check else "cuda"
    if args.cpu_check:
        import time

        def bench(fn):
            t0 = time.perf_counter()
            fn()
            return 1e3 * (time.perf_counter() - t0)
    else:
        bench = lambda fn: (fn(), torch.cuda.synchronize(), triton.testing.do_bench(  # noqa: E731
            fn, warmup=10, rep=args.rep, return_mode="median"))[2]
    cfg = unisparse.UniSparseConfig()  # the library defaults a user gets
    name = torch.cuda.get_device_name() if not args.cpu_check else "cpu (script check, not timing)"
    backend = "torch" if args.cpu_check else "auto"

    cases = [(f, L, None) for L in args.lengths for f in args.families]
    cap_layout = None
    if args.captured:
        cap = torch.load(args.captured)
        cap_layout = captured_layout(cap)
        cases += [(f"default_model_l{layer}", None, data) for layer, data in sorted(cap["layers"].items())]
    dense_cache, rows = {}, []
    for family, L, captured in cases:
        scale = None
        if captured is not None:
            q, k, v, scale = tiled_capture(captured, args.seed)
            L, layout = q.shape[2], cap_layout
        else:
            q, k, v, layout = make_family(family, L, args.seed)
        q, k, v = (t.to(dev, torch.float32 if args.cpu_check else torch.bfloat16).contiguous() for t in (q, k, v))
        if L not in dense_cache:
            ke, ve = (t.repeat_interleave(HQ // HKV, dim=1) for t in (k, v))
            d = {}
            for label, sdpa_backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
                def fn(sdpa_backend=sdpa_backend):
                    if args.cpu_check:
                        return torch.nn.functional.scaled_dot_product_attention(q, ke, ve, is_causal=True)
                    with sdpa_kernel(sdpa_backend):
                        return torch.nn.functional.scaled_dot_product_attention(q, ke, ve, is_causal=True)
                d[label] = bench(fn)
            d["fallback"] = bench(lambda: unisparse.dense_attention(q, k, v))
            dense_cache[L] = d
            ke = ve = None
        dense = dense_cache[L]
        r = {"family": family, "L": L, **{f"{k_}_ms": v_ for k_, v_ in dense.items()}}
        mask = unisparse.select_blocks(q, k, cfg, scale=scale, backend=backend)
        r["density"] = unisparse.block_density(mask)
        r["recall"] = recalled_mass(q, k, mask, scale or 1 / math.sqrt(D), args.recall_stride)
        r["break_even"], r["break_even_from"] = break_even_density(q.device, L)
        limit = unisparse.fallback_density(cfg, q.device, L, "triton")
        r["path"] = "dense (short)" if L < cfg.min_seq_len else (
            "dense (above break-even)" if limit is not None and r["density"] > limit else "sparse")
        r["select_ms"] = bench(lambda: unisparse.select_blocks(q, k, cfg, scale=scale, backend=backend))
        r["kernel_ms"] = bench(lambda: unisparse.block_sparse_attention(q, k, v, mask, scale=scale, backend=backend))
        r["sparse_only_ms"] = r["select_ms"] + r["kernel_ms"]
        r["e2e_ms"] = bench(lambda: unisparse.sparse_attention(q, k, v, cfg, scale=scale, backend=backend))
        if args.video_aware and layout is not None:
            video_aware(r, q, k, v, layout, cfg, scale, backend, bench, dense["cudnn"], args.recall_stride)
        r["x_cudnn"] = dense["cudnn"] / r["e2e_ms"]
        r["x_flash"] = dense["flash"] / r["e2e_ms"]
        r["sparse_only_x_cudnn"] = dense["cudnn"] / r["sparse_only_ms"]
        rows.append(r)
        print(f"{family} L={L}: density {r['density']:.3f} recall {r['recall']:.3f} path {r['path']}; select "
              f"{r['select_ms']:.2f} kernel {r['kernel_ms']:.2f} e2e {r['e2e_ms']:.2f} ms; cuDNN {dense['cudnn']:.2f} "
              f"flash {dense['flash']:.2f} fallback {dense['fallback']:.2f}; x cuDNN {r['x_cudnn']:.3f}", flush=True)
        if not args.cpu_check:
            torch.cuda.empty_cache()
    cols = ["family", "L", "density", "recall", "path", "select_ms", "kernel_ms", "e2e_ms", "cudnn_ms", "flash_ms",
            "fallback_ms", "x_cudnn", "x_flash", "sparse_only_x_cudnn"]
    if args.video_aware:
        cols += ["va_density", "va_recall", "va_spatial_kv_heads", "va_select_ms", "va_kernel_ms", "va_e2e_ms", "va_x_cudnn",
                 "va_select_share_of_cudnn", "va_exact_density", "va_exact_spatial_kv_heads", "va_exact_select_ms"]
    fmt = lambda x: f"{x:.3f}" if isinstance(x, float) else str(x)  # noqa: E731
    md = [f"## UniSparse end to end by input family: {name}, torch {torch.__version__}, triton {triton.__version__}",
          "", f"28 q / 4 KV heads, d=128, bf16, causal; library defaults ({cfg}); x cuDNN = cuDNN ms / end-to-end ms; "
          "sparse_only = selection + kernel without the fallback.", "",
          "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    md += ["| " + " | ".join(fmt(r.get(c, "-")) for c in cols) + " |" for r in rows]
    md += ["", f"Command: `python {' '.join(sys.argv)}`"]
    print("\n".join(md))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".json").write_text(json.dumps({"gpu": name, "rows": rows}, indent=1))
        args.output.with_suffix(".md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
