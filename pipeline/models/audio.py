"""Audio path shared by RAD-NeRF and ER-NeRF: per-frame audio features -> AudioNet (1D conv over
the feature window) -> AudioAttNet (attention smoothing over neighbouring video frames).

Works with every feature the dataset builder writes (``aud_mel.npy`` [N,16,80], ``aud_eo.npy``
[N,16,D], ``aud_hu.npy`` [N,2,1024], ``aud_ds.npy`` [N,16,29]): the input is [W, T, C] with any
T >= 1 and C = feature dimension.

Source: Guo et al. 2021 "AD-NeRF" (AudioNet, AudioAttNet); Tang et al. 2022 "RAD-NeRF" (same
modules, ``att`` smoothing window 8).
"""
from __future__ import annotations

import torch
from torch import nn


def audio_window(features: torch.Tensor, index: int, window: int) -> torch.Tensor:
    """Rows ``index - window//2 .. index + window - window//2 - 1`` of ``features`` ([N, ...]),
    edge rows repeated at the ends. Returns [window, ...]."""
    n = features.shape[0]
    idx = torch.arange(index - window // 2, index - window // 2 + window).clamp(0, n - 1)
    return features[idx.to(features.device)]


class AudioNet(nn.Module):
    """Conv over the time axis of one frame's feature window, then an MLP.

    Input: [B, T, C] (T time steps of C-dim features). Output: [B, dim_out].
    """

    def __init__(self, dim_in: int, dim_out: int = 32):
        super().__init__()
        act = nn.LeakyReLU(0.02, True)
        self.conv = nn.Sequential(
            nn.Conv1d(dim_in, 32, 3, 2, 1), act, nn.Conv1d(32, 32, 3, 2, 1), act,
            nn.Conv1d(32, 64, 3, 2, 1), act, nn.Conv1d(64, 64, 3, 2, 1), act)
        self.fc = nn.Sequential(nn.Linear(64, 64), act, nn.Linear(64, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.transpose(1, 2))          # [B, 64, T']
        return self.fc(h.mean(-1))


class AudioAttNet(nn.Module):
    """Attention over a window of W per-frame audio codes (AD-NeRF AudioAttNet).

    Input: [W, dim]. Output: [dim] (softmax-weighted sum of the window).
    """

    def __init__(self, dim: int = 32, window: int = 8):
        super().__init__()
        act = nn.LeakyReLU(0.02, True)
        self.conv = nn.Sequential(
            nn.Conv1d(dim, 16, 3, 1, 1), act, nn.Conv1d(16, 8, 3, 1, 1), act,
            nn.Conv1d(8, 4, 3, 1, 1), act, nn.Conv1d(4, 2, 3, 1, 1), act, nn.Conv1d(2, 1, 3, 1, 1), act)
        self.fc = nn.Sequential(nn.Linear(window, window), nn.Softmax(dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc(self.conv(x.t()[None])[0, 0])  # [W]
        return (w[:, None] * x).sum(0)


class AudioEncoder(nn.Module):
    """AudioNet followed by AudioAttNet: [W, T, C] window -> [dim_out] audio code of the centre
    frame."""

    def __init__(self, dim_in: int, dim_out: int = 32, window: int = 8):
        super().__init__()
        self.window = window
        self.net = AudioNet(dim_in, dim_out)
        self.att = AudioAttNet(dim_out, window)

    def forward(self, win: torch.Tensor) -> torch.Tensor:
        return self.att(self.net(win))
