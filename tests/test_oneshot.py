"""One-shot path (pipeline/oneshot/): the meshwarp backend on real faces, the reference-photo
checks, the render contract of a one-shot run and its bounds."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import PROJECT_ROOT, require_shared


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
