"""Stage 0 of the default model's training: ground the vision tower's tokens in SmolLM2's word embeddings.

Why: trained on answers alone, a vision tower from random init and a frozen 135M language model
did not meet. On the CPU (520 steps) and on an H100 (1,400 steps of 16 examples) held-out accuracy
stayed at chance while the visual tokens grew 100x past the text embeddings' scale, and the bf16
run then went to NaN (``docs/runs/default_model/``). The language model only reads words, so
stage 0 teaches the tower to *write* words: every merged visual token is regressed onto the
embedding of what its 28x28 pixels show. A token covering a red circle should look like the words
" red" and " circle" (the mean of their embeddings, at the embeddings' usual norm); a token on
plain background like " background". This needs no language model forward (a few ms per step on a
GPU, fast enough on a CPU), the labels come from the generator's own geometry, and it fixes the
visual tokens' scale by construction. Stage 1 (:mod:`videoqa_training.training`) then trains on
answers from this start, with the LoRA learning to read the tokens.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time

import numpy as np
import torch

from videoqa.patchify import patchify_video
from .synthetic import NEEDLE_SIZES, SIZES, STATIC_KINDS, STILL_KINDS, Example, digit_mask, make_example, shape_mask

PICTURE_KINDS = STATIC_KINDS + STILL_KINDS  # the kinds with pixel labels (one picture on every frame)

BACKGROUND_WORD = " background"


def object_masks(example: Example) -> list[tuple[np.ndarray, str, str]]:
    """``(mask [H, W] bool, colour, identity)`` per drawn object of a static example (identity: shape or digit)."""
    if example.kind not in PICTURE_KINDS:
        raise ValueError(f"pixel labels exist for the static kinds {PICTURE_KINDS}, not {example.kind!r}")
    h, w = example.frames.shape[2:]
    m = example.meta
    if example.kind in ("digit", "digit_on_color"):  # digit_on_color's dot is haystack: it reads as background
        x0, y0 = m["cell_xy"]
        return [(digit_mask(m["digit"], h, w, x0, y0, m["height"]), m["color"], str(m["digit"]))]
    return [(shape_mask(o["shape"], h, w, o["cx"], o["cy"], o["r"]), o["color"], o["shape"]) for o in m["objects"]]


def _word(name: str) -> str:
    """How the word appears mid-sentence: " circle", but "7" (SmolLM2 splits " 7" into " " and "7")."""
    return name if name.isdigit() else " " + name


def token_labels(example: Example, merge: int = 28, min_cover: float = 0.15,
                 digit_only: bool = False) -> list[tuple[str, ...]]:
    """Per merged token (order ``t, h-block, w-block``, as the tower emits them): the words it should read as.

    A token whose 28x28 window is at least ``min_cover`` covered by an object reads as that
    object's (colour, identity); the object covering most wins. Others read as background.
    """
    t, _, h, w = example.frames.shape
    gh, gw = h // merge, w // merge
    best = np.zeros((gh, gw))
    words = np.full((gh, gw), -1)
    objects = object_masks(example)
    for i, (mask, _, _) in enumerate(objects):
        cover = mask.reshape(gh, merge, gw, merge).mean(axis=(1, 3))
        take = (cover >= min_cover) & (cover > best)
        best[take], words[take] = cover[take], i
    def named(i):  # digit_only: a digit's tokens read as the digit alone, not diluted by its colour's word
        colour, identity = " " + objects[i][1], _word(objects[i][2])
        return (identity,) if digit_only and identity.isdigit() else (colour, identity)

    per_frame = [(BACKGROUND_WORD,) if i < 0 else named(i) for i in words.ravel()]
    return per_frame * (t // 2)


class WordTargets:
    """Target vectors for word tuples: the mean of their embeddings, rescaled to the mean embedding norm."""

    def __init__(self, tokenizer, embeddings: torch.Tensor):
        self.tokenizer, self.embeddings = tokenizer, embeddings.detach().float()
        self.norm = float(self.embeddings.norm(dim=-1).mean())
        self._cache: dict[tuple[str, ...], torch.Tensor] = {}

    def __call__(self, words: tuple[str, ...]) -> torch.Tensor:
        if words not in self._cache:
            # a word's vector: the mean of its tokens' embeddings (SmolLM2 has one token per word used here)
            v = torch.stack([self.embeddings[self.tokenizer(wd, add_special_tokens=False)["input_ids"]].mean(0)
                             for wd in words]).mean(0)
            self._cache[words] = v * (self.norm / v.norm().clamp_min(1e-6))
        return self._cache[words]

    def batch(self, labels: list[tuple[str, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(targets [N, D], is_object [N] bool)``."""
        return (torch.stack([self(w) for w in labels]),
                torch.tensor([w != (BACKGROUND_WORD,) for w in labels]))


@dataclasses.dataclass
class GroundConfig:
    steps: int = 600
    batch_size: int = 8
    lr: float = 2e-3
    warmup: int = 30
    object_weight: float = 0.75  # share of the loss on object tokens (few) vs background tokens (many)
    seed: int = 0
    device: str = "auto"
    workers: int = 0  # data loader processes (drawing and patchifying is the CPU-bound part)
    kinds: tuple = STATIC_KINDS  # the picture kinds drawn, uniformly: repeat one to weight it ("digit", "digit", ...)
    digit_only: bool = False  # digit tokens target the digit word alone (see token_labels)
    contrastive: float = 0.0  # weight of the cross-entropy over the batch's words (see ground_loss); 0: MSE only
    time_limit_s: float | None = None  # stop early (keeping what was learnt) so a GPU call of 10 minutes is never overrun

    def __post_init__(self):
        if not self.kinds or any(k not in PICTURE_KINDS for k in self.kinds):
            raise ValueError(f"grounding kinds must be among {PICTURE_KINDS}, got {list(self.kinds)}")


def step_examples(cfg: GroundConfig, step: int) -> list[Example]:
    """Static pictures of ``cfg.kinds`` at the training and needle sizes (``frames=2``: one temporal patch)."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 4243, int(step)]))
    sizes = SIZES + NEEDLE_SIZES
    size = sizes[int(rng.integers(len(sizes)))]
    return [make_example("train", 10_000_000 + step * cfg.batch_size + j,
                         kind=str(cfg.kinds[int(rng.integers(len(cfg.kinds)))]), num_frames=2, size=size)
            for j in range(cfg.batch_size)]


def prepare(examples: list[Example], spec, digit_only: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, ...]]]:
    """``(pixel_values, grid_thw, token labels)`` of a batch of examples, as the tower takes them."""
    pixels, grids, labels = [], [], []
    for ex in examples:
        px, grid = patchify_video(ex.frames, spec)
        pixels.append(px)
        grids.append(grid)
        labels += token_labels(ex, digit_only=digit_only)
    return torch.cat(pixels), torch.tensor(grids), labels


class _Batches(torch.utils.data.Dataset):
    def __init__(self, cfg: GroundConfig, spec):
        self.cfg, self.spec = cfg, spec

    def __len__(self):
        return self.cfg.steps

    def __getitem__(self, step):
        return prepare(step_examples(self.cfg, step), self.spec, self.cfg.digit_only)


def ground_loss(visual, batch, targets: WordTargets, object_weight: float, device, contrastive: float = 0.0,
                temperature: float = 0.05):
    """Weighted MSE (relative to the embeddings' squared norm) between the tower's tokens and their word targets.

    ``contrastive > 0`` adds that weight times a cross-entropy over the batch's words, with logits
    ``-distance^2 / (norm^2 * temperature)``, on the object tokens. Why: the ten digit words'
    embeddings lie close together, so MSE is nearly as low for a token at their mean as at the
    right one, and a tower trained on MSE alone left digit tokens at 13% nearest-word accuracy
    (chance 10%) after 1,500 digit-only steps (docs/default-model.md); the cross-entropy pays
    only for telling them apart.
    """
    pixels, grids, labels = batch
    labels = [tuple(lab) for lab in labels]  # a DataLoader worker hands tuples back as lists
    tgt, is_obj = targets.batch(labels)
    out = visual(pixels.to(device, visual.dtype), grid_thw=grids.to(device)).pooler_output.float()
    err = (out - tgt.to(device)).pow(2).sum(-1) / targets.norm ** 2
    is_obj = is_obj.to(device)
    obj = err[is_obj].mean() if is_obj.any() else err.new_zeros(())
    loss = object_weight * obj + (1 - object_weight) * err[~is_obj].mean()
    # which word is nearest, among the words of this batch: the accuracy the language model could read
    uniq = sorted(set(labels))
    table = torch.stack([targets(w) for w in uniq]).to(device)
    dist2 = torch.cdist(out, table).pow(2) / targets.norm ** 2
    true = torch.tensor([uniq.index(w) for w in labels], device=device)
    if contrastive and is_obj.any():
        loss = loss + contrastive * torch.nn.functional.cross_entropy(-dist2[is_obj] / temperature, true[is_obj])
    pred = dist2.detach().argmin(-1)
    acc_obj = (pred[is_obj] == true[is_obj]).float().mean().item() if is_obj.any() else float("nan")
    return loss, {"object_err": obj.item(), "word_acc_objects": acc_obj,
                  "word_acc_all": (pred == true).float().mean().item()}


def ground(model, processor, cfg: GroundConfig, *, log=None) -> list[dict]:
    """Train ``model.model.visual`` in place (stage 0); returns the log records."""
    say = log or (lambda rec: print(json.dumps(rec), flush=True))
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    visual = model.model.visual.to(device).train()
    targets = WordTargets(processor.tokenizer, model.model.language_model.embed_tokens.weight)
    opt = torch.optim.AdamW(visual.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.98))
    history, window, t0 = [], [], time.perf_counter()
    loader = torch.utils.data.DataLoader(_Batches(cfg, processor.spec), batch_size=None, num_workers=cfg.workers,
                                         prefetch_factor=4 if cfg.workers else None,
                                         worker_init_fn=(lambda _: torch.set_num_threads(1)) if cfg.workers else None)
    for step, batch in enumerate(loader):
        if cfg.time_limit_s is not None and time.perf_counter() - t0 > cfg.time_limit_s:
            rec = {"event": "ground stopped (time_limit)", "step": step, "of": cfg.steps,
                   "seconds": round(time.perf_counter() - t0, 1)}
            history.append(rec)
            say(rec)
            break
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        loss, info = ground_loss(visual, batch, targets, cfg.object_weight, device, cfg.contrastive)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(visual.parameters(), 1.0)
        opt.step()
        window.append((loss.item(), info))
        if (step + 1) % 20 == 0 or step + 1 == cfg.steps:
            rec = {"event": "ground", "step": step + 1, "loss": float(np.mean([w[0] for w in window])),
                   **{k: float(np.nanmean([w[1][k] for w in window])) for k in info},
                   "lr": lr, "seconds": round(time.perf_counter() - t0, 1)}
            history.append(rec)
            say(rec)
            window = []
    visual.eval()
    return history


def main(argv=None) -> int:
    import argparse

    from .training import TrainConfig, build

    p = argparse.ArgumentParser(description="Stage 0: ground the default model's vision tower in SmolLM2's word embeddings.")
    p.add_argument("--steps", type=int, default=GroundConfig.steps)
    p.add_argument("--batch-size", type=int, default=GroundConfig.batch_size)
    p.add_argument("--lr", type=float, default=GroundConfig.lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--time-limit-s", type=float, help="stop after this many seconds of training (the tower is still saved)")
    p.add_argument("--kinds", default=",".join(STATIC_KINDS),
                   help="picture kinds, comma-separated; repeat one to weight it (digit,digit,color,shape,count; "
                        "digit_on_color: a digit drawn as needles draw them)")
    p.add_argument("--digit-only", action="store_true", help="digit tokens target the digit word alone")
    p.add_argument("--contrastive", type=float, default=0.0,
                   help="weight of a cross-entropy over the batch's words on object tokens (0: MSE only)")
    p.add_argument("--init", help="continue from this tower: a state dict that --output wrote, or an export's directory")
    p.add_argument("--output", required=True, help="where the tower's state dict goes (.pt); training takes it as --init-vision")
    a = p.parse_args(argv)
    model, processor, _, _ = build(TrainConfig(lora_rank=0, tiny=a.tiny, seed=a.seed, init_vision=a.init))
    ground(model, processor, GroundConfig(steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed, device=a.device,
                                          workers=a.workers, time_limit_s=a.time_limit_s,
                                          kinds=tuple(k.strip() for k in a.kinds.split(",") if k.strip()),
                                          digit_only=a.digit_only, contrastive=a.contrastive))
    torch.save({k: v.detach().cpu() for k, v in model.model.visual.state_dict().items()}, a.output)
    print(json.dumps({"event": "saved", "path": a.output}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
