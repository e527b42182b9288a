"""StreamingEngine: audio in (pieces of any size), talking-head frames out, chunk by chunk.

One engine per session; explicit state; no Gradio and no file I/O. Usage::

    engine = StreamingEngine.from_pretrained("checkpoints/rest-tiny")
    crop = engine.reset(portrait)                 # uint8 (H, W, 3) -> the face crop it animates
    for piece in microphone:                      # float32 16 kHz mono, any length
        for chunk in engine.push(piece):          # FrameChunk: frames ready now
            show(chunk.frames)
    for chunk in engine.flush():                  # end of speech: pad, finish, trim
        show(chunk.frames)
    print(engine.stats())

What happens per chunk (``f_t`` video frames, 160 ms for the tiny preset):
1. filterbank rows arrive with the audio (:class:`hub.audio.FeatureStream`, causal framing);
2. the causal audio encoder emits a latent frame's tokens once its audio and look-ahead are in;
3. the student denoises the chunk in a few steps against the ID-Context Cache (ID-Sink of the
   reference + the last W chunks), then writes the clean chunk's keys/values into the cache;
4. the streaming causal decoder turns the chunk into ``f_t`` frames.

Latency: the algorithmic part is the chunk length plus the audio encoder's look-ahead (a frame
can only be made once the audio it speaks has arrived); the compute part is measured per chunk.

Thread safety: ``reset``, ``push`` and ``flush`` take a lock, so one producer thread may drive the
engine while another reads :meth:`frames` (a thread-safe queue of ready chunks).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from hub import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from hub.audio import FEATURE_PRESETS, FeatureStream
from hub.models.rest import RestModel
from hub.pipeline import encode_reference, sample_chunk, video_to_uint8, write_context


# Float audio slightly over 1 (resampling overshoot) is fine; far over it is integer samples in a float
# array, which would silently give garbage features.
MAX_FLOAT_AMPLITUDE = 4.0
# Per-chunk compute times kept for the percentiles in stats() (bounded: streams are unbounded).
CHUNK_TIMES_KEPT = 2048


@dataclass(frozen=True)
class EngineSettings:
    """Per-stream settings. ``None`` means "the checkpoint's default"."""

    steps: int | None = None  # denoising steps per chunk
    guidance: float | None = None  # audio classifier-free guidance (1 = off, one model call per step)
    shift: float | None = None
    sampler: str | None = None
    seed: int = 0
    context_chunks: int | None = None  # Context-Cache window W (<= the model's; 0 = none)
    context_noise: float | None = None  # noise level t_c of chunks entering the Context-Cache (0 = clean)
    use_id_sink: bool = True  # False: ablation, chunks do not attend to the reference's tokens
    output_size: int | None = None  # resize output frames to this square size (None = model size)

    def __post_init__(self) -> None:
        if self.steps is not None and not 1 <= self.steps <= 50:
            raise ValueError(f"steps={self.steps}; accepted: 1..50")
        if self.guidance is not None and not 0.0 <= self.guidance <= 10.0:
            raise ValueError(f"guidance={self.guidance}; accepted: 0..10")
        if self.context_noise is not None and not 0.0 <= self.context_noise < 1.0:
            raise ValueError(f"context_noise={self.context_noise}; accepted: 0 <= t < 1")
        if self.context_chunks is not None and self.context_chunks < 0:
            raise ValueError(f"context_chunks={self.context_chunks}; must be >= 0")
        if self.output_size is not None and not 32 <= self.output_size <= 1024:
            raise ValueError(f"output_size={self.output_size}; accepted: 32..1024")


@dataclass
class FrameChunk:
    """Frames that are ready, with their place in the stream.

    ``frames``: uint8 (n, H, W, 3); ``start_frame``: index of the first frame in the stream;
    ``audio``: float32 (n * 640,) the stream audio these frames speak (zero-padded past the end);
    ``compute_ms``: wall time spent making this chunk (denoise + cache write + decode).
    """

    frames: np.ndarray
    start_frame: int
    audio: np.ndarray
    chunk_index: int
    compute_ms: float

    @property
    def start_time(self) -> float:
        return self.start_frame / FPS

    @property
    def timestamps(self) -> np.ndarray:
        """Presentation time of each frame in seconds."""
        return (self.start_frame + np.arange(len(self.frames))) / FPS


@dataclass
class _StreamState:
    """Everything that changes during one stream (recreated by ``reset``)."""

    settings: EngineSettings
    features: FeatureStream
    audio_stream: object  # hub.models.audio_encoder.AudioEncoderStream
    cache: object  # hub.models.kv_cache.IDContextCache
    decoder: object  # hub.models.vae.StreamingDecoder
    generator: torch.Generator
    pending_tokens: list = field(default_factory=list)  # (1, k, A, D) tokens not yet in a full chunk
    tokens_seen: int = 0  # latent frames received from the audio encoder (frame 0 = reference slot)
    audio: list = field(default_factory=list)  # pieces of stream audio not yet handed out with frames
    audio_buffered: int = 0
    samples_in: int = 0
    frames_out: int = 0
    chunks_out: int = 0
    flushed: bool = False
    chunk_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=CHUNK_TIMES_KEPT))
    compute_ms_total: float = 0.0
    first_push_time: float | None = None
    first_chunk_ms: float | None = None


class StreamingEngine:
    """Streams frames from a reference image and incoming speech with a REST student."""

    def __init__(self, model: RestModel, device: str | torch.device = "cpu", face_analyzer=None,
                 queue_chunks: bool = True) -> None:
        """``queue_chunks=False``: chunks are only returned by push/flush (nothing is kept for
        :meth:`frames`), for callers that consume the return values and run long streams."""
        self.model = model.to(device).eval()
        self.queue_chunks = queue_chunks
        self.device = torch.device(device)
        self.config = model.config
        self._face_analyzer = face_analyzer
        self._lock = threading.RLock()
        self._ready: queue.Queue[FrameChunk] = queue.Queue()
        self._state: _StreamState | None = None
        self.reference_crop: np.ndarray | None = None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "StreamingEngine":
        return cls(RestModel.from_pretrained(path, map_location=device), device=device)

    # ------------------------------------------------------------------ properties
    @property
    def frames_per_chunk(self) -> int:
        return self.config.frames_per_chunk

    @property
    def algorithmic_latency_ms(self) -> float:
        """Chunk length + audio look-ahead: the least delay any chunked causal generator has."""
        return 1000.0 * self.frames_per_chunk / FPS + self.model.audio_encoder.lookahead_ms

    # ------------------------------------------------------------------ stream control
    def reset(self, reference_image: np.ndarray, settings: EngineSettings | None = None,
              already_cropped: bool = False) -> np.ndarray:
        """Start a new stream for ``reference_image`` (uint8 (H, W, 3) RGB); returns the face crop.

        Raises ValueError when the image has no face. ``already_cropped=True`` skips the face
        crop (the image must then be the model's size, e.g. a prepared clip's frame).
        """
        settings = settings or EngineSettings()
        cfg = self.config
        if settings.context_chunks is not None and settings.context_chunks > cfg.dit.context_chunks:
            raise ValueError(f"context_chunks={settings.context_chunks} exceeds this model's "
                             f"window of {cfg.dit.context_chunks} chunks")
        if not settings.use_id_sink and not cfg.dit.use_id_sink:
            pass  # a model trained without the sink: nothing to turn off
        if settings.sampler is not None and settings.sampler not in ("euler", "heun"):
            raise ValueError(f"sampler={settings.sampler!r}; accepted: 'euler', 'heun'")
        if not isinstance(reference_image, np.ndarray) or reference_image.dtype != np.uint8 \
                or reference_image.ndim != 3 or reference_image.shape[2] != 3:
            raise ValueError("reference image must be a uint8 RGB array (H, W, 3)")
        size = cfg.image_size
        if already_cropped:
            crop = reference_image
        else:
            from hub.face import crop_reference

            crop = crop_reference(reference_image, size, analyzer=self._face_analyzer, name="the reference image")
        with self._lock:
            self._drain()
            model = self.model
            with torch.no_grad():
                ref = encode_reference(model, crop)  # (1, C, 1, h, w)
                cache = model.dit.new_cache(1, window=settings.context_chunks, use_sink=settings.use_id_sink)
                if cache.has_sink:
                    model.dit.prefill_sink(cache, ref)
                decoder = model.vae.start_decode()
                decoder.decode(model.vae.denormalize(ref))  # prime the causal state with frame 0
                features = FeatureStream(FEATURE_PRESETS[cfg.audio.feature_preset])
                audio_stream = model.audio_encoder.start()
                # Frame 0 is the reference: its audio slot is one frame of silence.
            generator = torch.Generator().manual_seed(settings.seed)
            self._state = _StreamState(settings=settings, features=features, audio_stream=audio_stream,
                                       cache=cache, decoder=decoder, generator=generator)
            # Frame 0 is the reference: its audio slot is one frame of silence.
            rows = features.push(np.zeros(SAMPLES_PER_FRAME, np.float32))
            with torch.no_grad():
                self._consume(audio_stream.push(torch.from_numpy(rows)[None].to(self.device)))
            self.reference_crop = crop
            self._ref = ref
        return crop

    def push(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[FrameChunk]:
        """Add speech (float32 mono in [-1, 1] at 16 kHz, any length >= 0); return chunks made now."""
        state = self._require_state()
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"audio at {sample_rate} Hz pushed; the engine takes {SAMPLE_RATE} Hz mono "
                             "(resample first, e.g. with hub.media.read_audio)")
        audio = self._check_audio(audio)
        with self._lock:
            if state.flushed:
                raise ValueError("push after flush: call reset() to start a new stream")
            if state.first_push_time is None:
                state.first_push_time = time.perf_counter()
            state.samples_in += len(audio)
            state.audio.append(audio)
            state.audio_buffered += len(audio)
            rows = state.features.push(audio)
            with torch.no_grad():
                tokens = state.audio_stream.push(torch.from_numpy(rows)[None].to(self.device))
            return self._consume(tokens)

    def flush(self) -> list[FrameChunk]:
        """End of stream: pad the last chunk with silence, finish it, trim output to the audio length."""
        state = self._require_state()
        with self._lock:
            if state.flushed:
                raise ValueError("flush called twice: call reset() to start a new stream")
            wanted_frames = -(-state.samples_in // SAMPLES_PER_FRAME)
            # Silence up to the end of the last chunk plus the look-ahead, then close the streams.
            have_frames = 1 + wanted_frames  # incl. the reference's silent slot
            f_c = self.frames_per_chunk
            chunks_needed = -(-wanted_frames // f_c)
            target_frames = 1 + chunks_needed * f_c + self.config.audio.lookahead_frames
            pad_samples = (target_frames - have_frames) * SAMPLES_PER_FRAME \
                + (wanted_frames * SAMPLES_PER_FRAME - state.samples_in)
            made = []
            if pad_samples > 0:
                silence = np.zeros(pad_samples, np.float32)
                rows = state.features.push(silence)
                with torch.no_grad():
                    made += self._consume(state.audio_stream.push(torch.from_numpy(rows)[None].to(self.device)),
                                          limit_frames=wanted_frames)
            state.flushed = True
            return made

    def frames(self) -> Iterator[FrameChunk]:
        """Chunks made so far and not yet taken (non-blocking; also returned by push/flush)."""
        while True:
            try:
                yield self._ready.get_nowait()
            except queue.Empty:
                return

    def stats(self) -> dict:
        """Latency and throughput of the current stream so far."""
        state = self._require_state()
        times = np.array(state.chunk_ms) if state.chunk_ms else np.zeros(0)  # the last CHUNK_TIMES_KEPT
        audio_s = state.frames_out / FPS
        compute_s = state.compute_ms_total / 1000.0
        return {
            "chunks": state.chunks_out,
            "frames": state.frames_out,
            "audio_seconds_in": state.samples_in / SAMPLE_RATE,
            "first_chunk_ms": state.first_chunk_ms,
            "algorithmic_latency_ms": self.algorithmic_latency_ms,
            "chunk_ms_mean": float(times.mean()) if len(times) else None,
            "chunk_ms_p50": float(np.percentile(times, 50)) if len(times) else None,
            "chunk_ms_p95": float(np.percentile(times, 95)) if len(times) else None,
            "fps": (state.frames_out / compute_s) if compute_s > 0 else None,
            "rtf": (compute_s / audio_s) if audio_s > 0 else None,
            "cache_bytes": int(state.cache.nbytes()),
            "steps": self._steps(state.settings),
        }

    # ------------------------------------------------------------------ internals
    def _require_state(self) -> _StreamState:
        if self._state is None:
            raise ValueError("no stream: call reset(reference_image) first")
        return self._state

    @staticmethod
    def _check_audio(audio: np.ndarray) -> np.ndarray:
        if not isinstance(audio, np.ndarray):
            raise ValueError(f"audio must be a numpy float32 array, got {type(audio).__name__}")
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono 1-D (N,), got shape {audio.shape}")
        if audio.dtype not in (np.float32, np.float64):
            raise ValueError(f"audio dtype {audio.dtype}: the engine takes float32 in [-1, 1] "
                             "(divide int16 samples by 32768)")
        audio = audio.astype(np.float32, copy=False)
        if len(audio) and not np.isfinite(audio).all():
            raise ValueError("audio contains NaN or infinite samples")
        if len(audio) and float(np.abs(audio).max()) > MAX_FLOAT_AMPLITUDE:
            raise ValueError(f"audio samples reach {float(np.abs(audio).max()):.1f}; expected float in [-1, 1] "
                             "(int16 values must be divided by 32768)")
        return audio

    def _steps(self, settings: EngineSettings) -> int:
        return settings.steps or self.config.sampling.steps

    def _consume(self, tokens: torch.Tensor, limit_frames: int | None = None) -> list[FrameChunk]:
        """Queue new audio tokens; generate every complete chunk."""
        state = self._state
        assert state is not None
        if state.tokens_seen == 0 and tokens.shape[1]:
            tokens_kept = tokens[:, 1:]  # latent frame 0 is the reference's slot: never generated
        else:
            tokens_kept = tokens
        state.tokens_seen += tokens.shape[1]
        if tokens_kept.shape[1]:
            state.pending_tokens.append(tokens_kept)
        fc = self.config.dit.chunk_latent_frames
        pending = torch.cat(state.pending_tokens, dim=1) if state.pending_tokens else None
        made = []
        while pending is not None and pending.shape[1] >= fc:
            chunk_tokens, pending = pending[:, :fc], pending[:, fc:]
            chunk = self._generate_chunk(chunk_tokens, limit_frames)
            if chunk is not None:
                made.append(chunk)
                if self.queue_chunks:
                    self._ready.put(chunk)
        state.pending_tokens = [pending] if pending is not None and pending.shape[1] else []
        return made

    @torch.no_grad()
    def _generate_chunk(self, audio_tokens: torch.Tensor, limit_frames: int | None) -> FrameChunk | None:
        state = self._state
        assert state is not None
        settings, cfg, model = state.settings, self.config, self.model
        dit = model.dit
        start = time.perf_counter()
        shape = (1, cfg.dit.latent_channels, cfg.dit.chunk_latent_frames, cfg.dit.latent_size, cfg.dit.latent_size)
        noise = torch.randn(shape, generator=state.generator).to(self.device)
        null = model.audio_encoder.null_tokens(1, cfg.dit.chunk_latent_frames)
        x0 = sample_chunk(dit, state.cache, noise, audio_tokens, null,
                          steps=self._steps(settings),
                          guidance=settings.guidance if settings.guidance is not None else cfg.sampling.guidance,
                          shift=settings.shift if settings.shift is not None else cfg.sampling.shift,
                          sampler=settings.sampler or cfg.sampling.sampler)  # (1, C, Fc, h, w)
        context_noise = settings.context_noise if settings.context_noise is not None else cfg.sampling.context_noise
        write_context(dit, state.cache, x0, audio_tokens, context_noise, state.generator)
        video = state.decoder.decode(model.vae.denormalize(x0))  # (1, 3, f, H, W)
        frames = video_to_uint8(video)  # (f, H, W, 3)
        if settings.output_size and settings.output_size != frames.shape[1]:
            import cv2

            frames = np.stack([cv2.resize(f, (settings.output_size,) * 2, interpolation=cv2.INTER_LINEAR)
                               for f in frames])
        elapsed_ms = 1000.0 * (time.perf_counter() - start)
        if limit_frames is not None:
            frames = frames[: max(0, limit_frames - state.frames_out)]
        if state.first_chunk_ms is None:
            state.first_chunk_ms = elapsed_ms
        state.chunk_ms.append(elapsed_ms)
        state.compute_ms_total += elapsed_ms
        n = len(frames)
        if n == 0:
            return None
        audio = self._take_audio(n * SAMPLES_PER_FRAME)
        chunk = FrameChunk(frames=frames, start_frame=state.frames_out, audio=audio,
                           chunk_index=state.chunks_out, compute_ms=elapsed_ms)
        state.frames_out += n
        state.chunks_out += 1
        return chunk

    def _take_audio(self, n_samples: int) -> np.ndarray:
        """The next ``n_samples`` of stream audio (zero-padded past what was pushed)."""
        state = self._state
        assert state is not None
        buf = np.concatenate(state.audio) if state.audio else np.zeros(0, np.float32)
        out = np.zeros(n_samples, np.float32)
        take = min(n_samples, len(buf))
        out[:take] = buf[:take]
        rest = buf[take:]
        state.audio = [rest] if len(rest) else []
        state.audio_buffered = len(rest)
        return out

    def _drain(self) -> None:
        while True:
            try:
                self._ready.get_nowait()
            except queue.Empty:
                return


def settings_replace(settings: EngineSettings, **changes) -> EngineSettings:
    """A copy of ``settings`` with ``changes`` (validated)."""
    return dataclasses.replace(settings, **changes)
