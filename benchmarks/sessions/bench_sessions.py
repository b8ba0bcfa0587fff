"""Three questions about one video: one VideoSession (the video prefilled once) against three
independent answer() calls, same frames, dense and UniSparse; time per question and peak memory.

* ``--videomme DIR`` (CPU or GPU): every video of a Video-MME-format set (default: the bundled
  ``data/videomme-sample``) with its own questions, with the default model (or ``--model``);
  the answers of the two ways are compared (dense: they must be identical).
* ``--synthetic-7b N [N ...]`` (GPU): Qwen2-VL-7B's architecture with random weights over a video of
  N visual tokens (448x448 frames: 256 tokens per temporal patch), three questions; time per
  question both ways, and the peak GPU memory of the session's three questions against one
  independent answer (what the cache costs beyond one prefill).

  python benchmarks/sessions/bench_sessions.py --videomme data/videomme-sample --batch-decode --repeats 3 --output benchmarks/sessions/videomme_sample_cpu.md
  python benchmarks/sessions/bench_sessions.py --synthetic-7b 16384 32768 65536 --output $OUT/sessions_7b.md
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

QUESTIONS = ["What happens in this video?", "Which colour appears most?", "Does anything move from left to right?"]


def clock() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def videomme_rows(dataset: Path, model, max_new_tokens: int, limit_videos: int | None, batch_decode: bool = False,
                  repeats: int = 1):
    """Per video and mode, seconds per question three ways (independent, session, batched session), each the
    fastest of ``repeats`` rounds (a shared CPU's noise only ever adds time), after one untimed warm-up answer."""
    from unisparse import UniSparseConfig
    from videoqa import answer, answer_many
    from videoqa.eval.videomme.dataset import Dataset

    ds = Dataset.load(dataset)
    by_video: dict[str, list] = {}
    for q in ds.questions:
        by_video.setdefault(q.videoID, []).append(q)
    def timed(fn):
        best, out = float("inf"), None
        for _ in range(repeats):
            t0 = clock()
            out = fn()
            best = min(best, clock() - t0)
        return best, out

    rows = []
    warm = next(iter(by_video.values()))[0]
    answer(ds.videos[warm.videoID], warm.question, list(warm.options), model=model, max_new_tokens=max_new_tokens)
    for vid, qs in list(by_video.items())[:limit_videos]:
        if len(qs) < 2:
            continue
        video = ds.videos[vid]
        questions, options = [q.question for q in qs], [list(q.options) for q in qs]
        for sparse in (False, True):
            cfg = UniSparseConfig(min_seq_len=0, max_density=1.0) if sparse else None
            kw = dict(model=model, sparse=sparse, config=cfg, max_new_tokens=max_new_tokens)
            t_ind, ind = timed(lambda: [answer(video, q, o, **kw) for q, o in zip(questions, options)])
            t_ses, many = timed(lambda: answer_many(video, questions, options, **kw))
            batched = {}
            if batch_decode:  # the same session, its answers decoded as one batch over the shared prefix
                t_bat, rows_b = timed(lambda: answer_many(video, questions, options, batch_decode=True, **kw))
                batched = {"batched_s": t_bat / len(qs),
                           "same_batched": sum(a.text == b.text for a, b in zip(ind, rows_b))}
            rows.append({"video": vid, "questions": len(qs), "mode": "UniSparse" if sparse else "dense",
                         "tokens": ind[0].total_tokens, "independent_s": t_ind / len(qs),
                         "session_s": t_ses / len(qs), "same": sum(a.text == b.text for a, b in zip(ind, many)),
                         **batched})
            print(rows[-1], flush=True)
    return rows


ARCH = {"7b": dict(text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                             num_key_value_heads=4), vision=dict(depth=32, embed_dim=1280, num_heads=16),
                   mrope=[16, 24, 24]),
        "tiny": dict(text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2), vision=dict(depth=1, embed_dim=64, num_heads=2), mrope=[4, 6, 6]),
        # head dim 128 and 7B's M-RoPE sections on a CPU-sized model (check_exactness.py at 16K tokens)
        "mid": dict(text=dict(hidden_size=512, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2), vision=dict(depth=1, embed_dim=64, num_heads=2), mrope=[16, 24, 24])}


def synthetic_model(arch: str = "7b", dtype: torch.dtype | None = None):
    """A :class:`videoqa.models.LoadedModel` of Qwen2-VL with ``ARCH[arch]``'s shapes and random weights (seed 0),
    on the GPU where there is one; ``dtype`` defaults to bf16 on a GPU, float32 on the CPU."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from videoqa.models import LoadedModel, context_tokens
    from videoqa.processor import offline_processor
    from videoqa.vision_attention import batch_vision_attention

    processor = offline_processor()
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                      "<|vision_end|>")}
    a = ARCH[arch]
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), **a["text"], max_position_embeddings=131072,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": a["mrope"]}),
        vision_config=dict(**a["vision"], hidden_size=a["text"]["hidden_size"], mlp_ratio=4, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    dtype = dtype or (torch.bfloat16 if dev == "cuda" else torch.float32)
    with torch.device(dev):
        model = Qwen2VLForConditionalGeneration(config).to(dtype).eval()
    batch_vision_attention(model)
    return LoadedModel(model, processor, f"qwen2-vl-{arch}-shape (random weights)", None, torch.device(dev),
                       dtype, "qwen2_vl", True, {"fps": 2.0, "max_frames": 1024, "max_pixels": 448 * 448},
                       context_tokens(model))


def video_file(directory: Path, visual_tokens: int) -> tuple[Path, int]:
    """``(path, frames)``: the generated 448x448 video of ``visual_tokens`` tokens in ``directory`` (written if missing)."""
    import numpy as np

    frames = 2 * visual_tokens // 256
    path = directory / f"v{visual_tokens}.mp4"
    if not path.exists():
        write_video(path, frames, np)
    return path, frames


def synthetic_rows(lengths, max_new_tokens: int, arch: str = "7b", video_dir: Path | None = None,
                   dtype: torch.dtype | None = None, batch_decode: bool = False):
    """Qwen2-VL-7B shapes (``arch="tiny"``: a smoke test), random weights, a generated video file per length.

    ``dtype`` (default bf16 on a GPU, float32 on the CPU): random weights give near-tied logits, so in bf16
    the two ways' different rounding (one long prefill against prefix plus suffix) can flip a greedy token;
    ``check_exactness.py`` compares the two ways token by token."""
    from unisparse import UniSparseConfig
    from videoqa import answer, answer_many

    loaded = synthetic_model(arch, dtype)
    rows = []
    tmp = video_dir or Path(tempfile.mkdtemp())
    for n in lengths:
        path, frames = video_file(tmp, n)
        kw = dict(model=loaded, num_frames=frames, max_pixels=448 * 448, max_new_tokens=max_new_tokens)
        for sparse in (False, True):
            cfg = UniSparseConfig(min_seq_len=0) if sparse else None
            answer(path, QUESTIONS[0], sparse=sparse, config=cfg, **kw)  # warm-up (compilation, allocator)
            cuda = torch.cuda.is_available()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() if cuda else 0
            t0 = clock()
            ind = [answer(path, q, sparse=sparse, config=cfg, **kw) for q in QUESTIONS]
            t1 = clock()
            peak_ind = torch.cuda.max_memory_allocated() - base if cuda else float("nan")
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t2 = clock()
            many = answer_many(path, QUESTIONS, sparse=sparse, config=cfg, **kw)
            t3 = clock()
            peak_many = torch.cuda.max_memory_allocated() - base if cuda else float("nan")
            batched = {}
            if batch_decode:  # the same session with the answers decoded as one batch over the shared prefix
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                t4 = clock()
                rows_b = answer_many(path, QUESTIONS, sparse=sparse, config=cfg, batch_decode=True, **kw)
                batched = {"batched_s": (clock() - t4) / 3,
                           "same_batched": sum(a.text == b.text for a, b in zip(many, rows_b)),
                           "peak_batched_gib": (torch.cuda.max_memory_allocated() - base) / 2**30 if cuda else float("nan")}
            rows.append({"visual_tokens": n, "tokens": ind[0].total_tokens, "mode": "UniSparse" if sparse else "dense",
                         "independent_s": (t1 - t0) / 3, "session_s": (t3 - t2) / 3,
                         "prefix_prefill_s": many[0].timings["prefix_prefill"],
                         "same": sum(a.text == b.text for a, b in zip(ind, many)),
                         # decoded tokens per question: random weights stop at different lengths, and at 16K the
                         # decode is a large share of a question's time, so the ratio depends on them
                         "new_tokens_independent": sum(a.new_tokens for a in ind) / 3,
                         "new_tokens_session": sum(a.new_tokens for a in many) / 3,
                         "peak_independent_gib": peak_ind / 2**30, "peak_session_gib": peak_many / 2**30,
                         "independent_steps_s": mean_timings(ind), "session_steps_s": mean_timings(many), **batched})
            print(rows[-1], flush=True)
            if cuda:
                torch.cuda.empty_cache()
    return rows


def total_line(label: str, mode: str, rows: list[dict], batched: bool) -> str:
    """A table row summing ``rows``' seconds over their questions: independent, session (and batched) time."""
    n = sum(r["questions"] for r in rows)
    ind = sum(r["independent_s"] * r["questions"] for r in rows)
    ses = sum(r["session_s"] * r["questions"] for r in rows)
    line = f"| {label} | {n} | {mode} | | {ind:.1f} s | {ses:.1f} s | **{ses / ind:.2f}** | {sum(r['same'] for r in rows)}/{n} |"
    if batched:
        bat = sum(r["batched_s"] * r["questions"] for r in rows)
        line += f" {bat:.1f} s | **{bat / ind:.2f}** | {sum(r['same_batched'] for r in rows)}/{n} |"
    return line


def mean_timings(answers) -> dict:
    """Each step's mean seconds over ``answers`` (``Answer.timings``: what a question cost, step by step)."""
    keys = dict.fromkeys(k for a in answers for k in a.timings)
    return {k: round(sum(a.timings.get(k, 0.0) for a in answers) / len(answers), 4) for k in keys}


def write_video(path: Path, frames: int, np) -> None:
    """448x448 frames, a drifting colour gradient with a moving dark band (PyAV, else OpenCV where PyAV is
    missing). Smooth, so that a long one stays a few MB and can be carried to a machine without either
    (``--video-dir``): the random-weight model's time does not depend on what the pixels show."""
    y, x = np.mgrid[0:448, 0:448]
    images = []
    for i in range(frames):
        img = np.stack([(x + 3 * i) % 256, (y + 5 * i) % 256, (x + y + 7 * i) % 256], -1).astype(np.uint8)
        img[:, : 16 + (i * 7) % 400] //= 2
        images.append(img)
    try:
        import av
    except ImportError:
        import cv2

        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 2.0, (448, 448))
        for img in images:
            writer.write(img[..., ::-1])
        writer.release()
        return
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=2)
    stream.width = stream.height = 448
    stream.pix_fmt = "yuv420p"
    stream.options = {"preset": "ultrafast"}
    for img in images:
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videomme", type=Path, default=None)
    p.add_argument("--synthetic-7b", type=int, nargs="*", default=None)
    p.add_argument("--arch", choices=sorted(ARCH), default="7b", help="--synthetic-7b's architecture (tiny: a smoke test)")
    p.add_argument("--model", default=None)
    p.add_argument("--limit-videos", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--output", type=Path, default=None)
    p.add_argument("--video-dir", type=Path, default=None,
                   help="--synthetic-7b's videos: v<N>.mp4 read from here when present, else written there")
    p.add_argument("--repeats", type=int, default=1,
                   help="--videomme: time each way this many times and keep the fastest (default 1)")
    p.add_argument("--batch-decode", action="store_true",
                   help="also time the session with its answers decoded as one batch")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default=None,
                   help="--synthetic-7b's weights (default: bfloat16 on a GPU, float32 on the CPU)")
    p.add_argument("--save-model", type=Path, default=None, metavar="DIR",
                   help="only save --arch's random-weight model and its processor as a checkpoint directory "
                        "(what `videoqa eval --model DIR` loads, e.g. in every process of a multi-GPU run)")
    args = p.parse_args(argv)
    if args.save_model:
        loaded = synthetic_model(args.arch, getattr(torch, args.dtype) if args.dtype else None)
        loaded.model.save_pretrained(args.save_model)
        loaded.processor.save_pretrained(args.save_model)
        print(f"saved {loaded.name} ({loaded.dtype}) to {args.save_model}")
        return 0
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    lines = [f"## Three questions per video: one session against independent answers ({device}, torch "
             f"{torch.__version__})", ""]
    if args.videomme:
        from videoqa.models import load_model

        model = load_model(args.model)
        rows = videomme_rows(args.videomme, model, args.max_new_tokens, args.limit_videos, args.batch_decode,
                             args.repeats)
        bd = args.batch_decode
        lines += [f"{args.videomme}, model `{model.name}`, {args.max_new_tokens} new tokens at most; seconds per question, "
                  f"the fastest of {args.repeats} round(s) of each way, after one untimed warm-up answer."
                  + (" Batched: the session with its answers decoded as one batch (`batch_decode=True`); its answers "
                     "are compared with the independent ones." if bd else ""), "",
                  "| video | questions | mode | tokens | independent s/q | session s/q | session / independent | same answers |"
                  + (" batched s/q | batched / independent | batched same answers |" if bd else ""),
                  "| --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- | --- |" if bd else "")]
        lines += [f"| {r['video']} | {r['questions']} | {r['mode']} | {r['tokens']} | {r['independent_s']:.2f} | "
                  f"{r['session_s']:.2f} | {r['session_s'] / r['independent_s']:.2f} | {r['same']}/{r['questions']} |"
                  + (f" {r['batched_s']:.2f} | {r['batched_s'] / r['independent_s']:.2f} | "
                     f"{r['same_batched']}/{r['questions']} |" if bd else "")
                  for r in rows]
        # the target is set for three questions per video (Video-MME's count); with two, one prefix
        # shared by two questions cannot reach it, so both totals are given
        for label, keep in (("three-question videos", lambda r: r["questions"] == 3), ("all", lambda r: True)):
            for mode in ("dense", "UniSparse"):
                sel = [r for r in rows if r["mode"] == mode and keep(r)]
                if sel:
                    lines.append(total_line(label, mode, sel, bd))
        lines += ["", "Totals: seconds summed over the questions; the ratio is the summed session time over the "
                  "summed independent time.", ""]
    if args.synthetic_7b:
        if args.video_dir:
            args.video_dir.mkdir(parents=True, exist_ok=True)
        dtype = getattr(torch, args.dtype) if args.dtype else None
        rows = synthetic_rows(args.synthetic_7b, args.max_new_tokens, args.arch, args.video_dir, dtype, args.batch_decode)
        used = args.dtype or ("bfloat16" if torch.cuda.is_available() else "float32")
        lines += [f"Qwen2-VL-7B's architecture ({args.arch}), random weights, {used}; 448x448 frames; three questions, "
                  f"{args.max_new_tokens} new tokens at most.", "",
                  "| visual tokens | mode | independent s/q | session s/q | ratio | prefix prefill s | same answers | "
                  "new tokens per question, independent / session | peak GiB, 3 independent | peak GiB, session of 3 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['visual_tokens']} | {r['mode']} | {r['independent_s']:.3f} | {r['session_s']:.3f} | "
                  f"**{r['session_s'] / r['independent_s']:.2f}** | {r['prefix_prefill_s']:.3f} | {r['same']}/3 | "
                  f"{r['new_tokens_independent']:.1f} / {r['new_tokens_session']:.1f} | "
                  f"{r['peak_independent_gib']:.2f} | {r['peak_session_gib']:.2f} |" for r in rows]
        if args.batch_decode:
            lines += ["", ("The same sessions with the answers decoded as one batch over the shared prefix "
                           "(`answer_many(..., batch_decode=True)`):"), "",
                      ("| visual tokens | mode | independent s/q | batched session s/q | ratio | answers as the session's | "
                       "peak GiB, batched session |"), "| --- | --- | --- | --- | --- | --- | --- |"]
            lines += [f"| {r['visual_tokens']} | {r['mode']} | {r['independent_s']:.3f} | {r['batched_s']:.3f} | "
                      f"**{r['batched_s'] / r['independent_s']:.2f}** | {r['same_batched']}/3 | {r['peak_batched_gib']:.2f} |"
                      for r in rows]
    lines.append(f"\nCommand: `python benchmarks/sessions/bench_sessions.py {' '.join(argv or __import__('sys').argv[1:])}`")
    md = "\n".join(lines) + "\n"
    print(md)
    if args.output:
        args.output.write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
