"""The demo in a real browser: Debian Chromium driven by Playwright, app launched in-process.

A tiny random checkpoint (tests/tiny_models.py) makes the generation fast; what is checked is the
page: the streamed <video> plays and advances and its frames are not blank, the download is an mp4
with audio, the microphone path works with Chromium's fake audio device, and a portrait with no
face shows its message. A screenshot of each state goes to the test's tmp_path.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parent.parent
SPEECH = REPO / "demo_assets" / "espeak_short.wav"  # 2 s of espeak-ng speech
PORTRAIT = "portraits/sadtalker_art_2.png"
TIMEOUT_MS = 60_000

if not CHROMIUM.is_file():
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt install chromium)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

VIDEO_STATE_JS = """v => ({t: v.currentTime, paused: v.paused, ready: v.readyState, w: v.videoWidth, h: v.videoHeight})"""
FRAME_STATS_JS = """v => {
  const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d'); g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let s = 0, s2 = 0, n = 0;
  for (let i = 0; i < d.length; i += 4) { const y = (d[i] + d[i + 1] + d[i + 2]) / 3; s += y; s2 += y * y; n++; }
  const m = s / n; return {mean: m, std: Math.sqrt(Math.max(0, s2 / n - m * m))};
}"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    import app
    from hub.app_session import STREAM_PRESETS
    from tests.tiny_models import tiny_rest_model

    torch.set_num_threads(1)
    checkpoint = tmp_path_factory.mktemp("ckpt") / "rest-browser"
    tiny_rest_model().save_pretrained(checkpoint)
    demo = app.build_demo(str(checkpoint), tmp_path_factory.mktemp("results"), stream_config=STREAM_PRESETS["cpu"])
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True,
                            quiet=True)
    yield url
    demo.close()
    demo.rest_registry.close_all()


def _browser(extra_args=()):
    manager = playwright_api.sync_playwright().start()
    browser = manager.chromium.launch(
        executable_path=str(CHROMIUM),
        args=["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required", *extra_args])
    return manager, browser


@pytest.fixture
def page(app_url):
    manager, browser = _browser()
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app_url, wait_until="load")
    page.wait_for_selector("#generate-btn")
    yield page
    browser.close()
    manager.stop()


def _probe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


def _wait_playing(page, selector: str) -> dict:
    """Wait until the <video> in ``selector`` plays and has advanced; returns its state."""
    video = page.locator(f"{selector} video")
    video.wait_for(state="attached")
    page.wait_for_function(f"""() => {{ const v = document.querySelector('{selector} video');
        return v && v.readyState >= 2 && v.currentTime > 0.3; }}""", timeout=TIMEOUT_MS)
    return video.evaluate(VIDEO_STATE_JS)


def _check_download(page, selector: str, out: Path) -> dict:
    link = page.locator(f"{selector} a[href]").first
    link.wait_for(state="attached")
    href = link.get_attribute("href")
    response = page.request.get(href if href.startswith("http") else page.url.rstrip("/") + "/" + href.lstrip("/"))
    assert response.ok, response.status
    out.write_bytes(response.body())
    return _probe(out)


def test_generate_streams_into_the_page(page, shared_data, tmp_path):
    example = page.locator("tr.tr-body", has_text="espeak_hello.wav")  # the shortest example (4 s)
    if example.count():
        example.first.click()
        page.locator("#speech").get_by_text(re.compile(r"0:0[1-5]")).first.wait_for()
    else:
        page.locator("#portrait input[type=file]").set_input_files(str(shared_data / PORTRAIT))
        page.locator("#speech input[type=file]").set_input_files(str(SPEECH))
    page.locator("#portrait img").first.wait_for(state="visible")
    page.screenshot(path=str(tmp_path / "1-inputs.png"), full_page=True)
    page.locator("#generate-btn").click()
    state = _wait_playing(page, "#video-out")
    page.screenshot(path=str(tmp_path / "2-playing.png"), full_page=True)
    assert state["w"] == 256 and state["h"] == 256, state
    stats = page.locator("#video-out video").evaluate(FRAME_STATS_JS)
    assert stats["std"] > 2.0, f"the playing frame looks blank: {stats}"
    streams = _check_download(page, "#download", tmp_path / "download.mp4")
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    page.locator("#readout").get_by_text("done").wait_for()
    assert re.search(r"time to first frame [\d.]+ s", page.locator("#readout").inner_text())
    page.screenshot(path=str(tmp_path / "3-done.png"), full_page=True)


def test_portrait_without_a_face_shows_the_message(page, tmp_path):
    from PIL import Image

    ramp = np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (256, 1, 3))  # (256, 256, 3)
    Image.fromarray(ramp).save(tmp_path / "no_face.png")
    page.locator("#portrait input[type=file]").set_input_files(str(tmp_path / "no_face.png"))
    page.locator("#speech input[type=file]").set_input_files(str(SPEECH))
    page.locator("#portrait img").first.wait_for(state="visible")
    page.locator("#generate-btn").click()
    message = page.get_by_text("no face found in the portrait").first
    message.wait_for(state="visible")
    page.wait_for_timeout(500)  # let the toast finish fading in
    page.screenshot(path=str(tmp_path / "no-face.png"), full_page=True)


def test_live_microphone_with_fake_audio_device(app_url, shared_data, tmp_path):
    manager, browser = _browser(["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                 f"--use-file-for-fake-audio-capture={SPEECH}"])
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 1000}, permissions=["microphone"])
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app_url, wait_until="load")
        page.get_by_role("tab", name="Live").click()
        page.locator("#live-portrait input[type=file]").set_input_files(str(shared_data / PORTRAIT))
        page.locator("#live-portrait img").first.wait_for(state="visible")
        page.locator("#mic").get_by_role("button", name=re.compile("record", re.I)).first.click()
        page.wait_for_timeout(2500)  # speak (the fake device loops the espeak-ng file)
        page.screenshot(path=str(tmp_path / "live-recording.png"), full_page=True)
        page.locator("#mic").get_by_role("button", name=re.compile("stop", re.I)).first.click()
        state = _wait_playing(page, "#live-video")
        assert state["w"] == 256, state
        streams = _check_download(page, "#live-download", tmp_path / "live.mp4")
        assert streams["audio"]["codec_name"] == "aac"
        assert float(streams["video"]["duration"]) > 1.0
        page.screenshot(path=str(tmp_path / "live-done.png"), full_page=True)
    finally:
        browser.close()
        manager.stop()
