"""Pooled FaceSync lag curves: the mean over clips of each method's lag curve, from a results folder.

    python scripts/facesync_pooled_curves.py results/mini-real [--out FILE.csv]

Per clip, ``av_facesync`` reads a weak sync as a peak at a random lag; averaging the curves of all
clips of a method shows whether its mouth motion follows the audio at a consistent lag. Reads the
cached outputs (``DIR/outputs/<method>/<clip>.mp4`` with their audio) and the shipped FaceSync
model; prints one line per method (lag of the pooled peak, its value, the value at lag 0) and
writes every pooled curve to ``DIR/facesync_pooled_curves.csv`` (atomically).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.metrics.faces import dlib_landmarks68  # noqa: E402
from eval.nets.facesync import FaceSyncModel  # noqa: E402
from eval.weights import FACESYNC_CCA, resolve_weight  # noqa: E402
from hub.io_utils import atomic_write_text  # noqa: E402
from hub.media import read_video  # noqa: E402


def pooled_curves(results_dir: Path, model: FaceSyncModel) -> dict[str, tuple[int, np.ndarray]]:
    """``{method folder: (clips used, mean lag curve (2M+1,))}`` over clips with a face in most frames."""
    out = {}
    for folder in sorted(p for p in (results_dir / "outputs").iterdir() if p.is_dir()):
        curves = []
        for video in sorted(folder.glob("*.mp4")):
            clip = read_video(video)
            landmarks = dlib_landmarks68(clip.frames)  # (T, 68, 2)
            if clip.audio is None or np.isfinite(landmarks).all(axis=(1, 2)).mean() < 0.5:
                continue
            curves.append(model.lag_curve(clip.audio, landmarks))
        if curves:
            out[folder.name] = (len(curves), np.mean(curves, axis=0))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="an eval results folder with outputs/")
    parser.add_argument("--out", type=Path, help="CSV path (default DIR/facesync_pooled_curves.csv)")
    args = parser.parse_args(argv)
    if not (args.dir / "outputs").is_dir():
        print(f"error: {args.dir}/outputs not found (run `python -m eval run ... --out {args.dir}` first)",
              file=sys.stderr)
        return 2
    model = FaceSyncModel.load(resolve_weight(FACESYNC_CCA))
    m = model.config.max_offset
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "clips", *[f"lag{k:+d}" for k in range(-m, m + 1)]])
    for name, (clips, curve) in pooled_curves(args.dir, model).items():
        peak = int(np.argmax(curve))
        print(f"{name:40s} {clips} clips  pooled peak at lag {peak - m:+d} ({curve[peak]:.3f}), "
              f"at lag 0 {curve[m]:.3f}")
        writer.writerow([name, clips, *[f"{v:.4f}" for v in curve]])
    out = args.out or args.dir / "facesync_pooled_curves.csv"
    atomic_write_text(out, buffer.getvalue())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
