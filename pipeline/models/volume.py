"""Rays and the volume renderer: pixel rays, their intersection with the head box, and volume
rendering with occupancy skipping and early ray termination (Mildenhall et al. 2020 Eq. 3).

World space: the head frame of ``transforms_*.json`` (head = world), scaled by the model's
``scene_scale`` so that the head lies in the box [-bound, bound]^3. Cameras follow the NeRF /
Blender convention of ``transform_matrix`` (camera looks along -z, y up).
"""
from __future__ import annotations

import torch

from pipeline.models.occupancy import OccupancyGrid


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



def render_rays(field_fn, o: torch.Tensor, d: torch.Tensor, bound: float, n_samples: int,
                occ: OccupancyGrid | None = None, perturb: bool = True, chunk_samples: int = 12,
                t_thresh: float = 1e-3, tight_bounds: bool = True, skip_empty: bool = True):
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
            (:meth:`pipeline.models.occupancy.OccupancyGrid.ray_bounds`), so the ``n_samples``
            are spent on the head only.
        skip_empty: False evaluates every sample (no occupancy mask, no early termination) at the
            same positions: the reference that the skipping is tested against.
    Returns: dict ``rgb`` [R, 3] (premultiplied head colour), ``alpha`` [R] (accumulated opacity),
        ``depth`` [R], ``reg`` scalar, ``n_evals`` number of field evaluations, and, when the field
        returns :attr:`pipeline.models.fields.FieldOutput.ambient` ([P] or [P, K]), ``ambient``
        [R] or [R, K]: those values composited with the colour's weights (RAD-NeRF's
        ``composite_rays_train`` of ``ambient.abs().sum(-1)``, nerf/renderer.py; ER-NeRF's
        ``composite_rays_train_triplane`` of its two attentions, nerf_triplane/renderer.py).
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
    amb = None
    amb_dim = 0
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
        mask = (occ.query(xf) if occ is not None and skip_empty
                else torch.ones(xf.shape[0], dtype=torch.bool, device=dev))
        sigma = torch.zeros(xf.shape[0], device=dev)
        col = torch.zeros(xf.shape[0], 3, device=dev)
        amb_s = None
        if mask.any():
            sel = torch.nonzero(mask).squeeze(-1)
            out = field_fn(xf[sel] / bound, d[idx_alive][:, None].expand(-1, k, -1).reshape(-1, 3)[sel])
            sigma = sigma.index_put((sel,), out.sigma.float())   # float(): a no-op unless under autocast
            col = col.index_put((sel,), out.rgb.float())
            reg = reg + out.reg
            if out.ambient is not None:
                a_s = out.ambient.float().reshape(sel.numel(), -1)
                amb_dim = a_s.shape[1] if out.ambient.dim() > 1 else 0
                amb_s = torch.zeros(xf.shape[0], a_s.shape[1], device=dev).index_put((sel,), a_s)
            n_reg += 1
            n_evals += sel.numel()
        alpha = 1 - torch.exp(-sigma.view(-1, k) * dl[:, None])                        # [A, k]
        tr_in = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], -1), -1)
        w = trans[idx_alive][:, None] * tr_in[:, :-1] * alpha                          # [A, k]
        rgb = rgb.index_add(0, idx_alive, (w[..., None] * col.view(-1, k, 3)).sum(1))
        acc = acc.index_add(0, idx_alive, w.sum(1))
        depth = depth.index_add(0, idx_alive, (w * t).sum(1))
        if amb_s is not None:
            amb = (torch.zeros(R, amb_s.shape[1], device=dev) if amb is None else amb).index_add(
                0, idx_alive, (w[..., None] * amb_s.view(-1, k, amb_s.shape[1])).sum(1))
        trans = trans.index_put((idx_alive,), trans[idx_alive] * tr_in[:, -1])
        if skip_empty:
            idx_alive = idx_alive[trans[idx_alive] > t_thresh]
    res = {"rgb": rgb, "alpha": acc, "depth": depth, "reg": reg / max(n_reg, 1), "n_evals": n_evals}
    if amb is not None:
        res["ambient"] = amb if amb_dim else amb[:, 0]
    return res
