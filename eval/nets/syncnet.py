"""SyncNet (Chung & Zisserman 2016), in the module layout of joonson/syncnet_python ``SyncNetModel.S``.

The public ``syncnet_v2.model`` is a plain state dict with keys ``netcnnaud.*``, ``netfcaud.*``,
``netcnnlip.*``, ``netfclip.*``; :func:`load_syncnet` reads it with ``weights_only=True`` and
requires every key to match.

Inputs, as the reference evaluation feeds them:
* lips: float (B, 3, 5, 224, 224), BGR channel order, values 0..255, not normalised;
* audio: float (B, 1, 13, 20), 13 MFCCs x 20 steps of 10 ms (0.2 s).
Both embeddings are (B, 1024) and are compared with an L2 distance.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

EMBED_DIM = 1024
LIP_FRAMES = 5  # temporal kernel of the first lip convolution: one window = 5 video frames


def _conv2d_block(c_in: int, c_out: int, kernel: tuple[int, int], padding: tuple[int, int]) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel_size=kernel, stride=(1, 1), padding=padding),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _conv3d_block(c_in: int, c_out: int, kernel: tuple[int, int, int], stride: tuple[int, int, int],
                  padding: tuple[int, int, int]) -> list[nn.Module]:
    return [nn.Conv3d(c_in, c_out, kernel_size=kernel, stride=stride, padding=padding),
            nn.BatchNorm3d(c_out), nn.ReLU(inplace=True)]


def _fc_head(embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))


class SyncNet(nn.Module):
    """Audio and lip towers; module indices match ``SyncNetModel.S`` so the public weights load."""

    def __init__(self, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv2d_block(1, 64, (3, 3), (1, 1)),                  # 0-2
            nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),        # 3
            *_conv2d_block(64, 192, (3, 3), (1, 1)),                # 4-6
            nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),        # 7
            *_conv2d_block(192, 384, (3, 3), (1, 1)),               # 8-10
            *_conv2d_block(384, 256, (3, 3), (1, 1)),               # 11-13
            *_conv2d_block(256, 256, (3, 3), (1, 1)),               # 14-16
            nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),        # 17
            *_conv2d_block(256, 512, (5, 4), (0, 0)),               # 18-20
        )
        self.netfcaud = _fc_head(embed_dim)
        self.netfclip = _fc_head(embed_dim)
        self.netcnnlip = nn.Sequential(
            *_conv3d_block(3, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0)),                 # 0-2
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),                  # 3
            *_conv3d_block(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),               # 4-6
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),  # 7
            *_conv3d_block(256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),              # 8-10
            *_conv3d_block(256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),              # 11-13
            *_conv3d_block(256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),              # 14-16
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),                  # 17
            *_conv3d_block(256, 512, (1, 6, 6), (1, 1, 1), (0, 0, 0)),              # 18-20
        )

    def forward_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) MFCC windows -> (B, embed_dim)."""
        mid = self.netcnnaud(mfcc)                 # (B, 512, 1, 1)
        return self.netfcaud(mid.flatten(1))      # (B, embed_dim)

    def forward_lip(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) BGR 0..255 windows -> (B, embed_dim)."""
        mid = self.netcnnlip(video)                # (B, 512, 1, 1, 1)
        return self.netfclip(mid.flatten(1))      # (B, embed_dim)

    def forward_lip_sequence(self, video: torch.Tensor) -> torch.Tensor:
        """All sliding 5-frame windows of a sequence in one pass.

        Every lip layer after the first has temporal kernel 1 and the first has temporal kernel 5
        with stride 1 and no padding, so running the tower on (1, 3, T, 224, 224) gives exactly the
        embeddings of the T - 4 windows (t, ..., t + 4) that :meth:`forward_lip` would give one by one.

        Args:
            video: (1, 3, T, 224, 224) BGR 0..255, T >= 5.

        Returns:
            (T - 4, embed_dim) embeddings, window t starting at frame t.
        """
        mid = self.netcnnlip(video)                               # (1, 512, T - 4, 1, 1)
        mid = mid[0, :, :, 0, 0].transpose(0, 1)                  # (T - 4, 512)
        return self.netfclip(mid)                                 # (T - 4, embed_dim)


def load_syncnet(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> SyncNet:
    """Build :class:`SyncNet` from a ``syncnet_v2.model`` state dict (exact keys, eval mode)."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (syncnet_v2.model format), got {type(state).__name__}")
    model = SyncNet()
    # Files saved by old PyTorch versions have no BatchNorm ``num_batches_tracked`` buffers.
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    given = {k for k in state if not k.endswith("num_batches_tracked")}
    missing, unexpected = expected - given, given - expected
    if missing or unexpected:
        raise ValueError(f"{path}: not a SyncNet state dict; missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]} (expected netcnnaud.*, netfcaud.*, "
                         "netcnnlip.*, netfclip.* keys)")
    model.load_state_dict(state, strict=False)
    return model.eval()
