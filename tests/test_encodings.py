"""Hash-grid encodings: the vectorised PyTorch grid against a hand-written per-level loop with the
same (tiny-cuda-nn) hashing, its hand-written backward against autograd, the tinycudann backend
against the PyTorch one, and the tri-plane encoding."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.models.encodings import HASH_PRIMES, HashGrid, TriPlaneHashGrid, make_hash_grid, tcnn_available

torch.set_num_threads(1)


def naive_hash_grid(grid: HashGrid, x: torch.Tensor) -> torch.Tensor:
    """One point, one level, one corner at a time, python integers (tiny-cuda-nn's grid_index)."""
    D, L, F = grid.n_dims, grid.n_levels, grid.n_features
    T = 1 << grid.log2_hashmap_size
    out = torch.zeros(x.shape[0], L * F, dtype=torch.float64)
    offset = 0
    for lvl in range(L):
        scale = math.exp2(lvl * math.log2(grid.per_level_scale)) * grid.base_resolution - 1.0
        res = math.ceil(scale) + 1
        size = min((res ** D + 7) // 8 * 8, T)
        for b in range(x.shape[0]):
            pos = [min(max(float(v), 0.0), 1.0) * scale + 0.5 for v in x[b]]
            base = [math.floor(p) for p in pos]
            frac = [p - f for p, f in zip(pos, base)]
            for corner in range(1 << D):
                c = [base[d] + ((corner >> d) & 1) for d in range(D)]
                w = 1.0
                for d in range(D):
                    w *= frac[d] if (corner >> d) & 1 else 1.0 - frac[d]
                if res ** D <= size:                     # dense level
                    idx, stride = 0, 1
                    for d in range(D):
                        idx += c[d] * stride
                        stride *= res
                else:                                     # coherent prime hash, uint32
                    idx = 0
                    for d in range(D):
                        idx ^= (c[d] * HASH_PRIMES[d]) & 0xFFFFFFFF
                idx %= size
                out[b, lvl * F:(lvl + 1) * F] += w * grid.embeddings[offset + idx].double()
        offset += size
    return out


@pytest.mark.parametrize("dims", [2, 3])
def test_hash_grid_matches_naive_loop(dims):
    torch.manual_seed(0)
    grid = HashGrid(dims, n_levels=6, n_features=2, log2_hashmap_size=8, base_resolution=4, desired_resolution=96)
    assert grid.dense.any() and not grid.dense.all(), "test must cover dense and hashed levels"
    with torch.no_grad():
        grid.embeddings.uniform_(-1, 1)
    x = torch.rand(40, dims)
    x[0] = 0.0
    x[1] = 1.0
    got = grid(x).double()
    ref = naive_hash_grid(grid, x)
    assert got.shape == (40, 12)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_hash_grid_backward_matches_autograd(dims):
    torch.manual_seed(1)
    grid = HashGrid(dims, n_levels=5, n_features=2, log2_hashmap_size=9, base_resolution=4, desired_resolution=64).double()
    with torch.no_grad():
        grid.embeddings.uniform_(-1, 1)
    x = (torch.rand(30, dims, dtype=torch.float64) * 0.98 + 0.01).requires_grad_(True)
    up = torch.randn(30, 10, dtype=torch.float64)
    g_x, g_e = torch.autograd.grad((grid(x) * up).sum(), (x, grid.embeddings))
    idx, w, _ = grid.corner_indices(x)                   # autograd through gather + weights
    ref = (w[..., None] * grid.embeddings[idx]).sum(2).reshape(30, -1)
    r_x, r_e = torch.autograd.grad((ref * up).sum(), (x, grid.embeddings))
    torch.testing.assert_close(g_x, r_x)
    torch.testing.assert_close(g_e, r_e)


@pytest.mark.parametrize("dims,levels,log2,finest", [(3, 8, 15, 256), (2, 8, 15, 256), (3, 4, 12, 128), (2, 16, 19, 2048)])
def test_fast_forward_is_the_reference_bit_for_bit(dims, levels, log2, finest):
    """The corner-by-corner forward (inference and training) equals the [B, L, 2^D] reference
    formulation exactly (tolerance 0: same hash, same weight products, same summation order), for
    the quick, smoke and paper-like settings, with dense and hashed levels, at the box edges."""
    torch.manual_seed(2)
    grid = HashGrid(dims, n_levels=levels, n_features=2, log2_hashmap_size=log2, base_resolution=16,
                    desired_resolution=finest)
    assert grid.dense.any() and not grid.dense.all()
    with torch.no_grad():
        grid.embeddings.uniform_(-1, 1)
    x = torch.rand(5003, dims)
    x[0], x[1], x[2] = 0.0, 1.0, 1.0 - 1e-7
    ref = grid.reference_forward(x).detach()
    with torch.no_grad():
        fast = grid(x)                                   # inference path (nothing kept)
    assert torch.equal(fast, ref)
    train = grid(x)                                      # autograd path (keeps the backward's tensors)
    assert train.requires_grad and torch.equal(train.detach(), ref)


def test_fast_backward_equals_autograd_of_reference():
    """The hand-written backward behind the fast forward: table gradient bit-identical to autograd
    through the reference formulation (same index_add order), input gradient within 1e-5."""
    torch.manual_seed(3)
    grid = HashGrid(2, n_levels=6, n_features=2, log2_hashmap_size=9, base_resolution=4, desired_resolution=64)
    with torch.no_grad():
        grid.embeddings.uniform_(-1, 1)
    x = (torch.rand(700, 2) * 0.98 + 0.01).requires_grad_(True)
    up = torch.randn(700, grid.output_dim)
    g_x, g_e = torch.autograd.grad((grid(x) * up).sum(), (x, grid.embeddings))
    r_x, r_e = torch.autograd.grad((grid.reference_forward(x) * up).sum(), (x, grid.embeddings))
    torch.testing.assert_close(g_e, r_e, rtol=0, atol=1e-6)
    torch.testing.assert_close(g_x, r_x, rtol=1e-5, atol=1e-5)


def test_triplane_concatenates_three_planes():
    torch.manual_seed(0)
    tri = TriPlaneHashGrid(backend="torch", n_levels=4, n_features=2, log2_hashmap_size=10, desired_resolution=64)
    x = torch.rand(17, 3)
    y = tri(x)
    assert y.shape == (17, 24) and tri.output_dim == 24
    torch.testing.assert_close(y[:, :8], tri.grids[0](x[:, [0, 1]]))
    torch.testing.assert_close(y[:, 8:16], tri.grids[1](x[:, [1, 2]]))
    torch.testing.assert_close(y[:, 16:], tri.grids[2](x[:, [0, 2]]))


def test_auto_backend_is_torch_without_cuda():
    g = make_hash_grid(3, n_levels=2, log2_hashmap_size=8)
    assert isinstance(g, HashGrid) == (not tcnn_available())


@pytest.mark.skipif(not tcnn_available(), reason="tinycudann and/or CUDA not available on this machine")
def test_tcnn_backend_matches_torch():  # pragma: no cover (GPU machines only)
    kw = dict(n_levels=8, n_features=2, log2_hashmap_size=12, base_resolution=16, desired_resolution=256)
    ref = HashGrid(3, **kw).cuda()
    fast = make_hash_grid(3, backend="tcnn", **kw).cuda()
    with torch.no_grad():
        ref.embeddings.uniform_(-1, 1)
        fast.enc.params.copy_(ref.embeddings.reshape(-1))
    x = torch.rand(1000, 3, device="cuda")
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-3, atol=1e-3)
