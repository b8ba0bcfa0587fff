"""Video-aware selection, counted in blocks: how many blocks each order keeps, against the exact oracle.

For each input family, at one Top-P, per KV head (the query heads that share it share its order):

* ``unisparse_frame``: UniSparse's kept blocks in the prompt's order (what runs without a layout);
* ``unisparse_video``: video-aware UniSparse (:func:`unisparse.select_blocks_in_layout`): per KV
  head the order, frame or spatial, whose Top-P keeps fewer blocks;
* ``oracle_frame`` / ``oracle_spatial``: Top-P on the **exact** attention mass per block in that
  order (the same forced blocks), and ``oracle_best``: per KV head the better of the two;
* ``recall``: the exact attention mass the kept blocks cover, averaged over query rows.

Blocks are counted in units of the frame order's causal block count (in the spatial order, blocks
above the diagonal hold visible pairs too and cost the same work). The exact mass is computed in
float32 with causality by original positions, query rows a chunk at a time (CPU is fine: no
timing here besides the selection cost, reported in milliseconds of the device it ran on; with
``--device cuda`` the selection runs the Triton kernels, so its milliseconds are GPU ones).

Families: ``video_qkv`` (unisparse.testing) frames of 256 tokens with grid, local and sink heads
(``mixed``, the one the issue measured) or grid heads only (``grid``); held out (never tuned on):
frames of 144 tokens with another head mix (``mixed_144``) and frames of 400 tokens mostly grid
(``grid_400``); ``structured`` (``structured_qkv``, attention with no video structure, given a
pretend layout: the choice must keep the frame order); and ``captured`` (the trained default
model's own queries and keys from ``capture_default_qk.py``, per layer).

  python benchmarks/attention/video_orders.py --seq-len 16384 --heads 28 4 --out benchmarks/attention/video_orders
  python benchmarks/attention/video_orders.py --captured /tmp/default_qk.pt --out benchmarks/attention/video_orders
  python benchmarks/attention/video_orders.py --seq-len 32768 65536 --device cuda --tag h200 --out $OUT/video_orders
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from unisparse import UniSparseConfig, masks, reordered
from unisparse.recording import device_clock
from unisparse.api import select_blocks, select_blocks_in_layout
from unisparse.layout import ORDERS, VideoLayout, VideoSpan, inverse, token_order
from unisparse.testing import structured_qkv, video_qkv

# "At matched recall": UniSparse's Top-P lowered along this grid until its recall of the exact mass
# would fall below MATCH_RECALL (the estimator over-recalls at a given Top-P: 0.97-0.99 at 0.95).
MATCH_GRID = (0.8, 0.85, 0.9, 0.95)
MATCH_RECALL = 0.95

SYNTHETIC = {
    # name: (frame side in merged tokens, head mix, held out)
    "mixed": (16, {"grid": 1, "local": 1, "sink": 1}, False),
    "grid": (16, {"grid": 1}, False),
    "mixed_144": (12, {"grid": 1, "local": 2, "sink": 1}, True),
    "grid_400": (20, {"grid": 3, "local": 1}, True),
}


def exact_block_mass(q: torch.Tensor, k: torch.Tensor, orders: torch.Tensor, block_size: int,
                     chunk: int = 2048) -> torch.Tensor:
    """float64 ``[O, Hq, nb, nb]``: exact causal attention mass (by original positions) per block of each order.

    ``q [Hq, L, D]``, ``k [Hkv, L, D]`` (one batch row)."""
    hq, seq_len, d = q.shape
    group = hq // k.shape[0]
    nb = -(-seq_len // block_size)
    dev = q.device
    blocks = torch.stack([inverse(o.to(dev)) // block_size for o in orders])  # [O, L]: block of each original position
    onehot = [torch.nn.functional.one_hot(b, nb).float() for b in blocks]  # [L, nb]
    out = torch.zeros(len(orders), hq, nb, nb, dtype=torch.float64, device=dev)
    scale = 1.0 / math.sqrt(d)
    cols = torch.arange(seq_len, device=dev)
    for h in range(hq):
        kh = k[h // group].float()
        for r0 in range(0, seq_len, chunk):
            rows = torch.arange(r0, min(seq_len, r0 + chunk), device=dev)
            logits = (q[h, rows].float() @ kh.t()) * scale
            logits.masked_fill_(cols[None, :] > rows[:, None], float("-inf"))
            probs = torch.softmax(logits, -1)
            for o in range(len(orders)):
                out[o, h].index_add_(0, blocks[o, rows], (probs @ onehot[o]).double())
    return out


def oracle_mask(mass: torch.Tensor, order: torch.Tensor, config: UniSparseConfig) -> torch.Tensor:
    """Top-P on the exact block mass of one order (``[Hq, nb, nb]``), the forced blocks as UniSparse forces them."""
    return masks.top_p_mask(mass.float(), config.top_p, sink_blocks=config.sink_blocks,
                            local_blocks=config.local_blocks,
                            visible=reordered.visible_blocks(order, config.block_size))


def per_kv(x: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """``[Hq, ...]`` kept-block counts summed over each KV head's query heads: ``[Hkv]``."""
    return x.flatten(1).sum(-1).view(kv_heads, -1).sum(-1)


def measure(q, k, layout: VideoLayout, config: UniSparseConfig, backend: str = "torch") -> dict:
    """Every count of the module docstring for one input (``q [1, Hq, L, D]``, ``k [1, Hkv, L, D]``)."""
    seq_len, hkv = q.shape[2], k.shape[1]
    nb = -(-seq_len // config.block_size)
    causal = nb * (nb + 1) // 2
    orders = torch.stack([token_order(seq_len, layout, n, q.device) for n in ORDERS])
    mass = exact_block_mass(q[0], k[0], orders, config.block_size)  # [O, Hq, nb, nb]
    hq = q.shape[1]

    def recall(mask, head_orders):  # mean over heads and rows of the exact mass the kept blocks cover
        covered = sum(float((mass[o, h] * mask[h].to(mass.device).double()).sum()) for h, o in enumerate(head_orders))
        return covered / (hq * seq_len)

    select_blocks(q, k, config, backend=backend), select_blocks_in_layout(q, k, layout, config, backend=backend)  # warm-up
    t0 = device_clock(q.device)
    frame = select_blocks(q, k, config, backend=backend)[0]
    t1 = device_clock(q.device)
    sel = select_blocks_in_layout(q, k, layout, config, backend=backend)
    t2 = device_clock(q.device)
    video = sel.mask[0]
    oracle = [oracle_mask(mass[o], orders[o], config) for o in range(len(ORDERS))]
    oracle_kv = torch.stack([per_kv(m, hkv) for m in oracle])  # [O, Hkv]
    best = oracle_kv.min(0).values
    best_choice = oracle_kv.argmin(0)
    unit = causal * hq
    matched = {}
    for name in ("frame", "video"):  # the lowest Top-P of the grid whose recall still reaches the target
        for top_p in sorted(MATCH_GRID):
            cfg = config.replace(top_p=top_p)
            if name == "frame":
                m, heads = select_blocks(q, k, cfg, backend=backend)[0], [0] * hq
            else:
                s = select_blocks_in_layout(q, k, layout, cfg, backend=backend)
                m, heads = s.mask[0], s.order_of_heads()[0].tolist()
            if recall(m, heads) >= MATCH_RECALL or top_p == max(MATCH_GRID):
                matched[name] = (float(m.sum()) / unit, top_p, recall(m, heads))
                break
    return {
        "seq_len": seq_len, "q_heads": hq, "kv_heads": hkv, "blocks": nb, "top_p": config.top_p,
        "unisparse_frame": float(frame.sum()) / unit, "unisparse_frame_recall": recall(frame, [0] * hq),
        "unisparse_video": float(video.sum()) / unit, "unisparse_video_recall": recall(video, sel.order_of_heads()[0].tolist()),
        "spatial_kv_heads": int((sel.choice[0] == 1).sum()),
        "oracle_frame": float(oracle[0].sum()) / unit, "oracle_frame_recall": recall(oracle[0], [0] * hq),
        "oracle_spatial": float(oracle[1].sum()) / unit, "oracle_spatial_recall": recall(oracle[1], [1] * hq),
        "oracle_best": float(best.sum()) / unit, "oracle_best_spatial_kv_heads": int((best_choice == 1).sum()),
        "video_over_oracle_best": float(video.sum()) / max(1.0, float(best.sum())),
        "ms_select_frame": 1e3 * (t1 - t0), "ms_select_video": 1e3 * (t2 - t1), "device": str(q.device),
        "matched_frame": matched["frame"], "matched_video": matched["video"],
        "matched_video_over_oracle_best": matched["video"][0] * unit / max(1.0, float(best.sum())),
    }


def synthetic(name: str, seq_len: int, hq: int, hkv: int, d: int, seed: int):
    """``(q, k, layout)`` of a synthetic family."""
    if name == "structured":
        q, k, _ = structured_qkv(1, hq, hkv, seq_len, d, seed=seed)
        side = 16  # a pretend video of 256-token frames over the middle of the sequence
        frames = (seq_len - 64) // (side * side)
        return q, k, VideoLayout((VideoSpan.contiguous(32, frames, side, side),))
    side, mix, _ = SYNTHETIC[name]
    q, k, _, info = video_qkv(1, hq, hkv, seq_len, d, frame_tokens=side * side, head_mix=mix, seed=seed,
                              return_layout=True)
    return q, k, VideoLayout((VideoSpan.contiguous(info["video_start"], info["frames"], side, side),))


def captured_inputs(path: Path):
    """``[(layer, q, k, layout)]`` from a ``capture_default_qk.py`` file."""
    data = torch.load(path, weights_only=False)
    spans = tuple(VideoSpan(tuple(s["frame_starts"]), s["height"], s["width"]) for s in data["layout"])
    layout = VideoLayout(spans)
    out = []
    for layer in sorted(data["layers"]):
        entry = data["layers"][layer]
        q, k = entry["q"].float(), entry["k"].float()
        if q.shape[1] % k.shape[1]:
            raise ValueError(f"layer {layer}: {q.shape[1]} captured query heads for {k.shape[1]} KV heads; capture "
                             "every query head or one per KV head")
        out.append((layer, q, k, layout))
    return out, data


def figure(path: Path, seq_len: int, d: int, config: UniSparseConfig, seed: int) -> None:
    """One grid head's UniSparse blocks in the frame order and in the spatial order, side by side (PNG)."""
    from matplotlib.figure import Figure

    q, k, layout = synthetic("grid", seq_len, 1, 1, d, seed)
    fig = Figure(figsize=(10, 5.2), layout="constrained")
    axes = fig.subplots(1, 2)
    nb = -(-seq_len // config.block_size)
    causal = nb * (nb + 1) // 2
    for ax, name in zip(axes, ORDERS):
        order = token_order(seq_len, layout, name)
        mask = reordered.order_mask(q, k, config, order)[0, 0]
        ax.imshow(mask.float().numpy(), cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest")
        ax.set_title(f"{name} order: {mask.sum().item() / causal:.1%} of the causal blocks", fontsize=10)
        ax.set_xlabel(f"key block ({config.block_size} tokens, {name} order)")
        ax.set_ylabel("query block")
    fig.suptitle(f"One grid head (video_qkv, frames of 256 tokens, {seq_len} tokens), UniSparse Top-P {config.top_p}",
                 fontsize=11)
    fig.savefig(path, dpi=110)


def table(rows: list[dict], key: str) -> str:
    head = ("| {k} | L | UniSparse frame | UniSparse video-aware | spatial KV heads | oracle frame | oracle spatial | "
            "oracle best | video-aware / oracle best | recall frame / video-aware | at recall >= 0.95: frame (top_p) | "
            "video-aware (top_p) | / oracle best | ms select frame / video |")
    lines = [head.format(k=key), "|" + " --- |" * 14]
    for r in rows:
        lines.append(
            f"| {r[key]} | {r['seq_len']} | {r['unisparse_frame']:.3f} | {r['unisparse_video']:.3f} | "
            f"{r['spatial_kv_heads']}/{r['kv_heads']} | {r['oracle_frame']:.3f} | {r['oracle_spatial']:.3f} | "
            f"{r['oracle_best']:.3f} | {r['video_over_oracle_best']:.2f} | "
            f"{r['unisparse_frame_recall']:.3f} / {r['unisparse_video_recall']:.3f} | "
            f"{r['matched_frame'][0]:.3f} ({r['matched_frame'][1]}) | {r['matched_video'][0]:.3f} "
            f"({r['matched_video'][1]}) | {r['matched_video_over_oracle_best']:.2f} | "
            f"{r['ms_select_frame']:.1f} / {r['ms_select_video']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="*", default=[*SYNTHETIC, "structured"])
    p.add_argument("--seq-len", type=int, nargs="+", default=[16384])
    p.add_argument("--heads", type=int, nargs=2, default=[28, 4], metavar=("HQ", "HKV"))
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--captured", type=Path, default=None, help="a capture_default_qk.py file: per-layer rows")
    p.add_argument("--out", type=Path, required=True, help="folder for the JSON and markdown results")
    p.add_argument("--tag", default="cpu")
    p.add_argument("--device", default="cpu", help="cuda: the exact mass on the GPU and the selection on Triton")
    p.add_argument("--order-cost", type=float, default=1.0, help="UniSparseConfig.order_cost of the video-aware choice")
    p.add_argument("--figure", type=Path, default=None, help="also draw one grid head in both orders (PNG)")
    args = p.parse_args(argv)
    # the choice by block count (order_cost 1), as the oracle's: it knows no kernel costs
    config = UniSparseConfig(top_p=args.top_p, min_seq_len=0, order_cost=args.order_cost)
    device = torch.device(args.device)
    backend = "torch" if device.type == "cpu" else "auto"
    args.out.mkdir(parents=True, exist_ok=True)
    if args.figure is not None:
        figure(args.figure, args.seq_len[0], args.head_dim, config, args.seed)
    results = {"top_p": args.top_p, "config": str(config), "rows": []}
    if args.captured is not None:
        inputs, data = captured_inputs(args.captured)
        results["captured"] = {k: data[k] for k in ("seq_len", "visual_tokens", "video_grid_thw", "frames", "model")}
        for layer, q, k, layout in inputs:
            row = {"layer": layer, **measure(q.to(device), k.to(device), layout, config, backend)}
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
        name = f"captured_{args.tag}"
        md = table(results["rows"], "layer")
    else:
        hq, hkv = args.heads
        for seq_len in args.seq_len:
            for fam in args.families:
                q, k, layout = synthetic(fam, seq_len, hq, hkv, args.head_dim, args.seed)
                if device.type == "cuda":
                    q, k = q.to(device, torch.bfloat16), k.to(device, torch.bfloat16)
                row = {"family": fam + (" (held out)" if fam in SYNTHETIC and SYNTHETIC[fam][2] else ""),
                       **measure(q, k, layout, config, backend)}
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
        name = f"synthetic_{args.tag}"
        md = table(results["rows"], "family")
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=1))
    (args.out / f"{name}.md").write_text(f"Top-P {args.top_p}; blocks in units of the frame order's causal block "
                                         f"count; command: python {' '.join(['benchmarks/attention/video_orders.py', *(argv or sys.argv[1:])])}\n\n{md}\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
