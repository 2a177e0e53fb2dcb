"""Head-pose tracking: rotation conventions (AD-NeRF), synthetic recovery of focal and poses, ER-NeRF
transforms, and the CLI on real MediaPipe meshes of the sample video."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.common.errors import InputError
from pipeline.preprocess import tracking as T
from tests.conftest import PROJECT_ROOT, SAMPLE_VIDEO

N_SAMPLE = 60  # frames of the sample video used by the real-data tests


def make_mediapipe_sample(root: Path, n: int = N_SAMPLE) -> Path:
    """Frames 0..n-1 of the sample video (ori_imgs/{i}.jpg) and their MediaPipe FaceLandmarker
    outputs in the landmarks stage's formats: face_mesh.npy [n, 478, 3] (x, y, z pixels),
    blendshapes.npy [n, 52], landmarks.json (blendshape_names, failed_frames)."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    frames = root / "ori_imgs"
    frames.mkdir(parents=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(SAMPLE_VIDEO), "-frames:v", str(n), "-q:v", "2",
                    "-start_number", "0", str(frames / "%d.jpg")], check=True)
    opts = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(PROJECT_ROOT / "resources/models/face_landmarker.task")),
        running_mode=vision.RunningMode.IMAGE, output_face_blendshapes=True, num_faces=1)
    mesh, bs = [], []
    with vision.FaceLandmarker.create_from_options(opts) as lm:
        for i in range(n):
            img = np.ascontiguousarray(cv2.imread(str(frames / f"{i}.jpg"))[:, :, ::-1])
            h, w = img.shape[:2]
            r = lm.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=img))
            mesh.append([[p.x * w, p.y * h, p.z * w] for p in r.face_landmarks[0]])
            bs.append([c.score for c in r.face_blendshapes[0]])
            names = [c.category_name for c in r.face_blendshapes[0]]
    np.save(root / "face_mesh.npy", np.asarray(mesh, np.float32))
    np.save(root / "blendshapes.npy", np.asarray(bs, np.float32))
    (root / "landmarks.json").write_text(json.dumps({"blendshape_names": names, "failed_frames": [],
                                                     "backends": {"mesh": "mediapipe_face_landmarker"}}))
    return root


@pytest.fixture(scope="module")
def mp_sample(tmp_path_factory) -> Path:
    return make_mediapipe_sample(tmp_path_factory.mktemp("mp_sample"))


def adnerf_euler2rot(euler):
    """AD-NeRF ``data_util/face_tracking/util.py`` ``euler2rot`` (lines 18-40, commit 9fdcd7e; ER-NeRF
    ``data_utils/process.py`` 279-301 is the same), re-written here from its description: each
    ``torch.cat((a, b, c), 1)`` of [B, 1, 1] tensors is a COLUMN ``[a, b, c]``, and the three columns
    are joined along dim 2; ``rot_x`` columns ``(1,0,0), (0,cos t,sin t), (0,-sin t,cos t)``, ``rot_y``
    columns ``(cos p,0,-sin p), (0,1,0), (sin p,0,cos p)``, ``rot_z`` columns ``(cos s,-sin s,0),
    (sin s,cos s,0), (0,0,1)``; the result is ``bmm(rot_x, bmm(rot_y, rot_z))``."""
    import torch

    e = torch.as_tensor(euler, dtype=torch.float32)
    t, p, s = (e[:, k].reshape(-1, 1, 1) for k in range(3))
    one, zero = torch.ones_like(t), torch.zeros_like(t)

    def from_columns(*cols):
        return torch.cat([torch.cat(c, 1) for c in cols], 2)

    rx = from_columns((one, zero, zero), (zero, t.cos(), t.sin()), (zero, -t.sin(), t.cos()))
    ry = from_columns((p.cos(), zero, -p.sin()), (zero, one, zero), (p.sin(), zero, p.cos()))
    rz = from_columns((s.cos(), -s.sin(), zero), (s.sin(), s.cos(), zero), (zero, zero, one))
    return torch.bmm(rx, torch.bmm(ry, rz))


def adnerf_save_transforms(params: dict, h: int, w: int) -> tuple[dict, dict]:
    """ER-NeRF ``data_utils/process.py`` ``save_transforms`` (lines 262-345, commit 0cf72d8; AD-NeRF
    ``data_util/process_data.py`` step 7, lines 190-243, is the same without ``face_rect``),
    re-written from its description: ``focal = params['focal']``, ``trans = params['trans'] / 10``;
    split ``int(N * 10 / 11)`` (306); ``rot_inv = euler2rot(euler).permute(0, 2, 1)``,
    ``trans_inv = -bmm(rot_inv, trans[..., None])`` (311-313); per frame a float32 4x4 identity with
    ``[:3, :3] = rot_inv[i]``, ``[:3, 3] = trans_inv[i]`` (335-338); ``focal_len``, ``cx = w / 2``,
    ``cy = h / 2``, ``img_id = aud_id = i`` (322-333)."""
    import torch

    euler, trans = params["euler"], params["trans"] / 10.0
    n = euler.shape[0]
    cut = int(n * 10 / 11)
    rot_inv = adnerf_euler2rot(euler).permute(0, 2, 1)
    trans_inv = -torch.bmm(rot_inv, trans.unsqueeze(2))
    out = []
    for ids in (range(0, cut), range(cut, n)):
        frames = []
        for i in ids:
            pose = torch.eye(4, dtype=torch.float32)
            pose[:3, :3] = rot_inv[i]
            pose[:3, 3] = trans_inv[i, :, 0]
            frames.append({"img_id": i, "aud_id": i, "transform_matrix": pose.numpy().tolist()})
        out.append({"focal_len": float(params["focal"][0]), "cx": float(w / 2.0), "cy": float(h / 2.0),
                    "frames": frames})
    return out[0], out[1]


def assert_track_params_recreate_transforms(params: dict, train: dict, val: dict, h: int, w: int) -> None:
    """The transforms re-created from ``track_params.pt`` by :func:`adnerf_save_transforms` equal
    ``train``/``val`` to 1e-5 for every frame (by ``img_id``; rows of track_params = frame index)."""
    ours = {f["img_id"]: f for f in train["frames"] + val["frames"]}
    a_train, a_val = adnerf_save_transforms(params, h, w)
    theirs = {f["img_id"]: f for f in a_train["frames"] + a_val["frames"]}
    assert set(ours) <= set(theirs)
    for i, f in ours.items():
        np.testing.assert_allclose(np.asarray(f["transform_matrix"]), np.asarray(theirs[i]["transform_matrix"]),
                                   atol=1e-5, err_msg=f"frame {i}")
        assert f["aud_id"] == theirs[i]["aud_id"]
    for ours_split, their_split in ((train, a_train), (val, a_val)):
        assert ours_split["focal_len"] == pytest.approx(their_split["focal_len"], abs=1e-3)
        assert (ours_split["cx"], ours_split["cy"]) == (their_split["cx"], their_split["cy"])


def test_euler2rot_matches_adnerf_matrices():
    c, s = np.cos(0.3), np.sin(0.3)
    np.testing.assert_allclose(T.euler2rot(np.array([[0.3, 0, 0]]))[0], [[1, 0, 0], [0, c, -s], [0, s, c]], atol=1e-12)
    np.testing.assert_allclose(T.euler2rot(np.array([[0, 0.3, 0]]))[0], [[c, 0, s], [0, 1, 0], [-s, 0, c]], atol=1e-12)
    np.testing.assert_allclose(T.euler2rot(np.array([[0, 0, 0.3]]))[0], [[c, s, 0], [-s, c, 0], [0, 0, 1]], atol=1e-12)
    rng = np.random.default_rng(1)
    e = rng.uniform(-1.2, 1.2, (50, 3))
    r = T.euler2rot(e)
    # the same matrices as AD-NeRF's torch code for arbitrary angles (float32 there)
    np.testing.assert_allclose(r, adnerf_euler2rot(e).numpy(), atol=1e-6)
    np.testing.assert_allclose(r @ np.transpose(r, (0, 2, 1)), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(T.rot2euler(r), e, atol=1e-10)


def test_canonical_face_model_loads():
    can = T.load_canonical_face()
    assert can.vertices.shape == (468, 3) and len(can.basis_ids) == 33
    # subject's right eye outer corner (33) at image left (-x), nose tip (1) towards the camera (+z)
    assert can.vertices[33, 0] < 0 < can.vertices[263, 0]
    assert can.vertices[1, 2] > can.vertices[33, 2]
    # the direct protobuf decoding agrees with mediapipe's own parser
    from mediapipe.tasks.cc.vision.face_geometry.proto import geometry_pipeline_metadata_pb2 as gpm
    import zipfile

    meta = gpm.GeometryPipelineMetadata()
    meta.ParseFromString(zipfile.ZipFile(T.FACE_LANDMARKER_TASK).read("geometry_pipeline_metadata_landmarks.binarypb"))
    np.testing.assert_allclose(can.vertices, np.reshape(meta.canonical_mesh.vertex_buffer, (-1, 5))[:, :3], rtol=1e-6)
    assert can.basis_ids.tolist() == [p.landmark_id for p in meta.procrustes_landmark_basis]
    np.testing.assert_allclose(can.basis_weights, [p.weight for p in meta.procrustes_landmark_basis], rtol=1e-6)
    # face width about 15 cm (centimetres)
    assert 12 < np.ptp(can.vertices[:, 0]) < 18
    with pytest.raises(InputError, match="not found"):
        T.load_canonical_face("/nonexistent/face_landmarker.task")


def _synthetic(n=80, focal=1200.0, noise=0.3, seed=0):
    """Known GL poses (euler rad, trans dm) and OpenCV projections of the canonical basis points."""
    can = T.load_canonical_face()
    tpl = can.vertices[can.basis_ids]
    t = np.linspace(0, 4 * np.pi, n)
    euler = np.stack([0.15 * np.sin(t), 0.3 * np.sin(0.7 * t + 1), 0.05 * np.sin(1.3 * t)], -1)
    trans_cm = np.stack([0.5 * np.sin(t), 0.3 * np.cos(t), -60 + 2 * np.sin(0.5 * t)], -1)
    k = np.array([[focal, 0, 256], [0, focal, 256], [0, 0, 1]])
    lms = []
    for e, tr in zip(euler, trans_cm):
        r_cv = T.CV_TO_GL @ T.euler2rot(e[None])[0]
        pts, _ = cv2.projectPoints(tpl, cv2.Rodrigues(r_cv)[0], T.CV_TO_GL @ tr, k, None)
        lms.append(pts[:, 0])
    lms = np.asarray(lms) + np.random.default_rng(seed).normal(0, noise, (n, len(tpl), 2))
    return tpl, lms, euler, trans_cm / 10.0


@pytest.mark.parametrize("perturb", [False, True])
def test_synthetic_recovers_focal_and_poses(perturb):
    tpl, lms, euler, trans = _synthetic()
    start = tpl * np.array([1.05, 0.97, 0.85]) if perturb else tpl  # a different face: refinement fixes it
    cfg = T.TrackingConfig(focal_search=(600, 2400, 100), smooth_window=1)
    res = T.track_landmarks(lms, start, cfg, 512, 512)
    assert abs(res.focal - 1200) <= 100, res.focal_errors
    assert int(np.nanargmin(res.focal_errors)) in (5, 6, 7)
    # poses: rotation within 1 degree, translation within 3 % of the distance
    assert np.abs(res.euler - euler).max() < np.radians(1.0)
    assert np.abs(res.trans - trans).max() < 0.03 * 6.0
    assert res.reproj_error.mean() < 1.0


def test_smoothing_and_projection_consistency():
    tpl, lms, euler, trans = _synthetic(noise=1.5, seed=3)
    raw = T.track_landmarks(lms, tpl, T.TrackingConfig(smooth_window=1), 512, 512, refine=0)
    smo = T.track_landmarks(lms, tpl, T.TrackingConfig(smooth_window=5, smooth_order=0), 512, 512, refine=0)
    jitter = lambda e: np.abs(np.diff(e, 2, axis=0)).mean()  # noqa: E731
    assert jitter(smo.euler) < 0.5 * jitter(raw.euler)
    # the transform is the inverse head pose: camera-to-world maps camera points back to the head
    c2w = T.camera_to_world(smo.euler, smo.trans)
    p_head = tpl / 100.0  # metres
    cam = np.einsum("nij,kj->nki", smo.rotations(), p_head) + smo.trans[:, None, :] / 10.0
    back = np.einsum("nij,nkj->nki", c2w[:, :3, :3], cam) + c2w[:, None, :3, 3]
    np.testing.assert_allclose(back, np.broadcast_to(p_head, back.shape), atol=1e-9)
    assert (c2w[:, 2, 3] > 0.4).all()  # camera in front of the face (+z), about 0.6 m away


def test_transforms_schema_and_split():
    tpl, lms, _, _ = _synthetic(n=110)
    res = T.track_landmarks(lms, tpl, T.TrackingConfig(), 512, 512, refine=0)
    train, val = T.transforms_dicts(res, 512, 512, 1 / 11, eye=np.linspace(0, 1, 110))
    assert len(train["frames"]) == 100 and len(val["frames"]) == 10
    for d in (train, val):
        assert {"focal_len", "cx", "cy", "frames"} <= set(d) and d["cx"] == d["cy"] == 256.0
        assert "translation_units" in d["convention"]
    ids = [f["img_id"] for f in train["frames"] + val["frames"]]
    assert ids == list(range(110)) == [f["aud_id"] for f in train["frames"] + val["frames"]]
    assert T.split_index(300, 0.0909090909) == int(300 * 10 / 11) == 272  # ER-NeRF process.py


def test_split_leaves_out_faceless_frames():
    """Frames of face-less stretches are in neither split; the others keep their index as img_id and
    the validation fraction is taken of the frames that remain."""
    train, val = T.split_ids(30, 0.2, exclude=set(range(5, 15)))
    assert train == [0, 1, 2, 3, 4, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25] and val == [26, 27, 28, 29]
    train, val = T.split_ids(20, 0.25, segments=[(0, 8), (8, 20)], exclude={8, 9, 10, 11})
    assert train == [0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17] and val == [6, 7, 18, 19]
    tpl, lms, _, _ = _synthetic(n=40)
    res = T.track_landmarks(lms, tpl, T.TrackingConfig(), 512, 512, refine=0)
    tr, va = T.transforms_dicts(res, 512, 512, 0.1, exclude=set(range(10, 20)))
    ids = [f["img_id"] for f in tr["frames"] + va["frames"]]
    assert ids == [*range(10), *range(20, 40)] == [f["aud_id"] for f in tr["frames"] + va["frames"]]
    c2w = T.camera_to_world(res.euler, res.trans)
    np.testing.assert_allclose(tr["frames"][10]["transform_matrix"], c2w[20])


def test_person_template_recovers_shape_from_weak_perspective_mesh():
    can = T.load_canonical_face()
    e = np.array([[0.1, 0.2, 0.05], [-0.05, -0.25, 0.0], [0.0, 0.0, 0.0]])
    mesh = []
    for r in T.euler2rot(e):
        p = can.vertices @ r.T * 12.0  # 12 px per cm, weak perspective, y down, z smaller = nearer
        mesh.append(np.concatenate([p * [1, -1, -1] + [256, 256, 0], np.zeros((10, 3))], 0))
    tpl = T.person_template(np.asarray(mesh), can)
    np.testing.assert_allclose(tpl, can.vertices, atol=1e-6)


def test_cli_on_sample_mediapipe_mesh(mp_sample, tmp_path):
    out = tmp_path
    args = ["--frames", str(mp_sample / "ori_imgs"), "--mesh", str(mp_sample / "face_mesh.npy"),
            "--blendshapes", str(mp_sample / "blendshapes.npy"), "--landmarks", str(mp_sample / "landmarks.json"),
            "--out-params", str(out / "track_params.pt"), "--out-train", str(out / "transforms_train.json"),
            "--out-val", str(out / "transforms_val.json"), "--out-report", str(out / "tracking.json"),
            "--cfg", json.dumps({"focal_search": [600, 2400, 200], "smooth_window": 5})]
    assert T.main(args) == 0
    import torch

    params = torch.load(out / "track_params.pt")
    assert params["euler"].shape == (N_SAMPLE, 3) and params["trans"].shape == (N_SAMPLE, 3)
    assert params["exp"].shape == (N_SAMPLE, 52) and params["focal"].shape == (1,)
    assert (params["trans"][:, 2] < 0).all()  # in front of the OpenGL camera (decimetres)
    rep = json.loads((out / "tracking.json").read_text())
    # the focal comes from the search, at an interior minimum of its curve (not the prior, not an end)
    assert rep["focal_source"] == "search" and not rep["focal_search"]["at_grid_border"]
    assert rep["reproj_error_px"]["mean"] < 3.0
    train = json.loads((out / "transforms_train.json").read_text())
    assert train["focal_len"] == rep["focal_len"]
    # eye: the mean of MediaPipe's eyeBlinkLeft and eyeBlinkRight of that frame
    bs = np.load(mp_sample / "blendshapes.npy")
    names = json.loads((mp_sample / "landmarks.json").read_text())["blendshape_names"]
    left, right = names.index("eyeBlinkLeft"), names.index("eyeBlinkRight")
    for f in train["frames"][::7]:
        assert f["eye"] == pytest.approx(0.5 * (bs[f["img_id"], left] + bs[f["img_id"], right]), abs=1e-6)
    # bad input: mesh rows do not match the frames
    np.save(tmp_path / "short.npy", np.load(mp_sample / "face_mesh.npy")[:10])
    with pytest.raises(InputError, match="blendshapes.npy: 60 rows but face_mesh.npy has 10 frames"):
        T.main([*args[:2], "--mesh", str(tmp_path / "short.npy"), *args[4:]])
    np.save(tmp_path / "short_bs.npy", np.load(mp_sample / "blendshapes.npy")[:10])
    with pytest.raises(InputError, match="short.npy: 10 mesh rows but .* has 60 frames"):
        T.main([*args[:2], "--mesh", str(tmp_path / "short.npy"), "--blendshapes", str(tmp_path / "short_bs.npy"),
                *args[6:]])
    with pytest.raises(InputError, match="Basel Face Model"):
        T.main([*args, "--exp-model", "bfm"])


def test_track_params_recreate_transforms_by_adnerf_save_transforms(mp_sample, tmp_path):
    """track_params.pt run through AD-NeRF/ER-NeRF's save_transforms (written out in
    adnerf_save_transforms) gives our transforms_*.json transform_matrix to 1e-5, split included;
    the convention field names AD-NeRF's matrices."""
    import torch

    out = tmp_path
    assert T.main(["--frames", str(mp_sample / "ori_imgs"), "--mesh", str(mp_sample / "face_mesh.npy"),
                   "--blendshapes", str(mp_sample / "blendshapes.npy"),
                   "--landmarks", str(mp_sample / "landmarks.json"),
                   "--out-params", str(out / "track_params.pt"), "--out-train", str(out / "transforms_train.json"),
                   "--out-val", str(out / "transforms_val.json"), "--out-report", str(out / "tracking.json"),
                   "--cfg", json.dumps({"focal_search": [1000, 1400, 200]})]) == 0
    params = torch.load(out / "track_params.pt")
    train = json.loads((out / "transforms_train.json").read_text())
    val = json.loads((out / "transforms_val.json").read_text())
    assert_track_params_recreate_transforms(params, train, val, 512, 512)
    assert [f["img_id"] for f in val["frames"]] == list(range(int(N_SAMPLE * 10 / 11), N_SAMPLE))
    # the sample speaker turns her head: phi (yaw) and psi (roll) vary, so a sign flip would show
    assert np.ptp(params["euler"][:, 1].numpy()) > 0.02 and np.abs(params["euler"][:, 2].numpy()).max() > 0.005
    flipped = dict(params, euler=params["euler"] * torch.tensor([1.0, -1.0, -1.0]))
    with pytest.raises(AssertionError):
        assert_track_params_recreate_transforms(flipped, train, val, 512, 512)
    assert "Ry=[[c,0,s],[0,1,0],[-s,0,c]]" in train["convention"]["euler"]
    assert params["threedmm"] == "not run" and "id" not in params


def test_track_params_take_the_sfm_identity_in_adnerf_schema(mp_sample, tmp_path):
    """With threedmm.npz (Surrey Face Model fitted to the sample's 68 points), track_params.pt has
    AD-NeRF's id / exp / euler / trans / focal: id = the SFM shape [1, 63], exp = the 52 blendshapes,
    exp_sfm = the 6 SFM expression weights; poses unchanged."""
    import torch

    from pipeline.preprocess import threedmm as M
    from pipeline.preprocess.backends.mesh68 import mesh_to_68
    from pipeline.preprocess.landmarks import write_lms
    from tests.test_threedmm import _sfm

    frames = tmp_path / "ori_imgs"
    frames.mkdir()
    mesh = np.load(mp_sample / "face_mesh.npy")
    for i in range(N_SAMPLE):
        (frames / f"{i}.jpg").symlink_to(mp_sample / "ori_imgs" / f"{i}.jpg")
        write_lms(frames / f"{i}.lms", mesh_to_68(mesh[i]))
    npz = tmp_path / "threedmm.npz"
    assert M.main(["--frames", str(frames), "--landmarks", str(mp_sample / "landmarks.json"), "--out", str(npz),
                   "--report", str(tmp_path / "threedmm.json"),
                   "--cfg", json.dumps({"model_dir": str(_sfm()), "identity_frames": 10})]) == 0
    out = tmp_path
    args = ["--frames", str(mp_sample / "ori_imgs"), "--mesh", str(mp_sample / "face_mesh.npy"),
            "--blendshapes", str(mp_sample / "blendshapes.npy"), "--landmarks", str(mp_sample / "landmarks.json"),
            "--out-params", str(out / "track_params.pt"), "--out-train", str(out / "transforms_train.json"),
            "--out-val", str(out / "transforms_val.json"), "--out-report", str(out / "tracking.json"),
            "--cfg", json.dumps({"focal_search": [1000, 1400, 200]}), "--threedmm", str(npz)]
    assert T.main(args) == 0
    params = torch.load(out / "track_params.pt")
    z = np.load(npz)
    assert params["threedmm"] == "ok" and params["id_model"] == "surrey_face_model_3448"
    np.testing.assert_array_equal(params["id"].numpy(), z["shape"][None])
    assert params["id"].shape == (1, 63) and params["exp"].shape == (N_SAMPLE, 52)
    np.testing.assert_array_equal(params["exp"].numpy(), np.load(mp_sample / "blendshapes.npy"))
    np.testing.assert_array_equal(params["exp_sfm"].numpy(), z["expression"])
    assert params["exp_sfm_names"] == list(M.EXPRESSION_NAMES) and params["exp_names"][0] == "_neutral"
    assert params["euler"].shape == params["trans"].shape == (N_SAMPLE, 3) and params["focal"].shape == (1,)
    train = json.loads((out / "transforms_train.json").read_text())
    val = json.loads((out / "transforms_val.json").read_text())
    assert_track_params_recreate_transforms(params, train, val, 512, 512)
    assert json.loads((out / "tracking.json").read_text())["threedmm"] == "ok"
    # an n/a fit leaves id out and says why
    na = tmp_path / "na.npz"
    np.savez(na, status=np.array("n/a"), reason=np.array("Surrey Face Model files not found in x"))
    assert T.main([*args[:-1], str(na)]) == 0
    params = torch.load(out / "track_params.pt")
    assert "id" not in params and params["threedmm"] == "n/a: Surrey Face Model files not found in x"


def test_focal_undetermined_hand_curves():
    grid = np.array([600.0, 700.0, 800.0, 900.0])
    assert T.focal_undetermined(grid, [0.50, 0.45, 0.40, 0.38], 0.01).startswith("minimum on the grid border (900 px")
    assert T.focal_undetermined(grid, [0.30, np.nan, 0.40, 0.50], 0.01).startswith("minimum on the grid border (600 px")
    # interior minimum, range 0.009 / 0.5 = 1.8 % (the sample's measured curve): determined
    assert T.focal_undetermined(grid, [0.509, 0.500, 0.503, 0.505], 0.01) is None
    # interior minimum, range 0.004 / 0.5 = 0.8 %: flat
    assert T.focal_undetermined(grid, [0.504, 0.500, 0.502, 0.503], 0.01).startswith("flat search curve (0.500..0.504")
    # errors near 0 (noise-free landmarks): the 0.1 px floor keeps tiny differences from looking large
    assert T.focal_undetermined(grid, [0.0008, 0.0007, 0.0009, 0.0010], 0.01).startswith("flat")
    assert T.focal_undetermined(np.array([1200.0]), [0.3], 0.01) is None


def test_still_clip_gets_the_focal_prior_and_says_so(mp_sample, tmp_path, capsys):
    """A clip with no head rotation (the sample's first frame repeated 60 times, made here): the focal
    search cannot tell focals apart, so the documented prior is used, scaled to the crop size, with
    one warning line and the reason in tracking.json."""
    frames = tmp_path / "ori_imgs"
    frames.mkdir()
    for i in range(N_SAMPLE):
        (frames / f"{i}.jpg").symlink_to(mp_sample / "ori_imgs" / "0.jpg")
    mesh = np.repeat(np.load(mp_sample / "face_mesh.npy")[:1], N_SAMPLE, axis=0)
    bs = np.repeat(np.load(mp_sample / "blendshapes.npy")[:1], N_SAMPLE, axis=0)
    np.save(tmp_path / "mesh.npy", mesh)
    np.save(tmp_path / "bs.npy", bs)
    out = tmp_path
    assert T.main(["--frames", str(frames), "--mesh", str(tmp_path / "mesh.npy"), "--blendshapes",
                   str(tmp_path / "bs.npy"), "--landmarks", str(mp_sample / "landmarks.json"),
                   "--out-params", str(out / "track_params.pt"), "--out-train", str(out / "train.json"),
                   "--out-val", str(out / "val.json"), "--out-report", str(out / "tracking.json")]) == 0
    rep = json.loads((out / "tracking.json").read_text())
    assert rep["focal_source"] == "prior" and rep["focal_len"] == 1000.0  # 512 px crop: the prior unscaled
    assert rep["focal_prior_reason"].startswith(("minimum on the grid border", "flat search curve"))
    assert json.loads((out / "train.json").read_text())["focal_len"] == 1000.0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "focal length not determined" in ln]
    assert len(lines) == 1 and "using the prior 1000 px" in lines[0] and "too little head rotation" in lines[0]
    # the prior scales with the crop size; a clip with head motion keeps its searched focal
    tpl, lms, _, _ = _synthetic()
    res = T.track_landmarks(lms * 0.5, tpl, T.TrackingConfig(focal_search=(300, 1200, 50)), 256, 256)
    assert res.extra["focal_source"] == "search" and abs(res.focal - 600) <= 50
    still = np.repeat(lms[:1] * 0.5, 30, axis=0)
    res = T.track_landmarks(still, tpl, T.TrackingConfig(), 256, 256)
    assert res.extra["focal_source"] == "prior" and res.focal == 500.0


def test_faceless_frames_from_landmarks_report_leave_the_splits(mp_sample, tmp_path, capsys):
    """tracking reads landmarks.json excluded_frames: those frames are in neither transforms file, one
    log line names them; with fewer than two frames left it refuses in one line."""
    rep = json.loads((mp_sample / "landmarks.json").read_text())
    lm = tmp_path / "landmarks.json"
    lm.write_text(json.dumps({**rep, "failed_frames": list(range(20, 40)), "excluded_frames": list(range(20, 40))}))
    out = tmp_path
    args = ["--frames", str(mp_sample / "ori_imgs"), "--mesh", str(mp_sample / "face_mesh.npy"),
            "--blendshapes", str(mp_sample / "blendshapes.npy"), "--landmarks", str(lm),
            "--out-params", str(out / "track_params.pt"), "--out-train", str(out / "train.json"),
            "--out-val", str(out / "val.json"), "--out-report", str(out / "tracking.json"),
            "--cfg", json.dumps({"focal_search": [1000, 1400, 200]})]
    assert T.main(args) == 0
    ids = [f["img_id"] for name in ("train.json", "val.json") for f in json.loads((out / name).read_text())["frames"]]
    assert ids == [*range(20), *range(40, N_SAMPLE)]
    assert json.loads((out / "tracking.json").read_text())["excluded_frames"] == list(range(20, 40))
    err = capsys.readouterr().err
    assert "left out 20 frames without a face (frames 20-39) from the train/val splits; 40 frames remain" in err
    lm.write_text(json.dumps({**rep, "excluded_frames": list(range(1, N_SAMPLE))}))
    with pytest.raises(InputError, match="landmarks.json: 1 frames with a face: too few for a train and a validation split"):
        T.main(args)
