"""Media I/O for the whole project: probe, decode to 25 fps / 16 kHz, encode, stream chunks.

Everything goes through PyAV (its bundled FFmpeg), never through subprocesses.

Contracts (see docs/DESIGN.md):
- Video frames are ``uint8 (T, H, W, 3)`` RGB at exactly ``hub.FPS`` (25) frames per second.
  Other frame rates are resampled by timestamps: output frame ``k`` (time ``k / 25`` from the
  first frame) is the latest source frame whose time is ``<=`` that time. A video whose frames
  cover ``D`` seconds (last frame time + one source frame duration) gives ``T = round(D * 25)``.
- Audio is ``float32 (N,)`` mono at ``hub.SAMPLE_RATE`` (16 kHz) in [-1, 1]; multi-channel audio is
  downmixed by averaging the channels. In a ``VideoClip`` the audio is aligned to the first video
  frame and trimmed / zero-padded to exactly ``T * hub.SAMPLES_PER_FRAME`` samples.
- User errors (missing, empty, corrupt, truncated, unsupported, over the limits) raise a short
  ``ValueError`` naming the file. Silent audio is not an error: see :func:`is_silent`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

try:
    import av
except ImportError:  # images (PIL) still work; every audio/video decoder and writer says so
    av = None

from hub import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from hub.io_utils import atomic_path
from hub.settings import DEFAULT_LIMITS, InputLimits

__all__ = [
    "MediaInfo",
    "VideoClip",
    "probe",
    "read_video",
    "iter_video_frames",
    "read_audio",
    "read_image",
    "read_clip_audio",
    "write_video",
    "VideoWriter",
    "ChunkWriter",
    "is_silent",
]

# A source frame counts as "at or before" an output time when it is at most this much after it;
# absorbs timestamp rounding (a tick of the container time base), not real frame offsets.
_TIME_EPS = 1e-4
# Decoded video shorter than declared by more than this (seconds and fraction) is "truncated".
_TRUNCATION_SLACK_S = 0.5
_RIFF_SLACK_BYTES = 4096  # tolerated shortfall of a WAV against its RIFF header ...
_RIFF_SLACK_FRACTION = 0.001  # ... and at most this share of the declared size
_TRUNCATION_FRACTION = 0.9
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


# --------------------------------------------------------------------------------------------
# probing and validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learns from a file's headers (no decoding)."""

    path: Path
    container: str
    duration: float  # seconds; 0.0 when the container does not say
    size_bytes: int
    has_video: bool
    has_audio: bool
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None


def _name(path: Path) -> str:
    return path.name or str(path)


def _check_file(path: str | os.PathLike, limits: InputLimits) -> Path:
    """Existence, emptiness and size checks shared by every reader."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p}: file not found")
    if not p.is_file():
        raise ValueError(f"{p}: not a file")
    size = p.stat().st_size
    if size == 0:
        raise ValueError(f"{_name(p)}: file is empty")
    if size > limits.max_file_mb * 1e6:
        raise ValueError(
            f"{_name(p)}: file is {size / 1e6:.0f} MB, over the limit of {limits.max_file_mb:.0f} MB"
        )
    return p


def _require_av() -> None:
    if av is None:
        raise ValueError("audio and video need PyAV, which is not installed here: pip install 'av<19' "
                         "(or install requirements.txt)")


def _open(p: Path) -> av.container.InputContainer:
    _require_av()
    try:
        return av.open(str(p), mode="r")
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{_name(p)}: not a readable media file (corrupt, truncated or unsupported format: "
            f"{type(exc).__name__})"
        ) from None


def _stream_fps(stream: av.video.stream.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def _container_duration(container: av.container.InputContainer) -> float:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    best = 0.0
    for stream in container.streams:
        if stream.duration and stream.time_base:
            best = max(best, float(stream.duration * stream.time_base))
    return best


def _stream_duration(stream: av.stream.Stream, container: av.container.InputContainer) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return _container_duration(container)


def probe(path: str | os.PathLike, limits: InputLimits = DEFAULT_LIMITS) -> MediaInfo:
    """Read a media file's headers: container, duration, streams, codecs, size and frame rate.

    Raises ``ValueError`` for a missing, empty, oversized or unreadable file.
    """
    p = _check_file(path, limits)
    with _open(p) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        return MediaInfo(
            path=p,
            container=container.format.name,
            duration=_container_duration(container),
            size_bytes=p.stat().st_size,
            has_video=video is not None,
            has_audio=audio is not None,
            video_codec=video.codec_context.name if video is not None else None,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            fps=_stream_fps(video) if video is not None else None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            sample_rate=audio.codec_context.sample_rate if audio is not None else None,
            channels=audio.codec_context.channels if audio is not None else None,
        )


def is_silent(audio: np.ndarray | None, threshold_db: float = -60.0) -> bool:
    """True when ``audio`` (float32 (N,) in [-1, 1]) is missing, empty or its RMS is below
    ``threshold_db`` dBFS."""
    if audio is None or audio.size == 0:
        return True
    rms = float(np.sqrt(np.mean(np.square(audio.astype(np.float64)))))
    return rms <= 10.0 ** (threshold_db / 20.0)


# --------------------------------------------------------------------------------------------
# video decoding
# --------------------------------------------------------------------------------------------


@dataclass
class VideoClip:
    """A decoded video at the project's rates.

    frames: ``uint8 (T, H, W, 3)`` RGB at exactly 25 fps.
    audio:  ``float32 (T * 640,)`` mono 16 kHz aligned to frame 0, or None (no audio stream or
            ``with_audio=False``).
    """

    frames: np.ndarray  # (T, H, W, 3) uint8
    audio: np.ndarray | None  # (T * SAMPLES_PER_FRAME,) float32
    source_fps: float
    path: Path
    fps: int = FPS

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps

    @property
    def silent(self) -> bool:
        """True when there is no audio or it is (near) silent."""
        return is_silent(self.audio)


def _check_video_limits(p: Path, container, stream, limits: InputLimits, max_seconds) -> None:
    width, height = stream.codec_context.width, stream.codec_context.height
    if not width or not height:
        raise ValueError(f"{_name(p)}: video stream has no frame size (corrupt file?)")
    if max(width, height) > limits.max_video_side:
        raise ValueError(
            f"{_name(p)}: video is {width}x{height}, over the limit of "
            f"{limits.max_video_side} pixels on the longer side"
        )
    duration = _container_duration(container)
    effective = duration if max_seconds is None else min(duration, max_seconds)
    if effective > limits.max_video_seconds:
        raise ValueError(
            f"{_name(p)}: video is {duration:.1f} s long, over the limit of "
            f"{limits.max_video_seconds:.0f} s"
        )


def _decode_error(p: Path, exc: Exception) -> ValueError:
    return ValueError(f"{_name(p)}: decoding failed, the file is corrupt or truncated ({exc})")


def _open_video(path, limits: InputLimits, max_seconds):
    p = _check_file(path, limits)
    container = _open(p)
    if not container.streams.video:
        container.close()
        raise ValueError(f"{_name(p)}: no video stream (accepted: mp4, mov, mkv, webm, avi videos)")
    stream = container.streams.video[0]
    if stream.codec_context.codec is None or not stream.codec_context.name:
        container.close()
        raise ValueError(f"{_name(p)}: unsupported video codec")
    try:
        _check_video_limits(p, container, stream, limits, max_seconds)
    except ValueError:
        container.close()
        raise
    stream.thread_type = "AUTO"
    return p, container, stream


def _resampled_frames(
    p: Path, container, stream, max_seconds: float | None, stats: dict
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield ``(k, source_frame)`` for output frames k at 25 fps (see the module docstring)."""
    max_frames = None if max_seconds is None else max(1, round(max_seconds * FPS))
    source_fps = _stream_fps(stream) or float(FPS)
    t0: float | None = None
    prev: av.VideoFrame | None = None
    prev_t = 0.0
    count = 0
    k = 0
    try:
        for frame in container.decode(stream):
            t = frame.time if frame.time is not None else count / source_fps
            count += 1
            if t0 is None:
                t0 = t
            t -= t0
            if t < prev_t - _TIME_EPS and prev is not None:
                continue  # out-of-order timestamp: keep the timeline monotonic
            while prev is not None and k / FPS + _TIME_EPS < t:
                if max_frames is not None and k >= max_frames:
                    break
                yield k, prev
                k += 1
            if max_frames is not None and k >= max_frames:
                break
            prev, prev_t = frame, t
    except av.FFmpegError as exc:
        raise _decode_error(p, exc) from None
    if prev is None:
        raise ValueError(f"{_name(p)}: no decodable video frames (corrupt or truncated file)")
    covered = prev_t + 1.0 / source_fps  # seconds of video the decoded frames cover
    total = max(1, round(covered * FPS))
    if max_frames is not None:
        total = min(total, max_frames)
    while k < total:
        yield k, prev
        k += 1
    stats.update(t0=t0 or 0.0, covered=covered, frames=k, source_fps=source_fps)
    if max_frames is None or k < max_frames:
        declared = _stream_duration(stream, container)
        if declared > 0 and covered < min(
            declared * _TRUNCATION_FRACTION, declared - _TRUNCATION_SLACK_S
        ):
            raise ValueError(
                f"{_name(p)}: truncated or corrupt video, decoded {covered:.2f} s of the "
                f"declared {declared:.2f} s"
            )


def iter_video_frames(
    path: str | os.PathLike,
    *,
    max_seconds: float | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
    stats: dict | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame uint8 (H, W, 3) RGB)`` at exactly 25 fps without loading the file.

    Same resampling rule and frame count as :func:`read_video`. Truncation is detected (and a
    ``ValueError`` raised) only when the end of the file is reached. A source frame repeated for
    several indices is yielded as the same array: copy it before modifying. When given, ``stats`` is
    filled at the end with ``t0`` (first frame time, s), ``covered`` (seconds of video),
    ``frames`` (T) and ``source_fps``; pass ``t0`` to :func:`read_clip_audio`.
    """
    p, container, stream = _open_video(path, limits, max_seconds)
    stats = {} if stats is None else stats
    with container:
        cache: tuple[int, np.ndarray] | None = None  # consecutive repeats share one conversion
        for k, frame in _resampled_frames(p, container, stream, max_seconds, stats):
            if cache is None or cache[0] != id(frame):
                cache = (id(frame), frame.to_ndarray(format="rgb24"))
            yield k, cache[1]


def read_video(
    path: str | os.PathLike,
    *,
    with_audio: bool = True,
    max_seconds: float | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
) -> VideoClip:
    """Decode a video file to 25 fps RGB frames and (optionally) its 16 kHz mono audio.

    Args:
        path: any container/codec FFmpeg reads (mp4/mov/mkv/webm/avi; H.264, HEVC, MPEG-4 Part 2,
            VP9, ...), any frame rate.
        with_audio: also decode the first audio stream (``clip.audio`` is None if there is none).
        max_seconds: read only the first ``max_seconds`` seconds.
        limits: size, resolution and duration limits (``ValueError`` when exceeded).

    Returns:
        ``VideoClip`` with ``frames`` ``uint8 (T, H, W, 3)``, ``T = round(duration * 25)``, and
        ``audio`` ``float32 (T * 640,)`` aligned to the first frame, or None.
    """
    p, container, stream = _open_video(path, limits, max_seconds)
    stats: dict = {}
    with container:
        frames: list[np.ndarray] = []
        last_id, last_arr = None, None
        for _, frame in _resampled_frames(p, container, stream, max_seconds, stats):
            if id(frame) != last_id:
                last_id, last_arr = id(frame), frame.to_ndarray(format="rgb24")
            frames.append(last_arr)
        video = np.stack(frames)  # (T, H, W, 3)
    audio = None
    if with_audio and probe(p, limits).has_audio:
        audio = read_clip_audio(p, video.shape[0], stats["t0"], limits=limits)
    return VideoClip(frames=video, audio=audio, source_fps=stats["source_fps"], path=p)


def read_clip_audio(
    path: str | os.PathLike,
    num_frames: int,
    video_start: float = 0.0,
    *,
    limits: InputLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """A video file's audio aligned to its first video frame: ``float32 (num_frames * 640,)``.

    ``video_start`` is the first video frame's time in seconds (``stats["t0"]`` from
    :func:`iter_video_frames`). Audio that starts later is zero-padded in front; audio that is
    longer or shorter than the video is trimmed or zero-padded at the end.
    """
    p = _check_file(path, limits)
    audio, audio_t0 = _decode_audio(p, limits, max_seconds=None, want_start=True)
    offset = round((audio_t0 - video_start) * SAMPLE_RATE)  # > 0: audio starts after the video
    if offset > 0:
        audio = np.concatenate([np.zeros(offset, np.float32), audio])
    elif offset < 0:
        audio = audio[-offset:]
    return _fit_length(audio, num_frames * SAMPLES_PER_FRAME)  # (T * 640,)


def _fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    if audio.shape[0] >= n:
        return np.ascontiguousarray(audio[:n])
    return np.concatenate([audio, np.zeros(n - audio.shape[0], np.float32)])


# --------------------------------------------------------------------------------------------
# audio decoding
# --------------------------------------------------------------------------------------------


def _check_riff_size(p: Path) -> None:
    """FFmpeg clamps a WAV's duration to the bytes present, so compare the RIFF header's size."""
    with open(p, "rb") as handle:
        head = handle.read(12)
    if len(head) == 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        declared = int.from_bytes(head[4:8], "little") + 8
        actual = p.stat().st_size
        # A few missing trailing bytes (writers that miscount the last sample frame; e.g. one shared
        # speech file lacks its last 4 of 749,616 bytes) decode fine; real truncation is larger.
        missing = declared - actual
        slack = min(_RIFF_SLACK_BYTES, int(declared * _RIFF_SLACK_FRACTION))
        if declared not in (8, 0xFFFFFFFF + 8) and missing > slack:
            raise ValueError(
                f"{_name(p)}: truncated or corrupt audio, the file has {actual} of the "
                f"{declared} bytes its header declares"
            )


def _decode_audio(
    p: Path, limits: InputLimits, max_seconds: float | None, want_start: bool = False
):
    _check_riff_size(p)
    container = _open(p)
    with container:
        if not container.streams.audio:
            kind = "an image" if p.suffix.lower() in IMAGE_SUFFIXES else "a file"
            raise ValueError(
                f"{_name(p)}: no audio stream ({kind} with no sound; accepted: wav, mp3, m4a/aac, "
                "flac, ogg, or a video with an audio track)"
            )
        stream = container.streams.audio[0]
        if stream.codec_context.codec is None:
            raise ValueError(f"{_name(p)}: unsupported audio codec")
        duration = _stream_duration(stream, container)
        effective = duration if max_seconds is None else min(duration, max_seconds)
        if effective > limits.max_audio_seconds:
            raise ValueError(
                f"{_name(p)}: audio is {duration:.1f} s long, over the limit of "
                f"{limits.max_audio_seconds:.0f} s"
            )
        max_samples = None if max_seconds is None else round(max_seconds * SAMPLE_RATE)
        resampler = None
        pieces: list[np.ndarray] = []
        got = 0
        start: float | None = None
        try:
            for frame in container.decode(stream):
                if start is None:
                    start = frame.time if frame.time is not None else 0.0
                if resampler is None:
                    # keep the channels, average them ourselves (FFmpeg's downmix is not a mean)
                    resampler = av.AudioResampler(
                        format="fltp", layout=frame.layout.name, rate=SAMPLE_RATE
                    )
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().mean(axis=0))  # (C, n) -> (n,)
                    got += pieces[-1].shape[0]
                if max_samples is not None and got >= max_samples:
                    break
            if resampler is not None:
                for out in resampler.resample(None):
                    pieces.append(out.to_ndarray().mean(axis=0))
        except av.FFmpegError as exc:
            raise _decode_error(p, exc) from None
        if not pieces:
            raise ValueError(f"{_name(p)}: no decodable audio (corrupt or truncated file)")
        audio = np.concatenate(pieces).astype(np.float32)  # (N,)
        if max_samples is not None:
            audio = audio[:max_samples]
        decoded = audio.shape[0] / SAMPLE_RATE
        if max_samples is None and duration > 0 and decoded < min(
            duration * _TRUNCATION_FRACTION, duration - _TRUNCATION_SLACK_S
        ):
            raise ValueError(
                f"{_name(p)}: truncated or corrupt audio, decoded {decoded:.2f} s of the "
                f"declared {duration:.2f} s"
            )
        np.clip(audio, -1.0, 1.0, out=audio)
    if want_start:
        return audio, (start or 0.0)
    return audio


def read_audio(
    path: str | os.PathLike,
    *,
    max_seconds: float | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """Decode the first audio stream of ``path`` to ``float32 (N,)`` mono 16 kHz in [-1, 1].

    Accepts wav (8/16/24/32-bit int and float), mp3, m4a/aac, flac, ogg at any rate and channel
    count (averaged to mono), and video files (their audio track).
    """
    p = _check_file(path, limits)
    return _decode_audio(p, limits, max_seconds)


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike, limits: InputLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Read an image as ``uint8 (H, W, 3)`` RGB with its EXIF orientation applied."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = _check_file(path, limits)
    try:
        with Image.open(p) as img:
            if img.width * img.height > limits.max_image_pixels:
                raise ValueError(
                    f"{_name(p)}: image is {img.width}x{img.height}, over the limit of "
                    f"{limits.max_image_pixels / 1e6:.0f} megapixels"
                )
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "P"):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, rgba)
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise ValueError(
            f"{_name(p)}: not a readable image (accepted: jpg, png, webp, bmp, tiff)"
        ) from None
    except OSError as exc:
        raise ValueError(f"{_name(p)}: corrupt or truncated image ({exc})") from None


# --------------------------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------------------------


def _check_frames(frames: np.ndarray, what: str = "frames") -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"{what} must be a uint8 array (T, H, W, 3), got shape {shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8 (T, H, W, 3), got dtype {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError(f"{what} is empty (T = 0)")
    return frames


def _check_audio(audio: np.ndarray | None) -> np.ndarray | None:
    if audio is None:
        return None
    audio = np.asarray(audio)
    if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio must be float (N,) mono 16 kHz, got {audio.dtype} {audio.shape}")
    return np.clip(audio.astype(np.float32), -1.0, 1.0)


def _even_pad(frames: np.ndarray) -> np.ndarray:
    """Pad H and W to even sizes by repeating the last row/column (yuv420p needs even sizes)."""
    _, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")  # (T, H', W', 3)
    return frames


def _add_video_stream(container, width: int, height: int, fps: int, crf: int, preset: str,
                      low_latency: bool = False):
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.time_base = Fraction(1, fps)
    options = {"crf": str(crf), "preset": preset}
    if low_latency:
        options["tune"] = "zerolatency"  # no B-frames or lookahead: exact pts from 0
    stream.options = options
    return stream


def _add_audio_stream(container, codec: str, bitrate: int | None = None):
    stream = container.add_stream(codec, rate=SAMPLE_RATE)
    stream.layout = "mono"
    if codec == "alac":
        stream.format = "s16p"
    if bitrate is not None:
        stream.bit_rate = bitrate
    stream.time_base = Fraction(1, SAMPLE_RATE)
    return stream


def _encode_frames(container, stream, frames: np.ndarray, start: int, fps: int) -> None:
    # the muxer may change stream.time_base once the header is written: pin 1/fps here
    time_base = Fraction(1, fps)
    for i, arr in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
        frame.pts = start + i
        frame.time_base = time_base
        container.mux(stream.encode(frame))


def _encode_audio(container, stream, audio: np.ndarray, start: int) -> None:
    if audio.size == 0:
        return
    frame = av.AudioFrame.from_ndarray(audio[None, :], format="flt", layout="mono")  # (1, N)
    frame.sample_rate = SAMPLE_RATE
    frame.pts = start
    frame.time_base = Fraction(1, SAMPLE_RATE)
    container.mux(stream.encode(frame))


class VideoWriter:
    """Incremental mp4 writer (H.264 yuv420p + optional AAC), atomic on :meth:`close`.

    For videos too long to hold in memory::

        with VideoWriter(path, audio=audio) as writer:   # audio: float32 (N,) 16 kHz or None
            for chunk in chunks:                        # uint8 (t, H, W, 3), same H, W
                writer.write(chunk)

    Odd frame sizes are padded by one repeated row/column. Leaving the ``with`` block through
    an exception removes the temporary file and leaves ``path`` untouched.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        audio: np.ndarray | None = None,
        fps: int = FPS,
        crf: int = 18,
        preset: str = "medium",
        audio_bitrate: int = 96_000,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.fps, self.crf, self.preset, self.audio_bitrate = fps, crf, preset, audio_bitrate
        self._audio = _check_audio(audio)
        self._ctx = atomic_path(self.path, suffix=".mp4")
        self._tmp = self._ctx.__enter__()
        self._container = None
        self._vstream = None
        self._astream = None
        self._audio_done = 0  # samples of audio already encoded
        self._size: tuple[int, int] | None = None
        self.frames_written = 0

    def write(self, frames: np.ndarray) -> None:
        """Append ``uint8 (t, H, W, 3)`` RGB frames (or one ``(H, W, 3)`` frame)."""
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            frames = frames[None]  # (1, H, W, 3)
        frames = _even_pad(_check_frames(frames))
        if self._container is None:
            self._size = frames.shape[1:3]
            _require_av()
            self._container = av.open(str(self._tmp), mode="w", format="mp4")
            self._vstream = _add_video_stream(self._container, self._size[1], self._size[0],
                                              self.fps, self.crf, self.preset)
            if self._audio is not None:
                self._astream = _add_audio_stream(self._container, "aac", self.audio_bitrate)
        elif frames.shape[1:3] != self._size:
            raise ValueError(f"frame size {frames.shape[1:3]} differs from the first {self._size}")
        _encode_frames(self._container, self._vstream, frames, self.frames_written, self.fps)
        self.frames_written += frames.shape[0]
        self._feed_audio(self.frames_written * SAMPLE_RATE // self.fps)

    def _feed_audio(self, upto: int) -> None:
        """Encode the audio up to sample ``upto`` (keeps audio and video interleaved)."""
        if self._astream is None or upto <= self._audio_done:
            return
        piece = self._audio[self._audio_done : upto]
        _encode_audio(self._container, self._astream, piece, self._audio_done)
        self._audio_done += piece.shape[0]

    def close(self) -> Path:
        """Flush the encoders, mux the audio and move the file into place; returns the path."""
        if self._container is None:
            self.abort()
            raise ValueError(f"{self.path.name}: no frames were written")
        try:
            if self._astream is not None:
                self._feed_audio(self._audio.shape[0])
                self._container.mux(self._astream.encode(None))
            self._container.mux(self._vstream.encode(None))
            self._container.close()
        except BaseException as exc:
            self._container = None
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._ctx.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Discard what was written (the temporary file is removed)."""
        if self._container is not None:
            try:
                self._container.close()
            except av.FFmpegError:
                pass
            self._container = None
        exc = RuntimeError("aborted")
        try:
            self._ctx.__exit__(RuntimeError, exc, None)
        except RuntimeError:
            pass

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    audio: np.ndarray | None = None,
    fps: int = FPS,
    *,
    crf: int = 18,
    preset: str = "medium",
    audio_bitrate: int = 96_000,
) -> Path:
    """Write ``frames uint8 (T, H, W, 3)`` RGB (+ ``audio float32 (N,)`` 16 kHz mono) to an mp4.

    H.264 yuv420p (odd sizes are padded by one repeated row/column) and AAC audio, written
    atomically. Returns the final path.
    """
    frames = _check_frames(frames)
    with VideoWriter(path, audio=audio, fps=fps, crf=crf, preset=preset,
                     audio_bitrate=audio_bitrate) as writer:
        writer.write(frames)
    return Path(path)


class ChunkWriter:
    """Write a stream of generated chunks as small standalone mp4 files, plus the full video.

    Each :meth:`write` call takes a whole number of frames ``uint8 (t, H, W, 3)`` and exactly
    ``t * 640`` audio samples and writes ``<out_dir>/<prefix>_<n>.mp4`` (H.264 yuv420p, no
    B-frames, plus lossless ALAC audio by default), whose audio and video durations are both
    exactly ``t / 25`` s (AAC's encoder priming would make each chunk's audio longer). Gradio's
    streaming ``gr.Video`` re-encodes the chunk audio itself, so any decodable codec works there.

    With ``keep_full=True`` the same frames and audio also go to one continuous H.264 + AAC mp4,
    finished by :meth:`close` (the download). Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        prefix: str = "chunk",
        fps: int = FPS,
        chunk_audio_codec: str = "alac",
        keep_full: bool = True,
        full_path: str | os.PathLike | None = None,
        crf: int = 20,
        preset: str = "veryfast",
    ) -> None:
        if chunk_audio_codec not in ("alac", "aac", "pcm_s16le"):
            raise ValueError(
                f"chunk_audio_codec must be 'alac', 'aac' or 'pcm_s16le', got {chunk_audio_codec!r}"
            )
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.fps = fps
        self.chunk_audio_codec = chunk_audio_codec
        self.crf, self.preset = crf, preset
        self.keep_full = keep_full
        self.full_path = Path(full_path) if full_path else self.out_dir / f"{prefix}_full.mp4"
        self.chunk_paths: list[Path] = []
        self.frames_written = 0
        self._size: tuple[int, int] | None = None  # (H, W) of the first chunk
        self._has_audio: bool | None = None
        self._full = None  # (container, vstream, astream, tmp_path, context manager)
        self._closed = False
        self._full_done = False

    # -- public API --------------------------------------------------------------------------

    def write(self, frames: np.ndarray, audio: np.ndarray | None = None) -> Path:
        """Write one chunk; returns the chunk's path.

        Args:
            frames: ``uint8 (t, H, W, 3)`` RGB, same H, W for every chunk.
            audio: ``float32 (t * 640,)`` or None (then None for every chunk).
        """
        if self._closed:
            raise ValueError("ChunkWriter is closed; create a new one for a new stream")
        frames = _even_pad(_check_frames(frames, "chunk frames"))
        audio = _check_audio(audio)
        t = frames.shape[0]
        size = frames.shape[1:3]
        if self._size is None:
            self._size, self._has_audio = size, audio is not None
        if size != self._size:
            raise ValueError(f"chunk frame size {size} differs from the first chunk's {self._size}")
        if (audio is not None) != self._has_audio:
            raise ValueError("every chunk must have audio, or none may (audio was "
                             f"{'given' if self._has_audio else 'absent'} for the first chunk)")
        samples_per_frame = SAMPLE_RATE // self.fps
        if audio is not None and audio.shape[0] != t * samples_per_frame:
            raise ValueError(
                f"chunk audio has {audio.shape[0]} samples; {t} frames need exactly "
                f"{t * samples_per_frame} ({samples_per_frame} per frame)"
            )
        path = self.out_dir / f"{self.prefix}_{len(self.chunk_paths):05d}.mp4"
        with atomic_path(path, suffix=".mp4") as tmp:
            _require_av()
            with av.open(str(tmp), mode="w", format="mp4") as container:
                vstream = _add_video_stream(container, size[1], size[0], self.fps, self.crf,
                                            self.preset, low_latency=True)
                astream = None
                if audio is not None:
                    astream = _add_audio_stream(container, self.chunk_audio_codec)
                _encode_frames(container, vstream, frames, 0, self.fps)
                if astream is not None:
                    _encode_audio(container, astream, audio, 0)
                    container.mux(astream.encode(None))
                container.mux(vstream.encode(None))
        if self.keep_full:
            self._write_full(frames, audio)
        self.chunk_paths.append(path)
        self.frames_written += t
        return path

    def close(self) -> Path | None:
        """Finish the full mp4 (when ``keep_full``) and return its path (None if nothing was
        written or ``keep_full=False``)."""
        if self._closed:
            return self.full_path if self._full_done else None
        self._closed = True
        if self._full is None:
            return None
        container, vstream, astream, tmp, ctx = self._full
        try:
            if astream is not None:
                container.mux(astream.encode(None))
            container.mux(vstream.encode(None))
            container.close()
            ctx.__exit__(None, None, None)  # renames tmp -> full_path
        except BaseException as exc:
            ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._full_done = True
        return self.full_path

    def abort(self) -> None:
        """Stop without finishing the full mp4 (its temporary file is removed)."""
        self._closed = True
        self._full_done = False
        if self._full is not None:
            container, _, _, _, ctx = self._full
            try:
                container.close()
            finally:
                ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
            self._full = None

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- internals ---------------------------------------------------------------------------

    def _write_full(self, frames: np.ndarray, audio: np.ndarray | None) -> None:
        if self._full is None:
            ctx = atomic_path(self.full_path, suffix=".mp4")
            tmp = ctx.__enter__()
            _require_av()
            container = av.open(str(tmp), mode="w", format="mp4")
            vstream = _add_video_stream(container, frames.shape[2], frames.shape[1], self.fps,
                                        self.crf, self.preset)
            astream = _add_audio_stream(container, "aac", 96_000) if audio is not None else None
            self._full = (container, vstream, astream, tmp, ctx)
        container, vstream, astream, _, _ = self._full
        _encode_frames(container, vstream, frames, self.frames_written, self.fps)
        if astream is not None:
            _encode_audio(container, astream, audio, self.frames_written * (SAMPLE_RATE // self.fps))
