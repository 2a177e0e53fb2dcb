"""TalkingGaussian teeth masks (an estimate): inner-lip polygon + teeth appearance test.

A constructed frame gives the exact expected mask; on real MediaPipe meshes of the sample video the
masks are booleans inside the mouth opening, in the file layout TalkingGaussian reads
(``scene/dataset_readers.py`` lines 197-204: ``np.load(teeth_mask/{img_id}.npy)`` XOR-ed with a
boolean face mask of the frame's size).
"""
from __future__ import annotations

import json

import cv2
import numpy as np

from pipeline.preprocess import teeth as TM
from tests.test_tracking import N_SAMPLE, mp_sample  # noqa: F401  (module fixture)


def _constructed():
    """512x512 skin-coloured face disc; an elliptic mouth opening whose left half is white teeth
    and right half a dark red cavity. Mesh: face points on the disc rim, inner lips on the ellipse."""
    h = w = 512
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.circle(img, (256, 256), 200, (120, 150, 200), -1)  # BGR skin
    mesh = np.zeros((478, 3))
    ang = np.linspace(0, 2 * np.pi, 478, endpoint=False)
    mesh[:, 0], mesh[:, 1] = 256 + 199 * np.cos(ang), 256 + 199 * np.sin(ang)
    lip_ang = np.linspace(np.pi, 3 * np.pi, len(TM.INNER_LIPS), endpoint=False)
    for k, v in enumerate(TM.INNER_LIPS):
        mesh[v, 0], mesh[v, 1] = 256 + 60 * np.cos(lip_ang[k]), 330 + 20 * np.sin(lip_ang[k])
    mouth = TM.mouth_opening(mesh[:, :2], h, w)
    xs = np.arange(w)[None, :].repeat(h, 0)
    img[mouth & (xs < 256)] = (235, 235, 235)   # teeth: bright, grey
    img[mouth & (xs >= 256)] = (40, 30, 110)    # cavity / tongue: dark red
    return img, mesh, mouth, xs


def test_constructed_mouth_gives_exactly_the_teeth():
    img, mesh, mouth, xs = _constructed()
    got = TM.teeth_mask(img, mesh[:, :2], TM.TeethConfig())
    assert got.dtype == bool and got.shape == (512, 512)
    assert mouth.sum() > 2000
    np.testing.assert_array_equal(got, mouth & (xs < 256))
    # a closed mouth (inner lips on one line) has no teeth
    closed = mesh.copy()
    closed[list(TM.INNER_LIPS), 1] = 330
    assert TM.teeth_mask(img, closed[:, :2], TM.TeethConfig()).sum() <= 130  # at most the 1-px polyline


def test_cli_on_sample_meshes(mp_sample, tmp_path):  # noqa: F811
    out, rep = tmp_path / "teeth_mask", tmp_path / "teeth_mask.json"
    assert TM.main(["--frames", str(mp_sample / "ori_imgs"), "--mesh", str(mp_sample / "face_mesh.npy"),
                    "--out", str(out), "--report", str(rep)]) == 0
    mesh = np.load(mp_sample / "face_mesh.npy")
    counts = []
    for i in range(N_SAMPLE):
        m = np.load(out / f"{i}.npy")
        assert m.dtype == np.bool_ and m.shape == (512, 512)
        assert not (m & ~TM.mouth_opening(mesh[i, :, :2], 512, 512)).any()
        counts.append(int(m.sum()))
    r = json.loads(rep.read_text())
    assert r["estimate"] is True and r["frames"] == N_SAMPLE
    assert r["frames_with_teeth"] == sum(c > 0 for c in counts)
    assert 0 < r["frames_with_teeth"] < N_SAMPLE  # the anchor talks: teeth show in some frames, not all


def test_workflow_builds_teeth_masks_only_when_switched_on(tmp_path):
    from tests.conftest import make_workdir, run_snakemake

    for enabled in (False, True):
        wd = make_workdir(tmp_path / str(enabled), {"preprocess": {"teeth_mask": {"enabled": enabled}}})
        proc = run_snakemake(wd, "results/data/German/manifest.json", args=("-n",), timeout=300)
        assert ("rule teeth_mask:" in proc.stdout) is enabled, proc.stdout[-3000:]


def tg_read_parsing(path):
    """TalkingGaussian ``scene/dataset_readers.py`` lines 200-204 (commit 9bd34f7), re-written from
    its description: ``np.array(Image.open(path).convert("RGB")) * 1.0``; face = ``B > 254 and
    R == 0 and G == 0`` (before the teeth XOR), hair = all three channels < 1, mouth = all three == 100."""
    from PIL import Image

    m = np.array(Image.open(path).convert("RGB")) * 1.0
    face = (m[:, :, 2] > 254) * (m[:, :, 0] == 0) * (m[:, :, 1] == 0)
    hair = (m[:, :, 0] < 1) * (m[:, :, 1] < 1) * (m[:, :, 2] < 1)
    mouth = (m[:, :, 0] == 100) * (m[:, :, 1] == 100) * (m[:, :, 2] == 100)
    return face, hair, mouth


def test_talkinggaussian_parsing_colours_on_a_constructed_head(tmp_path):
    """Head label = a disc 30 px larger than the face mesh: the band above the face is hair (black),
    the ear ellipses and the face are face, the inner-lip polygon is the inner mouth (100,100,100);
    neck, torso, background keep ER-NeRF's colours. Read back the way TalkingGaussian reads it."""
    from pipeline.preprocess.parsing import write_parsing

    img, mesh, mouth, xs = _constructed()
    ys = np.arange(512)[:, None].repeat(512, 1)
    r = np.hypot(xs - 256, ys - 256)
    labels = np.zeros((512, 512), np.uint8)
    labels[ys > 470] = 3                      # torso strip
    labels[(ys > 440) & (ys <= 470)] = 2      # neck strip
    labels[r <= 230] = 1                      # head: face disc (199) + 31 px of "hair"
    write_parsing(tmp_path / "0.png", labels)
    np.save(tmp_path / "mesh.npy", mesh[None].astype(np.float32))
    out = tmp_path / "parsing_tg"
    rep = TM.write_tg_parsing(tmp_path, out, np.load(tmp_path / "mesh.npy"))
    face, hair, mth = tg_read_parsing(out / "0.png")
    head = labels == 1
    np.testing.assert_array_equal(mth, mouth & head)
    assert not (face & hair).any() and not (face & mth).any()
    np.testing.assert_array_equal(face | hair | mth, head)          # the head splits into the three
    assert face[r <= 199].mean() + mth[r <= 199].mean() == 1.0      # the whole face disc
    assert hair[256 - 228, 256] and hair[256 + 228, 256]            # band above and below the face
    # ears: outside the face-oval points 234 / 454, within the head, stay face
    for k in TM.EAR_POINTS:
        x, y = mesh[k, :2]
        side = 1 if x > 256 else -1
        assert face[int(round(y)), int(round(x + side * 20))]
    assert 0.05 < hair[head].mean() < 0.3
    bgr = cv2.imread(str(out / "0.png"))
    assert (bgr[labels == 2] == (0, 255, 0)).all() and (bgr[labels == 3] == (0, 0, 255)).all()
    assert (bgr[labels == 0] == 255).all()
    assert rep["frames"] == 1 and 0.05 < rep["mean_hair_fraction_of_head"] < 0.3
