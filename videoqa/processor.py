"""What the pipeline needs of a Qwen2-VL processor, with or without torchvision.

A transformers ``Qwen2VLProcessor`` bundles a tokenizer, a chat template, an image processor and
a video processor. The video processor imports torchvision, and so does building the processor
at all (transformers 5.23 refuses a ``None`` video processor), so on a torch without torchvision
(this project's CPU set-up) no Qwen2-VL processor can be made. :class:`VideoQAProcessor` holds
the parts that work everywhere: the tokenizer (which carries the chat template), the patch
geometry (:class:`videoqa.patchify.PatchSpec`), and, when transformers could build it, the real
video processor, which :func:`videoqa.prompt.build_inputs` then uses for the pixels.

It is pluggable: :meth:`VideoQAProcessor.from_pretrained` reads a model directory (or hub id)
with its own tokenizer, template and ``preprocessor_config.json``; :func:`offline_processor`
gives the byte-level stand-in of :mod:`videoqa.offline` for the random model. Anything with the
same attributes can be passed instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from .patchify import PatchSpec

VIDEO_TOKEN, IMAGE_TOKEN = "<|video_pad|>", "<|image_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"


def torchvision_available() -> bool:
    """True when torchvision imports (it can be installed and still fail to load beside torch)."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


@dataclass
class VideoQAProcessor:
    """Tokenizer + chat template + patch geometry (+ the real video processor when there is one).

    Attributes:
        tokenizer: a transformers tokenizer with Qwen2-VL's special tokens; its ``chat_template``
            renders the messages unless ``chat_template`` is given here.
        spec: patch size, temporal patch, merge size and normalisation of the vision tower.
        chat_template: overrides the tokenizer's template (e.g. a legacy ``chat_template.json``).
        video_processor: a transformers video processor (``Qwen2VLVideoProcessor``), or None.
            When set, pixels go through it; otherwise through :func:`videoqa.patchify.patchify_video`.
        layout: ``"single"`` (one vision block, Qwen2/2.5-VL) or ``"timestamped"`` (one block per
            temporal patch after its time, Qwen3-VL/3.5); see :mod:`videoqa.models.families`.
    """

    tokenizer: object
    spec: PatchSpec = field(default_factory=PatchSpec)
    chat_template: str | None = None
    video_processor: object | None = None
    layout: str = "single"  # how a video is written in the prompt (videoqa.models.families)

    def __post_init__(self):
        ids = self.tokenizer.convert_tokens_to_ids([VIDEO_TOKEN, IMAGE_TOKEN, VISION_START, VISION_END])
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if ids[0] is None or ids[0] == unk:
            raise ValueError(f"the tokenizer has no {VIDEO_TOKEN} token: not a Qwen2-VL tokenizer")
        self.video_token_id, self.image_token_id, self.vision_start_id, self.vision_end_id = ids
        if self.chat_template is None and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template and none was given")
        if self.layout not in ("single", "timestamped"):
            raise ValueError(f"layout must be 'single' or 'timestamped', got {self.layout!r}")

    @property
    def eos_token_ids(self) -> list[int]:
        """Ids that end an answer: the tokenizer's EOS plus ``<|im_end|>``/``<|endoftext|>`` if it has them."""
        found = [self.tokenizer.eos_token_id]
        for tok in ("<|im_end|>", "<|endoftext|>"):
            i = self.tokenizer.convert_tokens_to_ids(tok)
            if i is not None and i != getattr(self.tokenizer, "unk_token_id", None):
                found.append(i)
        return sorted({i for i in found if i is not None})

    def apply_chat_template(self, messages, *, add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` (one ``<|video_pad|>`` per video, not yet expanded)."""
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    @classmethod
    def from_pretrained(cls, path: str, *, use_video_processor: bool | None = None, **kwargs) -> "VideoQAProcessor":
        """From a model directory or hub id: its tokenizer, chat template and patch geometry.

        ``use_video_processor``: None (default) loads transformers' video processor when
        torchvision is importable; False never; True requires it.
        """
        from transformers import AutoTokenizer

        from .models.families import FAMILIES, family

        model_type = _model_type(path, **kwargs)
        fam = family(model_type, path) if model_type is not None else FAMILIES["qwen2_vl"]
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        template = None
        if os.path.isdir(path):
            spec = PatchSpec.from_pretrained(path, default=fam.spec)
            legacy = os.path.join(path, "chat_template.json")
            if not getattr(tokenizer, "chat_template", None) and os.path.isfile(legacy):
                with open(legacy, encoding="utf-8") as f:
                    template = json.load(f)["chat_template"]
        else:
            spec = fam.spec
        video_processor = None
        if use_video_processor or (use_video_processor is None and torchvision_available()):
            from transformers import AutoVideoProcessor

            video_processor = AutoVideoProcessor.from_pretrained(path, **kwargs)
            spec = _spec_of(video_processor)
        return cls(tokenizer, spec, template, video_processor, fam.layout)

    def save_pretrained(self, path) -> None:
        """Write the tokenizer, template and a ``preprocessor_config.json`` in Qwen2-VL's layout."""
        os.makedirs(path, exist_ok=True)
        self.tokenizer.save_pretrained(path)
        if self.chat_template is not None:
            with open(os.path.join(path, "chat_template.jinja"), "w", encoding="utf-8") as f:
                f.write(self.chat_template)
        config = {"image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor",
                  "do_rescale": True, "do_normalize": True, **self.spec.to_dict()}
        with open(os.path.join(path, "preprocessor_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)


def _model_type(path, **kwargs) -> str | None:
    """The checkpoint's ``model_type``; None for a directory holding only a processor (no config.json)."""
    if os.path.isdir(path):
        config = os.path.join(path, "config.json")
        if not os.path.isfile(config):
            return None
        with open(config, encoding="utf-8") as f:
            return json.load(f).get("model_type")
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(path, **kwargs), "model_type", None)


def _spec_of(video_processor) -> PatchSpec:
    return PatchSpec(patch_size=video_processor.patch_size, temporal_patch_size=video_processor.temporal_patch_size,
                     merge_size=video_processor.merge_size, image_mean=tuple(video_processor.image_mean),
                     image_std=tuple(video_processor.image_std), rescale_factor=video_processor.rescale_factor)


def offline_processor(*, use_video_processor: bool | None = None) -> VideoQAProcessor:
    """The byte-level stand-in (:mod:`videoqa.offline`), with transformers' video processor if torchvision imports."""
    from .offline import offline_tokenizer

    video_processor = None
    if use_video_processor or (use_video_processor is None and torchvision_available()):
        from transformers import Qwen2VLVideoProcessor

        video_processor = Qwen2VLVideoProcessor()
    return VideoQAProcessor(offline_tokenizer(), PatchSpec(), None, video_processor)
