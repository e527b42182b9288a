"""I3D feature extractor for FVD: StyleGAN-V's TorchScript ``i3d_torchscript.pt``.

The TorchScript module is called as ``detector(videos, rescale=True, resize=True,
return_features=True)`` with ``videos`` float (B, 3, T, H, W) in 0..255: it rescales to [-1, 1] and
resizes bilinearly to 224x224 itself and returns the 400-d pre-softmax Kinetics logits (averaged
over time), the features FVD compares.
"""

from __future__ import annotations

import os

import numpy as np
import torch

FEATURE_DIM = 400


def load_i3d_torchscript(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """``torch.jit.load`` of the StyleGAN-V detector on the CPU (TorchScript: no unpickling)."""
    import warnings

    try:
        with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript deprecated; the file is TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError as error:
        raise ValueError(f"{path}: not a TorchScript archive ({str(error)[:200]})") from error


@torch.no_grad()
def i3d_features(detector: torch.jit.ScriptModule, clips: np.ndarray, batch: int = 4) -> np.ndarray:
    """400-d features of uint8 clips.

    Args:
        detector: the loaded TorchScript module.
        clips: uint8 (N, T, H, W, 3) RGB clips.

    Returns:
        float64 (N, 400).
    """
    out = []
    for start in range(0, len(clips), batch):
        x = torch.from_numpy(clips[start:start + batch]).permute(0, 4, 1, 2, 3).float()  # (B, 3, T, H, W) 0..255
        feats = detector(x, rescale=True, resize=True, return_features=True)           # (B, 400)
        out.append(feats.reshape(len(x), -1).double().numpy())
    features = np.concatenate(out)
    if features.shape[1] != FEATURE_DIM:
        raise ValueError(f"I3D detector returned {features.shape[1]}-d features, expected {FEATURE_DIM}")
    return features
