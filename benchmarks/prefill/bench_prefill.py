"""Prefill time of Qwen2-VL with dense (SDPA) and UniSparse attention, on one GPU.

The model is Qwen2-VL-7B's real architecture (or -2B's) with random weights in bf16 (real weights
cannot be downloaded here), and the input one long video: ``T`` frames of 448x448 (1,024 patches
each, 256 visual tokens per temporal patch of 2 frames) plus a short text prompt. For each
length it times the whole prefill forward (vision tower + language model, ``logits_to_keep=1``)
and the vision tower alone, so the language-model share is their difference; then one recorded
UniSparse pass gives the mean density and the per-layer selection/attention time. UniSparse
runs with ``min_seq_len=0``: sparse at every length, also below the library default of 32768.

Random weights give nearly unstructured attention, so Top-P keeps more blocks than a trained
model would on real video: read the speedups as what this architecture gets at the density
reported, not as what a trained model gets.

  python benchmarks/prefill/bench_prefill.py --visual-tokens 16384 32768 65536 --output benchmarks/prefill/prefill_h200
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import time
from pathlib import Path

import torch


import unisparse

ARCH = {
    "7b": dict(text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4),
               vision=dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4)),
    "2b": dict(text=dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
               vision=dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4)),
}
ARCH["tiny"] = dict(text=dict(vocab_size=152064, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2),
                    vision=dict(depth=1, embed_dim=32, hidden_size=128, num_heads=2, mlp_ratio=2))  # --smoke
DEV = "cuda" if torch.cuda.is_available() else "cpu"
VISION_START, VISION_END, VIDEO = 151652, 151653, 151656
SIDE = 32  # patches per side: 448 px frames


def build_model(arch: str):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    a = ARCH[arch]
    config = Qwen2VLConfig(
        text_config=dict(**a["text"], max_position_embeddings=131072, rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24] if arch != "tiny" else [4, 6, 6]}),
        vision_config=dict(**a["vision"], patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=151655, video_token_id=VIDEO, vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16 if DEV == "cuda" else torch.float32)
    with torch.device(DEV):
        model = Qwen2VLForConditionalGeneration(config)
    torch.set_default_dtype(torch.float32)
    return model.eval()


def video_inputs(visual_tokens: int, text_tokens: int, model) -> dict:
    t = visual_tokens * 4 // (SIDE * SIDE)
    gen = torch.Generator(device=DEV).manual_seed(0)
    ids = torch.cat([
        torch.randint(0, 150000, (text_tokens // 2,), device=DEV, generator=gen),
        torch.tensor([VISION_START], device=DEV), torch.full((visual_tokens,), VIDEO, device=DEV),
        torch.tensor([VISION_END], device=DEV),
        torch.randint(0, 150000, (text_tokens - text_tokens // 2,), device=DEV, generator=gen),
    ])[None]
    inputs = {
        "input_ids": ids, "attention_mask": torch.ones_like(ids),
        "pixel_values_videos": torch.randn(t * SIDE * SIDE, 3 * 2 * 14 * 14, device=DEV, generator=gen,
                                           dtype=torch.get_default_dtype() if DEV == "cpu" else torch.bfloat16),
        "video_grid_thw": torch.tensor([[t, SIDE, SIDE]], device=DEV),
    }
    if "mm_token_type_ids" in inspect.signature(model.forward).parameters:
        inputs["mm_token_type_ids"] = (ids == VIDEO).long() * 2
    return inputs


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if DEV == "cuda" else float("nan")


def reset_peak():
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()


def timed(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def visual_module(model):
    return getattr(model, "visual", None) or model.model.visual


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=sorted(ARCH), default="7b")
    p.add_argument("--visual-tokens", type=int, nargs="+", default=[16384, 32768, 65536])
    p.add_argument("--text-tokens", type=int, default=64)
    p.add_argument("--top-p", type=float, nargs="+", default=[0.95, 0.9])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    import transformers
    import triton

    t0 = time.time()
    model = build_model(args.arch)
    print(f"built Qwen2-VL-{args.arch} (random weights, bf16) in {time.time() - t0:.0f} s", flush=True)
    rows = []
    for n in args.visual_tokens:
        inputs = video_inputs(n, args.text_tokens, model)
        L = inputs["input_ids"].shape[1]
        row = {"visual_tokens": n, "seq_len": L, "frames": 2 * inputs["video_grid_thw"][0, 0].item()}
        with torch.no_grad():
            fwd = lambda: model(**inputs, use_cache=False, logits_to_keep=1)  # noqa: E731
            vis = visual_module(model)
            row["vision_s"] = timed(lambda: vis(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"]), args.reps)
            unisparse.disable(model)
            reset_peak()
            row["dense_s"] = timed(fwd, args.reps)
            row["dense_peak_gib"] = peak_gib()
            dense_logits = fwd().logits.float()
            for top_p in args.top_p:
                cfg = unisparse.UniSparseConfig(top_p=top_p, min_seq_len=0)
                unisparse.enable(model, cfg)
                reset_peak()
                key = f"p{top_p}"
                row[f"{key}_s"] = timed(fwd, args.reps)
                row[f"{key}_peak_gib"] = peak_gib()
                with unisparse.record(keep_masks=False) as rec:
                    sparse_logits = fwd().logits.float()
                sel, att = rec.total_ms()
                row[f"{key}_density"] = rec.mean_density()
                row[f"{key}_sparse_layers"] = len(rec.sparse_layers)
                row[f"{key}_select_ms"], row[f"{key}_attention_ms"] = sel, att
                row[f"{key}_logit_rel_err"] = ((sparse_logits - dense_logits).norm() / dense_logits.norm()).item()
                row[f"{key}_same_top1"] = bool((sparse_logits.argmax(-1) == dense_logits.argmax(-1)).all())
                lm_dense, lm_sparse = row["dense_s"] - row["vision_s"], row[f"{key}_s"] - row["vision_s"]
                row[f"{key}_speedup"] = row["dense_s"] / row[f"{key}_s"]
                row[f"{key}_lm_speedup"] = lm_dense / lm_sparse
                unisparse.disable(model)
        rows.append(row)
        print(row, flush=True)
        del inputs
        if DEV == "cuda":
            torch.cuda.empty_cache()

    head = [f"## Qwen2-VL-{args.arch} prefill, dense (SDPA) vs UniSparse: {torch.cuda.get_device_name() if DEV == 'cuda' else 'CPU (smoke)'}",
            "", f"torch {torch.__version__}, triton {triton.__version__}, transformers {transformers.__version__}; "
            f"random weights, bf16, batch 1, 448x448 frames, {args.text_tokens} text tokens; median of {args.reps} "
            "timed forwards after one warm-up (`logits_to_keep=1`, no cache); LM = whole minus vision tower.", "",
            f"command: `python {' '.join(sys.argv)}`", ""]
    cols = ["visual tokens", "frames", "vision s", "dense s"]
    for tp in args.top_p:
        cols += [f"p={tp}: density", "s", "x whole", "x LM", "select/attn ms", "logit err", "same top-1"]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in rows:
        cells = [str(r["visual_tokens"]), str(r["frames"]), f"{r['vision_s']:.2f}", f"{r['dense_s']:.2f}"]
        for tp in args.top_p:
            k = f"p{tp}"
            cells += [f"{r[k + '_density']:.3f}", f"{r[k + '_s']:.2f}", f"{r[k + '_speedup']:.2f}",
                      f"{r[k + '_lm_speedup']:.2f}", f"{r[k + '_select_ms']:.0f}/{r[k + '_attention_ms']:.0f}",
                      f"{r[k + '_logit_rel_err']:.2e}", str(r[k + "_same_top1"])]
        lines.append("| " + " | ".join(cells) + " |")
    md = "\n".join(head + lines) + "\n"
    print(md)
    if args.output:
        args.output.with_suffix(".md").write_text(md)
        args.output.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
