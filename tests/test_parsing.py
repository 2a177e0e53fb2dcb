"""Face parsing stage: colour code, plausible head / neck / torso layout, BiSeNet loading.

Real data: the sample clip's first frames and their mesh (session fixtures of test_landmarks.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.common.errors import InputError
from pipeline.common.layout import PARSING_COLORS
from tests.conftest import require_shared
from tests.test_landmarks import SESSION_CACHE, N_FRAMES, face_frames, face_landmarks  # noqa: F401


@pytest.fixture(scope="session")
def face_parsing(face_landmarks, tmp_path_factory) -> Path:
    """The parsing stage run on the sample frames (MediaPipe backend: no BiSeNet weights)."""
    from pipeline.preprocess.parsing import ParsingConfig, run

    root = face_landmarks
    if "parsing" not in SESSION_CACHE:
        run(root / "ori_imgs", root / "face_mesh.npy", root / "parsing", ParsingConfig(),
            tmp_path_factory.mktemp("no_weights"), root / "parsing.json")
        SESSION_CACHE["parsing"] = root
    return root


def test_colours_only_from_the_code(face_parsing):
    allowed = {tuple(c) for c in PARSING_COLORS.values()}
    files = sorted((face_parsing / "parsing").glob("*.png"))
    assert len(files) == N_FRAMES
    for p in files[::7]:
        img = cv2.imread(str(p))                    # OpenCV order, as ER-NeRF reads it
        assert img.shape == (512, 512, 3)
        assert {tuple(c) for c in np.unique(img.reshape(-1, 3), axis=0)} <= allowed


def test_layout_plausible(face_parsing):
    from pipeline.preprocess.parsing import read_parsing

    root = face_parsing
    mesh = np.load(root / "face_mesh.npy")
    for i in (0, 14, 29):
        lab = read_parsing(root / "parsing" / f"{i}.png")
        ys, xs = np.indices(lab.shape)
        cy = {k: ys[lab == k].mean() for k in (1, 2, 3)}
        assert cy[1] < cy[2] < cy[3], cy                        # head above neck above torso
        # the face (mesh centre and a disc around it) is head
        fx, fy = mesh[i, :, :2].mean(axis=0)
        r = 0.25 * np.ptp(mesh[i, :, 0])
        disc = (xs - fx) ** 2 + (ys - fy) ** 2 < r ** 2
        assert (lab[disc] == 1).mean() > 0.99
        # the nose tip, the eyes and the chin are head; the top corners are background
        for v in (1, 33, 263, 152):
            x, y = np.round(mesh[i, v, :2]).astype(int)
            assert lab[y, x] == 1, v
        assert lab[0, 0] == 0 and lab[0, -1] == 0
        # the bottom row is person (shoulders) and torso
        assert (lab[-1] == 3).mean() > 0.5
        # head share of a head-and-shoulders crop
        assert 0.15 < (lab == 1).mean() < 0.45
        assert (lab == 2).sum() > 500                           # a visible neck under the chin
    rep = json.loads((root / "parsing.json").read_text())
    assert rep["backend"] == "mediapipe" and "79999_iter.pth" in rep["bisenet_skipped_reason"]
    assert rep["class_fractions"]["head"] > 0.15


def test_write_read_round_trip(tmp_path):
    from pipeline.preprocess.parsing import read_parsing, write_parsing

    lab = np.random.default_rng(0).integers(0, 4, (40, 60)).astype(np.uint8)
    write_parsing(tmp_path / "0.png", lab)
    np.testing.assert_array_equal(read_parsing(tmp_path / "0.png"), lab)
    from PIL import Image

    img = cv2.imread(str(tmp_path / "0.png"))
    # the file holds the colour code in OpenCV order (layout contract): ER-NeRF's loader tests
    # seg[..., 0] == 255 for the head
    np.testing.assert_array_equal(img[lab == 1][0], PARSING_COLORS["head"])
    np.testing.assert_array_equal(img[lab == 3][0], PARSING_COLORS["torso"])
    assert (img[lab == 1][:, 0] == 255).all() and (img[lab == 1][:, 2] == 0).all()
    # a re-encoded (lossy) map still reads; an unknown colour is 255
    blurred = img.copy()
    blurred[0, 0] = (250, 5, 3)                     # a slightly-off head colour (OpenCV order)
    blurred[0, 1] = (0, 0, 0)
    cv2.imwrite(str(tmp_path / "1.png"), blurred)
    got = read_parsing(tmp_path / "1.png")
    assert got[0, 0] == 1 and got[0, 1] == 255
    with pytest.raises(InputError, match="missing.png: file not found"):
        read_parsing(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read parsing map"):
        read_parsing(tmp_path / "broken.png")


def test_mesh_mismatch_refused(face_landmarks, tmp_path):
    from pipeline.preprocess.parsing import ParsingConfig, run

    np.save(tmp_path / "mesh.npy", np.zeros((3, 478, 3), np.float32))
    with pytest.raises(InputError, match=f"does not match {N_FRAMES} frames"):
        run(face_landmarks / "ori_imgs", tmp_path / "mesh.npy", tmp_path / "parsing", ParsingConfig(), None)


# ------------------------------------------------------------------------------------------ BiSeNet


def test_bisenet_class_map_as_anchors():
    from pipeline.preprocess.backends.bisenet import CLASS_TO_PART

    # ER-NeRF face_parsing/test.py: 1-13 head, 14-15 neck, 16 torso (cloth), 17-18 head (hair, hat)
    expected = [0] + [1] * 13 + [2, 2] + [3] + [1, 1]
    assert CLASS_TO_PART.tolist() == expected


def test_bisenet_standin_weights(face_frames, tmp_path):
    """Random-weight BiSeNet saved as 79999_iter.pth: strict loading, shapes, and the stage's code
    path (a stand-in never produces reported numbers)."""
    torch = pytest.importorskip("torch")
    from pipeline.preprocess.backends.bisenet import BiSeNet, BiSeNetParser, load_bisenet
    from pipeline.preprocess.parsing import ParsingConfig, read_parsing, run
    from pipeline.weights import weights_path

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = BiSeNet(19).eval()
    sd = net.state_dict()
    assert "cp.resnet.layer4.1.bn2.running_var" in sd and "ffm.convblk.conv.weight" in sd
    assert sd["conv_out.conv_out.weight"].shape == (19, 256, 1, 1)
    wdir = tmp_path / "weights"
    wdir.mkdir()
    torch.save({f"module.{k}": v for k, v in sd.items()}, weights_path("face_parsing_79999", wdir))
    parser = BiSeNetParser.from_weights_dir(wdir)
    for a, b in zip(parser.net.state_dict().values(), sd.values()):
        assert torch.equal(a, b)
    rgb = cv2.imread(str(face_frames / "0.jpg"))[..., ::-1]
    small = cv2.resize(rgb, (96, 80))
    with torch.no_grad():
        out = parser.net(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(1, 19, 64, 64)] * 3
    cls = parser.classes(small)
    assert cls.shape == (80, 96) and cls.dtype == np.uint8 and cls.max() <= 18
    lab = parser.labels(small)
    assert set(np.unique(lab)) <= {0, 1, 2, 3}
    # the stage picks BiSeNet when its weights are present (2 frames)
    frames = tmp_path / "ori_imgs"
    frames.mkdir()
    for i in range(2):
        (frames / f"{i}.jpg").write_bytes((face_frames / f"{i}.jpg").read_bytes())
    np.save(tmp_path / "mesh.npy", np.zeros((2, 478, 3), np.float32))
    rep = run(frames, tmp_path / "mesh.npy", tmp_path / "parsing", ParsingConfig(backend="auto"), wdir)
    assert rep["backend"] == "bisenet" and rep["weights"].endswith("79999_iter.pth")
    assert read_parsing(tmp_path / "parsing" / "1.png").shape == (512, 512)
    # a checkpoint of another network is refused with the file name
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match="bad.pth: not a 19-class face-parsing BiSeNet"):
        load_bisenet(tmp_path / "bad.pth")


# Hand-marked points on two frames of ../shared/data/identities/longhair_pt_14s.mp4 (400x720,
# a woman whose long hair falls past her shoulders), (x, y) in source pixels, with the label a
# person would give them as BiSeNet does (hair = head). Each point is checked as a 5x5 patch.
LONGHAIR_POINTS = {
    2.0: {"head": [(205, 280), (150, 300), (130, 385), (118, 400), (288, 385), (300, 400)],
          "neck": [(205, 385)], "torso": [(205, 480)], "background": [(40, 100), (360, 250)]},
    8.0: {"head": [(205, 280), (150, 300), (130, 390), (120, 402), (290, 382), (300, 400)],
          "neck": [(205, 380)], "torso": [(205, 480)], "background": [(40, 100), (360, 250)]},
}
#: the hand-marked hair points below the jaw line (the ones the jaw-line split alone calls torso)
LONGHAIR_HAIR_BELOW_JAW = 4


def _longhair_labels(t: float, hair: bool) -> np.ndarray:
    from pipeline.preprocess.backends.mediapipe_mesh import MeshDetector
    from pipeline.preprocess.backends.selfie import MeshSplitter, PersonSegmenter, SplitGeometry
    from pipeline.preprocess.media import read_frames_at

    video = require_shared("identities", "longhair_pt_14s.mp4")
    rgb = read_frames_at(video, [t])[0]
    with MeshDetector(video_mode=False) as det:
        mesh = det.detect(rgb, 0).mesh
    with PersonSegmenter() as seg:
        person = seg.confidence(rgb) > 0.5
    return MeshSplitter(SplitGeometry(hair=hair))(person, mesh, rgb)


@pytest.mark.parametrize("t", sorted(LONGHAIR_POINTS))
def test_long_hair_beside_the_face_is_head(t):
    """The hair hanging beside the face and neck of a long-haired speaker is head (as BiSeNet's
    hair class, which the anchors merge into the head), on real frames, at hand-marked points."""
    from pipeline.preprocess.backends.selfie import PARSING_CLASSES

    labels = _longhair_labels(t, hair=True)
    for name, points in LONGHAIR_POINTS[t].items():
        want = PARSING_CLASSES.index(name)
        for x, y in points:
            patch = labels[y - 2:y + 3, x - 2:x + 3]
            frac = float((patch == want).mean())
            assert frac >= 0.8, f"t={t}s ({x},{y}) should be {name}: {frac:.0%} of its 5x5 patch is"
    # without the hair step the same hair points below the jaw are torso: the step is what fixes them
    plain = _longhair_labels(t, hair=False)
    below = LONGHAIR_POINTS[t]["head"][2:]
    assert len(below) == LONGHAIR_HAIR_BELOW_JAW
    assert sum(plain[y, x] == PARSING_CLASSES.index("torso") for x, y in below) >= 3


# Hand-marked points on a frame of ../shared/data/identities/shoulderhair_garden_10s.mp4 (1080x1920,
# t = 9.5 s: a woman with shoulder-length hair in a dark grey coat), (x, y) in source pixels: the
# coat on both shoulders, which GrabCut's hair colour model took for hair, and her hair beside
# the right cheek.
SHOULDERHAIR_COAT = [(776, 934), (396, 975), (830, 1007)]
SHOULDERHAIR_HAIR = [(692, 850)]


def test_dark_coat_across_the_shoulders_is_not_hair():
    """Hair hangs from the head: below the jaw line it reaches at most ``hair_spread`` face widths
    beyond the head's extent on that line, so the coat across the shoulders stays torso while the
    hair beside the face stays head; without the limit the same coat points were head."""
    from pipeline.preprocess.backends.mediapipe_mesh import MeshDetector
    from pipeline.preprocess.backends.selfie import PARSING_CLASSES, MeshSplitter, PersonSegmenter, SplitGeometry
    from pipeline.preprocess.media import read_frames_at

    video = require_shared("identities", "shoulderhair_garden_10s.mp4")
    rgb = read_frames_at(video, [9.5])[0]
    with MeshDetector(video_mode=False) as det:
        mesh = det.detect(rgb, 0).mesh
    with PersonSegmenter() as seg:
        person = seg.confidence(rgb) > 0.5

    def frac(labels, x, y, name):
        return float((labels[y - 2:y + 3, x - 2:x + 3] == PARSING_CLASSES.index(name)).mean())

    labels = MeshSplitter(SplitGeometry())(person, mesh, rgb)
    for x, y in SHOULDERHAIR_COAT:
        assert frac(labels, x, y, "torso") >= 0.8, f"coat ({x},{y}) should be torso"
    for x, y in SHOULDERHAIR_HAIR:
        assert frac(labels, x, y, "head") >= 0.8, f"hair ({x},{y}) should be head"
    unlimited = MeshSplitter(SplitGeometry(hair_spread=-1))(person, mesh, rgb)
    assert sum(frac(unlimited, x, y, "head") >= 0.8 for x, y in SHOULDERHAIR_COAT) == len(SHOULDERHAIR_COAT)
