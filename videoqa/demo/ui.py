"""The Gradio page (:func:`build_app`) and the server that serves it (:func:`launch`).

Layout, top to bottom: the inputs (a bundled sample or an upload, the question and up to four
options, dense / UniSparse / both, the Top-P threshold; frame sampling in a folded panel) beside
the answer and the measurements; the density per layer; the block map of a chosen layer and head;
the strip of sampled frames with their times.

Serving choices: the queue runs one request at a time (``default_concurrency_limit=1``): one model
serves every visitor, a second prefill in parallel would only slow both down and skew the
timings, so others wait in line and see their place. The server binds 127.0.0.1 unless told
otherwise, because a demo that runs models on uploaded files should not face a network by
accident. Uploads are capped (``max_upload_mb``, 500 MB by default): gradio refuses a larger file
before it is stored, and :func:`videoqa.demo.handlers.check_video` checks again before decoding.
The theme uses system fonts, so the page loads without reaching any font server.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from . import DEFAULT_MAX_UPLOAD_MB, handlers
from .samples import SAMPLES_DIR, list_samples

TITLE = "UniSparse VideoQA"
MIN_SEQ_LEN_NOTE = ("The demo runs UniSparse at any length to show its selection; production (the library "
                    "default) runs dense below 32,768 tokens, where sparse can be slower (measured on an H200).")
CSS = """
#answer, #metrics { min-height: 2em; }
#frames .caption-label { font-size: 0.75em; }
"""


def theme():
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def _model_notice(model) -> str:
    from ..models.compact import is_compact
    from ..models import RANDOM, LoadedModel, resolve_name

    if isinstance(model, LoadedModel):
        random, path = model.random, model.path
    else:
        path = resolve_name(model)
        random = path == RANDOM
    if random:
        return "> " + handlers.summary.random_warning()
    return ("> " + handlers.summary.default_model_note()) if path and is_compact(path) else ""


def _sampling_defaults(model) -> dict:
    from ..models import LoadedModel, video_defaults

    return dict(model.video_defaults) if isinstance(model, LoadedModel) else video_defaults(model)


def build_app(model=None, *, device=None, max_upload_mb: float | None = DEFAULT_MAX_UPLOAD_MB,
              samples_dir: Path | str = SAMPLES_DIR) -> gr.Blocks:
    """The demo page, with its queue set up (one request at a time).

    Args:
        model: a name or path for :func:`videoqa.models.load_model`, a loaded model, or None for the
            default (loaded on the first question, then cached).
        device: ``"cuda"``, ``"cpu"`` or None (CUDA when available).
        max_upload_mb: the largest video accepted; None for no limit. Pass the same value to
            :meth:`gradio.Blocks.launch` as ``max_file_size`` (:func:`launch` does).
        samples_dir: where the bundled samples and their ``manifest.json`` are.
    """
    limit = None if max_upload_mb is None else float(max_upload_mb) * 2**20
    defaults = _sampling_defaults(model)
    samples = list_samples(samples_dir)

    def on_ask(video, question, opt_a, opt_b, opt_c, opt_d, mode, top_p, block_size, fps, max_frames,
               max_new_tokens, progress=gr.Progress()):
        result = handlers.run_question(video, question, (opt_a, opt_b, opt_c, opt_d), mode, top_p,
                                       block_size=block_size, fps=fps, max_frames=max_frames,
                                       max_new_tokens=max_new_tokens, model=model, device=device,
                                       max_upload_bytes=limit, progress=progress)
        return handlers.outputs(result)

    def on_sample(file):
        return handlers.pick_sample(file, samples_dir)

    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(f"# {TITLE}\nAsk a question about a video. The language model's prefill attention runs "
                    "dense, through **UniSparse** block-sparse attention, or both to compare; below the answer: "
                    "how long prefill took, how many blocks UniSparse kept per layer, and which blocks "
                    "(which frames) a layer and head attended to.")
        gr.Markdown(_model_notice(model), elem_id="model-notice")
        with gr.Row():
            with gr.Column(scale=1):
                sample = gr.Dropdown([(s.label, s.file) for s in samples], value=None, label="Bundled sample",
                                     elem_id="sample")
                size_note = f" (at most {max_upload_mb:g} MB)" if max_upload_mb is not None else ""
                video = gr.Video(label=f"Video: upload one{size_note} or pick a sample", sources=["upload"],
                                 format=None, include_audio=True, elem_id="video", height=260)
                question = gr.Textbox(label="Question", lines=2, placeholder="What happens in this video?",
                                      elem_id="question")
                with gr.Row():
                    options = [gr.Textbox(label=f"Option {letter}", placeholder="(optional)",
                                          elem_id=f"option-{letter.lower()}", min_width=80)
                               for letter in handlers.OPTION_LETTERS]
                gr.Markdown("<small>Leave the options empty for a free-text answer; fill two or more for "
                            "multiple choice (the model is asked for a letter).</small>")
                mode = gr.Radio(list(handlers.MODES), value="Both", label="Attention",
                                info="Both: dense, then UniSparse, on the same frames; shows the speedup.",
                                elem_id="mode")
                top_p = gr.Slider(0.5, 1.0, value=0.95, step=0.01, label="UniSparse Top-P threshold",
                                  info="Share of the estimated attention mass each query block keeps; 1 = all.",
                                  elem_id="top-p")
                gr.Markdown(f"<small>{MIN_SEQ_LEN_NOTE}</small>", elem_id="min-seq-len-note")
                with gr.Accordion("Frame sampling and generation", open=False):
                    block_size = gr.Dropdown([64, 128], value=128, label="Block size (tokens)")
                    fps = gr.Number(value=defaults.get("fps"), label="Frames per second", minimum=0.01)
                    max_frames = gr.Number(value=defaults.get("max_frames"), label="At most this many frames",
                                           precision=0, minimum=2)
                    max_new_tokens = gr.Slider(1, 128, value=32, step=1, label="Answer length limit (tokens)")
                ask = gr.Button("Answer", variant="primary", elem_id="ask")
            with gr.Column(scale=1):
                answer_md = gr.Markdown(elem_id="answer")
                metrics_md = gr.Markdown(elem_id="metrics")
                density = gr.Plot(label="Block density per layer", show_label=False, elem_id="density")
        with gr.Row():
            layer = gr.Slider(0, 1, value=0, step=1, label="Layer", interactive=False, elem_id="layer")
            head = gr.Dropdown([("mean of the heads", handlers.MEAN_HEADS)], value=handlers.MEAN_HEADS,
                               label="Head", interactive=False, elem_id="head")
            view = gr.Radio(list(handlers.VIEWS), value=handlers.VIEWS[0], elem_id="view",
                            label="Heads selected in the video's spatial order",
                            info="Video-aware selection may pick, per head, an order where one spatial position "
                                 "across frames is contiguous; draw those heads mapped to frames or as selected.")
        block_map = gr.Plot(label="Blocks kept (query blocks down, key blocks across; video marked)",
                            show_label=False, elem_id="heatmap")
        frames_md = gr.Markdown(elem_id="frames-caption")
        frames = gr.Gallery(label="Sampled frames", columns=8, height="auto", elem_id="frames",
                            object_fit="contain", allow_preview=True)
        state = gr.State(None, time_to_live=3600)  # a visitor's answers (masks included), dropped after an hour

        sample.change(on_sample, sample, [video, question, *options], queue=False)
        video.upload(lambda: None, None, sample, queue=False)  # an upload replaces the chosen sample
        inputs = [video, question, *options, mode, top_p, block_size, fps, max_frames, max_new_tokens]
        outs = [answer_md, metrics_md, density, block_map, layer, head, frames, frames_md, state]
        ask.click(on_ask, inputs, outs, scroll_to_output=True)
        question.submit(on_ask, inputs, outs)
        layer.input(handlers.heatmap, [state, layer, head, view], block_map)  # the user moved it (not an update)
        head.select(handlers.heatmap, [state, layer, head, view], block_map)  # once per choice (.input fires twice)
        view.select(handlers.heatmap, [state, layer, head, view], block_map)
    app.queue(default_concurrency_limit=1)
    return app


def launch(host: str = "127.0.0.1", port: int | None = None, model=None, *, device=None,
           max_upload_mb: float | None = DEFAULT_MAX_UPLOAD_MB, preload: bool = True,
           block: bool = True, quiet: bool = False) -> gr.Blocks:
    """Build the page and serve it on ``host:port`` (port None: gradio's 7860, or the next free one).

    ``preload`` loads the model before the server starts (a missing model fails here, not on the
    first visitor's question) and warms it up with one short question per mode
    (:func:`videoqa.demo.handlers.warm_up`). ``block=False`` returns once the server runs (tests);
    call ``app.close()`` to stop it.
    """
    if preload:
        from ..models import load_model

        model = load_model(model, device=device)
        handlers.warm_up(model, device=device)
    app = build_app(model, device=device, max_upload_mb=max_upload_mb)
    app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=quiet, show_error=True,
               max_file_size=None if max_upload_mb is None else int(float(max_upload_mb) * 2**20),
               allowed_paths=[str(SAMPLES_DIR)], theme=theme(), css=CSS, inbrowser=False)
    return app
