"""NeRF-3DTalker (pipeline/models/methods/nerf3dtalker.py) and its Table I metrics.

Fast tests on constructed inputs (codebook, AU accuracy, lip landmark distance, the 3D prior
record); slow ones on the sample identity's dataset with the Surrey Face Model fitted from
``../shared/models/sfm`` (the copy tests use, as tests/test_threedmm.py): the speech branch against
the mean coefficients on the validation split, and the expression input's effect on a render.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.common.errors import InputError
from pipeline.metrics.aue import AUS, LIP_AUS, au_accuracy, au_presence
from pipeline.metrics.lips import LIP_POINTS, lip_lmd
from pipeline.models.methods import nerf3dtalker as N
from tests.conftest import PROJECT_ROOT

SFM = PROJECT_ROOT.parent / "shared" / "models" / "sfm"


# ------------------------------------------------------------------ codebook
def test_codebook_quantises_to_nearest_entries():
    vq = N.VectorQuantizer(4, 2, beta=0.25)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [-3.0, -3.0]]))
    z = torch.tensor([[0.4, 0.1], [0.6, -0.2], [0.1, 1.2], [-2.0, -2.5], [5.0, 5.0]], requires_grad=True)
    zq, idx, loss = vq(z)
    assert idx.tolist() == [0, 1, 2, 3, 2]       # [5, 5]: |(-5,-3)|^2 = 34 < |(-4,-5)|^2 = 41 < ...
    assert torch.allclose(zq.detach(), vq.codebook.detach()[[0, 1, 2, 3, 2]])
    expected = ((z.detach() - vq.codebook.detach()[idx]) ** 2).mean() * 1.25
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    zq.sum().backward()                           # straight-through: identity gradient to z
    assert torch.equal(z.grad, torch.ones_like(z))
    # the Standardized Space's five AU codebooks and the global one pick their nearest entries too
    cfg = N.NeRF3DTalkerConfig(hidden=16)
    space = N.StandardizedSpace(cfg)
    e = torch.randn(N.EXPR_DIM)
    z_au, q_au, idx_au, q_g, idx_g, _ = space.quantize(e)
    for k, book in enumerate(space.au_codebooks):
        d = ((book.codebook - z_au[k]) ** 2).sum(-1)
        # the straight-through output z + (q - z).detach() equals the entry up to float32 rounding
        # of z (|z| ~ 1: a few 1e-8), so compare with an absolute tolerance above that rounding
        assert int(idx_au[k]) == int(d.argmin())
        assert torch.allclose(q_au[k], book.codebook[idx_au[k]], rtol=0.0, atol=1e-6)
    zg = space.global_encoder(e)
    assert int(idx_g) == int(((space.global_codebook.codebook - zg) ** 2).sum(-1).argmin())
    assert len(space.au_codebooks) == len(N.LIP_AUS) == 5
    assert space.au_codebooks[0].codebook.shape == (cfg.au_codebook_size, cfg.au_latent_dim)
    assert space.global_codebook.codebook.shape == (cfg.global_codebook_size, cfg.global_latent_dim)


# ------------------------------------------------------------------ Table I metrics
def test_au_accuracy_matches_hand_count():
    pred = np.zeros((2, len(AUS)), bool)
    gt = np.zeros((2, len(AUS)), bool)
    col = {a: AUS.index(a) for a in LIP_AUS}
    for a, p, g in zip(LIP_AUS, [1, 0, 1, 0, 1], [1, 1, 1, 0, 0]):   # frame 0: 3 of 5 agree
        pred[0, col[a]], gt[0, col[a]] = p, g
    gt[1, col["AU26"]] = True                                           # frame 1: 4 of 5 agree
    pred[:, AUS.index("AU45")] = True                                   # not a lip AU: ignored
    assert au_accuracy(pred, gt) == pytest.approx(7 / 10)
    assert au_accuracy(gt, gt) == 1.0
    inten = np.zeros((1, len(AUS)))
    inten[0, col["AU10"]], inten[0, col["AU25"]] = 1.0, 0.99
    pres = au_presence(inten)
    assert pres[0, col["AU10"]] and not pres[0, col["AU25"]]
    with pytest.raises(ValueError):
        au_accuracy(pred[:, :5], gt[:, :5])


def test_lip_landmark_distance_matches_hand_value():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 512, (478, 2))
    assert len(LIP_POINTS) == 40
    assert lip_lmd(gt + [7.0, -3.0], gt) == pytest.approx(0.0, abs=1e-9)   # translation is removed
    pred = gt.copy()
    pred[LIP_POINTS[5]] += [3.0, 4.0]
    # moved point: |v - v/40| = 5 * 39/40; the other 39: |v/40| = 5/40; mean over 40 points
    assert float(lip_lmd(pred, gt)) == pytest.approx((5 * 39 / 40 + 39 * 5 / 40) / 40)
    other = gt.copy()
    other[1] += [50.0, 50.0]                                            # vertex 1 is not a lip point
    assert 1 not in LIP_POINTS and float(lip_lmd(other, gt)) == 0.0
    both = lip_lmd(np.stack([gt, pred]), np.stack([gt, gt]))
    assert both.shape == (2,) and both[0] == 0.0


# ------------------------------------------------------------------ the 3D prior record
def _write_prior_files(root, n=3, status="ok"):
    root.mkdir(parents=True, exist_ok=True)
    if status == "ok":
        np.savez(root / "threedmm.npz", shape=np.arange(63, dtype=np.float32),
                 expression=np.full((n, 6), 0.5, np.float32), status=np.array("ok"))
    else:
        np.savez(root / "threedmm.npz", status=np.array("n/a"), reason=np.array("Surrey Face Model files not found"))
    np.save(root / "blendshapes.npy", np.tile(np.linspace(0, 1, 52, dtype=np.float32), (n, 1)))
    df = pd.DataFrame({"frame": np.arange(1, n + 1), **{f"{a}_r": np.full(n, k + 1.0) for k, a in enumerate(LIP_AUS)},
                       "AU45_r": np.zeros(n)})
    df.to_csv(root / "au.csv", index=False)
    return root / "threedmm.npz"


def test_prior3d_record_layout_and_refusals(tmp_path):
    rec = N.load_prior3d(_write_prior_files(tmp_path / "ok"), 3)
    assert rec.shape == (3, N.PRIOR_DIM) and N.PRIOR_DIM == 63 + 6 + 52 + 5
    assert np.array_equal(rec[1, N.ID_SLICE], np.arange(63))
    assert np.allclose(rec[:, N.EXPR_SLICE][:, :6], 0.5)
    assert np.allclose(rec[0, N.EXPR_SLICE][6:], np.linspace(0, 1, 52))
    assert rec[0, N.AU_SLICE].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(InputError, match="no 3DMM fit, nerf3dtalker needs it .Surrey Face Model files not found"):
        N.load_prior3d(_write_prior_files(tmp_path / "na", status="n/a"), 3)
    bad = _write_prior_files(tmp_path / "short")
    np.save(tmp_path / "short" / "blendshapes.npy", np.zeros((2, 52), np.float32))
    with pytest.raises(InputError, match=r"blendshapes\.npy: expected \[3, 52\]"):
        N.load_prior3d(bad, 3)


# ------------------------------------------------------------------ on the sample identity
@pytest.fixture
def one_thread():
    """Small networks on a shared 2-core machine: one torch thread is many times faster than two."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def sample_3dmm(sample_workdir, tmp_path_factory):
    """The sample dataset with threedmm.npz fitted from ../shared/models/sfm."""
    if not (SFM / "sfm_shape_3448.bin").is_file():
        pytest.skip(f"{SFM} not found: the SFM files are beside the clone in ../shared/models/sfm")
    ds = tmp_path_factory.mktemp("n3d") / "German"
    shutil.copytree(sample_workdir / "results" / "data" / "German", ds)
    wd = ds.parent / "weights"
    shutil.copytree(SFM, wd / "sfm")
    subprocess.run([sys.executable, "-m", "pipeline.preprocess.threedmm", "--frames", str(ds / "ori_imgs"),
                    "--landmarks", str(ds / "landmarks.json"), "--out", str(ds / "threedmm.npz"),
                    "--report", str(ds / "threedmm.json"), "--weights-dir", str(wd), "--cfg", "{}"],
                   check=True, cwd=PROJECT_ROOT, capture_output=True)
    return ds


def _model_and_data(ds, resolution, **overrides):
    from pipeline.models.registry import build_model
    from pipeline.train.data import TalkingDataset
    from pipeline.train.profiles import resolve_config

    cfg = resolve_config("nerf3dtalker", {"profile": "smoke", "device": "cpu",
                                          "overrides": {"resolution": resolution, **overrides}})
    data = TalkingDataset(ds, resolution, "mel", ("train", "val"), conditions=N.SPEC.conditions, method="nerf3dtalker")
    torch.manual_seed(0)
    meta = {"H": data.H, "W": data.W, "focal": data.focal, "cx": data.cx, "cy": data.cy,
            "scene_scale": data.scene_scale(cfg.head_box), "bound": 1.0, "audio_feature": "mel",
            "audio_window": cfg.audio_window, "audio_shape": list(data.audio.shape[1:]), "profile": "smoke"}
    return build_model(cfg, meta), data


@pytest.mark.slow
def test_speech_branch_beats_mean_coefficients_on_val(sample_3dmm, one_thread, capsys):
    """L_exp of the speech branch trained on the sample's training split, on the validation split,
    against the training split's mean coefficients (both printed)."""
    model, data = _model_and_data(sample_3dmm, 32)
    losses = N.fit_speech_branch(model, data, steps=600)
    err = N.speech_errors(model, data, "val")
    with capsys.disabled():
        print(f"\nspeech branch L_exp on val ({err['frames']} frames): {err['speech_mse']:.5f}; "
              f"mean coefficients: {err['mean_mse']:.5f} (ratio {err['speech_mse'] / err['mean_mse']:.3f})")
    assert np.mean(losses[-50:]) < np.mean(losses[:50])
    assert err["speech_mse"] < 0.95 * err["mean_mse"]


@pytest.mark.slow
def test_expression_coefficients_change_the_mouth_not_the_background(sample_3dmm, one_thread, tmp_path, capsys):
    """A head stage trained on the sample (64 px, 500 steps); the self-driven validation frames
    rendered with the tracked coefficients and with the jaw/mouth blendshapes (the articulated
    coefficients) of the most different training frame: the mouth box (68-point mouth landmarks)
    changes in every frame, the background (parsing label 0) hardly does: in every frame less than a
    fifth of the mouth box's mean change. (Since the audio reaches the head, ``audio_norm``,
    docs/quality.md cause 19, the audio carries part of the mouth, so on a frame whose audio
    already says its mouth the coefficients move it less: frame 3's mouth box 0.0066 against a
    background 0.0017, the three frames' mouth boxes 0.0184 on average.)"""
    from PIL import Image

    from pipeline.models.registry import load_checkpoint
    from pipeline.preprocess.parsing import read_parsing
    from pipeline.train.data import TalkingDataset
    from pipeline.train.profiles import resolve_config
    from pipeline.train.trainer import frame_conditions, train_stage

    cfg = resolve_config("nerf3dtalker", {"profile": "smoke", "device": "cpu", "overrides": {
        "resolution": 64, "head_steps": 500, "lambda_head_alpha": 0.05, "occ_warmup": 64}})
    train_stage("head", cfg, sample_3dmm, tmp_path, tmp_path / "head.pt", weights_dir=tmp_path / "none")
    model, _ = load_checkpoint(tmp_path / "head.pt")
    model.head.drive = "tracked"
    data = TalkingDataset(sample_3dmm, 64, "mel", ("train", "val"), conditions=N.SPEC.conditions, method="nerf3dtalker")
    val, tr = data.splits["val"], data.splits["train"]
    mouth_cols = slice(N.EXPR_SLICE.start + N.SFM_EXPR_DIM + 25, N.EXPR_SLICE.stop)   # jawForward .. mouthUpperUpRight
    stats = []
    for k in (3, 14, 25):
        with torch.no_grad():
            cond = frame_conditions(model, val, k, data.audio, "cpu")
            c2w = model.scene_pose(val.poses[k])
            a = model.render_frame(c2w, cond, data.bc)["rgb"]
            rec = cond["prior3d"].clone()
            far = int(((tr.conds["prior3d"][:, mouth_cols] - rec[mouth_cols]) ** 2).sum(1).argmax())
            rec[mouth_cols] = tr.conds["prior3d"][far, mouth_cols]
            b = model.render_frame(c2w, {**cond, "prior3d": rec}, data.bc)["rgb"]
        diff = (a - b).abs().mean(-1).numpy()
        par = np.asarray(Image.fromarray(read_parsing(sample_3dmm / "parsing" / f"{val.ids[k]}.png"))
                         .resize((data.W, data.H), Image.NEAREST))
        r0, r1, c0, c1 = val.mouth[k].tolist()
        mouth = np.zeros(diff.shape, bool)
        mouth[r0:r1, c0:c1] = True
        stats.append((diff[mouth].mean(), diff[(par == 1) & ~mouth].mean(), diff[par == 0].mean()))
    with capsys.disabled():
        for s in stats:
            print(f"\nmean |change| mouth box {s[0]:.4f}, rest of the head {s[1]:.4f}, background {s[2]:.5f}")
    mouth_mean = np.mean([s[0] for s in stats])
    for m, _, bg in stats:
        assert m > 0.004 and bg < mouth_mean / 5
    assert np.mean([s[0] for s in stats]) > np.mean([s[1] for s in stats])


@pytest.mark.slow
def test_nerf3dtalker_through_snakemake(tmp_path):
    """train.methods [nerf3dtalker] (smoke profile) on the sample with its 3DMM fit: trains, renders
    the self-driven, a cross-driven and the free-view tests, and appears in the nerf3dtalker_table1
    tables with its AU accuracy and lip distance (or their n/a reasons) and in the free-view table
    (about 3 minutes on 2 cores, the dataset included)."""
    import json

    from tests.conftest import make_workdir, run_snakemake

    if not (SFM / "sfm_shape_3448.bin").is_file():
        pytest.skip(f"{SFM} not found: the SFM files are beside the clone in ../shared/models/sfm")
    import yaml

    first_test, audio = next(iter(yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())["render"]
                                  ["cross_driven"].items()))
    wd = make_workdir(tmp_path / "wd", {
        "train": {"methods": ["nerf3dtalker"], "profile": "smoke"},
        "preprocess": {"threedmm": {"model_dir": str(SFM)}},
        "render": {"cross_driven": {first_test: str(PROJECT_ROOT / audio)},
                   "free_view": {"enabled": True, "frames": 2, "views": {"yaw+15": [15, 0]}}},
        "metrics": {"self_driven": ["ssim", "au_acc", "lmd_lips"], "cross_driven": ["cpbd"]},
        "report": {"preset": "nerf3dtalker_table1"}, "oneshot": {"driving_method": None},
        "weights_dir": str(tmp_path / "no_weights")})
    run_snakemake(wd, "results/tables/self_driven.md", "results/tables/free_view.md", timeout=1800)
    assert (wd / "results" / "models" / "nerf3dtalker" / "German" / "torso.pt").is_file()
    for test in ("self", first_test):
        man = json.loads((wd / "results" / "renders" / "nerf3dtalker" / "German" / test / "manifest.json").read_text())
        assert man["method"] == "nerf3dtalker"
    m = json.loads((wd / "results" / "metrics" / "nerf3dtalker" / "German" / "self.json").read_text())["metrics"]
    # a smoke-profile head may show no detectable face: n/a with that reason; measured values are a
    # fraction of (frame, AU) pairs in [0, 1] and a lip distance a smoke render cannot bring to 0
    au, lips = m["au_acc"], m["lmd_lips"]
    assert (au["value"] is not None and 0.0 <= au["value"] <= 1.0) or "no face" in au["na_reason"], au
    assert (lips["value"] is not None and lips["value"] > 0.0) or "no face" in lips["na_reason"], lips
    # the table's AU acc. cell is that value in percent, or n/a with a footnote that gives its reason
    lines = (wd / "results" / "tables" / "self_driven.md").read_text().splitlines()
    header = [c.strip() for c in next(ln for ln in lines if ln.startswith("| Method |")).strip().strip("|").split("|")]
    row = [c.strip() for c in next(ln for ln in lines if ln.startswith("| nerf3dtalker |")).strip().strip("|").split("|")]
    cell = row[next(i for i, c in enumerate(header) if c.startswith("AU acc."))]
    if au["value"] is None:
        note = re.fullmatch(r"n/a \((\d+)\)", cell)
        assert note and any(ln.startswith(f"({note.group(1)}) ") and au["na_reason"] in ln for ln in lines), cell
    else:
        assert float(cell.strip("*").split()[0]) == pytest.approx(100 * au["value"], abs=0.051), cell
    fv = (wd / "results" / "tables" / "free_view.md").read_text()
    assert "| nerf3dtalker | German | front |" in fv and "| nerf3dtalker | German | yaw+15 | 15 | 0 |" in fv


def test_rad_nerfs_audio_coordinate_loss_reaches_the_fused_expression(sample_3dmm, one_thread, tmp_path):
    """``lambda_amb_face`` on ``nerf3dtalker`` (RAD-NeRF's loss, inherited from ``rad_nerf``): its
    audio coordinate, driven by the fused expression / style feature, is composited per ray and the
    loss is ``lambda x progress x mean(composited |a| x outside the lower-face box)`` over the step's
    rays, computed here from the rays; its gradient reaches the fusion MLP (the expression path, not
    only the coordinate's own MLP). A sync-loss callable adds its weighted value on top; with
    ``lambda_amb_face`` 0 the rays carry no composited value."""
    from pipeline.train.data import TalkingDataset
    from pipeline.train.profiles import resolve_config
    from pipeline.train.trainer import Stage

    def stage(overrides, folder):
        cfg = resolve_config("nerf3dtalker", {"profile": "smoke", "device": "cpu",
                                              "overrides": {"rays_per_step": 256, **overrides}})
        data = TalkingDataset.for_config(sample_3dmm, cfg)
        return Stage("head", cfg, data, tmp_path / folder, None, None, torch.device("cpu"))

    def losses(st, k=3):
        seen = []
        head = st.model.head
        ray_loss = head.ray_loss
        head.ray_loss = lambda out, stage: seen.append((out, ray_loss(out, stage))) or seen[-1][1]
        st.step = st.total // 2
        st.loss_step(k, torch.Generator().manual_seed(1))
        head.ray_loss = ray_loss
        return seen[0]

    st = stage({"lambda_amb_face": 0.1, "lambda_amb": 0.0}, "on")
    out, loss = losses(st)
    assert out["progress"] == pytest.approx(0.5)
    assert out["ambient"].shape == out["alpha"].shape == (256,)
    outside = ~out["face_mask"]
    assert 0 < int(outside.sum()) < 256
    expected = 0.1 * 0.5 * (out["ambient"] * outside).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and loss.item() > 0
    loss.backward()
    fuse = [p.grad for p in st.model.head.disentangle.fusion.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in fuse)

    st.model.head.sync_loss = lambda rays, cond: rays["alpha"].sum() * 0 + 2.0
    st.model.head.cfg.lambda_sync = 0.25
    out, loss = losses(st)
    assert loss.item() == pytest.approx((0.1 * 0.5 * (out["ambient"] * ~out["face_mask"]).mean() + 0.5).item(),
                                        rel=1e-6)

    st0 = stage({}, "off")
    out0, loss0 = losses(st0)
    assert "ambient" not in out0 and loss0 is None
