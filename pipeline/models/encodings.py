"""Input encodings: multiresolution hash grid (Instant-NGP), tri-plane hash grid (ER-NeRF),
spherical-harmonics direction encoding.

The pure-PyTorch hash grid follows the indexing of tiny-cuda-nn / torch-ngp's ``gridencoder``
exactly (level scale, +0.5 offset, dense levels while they fit, coherent prime hash, table sizes
rounded up to a multiple of 8), so its parameters can be copied into a tinycudann encoding and
back. :func:`make_hash_grid` returns the tinycudann backend when ``tinycudann`` is importable
and the module lives on CUDA, else the PyTorch one (same interface: [B, D] in [0, 1] ->
[B, L*F]).

Source: Müller et al. 2022, "Instant Neural Graphics Primitives with a Multiresolution Hash
Encoding", Sec. 3 (Eq. 3-4); Li et al. 2023 "ER-NeRF" Sec. 3.2 (tri-plane hash representation).
"""
from __future__ import annotations

import contextlib
import math
import os

import torch
from torch import nn

#: primes of the coherent spatial hash (tiny-cuda-nn ``coherent_prime_hash``; the first is 1)
HASH_PRIMES = (1, 2654435761, 805459861, 3674653429)


def level_geometry(n_levels: int, base_resolution: int, per_level_scale: float,
                   log2_hashmap_size: int, n_dims: int) -> tuple[list[float], list[int], list[int]]:
    """Per-level scale, resolution and table size, as tiny-cuda-nn computes them.

    Returns:
        ``scales`` (``base * s**l - 1``), ``resolutions`` (``ceil(scale) + 1``) and ``sizes``
        (``min(ceil8(resolution**D), 2**log2_hashmap_size)``), each of length ``n_levels``.
    """
    scales, res, sizes = [], [], []
    for lvl in range(n_levels):
        scale = math.exp2(lvl * math.log2(per_level_scale)) * base_resolution - 1.0
        r = int(math.ceil(scale)) + 1
        dense = r ** n_dims
        dense = (dense + 7) // 8 * 8
        scales.append(scale)
        res.append(r)
        sizes.append(min(dense, 1 << log2_hashmap_size))
    return scales, res, sizes


def _combine_corners(vals: list[torch.Tensor], op) -> torch.Tensor:
    """Combine per-dimension corner values [..., 2] into [..., 2^D] with ``op`` (add, xor, mul);
    output index c = sum_d bit_d * 2^d, i.e. corner c takes ``vals[d][..., (c >> d) & 1]``."""
    out = vals[-1]
    for d in range(len(vals) - 2, -1, -1):
        out = op(out[..., :, None], vals[d][..., None, :]).flatten(-2)
    return out


class HashGrid(nn.Module):
    """Multiresolution hash encoding, pure PyTorch, vectorised over levels and batch.

    Args:
        n_dims: input dimension D (2 or 3).
        n_levels: L, number of levels.
        n_features: F, features per level.
        log2_hashmap_size: log2 of the largest table size T.
        base_resolution: coarsest resolution N_min.
        desired_resolution: finest resolution N_max (sets the per-level scale
            ``exp(ln(N_max/N_min)/(L-1))``, Instant-NGP Eq. 3).
    Input ``x``: [B, D] in [0, 1] (clamped). Output: [B, L*F] float32, level-major.
    """

    def __init__(self, n_dims: int, n_levels: int = 16, n_features: int = 2, log2_hashmap_size: int = 19,
                 base_resolution: int = 16, desired_resolution: int = 2048):
        super().__init__()
        if n_dims > len(HASH_PRIMES):
            raise ValueError(f"hash grid supports at most {len(HASH_PRIMES)} input dims, got {n_dims}")
        self.n_dims, self.n_levels, self.n_features = n_dims, n_levels, n_features
        self.log2_hashmap_size, self.base_resolution = log2_hashmap_size, base_resolution
        self.per_level_scale = (math.exp(math.log(desired_resolution / base_resolution) / (n_levels - 1))
                                if n_levels > 1 else 1.0)
        scales, res, sizes = level_geometry(n_levels, base_resolution, self.per_level_scale,
                                            log2_hashmap_size, n_dims)
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32), persistent=False)
        self.register_buffer("resolutions", torch.tensor(res, dtype=torch.int64), persistent=False)
        self.register_buffer("sizes", torch.tensor(sizes, dtype=torch.int64), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets[:-1], dtype=torch.int64), persistent=False)
        # dense while resolution**D fits in the level's table (tcnn: stride <= hashmap_size)
        self.register_buffer("dense", torch.tensor([r ** n_dims <= s for r, s in zip(res, sizes)]),
                             persistent=False)
        self.register_buffer("primes", torch.tensor(HASH_PRIMES[:n_dims], dtype=torch.int64), persistent=False)
        is_dense = [r ** n_dims <= s for r, s in zip(res, sizes)]
        self.n_dense = sum(is_dense)
        if is_dense != [True] * self.n_dense + [False] * (n_levels - self.n_dense):
            raise ValueError("dense levels must precede hashed levels (resolutions must not decrease)")
        if any(s != (1 << log2_hashmap_size) for s, d in zip(sizes, is_dense) if not d):
            raise ValueError("hashed levels must use the full 2**log2_hashmap_size table")
        self.hash_mask = (1 << log2_hashmap_size) - 1
        strides = [[r ** d for d in range(n_dims)] for r in res[: self.n_dense]]
        self.register_buffer("dense_strides", torch.tensor(strides, dtype=torch.int32).reshape(-1, n_dims),
                             persistent=False)
        self.register_buffer("sizes32", torch.tensor(sizes, dtype=torch.int32), persistent=False)
        self.register_buffer("offsets32", torch.tensor(offsets[:-1], dtype=torch.int32), persistent=False)
        # the primes as int32 with the same low 32 bits (two's complement)
        self.primes32 = [p - (1 << 32) if p >= (1 << 31) else p for p in HASH_PRIMES[:n_dims]]
        corners = torch.tensor([[(c >> d) & 1 for d in range(n_dims)] for c in range(1 << n_dims)],
                               dtype=torch.int64)
        self.register_buffer("corners", corners, persistent=False)  # [2^D, D]
        self.embeddings = nn.Parameter(torch.empty(offsets[-1], n_features).uniform_(-1e-4, 1e-4))

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.n_features

    def corner_indices(self, x: torch.Tensor):
        """Table rows and trilinear weights of the 2^D cell corners at every level.

        Args: x [B, D] in [0, 1] (clamped).
        Returns: ``idx`` [B, L, 2^D] int64 rows of :attr:`embeddings`, ``w`` [B, L, 2^D]
        interpolation weights, ``frac`` [B, L, D] position inside the cell, ``scales`` [L].
        """
        x = x.clamp(0.0, 1.0)
        pos = x[:, None, :] * self.scales[None, :, None] + 0.5           # [B, L, D]
        grid = torch.floor(pos)
        frac = pos - grid
        g = grid.to(torch.int32)
        nd, n_dims = self.n_dense, self.n_dims
        # Per dimension, the two cell-corner coordinates [B, L, 2]; the 2^D corners are built by
        # broadcasting (corner c has bit d = its offset along dim d), never materialising
        # [B, L, 2^D, D]. int32 arithmetic wraps like tiny-cuda-nn's uint32 hash: the low bits
        # that the table mask keeps are identical.
        two = [torch.stack((g[..., d], g[..., d] + 1), -1) for d in range(n_dims)]
        parts = []
        if nd:  # dense levels (a prefix: resolution grows with the level): row-major index
            vals = [two[d][:, :nd] * self.dense_strides[None, :, d, None] for d in range(n_dims)]
            parts.append(_combine_corners(vals, torch.add) % self.sizes32[None, :nd, None])
        if nd < self.n_levels:  # hashed levels: the table size is 2**log2_hashmap_size
            vals = [two[d][:, nd:] * self.primes32[d] for d in range(n_dims)]
            parts.append(_combine_corners(vals, torch.bitwise_xor) & self.hash_mask)
        idx = (parts[0] if len(parts) == 1 else torch.cat(parts, 1)).long() + self.offsets[None, :, None]
        w = _combine_corners([torch.stack((1.0 - frac[..., d], frac[..., d]), -1) for d in range(n_dims)],
                             torch.mul)
        return idx, w, frac

    def corner_terms(self, x: torch.Tensor, lo: int = 0):
        """The 2^D cell corners one at a time (the fast path of :meth:`forward`), for levels
        ``lo`` .. L-1.

        Args: x [B, D] in [0, 1] (clamped); lo: first level.
        Returns: ``frac`` [B, L', D] (L' = L - lo) and a generator of ``(idx, w)`` per corner
        ``c`` = 0 .. 2^D - 1: ``idx`` [B, L'] int32 rows of :attr:`embeddings`, ``w`` [B, L'] the
        corner's interpolation weight. Equal, element for element, to
        ``corner_indices(x)[0][:, lo:, c]`` and ``[1][:, lo:, c]`` (the same integer hash; weights
        multiplied in the same order), with [B, L'] temporaries instead of [B, L, 2^D] ones.
        """
        x = x.clamp(0.0, 1.0)
        pos = x[:, None, :] * self.scales[None, lo:, None] + 0.5         # [B, L', D]
        grid = torch.floor(pos)
        frac = pos - grid
        return frac, self._corner_iter(grid.to(torch.int32), frac, lo)

    def _corner_iter(self, g: torch.Tensor, frac: torch.Tensor, lo: int):
        nd, n_dims, n_l = max(self.n_dense - lo, 0), self.n_dims, self.n_levels - lo
        strides, sizes, offsets = self.dense_strides[lo:], self.sizes32[lo:lo + nd], self.offsets32[lo:]
        dense, hashed, wts = [], [], []
        for d in range(n_dims):       # per dimension and corner bit: the [B, L'] products, once
            pair = (g[..., d], g[..., d] + 1)
            dense.append([p[:, :nd] * strides[:, d] for p in pair] if nd else None)
            hashed.append([p[:, nd:] * self.primes32[d] for p in pair] if nd < n_l else None)
            wts.append((1.0 - frac[..., d], frac[..., d]))
        top = n_dims - 1
        for c in range(1 << n_dims):
            bit = [(c >> d) & 1 for d in range(n_dims)]
            idx = torch.empty(g.shape[0], n_l, dtype=torch.int32, device=g.device)
            if nd:            # dense levels: row-major index (wraps like corner_indices)
                s = dense[top][bit[top]]
                for d in range(top - 1, -1, -1):
                    s = s + dense[d][bit[d]]
                idx[:, :nd] = torch.remainder(s, sizes)
            if nd < n_l:      # hashed levels: xor of coordinate x prime (int32 wraps as uint32)
                h = hashed[top][bit[top]]
                for d in range(top - 1, -1, -1):
                    h = h ^ hashed[d][bit[d]]
                idx[:, nd:] = h & self.hash_mask
            idx += offsets
            w = wts[top][bit[top]]    # (w_{D-1} * ...) * w_0: the order of _combine_corners
            for d in range(top - 1, -1, -1):
                w = w * wts[d][bit[d]]
            yield idx, w

    def vertex_rows(self, level: int) -> torch.Tensor:
        """Table row of every grid vertex of ``level``: [(r+1)^D] int32 (r = the level's
        resolution; vertex coordinates 0..r per dimension, the last dimension slowest), the rows
        that :meth:`corner_indices` gives a cell corner at those coordinates (dense index or
        hash, wrapped the same way)."""
        r = int(self.resolutions[level])
        ax = torch.arange(r + 1, dtype=torch.int32, device=self.embeddings.device)
        coords = torch.meshgrid(*([ax] * self.n_dims), indexing="ij")  # coords[k]: dimension D-1-k
        coords = [c.reshape(-1) for c in reversed(coords)]            # coords[d]: dimension d
        if level < self.n_dense:
            s = coords[0] * int(self.dense_strides[level, 0])
            for d in range(1, self.n_dims):
                s = s + coords[d] * int(self.dense_strides[level, d])
            rows = torch.remainder(s, int(self.sizes32[level]))
        else:
            h = coords[0] * self.primes32[0]
            for d in range(1, self.n_dims):
                h = h ^ (coords[d] * self.primes32[d])
            rows = h & self.hash_mask
        return rows + int(self.offsets32[level])

    #: levels with at most this many vertices are interpolated from a dense copy of the level
    #: (``grid_sample``) in inference: 2^20 vertices = 8 MiB at F = 2. Larger copies were slower
    #: than the corner path over the (cache-resident) hash table on this CPU: per 175k samples of
    #: the quick 3D grid 0.070 s at 2^20, 0.091 s at 2^21, 0.139 s with every level dense.
    max_volume_vertices = 1 << 20

    def volume_levels(self) -> int:
        """Number of leading levels small enough for the dense-copy path (:meth:`volumes`)."""
        n = 0
        for r in self.resolutions.tolist():
            if (r + 1) ** self.n_dims > self.max_volume_vertices:
                break
            n += 1
        return n

    def volumes(self) -> list[torch.Tensor]:
        """Dense copies [1, F, r+1, ...] of the first :meth:`volume_levels` levels' tables at
        their vertices (inference only; rebuilt when the embeddings change)."""
        emb = self.embeddings
        key = (emb.data_ptr(), emb._version, emb.device, emb.dtype)
        cache = getattr(self, "_volume_cache", None)
        if cache is None or cache[0] != key:
            vols = []
            for lvl in range(self.volume_levels()):
                r1 = int(self.resolutions[lvl]) + 1
                rows = emb.detach().index_select(0, self.vertex_rows(lvl))     # [(r+1)^D, F]
                vols.append(rows.t().reshape(1, self.n_features, *([r1] * self.n_dims)).contiguous())
            cache = (key, vols)
            self._volume_cache = cache
        return cache[1]

    @torch.no_grad()
    def fast_inference(self, x: torch.Tensor) -> torch.Tensor:
        """The encoding without gradients, levels up to :meth:`volume_levels` by
        ``torch.nn.functional.grid_sample`` (one fused bi/trilinear kernel per level, align_corners:
        vertex i at coordinate i) over :meth:`volumes`, the rest corner by corner. Equal to
        :meth:`reference_forward` up to float32 rounding of the coordinate (tests: 5e-5 absolute
        for table values in [-1, 1] at the quick settings). Returns [B, L*F]."""
        nv = self.volume_levels()
        if nv == 0:
            return _interpolate(self, self.embeddings, x, False)[0].reshape(x.shape[0], -1)
        x = x.clamp(0.0, 1.0)
        b, n_f, n_d = x.shape[0], self.n_features, self.n_dims
        out = torch.empty(b, self.n_levels, n_f, dtype=x.dtype, device=x.device)
        for lvl, vol in enumerate(self.volumes()):
            pos = x * self.scales[lvl] + 0.5                                   # [B, D] vertex units
            u = pos * (2.0 / int(self.resolutions[lvl])) - 1.0
            val = torch.nn.functional.grid_sample(vol, u.view(1, b, *([1] * (n_d - 1)), n_d), mode="bilinear",
                                                  padding_mode="border", align_corners=True)
            out[:, lvl] = val.reshape(n_f, b).t()
        if nv < self.n_levels:
            out[:, nv:] = _interpolate(self, self.embeddings, x, False, lo=nv)[0]
        return out.reshape(b, -1)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The encoding through :meth:`corner_indices` and one [B, L, 2^D, F] gather (the
        original formulation; tests compare :meth:`forward` with it). Differentiable by
        autograd. Returns [B, L*F]."""
        idx, w, _ = self.corner_indices(x)
        return (w[..., None] * self.embeddings[idx]).sum(2).reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.embeddings.requires_grad):
            return _HashGridFn.apply(x, self.embeddings, self)
        if _VOLUME_PATH[0]:           # renders: dense copies + grid_sample (float rounding differs)
            return self.fast_inference(x)
        with torch.no_grad():         # other inference (occupancy updates): bit-identical, nothing kept
            return _interpolate(self, self.embeddings, x, False)[0].reshape(x.shape[0], -1)


_VOLUME_PATH = [False]


@contextlib.contextmanager
def volume_interpolation(enabled: bool = True):
    """Within this context, gradient-free :class:`HashGrid` calls use
    :meth:`HashGrid.fast_inference` (dense copies of the coarse levels + ``grid_sample``; equal
    to the reference up to float32 rounding of the coordinate). Rendering enables it; training,
    including its occupancy updates, stays on the bit-identical corner path."""
    old = _VOLUME_PATH[0]
    _VOLUME_PATH[0] = enabled
    try:
        yield
    finally:
        _VOLUME_PATH[0] = old


def _interpolate(grid: HashGrid, emb: torch.Tensor, x: torch.Tensor, keep: bool, lo: int = 0,
                 keep_feats: bool = True):
    """Sum over the cell corners of weight x table row, corner by corner.

    The sum runs in the order of PyTorch's CPU reduction over a dimension of size 2^D (four
    accumulators over ``c mod 4``, then added left to right), so that the result is
    bit-identical to ``(w[..., None] * emb[idx]).sum(2)`` of :meth:`HashGrid.reference_forward`
    on the CPU (tests/test_encodings.py checks it).

    ``lo``: first level (``out`` covers levels lo .. L-1). Returns ``out`` [B, L-lo, F] and, with
    ``keep``, the stacked ``idx`` [B, L, C] (int32), ``w`` [B, L, C], ``feats`` [B, L, C, F] (None
    unless ``keep_feats``: only the input gradient needs them) and ``frac`` [B, L, D] that the
    backward uses (else Nones).
    """
    frac, corners = grid.corner_terms(x, lo)
    b, n_l, f = x.shape[0], grid.n_levels - lo, emb.shape[1]
    acc: list[torch.Tensor] = []
    kept: list[tuple] = []
    for c, (idx, w) in enumerate(corners):
        feat = emb.index_select(0, idx.view(-1)).view(b, n_l, f)
        term = w[..., None] * feat
        if c < 4:
            acc.append(term)
        else:
            acc[c % 4] = acc[c % 4] + term
        if keep:
            kept.append((idx, w, feat if keep_feats else None))
    out = acc[0]
    for a in acc[1:]:
        out = out + a
    if not keep:
        return out, None, None, None, None
    idx = torch.stack([k[0] for k in kept], -1)
    w = torch.stack([k[1] for k in kept], -1)
    feats = torch.stack([k[2] for k in kept], 2) if keep_feats else None
    return out, idx, w, feats, frac


class _HashGridFn(torch.autograd.Function):
    """Hash-grid interpolation with a hand-written backward: one ``index_add`` into the tables and
    the analytic gradient w.r.t. the input (needed by RAD-NeRF's audio coordinate and the torso
    deformation). Equivalent to autograd through :meth:`HashGrid.corner_indices` + gather.

    The forward runs corner by corner (:func:`_interpolate`: [B, L] temporaries, int32 rows, one
    ``index_select`` per corner; about 3.5x less time than the [B, L, 2^D] formulation on a CPU)
    and keeps the tensors of the backward only when a gradient is needed."""

    @staticmethod
    def forward(ctx, x, emb, grid: HashGrid):
        keep = any(ctx.needs_input_grad[:2])
        with torch.no_grad():                                             # out [B, L, F]
            out, idx, w, feats, frac = _interpolate(grid, emb, x, keep, keep_feats=ctx.needs_input_grad[0])
        ctx.grid = grid
        if keep:
            ctx.save_for_backward(idx, w, frac, feats, x)
        return out.reshape(x.shape[0], -1)

    @staticmethod
    def backward(ctx, g):
        idx, w, frac, feats, x = ctx.saved_tensors
        grid = ctx.grid
        b, n_l, n_c = w.shape
        # contiguous: the incoming gradient is often a column slice of a concatenation's gradient, and
        # the broadcast products below are 2-4x slower on such a strided view
        g = g.reshape(b, n_l, -1).contiguous()                            # [B, L, F]
        g_emb = None
        if ctx.needs_input_grad[1]:
            # one 1-D index_add per feature column, straight into the column of the [T, F]
            # gradient (a strided view): the same products w * g added to each row in the same
            # (b, l, c) order as one index_add of [B*L*C, F] rows (bit-identical), without the
            # [B, L, C, F] broadcast product, the row-wise scatter and a transposing copy
            flat = idx.reshape(-1)
            g_emb = torch.zeros(grid.embeddings.shape[0], g.shape[-1], dtype=g.dtype, device=g.device)
            for f in range(g.shape[-1]):
                g_emb[:, f].index_add_(0, flat, (w * g[:, :, f, None]).reshape(-1))
        g_x = None
        if ctx.needs_input_grad[0]:
            n_d = grid.n_dims
            if g.shape[-1] == 2:      # dOut/dw [B, L, C]: the sum over F = 2 is one addition
                gf = feats[..., 0] * g[:, :, None, 0] + feats[..., 1] * g[:, :, None, 1]
            else:
                gf = (feats * g[:, :, None]).sum(-1)
            # dw_c/dfrac_d = sign * prod_{e != d} (frac_e or 1 - frac_e), built per corner from
            # [B, L] factors (the products and signs of the where/cat/prod formulation, exactly)
            t = [(1.0 - frac[..., e], frac[..., e]) for e in range(n_d)]
            cols = []
            for d in range(n_d):
                per_corner = []
                for c in range(n_c):
                    bit = [(c >> e) & 1 for e in range(n_d)]
                    others = None
                    for e in range(n_d):
                        if e != d:
                            others = t[e][bit[e]] if others is None else others * t[e][bit[e]]
                    per_corner.append(others if bit[d] else -others)
                cols.append((gf * torch.stack(per_corner, -1)).sum(-1))  # [B, L]
            g_x = (torch.stack(cols, -1) * grid.scales[None, :, None]).sum(1)  # [B, D]
            inside = (x > 0) & (x < 1)
            g_x = g_x * inside
        return g_x, g_emb, None


class TcnnHashGrid(nn.Module):
    """The same encoding with tiny-cuda-nn's fused CUDA kernel (``HashGrid`` interface).

    Parameters are laid out like :class:`HashGrid.embeddings` (levels concatenated, [size, F]),
    so ``tcnn.params.view(-1, F)`` equals ``HashGrid.embeddings`` for the same settings.
    """

    def __init__(self, n_dims: int, n_levels: int = 16, n_features: int = 2, log2_hashmap_size: int = 19,
                 base_resolution: int = 16, desired_resolution: int = 2048):
        super().__init__()
        import tinycudann as tcnn  # noqa: PLC0415 (optional backend)

        self.n_dims, self.n_levels, self.n_features = n_dims, n_levels, n_features
        self.per_level_scale = (math.exp(math.log(desired_resolution / base_resolution) / (n_levels - 1))
                                if n_levels > 1 else 1.0)
        self.enc = tcnn.Encoding(n_input_dims=n_dims, encoding_config={
            "otype": "HashGrid", "n_levels": n_levels, "n_features_per_level": n_features,
            "log2_hashmap_size": log2_hashmap_size, "base_resolution": base_resolution,
            "per_level_scale": self.per_level_scale}, dtype=torch.float32)

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.n_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x.clamp(0.0, 1.0).contiguous()).float()


def tcnn_available() -> bool:
    """True when tinycudann imports and CUDA is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401, PLC0415
    except Exception:  # noqa: BLE001 (any import failure means: not usable)
        return False
    return True


def make_hash_grid(n_dims: int, backend: str = "auto", **kw) -> nn.Module:
    """A hash grid: tinycudann when ``backend`` is ``auto`` and :func:`tcnn_available`, or
    ``tcnn``; else the PyTorch :class:`HashGrid`. Keyword arguments as :class:`HashGrid`.
    The environment variable ``TALKING_NERF_HASH_BACKEND`` (``torch`` or ``tcnn``) replaces
    ``auto`` (the GPU check compares the PyTorch grid on CUDA with the CPU)."""
    if backend == "auto":
        backend = os.environ.get("TALKING_NERF_HASH_BACKEND", "auto")
    if backend == "tcnn" or (backend == "auto" and tcnn_available()):
        return TcnnHashGrid(n_dims, **kw)
    return HashGrid(n_dims, **kw)


class TriPlaneHashGrid(nn.Module):
    """Tri-plane hash encoding (ER-NeRF Sec. 3.2): three 2D hash grids on the xy, yz and xz
    planes; the features are concatenated.

    Input ``x``: [B, 3] in [0, 1]. Output: [B, 3*L*F].
    """

    PLANES = ((0, 1), (1, 2), (0, 2))

    def __init__(self, backend: str = "auto", **kw):
        super().__init__()
        self.grids = nn.ModuleList([make_hash_grid(2, backend, **kw) for _ in self.PLANES])

    @property
    def output_dim(self) -> int:
        return sum(g.output_dim for g in self.grids)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([g(x[:, list(p)]) for g, p in zip(self.grids, self.PLANES)], -1)


class SHEncoding(nn.Module):
    """Real spherical harmonics of a unit direction up to degree 2 (9 values), the view-direction
    encoding of Instant-NGP/torch-ngp (constants from tcnn's ``SphericalHarmonics``).

    Input: [B, 3] unit vectors. Output: [B, 9].
    """

    output_dim = 9

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        x, y, z = d.unbind(-1)
        return torch.stack([
            torch.full_like(x, 0.28209479177387814),
            -0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x,
            1.0925484305920792 * x * y, -1.0925484305920792 * y * z,
            0.94617469575755997 * z * z - 0.31539156525251999,
            -1.0925484305920792 * x * z, 0.54627421529603959 * (x * x - y * y)], -1)
