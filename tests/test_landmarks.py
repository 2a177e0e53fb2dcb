"""Landmarks stage: .lms files, mesh / blendshapes / poses, failed-frame handling, FAN loading.

Real data: the first frames of resources/sample/German_12s.mp4 (512x512), extracted with ffmpeg.
The session fixtures here are reused by tests/test_parsing.py and tests/test_background.py.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.common.errors import InputError
from tests.conftest import SAMPLE_VIDEO

N_FRAMES = 30
#: results of the session fixtures below: test_parsing / test_background import these fixtures, and
#: pytest registers an imported fixture once per module; the cache keeps it one computation
SESSION_CACHE: dict[str, Path] = {}


@pytest.fixture(scope="session")
def face_frames(tmp_path_factory) -> Path:
    """``ori_imgs/{i}.jpg`` for the first N_FRAMES frames of the sample clip."""
    if "frames" in SESSION_CACHE:
        return SESSION_CACHE["frames"]
    d = tmp_path_factory.mktemp("face") / "ori_imgs"
    d.mkdir()
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(SAMPLE_VIDEO), "-frames:v", str(N_FRAMES),
                    "-start_number", "0", "-qscale:v", "2", str(d / "%d.jpg")], check=True)
    assert len(list(d.glob("*.jpg"))) == N_FRAMES
    SESSION_CACHE["frames"] = d
    return d


def _run_landmarks(frames: Path, cfg: dict | None = None, weights_dir: Path | None = None) -> dict:
    from pipeline.preprocess.landmarks import LandmarksConfig, run

    root = frames.parent
    return run(frames, root / "face_mesh.npy", root / "blendshapes.npy", root / "landmarks.json",
               LandmarksConfig.from_dict(cfg), weights_dir)


@pytest.fixture(scope="session")
def face_landmarks(face_frames, tmp_path_factory) -> Path:
    """The landmarks stage run on :func:`face_frames` (dlib 68 points, empty weights folder);
    returns the dataset folder (parent of ori_imgs)."""
    if "landmarks" not in SESSION_CACHE:
        _run_landmarks(face_frames, {"lms68": "dlib"}, weights_dir=tmp_path_factory.mktemp("no_weights"))
        SESSION_CACHE["landmarks"] = face_frames.parent
    return SESSION_CACHE["landmarks"]


def _copy_frames(src: Path, dst: Path, blank: list[int]) -> Path:
    """Copy the frames, replacing those in ``blank`` by black images (no face)."""
    out = dst / "ori_imgs"
    out.mkdir(parents=True)
    for p in src.glob("*.jpg"):
        shutil.copy(p, out / p.name)
    black = np.zeros((512, 512, 3), np.uint8)
    for i in blank:
        cv2.imwrite(str(out / f"{i}.jpg"), black)
    return out


def test_outputs_format(face_landmarks):
    from pipeline.preprocess.landmarks import read_lms

    root = face_landmarks
    lms_files = sorted(root.glob("ori_imgs/*.lms"))
    assert len(lms_files) == N_FRAMES
    for i in range(N_FRAMES):
        text = (root / "ori_imgs" / f"{i}.lms").read_text().splitlines()
        assert len(text) == 68 and all(len(row.split()) == 2 for row in text)
        pts = read_lms(root / "ori_imgs" / f"{i}.lms")
        assert pts.shape == (68, 2)
        assert (pts > 50).all() and (pts < 470).all()           # a head-and-shoulders crop
    mesh = np.load(root / "face_mesh.npy")
    assert mesh.shape == (N_FRAMES, 478, 3) and mesh.dtype == np.float32
    assert 150 < mesh[:, :, 0].mean() < 360 and 150 < mesh[:, :, 1].mean() < 400   # pixels, not [0, 1]
    assert 10 < np.ptp(mesh[0, :, 2]) < 300                     # depth in pixels of the same scale
    bs = np.load(root / "blendshapes.npy")
    assert bs.shape == (N_FRAMES, 52) and bs.dtype == np.float32 and bs.min() >= 0 and bs.max() <= 1
    poses = np.load(root / "face_pose_mp.npy")
    assert poses.shape == (N_FRAMES, 4, 4)
    r = poses[:, :3, :3]
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1) / np.cbrt(np.linalg.det(r))[:, None, None] ** 2,
                               np.broadcast_to(np.eye(3), r.shape), atol=1e-3)
    rep = json.loads((root / "landmarks.json").read_text())
    assert rep["n_frames"] == N_FRAMES and rep["failed_frames"] == [] and rep["interpolated_frames"] == []
    assert rep["backends"] == {"mesh": "mediapipe_face_landmarker", "lms68": "dlib"}
    assert len(rep["blendshape_names"]) == 52 and rep["blendshape_names"][9] == "eyeBlinkLeft"
    assert rep["files"]["pose_mp"] == "face_pose_mp.npy"
    assert "2DFAN4" in rep["fan_skipped_reason"]                # FAN weights absent: reason recorded


def test_default_68_point_source_is_the_mesh_mapping():
    from pipeline.preprocess.landmarks import LandmarksConfig, _choose_68

    rep: dict = {}
    assert _choose_68(LandmarksConfig(), None, rep)[0] == "mesh"
    assert "no weights folder" in rep["fan_skipped_reason"]


def test_mesh68_mapping_agrees_with_dlib(face_landmarks):
    """Two independent 68-point sources: dlib's predictor (.lms) and the mesh index mapping."""
    from pipeline.preprocess.backends.mesh68 import mesh_to_68
    from pipeline.preprocess.landmarks import read_lms

    root = face_landmarks
    mesh = np.load(root / "face_mesh.npy")
    dlib_pts = np.stack([read_lms(root / "ori_imgs" / f"{i}.lms") for i in range(N_FRAMES)])
    err = np.linalg.norm(mesh_to_68(mesh) - dlib_pts, axis=-1).mean(axis=0)     # per point, pixels
    assert err[17:].mean() < 5.0, err            # brows, nose, eyes, lips
    assert err.max() < 15.0, err                 # jaw included
    # eye corners: iBUG 36 (image left) lies left of 45 (image right)
    assert (dlib_pts[:, 36, 0] < dlib_pts[:, 45, 0]).all()


def test_short_gap_interpolated_indices_kept(face_landmarks, face_frames, tmp_path):
    from pipeline.preprocess.landmarks import read_lms

    frames = _copy_frames(face_frames, tmp_path, blank=[10, 11, 12])
    rep = _run_landmarks(frames)
    assert rep["failed_frames"] == [10, 11, 12] and rep["interpolated_frames"] == [10, 11, 12]
    assert rep["backends"]["lms68"] == "mesh"
    lms = np.stack([read_lms(frames / f"{i}.lms") for i in range(N_FRAMES)])
    assert lms.shape[0] == N_FRAMES and not (frames / f"{N_FRAMES}.lms").exists()
    # linear interpolation between frames 9 and 13, row by row
    for i in (10, 11, 12):
        w = (i - 9) / 4
        np.testing.assert_allclose(lms[i], (1 - w) * lms[9] + w * lms[13], atol=0.011)
    mesh = np.load(tmp_path / "face_mesh.npy")
    ref = np.load(face_landmarks / "face_mesh.npy")
    assert mesh.shape == ref.shape
    # detected frames keep their own row: same face position as in the clean run (no shift)
    for i in (5, 9, 13, 20):
        assert np.abs(mesh[i, :, :2] - ref[i, :, :2]).mean() < 2.0, i
    poses = np.load(tmp_path / "face_pose_mp.npy")
    r = poses[11, :3, :3] / np.cbrt(np.linalg.det(poses[11, :3, :3]))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-4)


def test_too_many_failures_refused(face_frames, tmp_path, capsys):
    """Through the CLI: exit status 1 and one line naming the folder and the failed frames."""
    from pipeline.common.log import run_main
    from pipeline.preprocess.landmarks import main

    frames = _copy_frames(face_frames, tmp_path, blank=[2, 7, 8, 15, 21])        # 5 of 30 > 10%
    argv = ["--frames", str(frames), "--out-mesh", str(tmp_path / "m.npy"), "--out-blendshapes",
            str(tmp_path / "b.npy"), "--out-report", str(tmp_path / "l.json"), "--cfg", '{"lms68": "mesh"}']
    assert run_main(main, argv) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("ERROR:")]
    assert len(err) == 1
    assert err[0] == (f"ERROR: {frames}: no face in 5 of 30 frames (more than max_failed_fraction=0.1): "
                      "frames 2, 7, 8, 15, 21")
    assert not (tmp_path / "m.npy").exists() and not (tmp_path / "l.json").exists()


def test_long_gap_is_a_faceless_stretch_left_out(face_frames, tmp_path, caplog):
    """A run longer than max_gap is not interpolated into training: its frames are listed as
    excluded (files still written, one per frame) and a log line says so; short gaps stay
    interpolated. Only above max_faceless_fraction is the identity refused."""
    import logging

    frames = _copy_frames(face_frames, tmp_path, blank=[2, 5, 6, 7, 8])
    with caplog.at_level(logging.WARNING):
        rep = _run_landmarks(frames, {"lms68": "mesh", "max_gap": 3})
    assert rep["failed_frames"] == [2, 5, 6, 7, 8]
    assert rep["interpolated_frames"] == [2] and rep["excluded_frames"] == [5, 6, 7, 8]
    assert len(list(frames.glob("*.lms"))) == N_FRAMES
    assert "no face in 4 frame(s) in runs longer than max_gap=3 (frames 5-8): left out of the train/val splits" \
        in caplog.text
    with pytest.raises(InputError, match=r"no face in 4 of 30 frames in runs longer than max_gap=3 \(frames 5-8; "
                                         r"more than max_faceless_fraction=0.1\)"):
        _run_landmarks(_copy_frames(face_frames, tmp_path / "b", blank=[5, 6, 7, 8]),
                       {"lms68": "mesh", "max_gap": 3, "max_faceless_fraction": 0.1})


def test_frame_numbering_hole_refused(face_frames, tmp_path):
    from pipeline.preprocess.landmarks import list_frames

    frames = _copy_frames(face_frames, tmp_path, blank=[])
    (frames / "4.jpg").unlink()
    with pytest.raises(InputError, match="missing 4"):
        list_frames(frames)


def test_fill_gaps_edges():
    from pipeline.preprocess.landmarks import failed_runs, fill_gaps

    ok = np.array([False, True, True, False, False, True, False])
    v = np.array([0.0, 1.0, 2.0, 0.0, 0.0, 5.0, 0.0])
    np.testing.assert_allclose(fill_gaps(v, ok), [1, 1, 2, 3, 4, 5, 5])   # ends repeat the nearest
    assert failed_runs(ok) == [(0, 1), (3, 5), (6, 7)]


def test_cli_writes_declared_outputs(face_frames, tmp_path):
    from pipeline.preprocess.landmarks import main

    frames = _copy_frames(face_frames, tmp_path, blank=[])
    for p in list(frames.glob("*.jpg"))[:]:
        if int(p.stem) >= 4:
            p.unlink()
    rc = main(["--frames", str(frames), "--out-mesh", str(tmp_path / "m.npy"), "--out-blendshapes",
               str(tmp_path / "b.npy"), "--out-pose", str(tmp_path / "p.npy"), "--out-report",
               str(tmp_path / "l.json"), "--cfg", json.dumps({"lms68": "mesh", "max_gap": 12})])
    assert rc == 0
    assert np.load(tmp_path / "m.npy").shape == (4, 478, 3) and np.load(tmp_path / "p.npy").shape == (4, 4, 4)
    assert json.loads((tmp_path / "l.json").read_text())["files"]["pose_mp"] == "p.npy"
    assert len(list(frames.glob("*.lms"))) == 4


# ---------------------------------------------------------------------------------------------- FAN


@pytest.fixture()
def fan_standin(tmp_path, monkeypatch):
    """A 1-hourglass FAN with random weights saved under the manifest's 2DFAN4 file name, in the
    face_alignment checkpoint layout (shapes and code path only: a stand-in never produces reported
    numbers). The default hash check, which refuses it, is turned off for these loading tests."""
    torch = pytest.importorskip("torch")
    from pipeline.preprocess.backends.fan import _build_network
    from pipeline.weights import VERIFY_ENV, weights_path

    monkeypatch.setenv(VERIFY_ENV, "0")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = _build_network(1).eval()
    with torch.no_grad():                      # non-trivial batch-norm statistics
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    wdir = tmp_path / "weights"
    wdir.mkdir()
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
               weights_path("fan_2dfan4", wdir))
    return net, wdir


def test_fan_state_dict_and_torchscript_loading(fan_standin, face_frames, tmp_path):
    import torch

    from pipeline.preprocess.backends.fan import FanLandmarks, load_fan

    net, wdir = fan_standin
    fan = FanLandmarks.from_weights_dir(wdir)
    assert fan.net.num_modules == 1                          # counted from the state dict
    for a, b in zip(fan.net.state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)
    rgb = cv2.imread(str(face_frames / "0.jpg"))[..., ::-1]
    box = (170.0, 200.0, 390.0, 410.0)
    pts = fan.predict(rgb, box)
    assert pts.shape == (68, 2) and pts.dtype == np.float32 and np.isfinite(pts).all()
    # heatmap cells map back inside the crop square: centre (280, 279.8), side 200 * 430 / 195
    side = 200 * 430 / 195
    assert (np.abs(pts - [280.0, 305.0 - 0.12 * 210]) <= side / 2).all()
    # TorchScript archive (face_alignment 1.3 format) through the same loader
    scripted = torch.jit.trace(net, torch.zeros(1, 3, 256, 256), strict=False)
    scripted.save(str(tmp_path / "fan.zip"))
    pts2 = FanLandmarks(load_fan(tmp_path / "fan.zip")).predict(rgb, box)
    np.testing.assert_allclose(pts2, pts, atol=1e-3)
    with pytest.raises(RuntimeError, match="not a FAN checkpoint"):
        torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
        load_fan(tmp_path / "bad.pth")


def test_fan_heatmap_decoding_hand_computed():
    from pipeline.preprocess.backends.fan import crop_transform, decode_heatmaps

    hm = np.zeros((68, 64, 64), np.float32)
    hm[:, 20, 30] = 1.0                 # peak at column 30, row 20
    hm[:, 20, 31] = 0.5                 # right neighbour larger -> +0.25 in x
    hm[:, 19, 30] = 0.5                 # upper neighbour larger -> -0.25 in y
    center, side = crop_transform((100.0, 100.0, 295.0, 295.0))     # scale 2 -> side 400 px
    assert side == pytest.approx(400.0)
    np.testing.assert_allclose(center, [197.5, 197.5 - 0.12 * 195])
    pts = decode_heatmaps(hm, center, side)
    # heatmap (30.75, 20.25) -> crop fraction /64 -> image: frac * 400 + centre - 200
    np.testing.assert_allclose(pts[0], [30.75 / 64 * 400 + center[0] - 200, 20.25 / 64 * 400 + center[1] - 200],
                               atol=1e-3)


def test_fan_matches_face_alignment_reference(fan_standin):
    """Same weights through face_alignment's own FAN give the same heatmaps (face_alignment is
    installed by scripts/bootstrap.sh, ``--no-deps``)."""
    import face_alignment.models as fa_models        # a test reference: scripts/bootstrap.sh installs it
    import torch

    net, _ = fan_standin
    ref = fa_models.FAN(1).eval()
    ref.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(net(x)[-1], ref(x)[-1], rtol=1e-4, atol=1e-5)


def test_fan_crop_and_decoding_match_face_alignment(face_frames):
    """The input crop and the heatmap decoding against face_alignment's own ``utils.crop`` and
    ``utils.get_preds_fromhm`` (installed by scripts/bootstrap.sh, ``--no-deps``): on a real frame
    the crops differ by about 2 grey levels on average (one affine warp against an integer box
    and a resize), and the decoded points are face_alignment's before its truncation to integers."""
    import face_alignment.utils as fa_utils          # a test reference: scripts/bootstrap.sh installs it

    from pipeline.preprocess.backends.fan import crop_face, crop_transform, decode_heatmaps

    rgb = cv2.imread(str(face_frames / "0.jpg"))[..., ::-1]
    # the face, a larger box off the pixel grid, and one that leaves the image on the left
    for box in [(170.0, 200.0, 390.0, 410.0), (150.3, 180.7, 400.2, 430.9), (-20.0, 300.0, 250.0, 560.0)]:
        center, side = crop_transform(box)
        ours, ref = crop_face(rgb, center, side), fa_utils.crop(rgb, center, side / 200.0)
        assert ours.shape == ref.shape == (256, 256, 3) and ours.dtype == np.uint8
        assert np.abs(ours.astype(float) - ref).mean() < 3.0, box

    hm = np.random.default_rng(0).random((68, 64, 64)).astype(np.float32)
    hm[0] = 0.0
    hm[0, 0, 5] = 1.0                      # a peak on the border: no quarter-pixel shift
    center, side = crop_transform((170.0, 200.0, 390.0, 410.0))
    ours = decode_heatmaps(hm, center, side)
    _, ref, _ = fa_utils.get_preds_fromhm(hm[None], center, side / 200.0)
    np.testing.assert_array_equal(np.trunc(ours), ref[0])


@pytest.mark.slow
def test_landmarks_stage_uses_fan_when_weights_present(fan_standin, face_frames, tmp_path):
    _, wdir = fan_standin
    frames = _copy_frames(face_frames, tmp_path, blank=[])
    for p in frames.glob("*.jpg"):
        if int(p.stem) >= 3:
            p.unlink()
    rep = _run_landmarks(frames, {"backend": "auto"}, weights_dir=wdir)
    assert rep["backends"]["lms68"] == "fan" and "fan_skipped_reason" not in rep
    assert len(list(frames.glob("*.lms"))) == 3
