"""One video, many questions: decode it, encode it and prefill it once, then answer every question from that.

A video question's prompt is the same up to the end of the video (the system turn, the user turn's
start, the video's tokens); only the question after it differs. :class:`VideoSession` samples the
frames, runs the vision tower and prefills that shared prefix once (through UniSparse when sparse),
keeps the language model's cache, and answers each question by prefilling only its own suffix over
that cache and decoding greedily; afterwards the cache is cut back to the prefix (no copy of it is
made per question). Qwen2-VL's multimodal positions are those :func:`videoqa.answer` gives the whole
prompt: the prefix's own positions (``get_rope_index`` on it, once) give the question's suffix and the
decoded tokens their ``rope_deltas``, set before each question, so another call on the same model in
between does no harm. They need two deltas where a video has more temporal patches than its
frame's larger side has merged tokens: transformers 5.x puts the text after a video at the video's
start plus that side (not after its last temporal position, as Qwen2-VL's original code does) and
decodes from the prompt's largest position plus one.

Exactness: with dense attention every answer's tokens are those an independent
:func:`videoqa.answer` call on the same frames gives (the suffix's attention over the cached prefix
is the same computation, chunked). With UniSparse the one difference is that the question's own
tokens attend densely (a prefill over a cache always runs dense, ``unisparse`` records it as
``"cached_prefix"``), where :func:`videoqa.answer` includes them in the sparse prefill.

Timings: :attr:`VideoSession.timings` holds the one-time costs (``decode_video``, ``load_model``,
``preprocess``, ``vision_encoder``, ``prefix_prefill``); every :class:`videoqa.pipeline.Answer`
of the session carries them too, listed in ``Answer.reused``, and its own ``preprocess``,
``prefill`` (the suffix: time to this question's first token), ``generate`` and ``total`` (this
question alone). ``Answer.layers`` holds the prefix's prefill records (the same for every question).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from typing import Callable, Sequence

import torch
from unisparse.recording import device_clock

from .pipeline import (Answer, check_request, greedy_args, load, make_answer, model_inputs, prompt_layout,
                       sample_video, vision_tower)
from .prompt import check_options, check_question
from .sampling import FrameSampling
from .timing import FirstTokenClock, ModuleTimer

SHARED_TIMINGS = ("decode_video", "load_model", "vision_encoder", "prefix_prefill")
_PROBE_QUESTION = "?"  # any question: the prefix ends before it


class VideoSession:
    """A video sampled, encoded and prefilled once; :meth:`ask` answers questions about it.

    Arguments are :func:`videoqa.answer`'s that concern the video and the model (``model``,
    ``sparse``, ``config``, ``sampling`` and its keywords, ``device``, ``dtype``, ``system``,
    ``dense_layers``, ``backend``, ``keep_masks``, ``keep_frames``, ``progress``); per question,
    :meth:`ask` takes the question, its options, ``max_new_tokens`` and ``generate_kwargs``.
    Use it as a context manager, or call :meth:`close`, to free the cache.
    """

    def __init__(self, video, *, model=None, sparse: bool = True, config=None, sampling: FrameSampling | None = None,
                 device=None, dtype=None, system: str | None = None, dense_layers=(), backend: str = "auto",
                 keep_masks: bool = True, keep_frames: bool | int = False,
                 progress: Callable[[str], None] | None = None, **frame_options):
        from .models import set_sparsity

        t_start = time.perf_counter()
        frame_sampling = FrameSampling.from_options(sampling, **frame_options)
        check_request(_PROBE_QUESTION, None, 1, keep_frames)
        self._say = progress or (lambda line: None)
        self.video, self.sparse, self.system, self.keep_frames = video, bool(sparse), system, keep_frames
        self._enable = dict(config=config, dense_layers=dense_layers, backend=backend)
        self.frames = sample_video(video, model, frame_sampling, self._say)
        t_decoded = time.perf_counter()
        self.loaded = loaded = load(model, device, dtype, self._say)
        t_loaded = time.perf_counter()

        probe, inputs = model_inputs(loaded, self.frames, _PROBE_QUESTION, None, system)
        # each question's prompt needs only the video's grid, not its pixels again (they live in the cache)
        self._pixels = (None, probe.grid_thw, probe.pixels_from)
        ids = probe.inputs["input_ids"]
        ends = (ids[0] == loaded.processor.vision_end_id).nonzero().flatten()
        if ends.numel() == 0:
            raise RuntimeError("the prompt has no <|vision_end|> token")
        self.prefix_len = P = int(ends[-1]) + 1  # through the video's last block (one per patch when timestamped)
        self.prefix_ids = ids[:, :P]
        prefix = {k: (v[:, :P] if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v)
                  for k, v in inputs.items()}
        t_prepared = device_clock(loaded.device)

        import unisparse

        model_ = loaded.model
        with loaded.lock:
            self.used = (set_sparsity(loaded, True, **self._enable, ) if self.sparse
                         else set_sparsity(loaded, False))
            vision = vision_tower(model_)
            timer = ModuleTimer(vision, loaded.device) if vision is not None else None
            self._say(f"prefill of the video: {P} tokens ({probe.visual_tokens} visual), "
                      f"{'UniSparse' if self.sparse else 'dense'} attention, once for every question")
            try:
                layout = prompt_layout(loaded, probe) if self.sparse else None  # the video lies in the prefix
                with torch.inference_mode(), unisparse.video_layout(layout), \
                        unisparse.record(keep_masks=keep_masks) as rec:
                    t0 = device_clock(loaded.device)
                    out = model_(**prefix, use_cache=True, logits_to_keep=1)
                    t1 = device_clock(loaded.device)
            finally:
                if timer is not None:
                    timer.remove()
            self._cache = _cache_of(out)
            self._rope_deltas = _rope_deltas(model_)
            self._positions = _prefix_positions(model_, prefix)
        self.layers = list(rec.layers)
        self.timings = {"decode_video": t_decoded - t_start, "load_model": t_loaded - t_decoded,
                        "preprocess": t_prepared - t_loaded, "vision_encoder": timer.total if timer else 0.0,
                        "prefix_prefill": t1 - t0}
        self.questions = 0

    # ------------------------------------------------------------------------------------------------

    def ask(self, question: str, options: Sequence[str] | None = None, *, max_new_tokens: int = 64,
            generate_kwargs: dict | None = None) -> Answer:
        """Answer one question about the session's video (greedy), reusing its prefill. See the module docstring."""
        if self._cache is None:
            raise RuntimeError("this VideoSession is closed")
        t_start = time.perf_counter()
        question, options = check_request(question, options, max_new_tokens)
        loaded, P = self.loaded, self.prefix_len
        prepared, inputs = self._question_inputs(question, options)
        t_prepared = device_clock(loaded.device)
        first = FirstTokenClock(loaded.device)
        gen_args = greedy_args(loaded, max_new_tokens, generate_kwargs, first)
        model_ = loaded.model
        cache_kw = _cache_keyword(model_)
        self._say(f"question {self.questions + 1}: {prepared.num_tokens - P} new tokens over the video's "
                  f"{P} cached ones")
        with loaded.lock:
            self._route()
            suffix_deltas, decode_deltas = self._deltas(prepared.num_tokens)
            _set_rope_deltas(model_, suffix_deltas)
            if decode_deltas is not None:  # the tokens decoded after the suffix take answer()'s positions
                gen_args["logits_processor"].insert(0, _SetRopeDeltas(model_, decode_deltas))
            try:
                with torch.inference_mode(), without_cudnn_attention(loaded.device):
                    t0 = first.start = device_clock(loaded.device)
                    out = model_.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                          **{cache_kw: self._cache}, **gen_args)
                    t_end = device_clock(loaded.device)
            finally:
                _crop(self._cache, P)  # back to the video's prefix for the next question
        t_first = first.time if first.time is not None else t_end
        self.questions += 1
        own = {"preprocess": t_prepared - t_start, "prefill": t_first - t0, "generate": t_end - t_first}
        own["total"] = time.perf_counter() - t_start
        timings = {**{k: self.timings[k] for k in SHARED_TIMINGS}, **own}
        return make_answer(loaded, self.frames, prepared, question, options, out[0, prepared.num_tokens:], timings,
                           list(self.layers), self.sparse, self.used, self.keep_frames,
                           reused=SHARED_TIMINGS, prefix_tokens=P)

    def ask_many(self, questions: Sequence[str], options: Sequence[Sequence[str] | None] | None = None, *,
                 max_new_tokens: int = 64, generate_kwargs: dict | None = None) -> list[Answer]:
        """Answer several questions, each suffix prefilled as :meth:`ask` does, then all decoded as one batch
        over the prefix kept once (:mod:`videoqa.batch_decode`). The same tokens as asking them one by
        one up to float rounding; each :class:`Answer`'s ``generate`` is its share of the batch's decode."""
        from . import batch_decode

        if self._cache is None:
            raise RuntimeError("this VideoSession is closed")
        questions = list(questions)
        options = [None] * len(questions) if options is None else list(options)
        if len(options) != len(questions):
            raise ValueError(f"options must have one entry per question ({len(questions)}), got {len(options)}")
        checked = [check_request(q, o, max_new_tokens) for q, o in zip(questions, options)]
        loaded, P = self.loaded, self.prefix_len
        model_ = loaded.model
        if not hasattr(_language_model(model_), "rope_deltas"):  # no per-row positions: one by one
            return [self.ask(q, o, max_new_tokens=max_new_tokens, generate_kwargs=generate_kwargs) for q, o in checked]
        cache_kw = _cache_keyword(model_)
        eos = loaded.processor.eos_token_ids
        rows = []
        with loaded.lock:
            self._route()
            for question, opts in checked:
                t_start = time.perf_counter()
                prepared, inputs = self._question_inputs(question, opts)
                t_prepared = device_clock(loaded.device)
                suffix_deltas, decode_deltas = self._deltas(prepared.num_tokens)
                _set_rope_deltas(model_, suffix_deltas)
                gen_args = greedy_args(loaded, 1, generate_kwargs, FirstTokenClock(loaded.device))
                n = prepared.num_tokens - P
                try:
                    with torch.inference_mode(), without_cudnn_attention(loaded.device):
                        t0 = device_clock(loaded.device)
                        out = model_.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                              **{cache_kw: self._cache}, **gen_args)
                        t1 = device_clock(loaded.device)
                        own = batch_decode.own_tokens(self._cache, P, P + n)
                finally:
                    _crop(self._cache, P)
                deltas = suffix_deltas if decode_deltas is None else decode_deltas
                first = out[0, prepared.num_tokens:]
                rows.append({"question": question, "options": opts, "prepared": prepared, "kv": own,
                             "first": first, "suffix": n,
                             "decode_deltas": torch.zeros(1, 1, dtype=torch.long) if deltas is None else deltas,
                             "live": max_new_tokens > 1 and int(first[-1]) not in eos,
                             "timings": {"preprocess": t_prepared - t_start, "prefill": t1 - t0}})
            live = [r for r in rows if r["live"]]
            decode_s = 0.0
            if live:
                tail, valid, lengths = batch_decode.padded_tail([r["kv"] for r in live])
                longest = max(lengths)
                first = torch.stack([r["first"][-1:] for r in live])
                pad = int(loaded.processor.eos_token_ids[0])
                # each row's own tokens, padded (only logits processors that read the history see them)
                ids = torch.stack([torch.nn.functional.pad(r["prepared"].inputs["input_ids"][0, P:].to(first.device),
                                                           (0, longest - r["suffix"]), value=pad) for r in live])
                ids = torch.cat([ids, first], 1)
                mask = torch.ones(len(live), longest + 1, dtype=torch.long, device=first.device)  # see batch_decode
                # a row's positions are answer()'s: its first decoded token sits at P + suffix, here at `longest`
                deltas = torch.cat([r["decode_deltas"].reshape(1, 1).to(first.device) + (P + r["suffix"] - longest)
                                    for r in live])
                gen_args = greedy_args(loaded, max_new_tokens - 1, generate_kwargs, FirstTokenClock(loaded.device))
                with torch.inference_mode(), batch_decode.SharedPrefix(model_, self._cache, P, valid):
                    _set_rope_deltas(model_, deltas)
                    t0 = device_clock(loaded.device)
                    out = model_.generate(input_ids=ids, attention_mask=mask, **{cache_kw: tail}, **gen_args)
                    decode_s = device_clock(loaded.device) - t0
                for r, tokens in zip(live, out[:, longest:]):
                    r["first"] = batch_decode.trim(tokens, eos)
        answers = []
        for r in rows:
            self.questions += 1
            own = {**r["timings"], "generate": decode_s / len(live) if r["live"] else 0.0}
            own["total"] = own["preprocess"] + own["prefill"] + own["generate"]
            timings = {**{k: self.timings[k] for k in SHARED_TIMINGS}, **own}
            answers.append(make_answer(loaded, self.frames, r["prepared"], r["question"], r["options"], r["first"],
                                       timings, list(self.layers), self.sparse, self.used, self.keep_frames,
                                       reused=SHARED_TIMINGS, prefix_tokens=P))
        return answers

    def _question_inputs(self, question: str, options):
        """``(prepared, inputs)`` of the whole prompt for a question (the frames' pixels left out: the
        cache holds them), refused when it does not start with the session's prefix."""
        prepared, inputs = model_inputs(self.loaded, self.frames, question, options, self.system, pixels=self._pixels,
                                        text_only=True)
        if not torch.equal(prepared.inputs["input_ids"][:, :self.prefix_len], self.prefix_ids):
            raise RuntimeError("the question's prompt does not start with the session's prefix (the chat "
                               "template puts something before the video that depends on the question)")
        return prepared, inputs

    def _route(self) -> None:
        """The session's attention for what follows: UniSparse when sparse (a suffix runs dense over the cache
        either way; the switch keeps the records honest), dense otherwise."""
        from .models import set_sparsity

        if self.sparse:
            set_sparsity(self.loaded, True, **self._enable)
        else:
            set_sparsity(self.loaded, False)

    def _deltas(self, num_tokens: int):
        """``(rope deltas for the question's suffix, for the tokens decoded after it or None)``: the
        positions :func:`videoqa.answer` gives the same prompt. transformers 5.x's Qwen2-VL places text
        after a video at its start plus the frame's larger side in merged tokens, not after its last
        temporal position, and decodes from the prompt's largest position plus one; where a video has
        more temporal patches than that, the suffix and the decoded tokens need different deltas.
        Without the prefix's positions (a model without ``get_rope_index``) the prefix's own deltas
        serve both."""
        if self._positions is None or self._rope_deltas is None:
            return self._rope_deltas, None
        last, top = self._positions
        P = self.prefix_len
        like = self._rope_deltas
        suffix = torch.full_like(like, last + 1 - P)
        decode = torch.full_like(like, max(top, last + num_tokens - P) + 1 - num_tokens)
        return suffix, (None if torch.equal(suffix, decode) else decode)

    def close(self) -> None:
        """Free the cache (the session answers no more questions)."""
        self._cache = None

    def __enter__(self) -> "VideoSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def answer_many(video, questions: Sequence[str], options: Sequence[Sequence[str] | None] | None = None, *,
                max_new_tokens: int = 64, generate_kwargs: dict | None = None, batch_decode: bool = False,
                **session_kwargs) -> list[Answer]:
    """Answer several questions about one video with one :class:`VideoSession`: one :class:`Answer` each.

    ``options``: None, or one entry per question (None for a free-text question). ``batch_decode``:
    decode the answers as one batch over the shared prefix (:meth:`VideoSession.ask_many`) instead of
    one after another. Other keywords are :class:`VideoSession`'s. Every question is checked before
    the video is touched."""
    questions = [check_question(q) for q in questions]
    if not questions:
        raise ValueError("questions must hold at least one question")
    if options is None:
        options = [None] * len(questions)
    if len(options) != len(questions):
        raise ValueError(f"options must have one entry per question ({len(questions)}), got {len(options)}")
    options = [check_options(o) for o in options]
    with VideoSession(video, **session_kwargs) as session:
        if batch_decode:
            return session.ask_many(questions, options, max_new_tokens=max_new_tokens, generate_kwargs=generate_kwargs)
        return [session.ask(q, o, max_new_tokens=max_new_tokens, generate_kwargs=generate_kwargs)
                for q, o in zip(questions, options)]


def without_cudnn_attention(device):
    """SDPA without its cuDNN backend on a GPU (a no-op elsewhere), for a prefill over a cache.

    A question's suffix attends to the cached video through an explicit mask (its queries and keys
    differ in length). PyTorch 2.11 sends such a call to cuDNN first, and cuDNN builds a new
    execution plan for every new shape: on an H200 the first suffix of each length took 0.76 s over
    16K cached tokens, the same suffixes asked again (same shapes: plans built) 0.05 s
    (``benchmarks/sessions``). Every question and every video has a new length, so a plan is
    never reused; FlashAttention and the memory-efficient kernel need none."""
    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


class _SetRopeDeltas:
    """A logits processor that sets the model's rope deltas once, after the first forward (the suffix's
    prefill), so that the decoding steps take their own."""

    def __init__(self, model, deltas: torch.Tensor):
        self.model, self.deltas, self.done = model, deltas, False

    def __call__(self, input_ids, scores):
        if not self.done:
            _set_rope_deltas(self.model, self.deltas)
            self.done = True
        return scores


def _prefix_positions(model, prefix: dict) -> tuple[int, int] | None:
    """``(position of the prefix's last token, largest position in it)`` under the model's own M-RoPE
    (``get_rope_index`` on the prefix's inputs), or None where the model has none or it cannot run."""
    inner = _language_model(model)
    rope_index = getattr(inner, "get_rope_index", None)
    if rope_index is None:
        return None
    params = inspect.signature(rope_index).parameters
    kwargs = {k: v for k, v in prefix.items() if k in params and k != "input_ids"}
    try:
        positions, _ = rope_index(prefix["input_ids"], **kwargs)
    except (TypeError, ValueError, RuntimeError):
        return None
    if positions is None or positions.dim() != 3:
        return None
    return int(positions[:, 0, -1].max()), int(positions[:, 0].max())


def _crop(cache, length: int) -> None:
    """Cut ``cache`` back to its first ``length`` tokens (a negative ``crop`` removes that many, in
    every transformers release that has ``crop``)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def _cache_keyword(model) -> str:
    """The name ``generate`` takes a cache under: ``cache`` from transformers 5.25, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out):
    for name in ("cache", "past_key_values"):
        cache = getattr(out, name, None)
        if cache is not None:
            return cache
    raise RuntimeError("the model returned no cache from its prefill")


def _language_model(model):
    return getattr(model, "model", model)


def _rope_deltas(model):
    deltas = getattr(_language_model(model), "rope_deltas", None)
    return None if deltas is None else deltas.clone()


def _set_rope_deltas(model, deltas) -> None:
    inner = _language_model(model)
    if hasattr(inner, "rope_deltas"):
        inner.rope_deltas = None if deltas is None else deltas.clone()
