"""LMD: landmark distance between generated and ground-truth frames (Chen et al. 2018, "Lip
movements generation at a glance"; the mouth variant used by AD-NeRF / RAD-NeRF / ER-NeRF tables).

Per frame, 68 iBUG landmarks are found on each frame separately (the render's face is detected in
the render, the ground truth's in the ground truth: :func:`frame_lmd`); each point set is
mean-centred (removes the global head translation), and the mean Euclidean distance between
corresponding points is taken over the mouth points 48-67 (``lmd``) or all 68 (``lmd_face``). The
distance is in pixels at the reference height :data:`REFERENCE_HEIGHT` (512 px, the papers'
crops): a render of height H is measured at H and scaled by 512 / H. The value is the mean over
frames in which both faces were found; frames where the render (or the ground truth) has no
face are counted and reported in the metric's ``note``, not scored.

Detector: FAN (face_alignment 2D-FAN, via ``pipeline.preprocess.backends.fan``) when its weights
are present, else dlib's 68-point shape predictor from ``face_recognition_models`` (offline).
"""
from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)

MOUTH = np.arange(48, 68)
FACE = np.arange(68)
#: LMD is reported in pixels at this frame height (the papers' 512x512 crops)
REFERENCE_HEIGHT = 512
#: :func:`frame_lmd` status values
OK, RENDER_NO_FACE, GT_NO_FACE = "ok", "render_no_face", "gt_no_face"


def lmd(pred: np.ndarray, gt: np.ndarray, points: np.ndarray = MOUTH) -> np.ndarray:
    """Per-frame landmark distance.

    Args:
        pred, gt: [N, 68, 2] (or [68, 2]) landmark pixel coordinates (x, y), iBUG order.
        points: indices of the points compared (:data:`MOUTH` or :data:`FACE`).
    Returns:
        [N] float64: mean over ``points`` of ``||(p_k - mean(p)) - (g_k - mean(g))||_2`` with the
        means taken over ``points`` of each set, in pixels.
    """
    p = np.asarray(pred, np.float64)[..., points, :]
    g = np.asarray(gt, np.float64)[..., points, :]
    p = p - p.mean(axis=-2, keepdims=True)
    g = g - g.mean(axis=-2, keepdims=True)
    return np.linalg.norm(p - g, axis=-1).mean(axis=-1)


class Landmarker:
    """68-point landmarks of the largest face: dlib's HOG face detector for the box, then a 68-point
    predictor on the box (dlib's shape predictor, or FAN).

    The detector runs on a ``detect_scale`` downscaled copy (HOG finds 80 px faces; portraits at
    512 px have 200+ px faces); landmarks are predicted on the full-resolution frame.

    Args:
        predictor: object with ``predict(rgb, box) -> [68, 2]`` (pipeline.preprocess.backends).
        name: label recorded as the metric's backend.
    """

    def __init__(self, predictor, name: str, detect_scale: float = 0.5, weights_file=None):
        import dlib

        self.weights_file = weights_file
        self.predictor = predictor
        self.name = name
        self.detect_scale = detect_scale
        self.detector = dlib.get_frontal_face_detector()

    def detect(self, rgb: np.ndarray) -> tuple[float, float, float, float] | None:
        """Largest face box (left, top, right, bottom), full-resolution pixels, of an [H, W, 3]
        uint8 RGB frame; None without a face."""
        import cv2

        s = self.detect_scale
        small = cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s != 1 else rgb
        boxes = self.detector(np.ascontiguousarray(small), 0)
        if len(boxes) == 0:  # small face: full resolution, upsampled once (slower, only on misses)
            s = 1.0
            boxes = self.detector(np.ascontiguousarray(rgb), 1 if max(rgb.shape[:2]) <= 1024 else 0)
        if len(boxes) == 0:
            return None
        b = max(boxes, key=lambda r: r.width() * r.height())
        return (b.left() / s, b.top() / s, b.right() / s, b.bottom() / s)

    def landmarks(self, rgb: np.ndarray, box=None) -> np.ndarray | None:
        """[68, 2] float64 (x, y) pixels of an [H, W, 3] uint8 RGB frame, or None without a face.
        ``box``: a face box to use instead of detecting (e.g. the ground-truth frame's box)."""
        box = box if box is not None else self.detect(rgb)
        if box is None:
            return None
        return np.asarray(self.predictor.predict(np.ascontiguousarray(rgb), box), np.float64)


def frame_lmd(landmarker: "Landmarker", render: np.ndarray, gt: np.ndarray) -> tuple[float, float, str]:
    """Mouth and face LMD of one frame pair, each face detected in its own image.

    Args:
        landmarker: a :class:`Landmarker`.
        render, gt: [H, W, 3] uint8 RGB of the same size.
    Returns:
        (mouth LMD, face LMD, status): distances in pixels at :data:`REFERENCE_HEIGHT` (scaled by
        512 / H); NaN with status :data:`GT_NO_FACE` when the ground truth has no face, or
        :data:`RENDER_NO_FACE` when the render has none (such frames are not scored); else
        status :data:`OK`.
    """
    lg = landmarker.landmarks(gt)
    if lg is None:
        return math.nan, math.nan, GT_NO_FACE
    lq = landmarker.landmarks(render)
    if lq is None:
        return math.nan, math.nan, RENDER_NO_FACE
    scale = REFERENCE_HEIGHT / render.shape[0]
    return float(lmd(lq, lg, MOUTH)) * scale, float(lmd(lq, lg, FACE)) * scale, OK


def lmd_note(status: list[str]) -> str | None:
    """The metric note of a clip's :func:`frame_lmd` statuses: frames left out, None if none."""
    n = len(status)
    parts = [f"{who}: no face in {k} of {n} frames (not scored)"
             for who, key in (("render", RENDER_NO_FACE), ("ground truth", GT_NO_FACE))
             if (k := status.count(key))]
    return "; ".join(parts) or None


DLIB_NAME = "dlib-68 (face_recognition_models shape_predictor_68_face_landmarks)"
#: the face box comes from dlib's HOG detector (:class:`Landmarker`), whose boxes are tighter
#: than the S3FD boxes face_alignment's crop (scale (w + h) / 195) is tuned for; the name says so
FAN_NAME = "FAN 2DFAN4 (face_alignment; face boxes from dlib's HOG detector, not face_alignment's S3FD)"


def make_landmarker(weights_dir, detect_scale: float = 0.5) -> tuple[Landmarker, str | None]:
    """The LMD landmarker: FAN when its weights load (``pipeline.preprocess.backends.fan``), else
    dlib's 68-point predictor. Returns (landmarker, why FAN was not used, or None)."""
    from pipeline.preprocess.backends.dlib68 import Dlib68
    from pipeline.weights import WeightsMismatch

    try:
        from pipeline.preprocess.backends.fan import FanLandmarks

        from pipeline.weights import weights_path

        fan = FanLandmarks.from_weights_dir(weights_dir)
        return Landmarker(fan, FAN_NAME, detect_scale, weights_path("fan_2dfan4", weights_dir)), None
    except WeightsMismatch:  # a wrong file is an error, never a silent fallback
        raise
    except Exception as exc:  # absent weights or face_alignment: the documented fallback
        note = f"FAN unavailable ({getattr(exc, 'reason', None) or exc})"
        log.info("LMD landmarks: dlib-68; %s", note)
    from pipeline.preprocess.backends.dlib68 import predictor_path

    return Landmarker(Dlib68(), DLIB_NAME, detect_scale, predictor_path()), note
