"""Decoded-clip cache of a prepared folder (``python -m hub.data decode``).

Training reads every clip many times; decoding H.264 each time costs CPU, and some machines (GPU
images without PyAV, say) cannot decode our clips through :mod:`hub.media` at all. ``decode``
writes, next to the prepared clips:

- ``DIR/decoded/<id>.frames.npy``: ``uint8 (T, S, S, 3)`` RGB, exactly ``index.csv``'s frame count;
- ``DIR/decoded/<id>.audio.npy``: ``float32 (N,)`` 16 kHz mono in [-1, 1] (clips with audio);
- ``DIR/decoded/manifest.json``: per file, the decoder and the size in bytes of its source.

The readers (:func:`read_clip_frames`, :func:`read_clip_audio`) use a cached array only when the
manifest's source size still matches the file next to it, and otherwise decode the source with
:mod:`hub.media`. The cache is explicit: it exists only where somebody ran ``decode``.

Decoders: ``pyav`` (default; the same code path as everything else) and ``opencv`` (OpenCV's
bundled FFmpeg for video, the standard library's ``wave`` for our 16-bit PCM wav files; for
machines without PyAV). Both run the same H.264 decoder; their YUV to RGB conversion can differ by
a few levels per pixel, which is why the manifest records the decoder.
"""

from __future__ import annotations

import json
import os
import wave
from pathlib import Path

import numpy as np

from hub import SAMPLE_RATE
from hub.io_utils import atomic_path

DECODED_DIR = "decoded"
MANIFEST = "manifest.json"
DECODERS = ("pyav", "opencv")


def _cache_file(source: Path, kind: str) -> Path:
    # clips/<id>.mp4 -> decoded/<id>.frames.npy ; audio/<id>.wav -> decoded/<id>.audio.npy
    return source.parent.parent / DECODED_DIR / f"{source.stem}.{kind}.npy"


def _manifest(folder: Path) -> dict[str, dict]:
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def _cached(source: Path, kind: str) -> Path | None:
    target = _cache_file(source, kind)
    if not target.is_file():
        return None
    entry = _manifest(target.parent).get(target.name)
    if entry is None or not source.is_file() or entry.get("source_bytes") != source.stat().st_size:
        return None  # stale or foreign: decode the source instead
    return target


def _read(path: str | os.PathLike, kind: str) -> np.ndarray:
    source = Path(path)
    cached = _cached(source, kind)
    if cached is not None:
        return np.load(cached, allow_pickle=False)
    return _decode(source, kind, "pyav")


def read_clip_frames(path: str | os.PathLike) -> np.ndarray:
    """Frames ``uint8 (T, H, W, 3)`` of a prepared clip, from the decoded cache when it is current."""
    return _read(path, "frames")


def read_clip_audio(path: str | os.PathLike) -> np.ndarray:
    """Audio ``float32 (N,)`` at 16 kHz of a prepared clip, from the decoded cache when it is current."""
    return _read(path, "audio")


def _decode_video_opencv(path: Path) -> np.ndarray:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path.name}: OpenCV cannot open this video")
    frames = []
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise ValueError(f"{path.name}: OpenCV decoded no frames")
    return np.stack(frames)  # (T, H, W, 3)


def _decode_wav_pcm16(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        if (handle.getnchannels(), handle.getsampwidth(), handle.getframerate()) != (1, 2, SAMPLE_RATE):
            raise ValueError(f"{path.name}: expected 16 kHz mono 16-bit PCM (what prepare writes); got "
                             f"{handle.getframerate()} Hz, {handle.getnchannels()} channel(s), "
                             f"{8 * handle.getsampwidth()}-bit")
        data = handle.readframes(handle.getnframes())
    return (np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0)  # (N,)


def _decode(source: Path, kind: str, decoder: str) -> np.ndarray:
    if decoder == "pyav":
        from hub.media import read_audio, read_video

        if kind == "frames":
            return read_video(source, with_audio=False).frames
        return read_audio(source).astype(np.float32)
    return _decode_video_opencv(source) if kind == "frames" else _decode_wav_pcm16(source)


def decode_prepared(root: str | os.PathLike, splits: tuple[str, ...] = ("train", "motion"),
                    decoder: str = "pyav", allow_val: bool = False) -> dict[str, int]:
    """Write the decoded cache of every clip of ``splits`` in the prepared folder ``root``.

    Returns counts ``{"written", "current"}``. A clip whose decoded frame count differs from
    ``index.csv`` raises ``ValueError`` (nothing is written for it).
    """
    from hub.data.datasets import ClipIndex

    if decoder not in DECODERS:
        raise ValueError(f"decoder={decoder!r}; accepted: {', '.join(DECODERS)}")
    root = Path(root)
    index = ClipIndex.load(root, splits, allow_val=allow_val)
    folder = root / DECODED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(folder)
    counts = {"written": 0, "current": 0}
    for record in index:
        jobs = [(record.path, "frames")] + ([(record.audio_path, "audio")] if record.audio_path else [])
        for source, kind in jobs:
            if _cached(source, kind) is not None:
                counts["current"] += 1
                continue
            array = _decode(source, kind, decoder)
            if kind == "frames":
                if array.shape[0] < record.frames:
                    raise ValueError(f"{source.name}: decoded {array.shape[0]} frames, index.csv says "
                                     f"{record.frames}")
                array = np.ascontiguousarray(array[: record.frames])
            target = _cache_file(source, kind)
            with atomic_path(target) as tmp:
                with open(tmp, "wb") as handle:
                    np.save(handle, array, allow_pickle=False)
            manifest[target.name] = {"source_bytes": source.stat().st_size, "decoder": decoder,
                                     "shape": list(array.shape)}
            counts["written"] += 1
        with atomic_path(folder / MANIFEST) as tmp:  # after each clip: an interrupted run resumes
            Path(tmp).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return counts
