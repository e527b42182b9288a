"""Turn raw talking-face videos into square 25 fps training clips (``python -m hub.data prepare``).

For every source video:

1. decode at 25 fps (``hub.media.iter_video_frames``) and run the face analyzer on every frame;
2. place one fixed square head crop for the clip (median face centre and size, ``scale`` x face
   size, shrunk to fit the frame down to ``min_scale`` x, ``hub.face.track_clip_boxes``),
   padding at the image borders only beyond that;
3. decode again, crop and resize to ``size`` x ``size`` and encode H.264 (``crf``) with the clip's
   16 kHz audio aligned to frame 0;
4. write ``DIR/clips/<id>.mp4``, ``DIR/audio/<id>.wav`` (16 kHz mono 16-bit),
   ``DIR/landmarks/<id>.npy`` float32 ``(T, 478, 2)`` in crop pixels (NaN rows where no face) and
   ``DIR/meta/<id>.json`` (written last: its presence marks the clip done).

``DIR/index.csv`` is rebuilt atomically at the end from every ``meta/*.json`` in DIR. Failures are
appended to ``DIR/failures.jsonl`` and do not stop the run. A second run skips done clips.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
import time
import traceback
import wave
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hub import FPS, SAMPLE_RATE
from hub.io_utils import atomic_path, atomic_write_text

__all__ = [
    "INDEX_COLUMNS",
    "PrepareConfig",
    "SourceClip",
    "list_sources",
    "prepare_clip",
    "prepare",
    "write_index",
    "read_index",
]

INDEX_COLUMNS = [
    "id", "split", "identity", "frames", "fps", "seconds", "path", "audio_path",
    "landmarks_path", "size", "source", "has_audio",
]  # fmt: skip
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
SETTINGS_FILE = "prepare.json"


@dataclass(frozen=True)
class PrepareConfig:
    """How clips are cropped and encoded."""

    size: int = 256  # output side in pixels
    scale: float = 2.0  # crop side / face size
    min_scale: float | None = 1.5  # shrink to fit the frame down to this before padding
    shift_y: float = 0.0  # crop centre shift, in face sizes (negative = up)
    crf: int = 18  # H.264 quality (lower = better)
    preset: str = "medium"  # x264 speed preset

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 2048:
            raise ValueError(f"--size must be between 16 and 2048 pixels, got {self.size}")
        if not 1.0 <= self.scale <= 4.0:
            raise ValueError(f"--scale must be between 1.0 and 4.0, got {self.scale}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"--crf must be between 0 and 51, got {self.crf}")


@dataclass(frozen=True)
class SourceClip:
    """One raw video to prepare."""

    id: str
    split: str
    identity: str
    path: Path
    source: str  # where it came from (manifest source column or the path relative to --src)


def list_sources(src: str | os.PathLike, split: str | None = None) -> list[SourceClip]:
    """The clips to prepare from a folder of videos or a manifest csv.

    Folder: every video file under ``src`` (recursively); id and identity = file stem; split =
    ``split`` (default ``train``). Manifest (``file, kind, split, identity, ..., source``): only
    ``kind=clip`` rows, paths relative to the csv's folder; ``split`` (if given) keeps only rows
    of that split.
    """
    root = Path(src)
    if not root.exists():
        raise ValueError(f"--src {root}: not found (give a folder of videos or a manifest.csv)")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise ValueError(f"--src {root}: expected a folder of videos or a manifest .csv file")
        with open(root, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        needed = {"file", "kind", "split", "identity"}
        if not rows or not needed <= set(rows[0]):
            raise ValueError(f"--src {root}: a manifest needs the columns {sorted(needed)}")
        clips = [
            SourceClip(
                id=Path(r["file"]).stem,
                split=r["split"],
                identity=r["identity"] or Path(r["file"]).stem,
                path=root.parent / r["file"],
                source=r.get("source") or r["file"],
            )
            for r in rows
            if r["kind"] == "clip" and (split is None or r["split"] == split)
        ]
    else:
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        clips = [
            SourceClip(id=p.stem, split=split or "train", identity=p.stem, path=p,
                       source=str(p.relative_to(root)))
            for p in files
        ]
    seen: dict[str, Path] = {}
    for clip in clips:
        if clip.id in seen:
            raise ValueError(f"two source videos share the id {clip.id!r}: {seen[clip.id]} and {clip.path}")
        seen[clip.id] = clip.path
    if not clips:
        raise ValueError(f"--src {root}: no video clips found")
    return clips


def _write_wav(path: Path, audio: np.ndarray) -> None:
    """16-bit PCM mono wav at 16 kHz, atomically."""
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")  # (N,)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(pcm.tobytes())
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _clip_paths(out_dir: Path, clip_id: str) -> dict[str, Path]:
    return {
        "video": out_dir / "clips" / f"{clip_id}.mp4",
        "audio": out_dir / "audio" / f"{clip_id}.wav",
        "landmarks": out_dir / "landmarks" / f"{clip_id}.npy",
        "meta": out_dir / "meta" / f"{clip_id}.json",
    }


def is_done(out_dir: Path, clip_id: str) -> bool:
    """True when the clip's meta file and every file it names exist."""
    paths = _clip_paths(out_dir, clip_id)
    if not paths["meta"].is_file():
        return False
    try:
        row = json.loads(paths["meta"].read_text())["row"]
    except (ValueError, KeyError):
        return False
    return all((out_dir / row[k]).is_file() for k in ("path", "landmarks_path") if row[k]) and (
        not row["audio_path"] or (out_dir / row["audio_path"]).is_file()
    )


def prepare_clip(clip: SourceClip, out_dir: Path, config: PrepareConfig, analyzer) -> dict:
    """Prepare one clip (see the module docstring) and return its index row."""
    from hub import media
    from hub.face import NUM_LANDMARKS, crop_square, track_clip_boxes

    started = time.perf_counter()
    paths = _clip_paths(out_dir, clip.id)
    info = media.probe(clip.path)
    # pass 1: landmarks (or, for detector-only faces, boxes) in source pixels
    stats: dict = {}
    landmarks: list[np.ndarray | None] = []
    targets: list[np.ndarray | None] = []
    shape = None
    for _, frame in media.iter_video_frames(clip.path, stats=stats):
        shape = frame.shape
        faces = analyzer.detect(frame)
        face = faces[0] if faces else None
        landmarks.append(face.landmarks if face is not None else None)
        targets.append(None if face is None else (face.landmarks if face.landmarks is not None else face.box))
    num_frames = len(landmarks)
    face_frames = sum(t is not None for t in targets)
    if face_frames == 0:
        raise ValueError(f"{clip.path.name}: no face found in any of its {num_frames} frames")
    boxes = track_clip_boxes(
        targets, shape, scale=config.scale, shift_y=config.shift_y, min_scale=config.min_scale
    )
    box = boxes[0]
    # landmarks in crop pixels, NaN rows where the landmarker found nothing
    crop_marks = np.full((num_frames, NUM_LANDMARKS, 2), np.nan, dtype=np.float32)  # (T, K, 2)
    for i, marks in enumerate(landmarks):
        if marks is not None:
            crop_marks[i] = box.to_crop_coords(marks, config.size)
    audio = None
    if info.has_audio:
        audio = media.read_clip_audio(clip.path, num_frames, stats["t0"])  # (T * 640,)
    # pass 2: crop, resize, encode
    with media.VideoWriter(paths["video"], audio=audio, crf=config.crf, preset=config.preset) as writer:
        for k, frame in media.iter_video_frames(clip.path):
            if k >= num_frames:
                break
            writer.write(crop_square(frame, box, config.size))  # (S, S, 3)
    if writer.frames_written != num_frames:
        raise ValueError(
            f"{clip.path.name}: second decode gave {writer.frames_written} frames, first {num_frames}"
        )
    if audio is not None:
        _write_wav(paths["audio"], audio)
    with atomic_path(paths["landmarks"]) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, crop_marks)
    row = {
        "id": clip.id,
        "split": clip.split,
        "identity": clip.identity,
        "frames": num_frames,
        "fps": FPS,
        "seconds": round(num_frames / FPS, 4),
        "path": paths["video"].relative_to(out_dir).as_posix(),
        "audio_path": paths["audio"].relative_to(out_dir).as_posix() if audio is not None else "",
        "landmarks_path": paths["landmarks"].relative_to(out_dir).as_posix(),
        "size": config.size,
        "source": clip.source,
        "has_audio": audio is not None,
    }
    meta = {
        "row": row,
        "crop_box_xywh": [box.x0, box.y0, box.side, box.side],
        "source_path": str(clip.path),
        "source_size_hw": list(shape[:2]),
        "source_fps": stats.get("source_fps"),
        "face_frames": face_frames,
        "landmark_frames": int(np.isfinite(crop_marks[:, 0, 0]).sum()),
        "silent_audio": bool(audio is not None and media.is_silent(audio)),
        "config": asdict(config),
        "seconds_to_prepare": round(time.perf_counter() - started, 2),
    }
    atomic_write_text(paths["meta"], json.dumps(meta, indent=1))
    return row


# ------------------------------------------------------------------------------------------------
# workers
# ------------------------------------------------------------------------------------------------

_ANALYZER = None


def _init_worker() -> None:
    import cv2

    global _ANALYZER
    cv2.setNumThreads(1)
    from hub.face import FaceAnalyzer

    _ANALYZER = FaceAnalyzer(max_faces=1, blendshapes=False)


def _run_one(args: tuple[SourceClip, Path, PrepareConfig]) -> dict:
    clip, out_dir, config = args
    try:
        return {"ok": True, "row": prepare_clip(clip, out_dir, config, _ANALYZER), "id": clip.id}
    except Exception as exc:  # one bad clip must not stop the run: logged to failures.jsonl
        message = str(exc) if isinstance(exc, ValueError) else "".join(
            traceback.format_exception_only(type(exc), exc)
        ).strip()
        return {"ok": False, "id": clip.id, "path": str(clip.path), "error": message}


def _check_settings(out_dir: Path, config: PrepareConfig) -> None:
    settings_path = out_dir / SETTINGS_FILE
    wanted = asdict(config)
    if settings_path.is_file():
        have = json.loads(settings_path.read_text())
        if have != wanted:
            diff = {k: (have.get(k), v) for k, v in wanted.items() if have.get(k) != v}
            raise ValueError(
                f"--out {out_dir} was prepared with other settings {diff} (have, asked); "
                "use another --out folder"
            )
    else:
        atomic_write_text(settings_path, json.dumps(wanted, indent=1))


def read_index(path: str | os.PathLike) -> list[dict]:
    """Rows of an ``index.csv`` (strings as written)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_index(out_dir: Path) -> list[dict]:
    """Rebuild ``DIR/index.csv`` atomically from every done clip's meta file; returns the rows."""
    rows = []
    for meta_path in sorted((out_dir / "meta").glob("*.json")):
        if is_done(out_dir, meta_path.stem):
            rows.append(json.loads(meta_path.read_text())["row"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=INDEX_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: (r["split"], r["id"])):
        writer.writerow({k: row[k] for k in INDEX_COLUMNS})
    atomic_write_text(out_dir / "index.csv", buffer.getvalue())
    return rows


def prepare(
    clips: Sequence[SourceClip],
    out_dir: str | os.PathLike,
    config: PrepareConfig,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Prepare ``clips`` into ``out_dir``; returns counts ``{"done", "skipped", "failed",
    "total", "seconds"}``. Done clips are skipped; failures go to ``failures.jsonl``."""
    from tqdm import tqdm

    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, config)
    todo = [c for c in clips if not is_done(out, c.id)]
    skipped = len(clips) - len(todo)
    started = time.perf_counter()
    done = failed = 0
    jobs: Iterable[tuple[SourceClip, Path, PrepareConfig]] = [(c, out, config) for c in todo]
    bar = tqdm(total=len(todo), desc=f"prepare {config.size}px", unit="clip", disable=not progress)
    pool = None
    try:
        if workers == 1 or len(todo) <= 1:
            _init_worker()
            results = map(_run_one, jobs)
        else:
            pool = mp.get_context("spawn").Pool(min(workers, len(todo)), initializer=_init_worker)
            results = pool.imap_unordered(_run_one, jobs)
        for result in results:
            if result["ok"]:
                done += 1
            else:
                failed += 1
                record = {**result, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
                record.pop("ok")
                with open(out / "failures.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
                bar.write(f"failed {result['id']}: {result['error']}")
            bar.update(1)
        if pool is not None:
            pool.close()
            pool.join()
            pool = None
    finally:
        if pool is not None:
            pool.terminate()
        bar.close()
        global _ANALYZER
        if _ANALYZER is not None:
            _ANALYZER.close()
            _ANALYZER = None
    write_index(out)
    return {"done": done, "skipped": skipped, "failed": failed, "total": len(clips),
            "seconds": round(time.perf_counter() - started, 1)}
