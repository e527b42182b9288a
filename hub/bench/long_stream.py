"""``python -m hub bench long-stream``: memory and positions stay flat over a long stream.

    python -m hub bench long-stream --checkpoint DIR | --preset P [--random-init]
                                    --minutes M [--steps N] [--every-seconds 60] [--device D]
                                    [--json] [--out FILE]

M minutes of speech (the shared speech files concatenated, looped; espeak-ng speech without the
shared data) are pushed through one :class:`hub.engine.StreamingEngine` stream in 40 ms pieces,
as fast as the machine allows; frames are dropped as they come (the demo hands them on).
Every ``--every-seconds`` of stream audio one sample is recorded: process RSS now and its peak
over the interval (the kernel's mark is reset at each interval), CUDA allocated memory on a GPU,
the ID-Context Cache's bytes, its chunk counter and the largest temporal position index the next
chunk uses, and the engine's buffered audio.

Verdicts: ``memory_flat`` (the last interval's peak RSS within ``--tolerance-mb`` of the first
interval's, which includes warm-up allocations) and ``positions_bounded`` (every position index
below ``(window + 1) x chunk_latent_frames``, the cache's bound), so a 30-minute stream
(``--minutes 30``) shows no memory growth and no position overflow.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hub import FPS, SAMPLE_RATE, settings
from hub.bench.common import (MODEL_PRESETS, load_rest, metadata, peak_rss_mb, reset_peak_rss, resolve_device,
                              rss_mb, speech_audio, synchronize, write_json)
from hub.engine import EngineSettings, StreamingEngine
from hub.fast_paths import apply_fast_paths, default_fast_paths, inference_context

PIECE_SAMPLES = SAMPLE_RATE * 40 // 1000
LOOP_SECONDS = 60.0  # speech held in memory and looped (memory of the input must not grow either)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hub bench long-stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="student checkpoint folder")
    parser.add_argument("--preset", help=f"checkpoints/rest-<preset>, or with --random-init one of {list(MODEL_PRESETS)}")
    parser.add_argument("--random-init", action="store_true", help="a randomly initialised model of --preset's size")
    parser.add_argument("--minutes", type=float, required=True, help="minutes of speech to stream")
    parser.add_argument("--steps", type=int, help="denoising steps per chunk (default: the checkpoint's)")
    parser.add_argument("--every-seconds", type=float, default=60.0, help="stream seconds between samples (default 60)")
    parser.add_argument("--tolerance-mb", type=float, default=16.0, help="allowed peak-RSS growth (default 16 MiB)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the device's fast-path preset)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--out", help="result file (default results/latency/long-stream-<name>.json)")
    return parser


def _sample(engine: StreamingEngine, stream_s: float, wall_s: float, device: torch.device) -> dict[str, Any]:
    state = engine._state  # read-only look at the stream state (bench instrumentation)
    assert state is not None
    cache = state.cache
    ctx, cur = cache.time_positions()  # (n, F), (F,)
    max_pos = int(max(cur.max().item(), ctx.max().item() if ctx.numel() else 0))
    row = {
        "stream_seconds": round(stream_s, 3),
        "wall_seconds": round(wall_s, 3),
        "rss_mb": rss_mb(),
        "peak_rss_mb_interval": peak_rss_mb(),
        "cache_bytes": int(cache.nbytes()),
        "cache_chunk_index": int(cache.chunk_index),
        "max_position_index": max_pos,
        "buffered_audio_samples": int(state.audio_buffered),
        "frames_out": int(state.frames_out),
    }
    if device.type == "cuda":
        row["cuda_allocated_mb"] = torch.cuda.memory_allocated(device) / 2**20
        row["cuda_peak_mb_interval"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    if args.minutes <= 0 or args.every_seconds <= 0:
        raise ValueError("--minutes and --every-seconds must be > 0")
    if not args.preset and not args.checkpoint:
        raise ValueError("give --checkpoint DIR or --preset P (with --random-init for an untrained model)")
    loaded = load_rest(preset=args.preset, checkpoint=args.checkpoint, random_init=args.random_init,
                       role="student", device="cpu")
    paths = default_fast_paths(device)
    if args.threads is not None:
        paths = dataclasses.replace(paths, threads=args.threads)
    model = apply_fast_paths(loaded.model, paths, device)
    engine = StreamingEngine(model, device=device)
    total = int(round(args.minutes * 60 * SAMPLE_RATE))
    loop, source = speech_audio(min(LOOP_SECONDS, args.minutes * 60))
    size = model.config.image_size
    ramp = np.linspace(40, 215, size, dtype=np.float32)
    image = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1),
                      np.full((size, size), 128, np.float32)], axis=-1).astype(np.uint8)  # (S, S, 3)
    every = int(args.every_seconds * SAMPLE_RATE)
    samples: list[dict[str, Any]] = []
    with inference_context(paths):
        engine.reset(image, EngineSettings(steps=args.steps, seed=0), already_cropped=True)
        cache = engine._state.cache
        bound = (cache.window + 1) * cache.chunk_latent_frames
        reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        pushed, next_sample = 0, every
        while pushed < total:
            n = min(PIECE_SAMPLES, total - pushed)
            start = pushed % len(loop)
            piece = loop[start:start + n]
            if len(piece) < n:  # wrap around the loop
                piece = np.concatenate([piece, loop[: n - len(piece)]])
            engine.push(piece)  # returned chunks are dropped (the queue is drained below)
            for _ in engine.frames():
                pass
            pushed += n
            if pushed >= next_sample or pushed >= total:
                synchronize(device)
                samples.append(_sample(engine, pushed / SAMPLE_RATE, time.perf_counter() - t0, device))
                reset_peak_rss()
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                next_sample += every
        engine.flush()
        for _ in engine.frames():
            pass
        wall = time.perf_counter() - t0
    first, last = samples[0], samples[-1]
    growth = None
    if first["peak_rss_mb_interval"] is not None and last["peak_rss_mb_interval"] is not None:
        growth = last["peak_rss_mb_interval"] - first["peak_rss_mb_interval"]
    max_pos = max(s["max_position_index"] for s in samples)
    stats = engine.stats()
    return {
        "minutes": args.minutes,
        "samples": samples,
        "peak_rss_growth_mb": growth,
        "memory_flat": None if growth is None else growth <= args.tolerance_mb,
        "cache_bytes_constant": len({s["cache_bytes"] for s in samples}) == 1,
        "max_position_index": max_pos,
        "position_bound": bound,
        "positions_bounded": max_pos < bound,
        "chunks": stats["chunks"],
        "frames": stats["frames"],
        "rtf": wall / (stats["frames"] / FPS) if stats["frames"] else None,
        "steps": stats["steps"],
        "device": device.type,
        "metadata": metadata(device, loaded, audio_source=source, loop_seconds=len(loop) / SAMPLE_RATE,
                             every_seconds=args.every_seconds, tolerance_mb=args.tolerance_mb,
                             fast_paths=paths.describe(), random_init=bool(args.random_init)),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    result = run(args)
    name = args.preset or Path(args.checkpoint).name
    out = Path(args.out) if args.out else (settings.REPO_ROOT / "results" / "latency"
                                           / f"long-stream-{name}{'-random' if args.random_init else ''}.json")
    write_json(out, result)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(f"long stream: {args.minutes:g} min on {result['metadata']['device']} "
              f"({result['metadata']['model']}, {result['steps']} steps)")
        print(f"{'stream s':>9} {'wall s':>8} {'rss MB':>8} {'peak MB':>8} {'cache KiB':>10} {'chunk idx':>9} "
              f"{'max pos':>7}")
        for s in result["samples"]:
            print(f"{s['stream_seconds']:>9.0f} {s['wall_seconds']:>8.0f} {s['rss_mb']:>8.1f} "
                  f"{s['peak_rss_mb_interval']:>8.1f} {s['cache_bytes'] / 1024:>10.0f} {s['cache_chunk_index']:>9d} "
                  f"{s['max_position_index']:>7d}")
        growth = result["peak_rss_growth_mb"]
        print(f"peak RSS growth {'n/a' if growth is None else f'{growth:+.1f} MB'} -> memory_flat "
              f"{result['memory_flat']}; max position {result['max_position_index']} < bound "
              f"{result['position_bound']} -> positions_bounded {result['positions_bounded']}; rtf "
              f"{result['rtf']:.2f}")
        print(f"wrote {out}")
    return 0
