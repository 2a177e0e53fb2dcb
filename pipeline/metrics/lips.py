"""Lip landmark distance over MediaPipe's lip landmark set (``lmd_lips``), this pipeline's stand-in
for NeRF-3DTalker's "LMD-79".

NeRF-3DTalker (Liu et al., arXiv 2502.14178, Table I) reports LMD over 79 lip landmarks; its text
names neither the detector nor which 79 points, so that set cannot be reproduced. Measured here:
the 40 points of MediaPipe Face Mesh's ``FACEMESH_LIPS`` (outer and inner lip contours of the
478-point mesh), found separately in the generated and the ground-truth frame by the MediaPipe Face
Landmarker (``resources/models/face_landmarker.task``). Each point set is mean-centred (removes the
head translation, as :func:`pipeline.metrics.landmarks.lmd`), the mean Euclidean distance between
corresponding points is taken per frame, in pixels scaled to a 512 px frame height, and averaged
over the frames in which both faces were found.
"""
from __future__ import annotations

import numpy as np

#: MediaPipe Face Mesh ``FACEMESH_LIPS`` vertex indices (mediapipe.python.solutions.face_mesh_connections)
LIP_POINTS = np.array([0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185,
                       191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409,
                       415])
BACKEND = f"MediaPipe Face Mesh lips ({len(LIP_POINTS)} FACEMESH_LIPS points of the 478-point mesh)"


def lip_lmd(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame lip landmark distance.

    Args:
        pred, gt: [N, 478, 2+] (or [478, 2+]) MediaPipe mesh pixel coordinates; only x, y are used.
    Returns:
        [N] float64: mean over :data:`LIP_POINTS` of ``||(p_k - mean(p)) - (g_k - mean(g))||_2``,
        pixels of the input frames.
    """
    from pipeline.metrics.landmarks import lmd

    return lmd(np.asarray(pred)[..., :2], np.asarray(gt)[..., :2], LIP_POINTS)
