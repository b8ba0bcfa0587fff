"""videoqa.models.gguf: the plain copy of a GGUF model loads the same weights and tokens, faster,
and a damaged or unwritable cache costs only the speed-up."""

import os

import pytest
import torch

pytest.importorskip("transformers")

from videoqa.models import gguf as C  # noqa: E402
from videoqa.models.smollm2 import GGUF_FILE, smollm2_folder  # noqa: E402

TEXT = "<|im_start|>user\nWhat colour is the circle? The Eiffel Tower is in Paris.<|im_end|>"


@pytest.fixture(scope="module")
def folder():
    try:
        return smollm2_folder()
    except ImportError as e:
        pytest.skip(str(e))


def _same(a, b):
    (ma, ta), (mb, tb) = a, b
    assert ta(TEXT).input_ids == tb(TEXT).input_ids and len(ta) == len(tb)
    sa, sb = ma.state_dict(), mb.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert mb.lm_head.weight.data_ptr() == mb.model.embed_tokens.weight.data_ptr()  # still tied


def test_the_copy_is_the_gguf_model_and_is_read_instead_of_it(folder, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv(C.CACHE_ENV, str(tmp_path))
    reads = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, path, *args, **kwargs):
        reads.append("gguf" if kwargs.get("gguf_file") else "copy")
        bars.append(hf_logging.is_progress_bar_enabled())
        return original(cls, path, *args, **kwargs)

    from transformers.utils import logging as hf_logging

    bars, before = [], hf_logging.is_progress_bar_enabled()

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    first = C.load_gguf_causal_lm(folder, GGUF_FILE)
    copy = C.cache_path(C.Path(folder) / GGUF_FILE, torch.float32)
    assert (copy / "complete").is_file() and not any(p.name.startswith(copy.name + ".tmp") for p in tmp_path.iterdir())
    second = C.load_gguf_causal_lm(folder, GGUF_FILE)
    assert reads == ["gguf", "copy"]  # the second load does not dequantise
    # the copy loads without a progress bar (it takes no time); the bars are back on afterwards
    assert bars == [before, False] and hf_logging.is_progress_bar_enabled() == before
    _same(first, second)

    # a damaged copy is dropped with a warning, and the model still comes back right
    with open(copy / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    with pytest.warns(UserWarning, match="damaged"):
        third = C.load_gguf_causal_lm(folder, GGUF_FILE)
    assert reads == ["gguf", "copy", "copy", "gguf"]
    _same(first, third)
    assert (copy / "complete").is_file() and os.path.getsize(copy / "model.safetensors") > 1e8  # written afresh


def test_off_and_unwritable_caches(tmp_path, monkeypatch):
    monkeypatch.setenv(C.CACHE_ENV, "off")
    assert C.cache_root() is None
    monkeypatch.setenv(C.CACHE_ENV, str(tmp_path / "c"))
    assert C.cache_root() == tmp_path / "c"
    monkeypatch.delenv(C.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.cache_root() == tmp_path / "xdg" / "videoqa"
    # a cache that cannot be written warns and leaves nothing behind
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1))
    with pytest.warns(UserWarning, match="could not keep"):
        C._write(tiny, None, blocker / "copy")
    assert blocker.read_text() == "not a directory"
