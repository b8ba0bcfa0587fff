"""Compare the block selectors on structured inputs: density and recalled true attention mass.

For each selector and threshold, on one attention call with real structure
(``unisparse.testing.structured_qkv``: sinks, a local band, vertical stripes, retrieval), prints:

* density: kept blocks / causal blocks;
* recall: the true attention mass inside the kept blocks, averaged over heads and query blocks
  (1.0 = nothing lost);
* best@same: the most mass any selection could keep with the same number of blocks in each
  query-block row (the true mass's top blocks), so ``recall / best@same`` is the quality of the
  ranking at that budget, whatever the budget rule;
* seconds of selection on this machine (CPU timings say little about a GPU).

Saves one head's masks side by side with ``--plot``. Runs on CPU in a minute or two:

    python benchmarks/fidelity/compare_selectors.py --plot benchmarks/selectors_4k.png
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from unisparse.api import block_density
from unisparse.reference import true_block_mass
from unisparse.selectors import make_selector, save_mask_grid
from unisparse.testing import structured_qkv

# (selector, parameter sets): each peer as its authors run it, swept over its threshold.
GRID = [
    ("dense", [{}]),
    ("oracle", [{"top_p": p} for p in (0.9, 0.95, 0.98)]),
    ("unisparse", [{"top_p": p} for p in (0.9, 0.95, 0.98)]),
    ("xattention", [{"stride": s, "threshold": t} for s in (16, 8) for t in (0.9, 0.95)]),
    ("flexprefill", [{"gamma": g, "min_budget": m} for m in (1024, 512) for g in (0.9, 0.95)]),
    # their default head config (1000, 6096), then smaller budgets at the same 1:6.096 ratio (down
    # to their floor of 30 columns): at block granularity every kept diagonal lights a whole band
    ("minference", [{"vertical_size": v, "slash_size": int(v * 6.096)} for v in (1000, 250, 100, 50, 30)]),
]
PLOTTED = {  # one setting per selector for the picture
    "dense": {},
    "oracle": {"top_p": 0.95},
    "unisparse": {"top_p": 0.95},
    "xattention": {"stride": 16, "threshold": 0.9},
    "flexprefill": {"gamma": 0.9, "min_budget": 1024},
    "minference": {"vertical_size": 30, "slash_size": 182},
}


def best_at_same_budget(mass: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over rows of the largest mass reachable with as many blocks as ``mask`` keeps there."""
    nb = mass.shape[-1]
    causal = torch.ones(nb, nb, dtype=torch.bool, device=mass.device).tril()
    counts = (mask & causal).sum(-1, keepdim=True)
    top = torch.sort(mass, dim=-1, descending=True).values
    ranks = torch.arange(nb, device=mass.device)
    return float((top * (ranks < counts)).sum(-1).mean())


def label(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--q-heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plot", default=None, help="PNG path for one head's masks")
    parser.add_argument("--plot-head", type=int, default=0)
    args = parser.parse_args(argv)

    q, k, _ = structured_qkv(1, args.q_heads, args.kv_heads, args.seq_len, args.head_dim,
                             seed=args.seed, device=args.device)
    bs = args.block_size
    mass = true_block_mass(q, k, bs)
    print(f"# structured_qkv(B=1, Hq={args.q_heads}, Hkv={args.kv_heads}, L={args.seq_len}, D={args.head_dim}, "
          f"seed={args.seed}), block_size={bs}, device={args.device}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}")
    print("# " + " ".join(sys.argv))
    print()
    print("| selector | parameters | density | recall | best@same | recall/best | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    plotted = {}
    for name, settings in GRID:
        for params in settings:
            selector = make_selector(name, block_size=bs, **params)
            start = time.perf_counter()
            mask = selector(q, k)
            seconds = time.perf_counter() - start
            density = block_density(mask)
            recall = float((mass * mask).sum(-1).mean())
            best = best_at_same_budget(mass, mask)
            print(f"| {name} | {label(params)} | {density:.3f} | {recall:.4f} | {best:.4f} | "
                  f"{recall / best:.4f} | {seconds:.2f} |", flush=True)
            if PLOTTED.get(name) == params:
                plotted[f"{name}\n{label(params)}"] = mask[0, args.plot_head].cpu()
    if args.plot:
        save_mask_grid(plotted, args.plot, block_size=bs, columns=3,
                       suptitle=f"head {args.plot_head}, structured input, L={args.seq_len}")
        print(f"\nsaved {args.plot}")


if __name__ == "__main__":
    main()
