"""An offline tokenizer and chat template in Qwen2-VL's format, for the random stand-in model and tests.

Why: no model hub is reachable here, so neither Qwen2-VL's tokenizer nor its processor can be
downloaded. The pipeline only needs from them what this module rebuilds: a tokenizer that knows
Qwen2-VL's special tokens (``<|im_start|>``, ``<|im_end|>``, ``<|vision_start|>``,
``<|video_pad|>``, ...) and a chat template that renders the ChatML layout Qwen2-VL was trained on::

    <|im_start|>system
    You are a helpful assistant.<|im_end|>
    <|im_start|>user
    <|vision_start|><|video_pad|><|vision_end|>What happens?<|im_end|>
    <|im_start|>assistant

The tokenizer is byte-level with no merges: token id = byte value (0-255), then the special
tokens from 256. It round-trips any UTF-8 text, is deterministic, and needs nothing but the
``tokenizers`` package. A real model directory brings its own tokenizer and template instead
(:meth:`videoqa.processor.VideoQAProcessor.from_pretrained`).
"""

from __future__ import annotations

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
BYTE_TOKENS = 256
VOCAB_SIZE = BYTE_TOKENS + len(SPECIAL_TOKENS)
DEFAULT_SYSTEM = "You are a helpful assistant."

# ChatML with Qwen2-VL's vision markers, no whitespace between tags (so no trimming is needed).
# A message's content is a string or a list of parts ({"type": "video"|"image"|"text", ...});
# the default system turn is added when the caller gives none.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'video' or 'video' in part %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_alphabet() -> dict[int, str]:
    """The byte -> printable character map that byte-level BPE uses (as in GPT-2's tokenizer).

    Printable Latin-1 bytes stand for themselves; the others (controls, space, soft hyphen, ...)
    are moved, in byte order, to code points from 256 up, so every byte is one visible character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    keep = set(printable)
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def offline_tokenizer():
    """A transformers fast tokenizer: bytes 0-255, Qwen2-VL's special tokens from 256, the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in byte_alphabet().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        model_max_length=32768, clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
