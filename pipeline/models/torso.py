"""Torso modules: RAD-NeRF's pseudo-3D deformable torso (Tang et al. 2022 Sec. 3.3).

A torso module is called as ``torso(xy, pose)`` with ``xy`` [P, 2] image-plane coordinates in
[-1, 1] and ``pose`` [12] = c2w[:3, :4] flattened (scene units); it returns ``rgb`` [P, 3] in
[0, 1], ``alpha`` [P] in [0, 1] and ``deform`` [P, 2].
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.models.encodings import make_hash_grid
from pipeline.models.fields import mlp


def freq_encode(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """NeRF positional encoding: [P, D] -> [P, D * (1 + 2 * n_freqs)]."""
    out = [x]
    for k in range(n_freqs):
        out += [torch.sin((2.0 ** k) * math.pi * x), torch.cos((2.0 ** k) * math.pi * x)]
    return torch.cat(out, -1)


class TorsoField(nn.Module):
    """RAD-NeRF pseudo-3D deformable torso: image-plane coordinates are offset by a deformation
    conditioned on the head pose, then a 2D hash grid + MLP give torso colour and alpha.

    ``forward(xy [P,2] in [-1,1] (image plane), pose [12] = c2w[:3,:4] flattened (scene units))``
    returns ``rgb`` [P,3] in [0,1], ``alpha`` [P] in [0,1], ``deform`` [P,2].
    """

    def __init__(self, cfg):
        super().__init__()
        self.pose_net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(True), nn.Linear(16, 8))
        self.deform_net = mlp(2 * 9 + 8, 2, cfg.hidden, 3)
        self.grid = make_hash_grid(2, n_levels=cfg.torso_levels, n_features=2,
                                   log2_hashmap_size=min(cfg.log2_hashmap, 18), base_resolution=16,
                                   desired_resolution=cfg.torso_resolution)
        self.net = mlp(self.grid.output_dim + 8, 4, cfg.hidden, 3)

    def forward(self, xy: torch.Tensor, pose: torch.Tensor):
        p = self.pose_net(pose[None]).expand(xy.shape[0], -1)
        dxy = torch.tanh(self.deform_net(torch.cat([freq_encode(xy, 4), p], -1))) * 0.25
        h = self.net(torch.cat([self.grid(((xy + dxy) + 1) / 2), p], -1))
        return torch.sigmoid(h[:, :3]), torch.sigmoid(h[:, 3]), dxy
