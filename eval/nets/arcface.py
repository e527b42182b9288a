"""ArcFace (InsightFace ``w600k_r50.onnx``) through onnxruntime, with the standard 5-point alignment."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

ARCFACE_SIZE = 112
# The ArcFace 112x112 template: left eye, right eye, nose tip, left and right mouth corner (image order).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def align_face(image: np.ndarray, keypoints: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """Similarity-transform (Umeyama) ``keypoints`` (5, 2) onto the template; uint8 (112, 112, 3)."""
    import cv2
    from skimage.transform import SimilarityTransform

    transform = SimilarityTransform.from_estimate(keypoints, ARCFACE_TEMPLATE * size / ARCFACE_SIZE) \
        if hasattr(SimilarityTransform, "from_estimate") else None
    if transform is None:
        transform = SimilarityTransform()
        transform.estimate(keypoints, ARCFACE_TEMPLATE * size / ARCFACE_SIZE)
    return cv2.warpAffine(image, transform.params[:2], (size, size), borderValue=0.0)


class ArcFaceONNX:
    """A 512-d face embedding from aligned RGB crops; ``embed(crops (N, 112, 112, 3) uint8) -> (N, 512)``."""

    def __init__(self, path: str | os.PathLike, threads: int = 2) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session: Any = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def embed(self, crops: np.ndarray, batch: int = 32) -> np.ndarray:
        """(N, 112, 112, 3) uint8 RGB -> float64 (N, 512), not normalised."""
        out = []
        for start in range(0, len(crops), batch):
            x = (crops[start:start + batch].astype(np.float32) - 127.5) / 127.5  # (B, 112, 112, 3)
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))                     # (B, 3, 112, 112)
            out.append(self.session.run(None, {self.input_name: x})[0].astype(np.float64))
        return np.concatenate(out).reshape(len(crops), -1)
