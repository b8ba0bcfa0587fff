"""The web demo's functions called directly (no browser): the answer handler, the figures, the error paths.

The random stand-in model runs everything on the CPU; its answers are meaningless, so the tests
check what the page shows about them (the warning, the measurements, the masks drawn) against the
:class:`videoqa.pipeline.Answer` objects they come from, not the words.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("decord")
pytest.importorskip("transformers")
pytest.importorskip("matplotlib")
gr = pytest.importorskip("gradio")

import unisparse  # noqa: E402
from videoqa import answer  # noqa: E402
import videoqa.models.loading as M  # noqa: E402
from videoqa.demo import handlers, plots, summary  # noqa: E402
from videoqa.demo.samples import list_samples, suggestion  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "videoqa" / "assets" / "samples"
SHAPES = SAMPLES / "shapes.mp4"
OPTIONS = ("a red circle", "a blue square", "a green triangle", "nothing")
FAST = dict(fps=1.0, max_frames=8, max_new_tokens=4, block_size=64)  # 8 frames, about 450 tokens: 8 blocks


@pytest.fixture(scope="module")
def loaded():
    return M.load_model("random")


@pytest.fixture(scope="module")
def both(loaded):
    """One "Both" run through the handler, with the progress calls it made."""
    calls = []
    handlers.LAST_VIDEO.clear()  # a first question on this video
    result = handlers.run_question(str(SHAPES), "  What moves from left to right? ", OPTIONS, "Both", 0.6,
                                   model=loaded, progress=lambda f, desc=None: calls.append((f, desc)), **FAST)
    return result, calls


def test_answer_handler_runs_dense_then_unisparse_on_the_same_prompt(both, loaded):
    result, calls = both
    dense, sparse = result.dense, result.sparse
    assert not dense.sparse and sparse.sparse and dense.layers == [] and result.device == "cpu"
    assert dense.question == sparse.question == "What moves from left to right?"
    assert dense.options == sparse.options == list(OPTIONS)
    assert dense.total_tokens == sparse.total_tokens and dense.video_span == sparse.video_span
    assert dense.frames.count == 8 and dense.frames.timestamps_s == sparse.frames.timestamps_s
    assert sparse.config["top_p"] == 0.6 and sparse.config["block_size"] == 64
    assert sparse.config["min_seq_len"] == 0 and sparse.config["max_density"] == 1.0  # the method, any length
    assert 0 < sparse.density < 1 and all(r.path == "sparse" for r in sparse.layers)
    # progress: both runs reported, fractions never go back, and it ends at 1
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    descs = " | ".join(d for _, d in calls)
    assert "Dense: decoding" in descs and "UniSparse: prefill" in descs
    assert any(f < 0.5 for f, d in calls if d.startswith("Dense")) and all(
        f >= 0.5 for f, d in calls if d.startswith("UniSparse"))


def test_outputs_show_answer_measurements_plots_controls_and_frames(both, loaded):
    result, _ = both
    dense, sparse = result.dense, result.sparse
    ans, metrics, density, block_map, layer, head, frames, caption, state = handlers.outputs(result)
    assert state is result
    assert "**UniSparse:**" in ans and "**Dense:**" in ans and "Random stand-in model" in ans
    assert summary.escape(sparse.text) in ans
    # a bundled sample asked its suggested question: the known answer, and which run got it
    assert result.right == "A" and "**Known answer** (from the sample's facts): A \\(a red circle\\)" in ans
    assert ans.count("right") + ans.count("**wrong**") >= 2
    # measurements: the prefill times, the speedup computed from them, tokens and density
    # (the first question on a video: its own prefill plus the video's prefix prefill, which it paid)
    p_d, p_s = (a.timings["prefill"] + a.timings["prefix_prefill"] for a in (dense, sparse))
    assert f"Prefill speedup of UniSparse over dense: {p_d / p_s:.2f}x" in metrics and not result.reused
    assert f"**{p_d:.3f} s**" in metrics and f"**{p_s:.3f} s**" in metrics
    assert f"{sparse.total_tokens} in the prompt, {sparse.visual_tokens} of them visual" in metrics
    assert f"| {sparse.density:.3f} |" in metrics and "no speedup here" in metrics  # CPU: says so
    # density plot: one bar per layer at its density, the mean drawn
    ax = density.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([r.density for r in sparse.layers])
    assert [ln.get_ydata()[0] for ln in ax.lines] == pytest.approx([sparse.density])
    # controls: every layer, every head plus the mean
    n_layers = loaded.model.config.text_config.num_hidden_layers
    n_heads = loaded.model.config.text_config.num_attention_heads
    assert (layer["minimum"], layer["maximum"], layer["value"], layer["interactive"]) == (0, n_layers - 1, 0, True)
    assert [v for _, v in head["choices"]] == [handlers.MEAN_HEADS, *range(n_heads)]
    # the block map shown first: layer 0, the mean of the heads
    shown = block_map.axes[0].images[0].get_array()
    expected = sparse.layers[0].mask[0].float().mean(0).numpy()
    causal = np.tril(np.ones_like(expected, dtype=bool))
    assert np.allclose(np.ma.filled(shown, np.nan)[causal], expected[causal])
    # the frame strip: every sampled frame (scaled down), captioned with its time
    assert [c for _, c in frames] == [f"{t:.2f} s" for t in dense.frames.timestamps_s]
    img = frames[0][0]
    assert img.dtype == np.uint8 and img.shape[2] == 3 and max(img.shape[:2]) <= handlers.THUMBNAIL_PX
    assert img.std() > 0  # a picture, not a blank
    assert "**Sampled frames:** 8" in caption


def test_heatmap_marks_the_video_and_labels_frame_times(both):
    sparse = both[0].sparse
    rec = sparse.layers[2]
    fig = plots.heatmap_figure(sparse, 2, head=1)
    ax, strip = fig.axes[:2]
    mask = rec.mask[0, 1].numpy()
    nb = mask.shape[0]
    shown = np.ma.filled(ax.images[0].get_array(), np.nan)
    causal = np.tril(np.ones((nb, nb), dtype=bool))
    assert np.array_equal(shown[causal], mask[causal].astype(float))
    assert np.isnan(shown[~causal]).all()  # above the diagonal: never computed
    assert ax.images[0].get_extent() == [0, nb * rec.block_size, nb * rec.block_size, 0]  # token coordinates
    # dashed lines exactly at the video's first and end token, on both axes
    vs, ve = sparse.video_span
    xs = sorted({ln.get_xdata()[0] for ln in ax.lines if ln.get_xdata()[0] == ln.get_xdata()[1]})
    ys = sorted({ln.get_ydata()[0] for ln in ax.lines if ln.get_ydata()[0] == ln.get_ydata()[1]})
    assert xs == [vs, ve] and ys == [vs, ve]
    # tick labels: the first frame time of the temporal patch whose tokens start at the tick
    spans = sparse.frame_token_spans()
    ticks = dict(zip(strip.get_xticks(), [t.get_text() for t in strip.get_xticklabels()]))
    by_start = {s[0]: f"{s[2]:.1f}s" for s in spans}
    assert ticks and all(by_start[pos] == label for pos, label in ticks.items())
    assert len(spans) == 4 and spans[0][0] == vs and spans[-1][1] == ve
    # the strip: share of the question's query blocks that kept each key block
    first_q = ve // rec.block_size
    rows = mask[first_q:] & causal[first_q:]
    expected = rows.sum(0) / np.maximum(causal[first_q:].sum(0), 1)
    assert [p.get_height() for p in strip.containers[0]] == pytest.approx(expected.tolist())
    assert "Layer 2, head 1" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="heads 0-3"):
        plots.heatmap_figure(sparse, 2, head=9)
    with pytest.raises(gr.Error):
        handlers.heatmap(both[0], 2, 9)
    assert handlers.heatmap(both[0], 3, handlers.MEAN_HEADS).axes[0].images  # the handler the controls call


def test_heads_selected_in_the_spatial_order_are_drawn_in_frame_order_or_as_selected(loaded, monkeypatch):
    """Video-aware selection (forced here: the random model's heads keep the frame order) records each
    head's order; the block map draws such a head mapped back to frame order, or as it was selected."""
    from unisparse import reordered

    real = reordered.choose

    def head_one_spatial(masks, orders, names, kv_heads, *rest):  # KV head 0 (query heads 0, 1) spatial
        sel = real(masks, orders, names, kv_heads, *rest)
        sel.choice[:, 0] = names.index("spatial")
        heads = sel.order_of_heads()
        stacked = torch.stack([m.expand(masks[0].shape) for m in masks])
        sel.mask = stacked.gather(0, heads[None, :, :, None, None].expand(1, *stacked.shape[1:]))[0]
        return sel

    monkeypatch.setattr(reordered, "choose", head_one_spatial)
    a = answer(SHAPES, "What moves?", model=loaded, num_frames=8, max_new_tokens=1,
               config=unisparse.UniSparseConfig(block_size=64, top_p=0.7, min_seq_len=0, max_density=1.0,
                                                video_aware_min_len=0))
    assert a.layout is not None and a.layout.spans[0].frames == 4
    rec = a.layers[1]
    assert rec.head_orders == ("spatial", "spatial", "frame", "frame")
    mapped = plots.kept_in_frame_order(a, rec)
    assert np.array_equal(mapped[2:], rec.mask[0, 2:].float().numpy())  # frame heads: their own mask
    assert ((mapped[0] > 0) & (mapped[0] < 1)).any()  # a spatial block covers parts of frame blocks
    fig = plots.heatmap_figure(a, 1, head=0)
    shown = np.ma.filled(fig.axes[0].images[0].get_array(), np.nan)
    causal = np.tril(np.ones(mapped.shape[1:], dtype=bool))
    assert np.allclose(shown[causal], mapped[0][causal])
    assert "spatial order drawn in frame order" in fig._suptitle.get_text()
    as_selected = plots.heatmap_figure(a, 1, head=0, view="selected")
    assert np.array_equal(as_selected.axes[0].images[0].get_array(), rec.mask[0, 0].float().numpy())
    assert "spatial order" in as_selected.axes[0].get_xlabel()
    # a frame-order head looks the same in both views
    assert "spatial" not in plots.heatmap_figure(a, 1, head=2, view="selected").axes[0].get_xlabel()
    assert a.to_dict()["layout"][0]["frame_starts"] == list(a.layout.spans[0].frame_starts)
    with pytest.raises(ValueError, match="view"):
        plots.heatmap_figure(a, 1, head=0, view="sideways")


def test_density_plot_and_block_map_of_layers_that_ran_dense(loaded):
    a = answer(SHAPES, "What moves?", model=loaded, num_frames=4, max_new_tokens=1, dense_layers=[0],
               config=unisparse.UniSparseConfig(block_size=64, top_p=0.7, min_seq_len=0, max_density=1.0))
    fig = plots.density_figure(a)
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == pytest.approx([1.0] + [r.density for r in a.layers[1:]])
    assert ax.patches[0].get_hatch() == "//" and ax.patches[1].get_hatch() is None
    assert any("ran dense (dense_layer)" in t.get_text() for t in ax.get_legend().get_texts())
    message = plots.heatmap_figure(a, 0)
    assert not message.axes and "ran dense (dense_layer)" in message.texts[0].get_text()
    assert plots.density_figure(None).texts[0].get_text().startswith("Dense attention only")
    # selected, then computed dense (the CPU default): the selection is still drawn
    cpu = answer(SHAPES, "What moves?", model=loaded, num_frames=4, max_new_tokens=1,
                 config=unisparse.UniSparseConfig(block_size=64, top_p=0.7, min_seq_len=0))
    ax = plots.density_figure(cpu).axes[0]
    assert [p.get_height() for p in ax.patches] == pytest.approx([r.selected_density for r in cpu.layers])
    assert any("computed dense" in t.get_text() for t in ax.get_legend().get_texts())
    assert plots.heatmap_figure(cpu, 0).axes[0].images
    assert handlers.heatmap(None, 0, -1).texts[0].get_text().startswith("Ask a question first")


def test_unisparse_only_and_free_text(loaded):
    result = handlers.run_question(SHAPES, "What happens?", ("", "", "", ""), "UniSparse", 0.9, model=loaded, **FAST)
    assert result.dense is None and result.sparse.options is None and result.sparse.frame_images is not None
    ans, metrics = handlers.outputs(result)[:2]
    assert "**Dense:**" not in ans and "speedup" not in metrics and "option" not in ans


@pytest.mark.parametrize("kwargs, message", [
    (dict(video=None), "Upload a video or pick a bundled sample first"),
    (dict(question="   "), "Type a question"),
    (dict(question=None), "Type a question"),
    (dict(options=("red", "", "blue", "")), "Option B is empty"),
    (dict(options=("only one", "", "", "")), "at least two options"),
    (dict(mode="Sparse-ish"), "Unknown attention mode"),
    (dict(max_upload_bytes=20_000),
     f"The video is {SHAPES.stat().st_size / 1024:.1f} KB, over this server's upload limit of 19.5 KB"),
])
def test_input_errors_are_one_readable_line(loaded, kwargs, message):
    args = dict(video=str(SHAPES), question="What moves?", options=OPTIONS, mode="Both")
    args.update({k: v for k, v in kwargs.items() if k in args})
    extra = {k: v for k, v in kwargs.items() if k not in args}
    with pytest.raises(gr.Error) as e:
        handlers.run_question(args["video"], args["question"], args["options"], args["mode"], model=loaded,
                              **extra, **FAST)
    assert message in e.value.message and "\n" not in e.value.message


def test_oversize_upload_names_sizes_and_the_setting(loaded, tmp_path):
    big = tmp_path / "big.mp4"
    with open(big, "wb") as f:
        f.truncate(3 * 2**20 + 5)  # sparse file: 3 MB without writing them
    with pytest.raises(gr.Error) as e:
        handlers.run_question(str(big), "Q?", model=loaded, max_upload_bytes=2 * 2**20)
    assert e.value.message == ("The video is 3.0 MB, over this server's upload limit of 2.0 MB "
                               "(set by `videoqa demo --max-upload-mb`).")
    assert handlers.check_video(str(SHAPES), None) == str(SHAPES)  # no limit


def test_unreadable_videos_give_one_line_with_the_file_name_not_its_temporary_path(loaded, tmp_path):
    upload_dir = tmp_path / "gradio" / "0123456789abcdef"
    upload_dir.mkdir(parents=True)
    broken = upload_dir / "broken.mp4"
    broken.write_bytes(SHAPES.read_bytes()[:4000])
    text = upload_dir / "notes.mp4"
    text.write_text("not a video\n" * 40)
    for path in (broken, text):
        with pytest.raises(gr.Error) as e:
            handlers.run_question(str(path), "What moves?", model=loaded, **FAST)
        msg = e.value.message
        assert path.name in msg and str(upload_dir) not in msg and "\n" not in msg and "Traceback" not in msg
    with pytest.raises(gr.Error, match="no longer there"):
        handlers.run_question(str(upload_dir / "gone.mp4"), "Q?", model=loaded, **FAST)


def test_unexpected_failures_are_logged_and_shown_as_one_line(loaded, monkeypatch, caplog):
    import videoqa.session

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    monkeypatch.setattr(videoqa.session.VideoSession, "ask", boom)
    with pytest.raises(gr.Error) as e:
        handlers.run_question(str(SHAPES), "Q?", model=loaded, **FAST)
    assert e.value.message == ("Internal error (RuntimeError): CUDA out of memory. Tried to allocate 2 GiB. "
                               "The server log has the details.")
    assert "Traceback" in caplog.text and "CUDA out of memory" in caplog.text  # the server keeps the details


def test_model_output_is_shown_literally():
    assert summary.escape("<script>alert(1)</script> **bold** [x](y)") == \
        r"&lt;script&gt;alert\(1\)&lt;/script&gt; \*\*bold\*\* \[x\]\(y\)"
    assert summary.escape("a\n\nb") == "a b" and summary.escape("  ") == "(empty)"


def test_samples_and_suggestions():
    samples = {s.file: s for s in list_samples()}
    assert {"shapes.mp4", "counting.mp4", "long.mp4"} <= set(samples) and samples["long.mp4"].duration_s == 120
    video, question, *opts = handlers.pick_sample("shapes.mp4")
    assert video == str(SHAPES) and question == suggestion("shapes.mp4")[0] and tuple(opts) == OPTIONS
    video, question, *opts = handlers.pick_sample("vp9.webm")  # no suggestion: a free-text question
    assert video.endswith("vp9.webm") and question and opts == ["", "", "", ""]
    assert all(u == {"__type__": "update"} for u in handlers.pick_sample(None))
    for bad in ("nope.mp4", "../manifest.json", "../samples/shapes.mp4"):
        with pytest.raises(gr.Error, match="missing"):
            handlers.pick_sample(bad)
    assert list_samples(ROOT / "nowhere") == []


def test_build_app_queues_one_request_at_a_time_and_launch_binds_localhost(loaded, monkeypatch):
    from videoqa.demo import ui

    app = ui.build_app(loaded, max_upload_mb=12)
    assert isinstance(app, gr.Blocks) and app._queue.default_concurrency_limit == 1
    ids = {b.elem_id for b in app.blocks.values()}
    assert {"sample", "video", "question", "option-a", "option-d", "mode", "top-p", "ask", "answer", "metrics",
            "density", "heatmap", "layer", "head", "view", "frames", "min-seq-len-note"} <= ids
    note = next(b for b in app.blocks.values() if b.elem_id == "min-seq-len-note")
    assert "32,768 tokens" in note.value and "dense" in note.value
    video = next(b for b in app.blocks.values() if b.elem_id == "video")
    assert "at most 12 MB" in video.label and video.format is None  # no ffmpeg conversion of uploads
    seen = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: seen.update(kw))
    monkeypatch.setattr(handlers, "warm_up", lambda *a, **k: seen.setdefault("warmed", True))
    ui.launch(model=loaded, block=False)
    assert seen["server_name"] == "127.0.0.1" and seen["server_port"] is None and seen["warmed"]
    assert seen["max_file_size"] == 500 * 2**20 and str(SAMPLES) in seen["allowed_paths"]


def test_demo_app_entry_reexports_the_package():
    import importlib.util

    from videoqa.demo import ui

    spec = importlib.util.spec_from_file_location("demo_app_entry", ROOT / "demo" / "app.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    assert entry.build_app is ui.build_app and entry.launch is ui.launch


def test_videoqa_demo_command(monkeypatch):
    import subprocess
    import sys

    from videoqa import cli
    from videoqa.demo import ui

    seen = {}
    monkeypatch.setattr(ui, "launch", lambda **kw: seen.update(kw))
    assert cli.main(["demo", "--port", "8123", "--model", "random", "--max-upload-mb", "64"]) == 0
    assert seen == dict(host="127.0.0.1", port=8123, model="random", device=None, max_upload_mb=64.0)
    assert cli.main(["demo", "--host", "0.0.0.0"]) == 0 and seen["host"] == "0.0.0.0" and seen["port"] is None
    for bad in (["demo", "--port", "0"], ["demo", "--max-upload-mb", "-1"]):
        with pytest.raises(SystemExit):
            cli.main(bad)
    # the command table names the demo lazily: building the parser does not import gradio
    code = "import sys; from videoqa import cli; cli.build_parser(); assert 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_warm_up_runs_both_modes(loaded, monkeypatch):
    seen = []
    import videoqa.pipeline

    real = videoqa.pipeline.answer
    configs = []

    def spy(*a, **k):
        seen.append(k["sparse"])
        configs.append(k["config"])
        return real(*a, **k)

    monkeypatch.setattr(videoqa.pipeline, "answer", spy)
    handlers.warm_up(loaded)
    assert seen == [False, True]
    assert configs[1].min_seq_len == 0  # warms the sparse path (selection and kernel), not the dense fallback
    assert torch.is_grad_enabled()  # nothing left switched off


def test_the_page_says_which_kind_of_model_answers(monkeypatch, tmp_path):
    """The notice above the page: the random stand-in's warning, the embedded default model's
    limits (it knows generated shapes, colours and digits only), nothing for another model."""
    from videoqa.demo.ui import _model_notice

    monkeypatch.delenv("VIDEOQA_MODEL", raising=False)
    assert "Random stand-in model" in _model_notice("random")
    note = _model_notice(None)  # videoqa/assets/default_model, resolved without loading it
    assert "Embedded default model" in note and "--model" in note and "Random" not in note
    (tmp_path / "config.json").write_text("{}")  # a plain checkpoint directory: no marker, no notice
    assert _model_notice(str(tmp_path)) == ""


def test_a_bundled_sample_is_recognised_by_its_bytes_wherever_it_was_copied(tmp_path):
    copy = tmp_path / "shapes.mp4"
    copy.write_bytes(SHAPES.read_bytes())
    assert handlers.bundled_sample(copy) == "shapes.mp4" and handlers.bundled_sample(SHAPES) == "shapes.mp4"
    other = tmp_path / "counting.mp4"
    other.write_bytes(SHAPES.read_bytes())  # a sample's name, another sample's bytes
    assert handlers.bundled_sample(other) is None and handlers.bundled_sample(tmp_path / "missing.mp4") is None
    from videoqa.demo.samples import known_answer

    assert known_answer("shapes.mp4", "What moves from left to right?", ["A. a red circle", "B. a blue square",
                                                                         "C. a green triangle", "D. nothing"]) == "A"
    assert known_answer("shapes.mp4", "What moves?", list(OPTIONS)) is None  # another question: not known


def test_a_follow_up_on_the_same_video_reuses_its_prefill_and_says_so(loaded):
    handlers.LAST_VIDEO.clear()
    first = handlers.run_question(str(SHAPES), "What moves?", (), "Both", 0.6, model=loaded, **FAST)
    again = handlers.run_question(str(SHAPES), "What colour is the square?", (), "Both", 0.6, model=loaded, **FAST)
    assert not first.reused and again.reused == {"Dense", "UniSparse"}
    metrics = handlers.outputs(again)[1]
    assert "Follow-up on the same video" in metrics and "Prefill speedup" not in metrics
    assert again.sparse.prefix_tokens == first.sparse.prefix_tokens
    # other settings (top_p) or another video: prefilled afresh; the dense session survives a top_p change
    other = handlers.run_question(str(SHAPES), "What moves?", (), "Both", 0.9, model=loaded, **FAST)
    assert other.reused == {"Dense"}
    fresh = handlers.run_question(str(SAMPLES / "counting.mp4"), "Which digit?", (), "Both", 0.9, model=loaded, **FAST)
    assert not fresh.reused and len(handlers.LAST_VIDEO.sessions) == 2  # one video kept at a time

