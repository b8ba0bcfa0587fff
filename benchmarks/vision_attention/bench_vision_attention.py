"""Time Qwen2-VL's vision tower with transformers' per-frame attention loop against videoqa's batched SDPA.

Side by side in one process, same weights and inputs; forward (serving) and forward + backward
(training). The tower is the default model's (`videoqa/assets/default_model`'s config, 4 layers, width
192) unless --config names another Qwen2-VL directory; weights are random (the timing does not
depend on them). Writes a markdown table (--output) as well as printing it.

    python benchmarks/vision_attention/bench_vision_attention.py --device cuda --output benchmarks/vision_attention/vision_attention_h200.md
    OMP_NUM_THREADS=2 python benchmarks/vision_attention/bench_vision_attention.py --device cpu --cases serve-64 needle-4
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import torch

from videoqa.assets import DEFAULT_MODEL_DIR


from videoqa.vision_attention import batch_vision_attention

# name -> (grids (t, h, w) in patches, backward?): videos as served (224x224 frames: 16x16 patches) and
# training's needle batches (112x112 frames, 256 frames: 128 temporal patches; 20 per batch on the GPU)
CASES = {
    "serve-64": ([(32, 16, 16)], False),
    "serve-256": ([(128, 16, 16)], False),
    "serve-768": ([(384, 16, 16)], False),
    "needle-4": ([(128, 8, 8)] * 4, True),
    "needle-20": ([(128, 8, 8)] * 20, True),
    "mixed-batch": ([(1, 16, 12), (16, 12, 16), (128, 8, 8)], True),
}


def tower(config: str, device, dtype):
    from transformers import Qwen2VLConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    cfg = Qwen2VLConfig.from_pretrained(config).vision_config
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return Qwen2VisionTransformerPretrainedModel(cfg).to(device=device, dtype=dtype)


def timed(fn, device, repeats: int) -> float:
    fn()  # warm-up
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t) / repeats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_MODEL_DIR))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on the CPU")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--output")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    dtype = getattr(torch, a.dtype) if a.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    loop = tower(a.config, device, dtype)
    batched = copy.deepcopy(loop)
    batch_vision_attention(batched)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    rows = [f"Vision tower ({a.config}), {dtype}, {name}; mean of {a.repeats} after a warm-up.", "",
            "| case | frames | patches | pass | loop (ms) | batched (ms) | speedup |", "| --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(rows), flush=True)
    for case in a.cases:
        grids, backward = CASES[case]
        grid = torch.tensor(grids, device=device)
        n = int(grid.prod(-1).sum())
        x = torch.randn(n, loop.config.in_channels * 2 * 14 * 14, device=device, dtype=dtype)
        for mode in (["forward", "forward+backward"] if backward else ["forward"]):
            def run(m, mode=mode):
                if mode == "forward":
                    with torch.no_grad():
                        m(x, grid_thw=grid)
                else:
                    m.zero_grad(set_to_none=True)
                    m(x, grid_thw=grid).pooler_output.float().square().mean().backward()
            t0, t1 = timed(lambda: run(loop), device, a.repeats), timed(lambda: run(batched), device, a.repeats)
            frames = sum(2 * t for t, _, _ in grids)
            row = f"| {case} | {frames} | {n} | {mode} | {t0 * 1e3:.1f} | {t1 * 1e3:.1f} | {t0 / t1:.2f}x |"
            rows.append(row)
            print(row, flush=True)
    if a.output:
        Path(a.output).write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
