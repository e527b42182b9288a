"""Test helpers: synthetic media of known content in any codec/container (PyAV encoders)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def index_frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """``uint8 (n, H, W, 3)`` frames whose flat grey level encodes the index: ``8 * i + 4``."""
    assert n <= 31
    levels = (8 * np.arange(n) + 4).astype(np.uint8)  # (n,)
    return np.broadcast_to(levels[:, None, None, None], (n, height, width, 3)).copy()


def decode_index(frame: np.ndarray) -> int:
    """Inverse of :func:`index_frames` for one decoded frame (robust to compression)."""
    return int(round((float(frame.mean()) - 4.0) / 8.0))


def sine(seconds: float, rate: int, freq: float = 220.0, amp: float = 0.3, channels: int = 1) -> np.ndarray:
    """``float32 (channels, N)`` sine."""
    t = np.arange(round(seconds * rate)) / rate
    wave = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[None], channels, axis=0)


def encode_video(
    path: Path,
    frames: np.ndarray,
    fps: float | Fraction,
    codec: str = "libx264",
    audio: np.ndarray | None = None,
    audio_rate: int = 44_100,
    audio_codec: str = "aac",
    pix_fmt: str = "yuv420p",
) -> Path:
    """Encode ``frames uint8 (T, H, W, 3)`` (+ ``audio float32 (C, N)``) with PyAV."""
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        astream = None
        if audio is not None:
            astream = container.add_stream(audio_codec, rate=audio_rate)
            astream.layout = "stereo" if audio.shape[0] == 2 else "mono"
        for arr in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")))
        if astream is not None:
            layout = "stereo" if audio.shape[0] == 2 else "mono"
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio), format="fltp", layout=layout)
            frame.sample_rate = audio_rate
            frame.pts = 0
            container.mux(astream.encode(frame))
            container.mux(astream.encode(None))
        container.mux(stream.encode(None))
    return path


def encode_audio(path: Path, audio: np.ndarray, rate: int, codec: str, fmt: str | None = None) -> Path:
    """Encode ``audio float32 (C, N)`` to ``path`` with an audio codec (pcm_s24le, pcm_f32le, mp3, ...)."""
    layout = "stereo" if audio.shape[0] == 2 else "mono"
    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
