"""The metrics CLI and rule on the sample identity's frames: every metric is a number or n/a with a
reason, in exactly the JSON shape the report reads.

The "renders" are written through the render contract (pipeline.render.contract.write_contract)
from the sample clip's own frames, so identical inputs have known answers (PSNR inf, LPIPS 0).
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import PROJECT_ROOT, SAMPLE_VIDEO, make_workdir

torch.set_num_threads(1)
N = 8
NAMES = ("psnr", "ssim", "lpips", "fid", "lmd", "lmd_face", "aue", "aue_lower", "aue_upper",
         "au_acc", "lmd_lips", "lse_c", "lse_d", "csim", "cpbd", "fps", "training_time_s")


def _dataset(root):
    """A minimal dataset folder from the sample clip: gt_imgs/{i}.jpg, ori_imgs/0.jpg,
    transforms_train.json (training frames 0..N-1), manifest.json. Returns (folder, RGB frames)."""
    data = root / "results" / "data" / "German"
    (data / "gt_imgs").mkdir(parents=True)
    (data / "ori_imgs").mkdir()
    cap = cv2.VideoCapture(str(SAMPLE_VIDEO))
    frames = []
    for i in range(N):
        ok, img = cap.read()
        assert ok
        cv2.imwrite(str(data / "gt_imgs" / f"{i}.jpg"), img)
        frames.append(cv2.cvtColor(cv2.imread(str(data / "gt_imgs" / f"{i}.jpg")), cv2.COLOR_BGR2RGB))
    cap.release()
    cv2.imwrite(str(data / "ori_imgs" / "0.jpg"), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
    (data / "transforms_train.json").write_text(json.dumps({"frames": [{"img_id": i, "aud_id": i} for i in range(N)]}))
    (data / "manifest.json").write_text("{}")
    return data, frames


def _render(root, method, test, frames, gt_dir=None):
    from pipeline.render.contract import write_contract

    out = root / "results" / "renders" / method / "German" / test
    self_driven = gt_dir is not None
    write_contract(out, frames, np.zeros(16000, np.float32), {
        "method": method, "identity": "German", "test": test,
        "protocol": "self_driven" if self_driven else "cross_driven",
        "driving_audio": {"path": "aud.wav", "sha256": "0" * 64}, "compositing": "full", "controls": {},
        "device": "cpu", "render_seconds": 2.0, "fps_render": N / 2.0,
        "gt_reference": {"dir": str(gt_dir), "indices": list(range(N))} if self_driven else None})
    return out


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    data, frames = _dataset(root)
    from tests.test_metrics import _standin_alexnet

    weights = root / "standin_weights"
    weights.mkdir()
    _standin_alexnet(weights)
    return root, data, frames, weights


def _check_shape(res, n):
    assert list(res) == ["method", "identity", "test", "protocol", "n_frames", "compositing", "resolution",
                         "training", "metrics"]
    assert res["n_frames"] == n
    assert tuple(res["metrics"]) == NAMES
    for name, m in res["metrics"].items():
        assert set(m) == {"value", "backend", "weights_sha256", "na_reason", "n_frames", "note"}, name
        if m["value"] is None:
            assert m["na_reason"], f"{name}: n/a without a reason"
        else:
            assert m["na_reason"] is None
            v = float(m["value"])  # "inf" for identical-frame PSNR
            assert not math.isnan(v), name


def test_self_driven_identical_render(sample):
    from pipeline.metrics.__main__ import main

    root, data, frames, weights = sample
    render = _render(root, "identity_copy", "self", frames, gt_dir=data / "gt_imgs")
    out = root / "results" / "metrics" / "identity_copy" / "German" / "self.json"
    rc = main(["--render", str(render), "--data", str(data), "--out", str(out),
               "--out-frames", str(out.with_suffix(".frames.csv")), "--weights-dir", str(weights), "--no-verify-weights"])
    assert rc == 0
    res = json.loads(out.read_text())
    _check_shape(res, N)
    m = res["metrics"]
    assert m["psnr"]["value"] == "inf" and "identical frames give inf" in m["psnr"]["backend"]
    assert m["ssim"]["value"] == pytest.approx(1.0)
    assert m["lpips"]["value"] == 0.0 and len(m["lpips"]["weights_sha256"]) == 64
    assert m["lmd"]["value"] == 0.0 and m["lmd_face"]["value"] == 0.0 and m["lmd"]["n_frames"] == N
    assert "dlib-68" in m["lmd"]["backend"] or "FAN" in m["lmd"]["backend"]
    assert len(m["lmd"]["weights_sha256"]) == 64 and len(m["csim"]["weights_sha256"]) == 64
    assert m["aue"]["value"] == pytest.approx(0.0, abs=1e-9)
    assert m["csim"]["value"] > 0.95 and m["csim"]["backend"]
    # the identity reference is named in the backend, and the tables read it from there for the header
    from pipeline.report.presets import compared_against

    assert re.fullmatch(r"mean embedding of (\d+) training frames", compared_against(m["csim"]["backend"]))
    assert 0 < m["cpbd"]["value"] < 1
    assert m["fps"]["value"] == N / 2.0
    for name in ("fid", "lse_c", "lse_d"):   # no real weights in the test's folder
        assert m[name]["value"] is None and "not found" in m[name]["na_reason"]
    assert "no model folder" in m["training_time_s"]["na_reason"]
    import pandas as pd

    df = pd.read_csv(out.with_suffix(".frames.csv"))
    assert len(df) == N and list(df["gt_index"]) == list(range(N))
    assert np.isinf(df["psnr"]).all()


def test_self_driven_differs_and_cross_driven(sample):
    from pipeline.metrics.__main__ import main

    root, data, frames, weights = sample
    blurred = [cv2.GaussianBlur(f, (0, 0), 2.0) for f in frames]
    render = _render(root, "blurred", "self", blurred, gt_dir=data / "gt_imgs")
    out = root / "m_blur.json"
    model = root / "results" / "models" / "blurred" / "German"
    model.mkdir(parents=True)
    (model / "train_manifest.json").write_text(json.dumps(  # pipeline.train's shape
        {"device": "cpu", "seconds": {"head": 100.0, "lips": 20.0, "torso": 3.5, "total": 123.5, "validation": 4.0}}))
    assert main(["--render", str(render), "--data", str(data), "--model-dir", str(model), "--out", str(out),
                 "--out-frames", str(root / "m_blur.csv"), "--weights-dir", str(weights), "--no-verify-weights", "--threads", "2",
                 "--cfg", json.dumps({"self_driven": ["psnr", "ssim", "lpips", "lmd", "cpbd"]})]) == 0
    res = json.loads(out.read_text())
    _check_shape(res, N)
    m = res["metrics"]
    # PSNR and SSIM: scikit-image's definitions, frame by frame, averaged over the frames
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    gts, preds = [f / 255.0 for f in frames], [b / 255.0 for b in blurred]
    assert m["psnr"]["value"] == pytest.approx(
        np.mean([peak_signal_noise_ratio(g, p, data_range=1) for g, p in zip(gts, preds)]), abs=1e-6)
    assert m["ssim"]["value"] == pytest.approx(np.mean(
        [structural_similarity(g, p, channel_axis=-1, data_range=1) for g, p in zip(gts, preds)]), abs=1e-6)
    assert m["lpips"]["value"] > 0
    assert m["lmd"]["value"] > 0
    assert m["training_time_s"]["value"] == 123.5
    assert "not in config metrics.self_driven" in m["aue"]["na_reason"]

    cross = _render(root, "blurred", "jfk", blurred)
    out = root / "m_cross.json"
    assert main(["--render", str(cross), "--data", str(data), "--out", str(out),
                 "--out-frames", str(root / "m_cross.csv"), "--weights-dir", str(weights), "--no-verify-weights"]) == 0
    res = json.loads(out.read_text())
    _check_shape(res, N)
    m = res["metrics"]
    assert res["protocol"] == "cross_driven"
    for name in ("psnr", "ssim", "lpips", "lmd", "aue"):
        assert "needs ground truth" in m[name]["na_reason"]
    assert "not in config metrics.cross_driven" in m["fid"]["na_reason"]  # opt-in: vs training frames
    assert m["csim"]["value"] > 0.9 and m["cpbd"]["value"] < 0.5


def test_standin_network_under_a_real_file_name_is_refused(sample, tmp_path):
    """By default the metrics stage checks weights: the stand-in AlexNet saved as
    alexnet-owt-7be5be79.pth stops the job with one line naming the file and both hashes,
    instead of producing an LPIPS number."""
    from pipeline.weights import load_manifest, sha256_of

    root, data, frames, weights = sample
    render = _render(root, "refused", "self", frames, gt_dir=data / "gt_imgs")
    proc = subprocess.run([sys.executable, "-m", "pipeline.metrics", "--render", str(render), "--data", str(data),
                           "--out", str(tmp_path / "o.json"), "--out-frames", str(tmp_path / "o.csv"),
                           "--weights-dir", str(weights), "--cfg", json.dumps({"self_driven": ["lpips"]})],
                          cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and not (tmp_path / "o.json").exists()
    path = weights / "alexnet-owt-7be5be79.pth"
    line = next(ln for ln in proc.stderr.splitlines() if str(path) in ln)
    assert sha256_of(path) in line and load_manifest()["lpips_alexnet"].sha256 in line


class _MeanColourFeatures:
    """A 6-d stand-in for the Inception features (per-channel mean and std of the frame): the
    cross-driven FID glue is checked without pytorch-fid's 2048-d sqrtm (a minute on 2 cores)."""

    backend = "test features"
    weights_sha256 = None

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, frames):
        f = np.asarray(frames, np.float64)
        return np.concatenate([f.mean((1, 2)), f.std((1, 2))], axis=1)


def test_cross_driven_fid_is_against_the_training_frames(sample, monkeypatch, tmp_path):
    """FID in a cross-driven test (config metrics.cross_driven: fid) compares the render with the
    identity's training frames: a render of those very frames scores ~0, a blurred one more."""
    import pipeline.metrics.fid as fid
    from pipeline.metrics.compute import MetricsConfig, evaluate_render

    root, data, frames, weights = sample
    monkeypatch.setattr(fid, "InceptionFeatures", _MeanColourFeatures)
    cfg = MetricsConfig(cross_driven=["fid"], weights_dir=weights)
    same = evaluate_render(_render(root, "fid_copy", "jfk", frames), data, None, cfg)[0]["metrics"]["fid"]
    blurred = [cv2.GaussianBlur(f, (0, 0), 4.0) for f in frames]
    blur = evaluate_render(_render(root, "fid_blur", "jfk", blurred), data, None, cfg)[0]["metrics"]["fid"]
    assert same["value"] == pytest.approx(0.0, abs=1e-6) and same["n_frames"] == N
    assert f"against {N} training frames of the identity" in same["backend"]
    assert blur["value"] > 1e-4
    # without fid in the config it stays n/a with the reason
    cfg = MetricsConfig(cross_driven=["cpbd"], weights_dir=weights)
    res = evaluate_render(_render(root, "fid_copy", "jfk", frames), data, None, cfg)[0]["metrics"]["fid"]
    assert res["value"] is None and "not in config metrics.cross_driven" in res["na_reason"]


def test_nerf3dtalker_table1_metrics_on_renders(sample):
    """au_acc and lmd_lips (config groups of the same names): a render of the ground-truth frames
    agrees on every lip AU and has lip distance 0; a render stretched vertically by 15% moves the
    lip points (relative to their centre) by several pixels."""
    from pipeline.metrics.compute import MetricsConfig, evaluate_render

    root, data, frames, weights = sample
    cfg = MetricsConfig(self_driven=["au_acc", "lmd_lips"], weights_dir=weights)
    same, per = evaluate_render(_render(root, "t1_same", "self", frames, gt_dir=data / "gt_imgs"), data, None, cfg)
    _check_shape(same, N)
    m = same["metrics"]
    assert m["au_acc"]["value"] == 1.0 and m["au_acc"]["n_frames"] == N
    assert "AU10/14/20/25/26 presence" in m["au_acc"]["backend"]
    assert m["lmd_lips"]["value"] == pytest.approx(0.0, abs=1e-9) and "FACEMESH_LIPS" in m["lmd_lips"]["backend"]
    assert len(per["lmd_lips"]) == N
    assert m["aue"]["value"] is None and "not in config" in m["aue"]["na_reason"]
    h = frames[0].shape[0]
    stretched = [cv2.resize(f, None, fx=1.0, fy=1.15)[(int(h * 1.15) - h) // 2:][:h] for f in frames]
    moved = evaluate_render(_render(root, "t1_moved", "self", stretched, gt_dir=data / "gt_imgs"), data, None, cfg)[0]
    assert moved["metrics"]["lmd_lips"]["value"] > 1.0


def test_bad_render_manifest_is_one_clear_line(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "manifest.json").write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "pipeline.metrics", "--render", str(tmp_path / "r"),
                           "--out", str(tmp_path / "o.json"), "--out-frames", str(tmp_path / "o.csv")],
                          cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "manifest.json: not valid JSON" in proc.stderr
    assert not (tmp_path / "o.json").exists()


def test_render_without_a_face_gets_no_lmd_for_that_frame(sample, tmp_path):
    """Landmarks are detected in the render itself: frames where the render shows no face (here
    3 grey frames) get no LMD, are counted in the metric's note and left out of the mean."""
    from pipeline.metrics.__main__ import main

    root, data, frames, weights = sample
    faceless = [np.full_like(f, 128) if i < 3 else f for i, f in enumerate(frames)]
    render = _render(root, "faceless", "self", faceless, gt_dir=data / "gt_imgs")
    out = tmp_path / "m.json"
    assert main(["--render", str(render), "--data", str(data), "--out", str(out), "--out-frames",
                 str(tmp_path / "m.csv"), "--weights-dir", str(weights), "--no-verify-weights",
                 "--cfg", json.dumps({"self_driven": ["lmd"]})]) == 0
    m = json.loads(out.read_text())["metrics"]["lmd"]
    assert m["n_frames"] == N - 3 and m["value"] == 0.0  # the other frames are the ground truth itself
    assert m["note"] == f"render: no face in 3 of {N} frames (not scored)"
    assert "pixels at 512 px height" in m["backend"]
    import pandas as pd

    df = pd.read_csv(tmp_path / "m.csv")
    assert df["lmd"].isna().tolist() == [True] * 3 + [False] * (N - 3)
    assert df["lmd_status"].tolist()[:4] == ["render_no_face"] * 3 + ["ok"]


def test_static_frame_cannot_score_csim_one_against_the_identity_reference(tmp_path):
    """The CSIM reference is the mean embedding of training frames other than the one that
    static_frame repeats: the repeated frame matches itself with 1.0, but not the reference
    (training frames: one per second of the 12 s sample clip)."""
    from pipeline.metrics.compute import read_rgb
    from pipeline.metrics.identity import (DlibEmbedder, cosine_similarity, identity_reference,
                                           reference_images)
    from pipeline.metrics.landmarks import make_landmarker

    data = tmp_path / "German"
    (data / "gt_imgs").mkdir(parents=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(SAMPLE_VIDEO), "-vf", "fps=1", "-start_number", "0",
                    str(data / "gt_imgs" / "%d.jpg")], check=True)
    n = len(list((data / "gt_imgs").glob("*.jpg")))
    (data / "transforms_train.json").write_text(json.dumps({"frames": [{"img_id": i} for i in range(n)]}))
    emb = DlibEmbedder(make_landmarker(tmp_path)[0])
    # static_frame repeats gt_imgs/{first training img_id}.jpg (pipeline.baselines.spec.first_training_frame)
    repeated = read_rgb(data / "gt_imgs" / "0.jpg")
    refs = reference_images(data)
    assert n >= 10 and "0.jpg" not in {p.name for p in refs}  # frame 0 is never part of the reference
    ref, k = identity_reference(emb, [read_rgb(p) for p in refs])
    assert k == len(refs) == n - 1
    e = emb(repeated)
    assert cosine_similarity(e, e) == pytest.approx(1.0)
    csim = float(cosine_similarity(e, ref))
    assert 0.8 < csim < 0.999, csim  # the same person, but not a copy of the reference (0.994 here)
    assert f"{csim:.3f}" != "1.000"


@pytest.mark.slow
def test_metrics_rule_in_snakemake(sample, tmp_path):
    """The rule runs as one shell call in a temporary working folder (only common.smk and
    metrics.smk included, so the pre-made render and dataset are taken as sources)."""
    root, data, frames, weights = sample
    wd = make_workdir(tmp_path / "wd", {"weights_dir": str(weights),
                                        "metrics": {"self_driven": ["psnr", "ssim", "lpips"]}})
    import shutil

    shutil.copytree(data, wd / "results" / "data" / "German")
    _render(wd, "copy", "self", frames, gt_dir=wd / "results" / "data" / "German" / "gt_imgs")
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        f'configfile: "{wd / "config.yaml"}"\n'
        f'include: "{PROJECT_ROOT / "workflow" / "rules" / "common.smk"}"\n'
        f'include: "{PROJECT_ROOT / "workflow" / "rules" / "metrics.smk"}"\n')
    import os

    from pipeline.weights import VERIFY_ENV

    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(wd), "--cores", "2",
                           "results/metrics/copy/German/self.json"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, VERIFY_ENV: "0"})  # the folder holds a stand-in AlexNet
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((wd / "results" / "metrics" / "copy" / "German" / "self.json").read_text())
    assert res["metrics"]["psnr"]["value"] == "inf" and res["metrics"]["lpips"]["value"] == 0.0
    assert (wd / "results" / "metrics" / "copy" / "German" / "self.frames.csv").is_file()
    assert (wd / "results" / "logs" / "metrics" / "copy" / "German" / "self.log").is_file()
    assert (wd / "results" / "benchmarks" / "metrics" / "copy" / "German" / "self.tsv").is_file()


def test_aue_openface_path_with_a_fake_binary(sample, tmp_path):
    """The OpenFace branch: FeatureExtraction is called on each frame folder and its CSV read (a
    fake binary writes AU01_r..AU45_r = 1 for the generated frames and 0 for the ground truth:
    AUE = 17 x 1, lower 9, upper 8 (AU09 is upper face, as in TalkingGaussian's auerror.py))."""
    from pipeline.metrics.__main__ import main

    root, data, frames, weights = sample
    fake = tmp_path / "FeatureExtraction"
    fake.write_text(f"""#!{sys.executable}
import sys, pathlib
a = sys.argv
fdir, out = pathlib.Path(a[a.index("-fdir") + 1]), pathlib.Path(a[a.index("-out_dir") + 1])
out.mkdir(parents=True, exist_ok=True)
aus = "01 02 04 05 06 07 09 10 12 14 15 17 20 23 25 26 45".split()
v = 1.0 if fdir.name == "gen" else 0.0
rows = ["frame, success, " + ", ".join(f"AU{{x}}_r" for x in aus)]
rows += [f"{{i + 1}}, 1, " + ", ".join(str(v) for _ in aus) for i in range(len(list(fdir.glob("*.png"))))]
(out / "frames.csv").write_text("\\n".join(rows) + "\\n")
""")
    fake.chmod(0o755)
    render = _render(root, "openface", "self", frames, gt_dir=data / "gt_imgs")
    out = tmp_path / "m.json"
    assert main(["--render", str(render), "--data", str(data), "--out", str(out), "--out-frames",
                 str(tmp_path / "m.csv"), "--weights-dir", str(weights), "--no-verify-weights", "--openface-bin", str(fake),
                 "--cfg", json.dumps({"self_driven": ["aue"]})]) == 0
    m = json.loads(out.read_text())["metrics"]
    assert (m["aue"]["value"], m["aue_lower"]["value"], m["aue_upper"]["value"]) == (17.0, 9.0, 8.0)
    assert m["aue"]["backend"] == "OpenFace 2 FeatureExtraction" and m["aue"]["n_frames"] == N


@pytest.mark.slow
def test_sample_identity_static_frame_metrics(sample_workdir):
    """Whole chain on the sample identity: dataset -> static_frame baseline renders -> metrics
    rule; every metric is a number or n/a with a reason."""
    from tests.conftest import run_snakemake

    targets = ["results/metrics/static_frame/German/self.json", "results/metrics/static_frame/German/jfk.json"]
    run_snakemake(sample_workdir, *targets)
    self_res = json.loads((sample_workdir / targets[0]).read_text())
    cross = json.loads((sample_workdir / targets[1]).read_text())
    _check_shape(self_res, self_res["n_frames"])
    _check_shape(cross, cross["n_frames"])
    m = self_res["metrics"]
    assert self_res["protocol"] == "self_driven" and self_res["n_frames"] > 10
    # PSNR: scikit-image's, of each rendered frame against its ground-truth frame, averaged
    from skimage.metrics import peak_signal_noise_ratio

    render = sample_workdir / "results" / "renders" / "static_frame" / "German" / "self"
    gt = json.loads((render / "manifest.json").read_text())["gt_reference"]
    ref = [peak_signal_noise_ratio(cv2.imread(str(sample_workdir / gt["dir"] / f"{j}.jpg")),  # dir: from the workdir
                                   cv2.imread(str(render / "frames" / f"{k}.png")), data_range=255)
           for k, j in enumerate(gt["indices"])]
    assert len(ref) == self_res["n_frames"] and m["psnr"]["value"] == pytest.approx(np.mean(ref), abs=1e-6)
    assert 0 < m["ssim"]["value"] < 1 and m["lmd"]["value"] > 0 and m["csim"]["value"] > 0.8
    # AUE is the sum of its lower- and upper-face parts (pipeline.metrics.aus)
    assert m["aue"]["value"] > 0
    assert m["aue"]["value"] == pytest.approx(m["aue_lower"]["value"] + m["aue_upper"]["value"], rel=1e-9)
    assert "needs ground truth" in cross["metrics"]["psnr"]["na_reason"]
    for res in (self_res, cross):  # 3 s or validation-split clips: under SyncNet's 100-frame minimum
        assert res["metrics"]["lse_d"]["value"] is None and res["metrics"]["lse_d"]["na_reason"]
