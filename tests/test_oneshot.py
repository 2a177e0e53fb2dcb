"""One-shot path (pipeline/oneshot/): the meshwarp backend on real faces, the reference-photo
checks, the render contract of a one-shot run and its bounds."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import PROJECT_ROOT, assert_latex_compiles, require_shared
from tests.test_report import _parse_latex_rows


def _video_frames(path, size):
    from pipeline.oneshot.face import resize_max
    from pipeline.preprocess.media import iter_frames, probe_media

    info = probe_media(path)
    return [resize_max(f, size) for f in iter_frames(path, width=info.width, height=info.height)]


def _psnr(a, b):
    return float(-10 * np.log10(np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2)))


@pytest.fixture(scope="module")
def may():
    """May_5s.mp4 at 256 px: frame 0 (the photo), its face, the rest (driver) and its track."""
    from pipeline.oneshot.face import photo_face, track_frames

    frames = _video_frames(require_shared("identities", "May_5s.mp4"), 256)
    drv = frames[1:]
    return frames[0], photo_face(frames[0], "May frame 0"), drv, track_frames(drv)


def _drive(photo, ptrack, drv, track):
    from pipeline.oneshot.face import choose_anchor
    from pipeline.oneshot.meshwarp import MeshWarp

    a, _ = choose_anchor(track)
    mw = MeshWarp(photo, ptrack, track, a)
    return [mw.frame(t, drv[t]) for t in range(len(drv))], a


def test_piecewise_affine_matches_scikit_image():
    """Our rasterised piecewise-affine maps equal scikit-image's PiecewiseAffineTransform inverse
    (same Delaunay triangulation of the source points) inside the mesh."""
    from skimage.transform import PiecewiseAffineTransform

    from pipeline.oneshot.meshwarp import PiecewiseAffine

    from scipy.spatial import Delaunay

    w = h = 64
    corners = np.array([(0, 0), (63, 0), (0, 63), (63, 63)], np.float64)
    key = lambda pts: sorted(map(tuple, np.sort(Delaunay(pts).simplices, 1)))
    for seed in range(20):   # random interior points in general position, a small warp that keeps the triangles
        rng = np.random.default_rng(seed)
        src = np.concatenate([corners, rng.uniform(5, 58, (20, 2))])
        dst = src.copy()
        dst[4:] += rng.uniform(-0.6, 0.6, (20, 2))
        if key(src) == key(dst):      # same triangles, so skimage (triangulating dst) is comparable
            break
    assert key(src) == key(dst)
    inner = np.arange(len(src)) >= 4
    mx, my = PiecewiseAffine(src, w, h).maps(dst)
    t = PiecewiseAffineTransform()
    assert t.estimate(dst, src)          # skimage: dst -> src mapping
    ys, xs = np.mgrid[0:h, 0:w]
    ref = t(np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64))
    got = np.stack([mx.ravel(), my.ravel()], 1)
    err = np.abs(got - ref).max(1)
    assert np.mean(err < 1e-4) > 0.85          # inside the triangles: the same map (float32)
    assert err.mean() < 0.01
    assert err.max() < 0.5                     # pixels on edges take the neighbour's (continuous) map
    # an interior control point maps onto its source point
    i = int(np.flatnonzero(inner)[0])
    x, y = np.round(dst[i]).astype(int)
    assert np.allclose([mx[y, x], my[y, x]], src[i] + (np.array([x, y]) - dst[i]), atol=0.6)


def test_same_person_beats_unmoved_photo(may):
    """Frame 0 of May_5s driven by the rest of the clip: face-box PSNR above the unmoved photo's and
    the mouth opening follows the driver (correlation >= 0.8)."""
    from pipeline.oneshot.face import mouth_opening, track_frames

    photo, ptrack, drv, track = may
    outs, a = _drive(photo, ptrack, drv, track)
    assert np.array_equal(outs[a].shape, photo.shape)
    p_out, p_photo = [], []
    for t in range(len(drv)):
        m = track.mesh[t, :, :2]
        x0, y0 = np.maximum(np.floor(m.min(0)).astype(int), 0)
        x1, y1 = np.ceil(m.max(0)).astype(int)
        p_out.append(_psnr(outs[t][y0:y1, x0:x1], drv[t][y0:y1, x0:x1]))
        p_photo.append(_psnr(photo[y0:y1, x0:x1], drv[t][y0:y1, x0:x1]))
    assert np.mean(p_out) > np.mean(p_photo) + 0.3, (np.mean(p_out), np.mean(p_photo))
    out_track = track_frames(outs)
    r = np.corrcoef(mouth_opening(out_track.mesh), mouth_opening(track.mesh))[0, 1]
    assert r >= 0.8, r
    # the unmoved photo has no mouth motion at all: the correlation comes from the warp
    assert np.ptp(mouth_opening(out_track.mesh)) > 0.5 * np.ptp(mouth_opening(track.mesh))


def test_other_person_keeps_identity(may):
    """Macron.png driven by May_5s: dlib descriptor distance to the photo below 0.35 and below the
    photo-vs-driver distance."""
    from pipeline.metrics.identity import DlibEmbedder
    from pipeline.metrics.landmarks import make_landmarker
    from pipeline.oneshot.face import photo_face, read_image, resize_max

    _, _, drv, track = may
    path = require_shared("photos", "Macron.png")
    photo = resize_max(read_image(path), 256)
    outs, _ = _drive(photo, photo_face(photo, path), drv, track)
    emb = DlibEmbedder(make_landmarker("/nonexistent-weights", detect_scale=1.0)[0])
    ref = emb(photo)
    picks = range(0, len(outs), 8)
    d_out = [np.linalg.norm(emb(outs[t]) - ref) for t in picks]
    d_drv = [np.linalg.norm(emb(drv[t]) - ref) for t in picks]
    assert max(d_out) < 0.35, d_out
    assert np.mean(d_out) < np.mean(d_drv) - 0.2, (np.mean(d_out), np.mean(d_drv))


@pytest.mark.parametrize("case", ["no_face", "two_faces"])
def test_bad_photo_refused_with_one_line(tmp_path, case):
    """A photo without a face or with two faces: one InputError line naming the file."""
    from pipeline.common.errors import InputError
    from pipeline.oneshot.face import photo_face, read_image

    mac = read_image(require_shared("photos", "Macron.png"))
    if case == "no_face":
        img = np.ascontiguousarray(mac[-96:, :, :])          # the bottom strip: collar and suit
        img = cv2.resize(img, (512, 192))
    else:
        obama = read_image(require_shared("photos", "obama.jpg"))
        obama = cv2.resize(obama, (410, 512))
        img = np.concatenate([mac, obama], 1)
    path = tmp_path / f"{case}.png"
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    with pytest.raises(InputError) as exc:
        photo_face(read_image(path), path)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(path))
    assert ("no face" in msg) if case == "no_face" else ("2 faces" in msg)
    # the CLI prints that line and exits non-zero
    proc = subprocess.run([sys.executable, "-m", "pipeline.oneshot", "--reference", "x", "--photo", str(path),
                           "--driving", str(require_shared("identities", "May_5s.mp4")), "--test", "t",
                           "--backend", "meshwarp", "--out", str(tmp_path / "out")],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert msg in proc.stderr
    assert not (tmp_path / "out").exists()


def test_anchor_is_neutral_mouth_closed(may):
    """The automatic anchor has the mouth closed (opening among the smallest 10% of the clip)."""
    from pipeline.oneshot.face import choose_anchor, mouth_opening

    _, _, _, track = may
    a, rec = choose_anchor(track)
    mo = mouth_opening(track.mesh)
    assert mo[a] <= np.quantile(mo, 0.1)
    assert rec["index"] == a and rec["chosen"] == "auto" and rec["reason"]


def test_render_contract_and_bounds(tmp_path):
    """CLI run (Macron.png x May_5s.mp4, 128 px): a valid render contract with protocol one_shot,
    the photo's sha256, anchor, backend and reason; the two bounds beside it; the flipped run is
    the mirror image at the anchor."""
    from pipeline.oneshot.bounds import render_bound
    from pipeline.render.contract import sha256_file, validate_contract

    photo = require_shared("photos", "Macron.png")
    drv = require_shared("identities", "May_5s.mp4")
    out = tmp_path / "oneshot_meshwarp" / "Macron" / "May"
    proc = subprocess.run([sys.executable, "-m", "pipeline.oneshot", "--reference", "Macron", "--photo", str(photo),
                           "--driving", str(drv), "--test", "May", "--backend", "auto", "--size", "128",
                           "--weights-dir", str(tmp_path / "no_weights"), "--method", "oneshot_meshwarp",
                           "--out", str(out)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert validate_contract(out) == []
    m = json.loads((out / "manifest.json").read_text())
    assert m["protocol"] == "one_shot" and m["n_frames"] == 125 and m["resolution"] == [128, 128]
    assert m["reference"]["sha256"] == sha256_file(photo)
    assert m["backend"]["name"] == "meshwarp" and "LivePortrait weights missing" in m["backend"]["reason"]
    assert "python -m pipeline.weights fetch liveportrait_" in m["backend"]["reason"]
    assert 0 <= m["anchor"]["index"] < 125 and m["fps_render"] > 0
    assert m["driving_audio"]["sha256"] == sha256_file(drv)
    for kind in ("still_photo", "driving_video"):
        bo = tmp_path / kind / "Macron" / "May"
        bm = render_bound(kind, "Macron", photo, drv, "May", bo, size=128)
        assert validate_contract(bo) == [] and bm["n_frames"] == 125 and bm["resolution"] == [128, 128]
    still = cv2.imread(str(tmp_path / "still_photo" / "Macron" / "May" / "frames" / "7.png"))
    anchor = cv2.imread(str(out / "frames" / f"{m['anchor']['index']}.png"))
    assert _psnr(still, anchor) > 40      # at the anchor frame the output is the photo


def _track(mesh, bs, pose, names):
    from pipeline.oneshot.face import FaceTrack

    return FaceTrack(mesh.astype(np.float32), bs.astype(np.float32), pose.astype(np.float32),
                     np.ones(len(mesh), bool), names, (128, 128))


def _rot_y(deg):
    t = np.radians(deg)
    m = np.eye(4)
    m[:3, :3] = [[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]]
    return m


def test_motion_fidelity_hand_values():
    """Expression L1, pose error and mouth correlation against hand-computed values."""
    from pipeline.oneshot.face import LIP_MID
    from pipeline.oneshot.metrics import motion_fidelity

    rng = np.random.default_rng(1)
    n = 6
    names = ["_neutral", "eyeLookInLeft", "jawOpen", "mouthSmileLeft"]
    base = rng.uniform(0, 100, (478, 3))
    base[33, :2], base[263, :2] = (40, 50), (90, 50)          # eye corners 50 px apart
    mesh = np.repeat(base[None], n, 0)
    gaps = np.array([0.0, 5.0, 10.0, 2.0, 8.0, 1.0])
    mesh[:, LIP_MID, 0] = 60.0
    mesh[:, LIP_MID[0], 1] = 80.0
    mesh[:, LIP_MID[1], 1] = 80.0 + gaps
    bs = rng.uniform(0, 1, (n, 4))
    pose = np.stack([_rot_y(d) for d in (0, 5, 10, 0, 3, 0)])
    drv = _track(mesh, bs, pose, names)
    res, _ = motion_fidelity(drv, drv, 0)
    assert res["expr_l1"].value == pytest.approx(0.0, abs=1e-7)
    assert res["pose_err_deg"].value == pytest.approx(0.0, abs=1e-3)
    assert res["mouth_corr"].value == pytest.approx(1.0)
    # output: blendshapes offset by a constant (anchor-relative: no error) except jawOpen +0.2 in
    # frame 3; head turned 10 degrees further in every frame but the anchor; mouth gaps reversed
    bs_out = bs + 0.3
    bs_out[3, 2] += 0.2
    pose_out = np.stack([_rot_y(d) for d in (0, 15, 20, 10, 13, 10)])
    mesh_out = mesh.copy()
    mesh_out[:, LIP_MID[1], 1] = 80.0 + gaps[::-1]
    out = _track(mesh_out, bs_out, pose_out, names)
    res, frames = motion_fidelity(out, drv, 0)
    # 2 expression columns (jawOpen, mouthSmileLeft): frame 3 has |0.2| / 2, the rest 0 -> mean 0.1 / 6
    assert res["expr_l1"].value == pytest.approx(0.1 / 6, abs=1e-6)
    assert res["pose_err_deg"].value == pytest.approx(50.0 / 6, abs=1e-3)
    assert res["mouth_corr"].value == pytest.approx(np.corrcoef(gaps[::-1], gaps)[0, 1])
    # a still output: correlation undefined -> n/a with the reason, never a number
    still = _track(np.repeat(mesh[:1], n, 0), np.repeat(bs[:1], n, 0), np.repeat(pose[:1], n, 0), names)
    res, _ = motion_fidelity(still, drv, 0)
    assert res["mouth_corr"].value is None and "constant" in res["mouth_corr"].na_reason
    assert res["pose_err_deg"].value == pytest.approx(np.mean([0, 5, 10, 0, 3, 0]), abs=1e-3)


def test_backend_choice(tmp_path):
    """auto picks meshwarp (reason: missing files + fetch command) until every LivePortrait file is
    present, then liveportrait; an explicit choice is kept."""
    from pipeline.oneshot.backends import LIVEPORTRAIT_WEIGHTS, resolve_backend
    from pipeline.weights import load_manifest

    b, why = resolve_backend("auto", tmp_path)
    assert b == "meshwarp" and "python -m pipeline.weights fetch liveportrait_" in why
    man = load_manifest()
    for name in LIVEPORTRAIT_WEIGHTS[:-1]:
        p = man[name].path(tmp_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    b, why = resolve_backend("auto", tmp_path)
    assert b == "meshwarp" and why.count("liveportrait_") == 2      # listed, and in the fetch command
    man[LIVEPORTRAIT_WEIGHTS[-1]].path(tmp_path).write_bytes(b"x")
    assert resolve_backend("auto", tmp_path)[0] == "liveportrait"
    assert resolve_backend("meshwarp", tmp_path) == ("meshwarp", "set in config oneshot.backend: meshwarp")
    with pytest.raises(ValueError):
        resolve_backend("sadtalker", tmp_path)


def test_plan_of_default_config():
    """The default config: Macron driven by er_nerf's jfk render of every identity, flipped too,
    with both bounds."""
    import yaml

    from pipeline.common.config import validate_config
    from pipeline.oneshot.workflow import OneshotPlan

    cfg = validate_config(yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text()))
    plan = OneshotPlan(cfg, ["German"])
    assert plan.drivers == {"er_nerf-German-jfk": "results/renders/er_nerf/German/jfk"}
    assert plan.reference_names == ["Macron", "Macron-flipped"]
    assert sorted(plan.runs) == sorted([(plan.method, "Macron", "er_nerf-German-jfk"),
                                        (plan.method, "Macron-flipped", "er_nerf-German-jfk"),
                                        ("still_photo", "Macron", "er_nerf-German-jfk"),
                                        ("driving_video", "Macron", "er_nerf-German-jfk")])
    cfg["oneshot"]["flipped"] = False
    cfg["oneshot"]["bounds"] = False
    assert OneshotPlan(cfg, ["German", "May"]).runs == [
        (plan.method, "Macron", "er_nerf-German-jfk"), (plan.method, "Macron", "er_nerf-May-jfk")]
    # a driving method that is not trained, or an unknown test, drives nothing (no error)
    cfg["oneshot"]["driving_tests"] = ["jfk", "nope"]
    assert list(OneshotPlan(cfg, ["German"]).drivers) == ["er_nerf-German-jfk"]
    cfg["train"]["methods"] = ["rad_nerf"]
    assert OneshotPlan(cfg, ["German"]).runs == []


@pytest.mark.slow
def test_workflow_one_shot_table(tmp_path):
    """snakemake builds the one-shot table for Macron.png driven by a 2 s clip of May_5s.mp4:
    four valid renders (meshwarp, flipped, two bounds), their metrics, the tables and the
    side-by-side video; the meshwarp row keeps the identity better than the driver and follows
    the mouth."""
    from pipeline.render.contract import validate_contract
    from tests.conftest import make_workdir, run_snakemake

    clip = tmp_path / "May_2s.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(require_shared("identities", "May_5s.mp4")), "-t", "2",
                    "-c:v", "libx264", "-c:a", "aac", str(clip)], check=True)
    wd = make_workdir(tmp_path / "wd", {"oneshot": {"driving_method": None, "driving": {"May2s": str(clip)},
                                                    "backend": "meshwarp"}})
    run_snakemake(wd, "results/tables/one_shot.md", "results/report/one_shot/Macron/May2s.mp4", timeout=900)
    for m, r in (("oneshot_meshwarp", "Macron"), ("oneshot_meshwarp", "Macron-flipped"),
                 ("still_photo", "Macron"), ("driving_video", "Macron")):
        assert validate_contract(wd / "results" / "renders" / m / r / "May2s") == []
    md = (wd / "results" / "tables" / "one_shot.md").read_text()
    assert "oneshot_meshwarp (classical)" in md and "Internal differences" in md
    assert r"oneshot\_meshwarp (classical)" in (wd / "results" / "tables" / "one_shot.tex").read_text()
    rows = {r[1]: r for r in csv.reader(open(wd / "results" / "tables" / "one_shot.csv"))}
    head = rows["method"]
    val = lambda m, k: float(rows[m][head.index(k)].strip("*").split(" ")[0])
    assert val("oneshot_meshwarp (classical)", "csim") > val("driving_video (bound: driver's identity)", "csim")
    assert val("oneshot_meshwarp (classical)", "mouth_corr") >= 0.8
    assert rows["still_photo (bound: no motion)"][head.index("mouth_corr")].startswith("n/a")
    internal = list(csv.reader(open(wd / "results" / "tables" / "one_shot_internal_differences.csv")))
    assert internal[1][1] == "oneshot_meshwarp (classical)"
    assert abs(float(internal[1][internal[0].index("csim:diff")])) < 0.1
    # side-by-side: photo | driving | output | output on the mirrored photo, 128 px panels
    from pipeline.render.contract import probe_av

    av = probe_av(wd / "results" / "report" / "one_shot" / "Macron" / "May2s.mp4")
    assert av["n_frames"] == 50 and av["width"] == 4 * 128 and av["acodec"] == "aac"


def test_ingest_external_one_shot_video_with_caption_mask(tmp_path):
    """Another system's video (here May_5s itself, 3 s) is ingested for a 2 s driver: frames aligned
    (cut), scaled to the reference size, the caption rectangle replaced by the photo's pixels."""
    from pipeline.oneshot.face import read_image, resize_max
    from pipeline.oneshot.ingest import ingest_oneshot
    from pipeline.render.contract import validate_contract

    src = require_shared("identities", "May_5s.mp4")
    video, drv = tmp_path / "other.mp4", tmp_path / "drv.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-t", "3", str(video)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-t", "2", str(drv)], check=True)
    photo = PROJECT_ROOT / "resources" / "photos" / "Macron.png"
    out = tmp_path / "nerffacespeech" / "Macron" / "drv"
    m = ingest_oneshot(video, "nerffacespeech", "Macron", photo, drv, "drv", out, size=128, mask=(0, 0.75, 1, 0.25))
    assert validate_contract(out) == []
    assert m["protocol"] == "one_shot" and m["n_frames"] == 50 and m["resolution"] == [128, 128]
    assert m["external"]["trimmed"] and m["external"]["caption_mask"]["fill"] == "reference photo pixels"
    f = cv2.cvtColor(cv2.imread(str(out / "frames" / "10.png")), cv2.COLOR_BGR2RGB)
    ref = resize_max(read_image(photo), 128)
    assert np.array_equal(f[96:], ref[96:])           # the masked bottom quarter is the photo
    assert _psnr(f[:96], ref[:96]) < 20               # the rest is the other system's frame


def test_driving_render_folder_gives_chain_fps_and_its_audio(tmp_path):
    """A render-contract folder as driver (as the er_nerf renders are): its frames drive the photo,
    the output carries the audio that drove the render (path and sha256 from its manifest), and
    the chain FPS combines the NeRF's and the one-shot stage's FPS in series."""
    from pipeline.oneshot.render import chain_fps, render_oneshot
    from pipeline.preprocess.audio_features import load_audio_16k_mono
    from pipeline.render.contract import write_contract

    src = require_shared("identities", "May_5s.mp4")
    frames = _video_frames(src, 128)[:40]
    drv = tmp_path / "er_nerf" / "May" / "jfk"
    write_contract(drv, frames, load_audio_16k_mono(src),
                   {"method": "er_nerf", "identity": "May", "test": "jfk", "protocol": "cross_driven",
                    "driving_audio": {"path": "resources/audio/jfk_4.2s.flac", "sha256": "ab" * 32},
                    "compositing": "full", "controls": {}, "device": "cpu", "render_seconds": 20.0,
                    "fps_render": 2.0, "gt_reference": None})
    m = render_oneshot("Macron", PROJECT_ROOT / "resources" / "photos" / "Macron.png", drv, "er_nerf-May-jfk",
                       tmp_path / "out", backend="meshwarp", size=128)
    assert m["n_frames"] == 40 and m["driving"]["kind"] == "render" and m["driving"]["fps_render"] == 2.0
    assert m["driving_audio"] == {"path": "resources/audio/jfk_4.2s.flac", "sha256": "ab" * 32}
    assert m["fps_chain"] == pytest.approx(1 / (1 / 2.0 + 1 / m["fps_render"]))
    assert chain_fps(None, 5.0) is None and chain_fps(2.0, 2.0) == pytest.approx(1.0)


def test_fid_against_identity_frames_needs_weights(tmp_path):
    """FID is computed only against real frames of the same identity (a dataset named like the
    reference); without the Inception weights it is n/a with the fetch command, never a number."""
    from types import SimpleNamespace

    import yaml

    from pipeline.common.config import validate_config
    from pipeline.oneshot.metrics import _fid
    from pipeline.oneshot.workflow import OneshotPlan

    frames = [np.full((64, 64, 3), v, np.uint8) for v in (10, 200, 90)]
    (tmp_path / "gt").mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / "gt" / f"{i}.jpg"), f)
    v = _fid(frames, tmp_path / "gt", False, tmp_path / "no_weights")
    assert v.value is None and "python -m pipeline.weights fetch fid_inception" in v.na_reason
    cfg = validate_config(yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text()))
    cfg["oneshot"]["references"]["German"] = "resources/photos/Macron.png"
    plan = OneshotPlan(cfg, ["German"])
    assert plan.identity_frames(SimpleNamespace(reference="German-flipped")) == ["results/data/German/gt_imgs"]
    assert plan.identity_frames(SimpleNamespace(reference="Macron")) == []


def test_tables_from_hand_made_metric_files(tmp_path):
    """The one-shot table (resolution, means, bold best among methods with the bounds never ranked,
    n/a footnotes, classical label), the internal differences (Δ = input - flipped, as
    NeRFFaceSpeech Table 2) and the preset's reported tables (each the file lacks is named), from
    metric JSONs with hand values and a reported-numbers file naming NeRFFaceSpeech's Table 1."""
    from pipeline.common.io import atomic_write_json
    from pipeline.oneshot.metrics import ONESHOT_METRICS
    from pipeline.oneshot.table import write_oneshot_tables
    from pipeline.report.presets import NERFFACESPEECH

    def js(method, ref, test, flipped, vals):
        metrics = {k: {"value": vals.get(k), "weights_sha256": None,
                       "backend": "ArcFace (hand-made test value)" + ("; vs the reference photo" if k == "csim" else ""),
                       "na_reason": None if k in vals else f"{k} missing here", "n_frames": 3}
                   for k in ONESHOT_METRICS}
        p = tmp_path / "m" / method / ref / f"{test}.json"
        atomic_write_json(p, {"method": method, "identity": ref, "test": test, "protocol": "one_shot",
                              "n_frames": 3, "flipped": flipped, "metrics": metrics,
                              "reference": {"name": ref, "size": [128, 128]}})
        return p

    files = [js("oneshot_meshwarp", "Macron", "a", False, {"csim": 0.9, "mouth_corr": 0.8}),
             js("oneshot_meshwarp", "Macron", "b", False, {"csim": 0.7, "mouth_corr": 0.9}),
             js("oneshot_meshwarp", "Macron-flipped", "a", True, {"csim": 0.6, "mouth_corr": 0.7}),
             js("oneshot_liveportrait", "Macron", "a", False, {"csim": 0.6, "mouth_corr": 0.4}),
             js("driving_video", "Macron", "a", False, {"csim": 0.5, "mouth_corr": 1.0})]
    rep = tmp_path / "reported.csv"
    rep.write_text("method,source,table,metric,value,notes\n"
                   f'NeRFFaceSpeech,"{NERFFACESPEECH}",Table 1,csim@HDTF,0.777,read from the paper\n'
                   f'NeRFFaceSpeech,"{NERFFACESPEECH}",Table 1,cpbd@HDTF,0.225,\n')
    tab, internal = write_oneshot_tables(files, rep, ["oneshot_meshwarp"], tmp_path / "t.md", tmp_path / "t.csv",
                                         tmp_path / "i.csv", tmp_path / "t.tex")
    rows = {r["method"]: r for r in tab.rows}
    mw, dv = rows["oneshot_meshwarp (classical)"], rows["driving_video (bound: driver's identity)"]
    c, m = tab.columns.index("csim"), tab.columns.index("mouth_corr")
    lp = rows["oneshot_liveportrait"]
    assert tab.headers[0] == "Resolution" and mw["cells"][0] == lp["cells"][0] == dv["cells"][0] == "128x128"
    assert mw["cells"][c] == "0.800" and mw["bold"][c] and not lp["bold"][c]     # mean of 0.9, 0.7: best
    # what CSIM compared with is in its header (metric JSON backend "...; vs the reference photo")
    assert tab.headers[c] == "CSIM↑ (vs the reference photo)" and tab.headers[m] == "Mouth-opening corr.↑"
    # the driver's own mouth (1.000) is a bound, not a rival: the best method is bold, the bound never
    assert mw["cells"][m] == "0.850" and dv["cells"][m] == "1.000" and mw["bold"][m] and not dv["bold"][m]
    assert not any(dv["bold"]) and any("the bounds are not ranked" in f for f in tab.footnotes)
    mw = mw["cells"]
    assert mw[tab.columns.index("fid")].startswith("n/a (")
    cells = dict(zip(internal.columns, internal.rows[0]["cells"]))
    assert (cells["csim:input"], cells["csim:flipped"], cells["csim:diff"]) == ("0.900", "0.600", "0.300")
    assert "CSIM Δ (input - flipped)" in internal.headers
    md = (tmp_path / "t.md").read_text()
    # the cell's note of the reported-numbers file is a footnote on that cell; the other cell is bare
    assert "Table 1 of NeRFFaceSpeech (Kim et al., arXiv 2405.05749)" in md and "| 0.777 (1) |" in md
    assert "| 0.225 |" in md and "NeRFFaceSpeech Table 1, NeRFFaceSpeech, HDTF: CSIM↑: read from the paper" in md
    # the preset's other tables, absent from that file, are named, not silently dropped
    for table in ("LiveNeRF Table II", "LiveNeRF Table III", "NeRFFaceSpeech Table 2"):
        assert f"{table}: listed by the column preset, but the reported-numbers file has no rows of it" in md
    assert "fid missing here" in md
    # the same tables in LaTeX: the one-shot rows hold the CSV's cells, the internal differences'
    # Δ header is a LaTeX command, and the file compiles (with the shipped reported tables too)
    tex = (tmp_path / "t.tex").read_text()
    assert tex.isascii() and tex.count(r"\begin{tabular}") == 3          # one-shot, internal, Table 1
    csv_rows = list(csv.reader(open(tmp_path / "t.csv")))
    assert [r[1:] for r in _parse_latex_rows(tex)][:len(csv_rows) - 1] == [r[4:] for r in csv_rows[1:]]
    assert r"CSIM \ensuremath{\Delta} (input - flipped)" in tex
    write_oneshot_tables(files, PROJECT_ROOT / "resources" / "reported_numbers.csv", ["oneshot_meshwarp"],
                         tmp_path / "s.md", tmp_path / "s.csv", tmp_path / "si.csv", tmp_path / "s.tex")
    assert_latex_compiles([tmp_path / "t.tex", tmp_path / "s.tex"], tmp_path)
