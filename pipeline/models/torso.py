"""Torso modules: RAD-NeRF's pseudo-3D deformable torso (Tang et al. 2022 Sec. 3.3) and ER-NeRF's
torso with its adaptive pose encoding (Li et al. 2023 Sec. 3.4).

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


class AdaptivePoseTorso(nn.Module):
    """ER-NeRF torso with its adaptive pose encoding (Li et al. 2023 Sec. 3.4).

    The head pose enters as the image-plane projection of K = 3 learnable anchor points ``P_k``
    (head space = world, scene units): ``q_k = (x_k / z_k, y_k / z_k)`` of ``w2c @ P_k`` with
    ``w2c = c2w^-1``, i.e. where the anchors appear for this head pose. The 6-vector ``q`` is
    frequency-encoded (``anchor_freqs``) and, with the frequency-encoded image coordinate
    (``xy_freqs``), drives a deformation MLP ``dxy``; a 2D hash grid at ``clamp(xy + dxy, -1, 1)``
    plus the same encodings go through the torso MLP to colour and alpha.

    ``forward(xy [P,2] in [-1,1] (image plane), pose [12] = c2w[:3,:4] flattened (scene units))``
    returns ``rgb`` [P,3] in [0,1], ``alpha`` [P] in [0,1], ``deform`` [P,2].

    Differences from the official code (github.com/Fictionarry/ER-NeRF ``nerf_triplane/network.py``):
    anchors start at head-box-relative positions (our scene is scaled so the head fills
    [-1, 1]^3, theirs is not); no ``torso_shrink`` of the coordinates and no per-frame individual
    torso code; widths follow our ``hidden`` instead of their fixed 32.
    """

    anchor_freqs = 3
    xy_freqs = 8
    #: initial anchors (scene units): in front of the head centre, spread left/right/down
    ANCHORS = ((0.05, 0.05, 0.5), (-0.5, -0.5, 0.5), (0.5, -0.5, 0.5))

    def __init__(self, cfg):
        super().__init__()
        self.anchors = nn.Parameter(torch.tensor(self.ANCHORS, dtype=torch.float32))
        d_xy = 2 * (1 + 2 * self.xy_freqs)
        d_anchor = 6 * (1 + 2 * self.anchor_freqs)
        self.deform_net = mlp(d_xy + d_anchor, 2, cfg.hidden, 3)
        self.grid = make_hash_grid(2, n_levels=cfg.torso_levels, n_features=2,
                                   log2_hashmap_size=min(cfg.log2_hashmap, 18), base_resolution=16,
                                   desired_resolution=cfg.torso_resolution)
        self.net = mlp(self.grid.output_dim + d_xy + d_anchor, 4, cfg.hidden, 3)

    def anchor_projection(self, pose: torch.Tensor) -> torch.Tensor:
        """[12] c2w[:3,:4] -> [6] image-plane projections (x/z, y/z) of the three anchors."""
        c2w = torch.eye(4, dtype=pose.dtype, device=pose.device)
        c2w[:3, :4] = pose.reshape(3, 4)
        w2c = torch.linalg.inv(c2w)
        cam = self.anchors @ w2c[:3, :3].t() + w2c[:3, 3]                    # [3, 3]
        z = torch.where(cam[:, 2:].abs() < 1e-6, torch.full_like(cam[:, 2:], -1e-6), cam[:, 2:])
        return (cam[:, :2] / z).reshape(-1)

    def forward(self, xy: torch.Tensor, pose: torch.Tensor):
        enc_a = freq_encode(self.anchor_projection(pose)[None], self.anchor_freqs).expand(xy.shape[0], -1)
        h = torch.cat([freq_encode(xy, self.xy_freqs), enc_a], -1)
        dxy = self.deform_net(h)
        warped = (xy + dxy).clamp(-1, 1)
        out = self.net(torch.cat([self.grid((warped + 1) / 2), h], -1))
        return torch.sigmoid(out[:, :3]), torch.sigmoid(out[:, 3]), dxy
