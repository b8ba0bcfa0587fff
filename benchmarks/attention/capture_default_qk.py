"""Capture the trained default model's own queries and keys over a long video, for the attention benchmarks.

The embedded default model (SmolLM2-135M inside Qwen2-VL, a small trained tower) is the one trained
video model whose attention can be had here. This runs its prefill on a generated test-pattern
video (moving coloured bars and shapes over a gradient, 448x252 frames: 144 visual tokens per
temporal patch of two frames) and keeps, for a few layers, the post-RoPE queries and keys that
its attention receives (bfloat16; values are not needed for selection or timing). The forward
stops after the last captured layer. Runs on the CPU (about 2-4 minutes at 16K tokens on 2 cores);
the output travels to the GPU machine, where ``bench_families.py`` tiles it to Qwen2-VL-7B's
head layout.

  python benchmarks/attention/capture_default_qk.py --frames 224 --layers 8 22 --output out/default_qk.pt
  python benchmarks/attention/capture_default_qk.py --frames 224 --layers all --output out/default_qk_all.pt

The file also holds the video's layout (``layout``: each span's patch starts and merged height and
width), for ``video_orders.py``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch


class Captured(Exception):
    """Raised from inside the model once every wanted layer is captured (no need to run the rest)."""


def test_pattern(frames: int, height: int = 252, width: int = 448, seed: int = 0) -> torch.Tensor:
    """uint8 ``[T, 3, H, W]``: a slowly shifting gradient, three bars moving at different speeds, a
    square that changes colour every 16 frames, and a little noise (so no two frames are equal)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(frames, dtype=torch.float32)[:, None, None]
    y = torch.linspace(0, 1, height)[None, :, None]
    x = torch.linspace(0, 1, width)[None, None, :]
    r = 0.5 + 0.4 * torch.sin(2 * math.pi * (x + 0.01 * t))
    g = 0.5 + 0.4 * torch.cos(2 * math.pi * (y + 0.007 * t))
    b = 0.5 + 0.3 * torch.sin(2 * math.pi * (x + y - 0.005 * t))
    img = torch.stack([r.expand(frames, height, width), g.expand(frames, height, width),
                       b.expand(frames, height, width)], 1)
    for i, (speed, colour) in enumerate(((3, (1.0, 0.1, 0.1)), (5, (0.1, 0.9, 0.1)), (8, (0.1, 0.2, 1.0)))):
        for f in range(frames):
            x0 = int((f * speed + 90 * i) % (width - 24))
            img[f, :, 40 + 70 * i: 70 + 70 * i, x0: x0 + 24] = torch.tensor(colour)[:, None, None]
    palette = torch.rand(frames // 16 + 1, 3, generator=gen)
    for f in range(frames):
        img[f, :, 180:230, 200:250] = palette[f // 16][:, None, None]
    img = img + 0.03 * torch.randn(img.shape, generator=gen)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=224, help="even; 144 tokens per two frames")
    p.add_argument("--layers", nargs="+", default=["8", "22"], help="layer indices, or 'all'")
    p.add_argument("--query-heads", type=int, nargs="*", default=None,
                   help="query heads to keep (default: one per KV head, the first of each group)")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from videoqa.models import load_model
    from videoqa.prompt import build_inputs

    loaded = load_model(None, device="cpu", dtype=torch.float32)
    frames = test_pattern(args.frames)
    prepared = build_inputs(loaded.processor, frames, "Describe what happens in this video.", sample_fps=2.0)
    n_layers = loaded.model.config.text_config.num_hidden_layers
    wanted = set(range(n_layers)) if args.layers == ["all"] else {int(x) for x in args.layers}
    got = {}

    def capture(module, query, key, value, attention_mask, **kwargs):
        layer = getattr(module, "layer_idx", None)
        if layer in wanted and query.shape[2] == key.shape[2]:
            group = query.shape[1] // key.shape[1]
            heads = args.query_heads if args.query_heads is not None else list(range(0, query.shape[1], group))
            got[layer] = {"q": query[:, heads].to(torch.bfloat16).clone(), "k": key.to(torch.bfloat16).clone(),
                          "q_heads": heads, "group": group}
            print(f"layer {layer}: q {tuple(query.shape)} k {tuple(key.shape)}", flush=True)
            if set(got) == wanted:
                raise Captured
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("capture_qk", capture)
    loaded.model.set_attn_implementation({"text_config": "capture_qk"})
    try:
        with torch.inference_mode():
            loaded.model(**prepared.inputs)
    except Captured:
        pass
    args.output.parent.mkdir(parents=True, exist_ok=True)
    from unisparse import layout_from_inputs

    layout = layout_from_inputs(prepared.inputs["input_ids"], merge_size=loaded.processor.spec.merge_size,
                                video_token_id=loaded.processor.video_token_id, video_grid_thw=[list(prepared.grid_thw)])
    spans = [{"frame_starts": list(s.frame_starts), "height": s.height, "width": s.width} for s in layout.spans]
    torch.save({"layers": got, "layout": spans, "seq_len": prepared.num_tokens, "visual_tokens": prepared.visual_tokens,
                "video_grid_thw": [int(v) for v in prepared.grid_thw], "frames": args.frames,
                "model": loaded.name, "head_dim": int(next(iter(got.values()))["k"].shape[-1])}, args.output)
    print(f"wrote {args.output}: {prepared.num_tokens} tokens ({prepared.visual_tokens} visual), layers {sorted(got)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
