"""Training the default model's vision tower (and optional LoRA) with the language model frozen.

What is trained: the vision tower and merger (from random), and, with ``lora_rank > 0``, a
low-rank update of the language model's q/v projections (:mod:`videoqa.models.lora`).
SmolLM2's own weights never change. The loss is cross-entropy on the answer tokens only (the
target text and the closing ``<|im_end|>``), with the prompt built exactly as the pipeline
builds it (:func:`videoqa.prompt.build_inputs`), so training and inference see the same tokens.

Batches: step ``s`` is a pure function of ``(seed, s)``: :func:`step_examples` picks a task
group (single-frame, motion/scenes, needles) and one frame geometry for the whole batch (equal
visual token counts, little padding), then draws ``batch_size`` examples, fewer when they would
exceed ``token_budget`` tokens (long needle videos). So a resumed run sees exactly the batches
an uninterrupted one would, whatever the number of data workers.

Runs must fit in 10-minute GPU sessions, so a run checkpoints every ``checkpoint_every`` steps
and before ``time_limit_s`` runs out, and ``--resume`` continues from the last checkpoint:
trainable weights, AdamW state, step and RNG states (data needs none: it is a function of the
step; the model has no dropout). The learning rate is a function of the step (linear warm-up,
cosine decay to 10%), so it resumes exactly too.

Precision: on CUDA the frozen language model runs in bfloat16 under autocast and the trainable
weights stay float32; on the CPU everything is float32.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from typing import Callable

import numpy as np
import torch

from .synthetic import (ACTION_KINDS, ALL_KINDS, CAPTION_KIND, CLIP_KINDS, CROWD_KINDS, NEEDLE_KINDS, NEEDLE_SIZES,
                        PLACE_KINDS, SIZES, STATIC_KINDS, STILL_KINDS, VIDEO_KINDS, Example, default_num_frames,
                        make_example)

# "clip": the sample videos' kinds of question (what moves, what appears, digits in sequence); "still": digits drawn
# as needles draw them (a palette background, the haystack's dot); "crowd": the sample clips' layouts (a small
# mover among large or late distractors, many background colours); "count": the single-frame counting questions
# alone, the kind run D lost (5 of 8 after 650 steps with single at 15%); "where": which side of the picture a
# thing is on; "does": what a moving thing does, from 4 frames. All weight 0 unless asked. Any kind's name also
# works as a group of that kind alone (e.g. travel=0.1: the clip question D answered 3 of 8).
GROUPS = {"single": STATIC_KINDS, "video": VIDEO_KINDS, "needle": NEEDLE_KINDS,
          "caption": (CAPTION_KIND,), "clip": CLIP_KINDS, "still": STILL_KINDS, "crowd": CROWD_KINDS,
          "count": ("count",), "where": PLACE_KINDS, "does": ACTION_KINDS}
MULTI_FRAME_KINDS = VIDEO_KINDS + CLIP_KINDS + CROWD_KINDS  # one T serves a batch: these need >= 8 frames
DEFAULT_GROUP_WEIGHTS = {"caption": 0.2, "single": 0.35, "video": 0.2, "needle": 0.25}
TINY_VISION = {"depth": 1, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2}


def group_kinds(group: str) -> tuple:
    """The kinds a ``--group-weights`` name draws: a group of :data:`GROUPS`, or one kind by its own name."""
    if group in GROUPS:
        return tuple(GROUPS[group])
    if group in ALL_KINDS:
        return (group,)
    raise ValueError(f"--group-weights: unknown group {group!r} (groups: {', '.join(GROUPS)}, or a kind: "
                     f"{', '.join(k for k in ALL_KINDS if k not in GROUPS)})")


@dataclasses.dataclass
class TrainConfig:
    steps: int = 4000
    batch_size: int = 16
    token_budget: int = 24576  # prompt + answer tokens per batch, padding included
    lr: float = 1e-3
    lora_lr: float = 2e-4
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    frames: int = 0  # fixed T for every example (motion/scene batches: at least 8); 0: per-task defaults, capped by max_frames
    max_frames: int = 256
    size: tuple[int, int] | None = None  # fixed (H, W) for every example; None: per-task random sizes
    needle_sizes: tuple | None = None  # (H, W) sizes needle batches draw from; None: synthetic.NEEDLE_SIZES
    group_weights: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_GROUP_WEIGHTS))
    vision: dict = dataclasses.field(default_factory=dict)  # overrides of build.DEFAULT_VISION
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple = ("q_proj", "v_proj")  # the text-only probe learnt with all seven projections (docs)
    visual_scale_weight: float = 0.0  # penalty on log(visual token RMS / text embedding RMS)^2; 0: off
    init_vision: str | None = None  # a tower to start from: stage 0's .pt (grounding --output) or an export's directory
    init_lora: str | None = None  # a checkpoint's trainable.pt whose LoRA factors to start from (e.g. the text stage's)
    init_from: str | None = None  # a compact export (tower + LoRA) to start from: how a run continues on a fresh machine
    text_only: bool = False  # stage A: static scenes described in words, no video; trains the LoRA only
    seed: int = 0
    device: str = "auto"
    tiny: bool = False  # tiny random LM + tiny vision tower: for tests and dry runs
    eval_every: int = 250
    eval_examples: int = 60
    checkpoint_every: int = 250
    checkpoint_dir: str | None = None
    resume: bool = False
    time_limit_s: float | None = None
    stop_at: int | None = None  # checkpoint and stop after this step (as a time limit would), e.g. to split a run
    export: str | None = None
    export_format: str = "compact"  # or "full"
    export_on_stop: bool = False  # also export when stopping early (time limit / stop_at), as a snapshot
    workers: int = 0
    log_every: int = 10
    max_skipped: int = 20  # non-finite steps tolerated (skipped, logged) before the run stops with an error
    lm_dtype: str = "auto"  # the frozen LM on CUDA: "auto" (bfloat16 under autocast) or "float32" (no autocast)

    def schedule_key(self) -> dict:
        """What must not change between a run and its resumption."""
        key = {k: getattr(self, k) for k in ("steps", "batch_size", "token_budget", "lr", "lora_lr", "warmup",
                                               "weight_decay", "frames", "max_frames", "size", "group_weights",
                                               "vision", "lora_rank", "lora_alpha", "lora_targets", "visual_scale_weight", "init_vision", "init_lora", "init_from", "text_only", "seed", "tiny")}
        if self.needle_sizes is not None:  # only when set: checkpoints made before the option still resume
            key["needle_sizes"] = [list(hw) for hw in self.needle_sizes]
        return key


# ----------------------------------------------------------------------------- data


def step_examples(cfg: TrainConfig, step: int, split: str = "train") -> list[Example]:
    """The examples of training step ``step`` (pure function of ``cfg.seed`` and ``step``)."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 7919, int(step)]))
    names = sorted(cfg.group_weights)
    w = np.array([cfg.group_weights[n] for n in names], float)
    group = "single" if cfg.text_only else names[int(rng.choice(len(names), p=w / w.sum()))]
    kinds = group_kinds(group)
    first = str(kinds[int(rng.integers(len(kinds)))])
    t = int(cfg.frames) if cfg.frames else min(default_num_frames(rng, first), cfg.max_frames)
    if set(kinds) & set(MULTI_FRAME_KINDS):  # motion needs >= 4 frames, scenes and clips >= 6
        t = max(t, 8)
    sizes = (cfg.needle_sizes or NEEDLE_SIZES) if group == "needle" else SIZES
    size = tuple(cfg.size) if cfg.size else sizes[int(rng.integers(len(sizes)))]
    per_example = (t // 2) * (size[0] // 28) * (size[1] // 28) + 80  # visual tokens + text
    n = max(1, min(cfg.batch_size, cfg.token_budget // per_example))
    base = int(step) * cfg.batch_size
    out = []
    for j in range(n):
        kind = first if j == 0 else str(kinds[int(rng.integers(len(kinds)))])
        out.append(make_example(split, base + j, kind=kind, num_frames=t, size=size))
    return out


def encode(processor, example: Example, text_only: bool = False) -> dict:
    """Prompt + answer tokens for one example; ``labels`` are -100 except on the answer and ``<|im_end|>``.

    ``text_only``: the picture is described in words in place of the video (stage A).
    """
    from videoqa.prompt import build_inputs
    from .evaluate import described_prompt_ids

    tok = processor.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    answer = tok(example.target, add_special_tokens=False)["input_ids"] + [end]
    if text_only:
        prompt = described_prompt_ids(processor, example)
        ids = torch.cat([prompt, torch.tensor(answer)])
        labels = torch.full_like(ids, -100)
        labels[len(prompt):] = ids[len(prompt):]
        return {"input_ids": ids, "labels": labels, "mm_token_type_ids": torch.zeros_like(ids)}
    prepared = build_inputs(processor, example.frames, example.question, example.options)
    prompt = prepared.inputs["input_ids"][0]
    ids = torch.cat([prompt, torch.tensor(answer)])
    labels = torch.full_like(ids, -100)
    labels[len(prompt):] = ids[len(prompt):]
    mm = torch.cat([prepared.inputs["mm_token_type_ids"][0], torch.zeros(len(answer), dtype=torch.long)])
    return {"input_ids": ids, "labels": labels, "mm_token_type_ids": mm,
            "pixel_values_videos": prepared.inputs["pixel_values_videos"],
            "video_grid_thw": prepared.inputs["video_grid_thw"]}


def collate(encoded: list[dict], pad_id: int) -> dict:
    """Right-padded batch: padding has attention 0, label -100, token type 0."""
    n = max(len(e["input_ids"]) for e in encoded)
    b = len(encoded)
    ids = torch.full((b, n), pad_id, dtype=torch.long)
    labels = torch.full((b, n), -100, dtype=torch.long)
    mask = torch.zeros((b, n), dtype=torch.long)
    mm = torch.zeros((b, n), dtype=torch.long)
    for i, e in enumerate(encoded):
        k = len(e["input_ids"])
        ids[i, :k], labels[i, :k], mask[i, :k], mm[i, :k] = e["input_ids"], e["labels"], 1, e["mm_token_type_ids"]
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels, "mm_token_type_ids": mm}
    if "pixel_values_videos" in encoded[0]:
        out["pixel_values_videos"] = torch.cat([e["pixel_values_videos"] for e in encoded])
        out["video_grid_thw"] = torch.cat([e["video_grid_thw"] for e in encoded])
    return out


class StepBatches(torch.utils.data.Dataset):
    """Batch ``i`` = the collated examples of step ``start + i`` (so DataLoader workers keep the order)."""

    def __init__(self, cfg: TrainConfig, processor, start: int, stop: int):
        self.cfg, self.processor, self.start, self.stop = cfg, processor, start, stop

    def __len__(self):
        return max(0, self.stop - self.start)

    def __getitem__(self, i):
        step = self.start + i
        pad = self.processor.tokenizer.pad_token_id
        pad = self.processor.eos_token_ids[0] if pad is None else pad
        return step, collate([encode(self.processor, e, self.cfg.text_only) for e in step_examples(self.cfg, step)], pad)


# ----------------------------------------------------------------------------- model and loss


def build(cfg: TrainConfig):
    """``(model, processor, lora, source)`` on the CPU in float32, vision tower trainable."""
    from videoqa.models.smollm2 import smollm2_source

    from .build import build_default_model, tiny_source
    from videoqa.models.lora import LoRA

    source = tiny_source(cfg.seed) if cfg.tiny else smollm2_source()
    vision = {**(TINY_VISION if cfg.tiny else {}), **cfg.vision}
    model, processor = build_default_model(vision, source=source, seed=cfg.seed)
    if cfg.init_from and cfg.init_lora:
        raise ValueError("init_from (an export: tower and LoRA) and init_lora both give the LoRA; give one of them")
    trained = None
    if cfg.init_from:
        from videoqa.models.compact import check_source, read_trained

        trained = read_trained(cfg.init_from)
        check_source(cfg.init_from, trained.marker, source)
        model.model.visual.load_state_dict({k: v.float() for k, v in trained.vision.items()})
        with torch.no_grad():
            model.model.language_model.embed_tokens.weight[-trained.added_rows.shape[0]:] = trained.added_rows.float()
    if cfg.init_vision:  # after init_from: a newly grounded tower under an export's LoRA
        from .export import tower_state

        model.model.visual.load_state_dict(tower_state(cfg.init_vision))
    lora = (LoRA(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=tuple(cfg.lora_targets), seed=cfg.seed).attach()
            if cfg.lora_rank else None)
    if trained is not None and trained.lora is not None:
        saved = trained.marker["lora"]
        if lora is None or (saved["rank"], tuple(saved["targets"])) != (lora.rank, lora.targets):
            raise ValueError(f"{cfg.init_from} has a LoRA of rank {saved['rank']} on {saved['targets']}: "
                             "train with the same --lora-rank and --lora-targets")
        lora.load_state_dict({k: v.float() for k, v in trained.lora.items()})
    if cfg.init_lora:
        if lora is None:
            raise ValueError("init_lora needs lora_rank > 0")
        lora.load_state_dict(torch.load(cfg.init_lora, map_location="cpu")["lora"])
    if cfg.text_only:
        if lora is None:
            raise ValueError("the text-only stage trains the LoRA: lora_rank must be > 0")
        for p in model.model.visual.parameters():
            p.requires_grad_(False)
    return model, processor, lora, source


def _needed_mask(mask: torch.Tensor) -> torch.Tensor | None:
    """``None`` for a right-padded batch, whose padding mask causal attention already implies.

    Under causal attention no real token sees the padding after it, and M-RoPE numbers the real
    tokens the same with or without the padding; only the padding's own outputs change, and they
    carry no label. Without a mask SDPA runs its causal kernel, and no (batch, 1, n, n) mask is
    built (0.16 GB for three 7.5K-token needle videos) and read by every layer.
    """
    lengths = mask.sum(1, keepdim=True)
    right_padded = torch.equal(mask.bool(), torch.arange(mask.shape[1], device=mask.device) < lengths)
    return None if right_padded else mask


TRAIN_ATTENTION = "videoqa_train_sdpa"


def repeated_kv_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """SDPA with the key/value heads repeated to the query heads: what float32 training on CUDA needs.

    transformers asks SDPA for grouped-query attention (``enable_gqa``) whenever there is no mask,
    assuming the flash kernel; flash takes no float32, and the memory-efficient kernel takes no
    ``enable_gqa``, so PyTorch falls back to its math kernel and keeps a (batch, heads, n, n)
    score tensor per layer for the backward pass (out of memory on the H200 at 3 x 7.4K tokens).
    With the heads repeated, the memory-efficient kernel runs, masked or causal.
    """
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    if attention_mask is not None and attention_mask.ndim == 4:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(causal and attention_mask is None and query.shape[2] > 1 and query.shape[2] == key.shape[2])
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling, is_causal=causal)
    return out.transpose(1, 2).contiguous(), None


def use_train_attention(model) -> None:
    """Route the language model's attention through :func:`repeated_kv_sdpa` (SDPA's masks)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(TRAIN_ATTENTION, repeated_kv_sdpa)
    AttentionMaskInterface.register(TRAIN_ATTENTION, sdpa_mask)
    model.set_attn_implementation({"text_config": TRAIN_ATTENTION})


def answer_loss(model, batch: dict, visual_scale_weight: float = 0.0, text_rms: float | None = None):
    """Mean cross-entropy over answer tokens (+ the visual scale penalty), the token accuracy, the visual RMS.

    Logits are computed only where a label is, not over the whole (mostly visual) sequence.
    The penalty keeps the merger's outputs at the text embeddings' scale: with the language model
    frozen, growing the visual tokens is the optimiser's easiest way to be heard, and tokens 50-100x
    the text scale swamp the residual stream (measured on a CPU run, docs/default-model.md).
    """
    labels = batch["labels"]
    captured = []
    hook = model.model.visual.merger.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        out = model.model(input_ids=batch["input_ids"], attention_mask=_needed_mask(batch["attention_mask"]),
                          mm_token_type_ids=batch["mm_token_type_ids"], pixel_values_videos=batch.get("pixel_values_videos"),
                          video_grid_thw=batch.get("video_grid_thw"), use_cache=False)
    finally:
        hook.remove()
    visual = captured[0].float() if captured else None  # None: a text-only batch
    rms = visual.pow(2).mean(-1).sqrt() if visual is not None else torch.zeros(1)
    target = labels[:, 1:]
    keep = target != -100
    hidden = out.last_hidden_state[:, :-1][keep]
    logits = model.lm_head(hidden).float()
    tgt = target[keep]
    loss = torch.nn.functional.cross_entropy(logits, tgt)
    if visual_scale_weight and visual is not None:
        ref = text_rms if text_rms is not None else float(model.model.language_model.embed_tokens.weight.float().pow(2).mean().sqrt())
        loss = loss + visual_scale_weight * torch.log(rms.clamp_min(1e-6) / ref).pow(2).mean()
    acc = (logits.argmax(-1) == tgt).float().mean().item()
    return loss, acc, rms.mean().item()


def lr_at(cfg: TrainConfig, step: int, base: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10% of ``base`` at ``steps``."""
    if step < cfg.warmup:
        return base * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(cfg: TrainConfig, model, lora):
    groups = [] if cfg.text_only else [{"params": [p for p in model.model.visual.parameters()], "lr": cfg.lr,
                                        "base_lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if lora is not None:
        groups.append({"params": list(lora.parameters()), "lr": cfg.lora_lr, "base_lr": cfg.lora_lr,
                       "weight_decay": 0.0})
    return torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-8)


# ----------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict:
    state = {"torch": torch.random.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.random.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: str, cfg: TrainConfig, step: int, model, lora, optimizer, keep: int = 2) -> str:
    """Write ``directory/step-XXXXXXX/`` and point ``directory/latest`` at it (atomic rename); keep the last ``keep``."""
    os.makedirs(directory, exist_ok=True)
    name = f"step-{step:07d}"
    tmp = os.path.join(directory, f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    trainable = {"vision": {k: v.detach().cpu() for k, v in model.model.visual.state_dict().items()},
                 "lora": {k: v.detach().cpu() for k, v in lora.state_dict().items()} if lora is not None else None}
    torch.save(trainable, os.path.join(tmp, "trainable.pt"))
    torch.save(optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
    torch.save(_rng_state(), os.path.join(tmp, "rng.pt"))
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump({"step": step, "config": cfg.schedule_key(), "saved_at": time.time()}, f, indent=1)
    final = os.path.join(directory, name)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = os.path.join(directory, ".latest.tmp")
    with open(latest_tmp, "w") as f:
        f.write(name)
    os.replace(latest_tmp, os.path.join(directory, "latest"))
    old = sorted(d for d in os.listdir(directory) if d.startswith("step-"))[:-keep]
    for d in old:
        shutil.rmtree(os.path.join(directory, d), ignore_errors=True)
    return final


def latest_checkpoint(directory: str) -> str | None:
    p = os.path.join(directory, "latest")
    if not os.path.isfile(p):
        return None
    with open(p) as f:
        return os.path.join(directory, f.read().strip())


def load_checkpoint(path: str, cfg: TrainConfig, model, lora, optimizer) -> int:
    """Restore weights, optimizer, RNG; return the step to continue from. ValueError if the run's settings differ."""
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    saved, now = state["config"], json.loads(json.dumps(cfg.schedule_key()))
    if saved != now:
        diff = {k: (saved.get(k), now.get(k)) for k in set(saved) | set(now) if saved.get(k) != now.get(k)}
        raise ValueError(f"checkpoint {path} was made with other settings (saved, now): {diff}")
    trainable = torch.load(os.path.join(path, "trainable.pt"), map_location="cpu")
    model.model.visual.load_state_dict(trainable["vision"])
    if lora is not None:
        lora.load_state_dict(trainable["lora"])
    optimizer.load_state_dict(torch.load(os.path.join(path, "optimizer.pt"), map_location="cpu", weights_only=False))
    _set_rng_state(torch.load(os.path.join(path, "rng.pt"), weights_only=False))
    return int(state["step"])


# ----------------------------------------------------------------------------- the loop


def _device(name: str) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # many workers x many threads would oversubscribe the cores


def _move(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train(cfg: TrainConfig, *, log: Callable[[dict], None] | None = None) -> dict:
    """Run (or resume) training; returns ``{"step", "stopped", "checkpoint", "export", "history"}``.

    ``stopped`` is "done", "time_limit" when it checkpointed and stopped before ``time_limit_s``,
    or "stop_at" when it reached ``stop_at``.
    """
    t_start = time.perf_counter()
    say = log or (lambda rec: print(json.dumps(rec), flush=True))
    torch.manual_seed(cfg.seed)
    device = _device(cfg.device)
    model, processor, lora, source = build(cfg)
    if cfg.lm_dtype not in ("auto", "float32"):
        raise ValueError(f"lm_dtype must be 'auto' or 'float32', got {cfg.lm_dtype!r}")
    use_bf16 = device.type == "cuda" and cfg.lm_dtype == "auto"
    lm_dtype = torch.bfloat16 if use_bf16 else torch.float32
    if device.type == "cuda" and not use_bf16:  # float32 range (both bf16 GPU runs went NaN), TF32 tensor-core speed
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.to(device)
    model.model.language_model.to(lm_dtype)
    use_train_attention(model)
    if lora is not None:
        lora.to(device)
    model.train()
    text_rms = float(model.model.language_model.embed_tokens.weight.float().pow(2).mean().sqrt())
    optimizer = make_optimizer(cfg, model, lora)
    step = 0
    if cfg.resume:
        if not cfg.checkpoint_dir:
            raise ValueError("resume needs a checkpoint directory")
        path = latest_checkpoint(cfg.checkpoint_dir)
        if path is not None:
            step = load_checkpoint(path, cfg, model, lora, optimizer)
            say({"event": "resumed", "step": step, "from": path})
        else:
            say({"event": "no checkpoint to resume; starting at step 0", "dir": cfg.checkpoint_dir})
    eval_set = None
    history = []
    log_path = os.path.join(cfg.checkpoint_dir, "log.jsonl") if cfg.checkpoint_dir else None

    def emit(rec):
        history.append(rec)
        say(rec)
        if log_path:
            os.makedirs(cfg.checkpoint_dir, exist_ok=True)
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def checkpoint():
        if cfg.checkpoint_dir:
            t0 = time.perf_counter()
            p = save_checkpoint(cfg.checkpoint_dir, cfg, step, model, lora, optimizer)
            return p, time.perf_counter() - t0
        return None, 0.0

    def evaluate():
        nonlocal eval_set
        from .evaluate import accuracy, mixed_examples, static_examples, suite_examples

        if eval_set is None:
            eval_set = (static_examples(cfg.eval_examples) if cfg.text_only
                        else mixed_examples(cfg.eval_examples, max_frames=min(64, cfg.max_frames)))
            # each optional group that trains adds its own questions, so the mixed part stays comparable
            for group, share in (("clip", 2), ("still", 4), ("crowd", 4), ("where", 4), ("does", 4)):
                if not cfg.text_only and cfg.group_weights.get(group, 0) > 0:
                    eval_set = eval_set + suite_examples(group, cfg.eval_examples // share)
        model.eval()
        t0 = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=use_bf16):
            res = accuracy(model, processor, eval_set, text_only=cfg.text_only)
        model.train()
        emit({"event": "eval", "step": step, **res, "seconds": round(time.perf_counter() - t0, 1)})

    if cfg.workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers each tokenise on one thread
    loader = torch.utils.data.DataLoader(StepBatches(cfg, processor, step, cfg.steps), batch_size=None,
                                         num_workers=cfg.workers, prefetch_factor=4 if cfg.workers else None,
                                         worker_init_fn=_one_thread if cfg.workers else None,
                                         persistent_workers=False, pin_memory=device.type == "cuda")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    step_time, ckpt_time, stopped, last_ckpt, skipped = None, 0.0, "done", None, 0
    it = iter(loader)
    window = []
    while step < cfg.steps:
        if cfg.stop_at is not None and step >= cfg.stop_at:
            stopped = "stop_at"
            break
        if cfg.time_limit_s is not None:
            elapsed = time.perf_counter() - t_start
            need = 2.0 * (step_time or 0.0) + 1.5 * ckpt_time + 5.0
            if elapsed + need > cfg.time_limit_s:
                stopped = "time_limit"
                break
        t0 = time.perf_counter()
        got_step, batch = next(it)
        assert got_step == step, (got_step, step)
        batch = _move(batch, device)
        for g in optimizer.param_groups:
            g["lr"] = lr_at(cfg, step, g["base_lr"])
        with torch.autocast(device.type, torch.bfloat16, enabled=use_bf16):
            loss, tok_acc, vis_rms = answer_loss(model, batch, cfg.visual_scale_weight, text_rms)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip else torch.tensor(0.0)
        if torch.isfinite(loss) and torch.isfinite(gnorm):
            optimizer.step()
        else:  # one bad batch must not poison the weights (two H100 runs went NaN for good, docs/runs/default_model)
            skipped += 1
            emit({"event": "nonfinite", "step": step + 1, "loss": float(loss), "grad_norm": float(gnorm),
                  "tokens": int(batch["input_ids"].shape[1]), "batch": int(batch["input_ids"].shape[0]),
                  "skipped_so_far": skipped})
            if skipped > cfg.max_skipped:
                raise FloatingPointError(f"{skipped} non-finite steps (last: step {step + 1}); see the log")
        step += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        step_time = dt if step_time is None else 0.9 * step_time + 0.1 * dt
        window.append((loss.item(), tok_acc, vis_rms))
        if step % cfg.log_every == 0 or step == cfg.steps or step == 1:
            emit({"event": "train", "step": step, "loss": float(np.mean([w[0] for w in window])),
                  "token_acc": float(np.mean([w[1] for w in window])),
                  "visual_rms": round(float(np.mean([w[2] for w in window])), 3), "lr": optimizer.param_groups[0]["lr"],
                  "grad_norm": float(gnorm), "batch": int(batch["input_ids"].shape[0]),
                  "tokens": int(batch["input_ids"].shape[1]), "step_s": round(dt, 3)})
            window = []
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            last_ckpt, ckpt_time = checkpoint()
        if cfg.eval_every and step % cfg.eval_every == 0:
            evaluate()
    del it, loader
    if cfg.checkpoint_dir and (last_ckpt is None or not last_ckpt.endswith(f"step-{step:07d}")):
        last_ckpt, _ = checkpoint()
    exported = None
    if step == cfg.steps:
        if cfg.eval_every and step % cfg.eval_every:
            evaluate()
        if cfg.export:
            exported = export(cfg, model, processor, lora, source)
            emit({"event": "exported", "path": exported, "format": cfg.export_format})
    else:
        if cfg.export and cfg.export_on_stop and step > 0:
            exported = export(cfg, model, processor, lora, source, trained_steps=step)
            emit({"event": "exported", "path": exported, "format": cfg.export_format, "step": step, "snapshot": True})
        emit({"event": f"stopped ({stopped})", "step": step, "of": cfg.steps, "checkpoint": last_ckpt,
              "resume_with": "--resume"})
    return {"step": step, "stopped": stopped, "checkpoint": last_ckpt, "export": exported, "history": history,
            "model": model, "processor": processor, "lora": lora}


# The frame sampling the default model is served with (recorded in its export, used by every tool
# unless the caller says otherwise): frames no larger than the largest it trains on (252x336) and at
# most 64 of them, about 3.5K visual tokens: inside its 8K context and quick on a CPU.
VIDEO_DEFAULTS = {"fps": 2.0, "max_frames": 64, "max_pixels": 252 * 336}


def export(cfg: TrainConfig, model, processor, lora, source, trained_steps: int | None = None) -> str:
    """Save the trained model for ``videoqa.models.load_model`` (compact: vision + LoRA only; full: everything)."""
    from videoqa.models.compact import save_compact
    from .export import save_full

    model.eval()
    if cfg.export_format == "compact":
        save_compact(model, processor, cfg.export, source=source, lora=lora,
                     extra={"trained_steps": cfg.steps if trained_steps is None else trained_steps,
                            "train_config": cfg.schedule_key(), "video_defaults": dict(VIDEO_DEFAULTS)})
    elif cfg.export_format == "full":
        save_full(model, processor, cfg.export, lora=lora)
    else:
        raise ValueError(f"export format must be 'compact' or 'full', got {cfg.export_format!r}")
    return cfg.export


# ----------------------------------------------------------------------------- command line


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    size = (int(h), int(w or h))
    if size[0] % 28 or size[1] % 28:
        raise ValueError(f"--size {text}: both sides must be multiples of 28")
    return size


def _sizes(text: str) -> tuple:
    return tuple(_size(part) for part in text.split(",") if part.strip())


def _weights(text: str) -> dict:
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        group_kinds(name.strip())  # refuses an unknown name
        out[name.strip()] = float(value)
    if not any(v > 0 for v in out.values()):
        raise ValueError("--group-weights: at least one weight must be positive")
    return out


def parse_args(argv=None) -> TrainConfig:
    import argparse

    d = TrainConfig()
    p = argparse.ArgumentParser(description="Train the default model's vision tower (SmolLM2 frozen) on synthetic videos.")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--token-budget", type=int, default=d.token_budget, help="max tokens per batch (padding included)")
    p.add_argument("--lr", type=float, default=d.lr, help="vision tower learning rate")
    p.add_argument("--lora-lr", type=float, default=d.lora_lr)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--frames", type=int, default=d.frames, help="frames per video for every example (0: per task)")
    p.add_argument("--max-frames", type=int, default=d.max_frames)
    p.add_argument("--size", type=_size, default=None, help="HxW frame size for every example (default: random)")
    p.add_argument("--needle-sizes", type=_sizes, default=None,
                   help="HxW sizes needle batches draw from, e.g. 112x112,168x168,224x224 (default: 84-140 px); "
                        "the token budget caps how many long videos a batch holds")
    p.add_argument("--group-weights", type=_weights, default=None,
                   help="task mix, e.g. caption=0.2,single=0.35,video=0.2,needle=0.25 (the default)")
    p.add_argument("--vision-depth", type=int)
    p.add_argument("--vision-dim", type=int, help="vision embed dim")
    p.add_argument("--vision-heads", type=int)
    p.add_argument("--lora-rank", type=int, default=d.lora_rank, help="0: no LoRA")
    p.add_argument("--lora-alpha", type=float, default=d.lora_alpha)
    p.add_argument("--lora-targets", default=",".join(d.lora_targets),
                   help="comma-separated Linear names, e.g. q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    p.add_argument("--visual-scale-weight", type=float, default=d.visual_scale_weight,
                   help="penalty keeping visual tokens at the text embeddings' RMS (0: off)")
    p.add_argument("--init-vision", help="start from this stage-0 tower (python -m videoqa_training.grounding)")
    p.add_argument("--init-lora", help="start the LoRA from this checkpoint's trainable.pt (e.g. the text-only stage's)")
    p.add_argument("--init-from", help="start tower and LoRA from this compact export (a run continued on a fresh machine)")
    p.add_argument("--text-only", action="store_true",
                   help="stage A: static scenes described in words, no video; trains the LoRA only")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--tiny", action="store_true", help="tiny random LM and vision tower (tests, dry runs)")
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--eval-examples", type=int, default=d.eval_examples)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--checkpoint-dir", help="where checkpoints (and log.jsonl) go")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --checkpoint-dir")
    p.add_argument("--time-limit-s", type=float, help="checkpoint and stop before this many seconds")
    p.add_argument("--stop-at", type=int, help="checkpoint and stop after this step")
    p.add_argument("--export", help="after the last step, save the model here (e.g. videoqa/assets/default_model)")
    p.add_argument("--export-format", choices=("compact", "full"), default=d.export_format)
    p.add_argument("--export-on-stop", action="store_true", help="export a snapshot also when stopping early")
    p.add_argument("--workers", type=int, default=d.workers, help="data loader processes")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--max-skipped", type=int, default=d.max_skipped, help="non-finite steps skipped before giving up")
    p.add_argument("--lm-dtype", choices=("auto", "float32"), default=d.lm_dtype,
                   help="frozen LM precision on CUDA (auto: bfloat16 under autocast)")
    a = p.parse_args(argv)
    vision = {k: v for k, v in (("depth", a.vision_depth), ("embed_dim", a.vision_dim), ("num_heads", a.vision_heads))
              if v is not None}
    return TrainConfig(steps=a.steps, batch_size=a.batch_size, token_budget=a.token_budget, lr=a.lr, lora_lr=a.lora_lr,
                       warmup=a.warmup, weight_decay=a.weight_decay, frames=a.frames, max_frames=a.max_frames,
                       size=a.size, needle_sizes=a.needle_sizes, group_weights=a.group_weights or dict(DEFAULT_GROUP_WEIGHTS), vision=vision, lora_rank=a.lora_rank, lora_alpha=a.lora_alpha,
                       lora_targets=tuple(t.strip() for t in a.lora_targets.split(",") if t.strip()),
                       visual_scale_weight=a.visual_scale_weight, init_vision=a.init_vision,
                       init_lora=a.init_lora, init_from=a.init_from, text_only=a.text_only, seed=a.seed,
                       device=a.device, tiny=a.tiny, eval_every=a.eval_every, eval_examples=a.eval_examples,
                       checkpoint_every=a.checkpoint_every, checkpoint_dir=a.checkpoint_dir, resume=a.resume,
                       time_limit_s=a.time_limit_s, stop_at=a.stop_at, export=a.export, export_format=a.export_format,
                       export_on_stop=a.export_on_stop,
                       workers=a.workers, log_every=a.log_every, max_skipped=a.max_skipped, lm_dtype=a.lm_dtype)


def main(argv=None) -> int:
    cfg = parse_args(argv)
    result = train(cfg)
    return 0 if result["stopped"] in ("done", "time_limit", "stop_at") else 1


if __name__ == "__main__":
    sys.exit(main())
