"""Camera motion of a talking-head clip, measured on the background, and its static-camera spans.

RAD-NeRF, ER-NeRF and every model of this project assume a static camera: one background image
(``bc.jpg``) and a torso in image coordinates. A clip with a camera move (a broadcast's push-in,
a pan) cannot be explained by them, and a window that follows the head cannot undo it either. The
crop stage therefore measures the camera's motion between consecutive samples of its face track
(:data:`pipeline.preprocess.crop.TRACK_FPS`, frames at most 360 px high) on the background only:

1. Corners (Shi-Tomasi, ``cv2.goodFeaturesToTrack``) on the previous frame outside the person
   (the face box's column band, :data:`PERSON_HALF_WIDTH` face sides either side of its centre,
   from :data:`PERSON_TOP` face sides above its centre down to the bottom of the frame);
2. tracked into the current frame with pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``);
3. a similarity transform (rotation, uniform scale, translation) fitted with RANSAC
   (``cv2.estimateAffinePartial2D``, 1 px threshold), which ignores hands, overlays and other
   things that move on their own;
4. the step's motion = the largest displacement of the frame's four corners under that transform
   (pixels of the tracking frame). A step is *static* when it is at most ``max_step_px``; a step
   with fewer than :data:`MIN_INLIERS` inliers (a tight crop with no background, a blank wall)
   cannot be measured and counts as static (recorded as not measured).

On the clips of ``../shared/data/identities`` the static shots with a visible background measure
0.00-0.03 px per step (median; at most 0.32 px, a hand-held-steady office shot), the tight
512x512 crops have no background to measure, and the 720p broadcast's push-in after 46 s moves
the corners by 1.6-4.3 px per step (a zoom of 14 % over about 5 s).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: the person mask's half width around the face centre, in face sides (face, hair, shoulders, hands)
PERSON_HALF_WIDTH = 1.8
#: the person mask starts this many face sides above the face centre (hair)
PERSON_TOP = 1.2
#: fewer RANSAC inliers than this: the step's motion is not measured (counted as static)
MIN_INLIERS = 12
#: corners sought per frame
MAX_CORNERS = 400


@dataclass
class CameraMotion:
    """Accumulates the background motion of consecutive frames (see the module docstring).

    Call :meth:`update` once per face-track sample, in order. After the last frame:
    ``steps_px`` float [T-1] (motion of each step in pixels of the tracking frame, NaN when not
    measured) and :meth:`static_steps`.
    """

    steps_px: list = field(default_factory=list)
    """Per step k -> k+1: largest frame-corner displacement (px of the tracking frame), NaN when
    fewer than :data:`MIN_INLIERS` background points were tracked."""
    _prev: tuple | None = None

    def update(self, rgb: np.ndarray, face: tuple[float, float, float] | None) -> None:
        """Add one frame.

        Args:
            rgb: uint8 [H, W, 3] frame (the tracking frame, any size).
            face: (cx, cy, side) of the face in this frame's pixels, or None when no face was
                found (then the whole frame is background).
        """
        import cv2

        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        mask = np.full(gray.shape, 255, np.uint8)
        if face is not None and np.isfinite(face).all():
            cx, cy, side = face
            x0 = int(max(0, cx - PERSON_HALF_WIDTH * side))
            x1 = int(max(0, cx + PERSON_HALF_WIDTH * side))
            mask[int(max(0, cy - PERSON_TOP * side)):, x0:x1] = 0
        if self._prev is not None:
            self.steps_px.append(self._step(self._prev[0], self._prev[1], gray))
        self._prev = (gray, mask)

    @staticmethod
    def _step(prev: np.ndarray, mask: np.ndarray, cur: np.ndarray) -> float:
        import cv2

        pts = cv2.goodFeaturesToTrack(prev, MAX_CORNERS, 0.01, 7, mask=mask)
        if pts is None or len(pts) < MIN_INLIERS:
            return float("nan")
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(prev, cur, pts, None)
        ok = status.ravel() == 1
        if ok.sum() < MIN_INLIERS:
            return float("nan")
        a, inliers = cv2.estimateAffinePartial2D(pts[ok], nxt[ok], method=cv2.RANSAC,
                                                 ransacReprojThreshold=1.0)
        if a is None or inliers is None or int(inliers.sum()) < MIN_INLIERS:
            return float("nan")
        h, w = prev.shape
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64)
        moved = corners @ a[:, :2].T + a[:, 2]
        return float(np.linalg.norm(moved - corners, axis=1).max())

    def static_steps(self, max_step_px: float) -> np.ndarray:
        """bool [T-1]: step k -> k+1 is static (motion <= ``max_step_px`` or not measured)."""
        s = np.asarray(self.steps_px, dtype=np.float64)
        return ~(s > max_step_px)

    def report(self, max_step_px: float) -> dict:
        """JSON summary for crop.json: per-step motion (px, None when not measured), the threshold,
        the measured fraction and the number of moving steps."""
        s = np.asarray(self.steps_px, dtype=np.float64)
        return {"steps_px": [None if not np.isfinite(v) else round(float(v), 3) for v in s],
                "max_step_px": max_step_px,
                "measured_fraction": round(float(np.isfinite(s).mean()), 4) if len(s) else 0.0,
                "moving_steps": int((s > max_step_px).sum())}


def static_runs(static: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of track samples joined by static steps.

    Args:
        static: bool [T-1], step k -> k+1 static.
    Returns:
        list of (i, j): samples i .. j-1 (half-open, j - i >= 1) form one static-camera run; the
        runs cover all T samples in order.
    """
    runs, start = [], 0
    for k, ok in enumerate(static):
        if not ok:
            runs.append((start, k + 1))
            start = k + 1
    runs.append((start, len(static) + 1))
    return runs
