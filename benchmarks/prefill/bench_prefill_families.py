"""Prefill of each supported video family at its real shape, dense (SDPA) vs UniSparse, on one GPU.

Real weights cannot be downloaded here, so each model is its published architecture with random
weights in bf16: Qwen2-VL-7B, Qwen2.5-VL-7B, Qwen3-VL-8B, and Qwen3.5 at transformers'
``Qwen3_5Config()`` defaults (32 layers of which 8 are full attention, 16 query / 4 KV heads of
256; the other 24 are Gated DeltaNet layers that UniSparse leaves alone). The MoE variants share
these families' attention and prompt code and are not timed.

The prompt is built by the pipeline itself (:func:`videoqa.pipeline.model_inputs`: chat template,
the family's video layout, Qwen3's per-patch timestamps), from ``T`` synthetic frames of
``(32 * patch)^2`` pixels, 256 merged tokens per temporal patch in every family, so each length
holds the same number of visual tokens everywhere; nothing is decoded. Per family and length:

* ``vision s``: the vision tower alone; ``dense s``: the whole prefill forward (``logits_to_keep=1``,
  no cache) with SDPA;
* ``UniSparse``: the same with UniSparse in the prompt's order (``video_aware=False``), and
  ``video-aware``: with the video layout the pipeline passes (per KV head, frame or spatial
  order), here at every length (``video_aware_min_len=0``; the library's default applies it from
  64K tokens). Both with ``min_seq_len=0`` (sparse at every length) and the break-even fallback;
* density (mean over the sparse layers), KV heads that moved to the spatial order, logits' relative
  error against dense and whether the top-1 token agrees.

Random weights give nearly unstructured attention: read the speed-ups as what each architecture gets
at the density shown, not what a trained model gets on real video.

  python benchmarks/prefill/bench_prefill_families.py --visual-tokens 16384 32768 65536 --output $OUT/prefill_families
  python benchmarks/prefill/bench_prefill_families.py --smoke     # tiny shapes on the CPU: checks the script only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from unisparse.recording import device_clock

# Text and vision settings of each family's real checkpoint (config.json of the published model).
SHAPES = {
    "qwen2_vl": dict(
        label="Qwen2-VL-7B",
        text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                  num_attention_heads=28, num_key_value_heads=4,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision=dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4)),
    "qwen2_5_vl": dict(
        label="Qwen2.5-VL-7B",
        text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                  num_attention_heads=28, num_key_value_heads=4,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                    window_size=112, fullatt_block_indexes=[7, 15, 23, 31])),
    "qwen3_vl": dict(
        label="Qwen3-VL-8B",
        text=dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                  rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                                   "mrope_interleaved": True}),
        vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                    deepstack_visual_indexes=[8, 16, 24], num_position_embeddings=2304)),
    "qwen3_5": dict(
        label="Qwen3.5 (Qwen3_5Config defaults)",
        text=dict(),  # the config class's own defaults
        vision=dict()),
}
TINY = dict(text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=32),
            vision=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=128))


def build(model_type: str, device: str, smoke: bool):
    """``videoqa.models.LoadedModel`` of the family's shape (random weights) driven by the offline tokenizer."""
    import transformers

    from videoqa.models import LoadedModel, context_tokens
    from videoqa.models.families import family
    from videoqa.offline import offline_tokenizer
    from videoqa.processor import VideoQAProcessor

    fam = family(model_type)
    tok = offline_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                      "<|vision_end|>", "<|im_end|>")}
    shape = SHAPES[model_type]
    text, vision = dict(shape["text"]), dict(shape["vision"])
    if smoke:
        text.update(TINY["text"])
        vision = {**TINY["vision"], **{k: v for k, v in vision.items() if k in ("window_size",)}}
        if model_type == "qwen2_vl":
            vision = dict(depth=1, embed_dim=32, hidden_size=128, num_heads=2, mlp_ratio=2)
        if model_type == "qwen2_5_vl":
            vision["fullatt_block_indexes"] = [0]
        if model_type == "qwen3_vl":
            vision.update(deepstack_visual_indexes=[0], num_position_embeddings=64)
            text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [6, 5, 5],
                                       "mrope_interleaved": True}
        if model_type.startswith("qwen2"):
            text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [6, 5, 5]}
        if model_type == "qwen3_5":
            text.update(num_hidden_layers=4, layer_types=["linear_attention", "full_attention"] * 2,
                        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                        linear_value_head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                                   "partial_rotary_factor": 0.25,
                                                                   "mrope_section": [2, 1, 1], "mrope_interleaved": True})
            vision.update(num_position_embeddings=64)
    config_cls = transformers.AutoConfig.for_model(model_type).__class__
    base = config_cls().text_config
    text["vocab_size"] = max(text.get("vocab_size", base.vocab_size), len(tok))
    text.update(max_position_embeddings=max(262144, getattr(base, "max_position_embeddings", 0) or 0),
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|im_end|>"])
    vision.update(patch_size=fam.spec.patch_size, spatial_merge_size=2, temporal_patch_size=2)
    if "out_hidden_size" in config_cls().vision_config.to_dict():  # the merger's output is the LM's width
        vision["out_hidden_size"] = text.get("hidden_size", base.hidden_size)
    config = config_cls(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                        vision_end_token_id=ids["<|vision_end|>"])
    config._attn_implementation = "sdpa"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = getattr(transformers, fam.class_name)(config).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    from videoqa.vision_attention import batch_vision_attention

    batch_vision_attention(model)
    processor = VideoQAProcessor(tok, fam.spec, None, None, fam.layout)
    side = 32 * fam.spec.patch_size
    defaults = {"fps": 2.0, "max_frames": 4096, "max_pixels": side * side, "size_multiple": fam.spec.factor}
    return LoadedModel(model, processor, f"{shape['label']} (random weights)", None, torch.device(device), dtype,
                       model_type, True, defaults, context_tokens(model)), side


def synthetic_frames(frames: int, side: int):
    """``videoqa.video.VideoFrames`` of smooth moving colour, 2 fps, as if sampled from a file."""
    from videoqa.video import VideoFrames, VideoInfo

    y, x = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    t = torch.arange(frames)[:, None, None]
    video = torch.stack([(x + 3 * t) % 256, (y + 5 * t) % 256, (x + y + 7 * t) % 256], 1).to(torch.uint8)
    info = VideoInfo("synthetic.mp4", frames / 2.0, 2.0, frames, side, side, None, 0, "synthetic")
    return VideoFrames(video, [i / 2.0 for i in range(frames)], info, 2.0, list(range(frames)))


def timed(fn, device: str, reps: int) -> float:
    fn()  # warm-up: compilation, autotuning, the allocator
    times = []
    for _ in range(reps):
        t0 = device_clock(device)
        fn()
        times.append(device_clock(device) - t0)
    return statistics.median(times)


def measure(model_type: str, lengths, device: str, reps: int, smoke: bool, question: str) -> list[dict]:
    import unisparse
    from videoqa.models import set_sparsity
    from videoqa.pipeline import model_inputs, prompt_layout

    t0 = time.time()
    loaded, side = build(model_type, device, smoke)
    model = loaded.model
    print(f"{loaded.name}: built in {time.time() - t0:.0f} s", flush=True)
    rows = []
    for n in lengths:
        frames = synthetic_frames(2 * n // 256, side)
        prepared, inputs = model_inputs(loaded, frames, question, None, None)
        layout = prompt_layout(loaded, prepared)
        row = {"family": model_type, "model": loaded.name, "visual_tokens": prepared.visual_tokens,
               "tokens": prepared.num_tokens, "frames": frames.num_frames,
               "layout_spans": 0 if layout is None else len(layout.spans)}
        vision = getattr(model, "visual", None) or model.model.visual
        kw = {k: v for k, v in inputs.items() if k in ("pixel_values_videos", "video_grid_thw")}
        with torch.inference_mode():
            row["vision_s"] = timed(lambda: vision(kw["pixel_values_videos"], grid_thw=kw["video_grid_thw"]), device, reps)
            fwd = lambda: model(**inputs, use_cache=False, logits_to_keep=1)  # noqa: E731
            set_sparsity(loaded, False)
            row["dense_s"] = timed(fwd, device, reps)
            dense = fwd().logits.float()
            for mode, video_aware in (("unisparse", False), ("video", True)):
                cfg = unisparse.UniSparseConfig(min_seq_len=0, video_aware=video_aware, video_aware_min_len=0)
                set_sparsity(loaded, True, cfg)
                with unisparse.video_layout(layout):
                    row[f"{mode}_s"] = timed(fwd, device, reps)
                    with unisparse.record(keep_masks=False) as rec:
                        logits = fwd().logits.float()
                sparse_layers = rec.sparse_layers
                row[f"{mode}_density"] = rec.mean_density()
                row[f"{mode}_layers"] = f"{len(sparse_layers)}/{len(rec.layers)}"
                row[f"{mode}_paths"] = sorted({r.path for r in rec.layers})
                moved = [sum(o != "frame" for o in (r.head_orders or [])) for r in rec.layers]
                row[f"{mode}_moved_kv_heads"] = sum(moved)
                row[f"{mode}_kv_heads"] = sum(len(r.head_orders or []) for r in rec.layers)
                row[f"{mode}_logit_rel_err"] = ((logits - dense).norm() / dense.norm()).item()
                row[f"{mode}_same_top1"] = bool((logits.argmax(-1) == dense.argmax(-1)).all())
                row[f"{mode}_x"] = row["dense_s"] / row[f"{mode}_s"]
                row[f"{mode}_x_lm"] = (row["dense_s"] - row["vision_s"]) / max(1e-9, row[f"{mode}_s"] - row["vision_s"])
            set_sparsity(loaded, False)
        rows.append(row)
        print(json.dumps(row), flush=True)
        inputs = prepared = frames = None  # freed before the next length's
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--visual-tokens", type=int, nargs="+", default=[16384, 32768, 65536])
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--question", default="What happens in this video?")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, 2K tokens: checks the script only")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    import transformers

    device = "cpu" if args.smoke else "cuda"
    lengths = [2048] if args.smoke else args.visual_tokens
    rows = []
    for fam in args.families:
        try:
            rows += measure(fam, lengths, device, 1 if args.smoke else args.reps, args.smoke, args.question)
        except Exception as err:  # one family failing (a transformers version without it) must not lose the others
            print(f"{fam}: FAILED {type(err).__name__}: {err}", flush=True)
            rows.append({"family": fam, "error": f"{type(err).__name__}: {err}"})
    gpu = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke test: no timing claims)"
    head = [f"## Prefill by model family at real shapes, random weights: {gpu}", "",
            f"torch {torch.__version__}, transformers {transformers.__version__}; bf16, batch 1, 256 merged tokens per "
            f"temporal patch, 2 fps; median of {args.reps} forwards after one warm-up (`logits_to_keep=1`, no cache). "
            "UniSparse: library defaults but `min_seq_len=0`; video-aware: the pipeline's video layout passed. "
            "x = dense s / mode s (whole prefill); x LM = the same without the vision tower.", "",
            f"command: `python {' '.join(['benchmarks/prefill/bench_prefill_families.py', *(argv or sys.argv[1:])])}`", "",
            "| model | visual tokens | tokens | vision s | dense s | UniSparse s | x | x LM | density | video-aware s | x | "
            "x LM | density | KV heads moved | logit err (UniSparse / video) | same top-1 |",
            "|" + " --- |" * 16]
    for r in rows:
        if "error" in r:
            head.append(f"| {r['family']} | failed: {r['error'][:120]} |" + " |" * 14)
            continue
        head.append(
            f"| {r['model']} | {r['visual_tokens']} | {r['tokens']} | {r['vision_s']:.2f} | {r['dense_s']:.2f} | "
            f"{r['unisparse_s']:.2f} | {r['unisparse_x']:.2f} | {r['unisparse_x_lm']:.2f} | {r['unisparse_density']:.3f} | "
            f"{r['video_s']:.2f} | {r['video_x']:.2f} | {r['video_x_lm']:.2f} | {r['video_density']:.3f} | "
            f"{r['video_moved_kv_heads']}/{r['video_kv_heads']} | {r['unisparse_logit_rel_err']:.1e} / "
            f"{r['video_logit_rel_err']:.1e} | {r['unisparse_same_top1']} / {r['video_same_top1']} |")
    md = "\n".join(head) + "\n"
    print(md)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".md").write_text(md)
        args.output.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
