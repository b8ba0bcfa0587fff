"""Compile kernel variants for sm_90 on a machine without a GPU and report their resources.

Needs Triton 3.6 (the device machine's version) importable, e.g. a venv made with
``python3 -m venv /tmp/t36 && /tmp/t36/bin/pip install triton==3.6.0``, and torch:

  PYTHONPATH=/tmp/t36/lib/python3.11/site-packages:/work/kernel:/work/main/.venv/lib/python3.11/site-packages \
      /tmp/t36/bin/python benchmarks/kernel/compile_check.py [--dump DIR]

Prints, per Gluon variant: registers, spills (from ptxas), shared memory, wgmma count, and whether
the loop issues the next score product before waiting for the previous PV product.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon  # noqa: F401
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource

from unisparse.kernels import block_sparse_gluon as G

CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def desc_sig(dt, rows, d):
    block = [1, 1, rows, d]
    lay = gl.NVMMASharedLayout.get_default_for(block, dt)
    return f"tensordesc<{'bf16' if dt == gl.bfloat16 else 'fp16'}[{', '.join(map(str, block))}],{lay!r}>"


def compile_gluon(block_m, block_n, d, warps, stages, overlap, block_size=128, dt=gl.bfloat16, ws=None, pers=False,
                  ordered=False):
    rows = block_m // 2 if ws is not None else block_m
    sig = {"q_desc": desc_sig(dt, rows, d), "k_desc": desc_sig(dt, block_n, d),
           "v_desc": desc_sig(dt, block_n, d), "o_desc": desc_sig(dt, rows, d),
           "idx_ptr": "*i32", "cnt_ptr": "*i32"}
    for n in ("stride_ib", "stride_ih", "stride_im", "stride_cb", "stride_ch", "seq_len", "heads",
              "q_per_kv_head", "q_per_mask_head"):
        sig[n] = "i32"
    sig["qk_scale"] = "fp32"
    if pers:
        sig["n_m"] = sig["n_tiles"] = "i32"
        const = {"BLOCK_SIZE": block_size, "NUM_STAGES": stages, "PINGPONG": ws, "num_warps": 4}
        sig.update({k: "constexpr" for k in const})
        src = GluonASTSource(G._gluon_pws_kernel, sig, constexprs=const)
        return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "maxnreg": 168})
    if ws is not None:  # ws = pingpong flag; ordered: video-aware selection's reordered mode
        sig.update({"pos_ptr": "*i32", "stride_pb": "i32", "stride_ph": "i32"})
        const = {"BLOCK_SIZE": block_size, "NUM_STAGES": stages, "PINGPONG": ws, "ORDERED": ordered, "num_warps": 4}
        sig.update({k: "constexpr" for k in const})
        src = GluonASTSource(G._gluon_ws_kernel, sig, constexprs=const)
        return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "maxnreg": 168})
    const = {"BLOCK_SIZE": block_size, "NUM_STAGES": stages, "OVERLAP": overlap, "num_warps": warps}
    sig.update({k: "constexpr" for k in const})
    src = GluonASTSource(G._gluon_fwd_kernel, sig, constexprs=const)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})


def resources(kernel):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        res = subprocess.run([str(CUOBJDUMP), "-res-usage", f.name], capture_output=True, text=True).stdout
    regs = re.search(r"REG:(\d+)", res)
    stack = re.search(r"STACK:(\d+)", res)
    local = re.search(r"LOCAL:(\d+)", res)
    return int(regs.group(1)), int(stack.group(1)), int(local.group(1))


VARIANTS = [  # block_m, block_n, head_dim, warps, stages, overlap[, ws pingpong[, persistent[, ordered]]]
    (128, 128, 128, 12, 2, True, False, False, True),
    (128, 128, 64, 12, 2, True, False, False, True),
    (128, 128, 128, 12, 2, True, True, True),
    (128, 128, 128, 12, 2, True, False, True),
    (128, 128, 64, 12, 3, True, True, True),
    (128, 128, 64, 12, 4, True, False, True),
    (128, 128, 128, 12, 2, True, False),
    (128, 128, 128, 12, 2, True, True),
    (128, 128, 128, 12, 3, True, False),
    (128, 128, 64, 12, 3, True, False),
    (128, 128, 128, 8, 2, True),
    (128, 128, 128, 8, 2, False),
    (128, 64, 128, 8, 3, True),
    (64, 64, 128, 4, 3, True),
    (64, 128, 128, 4, 2, True),
    (128, 128, 64, 8, 3, True),
    (128, 128, 64, 8, 2, True),
    (64, 128, 64, 4, 3, True),
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dump", type=Path, default=None, help="write ttgir/ptx per variant here")
    args = p.parse_args()
    print("| bm | bn | d | warps | stages | overlap | regs | stack | shared KB | wgmma | bar.sync | error |")
    print("|" + " --- |" * 12)
    for bm, bn, d, w, s, ov, *ws in VARIANTS:
        try:
            k = compile_gluon(bm, bn, d, w, s, ov, ws=ws[0] if ws else None, pers=len(ws) > 1 and ws[1],
                              ordered=len(ws) > 2 and ws[2])
            regs, stack, _ = resources(k)
            ptx = k.asm["ptx"]
            row = [regs, stack, f"{k.metadata.shared / 1024:.1f}", len(re.findall(r"wgmma.mma_async", ptx)),
                   len(re.findall(r"bar.sync|barrier.sync", ptx)), ""]
            if args.dump:
                args.dump.mkdir(parents=True, exist_ok=True)
                stem = f"g_{bm}x{bn}_d{d}_w{w}_s{s}_{'ov' if ov else 'plain'}{'_ws' if ws else ''}{'pp' if ws and ws[0] else ''}{'_pers' if len(ws) > 1 and ws[1] else ''}{'_ord' if len(ws) > 2 and ws[2] else ''}"
                (args.dump / f"{stem}.ttgir").write_text(k.asm["ttgir"])
                (args.dump / f"{stem}.ptx").write_text(ptx)
        except Exception as err:  # report, go on
            row = ["", "", "", "", "", f"{type(err).__name__}: {str(err).strip().splitlines()[-1][:200] if str(err).strip() else ''}"]
        print("| " + " | ".join(map(str, [bm, bn, d, w, s, ov] + row)) + " |", flush=True)


if __name__ == "__main__":
    main()
