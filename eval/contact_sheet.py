"""Contact sheets: evenly spaced frames of every method's output for one clip, one row per method.

``python -m eval contact-sheet DIR --clip ID [--frames 8] [--out FILE.png]`` reads the cached outputs
of a results folder (``DIR/outputs/<method>-<hash>/<clip>.mp4`` with their ``.json`` records) and
writes a PNG with the method names, so the numbers in ``table.md`` can be checked by eye.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LABEL_HEIGHT = 14


def method_outputs(results_dir: Path, clip: str) -> list[tuple[str, Path]]:
    """(method label, video path) of every cached output of ``clip``, sorted by label."""
    found = []
    for video in sorted((results_dir / "outputs").glob(f"*/{clip}.mp4")):
        record = video.with_suffix(".json")
        label = video.parent.name.rsplit("-", 1)[0]
        if record.is_file():
            label = json.loads(record.read_text()).get("method", label)
        found.append((str(label), video))
    if not found:
        raise ValueError(f"no cached outputs of clip {clip!r} under {results_dir / 'outputs'}; "
                         "run `python -m eval run` for that folder first")
    return sorted(found)


def contact_sheet(results_dir: str | Path, clip: str, n_frames: int = 8, size: int = 128) -> np.ndarray:
    """uint8 (rows * (size + label), n_frames * size, 3): one labelled row per method."""
    import cv2

    from hub.media import read_video

    if n_frames < 1:
        raise ValueError(f"n_frames={n_frames}; must be >= 1")
    rows = []
    for label, video in method_outputs(Path(results_dir), clip):
        frames = read_video(video, with_audio=False).frames  # (T, H, W, 3)
        picks = np.linspace(0, len(frames) - 1, n_frames).round().astype(int)
        strip = np.concatenate([cv2.resize(frames[i], (size, size), interpolation=cv2.INTER_AREA)
                                for i in picks], axis=1)  # (size, n * size, 3)
        banner = np.zeros((LABEL_HEIGHT, strip.shape[1], 3), np.uint8)
        cv2.putText(banner, label, (3, LABEL_HEIGHT - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        rows.append(np.concatenate([banner, strip], axis=0))
    return np.concatenate(rows, axis=0)


def write_contact_sheet(results_dir: str | Path, clip: str, out: str | Path, n_frames: int = 8) -> Path:
    """Write the sheet as PNG atomically; returns the path."""
    import cv2

    from hub.io_utils import atomic_path

    sheet = contact_sheet(results_dir, clip, n_frames)
    with atomic_path(out, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise ValueError(f"could not write {out}")
    return Path(out)
