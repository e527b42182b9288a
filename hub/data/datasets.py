"""Training datasets over a prepared folder (``python -m hub.data prepare``) and a synthetic one.

A prepared folder holds ``index.csv`` (columns ``id, split, identity, frames, fps, seconds, path,
audio_path, landmarks_path, ...``; paths relative to the folder) with 25 fps square mp4 clips,
16 kHz mono wavs and ``(T, K, 2)`` landmark arrays.

* :class:`ClipIndex`: the rows, filtered by split; refuses ``val`` unless ``allow_val=True``.
* :class:`VideoWindowDataset`: random windows ``{"video": float (3, T, H, W)}`` in [-1, 1], with
  still portraits mixed in as repeated-frame samples (1-frame samples with ``num_frames=1``).
* :class:`AudioVideoWindowDataset`: a reference frame from elsewhere in the same clip, a window of
  ``1 + n * f_t`` frames and the 16 kHz audio of exactly those frames plus some causal context.
* :class:`SyntheticAVDataset`: moving shapes whose "mouth" opens with a tone's amplitude (tests).

Every random choice is a pure function of ``(seed, epoch, index)`` (call ``set_epoch``; the
trainer does). Decoded clips are cached in memory per dataset instance, i.e. per DataLoader
worker.
"""

from __future__ import annotations

import csv
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hub import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

REQUIRED_COLUMNS = ("id", "split", "identity", "frames", "fps", "seconds", "path", "audio_path", "landmarks_path")
HELD_OUT_SPLITS = ("val",)


def _prepare_hint(root: Path) -> str:
    return (f"run `python -m hub.data prepare --src <shared data>/manifest.csv --out {root} --size <N>` "
            "first")


@dataclass(frozen=True)
class ClipRecord:
    """One prepared clip; paths are absolute (``None`` where the index has none)."""

    id: str
    split: str
    identity: str
    frames: int
    fps: float
    seconds: float
    path: Path
    audio_path: Path | None
    landmarks_path: Path | None


class ClipIndex:
    """The prepared clips of some splits. Build with :meth:`load`."""

    def __init__(self, root: Path, records: list[ClipRecord]) -> None:
        self.root = root
        self.records = records

    @classmethod
    def load(cls, root: str | os.PathLike, splits: str | Sequence[str] = ("train",), allow_val: bool = False,
             min_frames: int = 1, require_audio: bool = False) -> "ClipIndex":
        """Rows of ``root/index.csv`` whose split is in ``splits`` and that have ``min_frames`` frames.

        ``val`` is held out: asking for it raises unless ``allow_val=True`` (evaluation only).
        """
        root = Path(root)
        splits = (splits,) if isinstance(splits, str) else tuple(splits)
        held = sorted(set(splits) & set(HELD_OUT_SPLITS))
        if held and not allow_val:
            raise ValueError(f"split {held[0]!r} is held out for evaluation and never trained on; accepted "
                             "training splits are e.g. 'train', 'motion' (pass allow_val=True to evaluate)")
        index = root / "index.csv"
        if not root.is_dir():
            raise ValueError(f"prepared data folder {root} not found; {_prepare_hint(root)}")
        if not index.is_file():
            raise ValueError(f"no prepared clips in {index}; {_prepare_hint(root)}")
        with open(index, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{index}: missing columns {missing}; expected {list(REQUIRED_COLUMNS)}")
            rows = list(reader)
        if not rows:
            raise ValueError(f"no prepared clips in {index} (it is empty); {_prepare_hint(root)}")

        def resolve(value: str) -> Path | None:
            return (root / value) if value else None

        records = []
        for row in rows:
            if row["split"] not in splits or int(row["frames"]) < min_frames:
                continue
            if require_audio and (not row["audio_path"] or row.get("has_audio", "1") in ("0", "False", "false")):
                continue
            records.append(ClipRecord(id=row["id"], split=row["split"], identity=row["identity"],
                                      frames=int(row["frames"]), fps=float(row["fps"]),
                                      seconds=float(row["seconds"]), path=root / row["path"],
                                      audio_path=resolve(row["audio_path"]),
                                      landmarks_path=resolve(row["landmarks_path"])))
        if not records:
            found = sorted({r["split"] for r in rows})
            extra = f" with >= {min_frames} frames" if min_frames > 1 else ""
            extra += " and audio" if require_audio else ""
            raise ValueError(f"{index}: no clips of split {list(splits)}{extra} (splits present: {found})")
        return cls(root, records)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    @property
    def identities(self) -> list[str]:
        return sorted({r.identity for r in self.records})


# ----------------------------------------------------------------------------------------------
# Decoding and caching


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``uint8 (T, H, W, 3)`` -> ``float (3, T, H, W)`` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def _resize_frames(frames: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or frames.shape[1:3] == (size, size):
        return frames
    import cv2

    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def square_image(image: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop of ``uint8 (H, W, 3)`` resized to ``(size, size, 3)``."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return _resize_frames(image[None, top:top + side, left:left + side], size)[0]


class _ClipCache:
    """LRU of decoded clips: frames ``uint8 (T, H, W, 3)``, audio ``float32 (N,)``, landmarks."""

    def __init__(self, max_clips: int) -> None:
        self.max_clips = max_clips
        self._items: OrderedDict[tuple[str, str], object] = OrderedDict()

    def get(self, key: tuple[str, str], load):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = load()
        if self.max_clips > 0:
            self._items[key] = value
            while len(self._items) > self.max_clips:
                self._items.popitem(last=False)
        return value


def _read_frames(record: ClipRecord) -> np.ndarray:
    from hub.data.decoded import read_clip_frames

    frames = read_clip_frames(record.path)  # (T, H, W, 3)
    if frames.shape[0] < record.frames:
        raise ValueError(f"{record.path}: decoded {frames.shape[0]} frames, index.csv says {record.frames}")
    return frames[: record.frames]


def _read_audio(record: ClipRecord) -> np.ndarray:
    from hub.data.decoded import read_clip_audio

    assert record.audio_path is not None
    return read_clip_audio(record.audio_path)  # (N,) float32 16 kHz


def _rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


class _EpochDataset(Dataset):
    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Random choices of item ``i`` depend on ``(seed, epoch, i)`` only."""
        self.epoch = epoch


# ----------------------------------------------------------------------------------------------
# Video windows (autoencoder)


class VideoWindowDataset(_EpochDataset):
    """Random windows of ``num_frames`` frames: ``{"video": float (3, T, H, W), "still": bool}``.

    ``samples_per_epoch`` defaults to the number of non-overlapping windows. Clips are drawn with
    probability proportional to their number of window positions. With probability ``still_prob``
    an item is a still (``stills``: image files, centre-cropped, or ``uint8 (P, S, S, 3)`` crops)
    repeated ``num_frames`` times.
    """

    def __init__(self, index: ClipIndex, num_frames: int, size: int | None = None,
                 samples_per_epoch: int | None = None, seed: int = 0,
                 stills: Sequence[str | os.PathLike] | np.ndarray = (), still_prob: float = 0.0,
                 hflip_prob: float = 0.0, cache_clips: int = 64) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames={num_frames}; must be >= 1")
        if not 0.0 <= still_prob <= 1.0 or not 0.0 <= hflip_prob <= 1.0:
            raise ValueError("still_prob and hflip_prob must be in [0, 1]")
        self.records = [r for r in index if r.frames >= num_frames]
        if not self.records and still_prob < 1.0:
            raise ValueError(f"{index.root}: no clip has at least {num_frames} frames")
        if still_prob > 0 and len(stills) == 0:
            raise ValueError("still_prob > 0 needs stills (image paths or an array of crops)")
        self.num_frames, self.size, self.seed = num_frames, size, seed
        self.stills, self.still_prob, self.hflip_prob = stills, still_prob, hflip_prob
        positions = np.array([r.frames - num_frames + 1 for r in self.records], dtype=np.float64)
        self.weights = positions / positions.sum() if len(positions) else positions
        self.length = samples_per_epoch or max(1, sum(r.frames // num_frames for r in self.records))
        self._cache = _ClipCache(cache_clips)

    def __len__(self) -> int:
        return self.length

    def _still(self, i: int) -> np.ndarray:
        if isinstance(self.stills, np.ndarray):
            image = self.stills[i]
            return square_image(image, self.size or image.shape[0])
        from hub.media import read_image

        def load() -> np.ndarray:
            image = read_image(self.stills[i])  # (H, W, 3)
            return square_image(image, self.size or min(image.shape[:2]))

        return self._cache.get(("still", str(self.stills[i])), load)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | bool]:
        rng = _rng(self.seed, self.epoch, index)
        t = self.num_frames
        still = bool(rng.random() < self.still_prob)
        if still:
            image = self._still(int(rng.integers(len(self.stills))))  # (S, S, 3)
            frames = np.repeat(image[None], t, axis=0)  # (T, S, S, 3)
        else:
            record = self.records[int(rng.choice(len(self.records), p=self.weights))]
            clip = self._cache.get(("frames", str(record.path)), lambda: _read_frames(record))
            start = int(rng.integers(record.frames - t + 1))
            frames = _resize_frames(clip[start:start + t], self.size)  # (T, S, S, 3)
        if rng.random() < self.hflip_prob:
            frames = frames[:, :, ::-1]
        return {"video": frames_to_tensor(frames), "still": still}  # (3, T, S, S)


# ----------------------------------------------------------------------------------------------
# Audio + video windows (A2V-DiT)


class AudioVideoWindowDataset(_EpochDataset):
    """Reference frame + window of ``T = 1 + n * f_t`` frames + their aligned 16 kHz audio.

    Item::

        video:          float (3, T, S, S) in [-1, 1]
        reference:      float (3, S, S) in [-1, 1], a frame of the same clip at least
                        ``ref_min_distance`` frames away from the window when the clip allows
                        (else any frame outside the window)
        audio:          float32 ((C + T) * 640,): audio of frames start-C .. start+T-1, with
                        C = ``audio_context_frames``; frame k of the window owns samples
                        [(C + k) * 640, (C + k + 1) * 640)
        audio_pad:      int, zero samples at the front (context before the clip start)
        start, ref_index: int frame indices in the clip
        landmarks:      float32 (T, K, 2) in output pixels (NaN where no face), if asked for
    """

    def __init__(self, index: ClipIndex, num_latent_frames: int, frames_per_latent: int,
                 size: int | None = None, audio_context_frames: int = 0, samples_per_epoch: int | None = None,
                 seed: int = 0, ref_min_distance: int = FPS, hflip_prob: float = 0.0,
                 with_landmarks: bool = False, cache_clips: int = 64) -> None:
        if num_latent_frames < 0 or frames_per_latent < 1 or audio_context_frames < 0:
            raise ValueError("need num_latent_frames >= 0, frames_per_latent >= 1, audio_context_frames >= 0")
        self.num_frames = 1 + num_latent_frames * frames_per_latent
        self.records = [r for r in index if r.frames > self.num_frames and r.audio_path is not None]
        if not self.records:
            raise ValueError(f"{index.root}: no clip with audio has more than {self.num_frames} frames "
                             f"(a window of 1 + {num_latent_frames} x {frames_per_latent} plus a reference)")
        if with_landmarks and any(r.landmarks_path is None for r in self.records):
            raise ValueError(f"{index.root}: with_landmarks=True but some clips have no landmarks_path")
        self.size, self.context, self.seed = size, audio_context_frames, seed
        self.ref_min_distance, self.hflip_prob, self.with_landmarks = ref_min_distance, hflip_prob, with_landmarks
        positions = np.array([r.frames - self.num_frames + 1 for r in self.records], dtype=np.float64)
        self.weights = positions / positions.sum()
        self.length = samples_per_epoch or max(1, sum(r.frames // self.num_frames for r in self.records))
        self._cache = _ClipCache(cache_clips)

    def __len__(self) -> int:
        return self.length

    def _reference_index(self, rng: np.random.Generator, frames: int, start: int) -> int:
        end = start + self.num_frames
        for gap in (self.ref_min_distance, 0):
            allowed = np.r_[0:max(0, start - gap), min(frames, end + gap):frames]
            if len(allowed):
                return int(allowed[rng.integers(len(allowed))])
        raise AssertionError("clips are longer than the window")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        rng = _rng(self.seed, self.epoch, index)
        record = self.records[int(rng.choice(len(self.records), p=self.weights))]
        clip = self._cache.get(("frames", str(record.path)), lambda: _read_frames(record))
        wav = self._cache.get(("audio", str(record.audio_path)), lambda: _read_audio(record))
        t = self.num_frames
        start = int(rng.integers(record.frames - t + 1))
        ref = self._reference_index(rng, record.frames, start)
        frames = _resize_frames(clip[start:start + t], self.size)  # (T, S, S, 3)
        reference = _resize_frames(clip[ref:ref + 1], self.size)  # (1, S, S, 3)

        # Audio of frames [start - C, start + T): zero-padded before the clip and after its end.
        first = (start - self.context) * SAMPLES_PER_FRAME
        last = (start + t) * SAMPLES_PER_FRAME
        pad_front = max(0, -first)
        piece = wav[max(0, first):last]
        audio = np.zeros(last - first, np.float32)  # ((C + T) * 640,)
        audio[pad_front:pad_front + len(piece)] = piece

        flip = bool(rng.random() < self.hflip_prob)
        if flip:
            frames, reference = frames[:, :, ::-1], reference[:, :, ::-1]
        item: dict[str, torch.Tensor | int] = {
            "video": frames_to_tensor(frames),  # (3, T, S, S)
            "reference": frames_to_tensor(reference)[:, 0],  # (3, S, S)
            "audio": torch.from_numpy(audio),  # ((C + T) * 640,)
            "audio_pad": pad_front, "start": start, "ref_index": ref,
        }
        if self.with_landmarks:
            marks = self._cache.get(("landmarks", str(record.landmarks_path)),
                                    lambda: np.load(record.landmarks_path).astype(np.float32))  # (T_clip, K, 2)
            window = marks[start:start + t].copy()  # (T, K, 2)
            scale = (self.size or clip.shape[1]) / clip.shape[1]
            window *= scale
            if flip:
                window[..., 0] = (self.size or clip.shape[1]) - 1 - window[..., 0]
            item["landmarks"] = torch.from_numpy(window)
        return item


# ----------------------------------------------------------------------------------------------
# Synthetic audio-visual data (tests, smoke runs)


class SyntheticAVDataset(_EpochDataset):
    """Deterministic moving "faces" whose mouth opening follows a tone's amplitude.

    Same item layout as :class:`AudioVideoWindowDataset` (``video``, ``reference``, ``audio``,
    ``audio_pad``, ``start``, ``ref_index``). Per frame ``k`` the tone amplitude is ``a_k`` in
    [0, 1] and the mouth height is proportional to ``a_k``, so audio-to-mouth mapping is learnable.
    """

    def __init__(self, num_samples: int = 64, num_frames: int = 9, size: int = 32, audio_context_frames: int = 0,
                 seed: int = 0) -> None:
        if num_samples < 1 or num_frames < 1 or size < 8:
            raise ValueError("need num_samples >= 1, num_frames >= 1, size >= 8")
        self.num_samples, self.num_frames, self.size = num_samples, num_frames, size
        self.context, self.seed = audio_context_frames, seed

    def __len__(self) -> int:
        return self.num_samples

    def amplitudes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Smooth per-frame amplitudes ``(n,)`` in [0, 1]."""
        phase, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.9)
        return (0.5 + 0.5 * np.sin(phase + speed * np.arange(n))).astype(np.float32)  # (n,)

    def _draw(self, rng_params: dict, mouth: float, k: int) -> np.ndarray:
        s = self.size
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)  # (S, S)
        cx = rng_params["cx"] + rng_params["drift"] * k
        cy = rng_params["cy"]
        r = rng_params["radius"]
        img = np.empty((s, s, 3), np.float32)
        img[:] = rng_params["background"]
        face = ((xx - cx) / r) ** 2 + ((yy - cy) / (1.2 * r)) ** 2 <= 1.0
        img[face] = rng_params["skin"]
        mouth_h = max(0.5, mouth * 0.35 * r)
        lips = ((xx - cx) / (0.45 * r)) ** 2 + ((yy - (cy + 0.5 * r)) / mouth_h) ** 2 <= 1.0
        img[lips] = (0.1, 0.0, 0.05)
        return (img * 255).round().astype(np.uint8)  # (S, S, 3)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        rng = _rng(self.seed, self.epoch, index)
        t, c, s = self.num_frames, self.context, self.size
        params = {"cx": rng.uniform(0.4, 0.6) * s, "cy": rng.uniform(0.4, 0.5) * s, "radius": rng.uniform(0.22, 0.3) * s,
                  "drift": rng.uniform(-0.3, 0.3), "background": rng.uniform(0.2, 0.9, 3),
                  "skin": rng.uniform(0.5, 1.0, 3)}
        amp = self.amplitudes(rng, c + t)  # (C + T,)
        freq = rng.uniform(150.0, 400.0)
        n = (c + t) * SAMPLES_PER_FRAME
        envelope = np.interp(np.arange(n) / SAMPLES_PER_FRAME - 0.5, np.arange(c + t), amp)  # (N,)
        audio = (0.8 * envelope * np.sin(2 * np.pi * freq * np.arange(n) / SAMPLE_RATE)).astype(np.float32)
        frames = np.stack([self._draw(params, float(amp[c + k]), k) for k in range(t)])  # (T, S, S, 3)
        reference = self._draw(params, 0.0, 0)  # (S, S, 3), mouth closed
        return {"video": frames_to_tensor(frames), "reference": frames_to_tensor(reference[None])[:, 0],
                "audio": torch.from_numpy(audio), "audio_pad": 0, "start": c, "ref_index": -1}
