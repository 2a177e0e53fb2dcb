"""LivePortrait backend (pipeline/oneshot/liveportrait.py): loading code exercised with stand-in
weights the test writes in the real files' layout, every module's input/output shapes for a
512x512 photo, the formulas against hand values, and missing weights -> the fetch command."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.oneshot import liveportrait as lp
from tests.conftest import PROJECT_ROOT, require_shared


def _write_stand_in(weights_dir, engine):
    """Save ``engine``'s (random) parameters as the five LivePortrait files: module state dicts,
    and the stitching checkpoint as {retarget_shoulder, retarget_mouth, retarget_eye} with DDP
    ``module.`` prefixes, as published."""
    from pipeline.weights import load_manifest

    man = load_manifest()
    for name, attr in lp.WEIGHT_FILES.items():
        path = man[name].path(weights_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = getattr(engine, attr).state_dict()
        if attr == "stitching":
            mouth, eye = lp.MLP(65, (128, 128, 64), 63), lp.MLP(66, (256, 256, 128, 128, 64), 63)
            state = {"retarget_shoulder": {f"module.{k}": v for k, v in state.items()},
                     "retarget_mouth": mouth.state_dict(), "retarget_eye": eye.state_dict()}
        torch.save(state, path)


def test_missing_weights_name_the_fetch_command(tmp_path):
    """No weight files: loading raises WeightsMissing naming the file and the fetch command; the
    CLI with backend liveportrait refuses in one line and writes nothing."""
    from pipeline.weights import WeightsMissing

    with pytest.raises(WeightsMissing) as exc:
        lp.LivePortrait.from_weights_dir(tmp_path)
    assert "python -m pipeline.weights fetch liveportrait_appearance_feature_extractor" in exc.value.reason
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pipeline.oneshot", "--reference", "Macron",
                           "--photo", str(PROJECT_ROOT / "resources" / "photos" / "Macron.png"),
                           "--driving", str(require_shared("identities", "May_5s.mp4")), "--test", "t",
                           "--backend", "liveportrait", "--weights-dir", str(tmp_path), "--out", str(out)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and not out.exists()
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]
    assert "python -m pipeline.weights fetch liveportrait_" in last


def test_foreign_state_dict_is_refused(tmp_path):
    """A file with another layout (a missing key) is refused with the reason, never half-loaded."""
    from pipeline.weights import WeightsMissing, load_manifest

    torch.manual_seed(0)
    eng = lp.LivePortrait()
    _write_stand_in(tmp_path, eng)
    path = load_manifest()["liveportrait_appearance_feature_extractor"].path(tmp_path)
    state = torch.load(path, weights_only=True)
    state.pop("second.weight")
    torch.save(state, path)
    with pytest.raises(WeightsMissing, match="does not match LivePortrait's layout"):
        lp.LivePortrait.from_weights_dir(tmp_path)


def test_stand_in_weights_load_and_module_shapes(tmp_path):
    """Stand-in files in the published layout load strictly (parameters identical after the round
    trip); on a 512x512 photo every module gives the documented shapes."""
    import cv2

    from pipeline.oneshot.face import photo_face, read_image

    torch.manual_seed(0)
    src = lp.LivePortrait()
    _write_stand_in(tmp_path, src)
    eng = lp.LivePortrait.from_weights_dir(tmp_path)
    for attr, mod in eng.modules().items():
        a, b = src.modules()[attr].state_dict(), mod.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), attr
    assert set(eng.weights_sha256) == set(lp.WEIGHT_FILES)

    photo = read_image(require_shared("photos", "Macron.png"))
    assert photo.shape == (512, 512, 3)
    m = lp.crop_transform(photo_face(photo, "Macron.png").mesh[0], 2.3, -0.125)
    x256 = cv2.resize(cv2.warpAffine(photo, m, (512, 512)), (256, 256), interpolation=cv2.INTER_AREA)
    x = eng._tensor(x256)
    assert x.shape == (1, 3, 256, 256) and 0 <= float(x.min()) and float(x.max()) <= 1
    with torch.no_grad():
        f_s = eng.appearance(x)
        assert f_s.shape == (1, 32, 16, 64, 64)
        raw = eng.motion(x)
        assert {k: tuple(v.shape) for k, v in raw.items()} == {
            "kp": (1, 63), "pitch": (1, 66), "yaw": (1, 66), "roll": (1, 66), "t": (1, 3), "exp": (1, 63),
            "scale": (1, 1)}
        info = lp.keypoint_info(raw)
        x_s = lp.transform_keypoints(info["kp"], info["R"], info["exp"], info["scale"], info["t"])
        assert x_s.shape == (1, 21, 3)
        delta = eng.stitching(torch.cat([x_s.reshape(1, -1), x_s.reshape(1, -1)], 1))
        assert delta.shape == (1, 65)
        x_d = lp.stitch(eng.stitching, x_s, x_s)
        w = eng.warping(f_s, x_d, x_s)
        assert {k: tuple(v.shape) for k, v in w.items()} == {
            "out": (1, 256, 64, 64), "occlusion_map": (1, 1, 64, 64), "deformation": (1, 16, 64, 64, 3)}
        img = eng.generator(w["out"])
        assert img.shape == (1, 3, 512, 512) and 0 <= float(img.min()) and float(img.max()) <= 1


def test_head_pose_bins_and_rotation():
    """66 bins: a bin with all the mass at index i gives 3 i - 97.5 degrees; R is orthonormal,
    R = (Rz Ry Rx)^T, so the row vector (1, 0, 0) times R for yaw 90 deg is R_y(90)'s first column
    (0, 0, -1)."""
    logits = torch.full((2, 66), -1e4)
    logits[0, 0], logits[1, 40] = 0.0, 0.0
    deg = lp.bins_to_degrees(logits)
    assert torch.allclose(deg[:, 0], torch.tensor([-97.5, 22.5]))
    z = torch.zeros(1, 1)
    r = lp.rotation(z, torch.full((1, 1), 90.0), z)[0]
    assert torch.allclose(r @ r.T, torch.eye(3), atol=1e-6)
    # R_y(90) = [[0,0,1],[0,1,0],[-1,0,0]]; (1,0,0) @ R_y^T = R_y's first column = (0,0,-1)
    assert torch.allclose(torch.tensor([1.0, 0.0, 0.0]) @ r, torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)
    rp = lp.rotation(torch.full((1, 1), 30.0), z, z)[0]
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    assert torch.allclose(rp, torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float32).T, atol=1e-6)


def test_relative_motion_and_stitching_formulas():
    """Driver == anchor gives the source keypoints back; scale and translation changes of the
    driver are applied relative to the anchor; a zero stitching MLP leaves keypoints unchanged and
    its (tx, ty) outputs shift every keypoint."""
    torch.manual_seed(1)

    def info(scale, t):
        return {"kp": torch.randn(1, 21, 3), "exp": torch.randn(1, 21, 3) * 0.1,
                "R": lp.rotation(*(torch.randn(1, 1) * 10 for _ in range(3))),
                "scale": torch.tensor([[scale]]), "t": torch.tensor([t])}

    src, anchor = info(1.5, [0.1, -0.2, 0.3]), info(2.0, [0.05, 0.0, 0.0])
    x_s = lp.transform_keypoints(src["kp"], src["R"], src["exp"], src["scale"], src["t"])
    assert torch.allclose(lp.relative_keypoints(src, anchor, anchor), x_s, atol=1e-5)
    moved = dict(anchor, scale=torch.tensor([[3.0]]), t=torch.tensor([[0.15, 0.1, 9.0]]))
    got = lp.relative_keypoints(src, moved, anchor)
    want = lp.transform_keypoints(src["kp"], src["R"], src["exp"], torch.tensor([[2.25]]),
                                  torch.tensor([[0.2, -0.1, 0.0]]))
    assert torch.allclose(got, want, atol=1e-5)
    mlp = lp.MLP()
    for p in mlp.parameters():
        torch.nn.init.zeros_(p)
    assert torch.equal(lp.stitch(mlp, x_s, got), got)
    mlp.mlp[-1].bias.data[63:65] = torch.tensor([0.5, -0.25])
    out = lp.stitch(mlp, x_s, got)
    assert torch.allclose(out - got, torch.tensor([0.5, -0.25, 0.0]).expand(1, 21, 3))


def test_crop_transform_levels_the_eyes():
    """The crop maps the eye corners onto one row, the face to the centre column, at the scale asked."""
    mesh = np.zeros((478, 2))
    rng = np.random.default_rng(0)
    mesh[:] = rng.uniform(100, 200, (478, 2))
    ang = np.radians(20)
    mesh[33], mesh[263] = (120, 140), (120 + 60 * np.cos(ang), 140 + 60 * np.sin(ang))
    m = lp.crop_transform(mesh, 2.0, 0.0, 512)
    e = (np.c_[mesh[[33, 263]], np.ones(2)] @ m.T)
    assert abs(e[0, 1] - e[1, 1]) < 1e-6
    assert np.linalg.norm(e[1] - e[0]) == pytest.approx(60 * 512 / (2.0 * np.ptp(mesh, 0).max()))
    mask = lp.paste_mask(64)
    assert mask[32, 32] == 1.0 and mask[0, 0] == 0.0 and mask.min() >= 0


@pytest.mark.slow
def test_animate_code_path_with_stand_in_weights(tmp_path):
    """The whole animate path (crops from the mesh, F, M on photo and driver, relative motion,
    stitching, W, G, paste-back) runs with stand-in weights; only types and shapes are checked
    (a stand-in network's frames are never used as a result)."""
    from pipeline.oneshot.face import photo_face, read_image, resize_max, track_frames
    from pipeline.preprocess.media import iter_frames

    torch.manual_seed(0)
    _write_stand_in(tmp_path, lp.LivePortrait())
    eng = lp.LivePortrait.from_weights_dir(tmp_path)
    photo = resize_max(read_image(require_shared("photos", "Macron.png")), 200)
    frames = np.stack([f for _, f in zip(range(1), iter_frames(require_shared("identities", "May_5s.mp4"),
                                                                 width=512, height=512))])
    out = eng.animate(photo, photo_face(photo, "Macron.png"), frames, track_frames(frames), 0)
    assert len(out) == 1 and out[0].shape == photo.shape and out[0].dtype == np.uint8
