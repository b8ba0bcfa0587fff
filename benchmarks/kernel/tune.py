"""Check and time variants of the block-sparse forward kernel in one GPU call.

    cd <repo> && PYTHONPATH=$PWD python3 benchmarks/kernel/tune.py --out $OUT/tune \\
        [--variants NAME ...] [--lengths 8192 32768 131072] [--d64-lengths 32768] \\
        [--prop-length 32768] [--densities 0.1 0.25 0.5 0.75] [--budget-s 420]

Writes ``<out>.md`` (tables, printed last), ``<out>.json`` (every number) and ``<out>.log``.

Phases, each variant isolated so that one that fails to compile, gives wrong numbers or hangs
(a Gluon kernel waiting on an mbarrier that never completes) is reported, not fatal:

1. **Check** (one subprocess per variant, several at once so compiles overlap, each with a time
   limit): on fresh random structured inputs (``unisparse.testing.structured_qkv``), outputs
   poisoned with NaN, against the float32 PyTorch reference (``unisparse.reference``):
   an odd length (8191, GQA 28/4, mask on the query heads), block 256 with a mask on the KV
   heads (3001 tokens), one mask head for a batch of 2 (1000 tokens, block 128), float16.
   ``||out-ref||/||ref|| < 1e-2`` and no NaN, else the variant is not timed. The kernel that
   actually ran (a Gluon tile falls back to Triton where Gluon does not apply) is recorded.
2. **Time** (one worker process, watched: a variant silent for too long is killed and skipped):
   SDPA flash and cuDNN (causal, dense, K/V repeated to 28 heads) at every length; every
   checked variant at density 1 (every causal block kept; its output checked against cuDNN's
   first), and at ``--prop-length`` with random block masks of lower density
   (``unisparse.testing.random_block_mask``, on the query heads): time(d) / (d x time(1)).
   Medians of ``triton.testing.do_bench``; timing inputs are unit Gaussians (not zeros).
   FLOPs at density 1: 4 * Hq * L^2 * D / 2 (causal).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HQ, HKV = 28, 4
# TUNE_SMOKE=1: a dry run of this script's logic on the CPU (Triton interpreter, tiny sizes).
SMOKE = os.environ.get("TUNE_SMOKE") == "1"
DEV = "cpu" if SMOKE else "cuda"
if SMOKE:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# name: (head dim, Tile fields). Triton rows are the kernel of unisparse/kernels/block_sparse.py,
# Gluon rows unisparse/kernels/block_sparse_gluon.py.
VARIANTS = {
    # d = 128
    "T tma 128x128 w8 s3": (128, dict(block_m=128, block_n=128, num_warps=8, num_stages=3, tma=True)),
    "T tma ws 128x128 w8 s3": (128, dict(block_m=128, block_n=128, num_warps=8, num_stages=3, tma=True,
                                         warp_specialize=True)),
    "G plain 128x128 w8 s2": (128, dict(block_m=128, block_n=128, num_warps=8, num_stages=2, kernel="gluon-plain")),
    "G 128x128 w8 s2": (128, dict(block_m=128, block_n=128, num_warps=8, num_stages=2, kernel="gluon")),
    "G 128x128 w8 s3": (128, dict(block_m=128, block_n=128, num_warps=8, num_stages=3, kernel="gluon")),
    "G 128x64 w8 s3": (128, dict(block_m=128, block_n=64, num_warps=8, num_stages=3, kernel="gluon")),
    "G 64x64 w4 s3": (128, dict(block_m=64, block_n=64, num_warps=4, num_stages=3, kernel="gluon")),
    "WS 128x128 s2": (128, dict(block_m=128, block_n=128, num_warps=4, num_stages=2, kernel="gluon-ws")),
    "WS 128x128 s3": (128, dict(block_m=128, block_n=128, num_warps=4, num_stages=3, kernel="gluon-ws")),
    "WS-PP 128x128 s2": (128, dict(block_m=128, block_n=128, num_warps=4, num_stages=2, kernel="gluon-ws-pp")),
    "WS-PP 128x128 s3": (128, dict(block_m=128, block_n=128, num_warps=4, num_stages=3, kernel="gluon-ws-pp")),
    "TWS-PP 128x128 s2": (128, dict(block_m=128, block_n=128, num_warps=4, num_stages=2, kernel="gluon-tws-pp")),
    "PWS 128x128 s2": (128, dict(block_m=128, block_n=128, num_warps=4, num_stages=2, kernel="gluon-pws")),
    "PWS-PP 128x128 s2": (128, dict(block_m=128, block_n=128, num_warps=4, num_stages=2, kernel="gluon-pws-pp")),
    # d = 64
    "d64 T tma 128x128 w4 s3": (64, dict(block_m=128, block_n=128, num_warps=4, num_stages=3, tma=True)),
    "d64 G 128x128 w8 s3": (64, dict(block_m=128, block_n=128, num_warps=8, num_stages=3, kernel="gluon")),
    "d64 G 64x128 w4 s3": (64, dict(block_m=64, block_n=128, num_warps=4, num_stages=3, kernel="gluon")),
    "d64 WS 128x128 s2": (64, dict(block_m=128, block_n=128, num_warps=4, num_stages=2, kernel="gluon-ws")),
    "d64 WS 128x128 s3": (64, dict(block_m=128, block_n=128, num_warps=4, num_stages=3, kernel="gluon-ws")),
    "d64 WS-PP 128x128 s3": (64, dict(block_m=128, block_n=128, num_warps=4, num_stages=3, kernel="gluon-ws-pp")),
    "d64 TWS 128x128 s3": (64, dict(block_m=128, block_n=128, num_warps=4, num_stages=3, kernel="gluon-tws")),
    "d64 PWS 128x128 s3": (64, dict(block_m=128, block_n=128, num_warps=4, num_stages=3, kernel="gluon-pws")),
    "d64 PWS 128x128 s4": (64, dict(block_m=128, block_n=128, num_warps=4, num_stages=4, kernel="gluon-pws")),
    "d64 PWS-PP 128x128 s3": (64, dict(block_m=128, block_n=128, num_warps=4, num_stages=3, kernel="gluon-pws-pp")),
    # the library's defaults (unisparse.kernels.block_sparse.default_tile), through the public launcher
    "DEFAULT d128": (128, None),
    "DEFAULT d64": (64, None),
}

TOL = 1e-2
if SMOKE:
    CHECKS_SMOKE = [("L300 4/2 bs128 maskHq", 1, 4, 2, 300, 128, "q", 0.5, "float16"),
                    ("L200 4/1 bs64 mask1", 2, 4, 1, 200, 64, "one", 0.6, "float16")]


def tile_of(name):
    from unisparse.kernels.block_sparse import Tile

    fields = VARIANTS[name][1]
    return None if fields is None else Tile(**fields)


def rel(out, ref):
    out, ref = out.float(), ref.float()
    if torch_isnan(out):
        return float("nan")
    return ((out - ref).norm() / ref.norm()).item()


def torch_isnan(t):
    return bool(t.isnan().any().item())


# ---------------------------------------------------------------------------------------------
# phase 1: checks (one subprocess per variant)

CHECKS = [  # label, batch, hq, hkv, L, block, mask heads ("q" / "kv" / "one"), density, dtype
    ("L8191 28/4 bs128 maskHq", 1, HQ, HKV, 8191, 128, "q", 0.4, "bfloat16"),
    ("L3001 8/2 bs256 maskHkv", 1, 8, 2, 3001, 256, "kv", 0.5, "bfloat16"),
    ("L1000 B2 4/1 bs128 mask1", 2, 4, 1, 1000, 128, "one", 0.6, "bfloat16"),
    ("L2048 28/4 fp16 maskHq", 1, HQ, HKV, 2048, 128, "q", 0.5, "float16"),
    ("L1500 8/2 bs64 maskHq", 1, 8, 2, 1500, 64, "q", 0.5, "bfloat16"),
    ("L777 28/4 [B,L,H,D] layout, a row without its diagonal", 1, HQ, HKV, 777, 128, "strided", 0.7, "bfloat16"),
    ("L4096 28/4 density1", 1, HQ, HKV, 4096, 128, "q", 1.0, "bfloat16"),
]


def diagnose(out, ref):
    """Where a wrong output is wrong: which rows and heads, NaN count."""
    o, r = out.float(), ref.float()
    nan = o.isnan()
    row_err = ((o - r).nan_to_num(1e9).norm(dim=-1) / r.norm(dim=-1).clamp_min(1e-6))  # [B, H, L]
    bad = (row_err > 0.05).nonzero().tolist()
    rows = sorted({x[2] for x in bad})
    return {"nan": int(nan.sum()), "bad_rows": len(bad), "of": row_err.numel(),
            "heads": sorted({x[1] for x in bad})[:12], "first_rows": rows[:8], "last_rows": rows[-4:],
            "row_mod_128": sorted({x % 128 for x in rows})[:16], "n_row_mod_128": len({x % 128 for x in rows})}


def check_variant(name):
    import torch

    from unisparse import reference as R
    from unisparse.kernels import block_sparse as K
    from unisparse.testing import random_block_mask, structured_qkv

    d = VARIANTS[name][0]
    tile = tile_of(name)
    if os.environ.get("TUNE_FAKE_HANG") == "check:" + name:  # tests this script's hang handling
        time.sleep(1e6)
    seed = int.from_bytes(os.urandom(4), "little")
    res = {"variant": name, "seed": seed, "checks": []}
    ok = True
    t0 = time.perf_counter()
    for label, b, hq, hkv, L, bs, mh, dens, dt in (CHECKS_SMOKE if SMOKE else CHECKS):
        dtype = getattr(torch, dt)
        q, k, v = (t.to(DEV, dtype) for t in structured_qkv(b, hq, hkv, L, d, seed=seed))
        heads = {"q": hq, "kv": hkv, "one": 1, "strided": hq}[mh]
        mask = random_block_mask(b if mh != "one" else 1, heads, L, bs, dens, seed=seed).to(DEV)
        if mh == "strided":  # the [B, L, H, D] layout transposed, as transformers passes it
            q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
            mask[:, 1, 2, :] = False  # query block 2 of head 1 sees nothing: zeros
        out = torch.full(q.shape, float("nan"), dtype=q.dtype, device=q.device)  # contiguous, poisoned
        which = K.kernel_for(q, k, v, bs, tile, out)
        K.block_sparse_attention(q, k, v, mask, bs, out=out, tile=tile)
        sync()
        ref = R.block_sparse_attention(q.float(), k.float(), v.float(), mask, bs)
        err = rel(out, ref)
        good = err == err and err < TOL
        ok &= good
        rec = {"case": label, "kernel": which, "err": err, "ok": good}
        if not good:
            rec["diag"] = diagnose(out, ref)
        res["checks"].append(rec)
        del q, k, v, out, ref
        if not SMOKE:
            torch.cuda.empty_cache()
    # the same input twice: a moving result would be a race
    hq, hkv, L, dt = (4, 2, 300, torch.float16) if SMOKE else (HQ, HKV, 4096, torch.bfloat16)
    q, k, v = (t.to(DEV, dt) for t in structured_qkv(1, hq, hkv, L, d, seed=seed + 1))
    mask = random_block_mask(1, hq, L, 128, 0.6, seed=seed + 1).to(DEV)
    out = torch.full(q.shape, float("nan"), dtype=q.dtype, device=q.device)
    out2 = torch.full_like(out, float("nan"))
    K.block_sparse_attention(q, k, v, mask, 128, out=out2, tile=tile)
    K.block_sparse_attention(q, k, v, mask, 128, out=out, tile=tile)
    res["repeat_max_abs_diff"] = (out2.float() - out.float()).abs().max().item()
    ok &= res["repeat_max_abs_diff"] == 0.0
    res["ok"] = ok
    res["check_s"] = time.perf_counter() - t0
    return res


# ---------------------------------------------------------------------------------------------
# phase 2: timing (one worker process, items in order, one JSON line each)

def sync():
    import torch

    if not SMOKE:
        torch.cuda.synchronize()


def bench(fn):
    import triton.testing

    fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    est = (time.perf_counter() - t0) * 1e3
    if SMOKE:
        return est
    return triton.testing.do_bench(fn, warmup=max(25, 2 * est), rep=max(100, 6 * est), return_mode="median")


def causal_density(mask):
    import torch

    nb = mask.shape[-1]
    causal = torch.ones(nb, nb, dtype=torch.bool, device=mask.device).tril()
    return ((mask & causal).sum() / (causal.sum() * mask.shape[0] * mask.shape[1])).item()


def worker(items, lengths_by_d, prop_length, densities, out_jsonl):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from unisparse.kernels import block_sparse as K
    from unisparse.testing import random_block_mask

    def emit(rec):
        with open(out_jsonl, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)

    inputs, cudnn_out = {}, {}

    def cudnn_reference(L, d):
        if (L, d) not in cudnn_out:
            q, k, v, _ = get_inputs(L, d)
            ke, ve = (t.repeat_interleave(HQ // HKV, dim=1) for t in (k, v))
            with sdpa_kernel(SDPBackend.MATH if SMOKE else SDPBackend.CUDNN_ATTENTION):
                cudnn_out[(L, d)] = F.scaled_dot_product_attention(q, ke, ve, is_causal=True)
        return cudnn_out[(L, d)]

    def get_inputs(L, d):
        if (L, d) not in inputs:
            g = torch.Generator(device=DEV).manual_seed(L + d)
            dt = torch.float16 if SMOKE else torch.bfloat16
            q = torch.randn(1, HQ, L, d, device=DEV, dtype=dt, generator=g)
            k = torch.randn(1, HKV, L, d, device=DEV, dtype=dt, generator=g)
            v = torch.randn(1, HKV, L, d, device=DEV, dtype=dt, generator=g)
            inputs[(L, d)] = (q, k, v, random_block_mask(1, HQ, L, 128, 1.0, device=DEV))
        return inputs[(L, d)]

    for item in items:
        kind, name, d, L = item["kind"], item.get("variant"), item["d"], item["L"]
        emit({"event": "start", **item})
        q, k, v, full = get_inputs(L, d)
        flops = 4 * HQ * L * L * d / 2
        rec = {"event": "done", **item}
        try:
            if kind == "dense":
                ke, ve = (t.repeat_interleave(HQ // HKV, dim=1) for t in (k, v))
                backends = (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION))
                if SMOKE:
                    backends = (("flash", SDPBackend.MATH), ("cudnn", SDPBackend.MATH))
                for label, be in backends:
                    def f(be=be):
                        with sdpa_kernel(be):
                            return F.scaled_dot_product_attention(q, ke, ve, is_causal=True)
                    ms = bench(f)
                    rec[f"{label}_ms"] = ms
                    rec[f"{label}_tflops"] = flops / ms / 1e9
                del ke, ve
                cudnn_reference(L, d)
            else:
                tile = tile_of(name)
                if os.environ.get("TUNE_FAKE_HANG") == f"time:{name}:{L}":  # tests the hang handling
                    time.sleep(1e6)
                out = torch.full_like(q, float("nan"))
                rec["kernel"] = K.kernel_for(q, k, v, 128, tile, out)
                K.block_sparse_attention(q, k, v, full, 128, out=out, tile=tile)
                rec["err_vs_cudnn"] = rel(out, cudnn_reference(L, d))
                if not (rec["err_vs_cudnn"] < TOL):
                    rec["error"] = "density-1 output does not match cuDNN"
                else:
                    ms = bench(lambda: K.block_sparse_attention(q, k, v, full, 128, out=out, tile=tile))
                    rec["d1_ms"] = ms
                    rec["d1_tflops"] = flops / ms / 1e9
                    if L == prop_length:
                        rec["prop"] = {}
                        for dens in densities:
                            m = random_block_mask(1, HQ, L, 128, dens, seed=3, device=DEV)
                            real = causal_density(m)
                            t = bench(lambda: K.block_sparse_attention(q, k, v, m, 128, out=out, tile=tile))
                            rec["prop"][str(dens)] = {"density": real, "ms": t, "ratio": t / (real * ms)}
        except Exception as err:  # report, go on
            rec["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"
        emit(rec)
        if not SMOKE:
            torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# orchestration


def run_checks(names, parallel, timeout, log):
    """One subprocess per variant, ``parallel`` at a time; returns {name: result}."""
    env = dict(os.environ)
    procs, results, queue = {}, {}, list(names)
    while queue or procs:
        while queue and len(procs) < parallel:
            n = queue.pop(0)
            p = subprocess.Popen([sys.executable, __file__, "--check-one", n], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, env=env)
            procs[n] = (p, time.time())
        time.sleep(0.5)
        for n, (p, t0) in list(procs.items()):
            if p.poll() is not None:
                out = p.stdout.read()
                log.write(f"--- check {n} (rc {p.returncode})\n{out}\n")
                line = [x for x in out.splitlines() if x.startswith("RESULT ")]
                results[n] = json.loads(line[-1][7:]) if line else {
                    "variant": n, "ok": False, "error": (out.strip().splitlines() or ["no output"])[-1][:300]}
                del procs[n]
            elif time.time() - t0 > timeout:
                p.kill()
                p.wait()
                results[n] = {"variant": n, "ok": False, "error": f"timeout after {timeout} s (hang?)"}
                log.write(f"--- check {n}: killed after {timeout} s\n")
                del procs[n]
    return results


def run_timing(items, args, jsonl, log, deadline):
    """The worker in a subprocess, restarted after a crash or a hang; the item it was on when it
    died (silent for ``args.item_timeout`` s) is recorded as failed, with that variant's other
    lengths."""
    key = lambda r: (r["kind"], r.get("variant"), r["d"], r["L"])  # noqa: E731
    todo = list(items)
    while todo and time.time() < deadline:
        spec = Path(tempfile.gettempdir()) / f"tune_todo_{os.getpid()}.json"
        spec.write_text(json.dumps({"items": todo, "prop_length": args.prop_length, "densities": args.densities}))
        p = subprocess.Popen([sys.executable, __file__, "--worker", str(spec), str(jsonl)],
                             stdout=log, stderr=subprocess.STDOUT)
        seen, last = 0, time.time()
        while p.poll() is None:
            time.sleep(0.5)
            n = len(jsonl.read_text().splitlines()) if jsonl.exists() else 0
            if n != seen:
                seen, last = n, time.time()
            if time.time() - last > args.item_timeout or time.time() > deadline:
                p.kill()
                p.wait()
        recs = [json.loads(x) for x in (jsonl.read_text().splitlines() if jsonl.exists() else [])]
        finished = {key(r) for r in recs if r["event"] == "done"}
        todo = [it for it in todo if key(it) not in finished]
        if not todo or time.time() > deadline:
            break
        bad = todo.pop(0)  # the worker died or hung on this one
        drop = [bad] + [it for it in todo if bad["kind"] == "variant" and it.get("variant") == bad["variant"]]
        todo = [it for it in todo if it not in drop]
        with open(jsonl, "a") as f:
            for it in drop:
                f.write(json.dumps({"event": "done", **it, "error": "worker crashed or hung (rc "
                                    f"{p.returncode}) on {bad['L']}" if it is not bad else
                                    f"worker crashed or hung here (rc {p.returncode})"}) + "\n")
    recs = [json.loads(x) for x in (jsonl.read_text().splitlines() if jsonl.exists() else [])]
    return [r for r in recs if r["event"] == "done"]


def report(args, env, checks, timing):
    dense = {(r["d"], r["L"]): r for r in timing if r["kind"] == "dense"}
    lines = [f"## Block-sparse forward variants: {env.get('gpu')}, torch {env.get('torch')}, triton {env.get('triton')}",
             "", f"Command: `{env['command']}`", "",
             f"Batch 1, {HQ} q / {HKV} KV heads, bf16, causal, block 128; density 1 = every causal block kept; "
             "FLOPs 4*Hq*L^2*D/2; do_bench medians; x cuDNN = cuDNN time / ours (>1: faster).", ""]
    lines += ["### Dense baselines", "", "| d | L | SDPA flash ms | TFLOP/s | SDPA cuDNN ms | TFLOP/s |", "|" + " --- |" * 6]
    for (d, L), r in sorted(dense.items()):
        lines.append(f"| {d} | {L} | {r.get('flash_ms', float('nan')):.3f} | {r.get('flash_tflops', float('nan')):.0f} | "
                     f"{r.get('cudnn_ms', float('nan')):.3f} | {r.get('cudnn_tflops', float('nan')):.0f} |")
    lines += ["", "### Checks (max relative error over the cases; kernel that ran)", "",
              "| variant | ok | max err | kernels | repeat diff | error |", "|" + " --- |" * 6]
    for n in VARIANTS:
        if n not in checks:
            continue
        c = checks[n]
        errs = [x["err"] for x in c.get("checks", [])]
        kern = sorted({x["kernel"] for x in c.get("checks", [])})
        lines.append(f"| {n} | {c.get('ok')} | {max(errs) if errs else float('nan'):.2e} | {'/'.join(kern)} | "
                     f"{c.get('repeat_max_abs_diff', '')} | {c.get('error', '')} |")
    lines += ["", "### Density 1 (ms, TFLOP/s, x cuDNN)", ""]
    lengths = sorted({r["L"] for r in timing})
    lines += ["| variant | kernel | " + " | ".join(f"{L // 1024}K" for L in lengths) + " | error |",
              "|" + " --- |" * (len(lengths) + 3)]
    for n in VARIANTS:
        rows = {r["L"]: r for r in timing if r.get("variant") == n}
        if not rows:
            continue
        cells, errs, kern = [], [], ""
        for L in lengths:
            r = rows.get(L)
            if r is None:
                cells.append("")
                continue
            kern = r.get("kernel", kern)
            if "d1_ms" in r:
                cu = dense.get((r["d"], L), {}).get("cudnn_ms")
                x = f"{cu / r['d1_ms']:.3f}x" if cu else ""
                cells.append(f"{r['d1_ms']:.3f} / {r['d1_tflops']:.0f} / **{x}**")
            else:
                cells.append("-")
            if "error" in r:
                errs.append(f"{L}: {r['error']}")
        lines.append(f"| {n} | {kern} | " + " | ".join(cells) + f" | {'; '.join(errs)} |")
    props = [(r["variant"], r["prop"]) for r in timing if "prop" in r]
    if props:
        dens = list(props[0][1].keys())
        lines += ["", f"### Proportionality at L={args.prop_length}: time(d) / (d x time(1)), random block masks", "",
                  "| variant | " + " | ".join(f"d={x}" for x in dens) + " |", "|" + " --- |" * (len(dens) + 1)]
        for n, p in props:
            lines.append(f"| {n} | " + " | ".join(f"{p[x]['ratio']:.3f} ({p[x]['ms']:.2f} ms)" for x in dens) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("tune"))
    p.add_argument("--variants", nargs="*", default=None)
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 131072])
    p.add_argument("--d64-lengths", type=int, nargs="+", default=[32768])
    p.add_argument("--prop-length", type=int, default=32768)
    p.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.25, 0.5, 0.75])
    p.add_argument("--parallel", type=int, default=8)
    p.add_argument("--check-timeout", type=int, default=240)
    p.add_argument("--item-timeout", type=int, default=90)
    p.add_argument("--budget-s", type=int, default=480, help="stop starting work after this many seconds")
    p.add_argument("--wait-pid", type=int, default=None,
                   help="before timing, wait (at most --wait-max s) for this process (e.g. a GPU test run) to end")
    p.add_argument("--wait-max", type=int, default=170)
    p.add_argument("--check-one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.check_one:
        try:
            res = check_variant(args.check_one)
        except Exception as err:
            import traceback

            traceback.print_exc()
            res = {"variant": args.check_one, "ok": False,
                   "error": f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:300] if str(err).strip() else ''}"}
        print("RESULT " + json.dumps(res), flush=True)
        return
    if args.worker:
        spec = json.loads(Path(args.worker[0]).read_text())
        worker(spec["items"], None, spec["prop_length"], spec["densities"], args.worker[1])
        return

    t_start = time.time()
    deadline = t_start + args.budget_s
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log = open(str(args.out) + ".log", "w", buffering=1)
    env = {"command": " ".join(["python3", "benchmarks/kernel/tune.py"] + (argv or sys.argv[1:]))}
    probe = subprocess.run([sys.executable, "-c", (
        "import json, torch, triton; ok = True; cuda = torch.cuda.is_available()\n"
        "try:\n import unisparse.kernels.block_sparse_gluon\n"
        "except Exception as e: ok = repr(e)\n"
        "print(json.dumps({'gpu': torch.cuda.get_device_name() if cuda else 'cpu', 'torch': torch.__version__,"
        " 'triton': triton.__version__, 'gluon_import': ok,"
        " 'sms': torch.cuda.get_device_properties(0).multi_processor_count if cuda else 0}))")],
        capture_output=True, text=True)
    env.update(json.loads(probe.stdout.strip().splitlines()[-1]) if probe.returncode == 0 else {"probe_error": probe.stderr[-500:]})
    print(json.dumps(env), flush=True)

    names = [n for n in VARIANTS if not args.variants or n in args.variants]
    checks = run_checks(names, args.parallel, args.check_timeout, log)
    print(f"checks done at {time.time() - t_start:.0f} s", flush=True)
    for n in names:
        c = checks[n]
        print(n, "OK" if c.get("ok") else "FAIL", [(x["case"], x["kernel"], f"{x['err']:.2e}") for x in c.get("checks", [])],
              c.get("error", ""), flush=True)

    if args.wait_pid:
        t_wait = time.time()
        while time.time() - t_wait < args.wait_max:
            try:
                os.kill(args.wait_pid, 0)
            except OSError:
                break
            time.sleep(1)
        env["waited_for_pid_s"] = time.time() - t_wait
        print(f"waited {env['waited_for_pid_s']:.0f} s for pid {args.wait_pid}", flush=True)

    items = []
    ds = sorted({VARIANTS[n][0] for n in names})
    for d in ds:
        for L in (args.lengths if d == 128 else args.d64_lengths):
            items.append({"kind": "dense", "d": d, "L": L})
    for n in names:
        if checks[n].get("ok"):
            d = VARIANTS[n][0]
            for L in (args.lengths if d == 128 else args.d64_lengths):
                items.append({"kind": "variant", "variant": n, "d": d, "L": L})
    jsonl = Path(str(args.out) + ".jsonl")
    if jsonl.exists():
        jsonl.unlink()
    timing = run_timing(items, args, jsonl, log, deadline)
    env["elapsed_s"] = time.time() - t_start
    md = report(args, env, checks, timing)
    Path(str(args.out) + ".md").write_text(md)
    Path(str(args.out) + ".json").write_text(json.dumps({"env": env, "checks": checks, "timing": timing}, indent=1))
    print(md, flush=True)


if __name__ == "__main__":
    main()
