"""``python -m eval fit-facesync``: fit the FaceSync CCA sync model on prepared training clips.

    python -m eval fit-facesync [--prepared data/prepared_256] [--out eval/assets/facesync_cca.safetensors]

1. Reads ``index.csv`` of a ``python -m hub.data prepare`` folder; fits on ``split=train`` clips with
   audio only (``val`` clips are only scored, never fitted on).
2. dlib 68-point landmarks of every frame (the detector the metric uses on generated video).
3. Picks the settings from a small grid by identity-grouped cross-validation on the training clips:
   score = share of known shifts recovered within ±1 frame + share of unshifted clips read as in sync.
4. Fits the chosen settings on all training clips, scores the val clips the same way (reported, not
   used for any choice) and writes the model with its report (clip ids, grid scores, val scores,
   git commit) atomically.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

import numpy as np

from eval.nets.facesync import FaceSyncConfig, FaceSyncModel, fit_facesync, shift_recovery

DEFAULT_OUT = Path(__file__).resolve().parent / "assets" / "facesync_cca.safetensors"
GRID = {"video_context": (0, 2), "ridge": (0.1, 1.0), "components": (1, 3)}
FOLDS = 4
MIN_FRAMES = 2 * FaceSyncConfig().max_offset + 2


def load_prepared(root: Path, split: str) -> list[dict[str, Any]]:
    """``[{id, identity, audio (S,), landmarks (T, 68, 2)}]`` for the clips of ``split`` with audio."""
    from eval.metrics.faces import dlib_landmarks68
    from hub.media import read_video

    index = root / "index.csv"
    if not index.is_file():
        raise ValueError(f"{index} not found; run `python -m hub.data prepare --src <shared data>/manifest.csv "
                         f"--out {root} --size 256` first")
    with open(index, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == split and r["has_audio"] == "True"]
    clips = []
    for row in rows:
        clip = read_video(root / row["path"])
        if clip.audio is None or len(clip.frames) < MIN_FRAMES:
            continue
        landmarks = dlib_landmarks68(clip.frames)  # (T, 68, 2)
        if np.isfinite(landmarks).all(axis=(1, 2)).mean() < 0.5:
            continue  # mostly faceless: no mouth signal to fit
        clips.append({"id": row["id"], "identity": row["identity"], "audio": clip.audio, "landmarks": landmarks})
    return clips


def _pairs(clips: list[dict[str, Any]]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(c["audio"], c["landmarks"]) for c in clips]


def cross_validate(clips: list[dict[str, Any]], config: FaceSyncConfig, folds: int = FOLDS) -> float:
    """Mean held-out score over identity-grouped folds (relative + absolute within ±1, in 0..2)."""
    identities = sorted({c["identity"] for c in clips})
    scores = []
    for fold in range(folds):
        held = set(identities[fold::folds])
        test = [c for c in clips if c["identity"] in held]
        if not test:
            continue
        model = fit_facesync(_pairs([c for c in clips if c["identity"] not in held]), config)
        result = shift_recovery(model, _pairs(test))
        scores.append(result["relative_within_1"] + result["absolute_within_1"])
    return float(np.mean(scores))


def fit_from_prepared(root: Path, out: Path, log=print) -> FaceSyncModel:
    """The whole command; returns the saved model."""
    from eval.metadata import git_info, package_versions

    train = load_prepared(root, "train")
    if len(train) < FOLDS:
        raise ValueError(f"{root}: {len(train)} usable training clips with audio and a face; need at least {FOLDS}")
    log(f"{len(train)} training clips, {sum(len(c['landmarks']) for c in train)} frames")
    grid = []
    for values in itertools.product(*GRID.values()):
        config = FaceSyncConfig(**dict(zip(GRID, values)))
        grid.append({"config": dict(zip(GRID, values)), "cv_score": cross_validate(train, config)})
        log(f"  {grid[-1]['config']}: cross-validated score {grid[-1]['cv_score']:.3f} (of 2)")
    best = max(grid, key=lambda g: g["cv_score"])
    config = FaceSyncConfig(**best["config"])
    val = load_prepared(root, "val")
    report = {"train_clips": [c["id"] for c in train], "grid": grid, "chosen": best["config"],
              "landmarks": "dlib 68 points (face_recognition_models)", "prepared": str(root.name),
              "git": git_info(), "versions": package_versions()}
    model = fit_facesync(_pairs(train), config, report)
    if val:
        model.report["val"] = shift_recovery(model, _pairs(val))
        model.report["val_offsets"] = {c["id"]: model.sync(c["audio"], c["landmarks"])["offset"] for c in val}
    model.save(out)
    log(f"chosen {best['config']}; canonical correlations {np.round(model.canonical_correlations, 3).tolist()}")
    if val:
        log(f"val clips (not fitted on): {model.report['val']}; offsets {model.report['val_offsets']}")
    log(f"wrote {out}")
    return model
