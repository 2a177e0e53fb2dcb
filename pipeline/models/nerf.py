"""Audio-driven head fields (RAD-NeRF, ER-NeRF), the pseudo-3D deformable torso, the occupancy
grid and the volume renderer, in pure PyTorch.

World space: the head frame of ``transforms_*.json`` (head = world), scaled by the model's
``scene_scale`` so that the head lies in the box [-bound, bound]^3. Cameras follow the NeRF /
Blender convention of ``transform_matrix`` (camera looks along -z, y up).

Sources: Tang et al. 2022 "Real-time Neural Radiance Talking Portrait Synthesis via Audio-spatial
Decomposition" (RAD-NeRF: audio-spatial decomposition, audio coordinate, torso module, occupancy
grid over audio conditions); Li et al. 2023 "Efficient Region-Aware Neural Radiance Fields for
High-Fidelity Talking Portrait Synthesis" (ER-NeRF: tri-plane hash, region attention); Mildenhall
et al. 2020 Eq. 3 (volume rendering quadrature).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.models.encodings import SHEncoding, TriPlaneHashGrid, make_hash_grid


def mlp(dim_in: int, dim_out: int, hidden: int = 64, layers: int = 2) -> nn.Sequential:
    """``layers`` linear layers with ReLU between (no output activation)."""
    mods: list[nn.Module] = []
    d = dim_in
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden), nn.ReLU(True)]
        d = hidden
    mods.append(nn.Linear(d, dim_out))
    return nn.Sequential(*mods)


@dataclass
class FieldOutput:
    """Per-sample field values: ``sigma`` [P] density (1/scene unit, >= 0), ``rgb`` [P, 3] in
    [0, 1], ``reg`` a scalar regulariser (method-specific, already weighted)."""

    sigma: torch.Tensor
    rgb: torch.Tensor
    reg: torch.Tensor


class HeadField(nn.Module):
    """Base of the audio-conditioned head fields: colour branch and density activation."""

    geo_dim = 15

    def __init__(self, hidden: int):
        super().__init__()
        self.dir_enc = SHEncoding()
        self.color_net = mlp(self.geo_dim + self.dir_enc.output_dim, 3, hidden, 3)

    def _finish(self, h: torch.Tensor, d: torch.Tensor, reg: torch.Tensor) -> FieldOutput:
        sigma = torch.exp(h[:, 0].clamp(max=15.0))               # trunc-exp activation (Instant-NGP)
        rgb = torch.sigmoid(self.color_net(torch.cat([h[:, 1:], self.dir_enc(d)], -1)))
        return FieldOutput(sigma, rgb, reg)

    def density(self, x: torch.Tensor, aud: torch.Tensor, eye: torch.Tensor) -> torch.Tensor:
        """Density only (occupancy-grid updates). x [P, 3] in [-1, 1]; returns [P]."""
        raise NotImplementedError


class RadNeRFField(HeadField):
    """RAD-NeRF audio-spatial decomposition: 3D hash grid of x; audio projected to a
    position-dependent 2D audio coordinate ``a = tanh(MLP([enc(x), aud]))`` encoded by a 2D hash
    grid; eye ratio appended; small density/colour MLPs (RAD-NeRF Sec. 3.1-3.2).

    ``forward(x [P,3] in [-1,1], d [P,3] unit, aud [A], eye [1])``.
    Regulariser: ``lambda_amb * mean |a|`` (RAD-NeRF's audio-coordinate L1 term).
    """

    def __init__(self, cfg, aud_dim: int):
        super().__init__(cfg.hidden)
        kw = dict(n_levels=cfg.levels, n_features=cfg.features, log2_hashmap_size=cfg.log2_hashmap,
                  base_resolution=16)
        self.grid = make_hash_grid(3, desired_resolution=cfg.max_resolution, **kw)
        self.amb_net = mlp(self.grid.output_dim + aud_dim, cfg.ambient_dim, cfg.hidden, 2)
        self.amb_grid = make_hash_grid(cfg.ambient_dim, desired_resolution=cfg.ambient_resolution,
                                       **{**kw, "log2_hashmap_size": min(cfg.log2_hashmap, 16)})
        self.sigma_net = mlp(self.grid.output_dim + self.amb_grid.output_dim + 1, 1 + self.geo_dim,
                             cfg.hidden, 3)
        self.lambda_amb = cfg.lambda_amb

    def _hidden(self, x, aud, eye):
        ex = self.grid((x + 1) / 2)
        amb = torch.tanh(self.amb_net(torch.cat([ex, aud.expand(x.shape[0], -1)], -1)))
        ea = self.amb_grid((amb + 1) / 2)
        h = self.sigma_net(torch.cat([ex, ea, eye.expand(x.shape[0], 1)], -1))
        return h, amb

    def forward(self, x, d, aud, eye) -> FieldOutput:
        h, amb = self._hidden(x, aud, eye)
        return self._finish(h, d, self.lambda_amb * amb.abs().mean())

    def density(self, x, aud, eye):
        return torch.exp(self._hidden(x, aud, eye)[0][:, 0].clamp(max=15.0))


class ERNeRFField(HeadField):
    """ER-NeRF: tri-plane hash encoding of x; region attention gates the audio code per channel
    (``aud * sigmoid(MLP(enc(x)))``) and the eye feature (``eye * sigmoid(MLP(enc(x)))``) by
    position (ER-NeRF Sec. 3.2-3.3).

    Regulariser: ``lambda_amb * (mean |gated audio| + mean |gated eye|)`` (ER-NeRF's ambient
    terms, keep the attention off regions that do not move).
    """

    def __init__(self, cfg, aud_dim: int):
        super().__init__(cfg.hidden)
        self.grid = TriPlaneHashGrid(n_levels=cfg.levels, n_features=cfg.features,
                                     log2_hashmap_size=cfg.log2_hashmap, base_resolution=16,
                                     desired_resolution=cfg.max_resolution)
        self.aud_att = mlp(self.grid.output_dim, aud_dim, cfg.hidden, 2)
        self.eye_att = mlp(self.grid.output_dim, 1, 16, 2)
        self.sigma_net = mlp(self.grid.output_dim + aud_dim + 1, 1 + self.geo_dim, cfg.hidden, 3)
        self.lambda_amb = cfg.lambda_amb

    def _hidden(self, x, aud, eye):
        ex = self.grid((x + 1) / 2)
        a = aud.expand(x.shape[0], -1) * torch.sigmoid(self.aud_att(ex))
        e = eye.expand(x.shape[0], 1) * torch.sigmoid(self.eye_att(ex))
        return self.sigma_net(torch.cat([ex, a, e], -1)), a, e

    def forward(self, x, d, aud, eye) -> FieldOutput:
        h, a, e = self._hidden(x, aud, eye)
        return self._finish(h, d, self.lambda_amb * (a.abs().mean() + e.abs().mean()))

    def density(self, x, aud, eye):
        return torch.exp(self._hidden(x, aud, eye)[0][:, 0].clamp(max=15.0))


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


# ------------------------------------------------------------------------------------- rendering
def get_rays(c2w: torch.Tensor, focal: float, cx: float, cy: float, pix: torch.Tensor):
    """Rays through pixel centres.

    Args:
        c2w: [4, 4] camera-to-world (scene units), NeRF convention (-z forward, y up).
        focal, cx, cy: intrinsics in pixels.
        pix: [R, 2] (row, col) integer pixel coordinates.
    Returns: origins [R, 3], unit directions [R, 3].
    """
    v = pix[:, 0].float() + 0.5
    u = pix[:, 1].float() + 0.5
    d = torch.stack([(u - cx) / focal, -(v - cy) / focal, -torch.ones_like(u)], -1)
    d = d @ c2w[:3, :3].t()
    d = d / d.norm(dim=-1, keepdim=True)
    return c2w[:3, 3].expand_as(d), d


def aabb_near_far(o: torch.Tensor, d: torch.Tensor, bound: float, min_near: float = 0.05):
    """Slab intersection of rays with [-bound, bound]^3. Returns near [R], far [R], hit [R] bool."""
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t0 = (-bound - o) * inv
    t1 = (bound - o) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp(min=min_near)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far, far > near


class OccupancyGrid(nn.Module):
    """Density grid over [-bound, bound]^3 (RAD-NeRF/Instant-NGP occupancy grid).

    ``update`` evaluates the density at every cell (jittered) under several audio/eye conditions
    and keeps the maximum over them (RAD-NeRF: a cell is pruned only when empty for every audio
    condition), with an exponential decay of the old values. Cells above
    ``min(mean density, threshold)`` are occupied. Until the first update every cell is occupied
    (``occupied`` starts True); the stored densities start at 0, as torch-ngp's density grid, so
    the first update's estimate replaces them. (An earlier version started them at 1e3: decayed
    by 0.95 per update they stayed above every real density for the whole ``quick`` profile, so
    no cell was ever pruned; docs/quality.md.)
    """

    def __init__(self, resolution: int, bound: float, threshold: float = 0.01):
        super().__init__()
        self.res, self.bound, self.threshold = resolution, bound, threshold
        self.register_buffer("density", torch.zeros(resolution ** 3))
        self.register_buffer("occupied", torch.ones(resolution ** 3, dtype=torch.bool))  # all, until updated

    def cell_index(self, x: torch.Tensor) -> torch.Tensor:
        """x [P, 3] in world units -> flat cell index [P] (clamped)."""
        g = ((x / self.bound + 1) / 2 * self.res).long().clamp(0, self.res - 1)
        return (g[:, 0] * self.res + g[:, 1]) * self.res + g[:, 2]

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Occupied flag [P] for points x [P, 3]."""
        return self.occupied[self.cell_index(x)]

    @torch.no_grad()
    def ray_bounds(self, o: torch.Tensor, d: torch.Tensor, near: torch.Tensor, far: torch.Tensor,
                   steps: int | None = None):
        """Tighten each ray's [near, far] to the span of its occupied cells.

        The ray is probed at ``steps`` (default 2 x the grid resolution) evenly spaced points
        between ``near`` and ``far``; the new bounds run from one probe spacing before the first
        occupied probe to one after the last, so every sample the renderer then takes lies in or
        next to occupied space (empty-space skipping by bounds, as the occupancy-grid marching of
        Instant-NGP / RAD-NeRF, with the per-ray sample budget spent where the head is).

        Args:
            o, d: [R, 3] ray origins and unit directions (scene units).
            near, far: [R] the ray's intersection with the box.
            steps: probes per ray.
        Returns:
            ``near`` [R], ``far`` [R] (tightened, within the input bounds) and ``hit`` [R] bool
            (False: no occupied cell on the ray).
        """
        steps = int(steps or 2 * self.res)
        u = (torch.arange(steps, device=o.device, dtype=o.dtype) + 0.5) / steps          # [K]
        span = (far - near).clamp(min=0)
        t = near[:, None] + span[:, None] * u[None]                                     # [R, K]
        occ = self.query((o[:, None] + t[..., None] * d[:, None]).reshape(-1, 3)).view(-1, steps)
        hit = occ.any(dim=1)
        first = occ.float().argmax(dim=1).float()
        last = (steps - 1) - occ.flip(1).float().argmax(dim=1).float()
        cell = span / steps
        new_near = torch.maximum(near, near + (first - 1) * cell)
        new_far = torch.minimum(far, near + (last + 2) * cell)
        return new_near, new_far, hit

    @torch.no_grad()
    def update(self, density_fn, conditions, decay: float = 0.95, chunk: int = 65536) -> float:
        """Re-estimate the grid. ``density_fn(x [P,3], cond) -> [P]``; ``conditions`` a list of
        conditions (audio code, eye). Returns the occupied fraction."""
        r = self.res
        ax = torch.arange(r, device=self.density.device)
        cells = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3).float()
        x = ((cells + torch.rand_like(cells)) / r * 2 - 1) * self.bound
        new = torch.zeros_like(self.density)
        for cond in conditions:
            for s in range(0, x.shape[0], chunk):
                new[s:s + chunk] = torch.maximum(new[s:s + chunk], density_fn(x[s:s + chunk], cond))
        self.density.copy_(torch.maximum(self.density * decay, new))
        thr = min(self.density.mean().item(), self.threshold)
        self.occupied.copy_(self.density > thr)
        return self.occupied.float().mean().item()


def render_rays(field_fn, o: torch.Tensor, d: torch.Tensor, bound: float, n_samples: int,
                occ: OccupancyGrid | None = None, perturb: bool = True, chunk_samples: int = 12,
                t_thresh: float = 1e-3, tight_bounds: bool = True):
    """Volume rendering (Mildenhall et al. 2020 Eq. 3) with occupancy skipping and early ray
    termination: samples are marched in chunks of ``chunk_samples`` along the ray; rays whose
    transmittance falls below ``t_thresh`` stop, empty cells are not evaluated.

    Args:
        field_fn: ``(x [P,3], d [P,3]) -> FieldOutput``.
        o, d: [R, 3] ray origins/unit directions (scene units).
        bound: head box half-size; near/far from its intersection.
        n_samples: samples per ray between near and far.
        occ: occupancy grid; its empty cells are not evaluated, and with ``tight_bounds`` each
            ray's [near, far] is first shrunk to its occupied span
            (:meth:`OccupancyGrid.ray_bounds`), so the ``n_samples`` are spent on the head only.
    Returns: dict ``rgb`` [R, 3] (premultiplied head colour), ``alpha`` [R] (accumulated opacity),
        ``depth`` [R], ``reg`` scalar, ``n_evals`` number of field evaluations.
    """
    R = o.shape[0]
    dev = o.device
    near, far, hit = aabb_near_far(o, d, bound)
    if occ is not None and tight_bounds:
        near, far, occ_hit = occ.ray_bounds(o, d, near, far)
        hit = hit & occ_hit
    rgb = torch.zeros(R, 3, device=dev)
    acc = torch.zeros(R, device=dev)
    depth = torch.zeros(R, device=dev)
    trans = torch.ones(R, device=dev)
    reg = torch.zeros((), device=dev)
    n_evals = 0
    idx_alive = torch.nonzero(hit).squeeze(-1)
    if idx_alive.numel() == 0:
        return {"rgb": rgb, "alpha": acc, "depth": depth, "reg": reg, "n_evals": 0}
    delta_all = (far - near) / n_samples
    n_reg = 0
    for s0 in range(0, n_samples, chunk_samples):
        if idx_alive.numel() == 0:
            break
        k = min(chunk_samples, n_samples - s0)
        nr, dl = near[idx_alive], delta_all[idx_alive]
        steps = torch.arange(s0, s0 + k, device=dev).float()[None]
        jitter = torch.rand(idx_alive.numel(), k, device=dev) if perturb else torch.full((idx_alive.numel(), k), 0.5, device=dev)
        t = nr[:, None] + (steps + jitter) * dl[:, None]                              # [A, k]
        x = o[idx_alive][:, None] + t[..., None] * d[idx_alive][:, None]               # [A, k, 3]
        xf = x.reshape(-1, 3)
        mask = occ.query(xf) if occ is not None else torch.ones(xf.shape[0], dtype=torch.bool, device=dev)
        sigma = torch.zeros(xf.shape[0], device=dev)
        col = torch.zeros(xf.shape[0], 3, device=dev)
        if mask.any():
            sel = torch.nonzero(mask).squeeze(-1)
            out = field_fn(xf[sel] / bound, d[idx_alive][:, None].expand(-1, k, -1).reshape(-1, 3)[sel])
            sigma = sigma.index_put((sel,), out.sigma)
            col = col.index_put((sel,), out.rgb)
            reg = reg + out.reg
            n_reg += 1
            n_evals += sel.numel()
        alpha = 1 - torch.exp(-sigma.view(-1, k) * dl[:, None])                        # [A, k]
        tr_in = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], -1), -1)
        w = trans[idx_alive][:, None] * tr_in[:, :-1] * alpha                          # [A, k]
        rgb = rgb.index_add(0, idx_alive, (w[..., None] * col.view(-1, k, 3)).sum(1))
        acc = acc.index_add(0, idx_alive, w.sum(1))
        depth = depth.index_add(0, idx_alive, (w * t).sum(1))
        trans = trans.index_put((idx_alive,), trans[idx_alive] * tr_in[:, -1])
        idx_alive = idx_alive[trans[idx_alive] > t_thresh]
    return {"rgb": rgb, "alpha": acc, "depth": depth, "reg": reg / max(n_reg, 1), "n_evals": n_evals}
