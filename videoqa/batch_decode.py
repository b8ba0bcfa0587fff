"""Decode several questions' answers as one batch over a video prefix that is kept once.

A :class:`videoqa.session.VideoSession` answers questions one after another: each decodes its tokens
alone, so a short video's questions are bound by decoding, not by the prefill the session saves.
Decoding the questions as one batch costs about one question's decode (a decode step reads the
weights once for every row), but a batch of caches would copy the video's cache once per question.
Here the batch's cache holds only each question's own tokens (its suffix and what it decodes); the
attention function registered under :data:`ATTENTION_NAME` adds the video prefix, which every
attention module finds on itself for the duration (one tensor pair per layer, shared by every row:
broadcast, never copied). Per row it softmaxes over the prefix's and its own keys together, which is
attention over the row's whole sequence, in float32.

Each question's suffix is prefilled over the prefix as :meth:`VideoSession.ask` does it (that also
gives the first token); rows are right-padded to the longest suffix. The padding is masked here, by
the attention function, not by the attention mask given to ``generate``: transformers releases
derive decoding positions from the cache length (5.17) or from the mask's running count (5.25),
and with an all-ones mask both give the same position, which a row's rope delta then moves to the
one :func:`videoqa.answer` gives its prompt.
Equal to the questions asked one by one up to float rounding (the softmax is computed in another
order than SDPA's); the tests check the tokens on the stand-in and the default model.
"""

from __future__ import annotations

import torch

ATTENTION_NAME = "videoqa_shared_prefix"
_PREFIX_ATTR = "_videoqa_shared_prefix"


def register() -> None:
    """Register the attention function (and SDPA's mask function, so the padding is masked); idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention of ``query`` ``[B, Hq, n, D]`` over the module's shared prefix ``[1, Hkv, L, D]`` and
    the rows' own ``key``/``value`` ``[B, Hkv, T, D]`` (``attention_mask`` over those T only).
    Returns ``([B, n, Hq, D], None)`` as transformers' attention functions do."""
    prefix = module.__dict__.get(_PREFIX_ATTR)
    if prefix is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    pk, pv, valid = prefix
    b, hq, n, d = query.shape
    hkv, t = key.shape[1], key.shape[2]
    g = hq // hkv
    scale = d ** -0.5 if scaling is None else scaling
    q = query.float().reshape(b, hkv, g * n, d) * scale  # heads kv*g .. kv*g+g-1 share KV head kv
    lp = q @ pk.float().transpose(-1, -2)  # [B, Hkv, g*n, L]: the prefix broadcast over the rows
    lt = (q @ key.float().transpose(-1, -2)).view(b, hkv, g, n, t)
    if valid is not None:  # the padding after each row's suffix; what was decoded after it is all visible
        seen = torch.ones(b, t, dtype=torch.bool, device=lt.device)
        seen[:, :valid.shape[1]] = valid
        lt = lt.masked_fill(~seen.view(b, 1, 1, 1, t), float("-inf"))
    if attention_mask is not None:
        m = attention_mask[..., :t]
        if m.dtype == torch.bool:
            lt = lt.masked_fill(~m.view(b, 1, 1, n, t), float("-inf"))
        else:
            lt = lt + m.float().view(b, 1, 1, n, t)
    lt = lt.view(b, hkv, g * n, t)
    top = torch.maximum(lp.amax(-1, keepdim=True), lt.amax(-1, keepdim=True))
    pp, pt = (lp - top).exp(), (lt - top).exp()
    out = (pp @ pv.float() + pt @ value.float()) / (pp.sum(-1, keepdim=True) + pt.sum(-1, keepdim=True))
    return out.view(b, hq, n, d).to(query.dtype).transpose(1, 2).contiguous(), None


def layer_kv(cache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keys, values)`` of one layer of a transformers cache (``layers`` in 5.x, ``key_cache`` before)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return layers[layer].keys, layers[layer].values
    return cache.key_cache[layer], cache.value_cache[layer]


def own_tokens(cache, start: int, end: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, copies of the cache's keys and values for tokens ``start:end`` (a question's suffix)."""
    layers = getattr(cache, "layers", None)
    count = len(layers) if layers is not None else len(cache.key_cache)
    return [tuple(x[:, :, start:end].clone() for x in layer_kv(cache, i)) for i in range(count)]


class SharedPrefix:
    """While active, every attention module of ``model``'s language model attends to its
    layer's prefix from ``cache`` (its first ``length`` tokens) besides the batch's own keys, of which
    ``valid`` ``[B, S]`` (bool) says which of the first S are real (the rest is padding), and the
    model's text attention is :data:`ATTENTION_NAME`; on exit both are restored."""

    def __init__(self, model, cache, length: int, valid: torch.Tensor | None = None):
        from unisparse.integrations.transformers import text_attention_modules

        self.model, self.cache, self.length, self.valid = model, cache, length, valid
        self.modules = text_attention_modules(model)

    def __enter__(self):
        from unisparse.integrations.transformers import set_text_attention

        register()
        text = getattr(self.model.config, "text_config", None) or self.model.config
        self.previous = text._attn_implementation
        for m in self.modules:
            k, v = layer_kv(self.cache, m.layer_idx)
            m.__dict__[_PREFIX_ATTR] = (k[:, :, :self.length], v[:, :, :self.length], self.valid)
        set_text_attention(self.model, ATTENTION_NAME)
        return self

    def __exit__(self, *exc):
        from unisparse.integrations.transformers import set_text_attention

        for m in self.modules:
            m.__dict__.pop(_PREFIX_ATTR, None)
        set_text_attention(self.model, self.previous)


def padded_tail(suffixes: list[list[tuple[torch.Tensor, torch.Tensor]]]):
    """A cache of the rows' own tokens: ``suffixes[row][layer] = (keys, values)`` ``[1, Hkv, S_row, D]``,
    right-padded with zeros to the longest; returns ``(cache, valid [B, S_max] bool, lengths)``."""
    from transformers import DynamicCache

    lengths = [s[0][0].shape[2] for s in suffixes]
    longest = max(lengths)
    cache = DynamicCache()
    for layer in range(len(suffixes[0])):
        ks, vs = [], []
        for row, s in enumerate(suffixes):
            k, v = s[layer]
            pad = longest - lengths[row]
            ks.append(torch.nn.functional.pad(k, (0, 0, 0, pad)))
            vs.append(torch.nn.functional.pad(v, (0, 0, 0, pad)))
        cache.update(torch.cat(ks), torch.cat(vs), layer)
    valid = torch.zeros(len(suffixes), longest, dtype=torch.bool, device=suffixes[0][0][0].device)
    for row, n in enumerate(lengths):
        valid[row, :n] = True
    return cache, valid, lengths


def trim(tokens: torch.Tensor, eos) -> torch.Tensor:
    """A row's generated tokens up to and including its first end token (the batch pads after it)."""
    eos = {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}
    for i, tok in enumerate(tokens.tolist()):
        if tok in eos:
            return tokens[:i + 1]
    return tokens
