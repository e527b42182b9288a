"""The demo's adapter (hub.app_session), its results view and the Gradio app through gradio_client.

Tiny random REST models (tests/tiny_models.py); portraits from the shared data (skipped without it);
speech: demo_assets/espeak_short.wav (espeak-ng, made for the project).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from hub import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from hub.app_session import (
    STREAM_PRESETS,
    AppSession,
    BusyError,
    MicResampler,
    SessionRegistry,
    StreamSlots,
    find_checkpoints,
    load_speech,
    mic_piece_to_float,
)
from hub.engine import EngineSettings, StreamingEngine
from hub.media import read_audio
from tests.tiny_models import tiny_rest_model

REPO = Path(__file__).resolve().parent.parent
SPEECH = REPO / "demo_assets" / "espeak_short.wav"
PORTRAIT = "portraits/sadtalker_art_2.png"
SETTINGS = EngineSettings(steps=2, output_size=64)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def model():
    return tiny_rest_model()


@pytest.fixture
def registry(model, tmp_path):
    reg = SessionRegistry(lambda checkpoint: StreamingEngine(model), config=STREAM_PRESETS["test"],
                          root=tmp_path / "sessions")
    yield reg
    reg.close_all()


@pytest.fixture(scope="module")
def portrait(shared_data):
    return shared_data / PORTRAIT


def _probe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


def _write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _no_face_image(path: Path) -> Path:
    from PIL import Image

    ramp = np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (256, 1, 3))  # (256, 256, 3)
    Image.fromarray(ramp).save(path)
    return path


# ------------------------------------------------------------------------------------------------
# streaming through the adapter
# ------------------------------------------------------------------------------------------------


def test_file_stream_chunks_are_valid_and_final_mp4_has_audio(registry, portrait):
    session = registry.get("s1")
    updates = list(session.stream_file(portrait, SPEECH, "tiny", SETTINGS))
    chunks = [u.chunk_path for u in updates if u.chunk_path is not None]
    assert [u.done for u in updates].count(True) == 1 and updates[-1].done
    assert updates[0].crop is not None and updates[0].crop.shape == (32, 32, 3)
    config = STREAM_PRESETS["test"]
    frames = []
    for i, path in enumerate(chunks):
        streams = _probe(path)
        n = int(streams["video"]["nb_frames"])
        frames.append(n)
        assert float(streams["video"]["duration"]) == pytest.approx(n / FPS, abs=1e-3)
        assert float(streams["audio"]["duration"]) == pytest.approx(n / FPS, abs=1e-3)
        assert (streams["video"]["width"], streams["video"]["height"]) == (64, 64)
        if i == 0:
            assert n == config.first_chunk_frames
        elif i < len(chunks) - 1:
            assert n == config.chunk_frames
    audio = read_audio(SPEECH)
    assert sum(frames) == -(-len(audio) // SAMPLES_PER_FRAME)
    final = _probe(updates[-1].final_path)
    assert final["video"]["codec_name"] == "h264" and final["audio"]["codec_name"] == "aac"
    assert int(final["video"]["nb_frames"]) == sum(frames)
    assert float(final["audio"]["duration"]) == pytest.approx(sum(frames) / FPS, abs=0.05)
    stats = updates[-1].stats
    assert stats["frames"] == sum(frames)
    assert 0 < stats["time_to_first_frame_s"] <= stats["first_chunk_s"]
    assert stats["fps"] > 0 and stats["rtf"] > 0


def test_user_mistakes_are_friendly_value_errors(registry, portrait, tmp_path):
    session = registry.get("s2")
    silent = _write_wav(tmp_path / "silent.wav", np.zeros(SAMPLE_RATE, np.float32))
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(range(200)))
    cases = [
        ((None, SPEECH), "Add a portrait first"),
        ((portrait, None), "Add speech first"),
        ((portrait, silent), "silent"),
        ((portrait, corrupt), "corrupt.wav"),
        ((SPEECH, SPEECH), "not a readable image"),
        ((portrait, portrait), "no audio stream"),
    ]
    for (image, speech), expected in cases:
        with pytest.raises(ValueError, match=expected):
            list(session.stream_file(image, speech, "tiny", SETTINGS))
    no_face = _no_face_image(tmp_path / "ramp.png")
    with pytest.raises(ValueError, match="no face found in the portrait"):
        list(session.stream_file(no_face, SPEECH, "tiny", SETTINGS))
    # the session is usable after every error (locks and slots released)
    assert list(session.stream_file(portrait, SPEECH, "tiny", SETTINGS))[-1].done


def test_too_long_audio_is_refused(tmp_path):
    import dataclasses

    from hub.app_session import DEMO_LIMITS

    long = _write_wav(tmp_path / "long.wav", 0.1 * np.sin(np.arange(3 * SAMPLE_RATE) * 0.05))
    with pytest.raises(ValueError, match="over the limit of 2 s"):
        load_speech(long, dataclasses.replace(DEMO_LIMITS, max_audio_seconds=2.0))


def test_missing_checkpoint_message(portrait, tmp_path):
    from hub.app_session import default_engine_factory

    reg = SessionRegistry(default_engine_factory("cpu"), config=STREAM_PRESETS["test"], root=tmp_path / "s")
    try:
        with pytest.raises(ValueError, match="checkpoints/nope not found"):
            list(reg.get("x").stream_file(portrait, SPEECH, "checkpoints/nope", SETTINGS))
    finally:
        reg.close_all()


def test_busy_when_every_slot_is_taken(model, portrait, tmp_path):
    slots = StreamSlots(1)
    slots.acquire()
    with pytest.raises(BusyError, match="busy"):
        slots.acquire()
    slots.release()
    import dataclasses

    config = dataclasses.replace(STREAM_PRESETS["test"], max_streams=1)
    reg = SessionRegistry(lambda c: StreamingEngine(model), config=config, root=tmp_path / "s")
    try:
        first, second = reg.get("a"), reg.get("b")
        running = first.stream_file(portrait, SPEECH, "tiny", SETTINGS)
        next(running)  # holds the only slot
        with pytest.raises(BusyError, match="busy"):
            next(second.stream_file(portrait, SPEECH, "tiny", SETTINGS))
        with pytest.raises(BusyError, match="already being generated in this tab"):
            next(first.stream_file(portrait, SPEECH, "tiny", SETTINGS))
        running.close()
        assert list(second.stream_file(portrait, SPEECH, "tiny", SETTINGS))[-1].done
    finally:
        reg.close_all()


def test_abandoned_stream_stops_its_thread_and_frees_the_session(registry, portrait):
    session = registry.get("gone")
    stream = session.stream_file(portrait, SPEECH, "tiny", SETTINGS)
    first = next(stream)
    assert first.chunk_path.is_file()
    stream.close()  # what Gradio does when the tab goes away mid-stream
    assert not any(t.name == "rest-app-producer" and t.is_alive() for t in threading.enumerate())
    registry.slots.acquire()  # the slot came back
    registry.slots.release()
    assert session._engine is not None
    registry.close("gone")
    assert session._engine is None and not session.work_dir.exists()
    assert len(registry) == 0


def test_new_stream_removes_the_previous_streams_files(registry, portrait):
    session = registry.get("again")
    first = list(session.stream_file(portrait, SPEECH, "tiny", SETTINGS))[-1].final_path
    second = list(session.stream_file(portrait, SPEECH, "tiny", SETTINGS))[-1].final_path
    assert not first.parent.exists() and second.is_file()


def test_idle_sessions_are_closed(model, tmp_path):
    reg = SessionRegistry(lambda c: StreamingEngine(model), root=tmp_path / "s", idle_seconds=0.05)
    old = reg.get("old")
    old.work_dir.mkdir(parents=True)
    time.sleep(0.1)
    reg.get("new")
    assert not old.work_dir.exists() and len(reg) == 1
    reg.close_all()


def test_live_microphone_stream(registry, portrait):
    session = registry.get("live")
    audio = read_audio(SPEECH)  # (N,) 16 kHz
    at48k = np.interp(np.arange(3 * len(audio)) / 3, np.arange(len(audio)), audio)  # (3N,)
    pieces = (at48k * 32767).astype(np.int16)
    step = 48_000 // 10  # 0.1 s pieces, as Chromium delivers them
    updates = []
    consumer = threading.Thread(target=lambda: updates.extend(session.stream_live(portrait, "tiny", SETTINGS)))
    consumer.start()  # the generator started by start_recording
    for start in range(0, len(pieces), step):  # the microphone's stream handler
        session.live_feed(48_000, pieces[start:start + step])
    final = session.live_stop(wait_seconds=300)  # stop_recording waits for the finished video
    consumer.join(timeout=300)
    assert final is updates[-1] and final.done and final.final_path.is_file()
    n = int(_probe(final.final_path)["video"]["nb_frames"])
    assert abs(n - len(audio) / SAMPLES_PER_FRAME) <= 2  # resampler delay: a few ms at most
    # the next recording starts from an empty feed; a failed live stream also releases live_stop
    session.live_stop()
    with pytest.raises(ValueError, match="No speech arrived"):
        list(session.stream_live(portrait, "tiny", SETTINGS))
    start = time.perf_counter()
    assert session.live_stop(wait_seconds=5) is None
    assert time.perf_counter() - start < 1


def test_live_stream_stops_at_the_time_limit(model, portrait, tmp_path):
    import dataclasses

    config = dataclasses.replace(STREAM_PRESETS["test"], live_max_seconds=0.5)
    session = AppSession(lambda c: StreamingEngine(model), tmp_path / "s", config=config)
    for _ in range(8):  # 2 s of speech-like noise
        session.live_feed(SAMPLE_RATE, (3000 * np.random.default_rng(0).standard_normal(4000)).astype(np.int16))
    updates = list(session.stream_live(portrait, "tiny", SETTINGS))
    assert any("stopped at the limit of 0.5 s" in note for u in updates for note in u.notes)
    assert updates[-1].stats["frames"] == -(-SAMPLE_RATE // 2 // SAMPLES_PER_FRAME)  # 0.5 s, whole frames
    session.close()
    session.cropper.close()


def test_mic_pieces_and_resampler():
    stereo = np.array([[32767, -32768], [16384, 16384]], np.int16)  # (2, 2)
    np.testing.assert_allclose(mic_piece_to_float(stereo), [-0.5 / 32768, 0.5], atol=1e-6)
    t = np.arange(48_000) / 48_000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    resampler = MicResampler()
    out = np.concatenate([resampler.push(48_000, tone[i:i + 4800]) for i in range(0, len(tone), 4800)])
    assert abs(len(out) - SAMPLE_RATE) <= 64
    spectrum = np.abs(np.fft.rfft(out[1000:15000]))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(out[1000:15000])
    assert abs(peak_hz - 440) < 5
    with pytest.raises(ValueError, match="changed from 48000 to 44100"):
        resampler.push(44_100, tone[:100])


def test_find_checkpoints(model, tmp_path):
    model.save_pretrained(tmp_path / "teacher-x")
    model.save_pretrained(tmp_path / "rest-x")
    (tmp_path / "not-a-checkpoint").mkdir()
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"kind": "vae"}))
    (tmp_path / "vae" / "model.safetensors").write_bytes(b"")
    found = find_checkpoints(tmp_path)
    assert [Path(p).name for p in found] == ["rest-x", "teacher-x"]
    assert find_checkpoints(tmp_path / "absent") == []


# ------------------------------------------------------------------------------------------------
# app helpers and results view
# ------------------------------------------------------------------------------------------------


def test_engine_settings_from_widgets():
    import app

    s = app.engine_settings(3, 7.0, 1.5, 2, False, "256", 0.2)
    assert (s.steps, s.seed, s.guidance, s.context_chunks, s.context_noise, s.use_id_sink, s.output_size) == \
        (3, 7, 1.5, 2, 0.2, False, 256)
    assert app.engine_settings(3, None, 1.0, 2, True, "model size").output_size is None
    with pytest.raises(ValueError, match="seed"):
        app.engine_settings(3, -1, 1.0, 2, True, "256")
    with pytest.raises(ValueError, match="context_noise"):
        app.engine_settings(3, 0, 1.0, 2, True, "256", 1.0)
    readout = app.format_readout({"time_to_first_frame_s": 0.5, "first_chunk_s": 0.7, "fps": 30.0, "rtf": 0.8,
                                  "seconds": 2.0, "steps": 4, "algorithmic_latency_ms": 120.0}, done=True)
    assert "0.50 s" in readout and "30.0 fps" in readout and "faster than real time" in readout


def test_results_view(tmp_path):
    from hub.app_results import load_results

    empty = load_results(tmp_path / "results")
    assert "No results yet" in empty.markdown and empty.figure is None
    bench = tmp_path / "results" / "hdtf-val"
    bench.mkdir(parents=True)
    rows = ["method,benchmark,clip,metric,value"]
    for method, base in (("rest", 0.8), ("baseline", 0.6)):
        for clip in ("a", "b"):
            rows += [f"{method},hdtf-val,{clip},sync_conf,{base + 0.1 * (clip == 'b')}",
                     f"{method},hdtf-val,{clip},fid,{40 * base}"]
    (bench / "results.csv").write_text("\n".join(rows) + "\n")
    (bench / "table.md").write_text("| method | sync ↑ |\n|---|---|\n| rest | 0.85 |\n")
    bad = tmp_path / "results" / "broken"
    bad.mkdir()
    (bad / "results.csv").write_text("a,b\n1,2\n")
    view = load_results(tmp_path / "results")
    assert "### hdtf-val" in view.markdown and "| rest | 0.85 |" in view.markdown
    assert "missing columns" in view.markdown and view.benchmarks == ("hdtf-val",)
    assert len(view.figure.data) == 2  # one bar trace per metric panel (one benchmark)
    means = sorted(float(y) for trace in view.figure.data for y in trace.y)
    assert means == pytest.approx(sorted([0.85, 0.65, 32.0, 24.0]))


def test_build_demo_loads_nothing_and_reports_a_missing_checkpoint(tmp_path):
    import app

    calls = []
    demo = app.build_demo(str(tmp_path / "missing-ckpt"), tmp_path / "results",
                          engine_factory=lambda c: calls.append(c))
    config = demo.get_config_file()
    texts = [c.get("props", {}).get("value") for c in config["components"]]
    assert any(isinstance(t, str) and "missing-ckpt not found" in t for t in texts)
    assert calls == [] and len(demo.rest_registry) == 0
    demo.rest_registry.close_all()


# ------------------------------------------------------------------------------------------------
# the running app through gradio_client
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def running_app(model, tmp_path_factory):
    import app

    checkpoint = tmp_path_factory.mktemp("ckpt") / "rest-test"
    model.save_pretrained(checkpoint)
    demo = app.build_demo(str(checkpoint), tmp_path_factory.mktemp("results"),
                          stream_config=STREAM_PRESETS["test"])
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                            show_error=True, quiet=True)
    yield url, str(checkpoint), demo
    demo.close()
    demo.rest_registry.close_all()


@pytest.mark.slow
def test_gradio_client_streams_hls_and_offers_the_mp4(running_app, portrait, tmp_path):
    import httpx
    from gradio_client import Client, handle_file

    url, checkpoint, demo = running_app
    client = Client(url, download_files=False, verbose=False)
    args = (checkpoint, 2, 0, 1.0, 2, True, "128", 0.2)
    job = client.submit(handle_file(str(portrait)), handle_file(str(SPEECH)), *args, api_name="/generate")
    video, readout, _, download = job.result(timeout=120)
    assert video["is_stream"] and video["url"].endswith("playlist.m3u8")
    playlist = httpx.get(video["url"], timeout=10).text
    assert playlist.startswith("#EXTM3U") and ".ts" in playlist
    assert "**done**" in readout and "time to first frame" in readout
    mp4 = tmp_path / "out.mp4"
    mp4.write_bytes(httpx.get(download["url"], timeout=10).content)
    streams = _probe(mp4)
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"

    no_face = _no_face_image(tmp_path / "ramp.png")
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="no face found in the portrait"):
        client.predict(handle_file(str(no_face)), handle_file(str(SPEECH)), *args, api_name="/generate")
