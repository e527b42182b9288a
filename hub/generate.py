"""``python -m hub generate``: a talking-head video from one portrait and one speech file.

    python -m hub generate --image IMG --audio AUD --out OUT.mp4 [--mode stream|teacher]
                           [--checkpoint DIR] [--steps N] [--seed S] [--guidance G] [--device D]
                           [--window W] [--context-noise T] [--no-id-sink] [--size N]
                           [--fast plain|cpu|gpu]

``--audio`` takes any audio file (wav, mp3, m4a, flac, ...) or a video file's audio track.
The portrait is face-cropped to the model's size (the largest face is used).

Modes:

- ``stream`` (default): the streaming student (default ``checkpoints/rest-tiny``) through
  :class:`hub.engine.StreamingEngine`, the audio pushed in 40 ms pieces as if it arrived live;
  ``--window`` is the Context-Cache window in chunks, ``--context-noise`` the noise level of the
  chunks written into it (default: the checkpoint's ``sampling.context_noise``), ``--no-id-sink``
  the ablation without the reference's ID tokens.
- ``teacher``: the bidirectional teacher (default ``checkpoints/teacher-tiny``) over the whole
  clip (:func:`hub.pipeline.generate_teacher_latents`, ``--window`` chunks per window), decoded
  with :func:`hub.pipeline.decode_stream`. Offline, many steps: the quality reference.

The mp4 (H.264 + AAC, 25 fps, the input audio) is written atomically. The same ``--seed`` gives
the same video.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hub import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, settings
from hub.bench.common import STUDENT_CHECKPOINTS, TEACHER_CHECKPOINTS, missing_checkpoint_message, resolve_device
from hub.fast_paths import FAST_PATH_PRESETS, FastPaths, apply_fast_paths, default_fast_paths, inference_context
from hub.models.rest import RestModel

MODES = ("stream", "teacher")
PIECE_SAMPLES = SAMPLE_RATE * 40 // 1000  # 40 ms, as a microphone delivers it


@dataclass
class GenerateOptions:
    """Everything one generation needs besides the inputs (``None`` = the checkpoint's default)."""

    mode: str = "stream"
    checkpoint: str | None = None
    steps: int | None = None
    seed: int = 0
    guidance: float | None = None
    device: str = "cpu"
    window: int | None = None
    context_noise: float | None = None
    use_id_sink: bool = True
    size: int | None = None
    fast: str | None = None  # a FAST_PATH_PRESETS name; None = the device's measured preset

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"--mode {self.mode!r}; accepted: {list(MODES)}")
        if self.steps is not None and not 1 <= self.steps <= 200:
            raise ValueError(f"--steps {self.steps}; accepted: 1..200")
        if self.window is not None and self.window < (0 if self.mode == "stream" else 1):
            raise ValueError(f"--window {self.window}; must be >= {0 if self.mode == 'stream' else 1} "
                             f"in {self.mode} mode")
        if self.context_noise is not None and self.mode != "stream":
            raise ValueError("--context-noise applies to the streaming student; it needs --mode stream")
        if self.context_noise is not None and not 0.0 <= self.context_noise < 1.0:
            raise ValueError(f"--context-noise {self.context_noise}; accepted: 0 <= t < 1")
        if self.mode == "teacher" and not self.use_id_sink:
            raise ValueError("--no-id-sink is a streaming ablation; it needs --mode stream")
        if self.size is not None and not 32 <= self.size <= 1024:
            raise ValueError(f"--size {self.size}; accepted: 32..1024")
        if self.fast is not None and self.fast not in FAST_PATH_PRESETS:
            raise ValueError(f"--fast {self.fast!r}; accepted: {sorted(FAST_PATH_PRESETS)}")


@dataclass
class GenerateResult:
    path: Path
    frames: int
    seconds: float  # of video
    load_s: float
    generate_s: float  # generation + decoding (mp4 writing excluded)
    write_s: float
    checkpoint: Path


def checkpoint_folder(options: GenerateOptions) -> Path:
    """The checkpoint a mode uses: ``--checkpoint`` or the mode's default tiny checkpoint."""
    if options.checkpoint:
        folder = Path(options.checkpoint)
    else:
        table = STUDENT_CHECKPOINTS if options.mode == "stream" else TEACHER_CHECKPOINTS
        folder = settings.REPO_ROOT / table["tiny"]
    if not folder.is_dir():
        raise ValueError(missing_checkpoint_message(folder, "student" if options.mode == "stream" else "teacher"))
    return folder


def _check_audio_length(audio: np.ndarray, model: RestModel, name: str) -> None:
    need = model.config.frames_per_chunk * SAMPLES_PER_FRAME
    if len(audio) < need:
        raise ValueError(f"{name}: audio is {1000 * len(audio) / SAMPLE_RATE:.0f} ms; at least "
                         f"{1000 * need / SAMPLE_RATE:.0f} ms (one chunk) is needed")


def _resize(frames: np.ndarray, size: int | None) -> np.ndarray:
    if not size or size == frames.shape[1]:
        return frames
    import cv2

    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA if size < f.shape[0]
                                else cv2.INTER_LINEAR) for f in frames])  # (T, S, S, 3)


def generate_stream(model: RestModel, image: np.ndarray, audio: np.ndarray, options: GenerateOptions,
                    device: torch.device) -> np.ndarray:
    """Frames ``uint8 (ceil(N / 640), H, W, 3)`` from the streaming engine, audio pushed in 40 ms pieces."""
    from hub.engine import EngineSettings, StreamingEngine

    engine = StreamingEngine(model, device=device, queue_chunks=False)
    engine_settings = EngineSettings(steps=options.steps, guidance=options.guidance, seed=options.seed,
                                     context_chunks=options.window, context_noise=options.context_noise,
                                     use_id_sink=options.use_id_sink,
                                     output_size=options.size)
    engine.reset(image, engine_settings)
    chunks = []
    for start in range(0, len(audio), PIECE_SAMPLES):
        chunks += [c.frames for c in engine.push(audio[start:start + PIECE_SAMPLES])]
    chunks += [c.frames for c in engine.flush()]
    return np.concatenate(chunks)  # (T, H, W, 3)


def generate_teacher(model: RestModel, image: np.ndarray, audio: np.ndarray, options: GenerateOptions,
                     device: torch.device) -> np.ndarray:
    """Frames ``uint8 (ceil(N / 640), H, W, 3)`` from the bidirectional teacher over the whole clip."""
    from hub.face import crop_reference
    from hub.pipeline import decode_stream, encode_reference, generate_teacher_latents, stream_audio_tokens, \
        video_to_uint8

    cfg = model.config
    if options.window is not None and options.window > cfg.dit.max_chunks:
        raise ValueError(f"--window {options.window}: this teacher attends to at most {cfg.dit.max_chunks} chunks")
    crop = crop_reference(image, cfg.image_size, name="the reference image")
    n_frames = -(-len(audio) // SAMPLES_PER_FRAME)
    with torch.no_grad():
        ref = encode_reference(model, crop)  # (1, C, 1, h, w)
        tokens = stream_audio_tokens(model, audio)  # (1, n, A, D)
        latents = generate_teacher_latents(
            model, ref, tokens, steps=options.steps or cfg.sampling.steps,
            guidance=cfg.sampling.guidance if options.guidance is None else options.guidance,
            shift=cfg.sampling.shift, sampler=cfg.sampling.sampler, window=options.window,
            generator=torch.Generator().manual_seed(options.seed))  # (1, C, n, h, w)
        frames = video_to_uint8(decode_stream(model, ref, latents))[:n_frames]  # (T, H, W, 3)
    return _resize(frames, options.size)


def generate(image_path: str | Path, audio_path: str | Path, out_path: str | Path,
             options: GenerateOptions) -> GenerateResult:
    """Read the inputs, generate with ``options.mode`` and write ``out_path`` (mp4, atomic)."""
    from hub.media import read_audio, read_image, write_video

    out = Path(out_path)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out {out.name}: the output must be an .mp4 file")
    device = resolve_device(options.device)
    image = read_image(image_path)
    audio = read_audio(audio_path)
    folder = checkpoint_folder(options)
    t0 = time.perf_counter()
    model = RestModel.from_pretrained(folder, map_location="cpu")
    _check_audio_length(audio, model, Path(audio_path).name)
    paths = FAST_PATH_PRESETS[options.fast] if options.fast else default_fast_paths(device)
    if options.mode == "teacher":
        paths = FastPaths(threads=paths.threads, channels_last=paths.channels_last, bf16=paths.bf16)
    model = apply_fast_paths(model, paths, device)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    with inference_context(paths):
        if options.mode == "stream":
            frames = generate_stream(model, image, audio, options, device)
        else:
            frames = generate_teacher(model, image, audio, options, device)
    generate_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    write_video(out, frames, audio)
    write_s = time.perf_counter() - t2
    return GenerateResult(path=out, frames=len(frames), seconds=len(frames) / FPS, load_s=load_s,
                          generate_s=generate_s, write_s=write_s, checkpoint=folder)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hub generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="portrait with one clearly visible face")
    parser.add_argument("--audio", required=True, help="speech: an audio file or a video with an audio track")
    parser.add_argument("--out", required=True, help="output .mp4")
    parser.add_argument("--mode", default="stream", choices=MODES, help="stream (student, default) or teacher")
    parser.add_argument("--checkpoint", help="checkpoint folder (default checkpoints/rest-tiny or teacher-tiny)")
    parser.add_argument("--steps", type=int, help="denoising steps (per chunk in stream mode)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--guidance", type=float, help="audio classifier-free guidance (1 = off)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--window", type=int, help="stream: Context-Cache chunks; teacher: chunks per window")
    parser.add_argument("--context-noise", type=float,
                        help="stream: noise level (0 <= t < 1) of chunks entering the Context-Cache "
                             "(default: the checkpoint's)")
    parser.add_argument("--no-id-sink", action="store_true", help="stream ablation: no ID-Sink tokens")
    parser.add_argument("--size", type=int, help="output frame side in pixels (default: the model's)")
    parser.add_argument("--fast", choices=sorted(FAST_PATH_PRESETS),
                        help="inference fast paths (default: the measured preset of the device)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = GenerateOptions(mode=args.mode, checkpoint=args.checkpoint, steps=args.steps, seed=args.seed,
                              guidance=args.guidance, device=args.device, window=args.window,
                              context_noise=args.context_noise, use_id_sink=not args.no_id_sink, size=args.size,
                              fast=args.fast)
    result = generate(args.image, args.audio, args.out, options)
    rtf = result.generate_s / result.seconds if result.seconds else float("nan")
    print(f"wrote {result.path} ({result.frames} frames, {result.seconds:.2f} s) with {options.mode} mode "
          f"from {result.checkpoint}")
    print(f"time: load {result.load_s:.1f} s, generate {result.generate_s:.1f} s "
          f"({rtf:.2f} s per second of video), write {result.write_s:.1f} s")
    return 0
