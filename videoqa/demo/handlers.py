"""What the page's controls call: run a question (dense, UniSparse or both) and redraw the block map.

Every function here takes and returns plain values, so tests call them directly, without a
browser. Expected failures (no video, an oversize or unreadable file, an empty question, options
with gaps) are raised as :class:`gradio.Error` with one line that says what to do, which the page
shows in a pop-up; anything unexpected is logged with its traceback on the server and shown as one
line too, so a visitor never sees a stack trace.

"Both" runs dense first, then UniSparse, on the same question and settings (each run samples the
frames itself: :func:`videoqa.answer` takes a file, and its timings then cover the same steps).

The UniSparse mode runs the sparse path at any length (:func:`demo_config`: ``min_seq_len=0``):
the demo exists to show which blocks UniSparse selects, and its sample videos make prompts far
shorter than the 32,768 tokens below which the library's default config runs dense attention.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from . import DEFAULT_MAX_UPLOAD_MB, plots, summary
from .samples import SAMPLES_DIR, known_answer, suggestion

log = logging.getLogger("videoqa.demo")

MODES = ("Both", "UniSparse", "Dense")
GALLERY_MAX = 48  # frames shown in the strip (evenly spaced when more were sampled)
THUMBNAIL_PX = 224  # longer side of the frames kept for the strip
MEAN_HEADS = -1  # head menu value for "mean of the heads"
# How a head selected in the video's spatial order is drawn: mapped to frame order, or as selected.
VIEWS = ("in frame order", "as selected")
OPTION_LETTERS = "ABCD"


@dataclass
class DemoResult:
    """One question's runs: the dense and/or UniSparse :class:`videoqa.pipeline.Answer`."""

    dense: object | None = None
    sparse: object | None = None
    device: str | None = None
    right: object | None = None  # the known answer, when the video is a bundled sample asked its suggested question
    reused: frozenset = field(default_factory=frozenset)  # modes whose video prefill an earlier question left

    @property
    def first(self):
        return self.dense if self.dense is not None else self.sparse

    def sparse_layers(self) -> list[int]:
        """Layers whose prefill selected blocks (the ones with a block map to draw), whether the kept
        blocks or all of them were then computed."""
        if self.sparse is None:
            return []
        return [r.layer if r.layer is not None else i for i, r in enumerate(self.sparse.layers)
                if r.selected_density is not None]

    def num_heads(self) -> int:
        for r in self.sparse.layers if self.sparse is not None else []:
            if r.mask_shape is not None:
                return int(r.mask_shape[1])
        return 0


# ----------------------------------------------------------------------------- errors


def one_line(err: BaseException, path: str | None = None) -> str:
    """The error as one line; an uploaded file's long temporary path shortened to its name."""
    text = " ".join(str(err).split()) or type(err).__name__
    if path:
        text = text.replace(str(path), Path(path).name)
    return text[:400]


@contextlib.contextmanager
def readable_errors(path: str | None = None):
    """Turn any exception into a one-line :class:`gradio.Error` (tracebacks go to the server log only)."""
    try:
        yield
    except gr.Error:
        raise
    except (ValueError, OSError) as e:  # VideoError, bad options, a model that cannot load
        raise gr.Error(one_line(e, path), print_exception=False) from None
    except Exception as e:
        log.exception("demo request failed")
        raise gr.Error(f"Internal error ({type(e).__name__}): {one_line(e, path)}. The server log has the details.",
                       print_exception=False) from None


# ----------------------------------------------------------------------------- inputs


def _mb(size: float) -> str:
    if size < 2**20:
        return f"{size / 2**10:.1f} KB"
    return f"{size / 2**20:.1f} MB" if size < 2**30 else f"{size / 2**30:.2f} GB"


def check_video(video, max_upload_bytes: float | None) -> str:
    """The video's path, after checking that there is one, that it exists and is within the upload limit."""
    if isinstance(video, dict):  # a FileData-like payload
        video = video.get("path")
    if not video:
        raise gr.Error("Upload a video or pick a bundled sample first.", print_exception=False)
    path = os.fspath(video)
    try:
        size = os.path.getsize(path)
    except OSError:
        raise gr.Error(f"The video {Path(path).name} is no longer there; upload it again.",
                       print_exception=False) from None
    if max_upload_bytes is not None and size > max_upload_bytes:
        raise gr.Error(f"The video is {_mb(size)}, over this server's upload limit of {_mb(max_upload_bytes)} "
                       f"(set by `videoqa demo --max-upload-mb`).", print_exception=False)
    return path


def check_question(question) -> str:
    if not isinstance(question, str) or not question.strip():
        raise gr.Error("Type a question about the video first.", print_exception=False)
    return question.strip()


def collect_options(options) -> list[str] | None:
    """The filled option boxes, in order: None for a free-text question, else 2-4 options without gaps."""
    texts = [(o or "").strip() for o in options]
    while texts and not texts[-1]:
        texts.pop()
    if not texts:
        return None
    if "" in texts:
        missing = OPTION_LETTERS[texts.index("")]
        raise gr.Error(f"Option {missing} is empty: fill the options in order (A, B, ...) without gaps.",
                       print_exception=False)
    if len(texts) == 1:
        raise gr.Error("A multiple-choice question needs at least two options (A and B); "
                       "clear option A for a free-text question.", print_exception=False)
    return texts


class _Progress:
    """Maps :func:`videoqa.answer`'s progress lines onto a gradio progress bar over one or two runs."""

    STEPS = (("decoding", 0.05), ("loading model", 0.15), ("prefill:", 0.35), ("prefill done", 0.85))

    def __init__(self, progress, runs: int):
        self.progress, self.runs, self.lines = progress, runs, []

    def run(self, index: int, label: str):
        def say(line: str) -> None:
            self.lines.append(f"{label}: {line}")
            if self.progress is None:
                return
            share = next((f for key, f in self.STEPS if line.startswith(key)), 0.5)
            self.progress((index + share) / self.runs, desc=f"{label}: {line}")

        return say


# ----------------------------------------------------------------------------- the answer button


def demo_config(top_p: float = 0.95, block_size: int = 128):
    """The demo's UniSparse config: the method itself at any length (``min_seq_len=0``,
    ``max_density=1.0``), so that the answer shown is the one UniSparse's selection gives.

    The library default (``min_seq_len=32768``) runs dense attention on shorter prompts, where
    selection plus the sparse kernel can be slower than dense (benchmarks/attention/families/),
    and the application computes dense attention on a CPU (videoqa.models.set_sparsity).
    """
    from unisparse import UniSparseConfig

    return UniSparseConfig(top_p=float(top_p), block_size=int(block_size), min_seq_len=0, max_density=1.0)


def run_question(video, question: str, options=(), mode: str = "Both", top_p: float = 0.95, *,
                 block_size: int = 128, fps: float | None = None, max_frames: int | None = None,
                 max_new_tokens: int = 32, model=None, device=None,
                 max_upload_bytes: float | None = DEFAULT_MAX_UPLOAD_MB * 2**20, progress=None) -> DemoResult:
    """Check the inputs, then answer with dense and/or UniSparse prefill. Raises :class:`gradio.Error`."""
    path = check_video(video, max_upload_bytes)
    question = check_question(question)
    opts = collect_options(options)
    if mode not in MODES:
        raise gr.Error(f"Unknown attention mode {mode!r}; choose one of {', '.join(MODES)}.", print_exception=False)
    runs = [m for m in ("Dense", "UniSparse") if mode in (m, "Both")]
    tracker = _Progress(progress, len(runs))
    result = DemoResult()
    with readable_errors(path):
        from ..models import LoadedModel, is_cached, load_model, resolve_name

        config = demo_config(top_p, block_size)
        if progress is not None and not isinstance(model, LoadedModel) and not is_cached(model, device=device):
            progress(0.0, desc=f"loading model {resolve_name(model)} (once per server)")
        loaded = load_model(model, device=device)  # cached per process: loads once
        result.device = str(loaded.device)
        sampling = dict(fps=float(fps) if fps else None, max_frames=int(max_frames) if max_frames else None)
        reused = set()
        for i, label in enumerate(runs):
            session, again = LAST_VIDEO.session(path, loaded, label, config, sampling, tracker.run(i, label))
            a = session.ask(question, opts, max_new_tokens=int(max_new_tokens))
            if again:
                reused.add(label)
            if label == "Dense":
                result.dense = a
            else:
                result.sparse = a
        result.reused = frozenset(reused)
        if result.sparse is not None and result.dense is not None:
            result.sparse.frame_images = result.dense.frame_images  # the same frames: one copy for the strip
        sample = bundled_sample(path)
        result.right = known_answer(sample, question, opts) if sample else None
    if progress is not None:
        progress(1.0, desc="drawing")
    return result


def warm_up(model=None, *, device=None, video: Path | str = SAMPLES_DIR / "shapes.mp4") -> None:
    """One short question in each mode, so that the first visitor's timings are not the first calls'.

    First calls pay one-off costs (on a GPU: Triton compiling the UniSparse kernels, cuBLAS and
    cuDNN picking algorithms; on any device: lazy allocations) that would otherwise land in one
    mode's prefill time and distort the speedup shown.
    """
    from ..pipeline import answer

    for sparse in (False, True):  # answer(), not the page's session cache: a visitor's first question starts afresh
        answer(video, "What moves?", model=model, device=device, sparse=sparse, config=demo_config(),
               num_frames=8, max_new_tokens=1, keep_masks=False)


class LastVideo:
    """The prefilled sessions (:class:`videoqa.session.VideoSession`) of the last video asked about:
    one video at a time, one session per attention mode, so memory stays bounded. A follow-up
    question on the same file with the same model and settings reuses them."""

    def __init__(self):
        self.video, self.sessions, self.lock = None, {}, threading.Lock()

    def session(self, path, loaded, label: str, config, sampling: dict, progress=None):
        """``(session, reused)`` for ``label`` ("Dense" or "UniSparse") on the video at ``path``."""
        from ..session import VideoSession

        st = Path(path).stat()
        video = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, id(loaded))
        settings = (repr(config) if label == "UniSparse" else None, tuple(sorted(sampling.items())))
        with self.lock:
            if video != self.video:
                self.clear()
                self.video = video
            old = self.sessions.get(label)
            if old is not None and old[1] == settings:
                return old[0], True
            if old is not None:
                old[0].close()
            session = VideoSession(path, model=loaded, sparse=label == "UniSparse", config=config,
                                   keep_frames=THUMBNAIL_PX, progress=progress, **sampling)
            self.sessions[label] = (session, settings)
            return session, False

    def clear(self) -> None:
        for session, _ in self.sessions.values():
            session.close()
        self.sessions, self.video = {}, None


LAST_VIDEO = LastVideo()


def frame_gallery(answer, limit: int = GALLERY_MAX) -> list[tuple[np.ndarray, str]]:
    """(image HWC uint8, "t s") for the sampled frames kept in ``answer``, at most ``limit``, evenly spaced."""
    if answer is None or answer.frame_images is None:
        return []
    images, times = answer.frame_images, answer.frames.timestamps_s
    idx = np.unique(np.linspace(0, len(images) - 1, min(limit, len(images))).round().astype(int))
    return [(images[i].permute(1, 2, 0).numpy(), f"{times[i]:.2f} s") for i in idx]


def default_layer(result: DemoResult) -> int | None:
    layers = result.sparse_layers()
    return layers[0] if layers else None


def heatmap(result: DemoResult | None, layer, head, view: str = VIEWS[0]) -> object:
    """The block map of ``layer`` and ``head`` (:data:`MEAN_HEADS`: the mean) of the UniSparse run;
    ``view`` (one of :data:`VIEWS`) draws heads selected in the video's spatial order in frame order
    or as selected."""
    if result is None:
        return plots.message_figure("Ask a question first: the block map appears here.")
    if result.sparse is None:
        return plots.heatmap_figure(None, 0)
    if layer is None:
        layer = default_layer(result)
        if layer is None:
            return plots.message_figure("No layer ran sparse (the prompt is shorter than one block?).")
    head = None if head is None or int(head) == MEAN_HEADS else int(head)
    with readable_errors():
        return plots.heatmap_figure(result.sparse, int(layer), head,
                                    view="selected" if view == VIEWS[1] else "frames")


def outputs(result: DemoResult) -> tuple:
    """The page's outputs for a result: answer, measurements, density plot, block map, layer and head
    controls, frame strip, frame caption, and the result itself (kept per visitor in a ``gr.State``)."""
    layers = result.sparse_layers()
    layer = layers[0] if layers else None
    heads = result.num_heads()
    layer_control = gr.update(minimum=min(layers), maximum=max(layers), value=layer, interactive=True) \
        if layers else gr.update(value=0, interactive=False)
    choices = [("mean of the heads", MEAN_HEADS)] + [(f"head {h}", h) for h in range(heads)]
    head_control = gr.update(choices=choices, value=MEAN_HEADS, interactive=bool(layers))
    first = result.first
    frames = frame_gallery(first)
    caption = (f"**Sampled frames:** {first.frames.count}" +
               (f" (showing {len(frames)})" if len(frames) < first.frames.count else "") +
               f", {first.frames.sample_fps:.2f} per second; the model sees them in pairs (one temporal patch).")
    return (summary.answer_markdown(result.dense, result.sparse, right=result.right),
            summary.metrics_markdown(result.dense, result.sparse, device=result.device, reused=result.reused),
            plots.density_figure(result.sparse),
            heatmap(result, layer, MEAN_HEADS),
            layer_control, head_control, frames, caption, result)


def bundled_sample(path, samples_dir: Path | str = SAMPLES_DIR) -> str | None:
    """The bundled sample's file name when ``path`` holds one (the demo's video box may hand over a
    copy in gradio's cache, so the bytes are compared, not the folder); None otherwise."""
    path, candidate = Path(path), Path(samples_dir) / Path(path).name
    try:
        if not candidate.is_file() or candidate.stat().st_size != path.stat().st_size:
            return None
        return path.name if candidate.read_bytes() == path.read_bytes() else None
    except OSError:
        return None


def pick_sample(file: str | None, samples_dir: Path | str = SAMPLES_DIR) -> tuple:
    """A sample chosen from the menu: its path for the video box, its suggested question and options."""
    if not file:
        return (gr.update(),) * (2 + len(OPTION_LETTERS))
    path = Path(samples_dir) / file
    if Path(file).name != file or not path.is_file():  # a bare name from the menu, nothing like ../x
        raise gr.Error(f"Sample {file} is missing from {samples_dir}.", print_exception=False)
    question, options = suggestion(file)
    options = (options + [""] * len(OPTION_LETTERS))[:len(OPTION_LETTERS)]
    return (str(path), question, *options)
