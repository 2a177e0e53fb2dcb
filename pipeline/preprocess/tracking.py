"""Head-pose tracking: per-frame head rotation/translation in a fixed camera, focal length, expressions.

Method (a rigid-template replacement for AD-NeRF / ER-NeRF ``data_utils/face_tracking/face_tracker.py``,
which fits a Basel Face Model to 68 landmarks):

1. **Rigid template.** MediaPipe's canonical face model (468 vertices, centimetres, +x to the
   subject's left = image right when frontal, +y up, +z out of the face towards the camera) is read
   from the ``geometry_pipeline_metadata_landmarks.binarypb`` inside
   ``resources/models/face_landmarker.task``. It is made person-specific: every frame's MediaPipe
   mesh (x, y pixels, z relative depth in pixels) is similarity-aligned (Umeyama) to the canonical
   model on the 33 stable "Procrustes basis" landmarks MediaPipe itself uses for head pose (forehead,
   nose bridge, eye corners, cheek bones, face contour; no lips, no jaw tip), and the aligned meshes
   are averaged. The template keeps the canonical model's metric scale.
2. **Focal length from the whole clip.** For each focal ``f`` of ``focal_search`` (``start..stop``
   inclusive, ``step``; pixels at the crop size; coarse-to-fine, see :func:`fit_focal`) and 30 frames
   spread over the clip, the poses are initialised with ``cv2.solvePnP`` (SQPnP, principal point at
   the image centre as the anchors) and the template and all poses are then refined jointly (rigid
   bundle adjustment with a prior that keeps the template near its start, the analogue of the
   anchors' identity regulariser, :func:`bundle_adjust`). The focal with the smallest mean landmark
   reprojection error wins (as the anchors: the focal "that minimises landmark loss"); a parabola
   through the neighbouring grid errors refines it inside the step. A clip with little head rotation
   leaves the focal undetermined (flat curve, minimum on the grid border, :func:`focal_undetermined`):
   the documented prior ``focal_prior`` (scaled to the crop size) is used instead, with a warning, and
   ``tracking.json`` says so (``focal_source: "prior"``, ``focal_prior_reason``).
3. **Per-frame poses** for all frames at that focal (template fitted on up to 60 frames, then PnP),
   temporally smoothed on the Euler angles and translations over ``smooth_window`` frames by a
   Savitzky-Golay filter of order ``smooth_order`` (a local polynomial fit: it removes landmark
   jitter but follows real head turns; ``smooth_order`` 0 gives the centred moving average, which
   lags behind fast turns and raised the moving speakers' reprojection error by up to 50%,
   docs/quality.md).
4. **Expressions**: ``exp`` = the 52 MediaPipe blendshape scores per frame (the Basel Face Model
   expression fit of the anchors needs the BFM, which cannot be shipped: not supported in this build).

Conventions (``track_params.pt`` follows AD-NeRF's ``face_tracker.py`` so that its
``save_transforms`` would give the same ``transforms_*.json``):

* camera coordinates are OpenGL's: +x right, +y up, the camera looks down -z; a head point ``p``
  (template coordinates) maps to ``p_cam = R(euler) p + trans`` and projects to
  ``u = -f x/z + cx``, ``v = f y/z + cy`` (AD-NeRF ``proj_pts``);
* ``R(euler) = Rx(theta) Ry(phi) Rz(psi)`` exactly as AD-NeRF ``euler2rot`` (see :func:`euler2rot` for
  the matrices: ``Ry``/``Rz`` turn by ``-phi``/``-psi``);
* ``trans`` is in decimetres (the anchors' 3DMM units, ``trans_z`` about -7); ``transform_matrix``
  is the camera-to-world matrix ``[[R^T, -R^T trans/10], [0, 1]]`` in metres (ER-NeRF
  ``process.py`` divides by 10), the head is the world.

Outputs: ``track_params.pt`` (see :func:`save_track_params` for the keys), ``transforms_train.json``
and ``transforms_val.json`` (ER-NeRF schema plus extra keys, see :func:`transforms_dicts`), and
``tracking.json`` (focal, reprojection error, focal search curve).
"""
from __future__ import annotations

import argparse
import logging
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve  # loaded before threadpool limits apply

from pipeline.common.config import PROJECT_ROOT, StageConfig, parse_cfg_arg
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_path, atomic_write_json, read_json
from pipeline.common.log import run_main, setup_logging

log = logging.getLogger("pipeline.preprocess.tracking")

FACE_LANDMARKER_TASK = PROJECT_ROOT / "resources" / "models" / "face_landmarker.task"
#: OpenCV camera (x right, y down, z forward) -> OpenGL camera (x right, y up, z backward)
CV_TO_GL = np.diag([1.0, -1.0, -1.0])
#: frames used in the focal search (evenly spread over the clip)
FOCAL_SEARCH_FRAMES = 30
#: stride of the coarse pass of the focal search (grid steps)
COARSE_STRIDE = 3
#: frames in the final template fit (bundle adjustment) at the chosen focal
BA_FRAMES = 60
#: weight of the template prior in the bundle adjustment (pixels of residual per cm of deviation)
TEMPLATE_PRIOR = 2.0
CONVENTION = {
    "camera": "OpenGL (x right, y up, looking down -z); AD-NeRF proj_pts: u = -f*x/z + cx, v = f*y/z + cy",
    "transform_matrix": "camera-to-world 4x4; world = head (template) frame; ER-NeRF process.py save_transforms",
    "head_frame": "MediaPipe canonical face: +x subject's left (image right), +y up, +z out of the face",
    "euler": ("radians (theta, phi, psi); R = Rx(theta) Ry(phi) Rz(psi) = AD-NeRF util.euler2rot, i.e. "
              "Rx=[[1,0,0],[0,c,-s],[0,s,c]], Ry=[[c,0,s],[0,1,0],[-s,0,c]], Rz=[[c,s,0],[-s,c,0],[0,0,1]]; "
              "track_params.pt euler/trans give transform_matrix by ER-NeRF process.py save_transforms"),
    "translation_units": "transform_matrix: metres; track_params.pt trans: decimetres (= transform / 10 as AD-NeRF)",
}


@dataclass
class TrackingConfig(StageConfig):
    """Configuration of the tracking stage (config ``preprocess.tracking``)."""

    focal_search: tuple[float, float, float] = (600.0, 2400.0, 100.0)
    """Focal search grid ``[start, stop, step]`` in pixels at the crop size; ``stop`` inclusive."""
    smooth_window: int = 7
    """Temporal smoothing window over the per-frame poses (frames, odd; 1 = no smoothing)."""
    smooth_order: int = 2
    """Polynomial order of the Savitzky-Golay smoothing (0: centred moving average)."""
    val_fraction: float = 1.0 / 11.0
    """Fraction of the frames, taken from the end of the clip, that form the validation split."""
    focal_prior: float = 1000.0
    """Focal length (pixels at a 512-pixel crop, scaled by the crop size) used when the search leaves
    it undetermined (:func:`focal_undetermined`): the centre of the anchors' own focal search
    (ER-NeRF / AD-NeRF ``face_tracker.py`` line 54, ``range(600, 1500, 100)`` on 512x512 crops), a
    28.7 degree vertical field of view."""
    focal_flat_fraction: float = 0.01
    """The search curve is flat when ``(max - min) / max(min, 0.1 px)`` of its mean reprojection
    errors is below this (real clips with an interior minimum: 0.018-0.07)."""

    def __post_init__(self) -> None:
        self.focal_search = tuple(float(x) for x in self.focal_search)  # a JSON list in the config

    def focals(self) -> np.ndarray:
        """The candidate focal lengths (pixels); raises ValueError on an empty range."""
        start, stop, step = self.focal_search
        if step <= 0 or stop < start:
            raise ValueError(f"focal_search {list(self.focal_search)}: need start <= stop and step > 0")
        return np.arange(start, stop + step * 0.5, step)


@dataclass
class CanonicalFace:
    """MediaPipe's canonical face model.

    Attributes:
        vertices: float64 [468, 3], centimetres, +x subject's left, +y up, +z out of the face.
        basis_ids: int [33], the landmark ids MediaPipe uses for rigid (Procrustes) head pose.
        basis_weights: float [33], their weights in MediaPipe's geometry pipeline.
    """

    vertices: np.ndarray
    basis_ids: np.ndarray
    basis_weights: np.ndarray


def _proto_fields(buf: bytes) -> list[tuple[int, int, object]]:
    """Decode one protobuf message level: [(field number, wire type, value)] where value is an int
    (varint), 4 raw bytes (fixed32) or bytes (length-delimited). Raises ValueError on other types."""
    out, i = [], 0

    def varint(i):
        val, shift = 0, 0
        while True:
            b = buf[i]
            val |= (b & 0x7F) << shift
            i += 1
            if b < 0x80:
                return val, i
            shift += 7

    while i < len(buf):
        key, i = varint(i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = varint(i)
        elif wt == 5:
            val, i = buf[i:i + 4], i + 4
        elif wt == 2:
            n, i = varint(i)
            val, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        out.append((num, wt, val))
    return out


def load_canonical_face(task_path: str | Path = FACE_LANDMARKER_TASK) -> CanonicalFace:
    """Read the canonical face model from a MediaPipe ``face_landmarker.task`` bundle.

    The bundle's ``geometry_pipeline_metadata_landmarks.binarypb`` is a ``GeometryPipelineMetadata``
    protobuf (mediapipe ``face_geometry/proto``): field 1 ``canonical_mesh`` (``Mesh3d``: field 3
    repeated float ``vertex_buffer`` of x, y, z, u, v per vertex), field 2 repeated
    ``procrustes_landmark_basis`` (``landmark_id`` = 1, ``weight`` = 2). It is decoded here directly
    (importing mediapipe costs seconds).

    Raises:
        InputError: the bundle is missing or has no usable geometry pipeline metadata.
    """
    task_path = Path(task_path)
    try:
        with zipfile.ZipFile(task_path) as zf:
            blob = zf.read("geometry_pipeline_metadata_landmarks.binarypb")
    except FileNotFoundError:
        raise InputError(task_path, "MediaPipe face landmarker bundle not found") from None
    except (KeyError, zipfile.BadZipFile):
        raise InputError(task_path, "not a face_landmarker.task bundle with geometry metadata") from None
    try:
        verts, ids, weights = None, [], []
        for num, wt, val in _proto_fields(blob):
            if num == 1 and wt == 2:  # proto2: the floats come packed (wire type 2) or one by one (5)
                chunks = [v2 for n2, _, v2 in _proto_fields(val) if n2 == 3]
                verts = np.frombuffer(b"".join(chunks), dtype="<f4").astype(np.float64).reshape(-1, 5)
            elif num == 2 and wt == 2:
                ref = {n2: v2 for n2, _, v2 in _proto_fields(val)}
                ids.append(int(ref.get(1, 0)))
                weights.append(float(np.frombuffer(ref[2], "<f4")[0]) if 2 in ref else 0.0)
    except (ValueError, IndexError, KeyError):
        verts = None
    if verts is None or len(verts) < 468 or not ids:
        raise InputError(task_path, "geometry metadata has no canonical mesh / landmark basis")
    return CanonicalFace(vertices=verts[:, :3].copy(), basis_ids=np.array(ids, np.int64),
                         basis_weights=np.array(weights, np.float64))


# --------------------------------------------------------------------------------------------
# Rotations (AD-NeRF conventions)

def euler2rot(euler: np.ndarray) -> np.ndarray:
    """Rotation matrices from Euler angles, exactly AD-NeRF ``data_util/face_tracking/util.py``
    ``euler2rot`` (lines 18-40; the same function in ``data_util/process_data.py`` 13-37 and ER-NeRF
    ``data_utils/face_tracking/util.py``).

    AD-NeRF builds each matrix from ``torch.cat(..., 1)`` *columns*, so its matrices are
    ``R = Rx(theta) @ Ry(phi) @ Rz(psi)`` with
    ``Rx = [[1,0,0],[0,c,-s],[0,s,c]]``, ``Ry = [[c,0,s],[0,1,0],[-s,0,c]]`` and
    ``Rz = [[c,s,0],[-s,c,0],[0,0,1]]`` (``c, s`` = cos, sin of that axis' angle): ``Rx`` turns by
    ``+theta`` about x, ``Ry`` and ``Rz`` turn by ``-phi`` / ``-psi`` about y / z (right-handed).

    Args:
        euler: [N, 3] (theta, phi, psi) in radians.
    Returns:
        [N, 3, 3] float64.
    """
    e = np.asarray(euler, dtype=np.float64).reshape(-1, 3)
    n = len(e)
    ct, st = np.cos(e[:, 0]), np.sin(e[:, 0])
    cp, sp = np.cos(e[:, 1]), np.sin(e[:, 1])
    cs, ss = np.cos(e[:, 2]), np.sin(e[:, 2])
    one, zero = np.ones(n), np.zeros(n)
    rx = np.stack([one, zero, zero, zero, ct, -st, zero, st, ct], -1).reshape(n, 3, 3)
    ry = np.stack([cp, zero, sp, zero, one, zero, -sp, zero, cp], -1).reshape(n, 3, 3)
    rz = np.stack([cs, ss, zero, -ss, cs, zero, zero, zero, one], -1).reshape(n, 3, 3)
    return rx @ ry @ rz


def rot2euler(rot: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler2rot` for ``|phi| < pi/2``: ``R[0] = [cos(phi) cos(psi),
    cos(phi) sin(psi), sin(phi)]``, ``R[1, 2] = -sin(theta) cos(phi)``, ``R[2, 2] = cos(theta) cos(phi)``.

    Args:
        rot: [N, 3, 3] rotation matrices.
    Returns:
        [N, 3] (theta, phi, psi) radians.
    """
    r = np.asarray(rot, dtype=np.float64).reshape(-1, 3, 3)
    phi = np.arcsin(np.clip(r[:, 0, 2], -1.0, 1.0))
    psi = np.arctan2(r[:, 0, 1], r[:, 0, 0])
    theta = np.arctan2(-r[:, 1, 2], r[:, 2, 2])
    return np.stack([theta, phi, psi], -1)


def project_gl(points: np.ndarray, rot: np.ndarray, trans: np.ndarray, focal: float,
               cx: float, cy: float) -> np.ndarray:
    """Project head-frame points with OpenGL-convention poses (AD-NeRF ``proj_pts``).

    Args:
        points: [K, 3] head-frame points (any length unit, same as ``trans``).
        rot: [N, 3, 3]; trans: [N, 3] (``p_cam = rot @ p + trans``, ``p_cam.z < 0`` in front).
        focal, cx, cy: pixels.
    Returns:
        [N, K, 2] pixel coordinates (x right, y down).
    """
    cam = np.einsum("nij,kj->nki", rot, points) + trans[:, None, :]
    u = -focal * cam[..., 0] / cam[..., 2] + cx
    v = focal * cam[..., 1] / cam[..., 2] + cy
    return np.stack([u, v], -1)


# --------------------------------------------------------------------------------------------
# Template and pose estimation

def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s R src + t`` (Umeyama 1991, eq. 40-42).

    Args:
        src, dst: [K, 3] corresponding points.
    Returns:
        (s, R [3, 3], t [3]).
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    r = u @ sign @ vt
    s = np.trace(np.diag(d) @ sign) / a.var(0).sum()
    return float(s), r, mu_d - s * r @ mu_s


def person_template(mesh: np.ndarray, canonical: CanonicalFace, frames: np.ndarray | None = None) -> np.ndarray:
    """Person-specific rigid template from MediaPipe meshes (mean of the canonical-aligned meshes).

    Args:
        mesh: [N, >=468, 3] MediaPipe mesh, x/y pixels (y down), z pixels (smaller = nearer).
        canonical: the canonical face (gives the frame, the metric scale and the alignment ids).
        frames: optional subset of frame indices to average.
    Returns:
        [468, 3] float64 template in the canonical frame, centimetres.
    """
    idx = np.arange(len(mesh)) if frames is None else np.asarray(frames)
    ids = canonical.basis_ids
    acc = np.zeros((468, 3))
    for i in idx:
        pts = mesh[i, :468].astype(np.float64) * np.array([1.0, -1.0, -1.0])  # -> y up, z to camera
        s, r, t = umeyama(pts[ids], canonical.vertices[ids])
        acc += s * pts @ r.T + t
    return acc / len(idx)


def _pnp(obj: np.ndarray, img: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:  # pragma: no cover - SQPnP always returns a solution for >= 3 points
        ok, rvec, tvec = cv2.solvePnP(obj, img, k, None, flags=cv2.SOLVEPNP_EPNP)
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, k, None, rvec, tvec)
    return cv2.Rodrigues(rvec)[0], tvec.reshape(3)


def solve_poses(lms: np.ndarray, template: np.ndarray, focal: float, cx: float, cy: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame rigid pose by PnP (OpenCV camera convention).

    Args:
        lms: [N, K, 2] observed landmarks (pixels).
        template: [K, 3] head-frame points (centimetres).
        focal, cx, cy: pinhole intrinsics (pixels).
    Returns:
        (rot_cv [N, 3, 3], trans_cv [N, 3] centimetres, err [N] mean reprojection error in pixels),
        with ``p_cv = rot_cv @ p + trans_cv``.
    """
    k = np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1]], dtype=np.float64)
    obj = np.ascontiguousarray(template, dtype=np.float64)
    rots, ts = np.empty((len(lms), 3, 3)), np.empty((len(lms), 3))
    for i, img in enumerate(lms):
        rots[i], ts[i] = _pnp(obj, np.ascontiguousarray(img, dtype=np.float64), k)
    return rots, ts, reprojection_error(lms, obj, rots, ts, focal, cx, cy)


def reprojection_error(lms: np.ndarray, template: np.ndarray, rots: np.ndarray, ts: np.ndarray,
                       focal: float, cx: float, cy: float) -> np.ndarray:
    """[N] mean Euclidean landmark reprojection error per frame (pixels) of OpenCV-convention poses."""
    proj = project_gl(template, CV_TO_GL @ rots, ts @ CV_TO_GL, focal, cx, cy)
    return np.linalg.norm(proj - lms, axis=-1).mean(-1)


def rodrigues(rvec: np.ndarray) -> np.ndarray:
    """Batched Rodrigues formula: [N, 3] axis-angle (radians) -> [N, 3, 3] rotation matrices."""
    theta = np.linalg.norm(rvec, axis=1)[:, None, None]
    safe = np.where(theta > 1e-12, theta, 1.0)
    k = rvec[:, :, None] / safe
    kx = np.zeros((len(rvec), 3, 3))
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -k[:, 2, 0], k[:, 1, 0], -k[:, 0, 0]
    kx = kx - np.transpose(kx, (0, 2, 1))
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


def one_blas_thread():
    """Context limiting BLAS to one thread (threadpoolctl, a scikit-learn dependency via librosa);
    OpenBLAS threads on a loaded machine make small solves a hundred times slower. It only reaches
    BLAS libraries already loaded (hence scipy.linalg is imported at module level)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def levenberg_marquardt(residuals, jacobian, x0: np.ndarray, max_iter: int = 15, tol: float = 1e-6) -> np.ndarray:
    """Minimise ``|residuals(x)|^2`` by Levenberg-Marquardt with Marquardt's diagonal damping.

    Args:
        residuals: ``x [P] -> r [M]``; jacobian: ``(x, r) -> J [M, P]`` (scipy sparse or dense).
        x0: [P] start; max_iter: Jacobian evaluations at most; tol: stop when the cost falls by less
            than this fraction.
    Returns:
        [P] the solution.
    """
    x, r = x0.copy(), residuals(x0)
    cost, lam = float(r @ r), 1e-3
    for _ in range(max_iter):
        jac = jacobian(x, r)
        a = jac.T @ jac
        a = a.toarray() if hasattr(a, "toarray") else np.asarray(a)
        g = jac.T @ r
        diag = np.diag(a).copy() + 1e-12
        while lam < 1e10:
            try:
                dx = cho_solve(cho_factor(a + lam * np.diag(diag), check_finite=False), -g, check_finite=False)
            except LinAlgError:
                lam *= 10
                continue
            rn = residuals(x + dx)
            cn = float(rn @ rn)
            if np.isfinite(cn) and cn < cost:
                break
            lam *= 10
        else:
            return x
        x, r, gain, cost = x + dx, rn, cost - cn, cn
        lam = max(lam / 10, 1e-9)
        if gain <= tol * max(cost, 1e-12):
            break
    return x


def bundle_adjust(lms: np.ndarray, template: np.ndarray, rots: np.ndarray, ts: np.ndarray, focal: float,
                  cx: float, cy: float, prior: float = TEMPLATE_PRIOR, max_iter: int = 15
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jointly refine the rigid template and all poses at a fixed focal (rigid bundle adjustment).

    Minimises ``sum_ik |proj(R_i X_k + t_i) - l_ik|^2 + prior^2 * sum_k |X_k - X0_k|^2`` (pixels;
    ``X`` in cm) by Levenberg-Marquardt (:func:`levenberg_marquardt`, sparse finite-difference
    Jacobian). The prior plays the role of the anchors' identity regulariser (``loss_regid`` in
    AD-NeRF's face_tracker.py): with little head rotation the data leave the face's depth
    undetermined and the template stays near ``X0``. The result is similarity-aligned to ``X0`` (the head frame and metric scale are a free gauge).

    Args:
        lms: [N, K, 2] pixels; template: [K, 3] cm (``X0``); rots/ts: OpenCV poses (initial values).
    Returns:
        (template [K, 3], rots [N, 3, 3], ts [N, 3]) in the OpenCV convention of :func:`solve_poses`.
    """
    from scipy.sparse import csr_matrix

    n, k = lms.shape[:2]
    x0 = np.concatenate([template.ravel(), np.concatenate([cv2.Rodrigues(r)[0].ravel() for r in rots]),
                         ts.ravel()])

    def unpack(x):
        return (x[: 3 * k].reshape(k, 3), x[3 * k: 3 * k + 3 * n].reshape(n, 3),
                x[3 * k + 3 * n:].reshape(n, 3))

    def residuals(x):
        tpl, rv, tv = unpack(x)
        cam = np.einsum("nij,kj->nki", rodrigues(rv), tpl) + tv[:, None, :]
        uv = focal * cam[..., :2] / cam[..., 2:3] + np.array([cx, cy])
        return np.concatenate([(uv - lms).ravel(), prior * (tpl - template).ravel()])

    # Sparse Jacobian by grouped forward differences: residual (i, k, uv) depends only on X_k and on
    # frame i's rvec and tvec, so one coordinate of all X_k (or of all frames' rvec / tvec) is
    # perturbed at once: 9 residual evaluations per Jacobian.
    m, nk2 = 2 * n * k + 3 * k, 2 * n * k
    rows = np.arange(nk2)
    frame, point = rows // (2 * k), (rows // 2) % k
    groups = [(3 * np.arange(k) + d, 3 * point + d) for d in range(3)]
    groups += [(3 * k + 3 * np.arange(n) + d, 3 * k + 3 * frame + d) for d in range(3)]
    groups += [(3 * k + 3 * n + 3 * np.arange(n) + d, 3 * k + 3 * n + 3 * frame + d) for d in range(3)]
    prior_rows = nk2 + np.arange(3 * k)
    jr = np.concatenate([np.tile(rows, 9), prior_rows])
    jc = np.concatenate([c for _, c in groups] + [np.arange(3 * k)])

    def jacobian(x, r0):
        vals = []
        for cols, col_of_row in groups:
            h = np.zeros(len(x))
            h[cols] = 1e-6 * np.maximum(1.0, np.abs(x[cols]))
            vals.append((residuals(x + h)[:nk2] - r0[:nk2]) / h[col_of_row])
        vals.append(np.full(3 * k, prior))
        return csr_matrix((np.concatenate(vals), (jr, jc)), shape=(m, len(x)))

    with one_blas_thread():  # small systems: BLAS threads only add contention
        x = levenberg_marquardt(residuals, jacobian, x0, max_iter=max_iter)
    tpl, rv, tv = unpack(x)
    s, r, t = umeyama(tpl, template)  # gauge: back to the initial template's frame and scale
    tpl = s * tpl @ r.T + t
    rots_new = rodrigues(rv) @ r.T
    ts_new = s * tv - np.einsum("nij,j->ni", rots_new, t)
    return tpl, rots_new, ts_new


def fit_focal(lms: np.ndarray, template: np.ndarray, focals: np.ndarray, cx: float, cy: float,
              refine: bool = True) -> tuple[float, np.ndarray]:
    """Choose the focal length that minimises the mean landmark reprojection error over frames.

    Args:
        lms: [N, K, 2] landmarks of the frames used for the search (pixels).
        template: [K, 3] initial rigid template (cm).
        focals: [F] candidate focal lengths (pixels), evenly spaced.
        refine: fit the template to the clip at each focal (:func:`bundle_adjust`); else PnP only.
    Returns:
        (focal, errors [F] mean reprojection error per candidate, pixels; NaN where the
        coarse-to-fine search skipped it). The search evaluates every ``COARSE_STRIDE``-th focal,
        then every focal within a stride of the coarse minimum (it assumes a unimodal error curve);
        the focal is the grid minimum refined by a parabola through its neighbours (within half a step).
    """
    def evaluate(f: float) -> float:
        rots, ts, err = solve_poses(lms, template, f, cx, cy)
        if refine:
            tpl, rots, ts = bundle_adjust(lms, template, rots, ts, f, cx, cy)
            err = reprojection_error(lms, tpl, rots, ts, f, cx, cy)
        return float(err.mean())

    # coarse-to-fine: every COARSE_STRIDE-th grid focal, then every focal around the coarse minimum
    errs = np.full(len(focals), np.nan)
    coarse = sorted(set(range(0, len(focals), COARSE_STRIDE)) | {len(focals) - 1})
    for j in coarse:
        errs[j] = evaluate(focals[j])
    jc = coarse[int(np.nanargmin(errs[coarse]))]
    for j in range(max(0, jc - COARSE_STRIDE + 1), min(len(focals), jc + COARSE_STRIDE)):
        if np.isnan(errs[j]):
            errs[j] = evaluate(focals[j])
    j = int(np.nanargmin(errs))
    best = float(focals[j])
    if 0 < j < len(focals) - 1:
        e0, e1, e2 = errs[j - 1], errs[j], errs[j + 1]
        denom = e0 - 2 * e1 + e2
        if denom > 0:
            step = focals[1] - focals[0]
            best += float(np.clip(0.5 * (e0 - e2) / denom, -0.5, 0.5) * step)
    return best, errs


def focal_undetermined(grid: np.ndarray, errors: np.ndarray, flat_fraction: float) -> str | None:
    """Why the focal search curve does not determine the focal length, or None when it does.

    Args:
        grid: [F] candidate focals (pixels); errors: [F] mean reprojection error (pixels, NaN = not
            evaluated); flat_fraction: see :attr:`TrackingConfig.focal_flat_fraction`.
    Returns:
        ``"minimum on the grid border (600 px)"``-style text when the smallest error is at the first
        or last grid focal (the error keeps falling beyond the grid: too little head rotation),
        ``"flat search curve (...)"`` when the curve varies by less than ``flat_fraction`` of
        ``max(min error, 0.1 px)``, else None. A one-point grid (a fixed focal) is never undetermined.
    """
    errs = np.asarray(errors, np.float64)
    if len(grid) < 2 or not np.isfinite(errs).any():
        return None
    j = int(np.nanargmin(errs))
    lo, hi = float(np.nanmin(errs)), float(np.nanmax(errs))
    if j in (0, len(grid) - 1):
        return f"minimum on the grid border ({grid[j]:.0f} px; curve {lo:.3f}..{hi:.3f} px)"
    if (hi - lo) / max(lo, 0.1) < flat_fraction:
        return f"flat search curve ({lo:.3f}..{hi:.3f} px, less than {flat_fraction:g} relative)"
    return None


def smooth(x: np.ndarray, window: int, order: int = 0) -> np.ndarray:
    """Temporal smoothing along axis 0.

    Args:
        x: [N, ...] per-frame values.
        window: frames (odd for ``order`` >= 1; an even window is made odd by adding one); 1 = copy.
        order: 0: centred moving average (edges use the nearest value,
            ``scipy.ndimage.uniform_filter1d``); >= 1: Savitzky-Golay filter of that polynomial
            order (``scipy.signal.savgol_filter``, ``mode="interp"`` at the ends), which keeps real
            motion that a moving average would flatten. Clips shorter than the window fall back to
            the moving average.
    Returns:
        float64 array of the shape of ``x``.
    """
    from scipy.ndimage import uniform_filter1d
    from scipy.signal import savgol_filter

    x = np.asarray(x, dtype=np.float64)
    if window <= 1 or len(x) < 2:
        return x.copy()
    window = int(window) | 1 if order >= 1 else int(window)
    if order >= 1 and len(x) >= window and order < window:
        return savgol_filter(x, window, int(order), axis=0, mode="interp")
    return uniform_filter1d(x, size=int(window), axis=0, mode="nearest")


@dataclass
class TrackResult:
    """Result of :func:`track`.

    Attributes:
        euler: [N, 3] radians (AD-NeRF convention), smoothed.
        trans: [N, 3] decimetres (OpenGL camera), smoothed.
        focal: pixels at the crop size.
        template: [K, 3] rigid template used (cm, head frame).
        landmark_ids: [K] mesh indices of the template points.
        reproj_error: [N] mean landmark reprojection error per frame (pixels, smoothed poses).
        raw_reproj_error: [N] the same before smoothing.
        focal_grid, focal_errors: the search curve (pixels, pixels).
    """

    euler: np.ndarray
    trans: np.ndarray
    focal: float
    template: np.ndarray
    landmark_ids: np.ndarray
    reproj_error: np.ndarray
    raw_reproj_error: np.ndarray
    focal_grid: np.ndarray
    focal_errors: np.ndarray
    extra: dict = field(default_factory=dict)

    def rotations(self) -> np.ndarray:
        """[N, 3, 3] head-to-camera rotations (OpenGL camera)."""
        return euler2rot(self.euler)


def track_landmarks(lms: np.ndarray, template: np.ndarray, cfg: TrackingConfig, width: int, height: int,
                    search_frames: np.ndarray | None = None, refine: bool = True) -> TrackResult:
    """Track a rigid template through 2-D landmarks: focal search, per-frame PnP, smoothing.

    Args:
        lms: [N, K, 2] landmarks (pixels, y down) of the template points in every frame.
        template: [K, 3] rigid head-frame template (cm; +y up, +z out of the face).
        cfg: search grid, smoothing window.
        width, height: image size (pixels); the principal point is the image centre.
        search_frames: frame indices usable for the focal search (default: all).
        refine: fit the template to the clip (:func:`bundle_adjust`); False keeps it as given.
    Returns:
        :class:`TrackResult`.
    """
    cx, cy = width / 2.0, height / 2.0
    pool = np.arange(len(lms)) if search_frames is None else np.asarray(search_frames)
    sel = pool[np.unique(np.linspace(0, len(pool) - 1, min(FOCAL_SEARCH_FRAMES, len(pool))).round().astype(int))]
    grid = cfg.focals()
    focal, errs = fit_focal(lms[sel], template, grid, cx, cy, refine=refine)
    reason = focal_undetermined(grid, errs, cfg.focal_flat_fraction)
    source = "search"
    if reason:
        prior = cfg.focal_prior * min(width, height) / 512.0
        log.warning("focal length not determined by the clip (%s: too little head rotation); using the prior "
                    "%.0f px (preprocess.tracking.focal_prior %.0f px at 512 px, the centre of the anchors' "
                    "focal search)", reason, prior, cfg.focal_prior)
        focal, source = prior, "prior"
    tpl = template
    if refine:
        fit = pool[np.unique(np.linspace(0, len(pool) - 1, min(BA_FRAMES, len(pool))).round().astype(int))]
        rots, ts, _ = solve_poses(lms[fit], tpl, focal, cx, cy)
        tpl, _, _ = bundle_adjust(lms[fit], tpl, rots, ts, focal, cx, cy)
    rots, ts, raw_err = solve_poses(lms, tpl, focal, cx, cy)
    rot_gl, t_gl = CV_TO_GL @ rots, ts @ CV_TO_GL
    euler = smooth(np.unwrap(rot2euler(rot_gl), axis=0), cfg.smooth_window, cfg.smooth_order)
    trans = smooth(t_gl, cfg.smooth_window, cfg.smooth_order)
    proj = project_gl(tpl, euler2rot(euler), trans, focal, cx, cy)
    err = np.linalg.norm(proj - lms, axis=-1).mean(-1)
    j = int(np.nanargmin(errs))
    at_border = j in (0, len(grid) - 1) and len(grid) > 1
    return TrackResult(euler=euler, trans=trans / 10.0, focal=focal, template=tpl,
                       landmark_ids=np.arange(len(tpl)), reproj_error=err, raw_reproj_error=raw_err,
                       focal_grid=grid, focal_errors=errs,
                       extra={"focal_at_grid_border": bool(at_border), "focal_source": source,
                              "focal_prior_reason": reason})


def track_mesh(mesh: np.ndarray, cfg: TrackingConfig, width: int, height: int,
               canonical: CanonicalFace | None = None, valid: np.ndarray | None = None) -> TrackResult:
    """Track the head through MediaPipe meshes (the stage's entry point for real data).

    Args:
        mesh: [N, >=468, 3] MediaPipe face mesh (x, y pixels; z pixels).
        cfg: tracking configuration.
        width, height: frame size (pixels).
        canonical: canonical face (default: from ``resources/models/face_landmarker.task``).
        valid: frame indices with a detected face (used for the template and the focal search).
    Returns:
        :class:`TrackResult` whose template points are the 33 Procrustes-basis landmarks.
    """
    canonical = canonical or load_canonical_face()
    valid = np.arange(len(mesh)) if valid is None or len(valid) == 0 else np.asarray(valid)
    ids = canonical.basis_ids
    tpl = person_template(mesh, canonical, valid[:: max(1, len(valid) // 200)])[ids]
    res = track_landmarks(mesh[:, ids, :2].astype(np.float64), tpl, cfg, width, height, search_frames=valid)
    res.landmark_ids = ids
    return res


# --------------------------------------------------------------------------------------------
# Outputs

def camera_to_world(euler: np.ndarray, trans_dm: np.ndarray) -> np.ndarray:
    """ER-NeRF ``transform_matrix``: inverse head pose, metres (``process.py: save_transforms``).

    Args:
        euler: [N, 3] radians; trans_dm: [N, 3] decimetres.
    Returns:
        [N, 4, 4] float64 camera-to-world matrices.
    """
    rot = euler2rot(euler)
    rot_inv = np.transpose(rot, (0, 2, 1))
    t = trans_dm / 10.0
    out = np.tile(np.eye(4), (len(rot), 1, 1))
    out[:, :3, :3] = rot_inv
    out[:, :3, 3] = -np.einsum("nij,nj->ni", rot_inv, t)
    return out


def split_index(n: int, val_fraction: float) -> int:
    """First validation frame: ``floor(n * (1 - val_fraction))`` (ER-NeRF ``process.py``:
    ``int(n * 10 / 11)``), keeping at least one frame in each split when ``n >= 2``."""
    cut = int(n * (1.0 - val_fraction) + 1e-6)
    return min(max(cut, 1), n - 1) if n >= 2 else n


def split_ids(n: int, val_fraction: float, segments: list[tuple[int, int]] | None = None,
              exclude: set[int] | frozenset = frozenset()) -> tuple[list[int], list[int]]:
    """Train and validation frame indices: the last ``val_fraction`` of the clip's frames
    (:func:`split_index`), or of every labelled segment ``(start, end)`` when there are several
    (emotion labels: the validation split then holds frames of every label). Frames in ``exclude``
    (face-less stretches) are in neither split; the fraction is taken of the frames that remain
    (AD-NeRF splits its ``valid_img_ids`` the same way)."""
    if not segments or len(segments) < 2:
        segments = [(0, n)]
    train, val = [], []
    for a, b in segments:
        keep = [i for i in range(a, b) if i not in exclude]
        cut = split_index(len(keep), val_fraction)
        train += keep[:cut]
        val += keep[cut:]
    return train, val


def transforms_dicts(res: TrackResult, width: int, height: int, val_fraction: float,
                     eye: np.ndarray | None = None, eye_ratio: np.ndarray | None = None,
                     segments: list[tuple[int, int]] | None = None,
                     exclude: set[int] | frozenset = frozenset()) -> tuple[dict, dict]:
    """The ``transforms_train.json`` / ``transforms_val.json`` contents (split: :func:`split_ids`;
    frames in ``exclude`` are left out, the others keep their frame index as ``img_id``).

    ER-NeRF schema: ``focal_len``, ``cx``, ``cy`` (pixels) and ``frames[]`` of ``img_id``,
    ``aud_id`` (both = frame index) and ``transform_matrix`` (4x4 camera-to-world). Extra keys:
    top level ``convention`` (axes and units), ``width``, ``height``, ``reproj_error_px``; per frame
    ``eye`` (blink value in [0, 1], mean of MediaPipe eyeBlinkLeft/Right) when ``eye`` is given, and
    ``eye_ratio`` (the anchors' test loaders' key: ``clip(AU45_r, 0, 2) / 2``, see
    :func:`pipeline.preprocess.aus.eye_ratio_from_au`) when ``eye_ratio`` is given.
    """
    c2w = camera_to_world(res.euler, res.trans)
    n = len(c2w)
    out = []
    for ids in split_ids(n, val_fraction, segments, exclude):
        frames = []
        for i in ids:
            fr = {"img_id": i, "aud_id": i, "transform_matrix": c2w[i].tolist()}
            if eye is not None:
                fr["eye"] = float(eye[i])
            if eye_ratio is not None:
                fr["eye_ratio"] = float(eye_ratio[i])
            frames.append(fr)
        out.append({
            "focal_len": float(res.focal), "cx": width / 2.0, "cy": height / 2.0,
            "frames": frames,
            "width": int(width), "height": int(height),
            "convention": CONVENTION,
            "reproj_error_px": float(res.reproj_error.mean()),
        })
    return out[0], out[1]


def save_track_params(path: str | Path, res: TrackResult, exp: np.ndarray, exp_names: list[str],
                      threedmm: dict | None = None, threedmm_status: str = "not run") -> None:
    """``track_params.pt``: a ``torch.save`` dict in AD-NeRF's schema plus our keys.

    AD-NeRF / ER-NeRF ``face_tracker.py`` (ER-NeRF lines 381-390) saves ``id``, ``exp``, ``euler``,
    ``trans``, ``focal``; ``process.py`` ``save_transforms`` (ER-NeRF 262-345) reads ``focal``,
    ``euler``, ``trans`` and re-creates this stage's ``transform_matrix`` from them (rows = frame
    index ``img_id``; :func:`euler2rot` is AD-NeRF's).

    Keys: ``euler`` float32 [N, 3] radians (theta, phi, psi); ``trans`` float32 [N, 3] decimetres;
    ``focal`` float32 [1] pixels; ``exp`` float32 [N, 52] MediaPipe blendshape scores (the articulated
    expression); ``exp_names`` list[str]; ``exp_model`` "mediapipe_blendshapes"; ``template`` float32
    [K, 3] cm; ``landmark_ids`` int64 [K]; ``reproj_error`` float32 [N] pixels; ``threedmm`` str
    (status of the 3DMM fit: "ok", "n/a: reason" or "not run"); from the 3DMM stage when it ran
    (:func:`pipeline.preprocess.threedmm.adnerf_fields`): ``id`` float32 [1, 63] Surrey Face Model
    identity, ``id_model`` str, ``exp_sfm`` float32 [N, 6] SFM expression weights, ``exp_sfm_names``.
    """
    import torch

    data = {
        "euler": torch.as_tensor(res.euler, dtype=torch.float32),
        "trans": torch.as_tensor(res.trans, dtype=torch.float32),
        "focal": torch.tensor([res.focal], dtype=torch.float32),
        "exp": torch.as_tensor(exp, dtype=torch.float32),
        "exp_names": list(exp_names),
        "exp_model": "mediapipe_blendshapes",
        "template": torch.as_tensor(res.template, dtype=torch.float32),
        "landmark_ids": torch.as_tensor(np.asarray(res.landmark_ids), dtype=torch.int64),
        "reproj_error": torch.as_tensor(res.reproj_error, dtype=torch.float32),
        "threedmm": threedmm_status,
    }
    for key, val in (threedmm or {}).items():
        data[key] = torch.as_tensor(val, dtype=torch.float32) if isinstance(val, np.ndarray) else val
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def read_threedmm(path: Path | None, n_frames: int) -> tuple[dict | None, str]:
    """The 3DMM keys for ``track_params.pt`` and the fit's status line (``ok``, ``n/a: reason``,
    ``not run`` without ``path``)."""
    if path is None:
        return None, "not run"
    from pipeline.preprocess import threedmm as M

    status, reason = M.read_status(path)
    if status != "ok":
        log.info("track_params.pt without 3DMM identity (id): %s", reason)
        return None, f"{status}: {reason}"
    return M.adnerf_fields(path, n_frames), "ok"


def blendshape_names(report: dict, path: str | Path, count: int) -> list[str]:
    """The blendshape names from ``landmarks.json`` (key ``blendshape_names`` or ``blendshapes``).

    Raises:
        InputError: no list of ``count`` names in the report.
    """
    for key in ("blendshape_names", "blendshapes"):
        names = report.get(key)
        if isinstance(names, dict):
            names = names.get("names")
        if isinstance(names, list) and len(names) == count and all(isinstance(s, str) for s in names):
            return names
    raise InputError(path, f"no list of {count} blendshape names (key 'blendshape_names')")


def failed_frames(report: dict) -> set[int]:
    """Frame indices whose face was not detected (``landmarks.json`` ``failed_frames``)."""
    val = report.get("failed_frames", [])
    if isinstance(val, dict):
        val = val.get("frames", [])
    return {int(i) for i in val} if isinstance(val, list) else set()


def excluded_frames(report: dict) -> set[int]:
    """Frames of face-less stretches, left out of the splits (``landmarks.json`` ``excluded_frames``)."""
    val = report.get("excluded_frames", [])
    return {int(i) for i in val} if isinstance(val, list) else set()


def frame_size(frames_dir: Path) -> tuple[int, int]:
    """(width, height) of ``frames_dir/0.jpg``; InputError when unreadable."""
    img = cv2.imread(str(frames_dir / "0.jpg"))
    if img is None:
        raise InputError(frames_dir / "0.jpg", "cannot read the first frame")
    return img.shape[1], img.shape[0]


def load_array(path: Path, *tails: tuple[int, ...]) -> np.ndarray:
    """``np.load`` with a shape check: ``arr.shape[1:]`` must be one of ``tails``; finite values.

    Raises:
        InputError: missing, unreadable, wrong shape or non-finite values, naming the file.
    """
    try:
        arr = np.load(path)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except ValueError as exc:
        raise InputError(path, f"not a .npy array ({exc})") from None
    if tuple(arr.shape[1:]) not in tails or len(arr) == 0:
        want = " or ".join("[N, " + ", ".join(map(str, t)) + "]" for t in tails)
        raise InputError(path, f"expected shape {want}, got {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise InputError(path, "contains NaN or infinite values")
    return arr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", required=True, type=Path, help="ori_imgs folder (frame size)")
    ap.add_argument("--mesh", required=True, type=Path, help="face_mesh.npy [N, 478, 3]")
    ap.add_argument("--blendshapes", required=True, type=Path, help="blendshapes.npy [N, 52]")
    ap.add_argument("--landmarks", type=Path, help="landmarks.json (blendshape names, failed frames)")
    ap.add_argument("--au", type=Path, help="au.csv: per-frame eye_ratio = clip(AU45_r, 0, 2) / 2 in the transforms")
    ap.add_argument("--out-params", required=True, type=Path)
    ap.add_argument("--out-train", required=True, type=Path)
    ap.add_argument("--out-val", required=True, type=Path)
    ap.add_argument("--out-report", required=True, type=Path)
    ap.add_argument("--cfg", default="{}", help="JSON of config preprocess.tracking")
    ap.add_argument("--emotion", type=Path, help="emotion.json: validation frames from every labelled segment")
    ap.add_argument("--threedmm", type=Path, help="threedmm.npz: SFM identity/expressions merged into track_params.pt")
    ap.add_argument("--exp-model", default="blendshapes", choices=["blendshapes", "bfm"],
                    help="expression model (bfm: not supported in this build)")
    args = ap.parse_args(argv)
    setup_logging("pipeline.preprocess.tracking")
    cfg = TrackingConfig.from_dict(parse_cfg_arg(args.cfg))
    if args.exp_model == "bfm":
        raise InputError(args.mesh, "Basel Face Model expression fitting is not supported in this build "
                                    "(use the default MediaPipe blendshapes)")
    try:
        cfg.focals()
    except ValueError as exc:
        raise InputError("config.yaml", f"preprocess.tracking.{exc}") from None

    mesh = load_array(args.mesh, (478, 3), (468, 3))
    bs = load_array(args.blendshapes, (52,))
    if len(bs) != len(mesh):
        raise InputError(args.blendshapes, f"{len(bs)} rows but face_mesh.npy has {len(mesh)} frames")
    report = read_json(args.landmarks) if args.landmarks else {}
    names = blendshape_names(report, args.landmarks, bs.shape[1]) if args.landmarks else [f"bs{i}" for i in range(52)]
    failed = failed_frames(report)
    n_frames = len(list(args.frames.glob("*.jpg")))
    if n_frames != len(mesh):
        raise InputError(args.mesh, f"{len(mesh)} mesh rows but {args.frames} has {n_frames} frames")
    if len(mesh) < 2:
        raise InputError(args.mesh, "need at least 2 frames to track")
    width, height = frame_size(args.frames)
    valid = np.array([i for i in range(len(mesh)) if i not in failed])
    if len(valid) < 2:
        raise InputError(args.mesh, "fewer than 2 frames with a detected face")

    log.info("tracking %d frames (%dx%d), focal grid %s", len(mesh), width, height, list(cfg.focal_search))
    res = track_mesh(mesh, cfg, width, height, valid=valid)
    log.info("focal %.1f px, mean reprojection error %.2f px (raw %.2f px)", res.focal,
             res.reproj_error.mean(), res.raw_reproj_error.mean())
    eye = None
    if "eyeBlinkLeft" in names and "eyeBlinkRight" in names:
        eye = 0.5 * (bs[:, names.index("eyeBlinkLeft")] + bs[:, names.index("eyeBlinkRight")])
    eye_ratio = None
    if args.au:
        from pipeline.preprocess.aus import eye_ratio_from_au

        eye_ratio = eye_ratio_from_au(args.au, len(mesh))
    segments = None
    if args.emotion:
        from pipeline.preprocess.emotion import read_segments

        segments = read_segments(args.emotion)
        if segments and segments[-1][1] != len(mesh):
            raise InputError(args.emotion, f"labels {segments[-1][1]} frames, the clip has {len(mesh)}")
    exclude = excluded_frames(report)
    if exclude:
        from pipeline.preprocess.landmarks import failed_runs

        runs = failed_runs(np.array([i not in exclude for i in range(len(mesh))]))
        log.warning("left out %d frames without a face (frames %s) from the train/val splits; %d frames remain",
                    len(exclude), ", ".join(f"{a}-{b - 1}" for a, b in runs), len(mesh) - len(exclude))
    train, val = transforms_dicts(res, width, height, cfg.val_fraction, eye=eye, eye_ratio=eye_ratio,
                                  segments=segments, exclude=exclude)
    if not train["frames"] or not val["frames"]:
        raise InputError(args.landmarks, f"{len(mesh) - len(exclude)} frames with a face: too few for a "
                                         "train and a validation split")
    mm, mm_status = read_threedmm(args.threedmm, len(mesh))
    save_track_params(args.out_params, res, bs, names, threedmm=mm, threedmm_status=mm_status)
    atomic_write_json(args.out_train, train)
    atomic_write_json(args.out_val, val)
    atomic_write_json(args.out_report, {
        "frames": len(mesh), "width": width, "height": height,
        "focal_len": res.focal,
        "focal_search": {"grid": res.focal_grid, "mean_reproj_error_px": res.focal_errors,
                         "at_grid_border": res.extra.get("focal_at_grid_border", False)},
        "focal_source": res.extra.get("focal_source", "search"),
        "focal_prior_reason": res.extra.get("focal_prior_reason"),
        "reproj_error_px": {"mean": float(res.reproj_error.mean()), "max": float(res.reproj_error.max()),
                            "raw_mean": float(res.raw_reproj_error.mean())},
        "landmarks": "MediaPipe Procrustes-basis landmarks (33, no mouth)",
        "landmark_ids": res.landmark_ids,
        "smooth_window": cfg.smooth_window,
        "smooth_order": cfg.smooth_order,
        "train_frames": len(train["frames"]), "val_frames": len(val["frames"]),
        "excluded_from_search": sorted(failed),
        "excluded_frames": sorted(exclude),
        "exp_model": "mediapipe_blendshapes",
        "threedmm": mm_status,
        "convention": CONVENTION,
    })
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
