"""Background stage: bc.jpg without the person, gt_imgs, torso_imgs alpha.

Synthetic checks of the masked median and the inpainting, then the sample clip's frames and parsing
maps (session fixtures of test_landmarks.py / test_parsing.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.common.errors import InputError
from tests.test_landmarks import N_FRAMES, face_frames, face_landmarks  # noqa: F401  (session fixtures)
from tests.test_parsing import face_parsing  # noqa: F401


def test_masked_median_and_inpainting():
    from pipeline.preprocess.background import estimate_background

    rng = np.random.default_rng(0)
    bg = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    images, labels = [], []
    for k in range(9):
        img, lab = bg.copy(), np.zeros((40, 50), np.uint8)
        x = 5 + 3 * k                                   # a "person" block moving right
        img[10:30, x:x + 8] = 255 - bg[10:30, x:x + 8]
        lab[10:30, x:x + 8] = 3
        img[0:6, 0:6] = 0                               # always covered: never visible
        lab[0:6, 0:6] = 1
        if k == 4:                                      # one frame with a segmentation miss
            img[35:40, 40:50] = 0
        images.append(img)
        labels.append(lab)
    bc, count = estimate_background(images, labels, min_frames=3, margin=0)
    assert count[20, 45] == 9 and count[0, 0] == 0
    visible = count >= 3
    np.testing.assert_array_equal(bc[visible], bg[visible])   # exact median where visible, miss ignored
    # the never-visible corner is filled from its surroundings (inpainting), not left black
    assert bc[0:6, 0:6].mean() > 40
    # the margin keeps pixels next to the person out
    _, count_m = estimate_background(images, labels, min_frames=3, margin=2)
    assert count_m[20, 4] < count[20, 4]


def test_compose_gt_and_torso():
    from pipeline.preprocess.background import compose

    img = np.full((4, 4, 3), 100, np.uint8)
    img[..., 0] = 10                                    # B, G, R = 10, 100, 100
    bc = np.full((4, 4, 3), 7, np.uint8)
    lab = np.array([[0, 0, 1, 1], [0, 1, 1, 2], [3, 3, 2, 2], [3, 3, 3, 255]], np.uint8)
    gt, torso = compose(img, lab, bc)
    assert (gt[lab == 0] == 7).all() and (gt[lab != 0] == img[lab != 0]).all()
    assert torso.shape == (4, 4, 4)
    assert (torso[..., 3][np.isin(lab, (0, 1, 255))] == 0).all()
    assert (torso[..., 3][np.isin(lab, (2, 3))] == 255).all()
    np.testing.assert_array_equal(torso[2, 0, :3], [100, 100, 10])      # RGBA order


@pytest.fixture(scope="session")
def face_background(face_parsing) -> Path:
    from pipeline.preprocess.background import BackgroundConfig, run

    root = face_parsing
    run(root / "ori_imgs", root / "parsing", root / "bc.jpg", root / "gt_imgs", root / "torso_imgs",
        BackgroundConfig(), root / "background.json")
    return root


def test_bc_has_no_person(face_background):
    from pipeline.preprocess.parsing import read_parsing

    root = face_background
    bc = cv2.imread(str(root / "bc.jpg")).astype(np.int16)
    assert bc.shape == (512, 512, 3)
    labs = np.stack([read_parsing(root / "parsing" / f"{i}.png") for i in range(N_FRAMES)])
    frame0 = cv2.imread(str(root / "ori_imgs" / "0.jpg")).astype(np.int16)
    always_bg = cv2.erode((labs == 0).all(axis=0).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    head0 = cv2.erode((labs[0] == 1).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    assert always_bg.sum() > 20000 and head0.sum() > 20000
    # where the background is always visible, bc is the background
    assert np.abs(bc - frame0)[always_bg].mean() < 4
    # where the head is, bc is not the face: it looks like the background next to it, not like frame 0
    assert np.abs(bc - frame0)[head0].mean() > 30
    face_colour = frame0[head0].mean(axis=0)
    bg_colour = frame0[always_bg].mean(axis=0)
    bc_in_head = bc[head0].mean(axis=0)
    assert np.linalg.norm(bc_in_head - bg_colour) < np.linalg.norm(bc_in_head - face_colour)
    rep = json.loads((root / "background.json").read_text())
    assert rep["n_frames"] == N_FRAMES and 0.2 < rep["inpainted_fraction"] < 0.8


def test_gt_and_torso_images(face_background):
    from pipeline.preprocess.parsing import read_parsing

    root = face_background
    assert len(list((root / "gt_imgs").glob("*.jpg"))) == N_FRAMES
    assert len(list((root / "torso_imgs").glob("*.png"))) == N_FRAMES
    bc = cv2.imread(str(root / "bc.jpg")).astype(np.int16)
    for i in (0, 17):
        lab = read_parsing(root / "parsing" / f"{i}.png")
        frame = cv2.imread(str(root / "ori_imgs" / f"{i}.jpg")).astype(np.int16)
        gt = cv2.imread(str(root / "gt_imgs" / f"{i}.jpg")).astype(np.int16)
        inner = lambda m: cv2.erode(m.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # noqa: E731
        assert np.abs(gt - bc)[inner(lab == 0)].mean() < 3            # background replaced by bc
        assert np.abs(gt - frame)[inner(lab == 1)].mean() < 3         # head kept
        torso = cv2.imread(str(root / "torso_imgs" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        assert torso.shape == (512, 512, 4)
        alpha = torso[..., 3]
        assert (alpha[lab == 1] == 0).all() and (alpha[lab == 0] == 0).all()   # head removed, no background
        assert (alpha[(lab == 2) | (lab == 3)] == 255).all()
        body = inner((lab == 3))
        assert np.abs(torso[..., :3].astype(np.int16) - frame)[body].mean() < 1   # BGRA as cv2 reads it


def test_mismatched_parsing_refused(face_background, tmp_path):
    from pipeline.preprocess.background import BackgroundConfig, run

    root = face_background
    par = tmp_path / "parsing"
    par.mkdir()
    for i in range(3):
        (par / f"{i}.png").write_bytes((root / "parsing" / f"{i}.png").read_bytes())
    with pytest.raises(InputError, match=f"3 parsing maps for {N_FRAMES} frames"):
        run(root / "ori_imgs", par, tmp_path / "bc.jpg", tmp_path / "gt", tmp_path / "torso", BackgroundConfig())


@pytest.mark.slow
def test_snakemake_face_stages_on_sample(sample_workdir, sample_dataset):
    """The three rules through Snakemake on the whole sample clip (300 frames, the session's dataset
    build): outputs, reports and benchmark files (frames/s are in the reports; not asserted, the
    machine is shared)."""
    ds = sample_dataset
    n = len(list(ds.ori_imgs.glob("*.jpg")))
    assert n == 300
    assert len(list(ds.ori_imgs.glob("*.lms"))) == n
    assert np.load(ds.face_mesh).shape == (n, 478, 3)
    assert np.load(ds.blendshapes).shape == (n, 52)
    assert len(list(ds.parsing.glob("*.png"))) == n
    assert len(list(ds.gt_imgs.glob("*.jpg"))) == n and len(list(ds.torso_imgs.glob("*.png"))) == n
    assert ds.bc.is_file()
    for stage in ("landmarks", "parsing", "background"):
        assert (sample_workdir / "results" / "benchmarks" / stage / "German.tsv").is_file()
        rep = json.loads((ds.root / f"{stage}.json").read_text())
        assert rep["n_frames"] == n and rep["frames_per_second"] > 0
    assert json.loads(ds.landmarks_report.read_text())["failed_frames"] == []
