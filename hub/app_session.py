"""Adapter between the demo's widgets and :class:`hub.engine.StreamingEngine` (no Gradio here).

``app.py`` stays thin: every click handler turns widget values into plain Python values and calls
one method of an :class:`AppSession` (one per browser session, kept in a :class:`SessionRegistry`).
A stream runs the engine in a producer thread that writes ~1 s chunks with
:class:`hub.media.ChunkWriter` and hands them to the consumer (the Gradio generator) through a
queue, because Gradio's own per-chunk work runs in series with the generator::

    registry = SessionRegistry(engine_factory=default_engine_factory())
    session = registry.get("browser-session-id")
    for update in session.stream_file("portrait.jpg", "speech.wav", "checkpoints/rest-tiny"):
        show(update.chunk_path, update.stats)      # chunk mp4: H.264 + ALAC, whole frames
    download(update.final_path)                     # the full mp4 (H.264 + AAC) after the last

Live microphone input goes through :meth:`AppSession.live_feed` (called by the microphone's
stream handler with ``(rate, samples)`` pieces) and :meth:`AppSession.stream_live` (the generator
started when recording starts), which ends at :meth:`AppSession.live_stop`.

Every user mistake (missing input, no face, silent / corrupt / too long audio, unknown checkpoint,
too many streams at once) is a ``ValueError`` with a message meant for the page.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hub import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from hub.settings import DEFAULT_LIMITS, REPO_ROOT, InputLimits

__all__ = [
    "DEMO_LIMITS",
    "StreamConfig",
    "STREAM_PRESETS",
    "StreamUpdate",
    "BusyError",
    "StreamSlots",
    "FaceCropper",
    "MicResampler",
    "AppSession",
    "SessionRegistry",
    "EngineFactory",
    "default_engine_factory",
    "find_checkpoints",
    "load_portrait",
    "load_speech",
    "mic_piece_to_float",
]

DEMO_LIMITS = dataclasses.replace(
    DEFAULT_LIMITS, max_file_mb=50.0, max_audio_seconds=60.0, max_image_pixels=25_000_000
)
"""Tighter than the CLI's limits: a public demo on shared hardware."""

CHECKPOINTS_DIR = REPO_ROOT / "checkpoints"
SILENCE_DB = -50.0  # speech quieter than this (RMS, dBFS) is refused as silent


@dataclass(frozen=True)
class StreamConfig:
    """How a stream is cut into chunks for the page and how many may run at once."""

    chunk_seconds: float = 1.0  # length of the video chunks sent to the page
    first_chunk_seconds: float = 0.5  # a shorter first chunk puts a picture up sooner
    push_seconds: float = 0.2  # file audio is pushed to the engine in pieces of this length
    max_streams: int = 2  # streams running at once over all sessions
    busy_wait_seconds: float = 20.0  # how long a file stream waits for a free slot
    live_max_seconds: float = 60.0  # a live stream ends after this much speech
    live_buffer_seconds: float = 10.0  # microphone audio kept while no live stream reads it

    def __post_init__(self) -> None:
        for name in ("chunk_seconds", "first_chunk_seconds", "push_seconds", "live_max_seconds",
                     "live_buffer_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"StreamConfig.{name}={getattr(self, name)}; must be > 0")
        if self.max_streams < 1:
            raise ValueError(f"StreamConfig.max_streams={self.max_streams}; must be >= 1")
        if self.busy_wait_seconds < 0:
            raise ValueError(f"StreamConfig.busy_wait_seconds={self.busy_wait_seconds}; must be >= 0")

    @property
    def chunk_frames(self) -> int:
        return max(1, round(self.chunk_seconds * FPS))

    @property
    def first_chunk_frames(self) -> int:
        return max(1, round(self.first_chunk_seconds * FPS))


STREAM_PRESETS = {
    "cpu": StreamConfig(),
    "gpu": StreamConfig(chunk_seconds=0.5, first_chunk_seconds=0.32, max_streams=4),
    "test": StreamConfig(chunk_seconds=0.4, first_chunk_seconds=0.2, push_seconds=0.1, busy_wait_seconds=0.0),
}


@dataclass
class StreamUpdate:
    """One step of a stream, for the page.

    ``chunk_path``: a new chunk mp4 (or None); ``stats``: the live readout (see
    :meth:`AppSession.stream`); ``final_path``: the full mp4 with audio, set on the last update
    only; ``crop``: the face crop being animated (first update only); ``notes``: things worth a
    warning on the page (several faces, a stream cut at the time limit).
    """

    chunk_path: Path | None = None
    stats: dict = field(default_factory=dict)
    final_path: Path | None = None
    crop: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    done: bool = False


class BusyError(ValueError):
    """Every stream slot is taken."""


class StreamSlots:
    """A counting limit on streams running at once, shared by every session."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sem = threading.BoundedSemaphore(limit)

    def acquire(self, wait_seconds: float = 0.0) -> None:
        """Take a slot or raise :class:`BusyError` after ``wait_seconds``."""
        got = self._sem.acquire(timeout=wait_seconds) if wait_seconds > 0 else self._sem.acquire(blocking=False)
        if not got:
            raise BusyError(
                f"The demo is busy: {self.limit} video(s) are being generated right now. "
                "Please try again in a minute."
            )

    def release(self) -> None:
        self._sem.release()


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------


def load_portrait(path: str | os.PathLike | None, limits: InputLimits = DEMO_LIMITS) -> np.ndarray:
    """The portrait as ``uint8 (H, W, 3)`` RGB; ValueError with a page-ready message otherwise."""
    from hub.media import read_image

    if path is None or str(path) == "":
        raise ValueError("Add a portrait first: upload a photo, take a webcam snapshot or pick an example.")
    return read_image(path, limits=limits)


def load_speech(path: str | os.PathLike | None, limits: InputLimits = DEMO_LIMITS) -> np.ndarray:
    """Speech as ``float32 (N,)`` 16 kHz mono; refuses missing, corrupt, too long or silent audio."""
    from hub.media import read_audio

    if path is None or str(path) == "":
        raise ValueError("Add speech first: upload an audio file, record from the microphone or pick an example.")
    audio = read_audio(path, limits=limits)
    name = Path(path).name
    if len(audio) < SAMPLE_RATE // FPS:
        raise ValueError(f"{name}: the audio is shorter than one video frame (40 ms); use at least a second of speech")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if rms <= 10 ** (SILENCE_DB / 20):
        raise ValueError(f"{name}: the audio is silent (below {SILENCE_DB:.0f} dBFS); use a recording with speech")
    return audio


def mic_piece_to_float(data: np.ndarray) -> np.ndarray:
    """A microphone piece (``int16`` or float, ``(n,)`` or ``(n, channels)``) as float32 mono (n,)."""
    data = np.asarray(data)
    if data.ndim not in (1, 2):
        raise ValueError(f"microphone audio must be (n,) or (n, channels), got shape {data.shape}")
    if np.issubdtype(data.dtype, np.integer):
        audio = data.astype(np.float32) / (float(np.iinfo(data.dtype).max) + 1.0)
    else:
        audio = np.clip(data.astype(np.float32), -1.0, 1.0)
    return audio.mean(axis=1) if audio.ndim == 2 else audio  # (n, C) -> (n,)


class MicResampler:
    """Stateful resampling of microphone pieces to 16 kHz mono (no clicks between pieces)."""

    def __init__(self) -> None:
        self._rate: int | None = None
        self._resampler = None

    def push(self, rate: int, data: np.ndarray) -> np.ndarray:
        """``data`` at ``rate`` Hz -> float32 (m,) at 16 kHz (m may be 0 while the filter fills)."""
        import av

        audio = mic_piece_to_float(data)  # (n,)
        if rate <= 0:
            raise ValueError(f"microphone sample rate {rate}; must be positive")
        if rate == SAMPLE_RATE and self._resampler is None:
            self._rate = rate
            return audio
        if self._rate is not None and rate != self._rate:
            raise ValueError(f"microphone sample rate changed from {self._rate} to {rate} Hz during a recording")
        if self._resampler is None:
            self._rate = rate
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        if len(audio) == 0:
            return audio
        frame = av.AudioFrame.from_ndarray(audio[None], format="flt", layout="mono")  # (1, n)
        frame.sample_rate = rate
        pieces = [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]
        return np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)


class FaceCropper:
    """One shared :class:`hub.face.FaceAnalyzer` (about 1.5 s to open) behind a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._analyzer = None

    def crop(self, image: np.ndarray, size: int) -> tuple[np.ndarray, list[str]]:
        """Square face crop ``uint8 (size, size, 3)`` and warnings (e.g. several faces)."""
        from hub.face import FaceAnalyzer, crop_reference

        with self._lock:
            if self._analyzer is None:
                self._analyzer = FaceAnalyzer()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                crop = crop_reference(image, size, analyzer=self._analyzer, name="the portrait")
        return crop, [str(w.message) for w in caught]

    def close(self) -> None:
        with self._lock:
            if self._analyzer is not None:
                self._analyzer.close()
                self._analyzer = None


# ------------------------------------------------------------------------------------------------
# checkpoints and engines
# ------------------------------------------------------------------------------------------------

EngineFactory = Callable[[str], "StreamingEngine"]  # noqa: F821 (checkpoint folder -> new engine)


def is_rest_checkpoint(path: str | os.PathLike) -> bool:
    """True for a folder with ``model.safetensors`` and a ``config.json`` of kind ``"rest"``."""
    folder = Path(path)
    config = folder / "config.json"
    if not config.is_file() or not (folder / "model.safetensors").is_file():
        return False
    try:
        return json.loads(config.read_text()).get("kind") == "rest"
    except (OSError, ValueError):
        return False


def find_checkpoints(root: str | os.PathLike = CHECKPOINTS_DIR, extra: Iterable[str] = ()) -> list[str]:
    """REST checkpoint folders directly under ``root`` (sorted), plus ``extra`` ones that are
    checkpoints, as strings; the student ``rest-*`` folders first."""
    found: list[str] = []
    for item in extra:
        if item and is_rest_checkpoint(item) and str(item) not in found:
            found.append(str(item))
    base = Path(root)
    if base.is_dir():
        children = sorted(p for p in base.iterdir() if p.is_dir() and is_rest_checkpoint(p))
        children.sort(key=lambda p: not p.name.startswith("rest"))
        for path in children:
            if str(path) not in found and not any(Path(f).resolve() == path.resolve() for f in found):
                found.append(str(path))
    return found


def missing_checkpoint_message(path: str | os.PathLike) -> str:
    folder = Path(path)
    if not folder.exists():
        return (f"Checkpoint {path} not found. Train one (see README: `python -m hub.train ...`) or "
                "start the app with `--checkpoint DIR` pointing at a REST checkpoint folder.")
    return f"{path} is not a REST checkpoint folder (expected config.json of kind 'rest' and model.safetensors)."


def default_engine_factory(device: str | None = None) -> EngineFactory:
    """A factory that loads each checkpoint once (shared weights, read-only) and gives every
    session its own :class:`StreamingEngine` (its own caches and stream state)."""
    import torch

    from hub.engine import StreamingEngine
    from hub.models.rest import RestModel

    models: dict[str, RestModel] = {}
    lock = threading.Lock()
    chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def factory(checkpoint: str) -> StreamingEngine:
        if not is_rest_checkpoint(checkpoint):
            raise ValueError(missing_checkpoint_message(checkpoint))
        key = str(Path(checkpoint).resolve())
        with lock:
            if key not in models:
                models[key] = RestModel.from_pretrained(checkpoint, map_location=chosen)
            model = models[key]
        return StreamingEngine(model, device=chosen)

    return factory


# ------------------------------------------------------------------------------------------------
# one browser session
# ------------------------------------------------------------------------------------------------

_END = object()  # end of the live microphone feed


class AppSession:
    """One browser session: a lazily created engine, its temp folder and its live microphone feed."""

    def __init__(self, engine_factory: EngineFactory, work_dir: str | os.PathLike,
                 cropper: FaceCropper | None = None, slots: StreamSlots | None = None,
                 config: StreamConfig = STREAM_PRESETS["cpu"], limits: InputLimits = DEMO_LIMITS) -> None:
        self.engine_factory = engine_factory
        self.work_dir = Path(work_dir)
        self.cropper = cropper or FaceCropper()
        self.config = config
        self.slots = slots or StreamSlots(config.max_streams)
        self.limits = limits
        self.last_used = time.monotonic()
        self._engine = None
        self._engine_checkpoint: str | None = None
        self._stream_lock = threading.Lock()  # one stream at a time per session
        self._streams = 0
        self._live: queue.Queue = queue.Queue()
        self._live_buffered = 0
        self._live_done = threading.Event()  # set when a live stream ends (see live_stop)
        self._live_result: StreamUpdate | None = None
        self._closed = False

    # -- engine ----------------------------------------------------------------------------
    def engine(self, checkpoint: str):
        """This session's engine for ``checkpoint`` (created on first use or when it changes)."""
        if self._engine is None or self._engine_checkpoint != str(checkpoint):
            self._engine = None
            self._engine = self.engine_factory(str(checkpoint))
            self._engine_checkpoint = str(checkpoint)
        return self._engine

    # -- streams -----------------------------------------------------------------------------
    def stream_file(self, portrait: str | os.PathLike | None, speech: str | os.PathLike | None,
                    checkpoint: str, settings=None) -> Iterator[StreamUpdate]:
        """Stream a video for an uploaded portrait and speech file (see :meth:`stream`)."""
        image = load_portrait(portrait, self.limits)
        audio = load_speech(speech, self.limits)
        step = max(1, round(self.config.push_seconds * SAMPLE_RATE))
        pieces = (audio[i:i + step] for i in range(0, len(audio), step))
        return self.stream(image, pieces, checkpoint, settings, wait_seconds=self.config.busy_wait_seconds)

    def stream_live(self, portrait: str | os.PathLike | None, checkpoint: str,
                    settings=None) -> Iterator[StreamUpdate]:
        """Stream a video from the microphone feed until :meth:`live_stop` (or the time limit)."""
        image = load_portrait(portrait, self.limits)
        updates = self.stream(image, self._live_pieces(), checkpoint, settings, wait_seconds=0.0,
                              max_seconds=self.config.live_max_seconds, on_end=self._live_end)
        return self._record_live(updates)

    def _record_live(self, updates: Iterator[StreamUpdate]) -> Iterator[StreamUpdate]:
        """Pass updates through; keep the final one for :meth:`live_stop` (set even on errors)."""
        try:
            for update in updates:
                if update.done:
                    self._live_result = update
                yield update
        finally:
            self._live_done.set()

    def stream(self, image: np.ndarray, pieces: Iterable[np.ndarray], checkpoint: str, settings=None, *,
               wait_seconds: float = 0.0, max_seconds: float | None = None,
               on_end: Callable[[], None] | None = None) -> Iterator[StreamUpdate]:
        """Animate ``image`` (uint8 (H, W, 3)) with speech ``pieces`` (float32 16 kHz mono).

        Yields a :class:`StreamUpdate` per chunk file; the last one has ``done=True`` and the full
        mp4 in ``final_path``. ``stats`` holds: ``time_to_first_frame_s`` (wall time from the call
        to the first generated frame, incl. face crop and cache prefill), ``first_chunk_s`` (to the
        first chunk file), ``fps`` and ``rtf`` (engine compute), ``frames``, ``seconds``,
        ``chunk_ms_p50``. Raises ValueError for user mistakes and :class:`BusyError` when every
        stream slot is taken. Closing the generator early (a closed tab) stops the producer thread
        and removes the stream's files.
        """
        from hub.engine import EngineSettings

        start = time.perf_counter()
        settings = settings or EngineSettings()
        if not self._stream_lock.acquire(blocking=False):
            raise BusyError("A video is already being generated in this tab; wait for it to finish or press Stop.")
        try:
            self.slots.acquire(wait_seconds)
        except BusyError:
            self._stream_lock.release()
            raise
        out_dir = None
        producer = None
        cancel = threading.Event()
        try:
            self.last_used = time.monotonic()
            self._cleanup_streams()
            engine = self.engine(checkpoint)
            crop, notes = self.cropper.crop(image, engine.config.image_size)
            engine.reset(crop, settings, already_cropped=True)
            self._streams += 1
            out_dir = self.work_dir / f"stream-{self._streams:04d}"
            out = queue.Queue()
            producer = threading.Thread(
                target=self._produce, name="rest-app-producer", daemon=True,
                args=(engine, pieces, out_dir, out, cancel, start,
                      None if max_seconds is None else round(max_seconds * SAMPLE_RATE)))
            producer.start()
            first = True
            while True:
                kind, payload, stats = out.get()
                self.last_used = time.monotonic()
                if kind == "error":
                    raise payload
                update = StreamUpdate(stats=stats)
                if first:
                    update.crop, update.notes, first = crop, list(notes), False
                if kind == "chunk":
                    update.chunk_path = payload
                    yield update
                elif kind == "note":
                    update.notes.append(payload)
                    yield update
                else:  # "done"
                    update.final_path, update.done = payload, True
                    yield update
                    return
        finally:
            cancel.set()
            if on_end is not None:
                on_end()
            if producer is not None:
                producer.join(timeout=30)
            self.slots.release()
            self._stream_lock.release()

    def _produce(self, engine, pieces: Iterable[np.ndarray], out_dir: Path, out: queue.Queue,
                 cancel: threading.Event, start: float, max_samples: int | None) -> None:
        """Producer thread: audio pieces -> engine -> chunk files -> ``out`` queue."""
        from hub.media import ChunkWriter

        writer = ChunkWriter(out_dir, prefix="chunk", full_path=out_dir / "rest-talking-head.mp4")
        frames: list[np.ndarray] = []
        audio: list[np.ndarray] = []
        clock: dict = {"first_frame": None, "first_chunk": None}
        target = [self.config.first_chunk_frames]

        def stats() -> dict:
            s = engine.stats()
            return {
                "time_to_first_frame_s": clock["first_frame"],
                "first_chunk_s": clock["first_chunk"],
                "fps": s["fps"], "rtf": s["rtf"], "frames": s["frames"],
                "seconds": s["frames"] / FPS, "chunk_ms_p50": s["chunk_ms_p50"],
                "algorithmic_latency_ms": s["algorithmic_latency_ms"], "steps": s["steps"],
            }

        def take_ready() -> None:
            for chunk in engine.frames():  # drains the engine's queue (push's return is the same)
                if clock["first_frame"] is None:
                    clock["first_frame"] = time.perf_counter() - start
                frames.append(chunk.frames)  # (n, H, W, 3)
                audio.append(chunk.audio)  # (n * 640,)

        def write(final: bool) -> None:
            while frames and (final or sum(len(f) for f in frames) >= target[0]):
                joined = np.concatenate(frames)  # (t, H, W, 3)
                sound = np.concatenate(audio)  # (t * 640,)
                n = len(joined) if final else target[0]
                path = writer.write(joined[:n], sound[: n * SAMPLES_PER_FRAME])
                frames[:] = [joined[n:]] if n < len(joined) else []
                audio[:] = [sound[n * SAMPLES_PER_FRAME:]] if n < len(joined) else []
                target[0] = self.config.chunk_frames
                if clock["first_chunk"] is None:
                    clock["first_chunk"] = time.perf_counter() - start
                out.put(("chunk", path, stats()))

        try:
            received = 0
            for piece in pieces:
                if cancel.is_set():
                    writer.abort()
                    return
                if max_samples is not None and received + len(piece) > max_samples:
                    piece = piece[: max_samples - received]
                    out.put(("note", f"Live stream stopped at the limit of {max_samples / SAMPLE_RATE:g} s.",
                             stats()))
                    engine.push(piece)
                    received += len(piece)
                    break
                engine.push(piece)
                received += len(piece)
                take_ready()
                write(final=False)
            if cancel.is_set():
                writer.abort()
                return
            if received == 0:
                raise ValueError("No speech arrived: record for at least a second.")
            engine.flush()
            take_ready()
            write(final=True)
            full = writer.close()
            out.put(("done", full, stats()))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            writer.abort()
            out.put(("error", exc if isinstance(exc, Exception) else RuntimeError(str(exc)), {}))

    def _cleanup_streams(self) -> None:
        """Remove the files of finished streams (Gradio has copied what it serves)."""
        if self.work_dir.is_dir():
            for child in self.work_dir.iterdir():
                if child.name.startswith("stream-"):
                    shutil.rmtree(child, ignore_errors=True)

    # -- live microphone -------------------------------------------------------------------------
    def live_feed(self, rate: int, data: np.ndarray) -> None:
        """Queue one microphone piece (called by the microphone's stream handler)."""
        n = len(data)
        if self._live_buffered + n > self.config.live_buffer_seconds * max(int(rate), 1):
            return  # nobody is reading (busy or stopped): drop rather than grow without bound
        self._live_buffered += n
        self._live.put((int(rate), np.asarray(data)))

    def live_stop(self, wait_seconds: float = 0.0) -> StreamUpdate | None:
        """End the live feed: the running live stream flushes and finishes its video.

        With ``wait_seconds`` > 0, wait that long for the live stream to end and return its final
        update (None if it failed or did not end in time). The page uses this to show the
        download, since Gradio drops the last update of the generator started by start_recording
        once recording has stopped (seen with gradio 6.31 in Chromium).
        """
        self._live.put(_END)
        if wait_seconds <= 0 or not self._live_done.wait(wait_seconds):
            return None
        result, self._live_result = self._live_result, None
        self._live_done.clear()
        return result

    def _live_pieces(self) -> Iterator[np.ndarray]:
        resampler = MicResampler()
        feed = self._live  # this recording's queue (replaced by _live_end for the next one)
        while True:
            item = feed.get()
            if item is _END:
                return
            rate, data = item
            self._live_buffered = max(0, self._live_buffered - len(data))
            yield resampler.push(rate, data)

    def _live_end(self) -> None:
        """After a live stream: unblock its reader, start the next recording with a fresh queue."""
        self._live.put(_END)
        self._live = queue.Queue()
        self._live_buffered = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        """Free the engine and remove the session's files (idempotent)."""
        self._closed = True
        self._live.put(_END)  # unblocks a live stream still waiting for audio
        self._live_done.set()
        self._engine = None
        shutil.rmtree(self.work_dir, ignore_errors=True)


class SessionRegistry:
    """Sessions by id (Gradio's ``session_hash``), created on first use, closed on unload or when
    idle for ``idle_seconds``; one FaceCropper and one StreamSlots shared by all."""

    def __init__(self, engine_factory: EngineFactory, config: StreamConfig = STREAM_PRESETS["cpu"],
                 limits: InputLimits = DEMO_LIMITS, root: str | os.PathLike | None = None,
                 idle_seconds: float = 1800.0) -> None:
        self.engine_factory = engine_factory
        self.config = config
        self.limits = limits
        self.idle_seconds = idle_seconds
        self.cropper = FaceCropper()
        self.slots = StreamSlots(config.max_streams)
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="rest-app-"))
        self._sessions: dict[str, AppSession] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str | None) -> AppSession:
        """The session for ``session_id`` (created on first use)."""
        key = session_id or "default"
        with self._lock:
            self._close_idle()
            session = self._sessions.get(key)
            if session is None:
                safe = "".join(ch for ch in key if ch.isalnum())[:32] or "session"
                session = AppSession(self.engine_factory, self.root / safe, cropper=self.cropper,
                                     slots=self.slots, config=self.config, limits=self.limits)
                self._sessions[key] = session
            session.last_used = time.monotonic()
            return session

    def close(self, session_id: str | None) -> None:
        """Close one session (a closed tab): its engine is dropped and its files removed."""
        with self._lock:
            session = self._sessions.pop(session_id or "default", None)
        if session is not None:
            session.close()

    def close_all(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()
        self.cropper.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._sessions)

    def _close_idle(self) -> None:
        now = time.monotonic()
        for key, session in list(self._sessions.items()):
            if now - session.last_used > self.idle_seconds and not session._stream_lock.locked():
                self._sessions.pop(key).close()
