"""The fast paths of the renderer against their reference paths on the same inputs
(docs/performance.md): the hash grid's dense-copy + grid_sample inference path, the occupancy
grid's per-ray span, and a frame of a small model trained in the test rendered with and without
empty-space skipping / early termination / fast encodings."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.models.encodings import HashGrid, TriPlaneHashGrid, volume_interpolation
from pipeline.models.occupancy import OccupancyGrid
from pipeline.models.volume import aabb_near_far

torch.set_num_threads(1)



@pytest.mark.parametrize("dims,levels,log2,finest,tol", [
    (3, 8, 15, 256, 5e-5),     # quick 3D grid (RAD-NeRF)
    (2, 8, 15, 256, 5e-5),     # quick 2D grids (tri-plane, audio coordinate, torso)
    (3, 4, 12, 128, 5e-5),     # smoke
    (2, 16, 19, 2048, 5e-4),   # paper 2D: finer levels, larger coordinate rounding
])
def test_volume_path_matches_reference(dims, levels, log2, finest, tol):
    """grid_sample over dense copies of the coarse levels (+ corner path for the rest) equals the
    reference [B, L, 2^D] formulation within ``tol`` absolute for table values in [-1, 1] (the
    only difference: float32 rounding of the normalised coordinate, growing with the level's
    resolution); off the render context the default path stays bit-identical."""
    torch.manual_seed(4)
    grid = HashGrid(dims, n_levels=levels, n_features=2, log2_hashmap_size=log2, base_resolution=16,
                    desired_resolution=finest)
    assert 0 < grid.volume_levels()
    with torch.no_grad():
        grid.embeddings.uniform_(-1, 1)
    x = torch.rand(4000, dims)
    x[0], x[1] = 0.0, 1.0
    ref = grid.reference_forward(x).detach()
    with torch.no_grad(), volume_interpolation():
        fast = grid(x)
    torch.testing.assert_close(fast, ref, rtol=0, atol=tol)
    with torch.no_grad():
        assert torch.equal(grid(x), ref)
    # the cached dense copies follow the tables (e.g. after an optimiser step)
    with torch.no_grad(), volume_interpolation():
        grid.embeddings.mul_(0.5)
        torch.testing.assert_close(grid(x), ref * 0.5, rtol=0, atol=tol)


def test_vertex_rows_are_the_corner_rows():
    """Every grid vertex's row (the dense copies' source) is the row corner_indices gives the same
    integer corner, dense and hashed levels."""
    grid = HashGrid(3, n_levels=4, n_features=2, log2_hashmap_size=10, base_resolution=4, desired_resolution=32)
    assert grid.dense.any() and not grid.dense.all()
    for lvl in range(grid.n_levels):
        r = int(grid.resolutions[lvl])
        rows = grid.vertex_rows(lvl).view(r + 1, r + 1, r + 1)        # [z, y, x]
        # a point just inside cell (i, j, k): corner 0 of that cell is the vertex (i, j, k)
        ijk = torch.tensor([[0, 0, 0], [r - 1, 0, 2], [1, r - 1, r - 1], [r - 1, r - 1, r - 1]])
        x = (ijk.float() + 0.25 - 0.5) / float(grid.scales[lvl])
        idx, _, _ = grid.corner_indices(x)
        want = rows[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
        assert torch.equal(idx[:, lvl, 0], want.long()), lvl
        want7 = rows[ijk[:, 2] + 1, ijk[:, 1] + 1, ijk[:, 0] + 1]          # corner 7: +1 on every axis
        assert torch.equal(idx[:, lvl, 7], want7.long()), lvl


def test_triplane_volume_path():
    torch.manual_seed(5)
    tri = TriPlaneHashGrid(backend="torch", n_levels=8, n_features=2, log2_hashmap_size=15, desired_resolution=256)
    with torch.no_grad():
        for g in tri.grids:
            g.embeddings.uniform_(-1, 1)
    x = torch.rand(999, 3)
    with torch.no_grad():
        ref = tri(x)
        with volume_interpolation():
            torch.testing.assert_close(tri(x), ref, rtol=0, atol=5e-5)


def test_ray_bounds_probe_cells_equal_cell_index():
    """The per-dimension probe arithmetic of ray_bounds gives exactly the spans of probing with
    cell_index/query on [R*K, 3] positions (its original formulation)."""
    torch.manual_seed(6)
    occ = OccupancyGrid(16, 1.0)
    occ.occupied.copy_(torch.rand(16 ** 3) < 0.2)
    o = torch.randn(3000, 3) * 0.3 + torch.tensor([0.0, 0.0, 3.0])
    d = torch.nn.functional.normalize(torch.randn(3000, 3) * 0.3 + torch.tensor([0.0, 0.0, -1.0]), dim=-1)
    near, far, _ = aabb_near_far(o, d, 1.0)
    steps = 32
    t = near[:, None] + (far - near).clamp(min=0)[:, None] * ((torch.arange(steps) + 0.5) / steps)[None]
    probe = occ.query((o[:, None] + t[..., None] * d[:, None]).reshape(-1, 3)).view(-1, steps)
    first = probe.float().argmax(1).float()
    last = (steps - 1) - probe.flip(1).float().argmax(1).float()
    cell = (far - near).clamp(min=0) / steps
    n2, f2, hit = occ.ray_bounds(o, d, near, far)
    assert torch.equal(hit, probe.any(1)) and 0 < int(hit.sum()) < len(hit)
    assert torch.equal(n2, torch.maximum(near, near + (first - 1) * cell))
    assert torch.equal(f2, torch.minimum(far, near + (last + 2) * cell))


@pytest.mark.parametrize("method", ["rad_nerf", "er_nerf", "aed_nerf"])
def test_shared_density_max_equals_per_condition(method):
    """The occupancy update's shared path (position encoding, and ER-NeRF's attention gates,
    computed once for all condition records) against the reference (``density`` per record, the
    records one after the other), quick-profile fields with random tables and weights: the
    maximum densities and the updated grid are equal bit for bit (tolerance 0)."""
    from pipeline.models.fields import HeadField
    from pipeline.models.methods import get_method
    from pipeline.train.profiles import resolve_config

    torch.manual_seed(3)
    cfg = resolve_config(method, {"profile": "quick", "device": "cpu"})
    field = get_method(method).field(cfg, cfg.audio_dim)
    assert field.shares_density_max
    with torch.no_grad():
        for name, p in field.named_parameters():
            p.uniform_(-1, 1) if "embeddings" in name or "params" in name else p.mul_(3)
    conds = [{"audio": torch.randn(cfg.audio_dim), "eye": torch.rand(1), "emotion": torch.randn(8),
              "head_up": torch.randn(3)} for _ in range(4)]
    x = torch.rand(5000, 3) * 2 - 1
    with torch.no_grad():
        fast = field.density_max(x, conds)
        ref = HeadField.density_max(field, x, conds)
        per = torch.stack([field.density(x, c) for c in conds])
    assert torch.equal(fast, ref) and torch.equal(fast, per.amax(0))
    assert (per.argmax(0)[:, None] == torch.arange(4)).any(0).sum() >= 2  # the maximum comes from several records
    grids = []
    for shared in (True, False):
        occ = OccupancyGrid(16, 1.0, threshold=1e30)  # occupied: above the mean density
        torch.manual_seed(5)
        occ.update(field.density, conds, chunk=1500, max_density_fn=field.density_max if shared else None)
        grids.append((occ.density.clone(), occ.occupied.clone()))
    assert torch.equal(grids[0][0], grids[1][0]) and torch.equal(grids[0][1], grids[1][1])
    assert 0 < grids[0][1].float().mean() < 1


@pytest.mark.parametrize("method,overrides", [("rad_nerf", {"head_up": False}),
                                              ("aed_nerf", {"emotion_in_color": True, "head_up": False})])
def test_folded_constants_equal_concatenation(method, overrides, monkeypatch):
    """The per-frame constant MLP inputs (audio code, eye, emotion code; AED-NeRF's colour input)
    folded into the first layers' biases against the reference that concatenates them to every
    sample, same field and inputs (quick profile, random tables and weights): densities, colours,
    the regulariser and every parameter's and the condition records' gradients agree within
    float32 rounding (relative 1e-5 for values, 1e-4 for gradients, which sum over 6000 samples)."""
    import pipeline.models.fields as F
    from pipeline.models.methods import get_method
    from pipeline.train.profiles import resolve_config

    torch.manual_seed(7)
    cfg = resolve_config(method, {"profile": "quick", "device": "cpu", "overrides": overrides})
    field = get_method(method).field(cfg, cfg.audio_dim)
    with torch.no_grad():
        for name, p in field.named_parameters():
            if "embeddings" in name or "params" in name:
                p.uniform_(-0.5, 0.5)
    cond0 = {"audio": torch.randn(cfg.audio_dim), "eye": torch.rand(1), "emotion": torch.randn(8)}
    x, d = torch.rand(6000, 3) * 2 - 1, torch.nn.functional.normalize(torch.randn(6000, 3), dim=-1)
    runs = []
    for fold in (True, False):
        monkeypatch.setattr(F, "FOLD_CONSTANTS", fold)
        field.zero_grad(set_to_none=True)
        cond = {k: v.clone().requires_grad_(True) for k, v in cond0.items()}
        out = field(x, d, cond)
        (out.sigma.clamp(max=50).mean() + out.rgb.square().mean() + out.reg).backward()
        grads = {n: p.grad.clone() for n, p in field.named_parameters() if p.grad is not None}
        grads.update({f"cond.{k}": v.grad.clone() for k, v in cond.items() if v.grad is not None})
        runs.append((out, grads))
    (fo, fg), (ro, rg) = runs
    torch.testing.assert_close(fo.sigma, ro.sigma, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fo.rgb, ro.rgb, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fo.reg, ro.reg, rtol=1e-5, atol=1e-7)
    assert set(fg) == set(rg) and {"cond.audio", "cond.eye"} <= set(fg)
    if method == "aed_nerf":
        assert "cond.emotion" in fg
    for name in rg:
        torch.testing.assert_close(fg[name], rg[name], rtol=1e-4, atol=1e-6, msg=name)
    # the folded path was taken: its sums run in another order, so some values differ in the last bits
    assert not (torch.equal(fo.sigma, ro.sigma) and torch.equal(fo.rgb, ro.rgb))


@pytest.mark.parametrize("method", ["rad_nerf", "er_nerf"])
def test_trained_frame_same_with_and_without_skipping(dev_dataset, tmp_path, method):
    """A small model trained here (real frames, occupancy updates on) renders a training pose:
    with skipping (occupied cells only, early termination) and the fast encodings, against every
    sample evaluated with the bit-exact encodings at the same sample positions. Tolerance: mean
    absolute difference 2e-3 and PSNR between the two images above 40 dB (a cell is pruned when
    its jittered probes under the sampled conditions stay below the threshold: a pixel whose ray
    crosses such a cell's denser part can differ by a few 1e-2); the skipping must evaluate
    fewer samples."""
    from pipeline.train.data import TalkingDataset
    from pipeline.train.profiles import resolve_config
    from pipeline.train.trainer import Stage, frame_conditions

    # smoke sizes; a strong head-mask opacity term and high rates empty the space around the head
    # within 200 steps (the quick profile takes a few hundred). With 120 steps the share of occupied
    # cells hung on the CPU's float rounding: below 0.8 on an Intel Xeon, 0.8755 for rad_nerf on a
    # 2-core AMD EPYC, where 200 steps leave 0.61 (rad_nerf) and 0.51 (er_nerf)
    cfg = resolve_config(method, {"profile": "smoke", "device": "cpu", "overrides": dict(
        resolution=32, head_steps=200, occ_warmup=8, occ_update_every=8, checkpoint_every=10 ** 6,
        lambda_head_alpha=1.0, lr_net=1e-2, lr_grid=3e-2)})
    data = TalkingDataset(dev_dataset, cfg.resolution, cfg.audio_feature, ("train",))
    st = Stage("head", cfg, data, Path(tmp_path) / method, None, None, torch.device("cpu"))
    with torch.enable_grad():
        st.run()
    model = st.model.eval()
    model.occ.density.zero_()          # a fresh estimate: 16 updates as the last ~250 steps of training
    for i in range(16):                # would make, without the decayed values of the first steps
        st.update_occupancy(torch.Generator().manual_seed(i))
    assert model.occ.occupied.float().mean() < 0.8, "the occupancy grid must prune for this test"
    tr = data.splits["train"]
    c2w = model.scene_pose(tr.poses[0])
    cond = frame_conditions(model, tr, 0, data.audio, torch.device("cpu"))
    fast = model.render_frame(c2w, cond, data.bc, fast=True, skip_empty=True)
    n_fast = model.last_frame_stats["samples"]
    ref = model.render_frame(c2w, cond, data.bc, fast=False, skip_empty=False)
    n_ref = model.last_frame_stats["samples"]
    assert n_fast < n_ref
    assert ref["head_alpha"].max() > 0.2, "the model must have learnt some opacity for this test"
    for key in ("rgb", "head_alpha"):
        diff = (fast[key] - ref[key]).abs()
        psnr = -10 * torch.log10((diff ** 2).mean().clamp(min=1e-12))
        assert diff.mean() < 2e-3 and psnr > 40, (key, float(diff.max()), float(diff.mean()), float(psnr))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_gpu_check_without_cuda_says_so(tmp_path):
    """The GPU check on a machine without CUDA measures nothing and says why (exit 2); the shell
    script refuses a run without the prepared CPU curves, naming the command that makes them."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "pipeline.train.gpu_check", "run", "--dir", str(tmp_path)],
                       cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no CUDA device visible" in r.stdout
    if not (root / "results" / "gpu_check" / "cpu_losses.json").is_file():
        r = subprocess.run(["bash", "scripts/gpu_check.sh", "run"], cwd=root, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2 and "gpu_check.sh prepare" in r.stderr


def test_gpu_check_quick_agreement_by_hand():
    """Step 4 of the GPU check: a CUDA run is one more seed, compared with the CPU seeds' mean and
    sample standard deviation. Values are the CPU seeds 0-2 of ``rad_nerf`` on the check's 100
    sample frames and the H200 run of 2026-12-04 (docs/performance.md, GPU check); by hand: mean
    (28.025 + 28.689 + 29.081) / 3 = 28.5983, squared deviations 0.3288, 0.0083, 0.2332, sum 0.5703,
    sd sqrt(0.5703 / 2) = 0.5340, band 3 x 0.5340 = 1.602, diff 29.75 - 28.598 = 1.152."""
    from pipeline.train.gpu_check import quick_agreement

    r = quick_agreement(29.75, [28.025, 28.689, 29.081])
    assert r["cpu_mean_db"] == pytest.approx(28.598, abs=1e-3)
    assert r["cpu_sd_db"] == pytest.approx(0.534, abs=1e-3)
    assert r["band_db"] == pytest.approx(1.602, abs=2e-3)
    assert r["diff_db"] == pytest.approx(1.152, abs=1e-3) and r["ok"]
    # outside the band below, and the floor of the band when the seeds agree to the digit
    assert not quick_agreement(26.9, [28.025, 28.689, 29.081])["ok"]
    tight = quick_agreement(30.3, [30.0, 30.0, 30.0])
    assert tight["band_db"] == 0.25 and not tight["ok"]
    with pytest.raises(ValueError, match="at least 2"):
        quick_agreement(30.0, [30.0])


def test_training_benchmark_runs_every_method_with_the_quick_profile(dev_dataset, capsys):
    """The throughput command of docs/training.md and docs/performance.md (``python -m
    pipeline.train.benchmark --data DATASET``) on a real dataset with the ``quick`` profile, whose
    models read the body pose and body flow as well as the audio and the eyes: one line per method
    with steps/s, rays/s = steps/s x the profile's 512 rays, and samples per ray within the
    profile's 24. (It once built its dataset without the configured conditions and stopped at
    ``KeyError: 'body_pose'``; it now loads through ``TalkingDataset.for_config`` as the trainer.)"""
    import re

    from pipeline.models.methods import model_conditions
    from pipeline.train.benchmark import main
    from pipeline.train.data import TalkingDataset
    from pipeline.train.profiles import resolve_config

    cfg = resolve_config("rad_nerf", {"profile": "quick"})
    data = TalkingDataset.for_config(dev_dataset, cfg)
    assert {"body_pose", "body_flow", "eye"} <= set(data.splits["train"].conds)
    assert set(data.splits["train"].conds) == set(model_conditions(cfg)) - {"audio"}

    threads = torch.get_num_threads()
    try:
        assert main(["--data", str(dev_dataset), "--steps", "3", "--threads", "1", "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "profile=quick" in ln]
    assert [ln.split()[0] for ln in lines] == ["rad_nerf", "er_nerf"]
    for ln in lines:
        m = re.search(r"([\d.]+) steps/s, (\d+) rays/s, ([\d.]+) samples/ray evaluated \(512 rays x 24 samples", ln)
        assert m, ln
        steps, rays, per_ray = float(m[1]), int(m[2]), float(m[3])
        assert steps > 0 and abs(rays - 512 * steps) <= 3, ln       # steps/s printed to 2 decimals
        assert 1 <= per_ray <= 24, ln
