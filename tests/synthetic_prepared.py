"""A tiny prepared-clips folder (index.csv + mp4 + wav) made of synthetic talking 'faces'.

A bright disc (the face) with a dark ellipse (the mouth) whose opening follows the loudness of a
tone burst signal, so audio and video are related, as in real speech clips.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from hub import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME


def synthetic_clip(frames: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (T, size, size, 3) frames and float32 (T * 640,) audio."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * SAMPLES_PER_FRAME) / SAMPLE_RATE
    envelope = np.repeat(rng.uniform(0, 1, frames // 5 + 1), 5 * SAMPLES_PER_FRAME)[: len(t)]
    audio = (0.5 * envelope * np.sin(2 * np.pi * 220 * (1 + seed % 3) * t)).astype(np.float32)
    loud = envelope[::SAMPLES_PER_FRAME][:frames]
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.array([180, 140, 120]) * (0.8 + 0.2 * (seed % 2))
    video = np.zeros((frames, size, size, 3), np.uint8)
    for i in range(frames):
        face = ((xx - 0.5) ** 2 + (yy - 0.45) ** 2) < 0.12
        mouth = ((xx - 0.5) ** 2 / 0.02 + (yy - 0.65) ** 2 / (0.0005 + 0.004 * loud[i])) < 1
        img = np.full((size, size, 3), 30, np.float64)
        img[face] = base
        img[mouth & face] = (60, 20, 20)
        video[i] = img.astype(np.uint8)
    return video, audio


def write_prepared(root: Path, size: int = 32, clips: dict[str, str] | None = None,
                   seconds: float = 2.0) -> Path:
    from scipy.io import wavfile

    from hub.media import write_video

    clips = clips or {"syn_a": "train", "syn_b": "train", "syn_c": "val"}
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("clips", "audio"):
        (root / sub).mkdir(exist_ok=True)
    rows = []
    frames = int(seconds * FPS)
    for i, (clip_id, split) in enumerate(sorted(clips.items())):
        video, audio = synthetic_clip(frames, size, seed=i)
        write_video(root / "clips" / f"{clip_id}.mp4", video, audio, crf=10)
        wavfile.write(root / "audio" / f"{clip_id}.wav", SAMPLE_RATE, audio)
        rows.append({"id": clip_id, "split": split, "identity": clip_id, "frames": frames, "fps": FPS,
                     "seconds": seconds, "path": f"clips/{clip_id}.mp4", "audio_path": f"audio/{clip_id}.wav",
                     "landmarks_path": "", "size": size, "source": "synthetic", "has_audio": 1})
    with open(root / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root
