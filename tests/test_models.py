"""Shapes of every model module, the renderer interface (load_trained / render / audio_window) and
a tiny model overfitting one real frame of the sample video."""
from __future__ import annotations

import math

import pytest
import numpy as np
import torch

from pipeline.common.errors import InputError
from pipeline.models.api import FrameInput
from pipeline.models.audio import AudioAttNet, AudioEncoder, AudioNet, audio_window
from pipeline.models.configs import make_config
from pipeline.models.methods.er_nerf import ERNeRFField
from pipeline.models.methods.rad_nerf import RadNeRFField
from pipeline.models.occupancy import OccupancyGrid
from pipeline.models.registry import build_model, checkpoint_payload, load_trained
from pipeline.models.torso import TorsoField
from pipeline.models.volume import aabb_near_far, get_rays, render_rays

torch.set_num_threads(1)



TINY = dict(levels=4, log2_hashmap=10, max_resolution=64, hidden=16, n_samples=8, occ_resolution=8,
            torso_levels=2, torso_resolution=32)
META = dict(H=12, W=10, focal=14.0, cx=5.0, cy=6.0, scene_scale=0.5, bound=1.0, audio_feature="mel",
            audio_window=8, audio_shape=[16, 80], profile="smoke")


@pytest.mark.parametrize("shape", [(16, 80), (16, 768), (2, 1024), (16, 29)])
def test_audio_path_every_feature_type(shape):
    win = torch.randn(8, *shape)
    assert AudioNet(shape[-1], 32)(win).shape == (8, 32)
    assert AudioAttNet(32, 8)(torch.randn(8, 32)).shape == (32,)
    assert AudioEncoder(shape[-1], 32, 8)(win).shape == (32,)


def test_audio_window_repeats_edges():
    feats = torch.arange(5.0)[:, None, None].expand(5, 2, 3)
    w = audio_window(feats, 0, 4)
    assert w.shape == (4, 2, 3)
    assert w[:, 0, 0].tolist() == [0, 0, 0, 1]
    assert audio_window(feats, 4, 4)[:, 0, 0].tolist() == [2, 3, 4, 4]


@pytest.mark.parametrize("field_cls, method", [(RadNeRFField, "rad_nerf"), (ERNeRFField, "er_nerf")])
def test_head_field_shapes(field_cls, method):
    cfg = make_config(method, TINY)
    f = field_cls(cfg, 32)
    x = torch.rand(50, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    cond = {"audio": torch.randn(32), "eye": torch.tensor([0.2])}
    out = f(x, d, cond)
    assert out.sigma.shape == (50,) and out.rgb.shape == (50, 3) and out.reg.ndim == 0
    assert (out.sigma >= 0).all() and (0 <= out.rgb).all() and (out.rgb <= 1).all()
    assert f.density(x, cond).shape == (50,)


def test_torso_shapes():
    t = TorsoField(make_config("rad_nerf", TINY))
    rgb, alpha, dxy = t(torch.rand(20, 2) * 2 - 1, torch.randn(12))
    assert rgb.shape == (20, 3) and alpha.shape == (20,) and dxy.shape == (20, 2)
    assert ((0 <= rgb) & (rgb <= 1)).all() and ((0 <= alpha) & (alpha <= 1)).all()


def test_rad_nerf_torso_pose_is_euler_and_translation():
    """RAD-NeRF's torso sees the pose as convert_poses does: pytorch3d's XYZ Euler angles of the
    c2w rotation (= scipy's intrinsic 'XYZ') and the c2w translation."""
    from scipy.spatial.transform import Rotation

    from pipeline.models.torso import euler_xyz

    angles = np.array([[0.3, -0.2, 0.1], [-1.0, 0.7, 2.5], [0.0, 1.2, -0.4]])
    rots = Rotation.from_euler("XYZ", angles).as_matrix()
    got = euler_xyz(torch.tensor(rots, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, angles, atol=1e-9)
    c2w = np.eye(4)[:3]
    c2w[:, :3] = rots[0]
    c2w[:, 3] = [0.1, -0.2, 3.0]
    vec = TorsoField.pose_vector(torch.tensor(c2w.reshape(-1), dtype=torch.float64)).numpy()
    np.testing.assert_allclose(vec, [0.3, -0.2, 0.1, 0.1, -0.2, 3.0], atol=1e-9)
    torch.manual_seed(0)
    t = TorsoField(make_config("rad_nerf", TINY))
    xy = torch.rand(30, 2) * 2 - 1
    pose = torch.tensor(c2w.reshape(-1), dtype=torch.float32)
    turned = pose.clone().reshape(3, 4)
    turned[:, :3] = torch.tensor(Rotation.from_euler("XYZ", [0.3, 0.2, 0.1]).as_matrix(), dtype=torch.float32)
    assert (t(xy, turned.reshape(-1))[0] - t(xy, pose)[0]).abs().max() > 1e-5   # the pose moves the torso


def test_er_nerf_adaptive_pose_torso():
    """ER-NeRF Sec. 3.4: the pose enters as the image-plane projection of 3 learnable anchors."""
    from pipeline.models.torso import AdaptivePoseTorso

    torch.manual_seed(0)
    t = AdaptivePoseTorso(make_config("er_nerf", TINY))
    c2w = torch.eye(4)
    c2w[2, 3] = 3.0                                       # camera 3 units in front of the head
    q = t.anchor_projection(c2w[:3, :4].reshape(-1))
    # anchor (0.05, 0.05, 0.5) -> camera (0.05, 0.05, -2.5) -> (x/z, y/z) = (-0.02, -0.02)
    torch.testing.assert_close(q[:2], torch.tensor([-0.02, -0.02]))
    torch.testing.assert_close(q[2:4], torch.tensor([0.2, 0.2]))      # (-0.5, -0.5, -2.5)
    xy = torch.rand(30, 2) * 2 - 1
    rgb, alpha, dxy = t(xy, c2w[:3, :4].reshape(-1))
    assert rgb.shape == (30, 3) and alpha.shape == (30,) and dxy.shape == (30, 2)
    turned = c2w.clone()
    turned[:3, :3] = torch.tensor([[0.8, 0.0, 0.6], [0.0, 1.0, 0.0], [-0.6, 0.0, 0.8]])
    rgb2, _, _ = t(xy, turned[:3, :4].reshape(-1))
    assert (rgb2 - rgb).abs().max() > 1e-5                 # the head pose moves the torso
    (rgb.sum() + alpha.sum()).backward()
    assert t.anchors.grad is not None and t.anchors.grad.abs().sum() > 0   # anchors are learned
    from pipeline.models.methods import get_method

    assert get_method("er_nerf").torso is AdaptivePoseTorso and get_method("rad_nerf").torso is TorsoField


def test_rays_and_aabb():
    c2w = torch.eye(4)
    c2w[2, 3] = 3.0
    o, d = get_rays(c2w, 10.0, 5.0, 5.0, torch.tensor([[4, 4], [0, 0]]))   # (row, col): (4,4) is centre-ish
    assert torch.allclose(d.norm(dim=-1), torch.ones(2))
    near, far, hit = aabb_near_far(o, d, 1.0)
    assert hit[0] and near[0] == pytest.approx(2.0, abs=0.01) and far[0] == pytest.approx(4.0, abs=0.01)


def test_render_rays_empty_space_is_transparent_and_opaque_saturates():
    from pipeline.models.fields import FieldOutput

    o = torch.tensor([[0.0, 0.0, 3.0]]).expand(4, 3)
    d = torch.tensor([[0.0, 0.0, -1.0]]).expand(4, 3)
    empty = lambda x, dd: FieldOutput(torch.zeros(x.shape[0]), torch.ones(x.shape[0], 3), torch.zeros(()))  # noqa: E731
    dense = lambda x, dd: FieldOutput(torch.full((x.shape[0],), 50.0), torch.ones(x.shape[0], 3) * 0.3, torch.zeros(()))  # noqa: E731
    assert render_rays(empty, o, d, 1.0, 16)["alpha"].abs().max() < 1e-6
    out = render_rays(dense, o, d, 1.0, 64)
    assert torch.allclose(out["alpha"], torch.ones(4), atol=1e-3)
    assert torch.allclose(out["rgb"], torch.full((4, 3), 0.3), atol=1e-3)
    # early termination: far fewer than 64 samples per ray were evaluated
    assert out["n_evals"] < 4 * 64 // 2


def test_render_rays_composites_a_fields_ambient_value_with_the_colour_weights():
    """:attr:`FieldOutput.ambient` is composited as the colour is (RAD-NeRF's
    ``composite_rays_train`` of |a|): an opaque field with ambient 0.7 gives 0.7 per ray, as its
    colour 0.3 gives 0.3; a density whose opacity is 1 - exp(-sigma * length) over the box gives
    that opacity times 0.7 (hand-computed); a field without it adds no ``ambient`` key; [P, 2]
    values are composited per channel."""
    from pipeline.models.fields import FieldOutput

    o = torch.tensor([[0.0, 0.0, 3.0]]).expand(4, 3)
    d = torch.tensor([[0.0, 0.0, -1.0]]).expand(4, 3)

    def field(sigma):
        return lambda x, dd: FieldOutput(torch.full((x.shape[0],), sigma), torch.ones(x.shape[0], 3) * 0.3,
                                         torch.zeros(()), torch.full((x.shape[0],), 0.7))
    out = render_rays(field(50.0), o, d, 1.0, 64)
    assert torch.allclose(out["ambient"], torch.full((4,), 0.7), atol=1e-3)
    thin = render_rays(field(0.2), o, d, 1.0, 64, perturb=False)
    alpha = 1 - math.exp(-0.2 * 2.0)                       # the ray crosses the box [-1, 1] in z: length 2
    assert thin["alpha"] == pytest.approx(torch.full((4,), alpha), abs=1e-4)
    assert thin["ambient"] == pytest.approx(torch.full((4,), 0.7 * alpha), abs=1e-4)
    plain = lambda x, dd: FieldOutput(torch.full((x.shape[0],), 50.0), torch.ones(x.shape[0], 3), torch.zeros(()))  # noqa: E731
    assert "ambient" not in render_rays(plain, o, d, 1.0, 16)
    # [P, K] values (ER-NeRF's audio and eye attention) are composited channel by channel
    two = lambda x, dd: FieldOutput(torch.full((x.shape[0],), 0.2), torch.ones(x.shape[0], 3) * 0.3,  # noqa: E731
                                    torch.zeros(()), torch.tensor([0.7, 0.2]).expand(x.shape[0], 2))
    both = render_rays(two, o, d, 1.0, 64, perturb=False)["ambient"]
    assert both.shape == (4, 2)
    assert both == pytest.approx(torch.tensor([0.7 * alpha, 0.2 * alpha]).expand(4, 2), abs=1e-4)


def test_occupancy_grid_keeps_max_over_conditions():
    occ = OccupancyGrid(8, 1.0, threshold=0.5)
    # condition 0 fills x<0, condition 1 fills x>0: the union stays occupied (max over audio)
    fn = lambda x, c: ((x[:, 0] < 0) if c == 0 else (x[:, 0] > 0)).float() * 10  # noqa: E731
    for _ in range(60):
        frac = occ.update(fn, [0, 1], decay=0.5)
    assert frac == pytest.approx(1.0)
    for _ in range(60):
        frac = occ.update(fn, [0], decay=0.5)
    assert frac == pytest.approx(0.5)
    assert occ.query(torch.tensor([[-0.5, 0, 0], [0.5, 0, 0]])).tolist() == [True, False]


def test_partial_occupancy_update_visits_random_and_dense_cells_only():
    """torch-ngp's partial update: res^3/4 random cells plus as many random cells of positive
    density (with replacement) are re-estimated and decayed, every other cell keeps its value;
    the full update visits every cell. Hand-made grid: 2000 of 4096 cells at density 10, the
    field 5 everywhere, decay 0.95: a visited dense cell becomes 9.5, a visited empty one 5."""
    torch.manual_seed(0)
    occ = OccupancyGrid(16, 1.0)
    dense = torch.randperm(4096)[:2000]
    occ.density[dense] = 10.0
    five = lambda x, c: torch.full((x.shape[0],), 5.0)  # noqa: E731
    occ.update(five, [0], decay=0.95, partial=True)
    d = occ.density
    vals = {round(float(v), 4) for v in d.unique()}
    assert vals == {0.0, 5.0, 9.5, 10.0}
    visited = ((d == 5.0) | (d == 9.5)).float().mean().item()
    # 1024 uniform picks visit 1 - exp(-1/4) = 22 % of the cells; the 1024 dense picks add about
    # 40 % of the dense cells not already visited
    assert 0.3 < visited < 0.45, visited
    assert (d == 10.0).sum() > 500 and (d == 9.5).sum() > 500
    occ.update(five, [0], decay=0.95)                        # full: every cell
    assert set(round(float(v), 4) for v in occ.density.unique()) <= {5.0, 9.025, 9.5}


@pytest.mark.parametrize("method", ["rad_nerf", "er_nerf"])
def test_load_trained_and_render_shapes(tmp_path, method):
    torch.manual_seed(0)
    model = build_model(make_config(method, TINY), dict(META))
    torch.save(checkpoint_payload(model, "head", {"head": {"steps": 0, "seconds": 0}}), tmp_path / "head.pt")
    head = load_trained(tmp_path)
    assert head.method == method and head.meta["H"] == 12
    feats = torch.randn(30, 16, 80)
    win = head.audio_window(feats, 0)
    assert win.shape == (8, 16, 80)
    c2w = torch.eye(4)
    c2w[2, 3] = 4.0
    eye = {"eye": torch.tensor([0.5])}
    out = head.render(FrameInput(c2w, win, torch.rand(12, 10, 3), eye))
    assert out["rgb"].shape == (12, 10, 3) and out["head_rgb"].shape == (12, 10, 3)
    assert out["head_alpha"].shape == (12, 10) and out["torso_alpha"].shape == (12, 10)
    no_torso = head.render(FrameInput(c2w, win, torch.rand(12, 10, 3), eye), torso=False)
    assert no_torso["torso_alpha"].abs().max() == 0


def test_load_trained_errors(tmp_path):
    with pytest.raises(InputError, match="no trained checkpoint"):
        load_trained(tmp_path)
    model = build_model(make_config("er_nerf", TINY), dict(META))
    payload = checkpoint_payload(model, "head", {})
    payload["method"] = "nope_nerf"
    torch.save(payload, tmp_path / "head.pt")
    with pytest.raises(InputError, match="unknown method 'nope_nerf'"):
        load_trained(tmp_path)


def test_checkpoint_of_older_model_is_one_clear_error(tmp_path):
    """An er_nerf checkpoint from before its adaptive-pose torso (no torso.anchors) is refused with
    the file named, not a state-dict traceback."""
    model = build_model(make_config("er_nerf", TINY), dict(META))
    payload = checkpoint_payload(model, "head", {})
    del payload["model"]["torso.anchors"]
    torch.save(payload, tmp_path / "head.pt")
    with pytest.raises(InputError, match=r"head.pt: does not match the current er_nerf model .*torso.anchors"):
        load_trained(tmp_path)


def test_unknown_method_config():
    with pytest.raises(InputError, match="unknown method 'foo'"):
        make_config("foo")
    with pytest.raises(InputError, match="unknown training option"):
        make_config("rad_nerf", {"not_a_field": 1})


@pytest.mark.parametrize("method", ["rad_nerf", "er_nerf"])
def test_tiny_model_overfits_one_frame(dev_dataset, method):
    """One real frame, fixed budget of 200 steps: head-ray PSNR rises by more than 10 dB."""
    from pipeline.train.data import TalkingDataset
    from pipeline.train.trainer import Stage, psnr_from_mse

    cfg = make_config(method, dict(TINY, resolution=48, levels=8, log2_hashmap=12, max_resolution=128, hidden=32,
                                   n_samples=24, occ_warmup=10 ** 6, rays_per_step=384, head_steps=200,
                                   checkpoint_every=10 ** 6, lr_final=0.3, device="cpu"))
    data = TalkingDataset(dev_dataset, cfg.resolution, "mel", ("train",))
    tr = data.splits["train"]
    for name in ("poses", "aud_ids", "gt", "torso", "head", "mouth"):   # keep frame 0 only
        setattr(tr, name, getattr(tr, name)[:1])
    tr.conds = {n: v[:1] for n, v in tr.conds.items()}
    tr.ids = tr.ids[:1]
    st = Stage("head", cfg, data, dev_dataset.parent / f"overfit_{method}", None, None, torch.device("cpu"))

    def frame_psnr() -> float:
        with torch.no_grad():
            c2w, cond = st.frame_inputs(tr, 0)
            pix = st.all_pixels()
            o, d = get_rays(c2w, data.focal, data.cx, data.cy, pix)
            pix = pix[aabb_near_far(o, d, 1.0)[2]]
            gt, torso, _ = st.pixels_of(0, pix)
            out = st.model.render_head_rays(c2w, pix, cond, perturb=False)
            pred = out["rgb"] + (1 - out["alpha"][:, None]) * st.bg_behind_head(torso, pix)
            return psnr_from_mse(((pred - gt) ** 2).mean().item())

    before = frame_psnr()
    st.run()
    after = frame_psnr()
    assert math.isfinite(after) and after - before > 10.0, (before, after)


def test_audio_norm_stats_by_hand():
    """Per-channel mean and spread over every time step of every training row (population std,
    plus the 1e-3 floor), hand-computed on a [2, 2, 2] array."""
    from pipeline.models.model import audio_norm_stats

    f = np.array([[[1.0, -8.0], [3.0, -8.0]], [[5.0, -8.0], [7.0, -8.0]]])   # channel 1 constant
    stats = audio_norm_stats(f)
    assert stats["mean"] == pytest.approx([4.0, -8.0])
    assert stats["std"] == pytest.approx([math.sqrt(5.0) + 1e-3, 1e-3])       # var of 1,3,5,7 = 5
    with pytest.raises(ValueError, match=r"\[N, T, C\]"):
        audio_norm_stats(np.zeros((3, 80)))


@pytest.mark.parametrize("method", ["rad_nerf", "er_nerf"])
def test_audio_code_reads_standardised_windows(method):
    """With ``meta["audio_norm"]`` the AudioNet sees ``(win - mean) / std`` (through
    ``audio_code`` and ``encode``); a model without it (``audio_norm`` off, or a checkpoint from
    before the option) sees the raw window, as before."""
    torch.manual_seed(0)
    mean, std = torch.linspace(-11.0, 2.0, 80), torch.linspace(0.5, 3.0, 80)
    win = mean + std * torch.randn(8, 16, 80)
    meta = dict(META, audio_norm={"mean": mean.tolist(), "std": std.tolist()})
    model = build_model(make_config(method, TINY), meta).eval()
    with torch.no_grad():
        code = model.audio_code(win)
        assert torch.allclose(code, model.audio((win - mean) / std), atol=1e-6)
        assert torch.allclose(model.encode({"audio": win, "eye": 0.5})["audio"], code)
        assert not torch.allclose(code, model.audio(win), atol=1e-3)
        raw = build_model(make_config(method, TINY), dict(META)).eval()
        raw.load_state_dict(model.state_dict())
        assert torch.allclose(raw.audio_code(win), model.audio(win))


def test_trainer_stores_the_training_rows_audio_statistics(dev_dataset, tmp_path):
    """The head stage stores the per-channel statistics of the training frames' audio rows (real
    log-mel features of the sample); standardised by them the training windows have per-channel
    mean 0 and spread 1 (but for the 1e-3 floor). ``audio_norm: false`` stores none."""
    from pipeline.models.model import audio_norm_stats
    from pipeline.train.data import TalkingDataset
    from pipeline.train.profiles import resolve_config
    from pipeline.train.trainer import Stage

    for on in (True, False):
        cfg = resolve_config("rad_nerf", {"profile": "smoke", "device": "cpu", "overrides": {"audio_norm": on}})
        data = TalkingDataset.for_config(dev_dataset, cfg)
        st = Stage("head", cfg, data, tmp_path / str(on), None, None, torch.device("cpu"))
        if not on:
            assert "audio_norm" not in st.model.meta
            continue
        rows = data.audio[data.splits["train"].aud_ids]
        assert st.model.meta["audio_norm"] == audio_norm_stats(rows.numpy())
        flat = rows.reshape(-1, rows.shape[-1]).double()
        assert flat.mean(0).abs().max() > 0.3                  # the raw features are not centred
        z = st.model.standardise_audio(rows).reshape(-1, rows.shape[-1]).double()
        assert z.mean(0).abs().max() < 1e-4
        s = flat.std(0, unbiased=False)                         # spread 1, but for the 1e-3 floor
        assert torch.allclose(z.std(0, unbiased=False), s / (s + 1e-3), atol=1e-4)
