"""SFM expression weights (eos-py, ../shared/models/sfm): recovery of known blendshape weights from
synthetic landmarks of the model itself, the distance definition, and the emotion_edit evaluation
on real frames of the sample video."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.metrics.emotion_expr import EXPRESSIONS, SFMExpressionFitter, evaluate_edit, expression_distance
from tests.conftest import PROJECT_ROOT

SFM = PROJECT_ROOT.parent / "shared" / "models" / "sfm"


@pytest.fixture(scope="module")
def fitter():
    import eos  # noqa: F401  (a required dependency: a broken install fails here, it is not skipped)
    if not (SFM / "sfm_shape_3448.bin").is_file():
        pytest.skip(f"{SFM} not found: the SFM files come with ../shared beside the clone")
    return SFMExpressionFitter(SFM)


@pytest.mark.parametrize("expr", ["happiness", "sadness", "anger"])
def test_known_expression_is_recovered(fitter, expr):
    """Landmarks of the SFM mean face with one blendshape at weight 1 (scaled orthographic view):
    the fit puts most weight on that blendshape (> 0.7; 0 for the neutral face)."""
    mapped = [i for i in range(68) if fitter.mapper.convert(str(i + 1)) is not None]

    def landmarks(weights):
        verts = np.asarray(fitter.model.draw_sample([0.0] * 10, [float(w) for w in weights], []).vertices)
        pts = np.zeros((68, 2))
        for i in mapped:
            x, y, _ = verts[int(fitter.mapper.convert(str(i + 1)))]
            pts[i] = [256 + 1.5 * x, 256 - 1.5 * y]
        return pts

    one = np.eye(6)[EXPRESSIONS.index(expr)]
    w = fitter.weights(landmarks(one), 512, 512, mapped)
    assert w.shape == (6,) and int(np.argmax(w)) == EXPRESSIONS.index(expr) and w.max() > 0.7, w
    assert np.abs(fitter.weights(landmarks(np.zeros(6)), 512, 512, mapped)).max() < 0.05


def test_expression_distance_definition():
    r = np.array([[1.0, 0, 0, 0, 0, 0], [3.0, 0, 0, 0, 0, 0]])
    g = np.array([[0.0, 0, 0, 0, 0, 0]])
    assert expression_distance(r, g) == pytest.approx(2.0)
    assert np.isnan(expression_distance(np.zeros((0, 6)), g))


def test_emotion_edit_evaluation_on_real_frames(fitter, tmp_path, tmp_path_factory):
    """Renders replaced by the real frames of each label: every frame is fitted, and since both
    sides are landmarked by the same detector, the same frames give distance 0 and four of a
    label's frames a small one."""
    from pipeline.metrics.landmarks import make_landmarker
    from pipeline.preprocess.emotion import build
    from pipeline.train.devdata import cached

    ds = tmp_path / "German"
    shutil.copytree(cached(tmp_path_factory.getbasetemp()), ds)
    _, info = build(24, "0-0.48 happy:3; 0.48-1 sad:1", 25.0, "test")
    (ds / "emotion.json").write_text(json.dumps(info))
    edit = tmp_path / "emotion_edit"
    folders = {"happy:3": "happy-3", "sad:1": "sad-1"}
    for label, folder in folders.items():
        (edit / folder / "frames").mkdir(parents=True)
        for n, i in enumerate([i for i, lab in enumerate(info["labels"]) if lab == label][:4 if label == "sad:1" else None]):
            import cv2

            cv2.imwrite(str(edit / folder / "frames" / f"{n}.png"), cv2.imread(str(ds / "ori_imgs" / f"{i}.jpg")))
    (edit / "index.json").write_text(json.dumps({"labels": list(folders), "folders": folders}))
    landmarker, _ = make_landmarker(tmp_path / "no_weights")
    res = evaluate_edit(edit, ds, fitter, landmarker)
    assert set(res) == {"happy:3", "sad:1"}
    # every frame of the label as its "renders": the same landmarks on both sides, distance 0
    happy = res["happy:3"]
    assert happy["gt_frames"] + happy["gt_no_face"] == 12 and happy["gt_frames"] >= 10, happy
    assert happy["render_frames"] == happy["gt_frames"] and happy["render_no_face"] == happy["gt_no_face"]
    assert happy["sfm_expression_distance"] == pytest.approx(0.0, abs=1e-9)
    # four of the label's twelve frames: finite and small (the mean of a subset)
    sad = res["sad:1"]
    assert sad["gt_frames"] + sad["gt_no_face"] == 12 and sad["render_frames"] + sad["render_no_face"] == 4
    assert sad["render_frames"] >= 3, sad
    assert 0 < sad["sfm_expression_distance"] < 0.5, sad


def test_missing_sfm_files_give_n_a_with_the_fetch_command(tmp_path):
    from pipeline.metrics.emotion_expr import main

    out = tmp_path / "sfm_expression.json"
    assert main(["--edit", str(tmp_path / "edit"), "--data", str(tmp_path / "data"), "--weights-dir",
                 str(tmp_path / "empty"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["labels"] is None
    assert "sfm_shape_3448.bin not found" in res["reason"] and "python -m pipeline.weights fetch sfm_shape" in res["reason"]
