"""Helpers shared by the ``python -m hub bench ...`` commands: devices, memory, timing, speech
input, model loading, result metadata and atomic JSON output.

Memory on the CPU is read from ``/proc/self/status`` (``VmRSS`` now, ``VmHWM`` the peak since
start or since the last :func:`reset_peak_rss`); on a GPU it is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hub import SAMPLE_RATE, settings
from hub.io_utils import atomic_write_text, sha256_file
from hub.models.rest import RestModel, SamplingConfig

# Preset name -> checkpoint folder (relative to the repository) of the streaming student.
STUDENT_CHECKPOINTS = {"tiny": "checkpoints/rest-tiny", "base": "checkpoints/rest-base"}
TEACHER_CHECKPOINTS = {"tiny": "checkpoints/teacher-tiny", "base": "checkpoints/teacher-base"}
MODEL_PRESETS = ("test", "tiny", "base")  # sizes a --random-init model can take

ESPEAK_TEXT = ("The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. "
               "Peter Piper picked a peck of pickled peppers. How much wood would a woodchuck chuck.")


# ---------------------------------------------------------------------------------------- devices
def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> a device that exists here (ValueError otherwise)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: expected cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: expected cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def device_name(device: torch.device) -> str:
    """``"NVIDIA H100 80GB HBM3"`` or ``"x86_64 CPU (2 cores), 2 torch threads"``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores), "
            f"{torch.get_num_threads()} torch threads")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------- memory
def _proc_status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float | None:
    """Resident set size of this process now (MiB), or None off Linux."""
    kb = _proc_status_kb("VmRSS")
    return None if kb is None else kb / 1024


def peak_rss_mb() -> float | None:
    """Peak resident set size (MiB) since start or since the last :func:`reset_peak_rss`."""
    kb = _proc_status_kb("VmHWM")
    return None if kb is None else kb / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``/proc/self/clear_refs``); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()


def peak_memory_mb(device: torch.device) -> tuple[float | None, str]:
    """``(MiB, kind)``: CUDA max allocated on a GPU, the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return peak_rss_mb(), "process_peak_rss"


# ---------------------------------------------------------------------------------------- timing
class StageClock:
    """Wall time per named stage; CUDA events on a GPU (read after a synchronisation).

    ``with clock.time("decode"): ...`` adds one interval to ``decode``. On a GPU the intervals
    are queued as event pairs and converted by :meth:`collect`, which synchronises first; on the
    CPU they are ``perf_counter`` differences.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals_ms: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self._pending: list[tuple[str, Any, Any]] = []
        self.enabled = True

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._pending.append((stage, start, end))
        else:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self.totals_ms[stage] += 1000.0 * (time.perf_counter() - t0)
                self.counts[stage] += 1

    def collect(self) -> dict[str, float]:
        """Totals (ms) per stage so far."""
        if self._pending:
            synchronize(self.device)
            for stage, start, end in self._pending:
                self.totals_ms[stage] += start.elapsed_time(end)
                self.counts[stage] += 1
            self._pending.clear()
        return dict(self.totals_ms)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


def matmul_flops_per_second(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 1024,
                            repeats: int = 5) -> float:
    """Measured dense matmul throughput (FLOP/s) of ``n x n`` products: a practical peak."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    with torch.inference_mode():
        a @ b  # warm-up
        synchronize(device)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            synchronize(device)
            best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


# ---------------------------------------------------------------------------------------- speech
def shared_speech_files() -> list[Path]:
    """The shared speech files (sorted), or [] without the shared data."""
    root = settings.data_dir()
    if root is None or not (root / "speech").is_dir():
        return []
    return sorted(p for p in (root / "speech").iterdir() if p.suffix.lower() in (".wav", ".mp3", ".flac", ".m4a"))


def espeak_speech(text: str = ESPEAK_TEXT) -> np.ndarray:
    """Speech synthesised offline by ``espeak-ng``: float32 (N,) 16 kHz mono."""
    from hub.media import read_audio

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ValueError("no shared speech (set REST_DATA_DIR) and espeak-ng is not installed to synthesise some")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-w", str(wav), text], check=True, capture_output=True, timeout=60)
        return read_audio(wav)


def _speech_file(speech: str) -> np.ndarray:
    """``--speech``: an audio file (any format :func:`hub.media.read_audio` takes) or a ``.npy``
    float32 (N,) 16 kHz array."""
    path = Path(speech)
    if not path.is_file():
        raise ValueError(f"--speech {speech}: no such file")
    if path.suffix.lower() != ".npy":
        from hub.media import read_audio

        return read_audio(path)
    base = np.load(path, allow_pickle=False)
    if base.ndim != 1 or base.dtype != np.float32 or base.size == 0:
        raise ValueError(f"--speech {path.name}: expected a float32 (N,) 16 kHz array, got {base.dtype} {base.shape}")
    return base


def speech_audio(seconds: float, speech: str | None = None) -> tuple[np.ndarray, str]:
    """``seconds`` of real speech: ``speech`` (an audio file, or a ``.npy`` float32 (N,) 16 kHz
    array, looped), else the shared speech files concatenated (looped when needed), else
    espeak-ng speech when there is no shared data. Returns ``(float32 (N,), description)``."""
    if seconds <= 0:
        raise ValueError(f"--seconds {seconds}: must be > 0")
    want = int(round(seconds * SAMPLE_RATE))
    if speech is not None:
        base, source = _speech_file(speech), f"{Path(speech).name} (looped)"
    else:
        files = shared_speech_files()
        if files:
            from hub.media import read_audio

            pieces, have, used = [], 0, 0
            while have < want:
                pieces.append(read_audio(files[used % len(files)]))
                have += len(pieces[-1])
                used += 1
            source = f"shared speech ({len(files)} files, concatenated in name order, looped)"
            return np.concatenate(pieces)[:want].astype(np.float32), source
        base, source = espeak_speech(), "espeak-ng synthesised speech (no shared data), looped"
    return np.tile(base, -(-want // len(base)))[:want].astype(np.float32), source


# ---------------------------------------------------------------------------------------- models
@dataclass
class LoadedModel:
    """A REST model and where it came from."""

    model: RestModel
    checkpoint: Path | None  # None for a random-init model
    description: str

    @property
    def sha256(self) -> str | None:
        return sha256_file(self.checkpoint / "model.safetensors") if self.checkpoint else None


def random_rest_model(preset: str, role: str = "student", seed: int = 0, perturb: float = 0.05) -> RestModel:
    """A randomly initialised RestModel of preset size (speed measurements before training).

    The DiT weights get small random perturbations, so its adaLN-Zero init does not make every
    output zero (the compute is the same either way).
    """
    from hub.train.stages.student import StudentStage
    from hub.train.stages.teacher import TeacherStage, load_vae, rest_config

    if preset not in MODEL_PRESETS:
        raise ValueError(f"--preset {preset!r}: expected one of {list(MODEL_PRESETS)}")
    torch.manual_seed(seed)
    gen = dataclasses.replace(TeacherStage.presets[preset].model, vae_checkpoint="")
    if role == "student":
        student = StudentStage.presets[preset].model
        gen = dataclasses.replace(gen, sampling=SamplingConfig(steps=student.student_steps,
                                                               shift=student.student_shift))
    vae = load_vae(gen)
    model = RestModel(rest_config(gen, vae, role), vae=vae)
    with torch.no_grad():
        for p in model.dit.parameters():
            p.add_(perturb * torch.randn_like(p))
    return model.eval()


def missing_checkpoint_message(folder: Path, role: str) -> str:
    train = ("`python -m hub.train vae --preset tiny`, then `python -m hub.train teacher --preset tiny`"
             + (", then `python -m hub.train student --preset tiny`" if role == "student" else ""))
    return f"checkpoint {folder} not found; train it with {train}, or pass --checkpoint DIR"


def load_rest(*, preset: str | None, checkpoint: str | os.PathLike | None, random_init: bool = False,
              role: str = "student", device: torch.device | str = "cpu") -> LoadedModel:
    """The model a bench/CLI run asked for: ``--checkpoint DIR``, ``--preset P`` (its checkpoint
    folder) or ``--preset P --random-init``."""
    if random_init:
        if checkpoint:
            raise ValueError("--random-init and --checkpoint exclude each other")
        if not preset:
            raise ValueError("--random-init needs --preset (a model size)")
        model = random_rest_model(preset, role=role).to(device)
        return LoadedModel(model, None, f"random-init {preset} {role} (untrained weights: speed only)")
    if checkpoint:
        folder = Path(checkpoint)
    elif preset:
        table = STUDENT_CHECKPOINTS if role == "student" else TEACHER_CHECKPOINTS
        if preset not in table:
            raise ValueError(f"--preset {preset!r} has no checkpoint folder; known: {sorted(table)} "
                             f"(or use --random-init with one of {list(MODEL_PRESETS)})")
        folder = settings.REPO_ROOT / table[preset]
    else:
        raise ValueError("give --preset P or --checkpoint DIR")
    if not folder.is_dir():
        raise ValueError(missing_checkpoint_message(folder, role))
    return LoadedModel(RestModel.from_pretrained(folder, map_location=device), folder, str(folder))


# ---------------------------------------------------------------------------------------- results
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=settings.REPO_ROOT, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def metadata(device: torch.device, loaded: LoadedModel | None = None, **extra: Any) -> dict[str, Any]:
    """Provenance of a result: git commit, device, versions, threads, checkpoint and its sha256."""
    meta: dict[str, Any] = {
        "git_commit": git_commit(),
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if loaded is not None:
        meta.update(checkpoint=str(loaded.checkpoint) if loaded.checkpoint else None,
                    checkpoint_sha256=loaded.sha256, model=loaded.description,
                    config=loaded.model.config.to_dict())
    meta.update(extra)
    return meta


def write_json(path: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Write ``result`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(result, indent=2, default=str) + "\n")
    return Path(path)
