"""``python -m hub bench stream``: latency, throughput, memory and FLOPs of the streaming engine.

    python -m hub bench stream --preset tiny [--random-init] | --checkpoint DIR
                               [--device cpu|cuda] [--seconds 10] [--steps N] [--realtime]
                               [--fast cpu|gpu|plain] [--threads N] [--levers] [--json] [--out FILE]

S seconds of real speech (the shared speech files, concatenated; espeak-ng speech without the
shared data) go through :class:`hub.engine.StreamingEngine` in 40 ms pieces, as a microphone
would deliver them: as fast as possible (default; every call is timed) or paced at real time
(``--realtime``). A warm-up stream runs first and is not counted. Every chunk is also written
as an mp4 piece with :class:`hub.media.ChunkWriter`, as the demo does.

Reported (ms are wall-clock; GPU intervals are CUDA-event timed after a synchronisation):

- ``first_chunk_ms``: compute from the arrival of the audio that completes the first chunk
  (its frames + the encoder's look-ahead) to its frames being ready.
- ``algorithmic_latency_ms``: chunk length + audio look-ahead (the wait for audio).
- ``end_to_end_ms``: their sum, the delay from speech to its first frame under real-time
  arrival, given only when compute keeps up (``rtf < 1``); otherwise null and
  ``backlog_s_per_s`` says how fast the delay grows. ``--realtime`` also measures it per chunk
  (``end_to_end_measured_ms_p50/p95``).
- ``chunk_ms_p50/p95``: wall time of the calls that returned a chunk.
- ``fps`` (frames per compute second), ``rtf`` (compute time / audio time, engine only) and
  ``rtf_with_mp4`` (engine + mp4 chunk encoding, which share the CPU in the demo).
- ``peak_mem_mb``: peak RSS of the process during the measured stream on the CPU (model
  included); CUDA max allocated on a GPU.
- ``stages_ms_per_chunk``: audio features, audio encoder, denoiser steps, cache write, autoencoder
  decode, colour conversion, the rest of the chunk (noise draw, bookkeeping) and mp4 encoding.
- ``flops_per_chunk`` / ``flops_per_video_second`` (``torch.utils.flop_counter`` over one
  steady-state chunk, the CPU attention kernel included), the achieved FLOP/s and a measured
  dense-matmul FLOP/s on the same device (``matmul_flops_per_second``) to show the gap.

``--levers`` instead runs the same stream once per inference fast path (:mod:`hub.fast_paths`)
and reports each one's speed and its largest pixel difference from the plain path.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hub import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, settings
from hub.bench.common import (MODEL_PRESETS, LoadedModel, StageClock, load_rest, matmul_flops_per_second,
                              metadata, peak_memory_mb, percentile, reset_peak_memory, resolve_device,
                              speech_audio, synchronize, write_json)
from hub.engine import EngineSettings, StreamingEngine
from hub.fast_paths import FAST_PATH_PRESETS, FastPaths, apply_fast_paths, inference_context

PIECE_SAMPLES = SAMPLE_RATE * 40 // 1000  # 40 ms microphone pieces
STAGES = ("audio_features", "audio_encoder", "denoise", "cache_write", "vae_decode", "colour_convert",
          "chunk_other", "mp4_encode")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hub bench stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help=f"model size: checkpoints/rest-<preset>, or with --random-init one of "
                                         f"{list(MODEL_PRESETS)}")
    parser.add_argument("--checkpoint", help="student checkpoint folder (instead of --preset)")
    parser.add_argument("--random-init", action="store_true",
                        help="time a randomly initialised model of --preset's size (no training needed)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of speech to stream (default 10)")
    parser.add_argument("--warmup-seconds", type=float, default=1.0, help="warm-up stream, not counted (default 1)")
    parser.add_argument("--steps", type=int, help="denoising steps per chunk (default: the checkpoint's)")
    parser.add_argument("--realtime", action="store_true", help="push audio at real-time pace (default: flat out)")
    parser.add_argument("--fast", choices=sorted(FAST_PATH_PRESETS),
                        help="fast-path preset (default: cpu or gpu by device; see hub.fast_paths)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (overrides the preset's)")
    parser.add_argument("--no-mp4", action="store_true", help="skip the mp4 chunk encoding")
    parser.add_argument("--speech", help="speech to stream: an audio file or a float32 16 kHz .npy "
                                          "(default: the shared speech files)")
    parser.add_argument("--image", help="reference portrait (default: a shared portrait; synthetic without data)")
    parser.add_argument("--levers", action="store_true",
                        help="compare every fast path against the plain path (speed and output difference)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--out", help="result file (default results/latency/stream-<name>.json)")
    return parser


# ---------------------------------------------------------------------------------------- probes
class EngineProbe:
    """Times (or counts the FLOPs of) each stage of a :class:`StreamingEngine` without editing it.

    Wraps, on the engine's own objects, the calls the engine makes per chunk: the feature stream's
    and audio-encoder stream's ``push``, the DiT's ``forward_chunk`` (every denoiser evaluation)
    and ``write_chunk``, the streaming decoder's ``decode`` and the engine module's
    ``video_to_uint8``. Use as a context manager; call :meth:`attach_stream` after every
    ``engine.reset`` (a reset builds new per-stream objects).
    """

    def __init__(self, engine: StreamingEngine, clock: StageClock) -> None:
        self.engine = engine
        self.clock = clock
        self.count_flops = False
        self.flops: dict[str, int] = {}
        self._undo: list[Callable[[], None]] = []

    def _wrap(self, owner: Any, name: str, stage: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if self.count_flops:
                with _flop_counter() as counter:
                    out = original(*args, **kwargs)
                self.flops[stage] = self.flops.get(stage, 0) + int(counter.get_total_flops())
                return out
            with self.clock.time(stage):
                return original(*args, **kwargs)

        had_own = name in vars(owner) if hasattr(owner, "__dict__") else False
        setattr(owner, name, timed)
        if had_own:
            self._undo.append(lambda: setattr(owner, name, original))
        else:
            self._undo.append(lambda: delattr(owner, name))

    def attach_stream(self) -> None:
        """Wrap the per-stream objects that ``engine.reset`` just created."""
        state = self.engine._state  # the bench reads engine internals on purpose; see the module doc
        assert state is not None, "attach_stream after engine.reset"
        self._wrap(state.features, "push", "audio_features")
        self._wrap(state.audio_stream, "push", "audio_encoder")
        self._wrap(state.decoder, "decode", "vae_decode")

    def __enter__(self) -> "EngineProbe":
        import hub.engine

        dit = self.engine.model.dit
        self._wrap(dit, "forward_chunk", "denoise")
        self._wrap(dit, "write_chunk", "cache_write")
        self._wrap(hub.engine, "video_to_uint8", "colour_convert")
        return self

    def __exit__(self, *exc) -> None:
        while self._undo:
            self._undo.pop()()


def _flop_counter():
    """A FlopCounterMode that also counts the CPU flash-attention kernel (not in torch's table)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = cpu_sdpa
    return FlopCounterMode(display=False, custom_mapping=mapping)


# ---------------------------------------------------------------------------------------- running
@dataclasses.dataclass
class StreamRun:
    """What one measured stream produced."""

    frames: np.ndarray  # uint8 (T, H, W, 3)
    call_ms: list[float]  # every push/flush call
    chunk_call_ms: list[float]  # calls that returned at least one chunk
    first_chunk_ms: float | None
    compute_s: float
    mp4_s: float
    stages_ms: dict[str, float]
    chunks: int
    latencies_ms: list[float]  # --realtime: ready time - time the chunk's first frame was spoken


def reference_image(path: str | None, size: int) -> tuple[np.ndarray, bool, str]:
    """``(image, already_cropped, description)`` for the bench's reference."""
    from hub.media import read_image

    if path:
        return read_image(path), False, str(path)
    root = settings.data_dir()
    portraits = sorted((root / "portraits").glob("*.jpg")) if root else []
    if portraits:
        return read_image(portraits[0]), False, str(portraits[0])
    ramp = np.linspace(40, 215, size, dtype=np.float32)
    image = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1),
                      np.full((size, size), 128, np.float32)], axis=-1).astype(np.uint8)  # (S, S, 3)
    return image, True, "synthetic gradient (no shared data; speed does not depend on content)"


def stream_once(engine: StreamingEngine, crop: np.ndarray, audio: np.ndarray, settings_: EngineSettings,
                *, realtime: bool = False, probe: EngineProbe | None = None,
                writer_dir: Path | None = None) -> StreamRun:
    """Stream ``audio`` through ``engine`` in 40 ms pieces and time every call."""
    device = engine.device
    engine.reset(crop, settings_, already_cropped=True)
    if probe is not None:
        probe.attach_stream()
        probe.clock.collect()
        probe.clock.totals_ms.clear()
        probe.clock.counts.clear()
    writer = None
    if writer_dir is not None:
        from hub.media import ChunkWriter

        writer = ChunkWriter(writer_dir, prefix=f"bench_{time.monotonic_ns()}")
    frames, call_ms, chunk_call_ms, latencies = [], [], [], []
    mp4_s = 0.0
    first_chunk_ms = None
    t_start = time.perf_counter()
    n_pieces = -(-len(audio) // PIECE_SAMPLES)
    try:
        for i in range(n_pieces + 1):
            last = i == n_pieces
            if realtime and not last:
                due = t_start + (i + 1) * PIECE_SAMPLES / SAMPLE_RATE  # the piece has been spoken
                time.sleep(max(0.0, due - time.perf_counter()))
            t0 = time.perf_counter()
            made = engine.flush() if last else engine.push(audio[i * PIECE_SAMPLES:(i + 1) * PIECE_SAMPLES])
            synchronize(device)
            t1 = time.perf_counter()
            call_ms.append(1000.0 * (t1 - t0))
            if made:
                chunk_call_ms.append(call_ms[-1])
                if first_chunk_ms is None:
                    first_chunk_ms = call_ms[-1]
            for chunk in made:
                frames.append(chunk.frames)
                if realtime and not last:
                    latencies.append(1000.0 * (t1 - (t_start + chunk.start_frame / FPS)))
                if writer is not None:
                    w0 = time.perf_counter()
                    if probe is not None:
                        with probe.clock.time("mp4_encode"):
                            writer.write(chunk.frames, chunk.audio)
                    else:
                        writer.write(chunk.frames, chunk.audio)
                    mp4_s += time.perf_counter() - w0
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    stats = engine.stats()
    stages = probe.clock.collect() if probe is not None else {}
    if probe is not None:
        inner = sum(stages.get(s, 0.0) for s in ("denoise", "cache_write", "vae_decode", "colour_convert"))
        stages["chunk_other"] = max(0.0, float(sum(engine._state.chunk_ms)) - inner)
    return StreamRun(frames=np.concatenate(frames) if frames else np.zeros((0,), np.uint8), call_ms=call_ms,
                     chunk_call_ms=chunk_call_ms, first_chunk_ms=first_chunk_ms,
                     compute_s=sum(call_ms) / 1000.0, mp4_s=mp4_s, stages_ms=stages, chunks=stats["chunks"],
                     latencies_ms=latencies)


def count_chunk_flops(engine: StreamingEngine, crop: np.ndarray, audio: np.ndarray,
                      settings_: EngineSettings, probe: EngineProbe) -> dict[str, int]:
    """FLOPs per stage of one steady-state chunk (the Context-Cache full) and its audio."""
    cfg = engine.config
    per_chunk = cfg.frames_per_chunk * SAMPLES_PER_FRAME
    warm_chunks = cfg.dit.context_chunks + 1
    need = (warm_chunks + 1) * per_chunk + cfg.audio.lookahead_frames * SAMPLES_PER_FRAME
    if len(audio) < need:
        audio = np.resize(audio, need)
    engine.reset(crop, settings_, already_cropped=True)
    probe.attach_stream()
    probe.clock.enabled = False
    try:
        pushed = 0
        while engine._state.chunks_out < warm_chunks:
            engine.push(audio[pushed:pushed + PIECE_SAMPLES])
            pushed += PIECE_SAMPLES
        probe.flops.clear()
        probe.count_flops = True
        target = engine._state.chunks_out + 1
        while engine._state.chunks_out < target:
            engine.push(audio[pushed:pushed + PIECE_SAMPLES])
            pushed += PIECE_SAMPLES
    finally:
        probe.count_flops = False
        probe.clock.enabled = True
    return dict(probe.flops)


# ---------------------------------------------------------------------------------------- main
def _engine_settings(args: argparse.Namespace) -> EngineSettings:
    return EngineSettings(steps=args.steps, seed=0)


def _fast_paths(args: argparse.Namespace, device: torch.device) -> FastPaths:
    from hub.fast_paths import default_fast_paths

    paths = FAST_PATH_PRESETS[args.fast] if args.fast else default_fast_paths(device)
    if args.threads is not None:
        paths = dataclasses.replace(paths, threads=args.threads)
    return paths


def measure(loaded: LoadedModel, device: torch.device, paths: FastPaths, audio: np.ndarray,
            settings_: EngineSettings, image: np.ndarray, already_cropped: bool, *, realtime: bool = False,
            warmup_seconds: float = 1.0, write_mp4: bool = True, count_flops: bool = True) -> dict[str, Any]:
    """Run warm-up, the measured stream and the FLOP count; return the result keys (no metadata)."""
    model = apply_fast_paths(loaded.model, paths, device)
    engine = StreamingEngine(model, device=device)
    chunk_s = engine.frames_per_chunk / FPS
    with inference_context(paths):
        crop = engine.reset(image, settings_, already_cropped=already_cropped)
        warm = audio[: max(PIECE_SAMPLES, int(warmup_seconds * SAMPLE_RATE))]
        stream_once(engine, crop, warm, settings_)
        clock = StageClock(device)
        with tempfile.TemporaryDirectory(prefix="rest-bench-") as tmp, EngineProbe(engine, clock) as probe:
            reset_peak_memory(device)
            run = stream_once(engine, crop, audio, settings_, realtime=realtime, probe=probe,
                              writer_dir=Path(tmp) if write_mp4 else None)
            peak_mb, peak_kind = peak_memory_mb(device)
            flops = count_chunk_flops(engine, crop, audio, settings_, probe) if count_flops else {}
    audio_s = len(run.frames) / FPS
    rtf = run.compute_s / audio_s if audio_s else None
    chunk_ms = run.chunk_call_ms
    alg = engine.algorithmic_latency_ms
    keeps_up = rtf is not None and rtf < 1.0
    per_chunk = {s: run.stages_ms.get(s, 0.0) / max(1, run.chunks) for s in STAGES}
    flops_chunk = int(sum(flops.values())) if flops else None
    chunk_compute_s = (float(np.median(chunk_ms)) / 1000.0) if chunk_ms else None
    result: dict[str, Any] = {
        "first_chunk_ms": run.first_chunk_ms,
        "algorithmic_latency_ms": alg,
        "end_to_end_ms": (alg + run.first_chunk_ms) if keeps_up and run.first_chunk_ms is not None else None,
        "backlog_s_per_s": None if keeps_up or rtf is None else rtf - 1.0,
        "chunk_ms_p50": percentile(chunk_ms, 50),
        "chunk_ms_p95": percentile(chunk_ms, 95),
        "chunk_duration_ms": 1000.0 * chunk_s,
        "fps": len(run.frames) / run.compute_s if run.compute_s else None,
        "rtf": rtf,
        "rtf_with_mp4": (run.compute_s + run.mp4_s) / audio_s if audio_s and write_mp4 else None,
        "peak_mem_mb": peak_mb,
        "peak_mem_kind": peak_kind,
        "device": device.type,
        "stages_ms_per_chunk": per_chunk,
        "flops_by_stage_per_chunk": flops,
        "flops_per_chunk": flops_chunk,
        "flops_per_video_second": flops_chunk / chunk_s if flops_chunk else None,
        "achieved_flops_per_second": (flops_chunk / chunk_compute_s) if flops_chunk and chunk_compute_s else None,
        "frames": int(len(run.frames)),
        "chunks": run.chunks,
        "audio_seconds": audio_s,
        "realtime_pacing": realtime,
        "cache_bytes": engine.stats()["cache_bytes"],
        "steps": engine.stats()["steps"],
        "fast_paths": paths.describe(),
    }
    if realtime:
        result["end_to_end_measured_ms_p50"] = percentile(run.latencies_ms, 50)
        result["end_to_end_measured_ms_p95"] = percentile(run.latencies_ms, 95)
    result["_frames"] = run.frames
    return result


def compare_levers(loaded: LoadedModel, device: torch.device, audio: np.ndarray, settings_: EngineSettings,
                   image: np.ndarray, already_cropped: bool, warmup_seconds: float,
                   threads: int | None = None) -> list[dict[str, Any]]:
    """One row per fast path: speed and the output's difference from the plain path.

    Every lever runs on top of ``FastPaths(threads=threads)`` (the plain row), one at a time.
    """
    saved_threads = torch.get_num_threads()
    base = FastPaths(threads=threads)
    levers = ["inference_mode", "channels_last"]
    levers += ["int8_linear", "compile"] if device.type == "cpu" else ["bf16", "compile"]
    candidates = [("plain" if threads is None else f"plain threads={threads}", base)]
    if device.type == "cpu":
        current = threads or saved_threads
        candidates += [(f"threads={n}", dataclasses.replace(base, threads=n)) for n in (1, 2) if n != current]
    candidates += [(name, dataclasses.replace(base, **{name: True})) for name in levers]
    if device.type == "cuda":
        candidates.append(("bf16+compile", dataclasses.replace(base, bf16=True, compile=True)))
    rows, plain = [], None
    for name, paths in candidates:
        try:
            res = measure(loaded, device, paths, audio, settings_, image, already_cropped,
                          warmup_seconds=warmup_seconds, write_mp4=False, count_flops=False)
        except Exception as exc:  # noqa: BLE001 -- a lever that fails here is reported, not fatal
            rows.append({"lever": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        finally:
            torch.set_num_threads(saved_threads)
        frames = res.pop("_frames").astype(np.int16)
        if plain is None:
            plain = frames
        diff = np.abs(frames - plain) if frames.shape == plain.shape else None
        rows.append({"lever": name, "rtf": res["rtf"], "chunk_ms_p50": res["chunk_ms_p50"],
                     "chunk_ms_p95": res["chunk_ms_p95"], "fps": res["fps"],
                     "vae_decode_ms": res["stages_ms_per_chunk"]["vae_decode"],
                     "denoise_ms": res["stages_ms_per_chunk"]["denoise"],
                     "max_abs_diff": int(diff.max()) if diff is not None else None,
                     "mean_abs_diff": float(diff.mean()) if diff is not None else None})
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    if not args.preset and not args.checkpoint:
        raise ValueError("give --preset P (checkpoints/rest-P, or a size with --random-init) or --checkpoint DIR")
    if args.seconds <= 0 or args.warmup_seconds < 0:
        raise ValueError("--seconds must be > 0 and --warmup-seconds >= 0")
    loaded = load_rest(preset=args.preset, checkpoint=args.checkpoint, random_init=args.random_init,
                       role="student", device="cpu")
    settings_ = _engine_settings(args)
    audio, source = speech_audio(args.seconds, args.speech)
    image, already_cropped, image_desc = reference_image(args.image, loaded.model.config.image_size)
    notes = []
    if args.random_init:
        notes.append("random-init model: speed and memory only, the frames are not a face")
    if device.type == "cpu":
        notes.append("CPU timings on a shared machine vary with its load; compare runs taken together")
    common = dict(audio_source=source, reference=image_desc, seconds=args.seconds,
                  warmup_seconds=args.warmup_seconds, random_init=bool(args.random_init))
    if args.levers:
        rows = compare_levers(loaded, device, audio, settings_, image, already_cropped, args.warmup_seconds,
                              threads=args.threads)
        return {"levers": rows, "device": device.type, "notes": notes,
                "metadata": metadata(device, loaded, **common)}
    paths = _fast_paths(args, device)
    result = measure(loaded, device, paths, audio, settings_, image, already_cropped, realtime=args.realtime,
                     warmup_seconds=args.warmup_seconds, write_mp4=not args.no_mp4)
    result.pop("_frames")
    dtype = torch.bfloat16 if paths.bf16 else torch.float32
    result["matmul_flops_per_second"] = matmul_flops_per_second(device, dtype)
    if result["achieved_flops_per_second"]:
        result["fraction_of_matmul_peak"] = result["achieved_flops_per_second"] / result["matmul_flops_per_second"]
    if result["backlog_s_per_s"] is not None:
        notes.append(f"compute is slower than real time (rtf {result['rtf']:.2f}): under live input the delay "
                     f"grows by {result['backlog_s_per_s']:.2f} s per second of speech")
    result["notes"] = notes
    result["metadata"] = metadata(device, loaded, fast_paths=dataclasses.asdict(paths), **common)
    result["device"] = result["metadata"]["device"]
    return result


def _default_out(args: argparse.Namespace) -> Path:
    name = args.preset or Path(args.checkpoint).name
    suffix = "-random" if args.random_init else ""
    kind = "levers" if args.levers else "stream"
    return settings.REPO_ROOT / "results" / "latency" / f"{kind}-{name}{suffix}-{resolve_device(args.device).type}.json"


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def summary_lines(result: dict[str, Any]) -> Iterator[str]:
    if "levers" in result:
        yield f"{'lever':<16} {'rtf':>6} {'chunk p50':>10} {'chunk p95':>10} {'decode':>8} {'denoise':>8} {'max|d|':>7}"
        for row in result["levers"]:
            if "error" in row:
                yield f"{row['lever']:<16} error: {row['error']}"
                continue
            yield (f"{row['lever']:<16} {_fmt(row['rtf'], '.2f'):>6} {_fmt(row['chunk_ms_p50']):>10} "
                   f"{_fmt(row['chunk_ms_p95']):>10} {_fmt(row['vae_decode_ms']):>8} {_fmt(row['denoise_ms']):>8} "
                   f"{_fmt(row['max_abs_diff'], 'd'):>7}")
        return
    r = result
    yield f"stream on {r['device']} ({r['metadata']['model']}, {r['steps']} steps, {r['fast_paths']})"
    yield (f"first_chunk_ms {_fmt(r['first_chunk_ms'])}  algorithmic_latency_ms {_fmt(r['algorithmic_latency_ms'])}  "
           f"end_to_end_ms {_fmt(r['end_to_end_ms'])}")
    yield (f"chunk_ms_p50 {_fmt(r['chunk_ms_p50'])}  chunk_ms_p95 {_fmt(r['chunk_ms_p95'])}  "
           f"(chunk = {_fmt(r['chunk_duration_ms'], '.0f')} ms of video)  fps {_fmt(r['fps'])}  "
           f"rtf {_fmt(r['rtf'], '.2f')}  rtf_with_mp4 {_fmt(r['rtf_with_mp4'], '.2f')}")
    yield f"peak_mem_mb {_fmt(r['peak_mem_mb'], '.0f')} ({r['peak_mem_kind']})  cache {r['cache_bytes'] / 2**20:.1f} MiB"
    yield "stages (ms per chunk): " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages_ms_per_chunk"].items())
    if r["flops_per_chunk"]:
        yield (f"GFLOP per chunk {r['flops_per_chunk'] / 1e9:.2f}, per video second "
               f"{r['flops_per_video_second'] / 1e9:.1f}; achieved {_fmt(r['achieved_flops_per_second'] / 1e9)} "
               f"GFLOP/s vs measured matmul {r['matmul_flops_per_second'] / 1e9:.1f} GFLOP/s")
    for note in r.get("notes", []):
        yield f"note: {note}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = run(args)
    out = Path(args.out) if args.out else _default_out(args)
    write_json(out, result)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        for line in summary_lines(result):
            print(line)
        print(f"wrote {out}")
    return 0
