"""Occupancy grid over the head box (RAD-NeRF / Instant-NGP), updated with the maximum density
over several per-frame conditions of the method (RAD-NeRF: a cell is pruned only when it is
empty for every audio condition).
"""
from __future__ import annotations

import torch
from torch import nn


class OccupancyGrid(nn.Module):
    """Density grid over [-bound, bound]^3 (RAD-NeRF/Instant-NGP occupancy grid).

    ``update`` evaluates the density at every cell (jittered) under several condition records
    and keeps the maximum over them (RAD-NeRF: a cell is pruned only when empty for every audio
    condition), with an exponential decay of the old values. Cells above
    ``min(mean density, threshold)`` are occupied.
    """

    def __init__(self, resolution: int, bound: float, threshold: float = 0.01):
        super().__init__()
        self.res, self.bound, self.threshold = resolution, bound, threshold
        self.register_buffer("density", torch.full((resolution ** 3,), 1e3))  # everything occupied
        self.register_buffer("occupied", torch.ones(resolution ** 3, dtype=torch.bool))

    def cell_index(self, x: torch.Tensor) -> torch.Tensor:
        """x [P, 3] in world units -> flat cell index [P] (clamped)."""
        g = ((x / self.bound + 1) / 2 * self.res).long().clamp(0, self.res - 1)
        return (g[:, 0] * self.res + g[:, 1]) * self.res + g[:, 2]

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Occupied flag [P] for points x [P, 3]."""
        return self.occupied[self.cell_index(x)]

    @torch.no_grad()
    def update(self, density_fn, conditions, decay: float = 0.95, chunk: int = 65536) -> float:
        """Re-estimate the grid. ``density_fn(x [P,3], cond) -> [P]``; ``conditions`` a list of
        condition records of the method (:mod:`pipeline.models.conditions`). Returns the occupied
        fraction."""
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

