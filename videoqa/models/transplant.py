"""Copying a Llama's weights into Qwen2-VL's text model (the default model's language model).

Qwen2-VL's text model is a Llama with q/k/v biases and multimodal rotary positions; with zero
biases and M-RoPE sections that equal plain RoPE on text it computes what the Llama computes
(``videoqa_training.build`` explains the mapping). The runtime loader of the default model
(:func:`videoqa.models.compact.load_compact`) and the builder of a fresh one both use this.
"""

from __future__ import annotations

import torch


def new_token_rows(embed: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """Rows for ``count`` added tokens: the mean embedding plus noise of 1/10 of the per-dimension std (seeded)."""
    e = embed.detach().float()
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(count, e.shape[1], generator=gen) * (0.1 * e.std(0))
    return (e.mean(0) + noise).to(embed.dtype)


@torch.no_grad()
def transplant_language_model(source: torch.nn.Module, model, *, seed: int = 0) -> None:
    """Copy a Llama's weights into ``model.model.language_model`` by name; new vocabulary rows by :func:`new_token_rows`.

    Every parameter of the target language model is written exactly once (q/k/v biases with zeros);
    a name that does not map, or a shape that differs, raises.
    """
    lm = model.model.language_model
    target = dict(lm.named_parameters())
    written = set()
    for name, tensor in source.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied to the embeddings
        if not name.startswith("model."):
            raise ValueError(f"unexpected source parameter {name!r}")
        key = name[len("model."):]
        if key not in target:
            raise ValueError(f"source parameter {name!r} has no counterpart in Qwen2-VL's text model")
        dst = target[key]
        if key == "embed_tokens.weight":
            n = tensor.shape[0]
            if dst.shape[0] < n or dst.shape[1] != tensor.shape[1]:
                raise ValueError(f"embedding {tuple(tensor.shape)} does not fit {tuple(dst.shape)}")
            dst[:n] = tensor
            dst[n:] = new_token_rows(tensor, dst.shape[0] - n, seed)
        else:
            if dst.shape != tensor.shape:
                raise ValueError(f"{name}: shape {tuple(tensor.shape)} != {tuple(dst.shape)}")
            dst.copy_(tensor)
        written.add(key)
    for key, p in target.items():
        if key.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
            p.zero_()
            written.add(key)
    if set(target) != written:
        raise ValueError(f"target parameters not written: {sorted(set(target) - written)[:5]}")
    if model.lm_head.weight.data_ptr() != lm.embed_tokens.weight.data_ptr():
        raise RuntimeError("lm_head is not tied to the embeddings")
