"""The classical one-shot backend ``meshwarp`` (method ``oneshot_meshwarp``).

After Averbuch-Elor et al., "Bringing Portraits to Life", ACM TOG 36(6), 2017: the photo is warped
by the facial motion of a driving video, with the mouth interior taken from the driver. Steps per
frame ``t`` (driver landmarks ``D_t``, anchor frame ``a``, photo landmarks ``P``; all 2-D, pixels):

1. head motion removed: ``S_t`` = similarity fitted on MediaPipe's 33 rigid landmarks mapping
   ``D_t`` onto ``D_a``; expression displacement ``E_t = S_t(D_t) - D_a``;
2. transfer to the photo: ``A`` = similarity ``D_a -> P`` (rigid landmarks); the displacement is
   rotated and scaled by ``A``'s linear part: ``P_t = P + s_A R_A E_t``;
3. head motion re-applied as a similarity in the photo's frame: ``H_t = A S_t^-1 A^-1``;
   targets ``Q_t = H_t(P_t)``;
4. piecewise-affine warp of the photo (Delaunay triangles of the photo's points) with control points: the
   478 mesh points (``P -> Q_t``), a ring at 1.5x the face oval moving rigidly with ``H_t`` (hair
   and ears follow the head), and the image border fixed (the background stays);
5. inner mouth: the driver frame's inner-lip region, mapped by the similarity between the
   driver's and the target's lip contours, its colours matched to the photo (mean and standard
   deviation per Lab channel of the face skin, Reinhard et al. 2001), pasted into the target
   inner-lip polygon with a feathered mask (Gaussian, 1.5% of the face width).

At the anchor frame the output is the photo itself. Labelled as classical in every table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.oneshot.face import (INNER_LIP, OUTER_LIP, FaceTrack, apply, fit_similarity, stable_ids)
from pipeline.preprocess.backends.mediapipe_mesh import FACE_OVAL

NAME = "meshwarp"
DESCRIPTION = ("classical mesh warp (MediaPipe 478-point mesh, piecewise-affine warp, driver's inner mouth, "
               "after Averbuch-Elor et al. 2017)")

#: ring of rigidly moving control points, as a multiple of the face oval about its centre
RING_SCALE = 1.5


class PiecewiseAffine:
    """Piecewise-affine warp with a fixed triangulation of the source control points.

    The source points are triangulated once (scipy's Delaunay / Qhull); for a set of destination
    points each destination triangle is rasterised (OpenCV ``fillConvexPoly``, over all outlines drawn
    first, so that no pixel between triangles is missed) and its pixels take the source position with the
    same barycentric coordinates in the source triangle (the mapping of scikit-image's
    ``PiecewiseAffineTransform``). Where destination triangles overlap (a fold), the later one
    wins; pixels outside every triangle map to themselves.

    Args:
        src: [K, 2] float control points in the source image (x, y pixels).
        width, height: output size.
    """

    def __init__(self, src: np.ndarray, width: int, height: int):
        from scipy.spatial import Delaunay

        self.src = np.asarray(src, np.float64)
        self.simplices = Delaunay(self.src).simplices            # [T, 3]
        self.w, self.h = int(width), int(height)
        ys, xs = np.mgrid[0:self.h, 0:self.w]
        self.pix = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3).astype(np.float64)

    def maps(self, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse maps (map_x, map_y) float32 [H, W] for ``cv2.remap`` sending ``src`` to ``dst``
        ([K, 2], same order as ``src``)."""
        import cv2

        dst = np.asarray(dst, np.float64)
        tri_d = dst[self.simplices]                              # [T, 3, 2]
        tri_s = self.src[self.simplices]
        dh = np.concatenate([tri_d, np.ones((len(tri_d), 3, 1))], 2)     # [T, 3, 3] rows (x, y, 1)
        aff = np.linalg.pinv(dh) @ tri_s                          # [T, 3, 2]: [x y 1] @ aff = src
        idx = np.full((self.h, self.w), -1, np.int32)
        shift = 4
        pts = np.round(tri_d * (1 << shift)).astype(np.int32)
        for k in range(len(pts)):      # outlines first: they only fill pixels no filled triangle covers
            cv2.polylines(idx, [pts[k]], True, int(k), 1, cv2.LINE_8, shift)
        for k in range(len(pts)):
            cv2.fillConvexPoly(idx, pts[k], int(k), cv2.LINE_8, shift)
        flat = idx.reshape(-1)
        out = self.pix[:, :2].copy()
        inside = flat >= 0
        out[inside] = np.einsum("mi,mij->mj", self.pix[inside], aff[flat[inside]])
        return (out[:, 0].reshape(self.h, self.w).astype(np.float32),
                out[:, 1].reshape(self.h, self.w).astype(np.float32))


def _border_points(width: int, height: int, n: int = 4) -> np.ndarray:
    xs = np.linspace(0, width - 1, n + 1)
    ys = np.linspace(0, height - 1, n + 1)
    pts = [(x, 0) for x in xs] + [(x, height - 1) for x in xs] + [(0, y) for y in ys[1:-1]] + \
          [(width - 1, y) for y in ys[1:-1]]
    return np.array(pts, np.float64)


def _lab_stats(lab: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = lab[mask > 0].reshape(-1, 3)
    if len(v) < 10:
        return np.zeros(3), np.ones(3)
    return v.mean(0), v.std(0) + 1e-3


def _poly_mask(pts: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    m = np.zeros((height, width), np.uint8)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 255)
    return m


@dataclass
class MeshWarp:
    """The meshwarp backend for one photo and one driving track.

    Args:
        photo: uint8 RGB [H, W, 3] reference photo at the output size.
        photo_track: its one-frame :class:`~pipeline.oneshot.face.FaceTrack` (pixels of ``photo``).
        driving: the driving video's track (pixels of the driving frames).
        anchor: index of the driving anchor frame.
    """

    photo: np.ndarray
    photo_track: FaceTrack
    driving: FaceTrack
    anchor: int

    def __post_init__(self) -> None:
        import cv2

        self.h, self.w = self.photo.shape[:2]
        self.rigid = stable_ids()
        self.P = self.photo_track.mesh[0, :, :2].astype(np.float64)
        self.Da = self.driving.mesh[self.anchor, :, :2].astype(np.float64)
        self.A = fit_similarity(self.Da[self.rigid], self.P[self.rigid])
        self.A_inv = np.linalg.inv(self.A)
        self.A_lin = self.A[:2, :2]
        centre = self.P[FACE_OVAL].mean(0)
        self.ring = centre + RING_SCALE * (self.P[FACE_OVAL] - centre)
        self.border = _border_points(self.w, self.h)
        self.warp = PiecewiseAffine(np.concatenate([self.P, self.ring, self.border]), self.w, self.h)
        self.face_w = float(np.ptp(self.P[:, 0]))
        lab = cv2.cvtColor(self.photo, cv2.COLOR_RGB2LAB).astype(np.float32)
        self.photo_skin = _lab_stats(lab, self._skin_mask(self.P, self.w, self.h))

    @staticmethod
    def _skin_mask(pts: np.ndarray, width: int, height: int) -> np.ndarray:
        """Face oval minus the outer-lip polygon (skin and eyes: the statistics are robust)."""
        m = _poly_mask(pts[FACE_OVAL], width, height)
        m[_poly_mask(pts[OUTER_LIP], width, height) > 0] = 0
        return m

    def targets(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Target mesh ``Q_t`` [478, 2] and the head-motion similarity ``H_t`` [3, 3] of frame t."""
        D = self.driving.mesh[t, :, :2].astype(np.float64)
        S = fit_similarity(D[self.rigid], self.Da[self.rigid])       # driver t -> anchor
        E = apply(S, D) - self.Da                                     # expression displacement
        Pt = self.P + E @ self.A_lin.T
        H = self.A @ np.linalg.inv(S) @ self.A_inv                    # head motion, photo frame
        return apply(H, Pt), H

    def frame(self, t: int, driving_rgb: np.ndarray) -> np.ndarray:
        """Output frame t: uint8 RGB [H, W, 3] at the photo's size.

        Args:
            t: driving frame index (into the track).
            driving_rgb: the driving frame t, uint8 RGB (its own size; used for the inner mouth).
        """
        import cv2

        Q, H = self.targets(t)
        dst = np.concatenate([Q, apply(H, self.ring), self.border])
        mx, my = self.warp.maps(dst)
        out = cv2.remap(self.photo, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return self._paste_mouth(out, Q, t, driving_rgb)

    def _paste_mouth(self, out: np.ndarray, Q: np.ndarray, t: int, drv: np.ndarray) -> np.ndarray:
        import cv2

        mask = _poly_mask(Q[INNER_LIP], self.w, self.h)
        if mask.sum() < 255 * 4:    # mouth closed: nothing to fill
            return out
        D = self.driving.mesh[t, :, :2].astype(np.float64)
        lips = np.concatenate([INNER_LIP, OUTER_LIP])
        M = fit_similarity(D[lips], Q[lips])
        mouth = cv2.warpAffine(drv, M[:2], (self.w, self.h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        # colour: driver skin statistics -> photo skin statistics (Lab, per channel)
        dh, dw = drv.shape[:2]
        dlab = cv2.cvtColor(drv, cv2.COLOR_RGB2LAB).astype(np.float32)
        mu_d, sd_d = _lab_stats(dlab, self._skin_mask(D, dw, dh))
        mu_p, sd_p = self.photo_skin
        mlab = cv2.cvtColor(mouth, cv2.COLOR_RGB2LAB).astype(np.float32)
        mlab = (mlab - mu_d) * (sd_p / sd_d) + mu_p
        mouth = cv2.cvtColor(np.clip(mlab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
        sigma = max(0.5, 0.015 * self.face_w)
        alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), sigma)[..., None]
        return np.clip(out * (1.0 - alpha) + mouth * alpha + 0.5, 0, 255).astype(np.uint8)
