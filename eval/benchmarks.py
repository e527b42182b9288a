"""Benchmarks, declared in code: which clips, which inputs, which ground truth, which metrics.

* ``mini-real``: the shared validation clips (``manifest.csv``, ``split=val``). Reference = the
  first frame of the face-cropped clip, audio = the clip's own, ground truth = the real frames
  cropped exactly as ``python -m hub.data prepare`` crops them (read from ``data/prepared_<size>``
  when that folder was prepared with the same crop settings, else cropped on the fly).
  Full-reference, distribution, sync, identity and motion metrics.
* ``showcase``: the shared VASA-1 and EMO samples (``baselines/{vasa1,emo}/<id>``); every method
  animates the same ``ref.jpg`` with the same ``audio.mp3``. No ground truth: sync, identity to the
  reference, stability and motion. Subsets ``vasa1`` and ``emo`` are tabulated separately, so that
  each baseline is compared with ours on its own clips.
* ``long-stream``: 2- and 10-minute streams (30 s with ``quick``) made by concatenating the shared
  speech files; identity and sync over time (drift curves).
* ``latency``: numbers of ``python -m hub bench stream --json`` per method (see :mod:`eval.runner`).

A benchmark's :meth:`Benchmark.items` lists :class:`BenchItem` objects; an item's inputs are read
only when :meth:`BenchItem.load` is called.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval.weights import FACESYNC_CCA, WeightSpec
from hub import SAMPLE_RATE, SAMPLES_PER_FRAME, settings

DEFAULT_SIZE = 128  # the tiny preset's resolution; runs take the first REST checkpoint's size
SPEECH_GAP_SECONDS = 0.5  # silence between concatenated speech files in long streams
LONG_STREAM_SECONDS = (120.0, 600.0)
QUICK_STREAM_SECONDS = (30.0,)
LONG_STREAM_PORTRAITS = ("hallo_1.jpg", "liveportrait_s0.jpg")
SYNC_CURVE_WINDOW_SECONDS = 10.0


@dataclass
class LoadedItem:
    """The inputs of one benchmark clip, in memory.

    Attributes:
        audio: float32 (n * 640,) 16 kHz mono, trimmed to whole video frames.
        reference: uint8 (H, W, 3): a full portrait, or a face crop when ``reference_is_crop``.
        reference_is_crop: True when ``reference`` already is the benchmark's face crop.
        ground_truth: uint8 (n, S, S, 3) real frames at the benchmark size, or None.
        notes: how the inputs were made (recorded in the metadata).
        lookup_names: the item's names for ``folder:`` methods (set by :meth:`BenchItem.load`).
    """

    audio: np.ndarray
    reference: np.ndarray
    reference_is_crop: bool
    ground_truth: np.ndarray | None = None
    notes: dict = field(default_factory=dict)
    lookup_names: tuple[str, ...] = ()
    _crops: dict = field(default_factory=dict, repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.audio) // SAMPLES_PER_FRAME

    def reference_crop(self, size: int) -> np.ndarray:
        """The reference as a square face crop ``uint8 (size, size, 3)`` (computed once per size).

        A reference that already is a crop is resized; a portrait is cropped with
        :func:`hub.face.crop_reference` (the same crop the streaming engine makes).
        """
        if size not in self._crops:
            if self.reference_is_crop:
                import cv2

                ref = self.reference
                self._crops[size] = ref if ref.shape[0] == size else cv2.resize(
                    ref, (size, size), interpolation=cv2.INTER_AREA if ref.shape[0] > size else cv2.INTER_CUBIC)
            else:
                from hub.face import crop_reference

                self._crops[size] = crop_reference(self.reference, size, name="the benchmark reference")
        return self._crops[size]


@dataclass
class BenchItem:
    """One clip of a benchmark.

    Attributes:
        clip_id: unique name in the benchmark (file-name safe).
        subset: group the clip is tabulated in ("" for none).
        lookup_names: names under which outside result folders may hold this clip's video
            (``folder:`` methods try each).
        info: JSON-ready description of the sources (paths, durations).
        loader: reads the inputs; called through :meth:`load`.
    """

    clip_id: str
    subset: str
    lookup_names: tuple[str, ...]
    info: dict
    loader: Callable[[], LoadedItem] = field(repr=False)

    def load(self) -> LoadedItem:
        loaded = self.loader()
        loaded.lookup_names = self.lookup_names
        return loaded


@dataclass(frozen=True)
class BenchOptions:
    """How a benchmark's items are built."""

    size: int = DEFAULT_SIZE
    limit: int | None = None
    quick: bool = False
    prepared_dir: str | None = None  # default: data/prepared_<size> in the repository

    def __post_init__(self) -> None:
        if not 32 <= self.size <= 1024:
            raise ValueError(f"benchmark size {self.size}; accepted: 32..1024")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit {self.limit}; must be >= 1")


@dataclass(frozen=True)
class Benchmark:
    """A declared benchmark."""

    name: str
    description: str
    default_metrics: tuple[str, ...]
    has_ground_truth: bool
    build: Callable[[BenchOptions], list[BenchItem]] = field(repr=False)
    curves: tuple[str, ...] = ()
    kind: str = "clips"  # "clips" or "latency"

    def items(self, options: BenchOptions) -> list[BenchItem]:
        """The benchmark's items (at most ``options.limit``)."""
        items = self.build(options)
        return items[: options.limit] if options.limit else items


# ------------------------------------------------------------------------------------------------
# helpers


def _whole_frames(audio: np.ndarray) -> np.ndarray:
    n = len(audio) // SAMPLES_PER_FRAME
    if n < 1:
        raise ValueError(f"audio of {len(audio)} samples is shorter than one video frame (640 samples)")
    return np.ascontiguousarray(audio[: n * SAMPLES_PER_FRAME], dtype=np.float32)


def _manifest_rows(kind: str, split: str | None = None) -> tuple[Path, list[dict[str, str]]]:
    root = settings.data_dir(required=True)
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise ValueError(f"{manifest} not found; the shared data folder needs its manifest.csv")
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["kind"] == kind and (split is None or r["split"] == split)]
    unique = {r["file"]: r for r in rows}  # the manifest lists some files twice
    return root, [unique[k] for k in sorted(unique)]


def prepared_folder(size: int, prepared_dir: str | None = None) -> tuple[Path | None, str]:
    """The prepared folder to read ground truth from, or None with the reason.

    Only a folder prepared at ``size`` with the benchmark's crop settings (scale 2.0, min_scale
    1.5, shift_y 0) is used; anything else would give a different crop than on-the-fly cropping.
    """
    import json

    from eval.align import CROP_MIN_SCALE, CROP_SCALE

    folder = Path(prepared_dir) if prepared_dir else settings.REPO_ROOT / "data" / f"prepared_{size}"
    if not folder.is_absolute() and not folder.exists():
        folder = settings.REPO_ROOT / folder
    if not (folder / "index.csv").is_file() or not (folder / "prepare.json").is_file():
        return None, f"{folder} has no index.csv/prepare.json; cropping on the fly"
    config = json.loads((folder / "prepare.json").read_text())
    wanted = {"size": size, "scale": CROP_SCALE, "min_scale": CROP_MIN_SCALE, "shift_y": 0.0}
    differ = {k: config.get(k) for k, v in wanted.items() if config.get(k) != v}
    if differ:
        return None, f"{folder} was prepared with {differ}, not {wanted}; cropping on the fly"
    return folder, f"ground truth from {folder} (prepared crops, H.264 crf {config.get('crf')})"


# ------------------------------------------------------------------------------------------------
# mini-real


def _mini_real(options: BenchOptions) -> list[BenchItem]:
    root, rows = _manifest_rows("clip", "val")
    folder, why = prepared_folder(options.size, options.prepared_dir)
    prepared: dict[str, dict[str, str]] = {}
    if folder is not None:
        with open(folder / "index.csv", newline="", encoding="utf-8") as handle:
            prepared = {r["id"]: r for r in csv.DictReader(handle) if r["split"] == "val"}
    items = []
    for row in rows:
        clip_id = Path(row["file"]).stem
        source = root / row["file"]
        prow = prepared.get(clip_id)
        info = {"source": str(source), "identity": row["identity"], "duration_s": row["duration_s"],
                "ground_truth": why if prow else f"{why if folder is None else 'clip not prepared'}; "
                                                 "cropped on the fly"}
        items.append(BenchItem(clip_id=clip_id, subset="", lookup_names=(clip_id,), info=info,
                               loader=_mini_real_loader(source, folder, prow, options.size)))
    return items


def _mini_real_loader(source: Path, folder: Path | None, prow: dict[str, str] | None,
                      size: int) -> Callable[[], LoadedItem]:
    def load() -> LoadedItem:
        from hub import media

        if folder is not None and prow is not None:
            gt = media.read_video(folder / prow["path"], with_audio=False).frames          # (T, S, S, 3)
            if prow.get("audio_path"):
                audio = media.read_audio(folder / prow["audio_path"])
            else:
                raise ValueError(f"prepared clip {prow['id']} has no audio; mini-real needs speech")
            notes = {"ground_truth": f"prepared crop {folder / prow['path']}"}
        else:
            from eval.align import face_crop_frames

            clip = media.read_video(source)
            if clip.audio is None:
                raise ValueError(f"{source.name} has no audio track; mini-real needs speech")
            gt, box = face_crop_frames(clip.frames, size, name=source.name)
            audio = clip.audio
            notes = {"ground_truth": f"cropped on the fly from {source} (box x0, y0, side = {box})"}
        audio = _whole_frames(audio)
        n = min(len(gt), len(audio) // SAMPLES_PER_FRAME)
        return LoadedItem(audio=audio[: n * SAMPLES_PER_FRAME], reference=gt[0], reference_is_crop=True,
                          ground_truth=gt[:n], notes=notes)
    return load


# ------------------------------------------------------------------------------------------------
# showcase

SHOWCASE_SYSTEMS = ("vasa1", "emo")


def _showcase(options: BenchOptions) -> list[BenchItem]:
    root = settings.data_dir(required=True) / "baselines"
    per_system = []
    for system in SHOWCASE_SYSTEMS:
        folder = root / system
        if not folder.is_dir():
            raise ValueError(f"{folder} not found; the showcase needs the shared baselines/{system}")
        entries = []
        for sample in sorted(p for p in folder.iterdir() if p.is_dir()):
            ref, audio = sample / "ref.jpg", sample / "audio.mp3"
            if not ref.is_file() or not audio.is_file():
                continue
            clip_id = f"{system}_{sample.name}"
            entries.append(BenchItem(
                clip_id=clip_id, subset=system, lookup_names=(clip_id, f"{system}/{sample.name}"),
                info={"reference": str(ref), "audio": str(audio), "baseline_video": str(sample / "output.mp4")},
                loader=_showcase_loader(ref, audio, system)))
        per_system.append(entries)
    # interleave the systems so that a small --limit still covers both
    items = []
    for k in range(max(len(e) for e in per_system)):
        items.extend(e[k] for e in per_system if k < len(e))
    return items


def _showcase_loader(ref: Path, audio: Path, system: str) -> Callable[[], LoadedItem]:
    def load() -> LoadedItem:
        from eval.align import OVERLAYS, remove_overlay
        from hub import media

        image = media.read_image(ref)
        notes = {"reference": str(ref), "audio": str(audio)}
        if system in OVERLAYS:
            # The shared ref.jpg files are frames of the baseline's own output and carry its overlay.
            cleaned, box = remove_overlay(image[None], OVERLAYS[system])
            image = cleaned[0]
            notes["reference_overlay"] = (f"{OVERLAYS[system].note} in the reference too (box {box}); the reference "
                                          f"is a frame of the {system} output, which favours {system} on identity")
        return LoadedItem(audio=_whole_frames(media.read_audio(audio)), reference=image,
                          reference_is_crop=False, notes=notes)
    return load


# ------------------------------------------------------------------------------------------------
# long-stream


def speech_files() -> list[Path]:
    """The shared speech files in a fixed order (manifest order, sorted by name)."""
    root, rows = _manifest_rows("speech")
    if not rows:  # manifests that do not list speech: every audio file in speech/
        return sorted(p for p in (root / "speech").iterdir() if p.suffix.lower() in (".wav", ".mp3", ".flac"))
    return [root / r["file"] for r in rows]


def concatenated_speech(seconds: float, files: list[Path]) -> tuple[np.ndarray, list[str]]:
    """``seconds`` of speech: the files in order (then again), each followed by a short silence.

    Returns:
        (float32 (round(seconds * 25) * 640,), the file names used in order).
    """
    from hub import media

    if not files:
        raise ValueError("no speech files to build a long stream from")
    total = int(round(seconds * SAMPLE_RATE / SAMPLES_PER_FRAME)) * SAMPLES_PER_FRAME
    gap = np.zeros(int(SPEECH_GAP_SECONDS * SAMPLE_RATE), np.float32)
    pieces, used, have, k = [], [], 0, 0
    while have < total:
        path = files[k % len(files)]
        audio = media.read_audio(path)
        pieces += [audio, gap]
        used.append(path.name)
        have += len(audio) + len(gap)
        k += 1
    return np.concatenate(pieces)[:total].astype(np.float32), used


def _long_stream(options: BenchOptions) -> list[BenchItem]:
    root = settings.data_dir(required=True)
    durations = QUICK_STREAM_SECONDS if options.quick else LONG_STREAM_SECONDS
    items = []
    for seconds in durations:
        for name in LONG_STREAM_PORTRAITS:
            portrait = root / "portraits" / name
            if not portrait.is_file():
                raise ValueError(f"{portrait} not found; long-stream uses the shared portraits {LONG_STREAM_PORTRAITS}")
            clip_id = f"stream{int(seconds)}s_{Path(name).stem}"
            items.append(BenchItem(clip_id=clip_id, subset=f"{int(seconds)}s", lookup_names=(clip_id,),
                                   info={"reference": str(portrait), "seconds": seconds,
                                         "speech": "shared speech files concatenated in manifest order, "
                                                   f"{SPEECH_GAP_SECONDS} s silence between files"},
                                   loader=_long_stream_loader(portrait, seconds)))
    return items


def _long_stream_loader(portrait: Path, seconds: float) -> Callable[[], LoadedItem]:
    def load() -> LoadedItem:
        from hub import media

        audio, used = concatenated_speech(seconds, speech_files())
        return LoadedItem(audio=audio, reference=media.read_image(portrait), reference_is_crop=False,
                          notes={"reference": str(portrait), "speech_files": used})
    return load


# ------------------------------------------------------------------------------------------------
# curves over time (long streams)


def identity_curve(sample) -> tuple[np.ndarray, np.ndarray]:
    """dlib identity similarity to the reference per 2 s window: (times s, similarity)."""
    from eval.metrics.drift import drift_curve
    from eval.metrics.identity import DLIB_FRAME_STRIDE, dlib_identity_curve
    from hub import FPS

    curve = drift_curve(dlib_identity_curve(sample, DLIB_FRAME_STRIDE), FPS / DLIB_FRAME_STRIDE)
    return curve.times, curve.similarity


def sync_curve(sample, window_seconds: float = SYNC_CURVE_WINDOW_SECONDS) -> tuple[np.ndarray, np.ndarray]:
    """Landmark audio-visual sync (peak correlation ``av_corr``) per window: (times s, av_corr)."""
    from eval.metrics.faces import cached_landmarks68
    from eval.metrics.landmarks import av_sync_from_signals, mouth_opening, speech_envelope
    from hub import FPS

    landmarks = cached_landmarks68(sample)                          # (T, 68, 2)
    energy = speech_envelope(sample.audio, len(sample.frames))      # (T',)
    mouth = mouth_opening(landmarks)[: len(energy)]
    per = int(round(window_seconds * FPS))
    times, values = [], []
    for start in range(0, len(energy) - per + 1, per):
        window = slice(start, start + per)
        times.append((start + per / 2) / FPS)
        if np.isfinite(mouth[window]).sum() < per // 2:
            values.append(np.nan)
            continue
        values.append(av_sync_from_signals(mouth[window], energy[window])["av_corr"])
    if not times:
        raise ValueError(f"sync curve needs at least {window_seconds} s of video")
    return np.asarray(times), np.asarray(values)


def facesync_curve(sample, window_seconds: float = SYNC_CURVE_WINDOW_SECONDS) -> tuple[np.ndarray, np.ndarray]:
    """FaceSync correlation at lag 0 per window (the shipped ``av_facesync`` model): (times s, corr)."""
    from eval.metrics.faces import cached_landmarks68
    from eval.nets.facesync import load_cached
    from eval.weights import resolve_weight
    from hub import FPS

    landmarks = cached_landmarks68(sample)  # (T, 68, 2)
    per = int(round(window_seconds * FPS))
    if min(len(landmarks), len(sample.audio) // SAMPLES_PER_FRAME) < per:
        raise ValueError(f"facesync curve needs at least {window_seconds} s of video")
    starts, values = load_cached(resolve_weight(FACESYNC_CCA)).windowed_correlation(
        sample.audio, landmarks, per)
    found = np.isfinite(landmarks).all(axis=(1, 2))  # (T,)
    values = np.where([found[s:s + per].sum() >= per // 2 for s in starts], values, np.nan)
    return (starts + per / 2) / FPS, values


# name -> (function, variant, weight files whose hashes also key the cached curve)
CURVES: dict[str, tuple[Callable, str, tuple[WeightSpec, ...]]] = {
    "identity": (identity_curve, "dlib identity similarity to the reference, 2 s windows", ()),
    "sync": (sync_curve, f"landmark av_corr per {SYNC_CURVE_WINDOW_SECONDS:g} s window", ()),
    "facesync": (facesync_curve, f"FaceSync CCA correlation at lag 0 per {SYNC_CURVE_WINDOW_SECONDS:g} s window",
                 (FACESYNC_CCA,)),
}

# ------------------------------------------------------------------------------------------------
# the registry

_CLIP_METRICS_NO_GT = ("lse", "av_landmark_sync", "av_facesync", "csim", "id_sim_dlib", "landmark_jitter",
                       "flicker", "blink_rate", "head_motion")

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("mini-real", "shared validation clips; reference = first frame, the clip's own audio, "
              "real frames as ground truth",
              default_metrics=("psnr", "ssim", "lpips", "fid", "fvd", "lmd", "tiling") + _CLIP_METRICS_NO_GT,
              has_ground_truth=True, build=_mini_real),
    Benchmark("showcase", "VASA-1 and EMO samples: every method on the same ref.jpg + audio.mp3; "
              "no-reference metrics", default_metrics=_CLIP_METRICS_NO_GT, has_ground_truth=False,
              build=_showcase),
    Benchmark("long-stream", "2- and 10-minute streams (30 s with --quick) of concatenated shared speech; "
              "identity and sync over time", default_metrics=("identity_drift", "id_sim_dlib", "av_landmark_sync",
                                                             "av_facesync", "landmark_jitter", "tiling"),
              has_ground_truth=False, build=_long_stream, curves=("identity", "sync", "facesync")),
    Benchmark("latency", "streaming latency and throughput from `python -m hub bench stream --json`",
              default_metrics=(), has_ground_truth=False, build=lambda options: [], kind="latency"),
)}


def get_benchmark(name: str) -> Benchmark:
    """The benchmark ``name``; ValueError listing the known ones otherwise."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]
