"""Face detection and landmarks shared by the metrics, computed once per sample and cached.

* YuNet (``cv2.FaceDetectorYN``) gives a box and 5 keypoints per frame: used for the SyncNet face
  track and the ArcFace alignment.
* dlib gives 68 landmarks (iBUG 300-W layout, non-commercial model from ``face_recognition_models``)
  for LMD, the landmark sync signal, jitter, blinks and head motion, and the 5-point shape + 128-d
  ResNet descriptor for identity similarity.

Frames are uint8 (T, H, W, 3) RGB throughout. Missing faces are NaN rows, never guessed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from eval.metrics.registry import EvalSample
from eval.weights import YUNET, resolve_weight

DETECT_MAX_SIDE = 320  # detectors run on frames downscaled so the longer side is at most this
DLIB_FAST_SIDE = 160  # dlib HOG first tries this size (about 4x faster), then DETECT_MAX_SIDE
YUNET_SCORE_THRESHOLD = 0.6

_MODELS: dict[str, Any] = {}


def _downscale(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    import cv2

    h, w = frame.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale == 1.0:
        return frame, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), scale


def yunet_faces(frames: np.ndarray) -> np.ndarray:
    """Largest face per frame with YuNet.

    Args:
        frames: uint8 (T, H, W, 3) RGB.

    Returns:
        float64 (T, 15): x, y, w, h of the box, then 5 keypoints (x, y) in image order left eye,
        right eye, nose tip, left mouth corner, right mouth corner (as seen in the image), then the
        score; all NaN for frames without a face. Coordinates are in input pixels.
    """
    import cv2

    model_path = resolve_weight(YUNET)
    out = np.full((len(frames), 15), np.nan)
    detector = None
    for t, frame in enumerate(frames):
        small, scale = _downscale(frame, DETECT_MAX_SIDE)
        h, w = small.shape[:2]
        if detector is None:
            detector = cv2.FaceDetectorYN.create(str(model_path), "", (w, h), YUNET_SCORE_THRESHOLD)
        detector.setInputSize((w, h))
        _, faces = detector.detect(np.ascontiguousarray(small[..., ::-1]))  # YuNet takes BGR
        if faces is None or len(faces) == 0:
            continue
        best = faces[np.argmax(faces[:, 2] * faces[:, 3])]  # (15,)
        out[t, :14] = best[:14] / scale
        out[t, 14] = best[14]
    return out


def cached_yunet(sample: EvalSample, which: str = "frames") -> np.ndarray:
    """:func:`yunet_faces` of ``sample.frames`` (or ``ground_truth``/``reference``), cached."""
    key = ("yunet", which)
    if key not in sample.cache:
        frames = _select(sample, which)
        sample.cache[key] = yunet_faces(frames)
    return sample.cache[key]


def _select(sample: EvalSample, which: str) -> np.ndarray:
    if which == "frames":
        return sample.frames
    if which == "ground_truth":
        if sample.ground_truth is None:
            raise ValueError(f"sample {sample.clip_id!r} has no ground-truth frames")
        return sample.ground_truth
    if which == "reference":
        if sample.reference is None:
            raise ValueError(f"sample {sample.clip_id!r} has no reference image")
        return sample.reference[None]
    raise ValueError(f"unknown frame source {which!r}; accepted: frames, ground_truth, reference")


def _dlib_models() -> dict[str, Any]:
    if not _MODELS:
        import warnings

        import dlib
        with warnings.catch_warnings():  # face_recognition_models imports pkg_resources
            warnings.simplefilter("ignore")
            import face_recognition_models as frm
        _MODELS["detector"] = dlib.get_frontal_face_detector()
        _MODELS["shape68"] = dlib.shape_predictor(frm.pose_predictor_model_location())
        _MODELS["shape5"] = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        _MODELS["descriptor"] = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    return _MODELS


def dlib_models_check() -> tuple[bool, str]:
    """Availability of dlib's model files (shipped by the ``face_recognition_models`` package)."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        return False, "missing face_recognition_models (pip install -r requirements.txt)"
    folder = Path(spec.origin).parent / "models"
    names = ("shape_predictor_68_face_landmarks.dat", "shape_predictor_5_face_landmarks.dat",
             "dlib_face_recognition_resnet_model_v1.dat")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        return False, f"face_recognition_models lacks {', '.join(missing)} in {folder}"
    return True, (f"dlib models in {folder} (68-point predictor: iBUG 300-W, non-commercial)")


def _dlib_boxes(frames: np.ndarray) -> list[Any]:
    """dlib HOG face box per frame (largest face; the previous box when a frame has none)."""
    import dlib

    models = _dlib_models()
    boxes: list[Any] = []
    last = None
    for frame in frames:
        found, scale = [], 1.0
        for side in (DLIB_FAST_SIDE, DETECT_MAX_SIDE):  # large faces are found cheaply at 160 px
            small, scale = _downscale(frame, side)
            found = models["detector"](small, 0)
            if len(found) > 0:
                break
        if len(found) > 0:
            r = max(found, key=lambda b: b.width() * b.height())
            last = dlib.rectangle(round(r.left() / scale), round(r.top() / scale),
                                  round(r.right() / scale), round(r.bottom() / scale))
        boxes.append(last)
    # frames before the first detection take the first box found
    first = next((b for b in boxes if b is not None), None)
    return [b if b is not None else first for b in boxes]


def dlib_landmarks68(frames: np.ndarray) -> np.ndarray:
    """68 landmarks per frame.

    Args:
        frames: uint8 (T, H, W, 3) RGB.

    Returns:
        float64 (T, 68, 2) in input pixels (x, y); all NaN when no face was found in the clip.
        Frames where the detector misses reuse the last box (landmarks are still fitted).
    """
    models = _dlib_models()
    out = np.full((len(frames), 68, 2), np.nan)
    for t, (frame, box) in enumerate(zip(frames, _dlib_boxes(frames))):
        if box is None:
            continue
        shape = models["shape68"](frame, box)
        out[t] = [(p.x, p.y) for p in shape.parts()]
    return out


def cached_landmarks68(sample: EvalSample, which: str = "frames") -> np.ndarray:
    """:func:`dlib_landmarks68` of the chosen frames of ``sample``, cached."""
    key = ("dlib68", which)
    if key not in sample.cache:
        sample.cache[key] = dlib_landmarks68(_select(sample, which))
    return sample.cache[key]


def dlib_descriptors(frames: np.ndarray, frame_stride: int = 1) -> np.ndarray:
    """128-d dlib ResNet face descriptors of every ``frame_stride``-th frame.

    Faces are aligned with the 5-point shape predictor into dlib's standard 150x150 face chip
    (padding 0.25), as ``face_recognition.face_encodings`` does with ``num_jitters=1``.

    Returns:
        float64 (ceil(T / stride), 128); NaN rows where no face was found.
    """
    import dlib

    models = _dlib_models()
    picked = frames[::frame_stride]
    out = np.full((len(picked), 128), np.nan)
    for i, (frame, box) in enumerate(zip(picked, _dlib_boxes(picked))):
        if box is None:
            continue
        shape = models["shape5"](frame, box)
        chip = dlib.get_face_chip(frame, shape, size=150, padding=0.25)
        out[i] = np.asarray(models["descriptor"].compute_face_descriptor(chip))
    return out


def nan_interpolate(values: np.ndarray) -> np.ndarray:
    """Fill NaN entries of a (T, ...) array by linear interpolation along T (edges held)."""
    flat = values.reshape(len(values), -1).astype(np.float64).copy()  # (T, D)
    t = np.arange(len(flat))
    for d in range(flat.shape[1]):
        good = np.isfinite(flat[:, d])
        if good.any() and not good.all():
            flat[:, d] = np.interp(t, t[good], flat[good, d])
    return flat.reshape(values.shape)
