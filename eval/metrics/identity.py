"""Identity preservation: CSIM (ArcFace cosine) and dlib ResNet descriptor similarity.

Both compare each generated frame's face with the reference image's face and average over the
frames where a face was found; the fraction of such frames is reported alongside.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from eval.metrics.faces import cached_yunet, dlib_descriptors, dlib_models_check
from eval.metrics.registry import EvalSample, register_metric
from eval.weights import ARCFACE_W600K_R50, YUNET, resolve_weight

DLIB_FRAME_STRIDE = 10  # dlib identity on every 10th frame (2.5 per second; ~0.1-0.25 s per face here)

_MODEL_CACHE: dict[str, Any] = {}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (N, D) and (N, D) or (D,) arrays; (N,)."""
    a = np.atleast_2d(a)
    b = np.broadcast_to(np.atleast_2d(b), a.shape)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def arcface_embeddings(frames: np.ndarray, faces: np.ndarray, model: Any) -> np.ndarray:
    """ArcFace embeddings of the aligned faces; NaN rows where ``faces`` (T, 15) has no face."""
    from eval.nets.arcface import align_face

    found = np.isfinite(faces[:, 4:14]).all(axis=1)
    out = np.full((len(frames), 512), np.nan)
    if found.any():
        crops = np.stack([align_face(f, k.reshape(5, 2)) for f, k in zip(frames[found], faces[found, 4:14])])
        emb = model.embed(crops)
        out = np.full((len(frames), emb.shape[1]), np.nan)
        out[found] = emb
    return out


def _arcface(weights_path: str | os.PathLike | None) -> Any:
    from eval.nets.arcface import ArcFaceONNX

    path = resolve_weight(ARCFACE_W600K_R50, weights_path)
    if str(path) not in _MODEL_CACHE:
        _MODEL_CACHE[str(path)] = ArcFaceONNX(path)
    return _MODEL_CACHE[str(path)]


def _similarity_summary(sims: np.ndarray, prefix: str) -> dict[str, float]:
    found = np.isfinite(sims)
    if not found.any():
        raise ValueError(f"{prefix}: no face found in any evaluated frame")
    return {prefix: float(np.mean(sims[found])), f"{prefix}_face_frames": float(np.mean(found))}


@register_metric(name="csim", kind="identity", higher_is_better=True, needs_reference_image=True,
                 weights=[ARCFACE_W600K_R50, YUNET], requires=["onnxruntime", "cv2", "skimage"],
                 outputs=["csim", "csim_face_frames"], directions={"csim_face_frames": None},
                 variant="InsightFace buffalo_l w600k_r50 ArcFace; YuNet 5 keypoints; similarity "
                         "transform to the 112x112 template; (x - 127.5) / 127.5 RGB; every frame",
                 description="Cosine similarity of ArcFace embeddings, reference vs each frame, mean.")
def csim(sample: EvalSample, model: Any = None, weights_path: str | None = None) -> dict[str, float]:
    """CSIM: mean ArcFace cosine similarity between the reference face and each frame's face."""
    net = model if model is not None else _arcface(weights_path)
    ref = arcface_embeddings(sample.reference[None], cached_yunet(sample, "reference"), net)[0]
    if not np.isfinite(ref).all():
        raise ValueError(f"csim: no face found in the reference image of {sample.clip_id!r}")
    emb = arcface_embeddings(sample.frames, cached_yunet(sample), net)
    return _similarity_summary(cosine(emb, ref), "csim")


def dlib_identity_curve(sample: EvalSample, frame_stride: int = DLIB_FRAME_STRIDE) -> np.ndarray:
    """Cosine similarity of the dlib descriptor of every ``frame_stride``-th frame to the reference.

    Returns:
        (ceil(T / stride),) float64; NaN where no face was found. Cached on the sample.
    """
    key = ("dlib_identity", frame_stride)
    if key not in sample.cache:
        if sample.reference is None:
            raise ValueError(f"sample {sample.clip_id!r} has no reference image for identity similarity")
        ref = dlib_descriptors(sample.reference[None])[0]
        if not np.isfinite(ref).all():
            raise ValueError(f"identity: no face found in the reference image of {sample.clip_id!r}")
        sample.cache[key] = cosine(dlib_descriptors(sample.frames, frame_stride), ref)
    return sample.cache[key]


@register_metric(name="id_sim_dlib", kind="identity", higher_is_better=True, needs_reference_image=True,
                 requires=["dlib", "face_recognition_models"], checks=[dlib_models_check],
                 outputs=["id_sim_dlib", "id_sim_dlib_face_frames"], directions={"id_sim_dlib_face_frames": None},
                 variant=f"dlib ResNet 128-d (face_recognition_models), HOG detector, 5-point face chip "
                         f"150 px padding 0.25; cosine; every {DLIB_FRAME_STRIDE}th frame",
                 description="Identity similarity to the reference with dlib's face descriptor (not "
                             "ArcFace CSIM; values are not comparable with CSIM tables).")
def id_sim_dlib(sample: EvalSample, frame_stride: int = DLIB_FRAME_STRIDE) -> dict[str, float]:
    """Mean dlib-descriptor cosine similarity between the reference and the sampled frames."""
    return _similarity_summary(dlib_identity_curve(sample, frame_stride), "id_sim_dlib")
