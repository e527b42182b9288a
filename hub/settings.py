"""Project-wide settings read from the environment, in one place.

``REST_DATA_DIR``   folder of the shared data (clips, portraits, speech, baselines, weights);
                    defaults to ``../shared/data`` next to the repository when that exists.
``REST_CACHE_DIR``  where downloaded assets and weights are cached (default ``~/.cache/rest-hub``).
``REST_WEIGHTS_DIR`` an extra folder searched for metric/model weight files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir(required: bool = False) -> Path | None:
    """The shared data folder, or None when it is not configured and not next to the repo.

    With ``required=True`` a missing folder raises a ``ValueError`` that says how to supply it.
    """
    env = os.environ.get("REST_DATA_DIR")
    candidate = Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "data"
    if candidate.is_dir():
        return candidate
    if required:
        where = f"REST_DATA_DIR={env}" if env else f"the default {candidate}"
        raise ValueError(
            f"shared data folder not found ({where}); set REST_DATA_DIR to a folder with "
            "clips/, portraits/, speech/ and weights/, or run `python -m hub.assets fetch` "
            "for the demo examples"
        )
    return None


def cache_dir() -> Path:
    """Folder for downloaded assets and weights (created on demand)."""
    path = Path(os.environ.get("REST_CACHE_DIR", Path.home() / ".cache" / "rest-hub")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def weights_dirs() -> list[Path]:
    """Folders searched, in order, for weight files named by their usual file name."""
    dirs: list[Path] = []
    if os.environ.get("REST_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["REST_WEIGHTS_DIR"]).expanduser())
    shared = data_dir()
    if shared is not None:
        dirs.append(shared / "weights")
    dirs.append(cache_dir() / "weights")
    return dirs


def find_weight_file(file_name: str, how_to_get: str) -> Path:
    """Path of a weight file searched by name in :func:`weights_dirs`, in order.

    Raises a ``ValueError`` naming the folders searched and ``how_to_get`` when it is not found.
    """
    dirs = weights_dirs()
    for folder in dirs:
        candidate = folder / file_name
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(d) for d in dirs)
    raise ValueError(f"weight file {file_name} not found (searched: {searched}); {how_to_get}")


@dataclass(frozen=True)
class InputLimits:
    """Limits on user inputs (uploads, CLI inputs). Exceeding one is a ValueError, never a crop."""

    max_file_mb: float = 200.0
    max_video_seconds: float = 600.0
    max_audio_seconds: float = 600.0
    max_image_pixels: int = 40_000_000  # e.g. 8000 x 5000
    max_video_side: int = 4096


DEFAULT_LIMITS = InputLimits()
