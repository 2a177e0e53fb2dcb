"""3DMM stage: the Surrey Face Model (eos-py) fitted to real landmarks.

The SFM files are read from ``../shared/models/sfm`` (the copy tests and CI use; users get them
through the weights manifest). Real data: 8 s of two shared identities, landmarks from the
project's own landmarks stage.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.preprocess import threedmm as M
from tests.conftest import PROJECT_ROOT, require_shared

SFM = PROJECT_ROOT.parent / "shared" / "models" / "sfm"


def _sfm() -> Path:
    if not (SFM / "sfm_shape_3448.bin").is_file():
        pytest.skip(f"{SFM} not found: the SFM files are beside the clone in ../shared/models/sfm")
    return SFM


def test_shared_sfm_files_are_the_weights_manifest_files():
    from pipeline.weights import hash_problem, load_manifest

    folder = _sfm()
    entries = {n: e for n, e in load_manifest().items() if n.startswith("sfm_")}
    assert set(entries) == set(M.SFM_FILES)
    for name, entry in entries.items():
        assert entry.filename == f"sfm/{M.SFM_FILES[name]}"
        assert entry.sha256 and "raw.githubusercontent.com/patrikhuber/eos/" in entry.url
        assert hash_problem(entry, folder / M.SFM_FILES[name]) is None
        assert (folder / M.SFM_FILES[name]).stat().st_size == entry.size
    assert "non-commercial" in entries["sfm_shape_3448"].licence


def test_missing_model_files_give_na_with_fetch_command(tmp_path, monkeypatch):
    monkeypatch.delenv("TALKING_NERF_WEIGHTS", raising=False)
    frames = tmp_path / "ori_imgs"
    frames.mkdir()
    rc = M.main(["--frames", str(frames), "--out", str(tmp_path / "t.npz"), "--report", str(tmp_path / "t.json"),
                 "--weights-dir", str(tmp_path / "no_weights")])
    assert rc == 0
    rep = json.loads((tmp_path / "t.json").read_text())
    assert rep["status"] == "n/a"
    assert f"not found in {tmp_path / 'no_weights' / 'sfm'}" in rep["reason"]
    assert "python -m pipeline.weights fetch sfm_shape_3448" in rep["reason"]
    assert str(np.load(tmp_path / "t.npz")["status"]) == "n/a"
    from pipeline.common.errors import InputError

    with pytest.raises(InputError, match="no 3DMM fit .*Surrey Face Model files not found"):
        M.adnerf_fields(tmp_path / "t.npz", 0)
    assert M.read_status(tmp_path / "t.npz")[0] == "n/a"


def test_weights_dir_as_the_rule_passes_it(tmp_path, monkeypatch):
    """The rule passes config ``weights_dir`` as written (``weights_cache``, relative): the stage
    takes it from the project root, not from the folder Snakemake runs in (``snakemake -d``), and
    ``$TALKING_NERF_WEIGHTS`` overrides it, as config.yaml says (the trainer and the metrics do the
    same, :func:`pipeline.common.config.weights_dir`)."""
    from tests.conftest import PROJECT_ROOT

    (tmp_path / "ori_imgs").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TALKING_NERF_WEIGHTS", raising=False)
    args = ["--frames", "ori_imgs", "--out", "t.npz", "--report", "t.json", "--cfg", json.dumps({"enabled": True})]
    sfm_here = (PROJECT_ROOT / "weights_cache" / "sfm" / "sfm_shape_3448.bin").is_file()
    if not sfm_here:  # the usual case (CI, a fresh clone): n/a naming the project's folder
        assert M.main([*args, "--weights-dir", "weights_cache"]) == 0
        assert f"not found in {PROJECT_ROOT / 'weights_cache' / 'sfm'} (" in json.loads(Path("t.json").read_text())["reason"]
    monkeypatch.setenv("TALKING_NERF_WEIGHTS", str(tmp_path / "elsewhere"))
    assert M.main([*args, "--weights-dir", "weights_cache"]) == 0
    assert f"not found in {tmp_path / 'elsewhere' / 'sfm'} (" in json.loads(Path("t.json").read_text())["reason"]


def _landmarks(tmp_path: Path, video: Path, n: int) -> Path:
    """ori_imgs/{i}.jpg + .lms of the first ``n`` frames, by the project's landmarks stage."""
    from pipeline.preprocess import landmarks

    root = tmp_path / video.stem
    frames = root / "ori_imgs"
    frames.mkdir(parents=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-frames:v", str(n), "-q:v", "2",
                    "-start_number", "0", str(frames / "%d.jpg")], check=True)
    assert landmarks.main(["--frames", str(frames), "--out-mesh", str(root / "face_mesh.npy"),
                           "--out-blendshapes", str(root / "bs.npy"),
                           "--out-report", str(root / "landmarks.json"), "--cfg", json.dumps({"backend": "mediapipe"})]) == 0
    return root


@pytest.fixture(scope="module")
def two_identities(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sfm_ids")
    return {name: _landmarks(tmp, require_shared("identities", f), 200)
            for name, f in (("German", "German_20s.mp4"), ("Trump", "Trump_10s.mp4"))}


def _mesh_rms_mm(sfm: M.SurreyModel, a: np.ndarray, b: np.ndarray) -> float:
    """RMS vertex distance (mm) between the SFM shapes of two coefficient vectors."""
    d = (sfm.basis @ (a - b)).reshape(-1, 3)
    return float(np.sqrt((d ** 2).sum(1).mean()))


def test_cli_on_real_identity_reports_landmark_error(two_identities, tmp_path):
    root = two_identities["German"]
    out, rep = tmp_path / "threedmm.npz", tmp_path / "threedmm.json"
    assert M.main(["--frames", str(root / "ori_imgs"), "--landmarks", str(root / "landmarks.json"),
                   "--out", str(out), "--report", str(rep), "--cfg", json.dumps({"model_dir": str(_sfm())})]) == 0
    r = json.loads(rep.read_text())
    assert r["status"] == "ok" and r["frames"] == 200 and len(r["identity_frames"]) == 40
    # measured 2.9 px at 512x512 (face about 250 px wide); a wrong camera or mapping gives tens of px
    assert 0.5 < r["mean_landmark_error_px"] < 4.5
    z = np.load(out)
    assert z["shape"].shape == (63,) and z["expression"].shape == (200, 6) and (z["expression"] >= 0).all()
    assert z["rotation"].shape == (200, 3, 3) and z["camera"].shape == (200, 3, 4)
    np.testing.assert_allclose(z["rotation"] @ np.transpose(z["rotation"], (0, 2, 1)),
                               np.broadcast_to(np.eye(3), (200, 3, 3)), atol=1e-4)
    assert list(z["expression_names"]) == list(M.EXPRESSION_NAMES)
    # the camera reproduces the reported error from the stored parts
    sfm = M.load_sfm(_sfm())
    lms = np.loadtxt(root / "ori_imgs" / "17.lms")
    face = sfm.mean + sfm.basis @ z["shape"] + sfm.expr @ z["expression"][17]
    err = np.linalg.norm(M.project(z["camera"][17].astype(np.float64), face, sfm.vertex_ids) - lms[sfm.ibug], axis=1)
    assert err.mean() == pytest.approx(z["landmark_error"][17], abs=0.05)
    # the AD-NeRF track_params fields for the tracking stage to merge
    fields = M.adnerf_fields(out, 200)
    assert set(fields) == set(M.TRACK_PARAMS_KEYS)
    np.testing.assert_array_equal(fields["id"], z["shape"][None])
    np.testing.assert_array_equal(fields["exp_sfm"], z["expression"])
    assert fields["exp_sfm_names"] == list(M.EXPRESSION_NAMES)
    from pipeline.common.errors import InputError

    with pytest.raises(InputError, match="200 frames but the clip has 10"):
        M.adnerf_fields(out, 10)
    # pose parts: u = s (R[0] X + tx), v = H - s (R[1] X + ty)
    s, rot, t = z["scale"][17], z["rotation"][17], z["translation"][17]
    v = face.reshape(-1, 3)[sfm.vertex_ids]
    u = s * (v @ rot[0] + t[0])
    np.testing.assert_allclose(u, v @ z["camera"][17][0, :3] + z["camera"][17][0, 3], atol=0.05)


def test_identity_shape_is_stable_across_halves_of_a_clip(two_identities):
    """Fitted on the first and on the second 4 s of a clip, the shape of one person differs far
    less than the shapes of two people (measured: 0.7-0.9 mm vs about 4 mm RMS over the mesh)."""
    sfm = M.load_sfm(_sfm())
    cfg = M.ThreeDMMConfig()
    halves = {}
    for name, root in two_identities.items():
        lms, w, h = M.read_frame_landmarks(root / "ori_imgs")
        halves[name] = [M.fit_clip(sfm, part, w, h, cfg).shape for part in (lms[:100], lms[100:])]
    within = [_mesh_rms_mm(sfm, a, b) for a, b in halves.values()]
    between = [_mesh_rms_mm(sfm, a, b) for a in halves["German"] for b in halves["Trump"]]
    assert max(within) < 0.4 * min(between), (within, between)
    assert max(within) < 1.5  # millimetres


def test_benchmark_shape_distance_hand_value():
    """benchmark_threedmm.mesh_rms_mm: two vertices, one moved by (3, 4, 0) mm -> RMS sqrt(25 / 2)."""
    from pipeline.preprocess.benchmark import format_load, load_average
    from pipeline.preprocess.benchmark_threedmm import mesh_rms_mm

    basis = np.eye(6)[:, :3]  # coefficient k moves vertex 0 along axis k
    assert mesh_rms_mm(basis, [3.0, 4.0, 0.0], [0.0, 0.0, 0.0]) == pytest.approx(np.sqrt(12.5))
    assert mesh_rms_mm(basis, [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.0
    load = load_average(1.234)
    assert load["before"] == 1.23 and load["cpus"] >= 1 and format_load(load).startswith("load average (1 min)")
