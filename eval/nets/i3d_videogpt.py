"""I3D feature extractor for the VideoGPT variant of FVD: ``i3d_pretrained_400.pt``.

A pure-torch port of the Inception-v1 I3D that VideoGPT evaluates FVD with (wilson1yan/VideoGPT,
``videogpt/fvd/pytorch_i3d.py``, itself from piergiaj/pytorch-i3d): TF-style "same" padding
computed from the input size (zeros, also in front of the max pools), batch norm with eps 1e-5,
and a logits head of a [2, 7, 7] average pool and a 1x1x1 convolution with bias. Module and
parameter names are those of VideoGPT's ``InceptionI3d(400, in_channels=3)``, so its plain
``state_dict`` file loads with ``load_state_dict(strict=True)``.

Features are what VideoGPT's ``get_fvd_logits`` returns: the 400 pre-softmax Kinetics logits,
averaged over the remaining time steps (one step for 16 frames at 224x224).

Preprocessing is VideoGPT's ``videogpt/data.py::preprocess(video, 224)`` as called by
``videogpt/fvd/fvd.py::preprocess`` (see :func:`videogpt_preprocess`); unlike the StyleGAN-V
variant (``eval/nets/i3d.py``: bilinear squash to 224x224, [-1, 1]) it keeps the aspect ratio,
centre-crops and scales to [-0.5, 0.5].
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 400
RESOLUTION = 224


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same" padding (front, back) of one dimension, as pytorch-i3d's ``compute_pad``."""
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """Zero-pad (B, C, T, H, W) so that a kernel/stride window gives ceil(size / stride) outputs."""
    (t0, t1), (h0, h1), (w0, w1) = (_same_padding(s, k, st) for s, k, st in zip(x.shape[2:], kernel, stride))
    return F.pad(x, (w0, w1, h0, h1, t0, t1))


class MaxPool3dSamePadding(nn.MaxPool3d):
    """Max pool after zero "same" padding (no parameters)."""

    def __init__(self, kernel_size: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__(kernel_size=kernel_size, stride=stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_pad_same(x, self.kernel_size, self.stride))


class Unit3D(nn.Module):
    """"Same"-padded Conv3d (``conv3d``), optional BatchNorm3d (``bn``), optional ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), relu: bool = True, batch_norm: bool = True,
                 bias: bool = False):
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel_size=kernel, stride=stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-5, momentum=0.001) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1; 1x1->3x3; 1x1->3x3; 3x3 max pool->1x1."""

    def __init__(self, in_channels: int, out: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], kernel=(3, 3, 3))
        self.b3a = MaxPool3dSamePadding((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (end point, module factory) in forward order; the names are the state_dict prefixes.
_END_POINTS = (
    ("Conv3d_1a_7x7", lambda c: Unit3D(c, 64, kernel=(7, 7, 7), stride=(2, 2, 2))),
    ("MaxPool3d_2a_3x3", lambda c: MaxPool3dSamePadding((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", lambda c: Unit3D(64, 64)),
    ("Conv3d_2c_3x3", lambda c: Unit3D(64, 192, kernel=(3, 3, 3))),
    ("MaxPool3d_3a_3x3", lambda c: MaxPool3dSamePadding((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", lambda c: InceptionModule(192, (64, 96, 128, 16, 32, 32))),
    ("Mixed_3c", lambda c: InceptionModule(256, (128, 128, 192, 32, 96, 64))),
    ("MaxPool3d_4a_3x3", lambda c: MaxPool3dSamePadding((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", lambda c: InceptionModule(480, (192, 96, 208, 16, 48, 64))),
    ("Mixed_4c", lambda c: InceptionModule(512, (160, 112, 224, 24, 64, 64))),
    ("Mixed_4d", lambda c: InceptionModule(512, (128, 128, 256, 24, 64, 64))),
    ("Mixed_4e", lambda c: InceptionModule(512, (112, 144, 288, 32, 64, 64))),
    ("Mixed_4f", lambda c: InceptionModule(528, (256, 160, 320, 32, 128, 128))),
    ("MaxPool3d_5a_2x2", lambda c: MaxPool3dSamePadding((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", lambda c: InceptionModule(832, (256, 160, 320, 32, 128, 128))),
    ("Mixed_5c", lambda c: InceptionModule(832, (384, 192, 384, 48, 128, 128))),
)


class InceptionI3d(nn.Module):
    """VideoGPT's ``InceptionI3d(num_classes, in_channels=3)`` up to its Logits end point.

    ``forward`` takes float (B, 3, T, 224, 224) and returns (B, num_classes): the logits of the
    1x1x1 head after a [2, 7, 7] stride-1 average pool, spatially squeezed and averaged over time.
    """

    def __init__(self, num_classes: int = FEATURE_DIM, in_channels: int = 3):
        super().__init__()
        # registered first, as in VideoGPT (its end points are added afterwards by build())
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
        self.dropout = nn.Dropout(0.5)  # identity in eval mode
        self.logits = Unit3D(384 + 384 + 128 + 128, num_classes, relu=False, batch_norm=False, bias=True)
        for name, make in _END_POINTS:
            self.add_module(name, make(in_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, _ in _END_POINTS:
            x = self._modules[name](x)                           # ... -> (B, 1024, T/8, 7, 7) at 224²
        x = self.logits(self.dropout(self.avg_pool(x)))          # (B, classes, T', 1, 1)
        return x.squeeze(3).squeeze(3).mean(dim=2)               # (B, classes)


def _is_batch_norm_counter(key: str) -> bool:
    return key.endswith(".num_batches_tracked")


def load_i3d_videogpt(path: str | os.PathLike) -> InceptionI3d:
    """``InceptionI3d(400, in_channels=3)`` with the plain state_dict in ``path``, on the CPU, in eval mode.

    The file is read with ``torch.load(..., weights_only=True)`` (tensors only, no arbitrary
    objects). Its keys and shapes must be exactly those of the port; BatchNorm's
    ``num_batches_tracked`` counters may be absent (files from older torch; they are unused in
    eval mode and set to 0, as ``load_state_dict`` does for such files).

    Raises:
        ValueError: naming the file, when it cannot be read as a state_dict or does not match.
    """
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file (HTML page, truncated, pickled objects)
        raise ValueError(f"{path}: not a torch state_dict file readable with weights_only=True "
                         f"({str(error)[:200]})") from error
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a plain state_dict (name -> tensor) for VideoGPT's "
                         f"InceptionI3d(400, in_channels=3), got {type(state).__name__}")
    net = InceptionI3d(FEATURE_DIM, in_channels=3)
    expected = net.state_dict()
    missing = sorted(k for k in expected if k not in state and not _is_batch_norm_counter(k))
    unexpected = sorted(k for k in state if k not in expected)
    wrong_shape = sorted(k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong_shape:
        detail = "; ".join(f"{label} {len(keys)} (e.g. {', '.join(keys[:3])})" for label, keys in
                           (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)) if keys)
        raise ValueError(f"{path}: not the state_dict of VideoGPT's InceptionI3d(400, in_channels=3) "
                         f"(i3d_pretrained_400.pt): {detail}")
    state = dict(state)
    for key in expected:
        if _is_batch_norm_counter(key) and key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)
    net.load_state_dict(state, strict=True)
    return net.eval()


def videogpt_resize_size(height: int, width: int, resolution: int = RESOLUTION) -> tuple[int, int]:
    """VideoGPT's resize target: the short side to ``resolution``, the long side ``ceil(side * scale)``.

    Same float arithmetic as VideoGPT, including its quirk that a square frame may get one extra
    row (100x100 -> (225, 224), since 100 * (224 / 100) = 224.00000000000003); the centre crop
    then starts at row 0.
    """
    scale = resolution / min(height, width)
    if height < width:
        return resolution, math.ceil(width * scale)
    return math.ceil(height * scale), resolution


def videogpt_preprocess(clips: np.ndarray, resolution: int = RESOLUTION) -> torch.Tensor:
    """VideoGPT's FVD preprocessing of uint8 clips, batched.

    Per clip, as ``videogpt/data.py::preprocess(video, 224)`` (called by
    ``videogpt/fvd/fvd.py::preprocess``):

    1. ``/ 255`` in float32 -> [0, 1];
    2. bilinear resize (``F.interpolate``, ``align_corners=False``, no antialias) of every frame so
       that the short side is 224 and the long side ``ceil(side * 224 / short)``
       (:func:`videogpt_resize_size`);
    3. centre crop 224x224 starting at ``(size - 224) // 2`` on each axis;
    4. ``- 0.5`` -> [-0.5, 0.5]. All frames of the clip are kept (no temporal resampling).

    Args:
        clips: uint8 (N, T, H, W, 3) RGB.

    Returns:
        float32 (N, 3, T, 224, 224) in [-0.5, 0.5].
    """
    if not isinstance(clips, np.ndarray) or clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        got = f"{clips.dtype} {clips.shape}" if isinstance(clips, np.ndarray) else type(clips).__name__
        raise ValueError(f"expected uint8 (N, T, H, W, 3) RGB clips, got {got}")
    n, t, h, w, c = clips.shape
    x = torch.from_numpy(np.ascontiguousarray(clips)).permute(0, 1, 4, 2, 3).float() / 255.0  # (N, T, 3, H, W)
    size = videogpt_resize_size(h, w, resolution)
    x = F.interpolate(x.reshape(n * t, c, h, w), size=size, mode="bilinear", align_corners=False)  # (N*T, 3, h', w')
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    x = x[:, :, top:top + resolution, left:left + resolution]                               # (N*T, 3, 224, 224)
    x = x.reshape(n, t, c, resolution, resolution).permute(0, 2, 1, 3, 4).contiguous()      # (N, 3, T, 224, 224)
    return x - 0.5


def i3d_videogpt_features(net: InceptionI3d, clips: np.ndarray, batch: int = 4) -> np.ndarray:
    """VideoGPT FVD features of uint8 clips: :func:`videogpt_preprocess`, then the I3D logits.

    Args:
        net: the loaded :class:`InceptionI3d` (eval mode).
        clips: uint8 (N, T, H, W, 3) RGB clips (T = 16 for FVD).
        batch: clips per forward pass.

    Returns:
        float64 (N, 400): pre-softmax Kinetics logits averaged over time.
    """
    out = []
    device = next(net.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(clips), batch):
            x = videogpt_preprocess(clips[start:start + batch]).to(device)   # (B, 3, T, 224, 224) [-0.5, 0.5]
            out.append(net(x).double().cpu().numpy())                         # (B, 400)
    features = np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))
    if features.shape[1] != FEATURE_DIM:
        raise ValueError(f"I3D returned {features.shape[1]}-d features, expected {FEATURE_DIM}")
    return features
