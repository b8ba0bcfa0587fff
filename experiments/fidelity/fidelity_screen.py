"""Offline screen of block-selection variants on SmolLM2's real q/k (no sparse forward pass).

One dense prefill captures every layer's post-RoPE q and k; the exact block attention mass of
each layer is computed once (both cached under ``--cache``). A variant is then judged by the
exact attention mass its mask recalls at its density, over a sweep of ``top_p``, against the
default selector's curve: a cheap proxy that ranks candidates before the (slow) end-to-end
runs of ``experiments/fidelity/fidelity_variants.py``, which decide.

  python -m experiments.fidelity.fidelity_screen --text prose --variants default temp1.5 --cache /tmp/unisparse_qk
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch


from unisparse import UniSparseConfig
from unisparse.eval.fidelity import corpus_tokens
from videoqa.models.smollm2 import load_smollm2
from unisparse import reference

TOP_PS = (0.95, 0.97, 0.98, 0.985, 0.99, 0.993, 0.995, 0.997)


class _Capture:
    name = "capture"
    block_size = 128

    def __init__(self):
        self.qk = []

    def __call__(self, q, k, scale=None):
        self.qk.append((q.detach().clone(), k.detach().clone(), scale))
        nb = -(-q.shape[2] // self.block_size)
        full = torch.ones(nb, nb, dtype=torch.bool).tril()
        return full.expand(q.shape[0], q.shape[1], nb, nb)


def capture(text: str, length: int, cache: Path):
    path = cache / f"qk_{text}_{length}.pt"
    if path.exists():
        return torch.load(path)
    from unisparse.integrations.transformers import disable, enable

    model, tokenizer = load_smollm2("cpu")
    ids = corpus_tokens(tokenizer, text, length)
    cap = _Capture()
    enable(model, UniSparseConfig(min_seq_len=0), selector=cap, backend="torch")
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        disable(model)
    mass = [reference.true_block_mass(q, k, 128, s) for q, k, s in cap.qk]
    data = {"qk": cap.qk, "mass": mass}
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data


def measure(mask: torch.Tensor, mass: torch.Tensor) -> tuple[float, float]:
    """(density, mean recalled exact mass) of one layer's mask ``[1, Hq, nb, nb]``."""
    nb = mask.shape[-1]
    causal = torch.ones(nb, nb, dtype=torch.bool).tril()
    if mask.shape[1] != mass.shape[1]:
        mask = mask.repeat_interleave(mass.shape[1] // mask.shape[1], dim=1)
    mask = mask & causal
    density = mask.sum().item() / (causal.sum().item() * mask.shape[1])
    recall = (mass * mask).sum(-1).mean().item()
    return density, recall


def main(argv=None):
    from experiments.fidelity.screen_variants import VARIANTS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", choices=["code", "prose"], default="prose")
    p.add_argument("--length", type=int, default=8192)
    p.add_argument("--variants", nargs="+", default=["default"])
    p.add_argument("--top-p", type=float, nargs="+", default=list(TOP_PS))
    p.add_argument("--cache", type=Path, default=Path("/tmp/unisparse_qk"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = capture(args.text, args.length, args.cache)
    for name in args.variants:
        start = time.perf_counter()
        select = VARIANTS.get(name)
        for top_p in args.top_p:
            dens, recs = [], []
            for (q, k, scale), mass in zip(data["qk"], data["mass"]):
                if name == "oracle":  # the exact mass, the default forced blocks and Top-P rule
                    mask = reference.top_p_mask(mass, UniSparseConfig(top_p=top_p))
                else:
                    mask = select(q, k, scale, top_p)
                d, r = measure(mask, mass)
                dens.append(d)
                recs.append(r)
            print(f"{args.text} {name:18} top_p {top_p:.3f} density {sum(dens) / len(dens):.4f} "
                  f"recall {sum(recs) / len(recs):.4f} min-layer-recall {min(recs):.4f}", flush=True)
        print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
