"""Emotion-expression error: how far the facial expression of rendered frames is from that of the
ground-truth frames with the same emotion label, measured with the Surrey Face Model (SFM, Huber et
al. VISAPP 2016) fitted by ``eos-py`` to 68 iBUG landmarks.

Per frame, ``eos.fitting.fit_shape_and_pose`` fits pose, identity shape and the SFM's 6 expression
blendshape weights (:data:`EXPRESSIONS`: anger, disgust, fear, happiness, sadness, surprise) to
the landmarks. For one label, the error is ``|| mean_renders(w) - mean_gt(w) ||_2`` over the
6-vectors ``w`` (unitless blendshape weights) of the rendered frames and of the dataset frames
carrying that label. The SFM's blendshapes have no jaw or lip motion, so speech barely moves ``w``.
The value is named "SFM expression distance" in tables: it is not an emotion-recognition score.

Files (``pipeline/weights/manifest.yaml``, names ``sfm_*``; licence: the SFM shape model is free
for non-commercial use, eos is Apache-2.0): ``sfm_shape_3448.bin``,
``expression_blendshapes_3448.bin``, ``ibug_to_sfm.txt``, ``sfm_3448_edge_topology.json``,
``sfm_model_contours.json`` in one folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.common.errors import InputError

EXPRESSIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
SFM_FILES = ("sfm_shape_3448.bin", "expression_blendshapes_3448.bin", "ibug_to_sfm.txt",
             "sfm_3448_edge_topology.json", "sfm_model_contours.json")


class SFMExpressionFitter:
    """The SFM with its expression blendshapes and eos's landmark mapping, ready to fit frames.

    Args:
        folder: the folder holding :data:`SFM_FILES`.
        iterations: eos fitting iterations per frame (5: eos's default).
    Raises:
        InputError: a missing file (naming it), or ``eos-py`` not installed.
    """

    def __init__(self, folder: str | Path, iterations: int = 5):
        folder = Path(folder)
        for name in SFM_FILES:
            if not (folder / name).is_file():
                raise InputError(folder / name, "SFM file not found (python -m pipeline.weights fetch sfm)")
        try:
            import eos
        except ImportError:
            raise InputError(folder, "eos-py is not installed (pip install eos-py)") from None
        self.eos = eos
        shape = eos.morphablemodel.load_model(str(folder / "sfm_shape_3448.bin"))
        blendshapes = eos.morphablemodel.load_blendshapes(str(folder / "expression_blendshapes_3448.bin"))
        names = tuple(b.name for b in blendshapes)
        if names != EXPRESSIONS:
            raise InputError(folder / "expression_blendshapes_3448.bin", f"blendshapes {names}, expected {EXPRESSIONS}")
        self.model = eos.morphablemodel.MorphableModel(
            shape.get_shape_model(), blendshapes, color_model=eos.morphablemodel.PcaModel(),
            vertex_definitions=None, texture_coordinates=shape.get_texture_coordinates())
        self.mapper = eos.core.LandmarkMapper(str(folder / "ibug_to_sfm.txt"))
        self.edges = eos.morphablemodel.load_edge_topology(str(folder / "sfm_3448_edge_topology.json"))
        self.contour_landmarks = eos.fitting.ContourLandmarks.load(str(folder / "ibug_to_sfm.txt"))
        self.model_contour = eos.fitting.ModelContour.load(str(folder / "sfm_model_contours.json"))
        self.iterations = iterations

    def weights(self, lms: np.ndarray, width: int, height: int, points=None) -> np.ndarray:
        """[6] float64 expression weights (order :data:`EXPRESSIONS`) fitted to ``lms`` [68, 2]
        (x, y) pixels of a ``width`` x ``height`` image (iBUG order); ``points``: the 0-based
        landmark indices to use (default all 68)."""
        lms = np.asarray(lms, np.float64).reshape(68, 2)
        idx = range(68) if points is None else points
        marks = [self.eos.core.Landmark(str(i + 1), [float(lms[i, 0]), float(lms[i, 1])]) for i in idx]
        _, _, _, expr = self.eos.fitting.fit_shape_and_pose(
            self.model, marks, self.mapper, int(width), int(height), self.edges, self.contour_landmarks,
            self.model_contour, num_iterations=self.iterations)
        return np.asarray(expr, np.float64)


def expression_distance(render_w: np.ndarray, gt_w: np.ndarray) -> float:
    """``|| mean(render_w) - mean(gt_w) ||_2`` of two [N, 6] / [M, 6] weight sets (NaN when empty)."""
    render_w, gt_w = np.asarray(render_w, np.float64), np.asarray(gt_w, np.float64)
    if len(render_w) == 0 or len(gt_w) == 0:
        return float("nan")
    return float(np.linalg.norm(render_w.mean(0) - gt_w.mean(0)))


def evaluate_edit(edit_dir: str | Path, data_root: str | Path, fitter: SFMExpressionFitter, landmarker) -> dict:
    """SFM expression distance per label of an ``emotion_edit`` render folder
    (:mod:`pipeline.render.emotion_edit`).

    Renders: 68 landmarks found by ``landmarker`` (:class:`pipeline.metrics.landmarks.Landmarker`)
    on ``{label folder}/frames/{i}.png``; ground truth: every dataset frame ``ori_imgs/{i}.jpg``
    whose label (``emotion.json``) is that label, landmarked by the same ``landmarker`` (a bias
    between two detectors would not cancel in a distance of means, unlike in LMD, and the
    dataset's own ``.lms`` come from another pipeline: mesh-boxed FAN or dlib).

    Returns ``{label: {"sfm_expression_distance", "render_frames", "gt_frames", "render_mean",
    "gt_mean", "render_no_face", "gt_no_face"}}`` (means in :data:`EXPRESSIONS` order).
    Raises:
        InputError: a missing ``index.json`` / ``emotion.json`` / dataset frame.
    """
    import cv2

    from pipeline.common.io import read_json

    edit_dir, data_root = Path(edit_dir), Path(data_root)
    index = read_json(edit_dir / "index.json")
    labels = read_json(data_root / "emotion.json")["labels"]
    def fit_frames(paths: list[Path]) -> tuple[list[np.ndarray], int]:
        weights, misses = [], 0
        for p in paths:
            bgr = cv2.imread(str(p))
            if bgr is None:
                raise InputError(p, "not found or not an image")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            lms = landmarker.landmarks(rgb)
            if lms is None:
                misses += 1
                continue
            weights.append(fitter.weights(lms, rgb.shape[1], rgb.shape[0]))
        return weights, misses

    out = {}
    for label, folder in index["folders"].items():
        gt, gt_misses = fit_frames([data_root / "ori_imgs" / f"{i}.jpg" for i, lab in enumerate(labels) if lab == label])
        rend, misses = fit_frames(sorted((edit_dir / folder / "frames").glob("*.png"), key=lambda p: int(p.stem)))
        rend_a, gt_a = np.asarray(rend).reshape(-1, 6), np.asarray(gt).reshape(-1, 6)
        out[label] = {"sfm_expression_distance": expression_distance(rend_a, gt_a),
                      "render_frames": len(rend), "gt_frames": len(gt), "render_no_face": misses,
                      "gt_no_face": gt_misses,
                      "render_mean": rend_a.mean(0).tolist() if len(rend) else None,
                      "gt_mean": gt_a.mean(0).tolist() if len(gt) else None}
    return out


def sfm_folder(weights_dir: str | Path) -> Path:
    """The SFM folder of the weights folder (``{weights_dir}/sfm``, the 3DMM stage's files, manifest
    names :data:`pipeline.preprocess.threedmm.SFM_FILES`) once every file is present.

    Raises:
        WeightsMissing: the first absent file, with the fetch command in its reason.
    """
    from pipeline.preprocess.threedmm import SFM_FILES
    from pipeline.weights import require

    paths = [require(name, weights_dir) for name in SFM_FILES]
    return paths[0].parent


def main(argv=None) -> int:
    """CLI: ``python -m pipeline.metrics.emotion_expr --edit DIR --data DIR (--sfm DIR | --weights-dir DIR)
    --out FILE``; without the SFM files the JSON says n/a with the reason."""
    import argparse

    from pipeline.common.io import atomic_write_json
    from pipeline.common.log import setup_logging
    from pipeline.metrics.landmarks import make_landmarker

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edit", required=True, type=Path, help="results/renders/{method}/{identity}/emotion_edit")
    ap.add_argument("--data", required=True, type=Path, help="results/data/{identity}")
    ap.add_argument("--sfm", type=Path, help="folder with the SFM files (default: the weights folder)")
    ap.add_argument("--weights-dir", type=Path, default=Path("weights_cache"),
                    help="weights folder (SFM files, FAN landmarks; dlib without FAN)")
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args(argv)
    log = setup_logging("pipeline.metrics.emotion_expr")
    head = {"metric": "SFM expression distance (eos-py, 6 blendshape weights)", "expressions": list(EXPRESSIONS)}
    from pipeline.weights import WeightsMissing

    try:
        folder = a.sfm or sfm_folder(a.weights_dir)
    except WeightsMissing as exc:
        log.warning("n/a: %s", exc.reason)
        atomic_write_json(a.out, {**head, "labels": None, "reason": exc.reason})
        return 0
    landmarker, note = make_landmarker(a.weights_dir)
    res = evaluate_edit(a.edit, a.data, SFMExpressionFitter(folder), landmarker)
    atomic_write_json(a.out, {**head, "landmarks": landmarker.name, "landmarks_note": note, "labels": res})
    for label, r in res.items():
        log.info("%s: %.3f (%d renders, %d gt frames)", label, r["sfm_expression_distance"], r["render_frames"],
                 r["gt_frames"])
    return 0


if __name__ == "__main__":
    import sys

    from pipeline.common.log import run_main

    sys.exit(run_main(main))
