"""Benchmark UniSparse prefill attention against dense and block-sparse baselines, on one GPU.

Per sequence length, on inputs with real attention structure (``unisparse.testing.structured_qkv``:
sinks, local bands, vertical stripes, retrieval; flat noise would make selection meaningless),
default shapes those of the Qwen2-VL-7B language model (28 query heads, 4 KV heads, head dim 128,
bf16, batch 1, causal), it measures:

1. **End to end.** Our selection (``select_blocks``), our sparse kernel (``block_sparse_attention``)
   at the mask the config picked, our total (``sparse_attention``), the density (kept / causal
   blocks) and the peak extra memory of ``sparse_attention``; against SDPA flash (FA2), SDPA cuDNN,
   FlexAttention causal and FlexAttention with the same block mask as ours (both compiled). The
   speedups are baseline time / our total time. The config has ``min_seq_len=0``, so every length
   is measured sparse (this benchmark is where the library default of 12288 comes from).
2. **Kernel ceiling.** Our kernel with every causal block kept (density 1.0), in TFLOP/s
   (causal FLOPs = 4 * B * Hq * L * L * D / 2), against flash, cuDNN and Flex causal.
3. **Density scaling.** Our kernel (and Flex) on random block masks of density 0.5, 0.25 and 0.1:
   time, and time / (density x time at density 1.0), where 1.0 means perfect skipping.

Before timing, a sanity check: ``||ours - flex|| / ||flex||`` with the same mask, and our kernel at
density 1.0 against cuDNN (about 1e-3 to 1e-2 in bf16). Times are medians of
``triton.testing.do_bench``, each function called once first (compilation is not timed). SDPA
gets K/V repeated to Hq heads outside the timed region; Flex uses ``enable_gqa=True``; our kernels
read the Hkv heads directly. A failing baseline (cuDNN unavailable, Flex out of memory) is reported
as "n/a (reason)" and the run goes on.

  python benchmarks/attention/bench_attention.py --output benchmarks/attention_h100   # writes .json and .md
  python benchmarks/attention/bench_attention.py --smoke                              # tiny, CPU, torch backend
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

BLOCK = 128  # our block size, equal to FlexAttention's default BLOCK_SIZE
SMOKE_LENGTHS = [512]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="default 8K 16K 32K 64K")
    p.add_argument("--head-dim", type=int, default=128, choices=(64, 128))
    p.add_argument("--heads", type=int, default=28, help="query heads")
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--top-p", type=float, default=None, help="override the config's top_p")
    p.add_argument("--head-pool", type=int, default=None, help="override the config's head_pool")
    p.add_argument("--densities", type=float, nargs="+", default=[0.5, 0.25, 0.1])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=50, help="do_bench warmup, ms")
    p.add_argument("--rep", type=int, default=300, help="do_bench measuring time, ms")
    p.add_argument("--output", type=Path, default=None, help="write OUTPUT.json and OUTPUT.md")
    p.add_argument("--backend", default=None, help="unisparse backend (default: auto; torch with --smoke)")
    p.add_argument("--smoke", action="store_true", help="tiny run on CPU, float32, no CUDA baselines")
    args = p.parse_args(argv)
    if args.lengths is None:
        args.lengths = SMOKE_LENGTHS if args.smoke else [8192, 16384, 32768, 65536]
    bad = [n for n in args.lengths if n % BLOCK]
    if bad:
        p.error(f"lengths must be multiples of {BLOCK}, got {bad}")
    return args


def na(err: BaseException) -> str:
    msg = (str(err).strip().splitlines() or [""])[0].replace("|", "/")
    return f"n/a ({type(err).__name__}: {msg[:70].strip()})"


def attempt(fn):
    """fn() or, if it raises, an "n/a (reason)" string (CUDA caches freed after an OOM)."""
    try:
        return fn()
    except Exception as err:  # one failing backend must not end the run
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return na(err)


def then(x, fn):
    """fn(x), unless x is already an "n/a (...)" string, which passes through."""
    return x if isinstance(x, str) else attempt(lambda: fn(x))


def make_timer(args):
    if args.smoke:
        def timer(fn):
            fn()
            samples = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(samples)
        return timer

    import triton.testing

    def timer(fn):
        fn()  # compile / autotune outside the timed region
        torch.cuda.synchronize()
        return triton.testing.do_bench(fn, warmup=args.warmup, rep=args.rep, return_mode="median")
    return timer


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def flex_block_mask(mask: torch.Tensor, seq_len: int, exact: bool = False):
    """A Flex BlockMask equal to our bool ``[B, H, nb, nb]`` mask: the diagonal block is partial
    (causal mask_mod), every other kept causal block full (no mask_mod evaluated).

    Compiled Flex visits only the listed blocks, so the causal mask_mod suffices. Eager Flex
    (``--smoke``) ignores the block lists and applies the mask_mod to every pair, so ``exact``
    makes the mask_mod read our mask too.
    """
    from torch.nn.attention.flex_attention import BlockMask

    B, H, nb, _ = mask.shape
    below = torch.ones(nb, nb, dtype=torch.bool, device=mask.device).tril(-1)
    full = mask & below
    full_num = full.sum(-1, dtype=torch.int32)
    full_idx = torch.argsort(full.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    diag_num = mask.diagonal(dim1=-2, dim2=-1).to(torch.int32).contiguous()
    diag_idx = torch.arange(nb, dtype=torch.int32, device=mask.device).view(1, 1, nb, 1).expand(B, H, nb, nb)
    def exact_mod(b, h, q_idx, kv_idx):
        return mask[b, h, q_idx // BLOCK, kv_idx // BLOCK] & (q_idx >= kv_idx)

    return BlockMask.from_kv_blocks(
        diag_num, diag_idx.contiguous(), full_num, full_idx,
        BLOCK_SIZE=BLOCK, mask_mod=exact_mod if exact else causal, seq_lengths=(seq_len, seq_len),
    )


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def tflops(flops: float, ms) -> float | str:
    return flops / (ms * 1e-3) / 1e12 if isinstance(ms, float) else ms


def ratio(num, den) -> float | str:
    return num / den if isinstance(num, float) and isinstance(den, float) else "n/a"


def bench_length(L, args, us, timer, flex, device, dtype, backend):
    """Everything measured at one sequence length, as a dict of numbers or "n/a (...)" strings."""
    from unisparse.testing import causal_block_count, random_block_mask, structured_qkv

    B, Hq, Hkv, D = args.batch, args.heads, args.kv_heads, args.head_dim
    q, k, v = structured_qkv(B, Hq, Hkv, L, D, dtype=dtype, device=device, seed=args.seed)
    changes = {n: val for n, val in (("top_p", args.top_p), ("head_pool", args.head_pool)) if val is not None}
    cfg = us.UniSparseConfig(min_seq_len=0, **changes)  # sparse at every length, not the dense fallback
    flops = 4 * B * Hq * L * L * D / 2
    nb = L // BLOCK
    r = {"L": L, "config": repr(cfg)}

    def ours_kernel(mask):
        return lambda: us.block_sparse_attention(q, k, v, mask, block_size=BLOCK, backend=backend)

    def flex_fn(bm):
        return lambda: flex(q, k, v, block_mask=bm, enable_gqa=True)

    # Our selection, and its density.
    mask = attempt(lambda: us.select_blocks(q, k, cfg, backend=backend))
    if isinstance(mask, str):
        r["error"] = f"select_blocks: {mask}"
        return r
    r["density"] = (mask & torch.ones(nb, nb, dtype=torch.bool, device=device).tril()).sum().item() / (
        B * Hq * causal_block_count(nb))
    flex_same = attempt(lambda: flex_block_mask(mask, L, args.smoke)) if flex else "n/a (no flex)"
    full_mask = random_block_mask(B, Hq, L, BLOCK, 1.0, device=device)

    # Sanity before timing.
    ours = attempt(ours_kernel(mask))
    ref = then(flex_same, lambda bm: flex_fn(bm)())
    r["err_vs_flex_same_mask"] = next((x for x in (ours, ref) if isinstance(x, str)), None) or rel_err(ours, ref)
    del ours, ref
    ke, ve = (t.repeat_interleave(Hq // Hkv, dim=1) for t in (k, v))
    if not args.smoke:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def sdpa(which):
            def fn():
                with sdpa_kernel(which):
                    return torch.nn.functional.scaled_dot_product_attention(q, ke, ve, is_causal=True)
            return fn
        dense = {"flash": sdpa(SDPBackend.FLASH_ATTENTION), "cudnn": sdpa(SDPBackend.CUDNN_ATTENTION)}
        r["err_d1_vs_cudnn"] = attempt(lambda: rel_err(ours_kernel(full_mask)(), dense["cudnn"]()))
    else:
        dense = {"flash": None, "cudnn": None}
        r["err_d1_vs_cudnn"] = "n/a (smoke)"

    # 1. End to end.
    r["select_ms"] = attempt(lambda: timer(lambda: us.select_blocks(q, k, cfg, backend=backend)))
    # The same-stack peer: XAttention's antidiagonal estimation (stride 16, threshold 0.9, its
    # Qwen2-VL video setting) through the same fused scoring kernel.
    from unisparse.selectors import make_selector

    xattn = make_selector("xattention", backend=backend)
    r["xattn_select_ms"] = attempt(lambda: timer(lambda: xattn(q, k)))
    r["xattn_density"] = then(attempt(lambda: xattn(q, k)), lambda m: (
        m & torch.ones(nb, nb, dtype=torch.bool, device=device).tril()).sum().item() / (B * Hq * causal_block_count(nb)))
    r["select_speedup_vs_xattn"] = ratio(r["xattn_select_ms"], r["select_ms"])
    r["kernel_ms"] = attempt(lambda: timer(ours_kernel(mask)))
    r["total_ms"] = attempt(lambda: timer(lambda: us.sparse_attention(q, k, v, cfg, backend=backend)))
    for name, fn in dense.items():
        r[f"{name}_ms"] = attempt(lambda: timer(fn)) if fn else "n/a (CUDA only)"
    if flex:
        from torch.nn.attention.flex_attention import create_block_mask

        causal_bm = attempt(lambda: create_block_mask(causal, None, None, L, L, device=device))
        r["flex_causal_ms"] = then(causal_bm, lambda bm: timer(flex_fn(bm)))
        r["flex_same_mask_ms"] = then(flex_same, lambda bm: timer(flex_fn(bm)))
    else:
        r["flex_causal_ms"] = r["flex_same_mask_ms"] = "n/a (no flex)"
    r["total_speedup_vs_flash"] = ratio(r["flash_ms"], r["total_ms"])
    r["total_speedup_vs_cudnn"] = ratio(r["cudnn_ms"], r["total_ms"])
    r["kernel_speedup_vs_flex_same_mask"] = ratio(r["flex_same_mask_ms"], r["kernel_ms"])
    r["peak_extra_mb"] = attempt(lambda: peak_extra_mb(lambda: us.sparse_attention(q, k, v, cfg, backend=backend)))
    r["output_mb"] = q.numel() * q.element_size() / 2**20

    # 2. Kernel ceiling at density 1.0.
    r["d1_ms"] = attempt(lambda: timer(ours_kernel(full_mask)))
    for name in ("d1", "flash", "cudnn", "flex_causal"):
        r[f"{name}_tflops"] = tflops(flops, r[f"{name}_ms"])
    r["d1_vs_cudnn"] = ratio(r["cudnn_ms"], r["d1_ms"])
    r["d1_vs_flash"] = ratio(r["flash_ms"], r["d1_ms"])

    # 3. Fixed densities from random masks.
    r["fixed"] = []
    for d in args.densities:
        m = random_block_mask(B, Hq, L, BLOCK, d, seed=args.seed, device=device)
        row = {"density": d, "ours_ms": attempt(lambda: timer(ours_kernel(m)))}
        bm = attempt(lambda: flex_block_mask(m, L, args.smoke)) if flex else "n/a (no flex)"
        row["flex_ms"] = then(bm, lambda bm: timer(flex_fn(bm)))
        d1 = r["d1_ms"]
        row["time_over_density_x_d1"] = ratio(row["ours_ms"], d * d1) if isinstance(d1, float) else "n/a"
        row["speedup_vs_cudnn"] = ratio(r["cudnn_ms"], row["ours_ms"])
        row["speedup_vs_flash"] = ratio(r["flash_ms"], row["ours_ms"])
        r["fixed"].append(row)
    return r


def peak_extra_mb(fn) -> float | str:
    """Peak memory allocated during fn() above what was allocated before, MiB (output included)."""
    if not torch.cuda.is_available():
        return "n/a (CUDA only)"
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    del out
    return extra / 2**20


def fmt(x, digits=2) -> str:
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def sci(x) -> str:
    return f"{x:.2e}" if isinstance(x, float) else str(x)


def table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, int) else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mem(r) -> str:
    x = r["peak_extra_mb"]
    return f"{x:.0f} ({r['output_mb']:.0f})" if isinstance(x, float) else str(x)


def report(results, header) -> str:
    ok = [r for r in results if "error" not in r]
    parts = [header, "", "### End to end (ms; speedup = baseline / our total)", "", table(
        ["L", "density", "select", "kernel", "total", "SDPA flash", "SDPA cuDNN", "Flex causal",
         "Flex same mask", "x flash", "x cuDNN", "kernel x Flex same", "peak extra MiB (output)"],
        [[r["L"], r["density"], r["select_ms"], r["kernel_ms"], r["total_ms"], r["flash_ms"], r["cudnn_ms"],
          r["flex_causal_ms"], r["flex_same_mask_ms"], r["total_speedup_vs_flash"],
          r["total_speedup_vs_cudnn"], r["kernel_speedup_vs_flex_same_mask"],
          mem(r)] for r in ok])]
    parts += ["", "### Selection: UniSparse vs XAttention's antidiagonal estimate on the same fused kernel (ms)", "", table(
        ["L", "UniSparse select", "density", "XAttention select", "its density", "x XAttention"],
        [[r["L"], r["select_ms"], r["density"], r["xattn_select_ms"], r["xattn_density"],
          r["select_speedup_vs_xattn"]] for r in ok])]
    parts += ["", "### Sanity: relative error", "", table(
        ["L", "ours vs Flex (same mask)", "ours at density 1.0 vs cuDNN"],
        [[r["L"], sci(r["err_vs_flex_same_mask"]), sci(r["err_d1_vs_cudnn"])] for r in ok])]
    parts += ["", "### Kernel ceiling: density 1.0 (TFLOP/s, causal FLOPs)", "", table(
        ["L", "ours ms", "ours", "SDPA flash", "SDPA cuDNN", "Flex causal", "x cuDNN", "x flash"],
        [[r["L"], r["d1_ms"], r["d1_tflops"], r["flash_tflops"], r["cudnn_tflops"], r["flex_causal_tflops"],
          r["d1_vs_cudnn"], r["d1_vs_flash"]] for r in ok])]
    parts += ["", "(x cuDNN, x flash: baseline time / ours; > 1 means ours is faster)"]
    parts += ["", "### Fixed densities (random block masks, diagonal always kept)", "", table(
        ["L", "density", "ours ms", "time / (density x time@1.0)", "x cuDNN", "x flash", "Flex same mask ms"],
        [[r["L"], f["density"], f["ours_ms"], f["time_over_density_x_d1"], f["speedup_vs_cudnn"],
          f["speedup_vs_flash"], f["flex_ms"]] for r in ok for f in r["fixed"]])]
    for r in results:
        if "error" in r:
            parts.append(f"\nL={r['L']}: {r['error']}")
    return "\n".join(parts) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.heads % args.kv_heads:
        sys.exit(f"--heads ({args.heads}) must be a multiple of --kv-heads ({args.kv_heads})")
    import triton

    import unisparse as us

    if args.smoke:
        device, dtype, backend, gpu = "cpu", torch.float32, args.backend or "torch", "none (smoke run on CPU)"
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run on the GPU machine, or use --smoke here")
        device, dtype, backend, gpu = "cuda", torch.bfloat16, args.backend or "auto", torch.cuda.get_device_name()
    flex = None
    try:
        from torch.nn.attention.flex_attention import flex_attention

        if args.smoke:
            flex = flex_attention  # eager (unfused) on CPU: exercises the mask conversion only
        else:
            import torch._dynamo as dynamo

            for knob in ("cache_size_limit", "recompile_limit"):  # a compile per length and mask shape
                if hasattr(dynamo.config, knob):
                    setattr(dynamo.config, knob, 64)
            flex = torch.compile(flex_attention, dynamic=False)
    except Exception as err:
        print(f"FlexAttention unavailable: {na(err)}")

    header = "\n".join([
        "## UniSparse attention benchmark",
        "",
        f"- GPU: {gpu}; torch {torch.__version__}, triton {triton.__version__}, "
        f"unisparse {getattr(us, '__version__', '?')}",
        f"- shapes: batch {args.batch}, {args.heads} q heads, {args.kv_heads} KV heads, head dim {args.head_dim}, "
        f"{str(dtype).replace('torch.', '')}, causal, block {BLOCK}; inputs structured_qkv(seed={args.seed})",
        "- timing: " + ("perf_counter, median of 3 (smoke)" if args.smoke else
                        f"triton do_bench median, warmup {args.warmup} ms, rep {args.rep} ms"),
        f"- command: `{' '.join([os.path.basename(sys.executable)] + sys.argv)}`",
    ])
    print(header, flush=True)
    timer = make_timer(args)
    results = []
    for L in args.lengths:
        t0 = time.time()
        r = attempt(lambda: bench_length(L, args, us, timer, flex, device, dtype, backend))
        r = r if isinstance(r, dict) else {"L": L, "error": r}
        results.append(r)
        print(f"L={L}: done in {time.time() - t0:.0f} s", r.get("error", ""), flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    md = report(results, header)
    print("\n" + md)
    if args.output:
        stem = args.output.with_suffix("") if args.output.suffix in (".json", ".md") else args.output
        stem.parent.mkdir(parents=True, exist_ok=True)
        meta = {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "argv": sys.argv,
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
        Path(f"{stem}.json").write_text(json.dumps({**meta, "results": results}, indent=1))
        Path(f"{stem}.md").write_text(md)
        print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
