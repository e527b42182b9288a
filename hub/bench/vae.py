"""``python -m hub bench vae``: reconstruction quality and speed of the causal video VAE on val clips.

    python -m hub bench vae --preset tiny [--checkpoint DIR] [--device cpu|cuda] [--json]
                            [--prepared DIR] [--max-frames N] [--out FILE] [--untrained]

Val clips come from the prepared folder (``data/prepared_<image_size>/index.csv``, split ``val``);
without one they are prepared (decoded at 25 fps, face-cropped by ``hub.data.prepare``) from the
shared data's ``manifest.csv`` into ``cache_dir()/vae_bench_val_<size>``. Each clip (its first
``1 + n * f_t <= max_frames`` frames) is encoded in one call and decoded by the streaming decoder
one latent frame at a time, as the engine does.

Reported: ``psnr_db`` and ``ssim`` (the eval hub's definitions: uint8 RGB, data range 255, mean
over all frames), ``lpips`` (AlexNet LPIPS when its backbone weights resolve, else null and
``lpips_reason``), ``taef2_distance`` (the TAEF2 feature distance used as the LPIPS substitute,
every 8th frame), ``compression`` (``3 H W f_t / (C h w)``), ``encode_ms_per_frame`` (whole-clip
encode), ``decode_ms_per_frame`` (streaming decode after two warm-up chunks), ``peak_mem_mb``
(CUDA: max allocated; CPU: the process's peak RSS) and ``device``. Results are written
atomically to ``results/vae/<preset>.json`` with metadata (git commit, device, versions, config,
checkpoint sha256).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hub import settings
from hub.io_utils import atomic_write_text, sha256_file
from hub.models.vae import VAE_PRESETS, CausalVideoVAE, VAEConfig

WARMUP_CHUNKS = 2
TAEF2_EVERY = 8


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hub bench vae", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, help=f"one of {sorted(VAE_PRESETS)}")
    parser.add_argument("--checkpoint", help="checkpoint folder (default: checkpoints/vae-<preset>)")
    parser.add_argument("--untrained", action="store_true",
                        help="benchmark speed with random weights (quality metrics are then null)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--prepared", help="prepared folder with index.csv (default data/prepared_<size>)")
    parser.add_argument("--max-frames", type=int, default=201, help="frames per val clip (default 201)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", help="result file (default results/vae/<preset>.json)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: expected cpu, cuda or cuda:N")
    return device


def _load_model(args: argparse.Namespace) -> tuple[CausalVideoVAE, Path | None]:
    if args.untrained:
        if args.checkpoint:
            raise ValueError("--untrained and --checkpoint exclude each other")
        torch.manual_seed(0)
        return CausalVideoVAE(VAE_PRESETS[args.preset]), None
    folder = Path(args.checkpoint) if args.checkpoint else settings.REPO_ROOT / "checkpoints" / f"vae-{args.preset}"
    if not folder.is_dir():
        raise ValueError(f"--checkpoint {folder}: not found; train one with `python -m hub.train vae --preset "
                         f"{args.preset}` or pass --untrained to time random weights")
    return CausalVideoVAE.from_pretrained(folder), folder


def val_clips(cfg: VAEConfig, prepared: str | None, max_frames: int) -> list[tuple[str, np.ndarray]]:
    """``(id, uint8 (T, S, S, 3))`` for every val clip, ``T = 1 + n f_t <= max_frames``."""
    from hub.train.stages.vae import load_clips, read_index, resolve_dir

    size = cfg.image_size
    folder = resolve_dir(prepared) if prepared else settings.REPO_ROOT / "data" / f"prepared_{size}"
    if not (folder / "index.csv").is_file():
        if prepared:
            raise ValueError(f"--prepared {folder}: no index.csv (run python -m hub.data prepare)")
        folder = _prepare_val(size)
    rows = read_index(folder, ("val",))
    clips = []
    for row, frames in zip(rows, load_clips(folder, rows, size)):
        usable = min(len(frames), max_frames)
        usable = 1 + (usable - 1) // cfg.temporal_factor * cfg.temporal_factor
        clips.append((row["id"], frames[:usable]))
    return clips


def _prepare_val(size: int) -> Path:
    """Prepare the shared val clips into the cache (face crops at ``size``), once."""
    from hub.data.prepare import PrepareConfig, list_sources, prepare, write_index

    manifest = settings.data_dir(required=True) / "manifest.csv"
    out = settings.cache_dir() / f"vae_bench_val_{size}"
    prepare(list_sources(manifest, split="val"), out, PrepareConfig(size=size), workers=1, progress=False)
    write_index(out)
    return out


def _to_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    video = torch.from_numpy(frames).to(device).permute(3, 0, 1, 2).float() / 127.5 - 1  # (3, T, S, S)
    return video[None]  # (1, 3, T, S, S)


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    frames = ((video[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (3, T, S, S)
    return frames.permute(1, 2, 3, 0).cpu().numpy()  # (T, S, S, 3)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=settings.REPO_ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _lpips_model() -> tuple[Any, str | None]:
    try:
        from eval.metrics.quality import load_lpips
        from eval.weights import WeightsUnavailable
    except ImportError as exc:
        return None, f"LPIPS unavailable: {exc}"
    try:
        return load_lpips(), None
    except (ValueError, WeightsUnavailable) as exc:
        return None, f"LPIPS unavailable: {str(exc).split('. ')[0]}"


@torch.inference_mode()
def run(args: argparse.Namespace) -> dict[str, Any]:
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, folder = _load_model(args)
    cfg = model.config
    if args.max_frames < 1 + cfg.temporal_factor:
        raise ValueError(f"--max-frames {args.max_frames}: need at least 1 + f_t = {1 + cfg.temporal_factor}")
    model = model.to(device).eval()
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # measured faster for these convs on CPU
    clips = val_clips(cfg, args.prepared, args.max_frames)
    if not clips:
        raise ValueError("no val clips found")

    from eval.metrics.quality import psnr_frames, ssim_frames

    lpips_net, lpips_reason = (None, "untrained weights") if args.untrained else _lpips_model()
    taef2 = None
    if not args.untrained:
        from hub.models.taef2 import TAEF2Perceptual

        taef2 = TAEF2Perceptual().to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    psnrs, ssims, lpipses, taef2s = [], [], [], []
    enc_time = dec_time = 0.0
    enc_frames = dec_frames = 0
    per_clip = []
    for clip_id, frames in clips:
        video = _to_tensor(frames, device)  # (1, 3, T, S, S)
        model.encode(video[:, :, :1])  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        latents = model.encode(video)  # (1, C, 1 + n, h, w)
        _sync(device)
        enc_time += time.perf_counter() - t0
        enc_frames += video.shape[2]
        stream = model.start_decode()
        pieces = []
        for k in range(latents.shape[2]):
            t0 = time.perf_counter()
            piece = stream.decode(latents[:, :, k:k + 1])  # (1, 3, 1 or f_t, S, S)
            _sync(device)
            if k >= WARMUP_CHUNKS:
                dec_time += time.perf_counter() - t0
                dec_frames += piece.shape[2]
            pieces.append(piece)
        recon = torch.cat(pieces, dim=2)  # (1, 3, T, S, S)
        out = _to_uint8(recon)
        row: dict[str, Any] = {"clip": clip_id, "frames": int(len(frames))}
        if not args.untrained:
            clip_psnr, clip_ssim = psnr_frames(out, frames), ssim_frames(out, frames)
            psnrs.append(clip_psnr)
            ssims.append(clip_ssim)
            row.update(psnr_db=float(clip_psnr.mean()), ssim=float(clip_ssim.mean()))
            pick = slice(0, None, TAEF2_EVERY)
            dist = taef2(recon[0, :, pick].transpose(0, 1), video[0, :, pick].transpose(0, 1))  # (K,)
            taef2s.append(dist.cpu().numpy())
            if lpips_net is not None:
                from eval.metrics.quality import lpips_frames

                clip_lpips = lpips_frames(out, frames, lpips_net)
                lpipses.append(clip_lpips)
                row["lpips"] = float(clip_lpips.mean())
        per_clip.append(row)

    if device.type == "cuda":
        peak_mb, peak_kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    else:
        peak_mb, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_max_rss"
    mean = (lambda parts: float(np.mean(np.concatenate(parts))) if parts else None)
    size = cfg.image_size
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads")
    result = {
        "preset": args.preset,
        "psnr_db": mean(psnrs),
        "ssim": mean(ssims),
        "lpips": mean(lpipses),
        "lpips_reason": None if lpipses else lpips_reason,
        "taef2_distance": mean(taef2s),
        "compression": cfg.compression(size, size),
        "encode_ms_per_frame": 1000 * enc_time / max(1, enc_frames),
        "decode_ms_per_frame": 1000 * dec_time / max(1, dec_frames),
        "peak_mem_mb": peak_mb,
        "peak_mem_kind": peak_kind,
        "device": device_name,
        "resolution": size,
        "val_clips": len(clips),
        "val_frames": int(sum(len(f) for _, f in clips)),
        "per_clip": per_clip,
        "metadata": {
            "git_commit": _git_commit(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": device_name,
            "channels_last": device.type == "cpu",
            "checkpoint": str(folder) if folder else None,
            "checkpoint_sha256": sha256_file(folder / "model.safetensors") if folder else None,
            "untrained": bool(args.untrained),
            "config": dataclasses.asdict(cfg),
            "streaming_chunk_latent_frames": 1,
            "warmup_chunks_excluded": WARMUP_CHUNKS,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.preset not in VAE_PRESETS:
        raise ValueError(f"--preset {args.preset!r}: expected one of {sorted(VAE_PRESETS)}")
    result = run(args)
    out = Path(args.out) if args.out else settings.REPO_ROOT / "results" / "vae" / f"{args.preset}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        fmt = (lambda v, spec: "n/a" if v is None else format(v, spec))
        print(f"vae {args.preset} on {result['device']}: PSNR {fmt(result['psnr_db'], '.2f')} dB, "
              f"SSIM {fmt(result['ssim'], '.4f')}, LPIPS {fmt(result['lpips'], '.4f')}"
              f"{'' if result['lpips'] is not None else ' (' + str(result['lpips_reason']) + ')'}, "
              f"compression {result['compression']:.0f}x, encode {result['encode_ms_per_frame']:.1f} ms/frame, "
              f"decode {result['decode_ms_per_frame']:.1f} ms/frame, peak {result['peak_mem_mb']:.0f} MB")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    import sys

    try:
        sys.exit(main())
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
