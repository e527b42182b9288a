"""What a results folder records about how its numbers were made (``metadata.json``).

Git commit (and whether the tree had local changes), device, Python and package versions, the
run configuration, every method's description with checkpoint hashes, the metrics with their
variants and weight-file hashes (or why they were unavailable), per-clip input notes and the
alignment of every outside video.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from hub import settings

PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-image", "opencv-python-headless", "opencv-python",
            "av", "mediapipe", "dlib-bin", "dlib", "face_recognition_models", "lpips", "onnxruntime",
            "python_speech_features", "safetensors", "pandas", "plotly", "kaleido")


def git_info(root: Path = settings.REPO_ROOT) -> dict[str, Any]:
    """Commit hash and whether tracked files differ from it (None values outside a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of the packages the numbers depend on (absent ones are left out)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def device_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model and core count, and the GPU name when ``device`` is a CUDA device."""
    info: dict[str, Any] = {"requested": device, "platform": platform.platform(),
                            "cpu": platform.processor() or platform.machine()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    info["cpu_count"] = os.cpu_count()
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            index = torch.device(device).index or 0
            info["gpu"] = torch.cuda.get_device_name(index)
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return info


def metric_records(plan) -> dict[str, Any]:
    """Variant, availability and the weight files (with sha256) of every metric of a run."""
    from eval.weights import resolve_weight, weight_record, WeightsUnavailable

    out = {}
    for name, info in plan.infos.items():
        entry: dict[str, Any] = {"variant": info.variant, "kind": info.kind, "level": info.level,
                                 "outputs": list(info.outputs or (name,))}
        if name in plan.unavailable:
            entry.update(status="unavailable", reason=plan.unavailable[name])
        elif name in plan.not_applicable:
            entry.update(status="n/a", reason=plan.not_applicable[name])
        else:
            entry["status"] = "run"
            weights = []
            for spec in info.weights:
                try:
                    weights.append(weight_record(spec, resolve_weight(spec)))
                except WeightsUnavailable as error:
                    weights.append({"name": spec.name, "error": str(error)})
            entry["weights"] = weights
        out[name] = entry
    return out


def collect_metadata(runner, items, status: str, started: float) -> dict[str, Any]:
    """The ``metadata.json`` payload of a :class:`eval.runner.Runner` run."""
    from eval.runner import config_to_dict

    return {
        "status": status,
        "benchmark": {"name": runner.benchmark.name, "description": runner.benchmark.description,
                      "size": runner.size, "quick": runner.config.quick, "limit": runner.config.limit,
                      "clips": [i.clip_id for i in items]},
        "config": config_to_dict(runner.config),
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0].endswith("__main__.py") else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "git": git_info(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "device": device_info(runner.config.device),
        "data_dir": str(settings.data_dir()),
        "methods": {m.label: {**runner._fingerprint(m), "reference_row": m.is_reference,
                              "slug": runner.slugs[m.label]} for m in runner.methods},
        "metrics": metric_records(runner.plan),
        "inputs": runner.item_notes,
        "alignment": runner.alignment,
        "outputs": {"video": f"H.264 crf {_crf()} yuv420p via hub.media.write_video; metrics are computed on "
                             "the decoded mp4", "seeds": "zlib.crc32(clip id) mixed with --seed (same for "
                                                        "every method)"},
        "failures": len(runner.failures),
    }


def _crf() -> int:
    from eval.runner import OUTPUT_CRF

    return OUTPUT_CRF
