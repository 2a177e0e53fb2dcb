"""Occupancy grid over the head box (RAD-NeRF / Instant-NGP), updated with the maximum density
over several per-frame conditions of the method (RAD-NeRF: a cell is pruned only when it is
empty for every audio condition).
"""
from __future__ import annotations

import torch
from torch import nn

#: torch-ngp (which RAD-NeRF and ER-NeRF build on, ``update_extra_state``): the first this many
#: updates visit every cell, later ones a random quarter of the cells plus as many random cells of
#: positive density (:meth:`OccupancyGrid.update` ``partial``)
FULL_UPDATES = 16


class OccupancyGrid(nn.Module):
    """Density grid over [-bound, bound]^3 (RAD-NeRF/Instant-NGP occupancy grid).

    ``update`` evaluates the density at every cell (jittered) under several condition records
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
        """x [P, 3] in world units -> flat cell index [P] int32 (clamped; int32 holds every
        index up to resolution 1290)."""
        g = ((x / self.bound + 1) / 2 * self.res).to(torch.int32).clamp_(0, self.res - 1)
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
        # the probes' cells, per dimension on [R, K] (the arithmetic of cell_index, element for
        # element, without the [R*K, 3] position and int64 temporaries)
        r = self.res
        flat = None
        for k in range(3):
            g = (((o[:, k:k + 1] + t * d[:, k:k + 1]) / self.bound + 1) / 2 * r).to(torch.int32).clamp_(0, r - 1)
            flat = g if flat is None else flat * r + g
        occ = self.occupied[flat]                                                       # [R, K]
        hit = occ.any(dim=1)
        first = occ.float().argmax(dim=1).float()
        last = (steps - 1) - occ.flip(1).float().argmax(dim=1).float()
        cell = span / steps
        new_near = torch.maximum(near, near + (first - 1) * cell)
        new_far = torch.minimum(far, near + (last + 2) * cell)
        return new_near, new_far, hit

    @torch.no_grad()
    def update(self, density_fn, conditions, decay: float = 0.95, chunk: int = 65536,
               max_density_fn=None, partial: bool = False) -> float:
        """Re-estimate the grid. ``density_fn(x [P,3], cond) -> [P]``; ``conditions`` a list of
        condition records of the method (:mod:`pipeline.models.conditions`). With
        ``max_density_fn(x [P,3], conditions) -> [P]`` (the maximum over the records, e.g.
        :meth:`pipeline.models.fields.HeadField.density_max` sharing the position encoding) it is
        called once per chunk of cells instead of ``density_fn`` per record and chunk; the grid is
        the same (the maximum is exact). ``partial`` (torch-ngp's update after its first
        :data:`FULL_UPDATES`): only ``resolution^3 / 4`` random cells and as many random cells of
        positive density (drawn with replacement, torch's global RNG) are re-estimated and decayed;
        the others keep their values. Returns the occupied fraction."""
        r = self.res
        dev = self.density.device
        idx = None
        if partial:
            n = r ** 3 // 4
            pos = torch.nonzero(self.density > 0).squeeze(-1)
            picks = [torch.randint(0, r ** 3, (n,), device=dev)]
            if pos.numel():
                picks.append(pos[torch.randint(0, pos.numel(), (n,), device=dev)])
            idx = torch.unique(torch.cat(picks))
            cells = torch.stack([idx // (r * r), (idx // r) % r, idx % r], -1).float()
        else:
            ax = torch.arange(r, device=dev)
            cells = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3).float()
        x = ((cells + torch.rand_like(cells)) / r * 2 - 1) * self.bound
        new = torch.zeros(x.shape[0], device=dev, dtype=self.density.dtype)
        if max_density_fn is not None:
            for s in range(0, x.shape[0], chunk):
                new[s:s + chunk] = torch.maximum(new[s:s + chunk], max_density_fn(x[s:s + chunk], conditions))
        else:
            for cond in conditions:
                for s in range(0, x.shape[0], chunk):
                    new[s:s + chunk] = torch.maximum(new[s:s + chunk], density_fn(x[s:s + chunk], cond))
        if idx is None:
            self.density.copy_(torch.maximum(self.density * decay, new))
        else:
            self.density[idx] = torch.maximum(self.density[idx] * decay, new)
        thr = min(self.density.mean().item(), self.threshold)
        self.occupied.copy_(self.density > thr)
        return self.occupied.float().mean().item()

