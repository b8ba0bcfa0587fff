"""The demo page in a real headless Chromium, driven by Playwright: what a visitor does and sees.

Two servers run in this process on free local ports (the real :func:`videoqa.demo.launch`, random
stand-in model on the CPU, warm-up included): one with the default upload limit for the visit
itself, one with a 20 KB limit so that an oversize upload can be tried with a small file.

The browser is the system's Chromium (Debian: ``apt-get install chromium``; ``scripts/setup_env.sh``
installs it in CI), driven by the ``playwright`` package from the test extra, which can drive an
existing Chromium without downloading its own. ``$CHROMIUM`` names another binary. Without either,
the tests skip with the reason, except in CI (``$CI`` set), where they fail: a missing browser
must not pass unnoticed there.

``UPDATE_DOCS_SCREENSHOT=1`` also copies the screenshot of the default model's answered page to ``docs/demo.png``.
"""

import os
import re
import shutil
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "videoqa" / "assets" / "samples"
ANSWER_TIMEOUT_MS = 180_000  # a cold, busy 2-core CI machine


def _chromium() -> str | None:
    wanted = os.environ.get("CHROMIUM")
    for candidate in ([wanted] if wanted else ["/usr/bin/chromium", "chromium", "chromium-browser"]):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _requirements():
    """(sync_playwright, chromium path), or fail in CI / skip elsewhere with what is missing."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append("the playwright package (pip install -e '.[test]')")
    for module in ("gradio", "matplotlib", "decord", "transformers"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"the {module} package (pip install -e '.[demo,video]')")
    chromium = _chromium()
    if chromium is None:
        missing.append("a Chromium binary (apt-get install chromium, or set $CHROMIUM)")
    if missing:
        message = "browser test needs " + "; ".join(missing)
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(message + " (CI is set: scripts/run_tests.sh installs them through setup_env.sh and "
                        "setup_browser.sh; see its output)", pytrace=False)
        pytest.skip(message)
    return sync_playwright, chromium


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    sync_playwright, chromium = _requirements()
    args = ["--disable-dev-shm-usage"] + (["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=args, headless=True)
        yield b
        b.close()


def _serve(**kwargs):
    from videoqa.demo import launch

    port = _free_port()
    app = launch(port=port, model="random", device="cpu", block=False, quiet=True, **kwargs)
    return app, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def server(browser):
    app, url = _serve()
    yield url
    app.close()


@pytest.fixture(scope="module")
def small_upload_server(browser):
    app, url = _serve(max_upload_mb=0.02)  # 20 KB: shapes.mp4 (29 KB) is too big, a 4 KB file is not
    yield url
    app.close()


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    page.goto(url, wait_until="load")
    page.wait_for_selector("#sample input")
    return page


def _toasts(page, timeout_ms=60_000) -> list[str]:
    page.locator('[data-testid="toast-text"]').first.wait_for(timeout=timeout_ms)
    return page.locator('[data-testid="toast-text"]').all_inner_texts()


def _type_number(box, value: str) -> None:
    box.fill(value)
    box.press("Enter")


def _wait_idle(page, timeout_ms=60_000) -> None:
    """Until no component shows gradio's "processing" overlay (a queued event still running)."""
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=status-tracker]')]"
                           ".every(e => e.classList.contains('hide'))", timeout=timeout_ms)


def _image_size(locator) -> tuple[int, int, float, float]:
    """(natural width, natural height, shown width, shown height) of an <img>."""
    return tuple(locator.evaluate(
        "e => [e.naturalWidth, e.naturalHeight, e.getBoundingClientRect().width, e.getBoundingClientRect().height]"))


def test_pick_a_sample_ask_and_see_the_answer_and_block_map(browser, server, tmp_path):
    from playwright.sync_api import expect

    page = _open(browser, server)
    assert page.title() == "UniSparse VideoQA"
    expect(page.locator("#model-notice")).to_contain_text("Random stand-in model")
    # pick the shapes sample: its suggested question and options fill in
    page.click("#sample input")
    page.get_by_role("option", name="shapes.mp4").click()
    expect(page.locator("#question textarea")).to_have_value("What moves from left to right?")
    expect(page.locator("#option-a textarea")).to_have_value("a red circle")
    expect(page.locator("#video video")).to_have_count(1)  # the sample is in the player
    # a lower threshold and smaller blocks, so that the map has something to show
    _type_number(page.locator("#top-p input[type=number]"), "0.7")
    page.get_by_text("Frame sampling and generation").click()
    page.get_by_label("Block size (tokens)").click()
    page.get_by_role("option", name="64", exact=True).click()
    page.click("#ask")

    answer = page.locator("#answer")
    expect(answer).to_contain_text("UniSparse:", timeout=ANSWER_TIMEOUT_MS)
    expect(answer).to_contain_text("Dense:")
    expect(answer).to_contain_text("answers are meaningless")  # the random stand-in says so
    metrics = page.locator("#metrics")
    expect(metrics).to_contain_text("Prefill speedup of UniSparse over dense:")
    expect(metrics).to_contain_text("of them visual")
    # the settings reached the run: at top_p 0.7 UniSparse kept fewer than all the blocks
    expect(metrics).to_contain_text(re.compile(r"block density\s+1 \(dense\)\s+0\.\d{3}"))

    heatmap = page.locator("#heatmap img")
    expect(heatmap).to_be_visible()
    nat_w, nat_h, w, h = _image_size(heatmap)
    assert nat_w > 300 and nat_h > 300 and w > 100 and h > 100, (nat_w, nat_h, w, h)
    assert _image_size(page.locator("#density img"))[0] > 300
    frames = page.locator("#frames img")
    expect(frames).to_have_count(20)  # 10 s at 2 frames per second
    expect(page.locator("#frames")).to_contain_text("9.96 s")  # captions carry the frame times
    expect(page.locator("#frames-caption")).to_contain_text("Sampled frames: 20")

    # another layer, then one head: each redraws the map (layer 1's mean of 4 heads is not layer 0's,
    # and a single head's 0/1 map is not the mean)
    for choose in (lambda: _type_number(page.locator("#layer input[type=number]"), "1"),
                   lambda: (page.click("#head input"), page.get_by_role("option", name="head 1", exact=True).click())):
        before = heatmap.get_attribute("src")
        choose()
        expect(heatmap).not_to_have_attribute("src", before, timeout=60_000)
        _wait_idle(page)
        assert _image_size(heatmap)[0] > 300
    expect(page.locator("#head input")).to_have_value("head 1")
    expect(page.locator('[data-testid="toast-text"]')).to_have_count(0)  # no error anywhere

    _wait_idle(page)
    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    page.close()


@pytest.fixture(scope="module")
def default_model_server(browser):
    from videoqa.demo import launch

    port = _free_port()
    app = launch(port=port, model=None, device="cpu", block=False, quiet=True)  # the embedded default model
    yield f"http://127.0.0.1:{port}/"
    app.close()


def test_the_default_model_answers_a_sample_and_the_page_shows_the_known_answer(browser, default_model_server,
                                                                                tmp_path):
    """What a visitor sees first: the embedded default model, a bundled sample, both modes, and
    beside the answers the one the sample's facts give. This page is docs/demo.png
    (``UPDATE_DOCS_SCREENSHOT=1`` retakes it)."""
    from playwright.sync_api import expect

    page = _open(browser, default_model_server)
    expect(page.locator("#model-notice")).to_contain_text("Embedded default model")
    page.click("#sample input")
    page.get_by_role("option", name="shapes.mp4").click()
    expect(page.locator("#question textarea")).to_have_value("What moves from left to right?")
    page.click("#ask")
    answer = page.locator("#answer")
    expect(answer).to_contain_text("Known answer (from the sample's facts): A (a red circle)",
                                   timeout=ANSWER_TIMEOUT_MS)  # written with the answers, at the end
    expect(answer).to_contain_text("Dense:")
    expect(answer).not_to_contain_text("answers are meaningless")
    expect(answer).to_contain_text(re.compile(r"UniSparse: (right|wrong), Dense: (right|wrong)"))
    expect(page.locator("#heatmap img")).to_be_visible()
    _wait_idle(page)
    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "demo.png")
    page.close()


def test_a_second_question_on_the_same_video_reuses_its_prefill(browser, server):
    from playwright.sync_api import expect

    page = _open(browser, server)
    page.click("#sample input")
    page.get_by_role("option", name="counting.mp4").click()
    expect(page.locator("#question textarea")).to_have_value("Which digit is shown last?")
    page.click("#ask")
    metrics = page.locator("#metrics")
    expect(metrics).to_contain_text("Tokens:", timeout=ANSWER_TIMEOUT_MS)
    _wait_idle(page)
    page.locator("#question textarea").fill("Which digit is shown first?")
    page.click("#ask")
    expect(metrics).to_contain_text("Follow-up on the same video", timeout=ANSWER_TIMEOUT_MS)
    expect(metrics).to_contain_text("were reused (Dense, UniSparse)")
    expect(page.locator("#answer")).to_contain_text("Which digit is shown first?")
    page.close()


def test_oversize_upload_is_refused_with_a_message(browser, small_upload_server):
    page = _open(browser, small_upload_server)
    page.locator("#video input[type=file]").set_input_files(str(SAMPLES / "shapes.mp4"))
    texts = _toasts(page)
    assert any("exceed the maximum allowed size" in t and "shapes.mp4" in t for t in texts), texts
    page.close()


def test_corrupt_upload_gives_one_readable_line(browser, small_upload_server, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes((SAMPLES / "shapes.mp4").read_bytes()[:4000])
    page = _open(browser, small_upload_server)
    page.locator("#video input[type=file]").set_input_files(str(broken))
    page.locator("#question textarea").fill("What moves?")
    page.locator("#video video").wait_for()  # the upload has landed
    page.click("#ask")
    page.get_by_text("cannot read broken.mp4 as a video").wait_for(timeout=ANSWER_TIMEOUT_MS)
    texts = _toasts(page)
    ours = [t for t in texts if "broken.mp4" in t]
    assert len(ours) == 1 and "\n" not in ours[0].strip() and "Traceback" not in page.content(), texts
    assert "/tmp/" not in ours[0]  # the upload's temporary path is not shown
    page.close()
