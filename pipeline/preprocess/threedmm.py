"""3D Morphable Model stage: the Surrey Face Model fitted to every frame's 68 landmarks with eos.

``python -m pipeline.preprocess.threedmm --frames ori_imgs --landmarks landmarks.json
--out threedmm.npz --report threedmm.json --weights-dir DIR --cfg JSON``

Model: the Surrey Face Model (SFM), low resolution (3448 vertices, millimetres), 63 PCA shape
(identity) components and 6 expression blendshapes (anger, disgust, fear, happiness, sadness,
surprise), with the eos fitting files (iBUG-68 -> SFM landmark mapping, edge topology, model
contours). Library: ``eos-py`` (P. Huber et al., "A Multiresolution 3D Morphable Face Model and
Fitting Framework", VISAPP 2016). Files, licence and sha256: ``pipeline/weights/manifest.yaml``
(entries ``sfm_*``); the SFM itself is free for non-commercial use only.

Method (one identity per clip, expressions and pose per frame):

1. **Initial per-frame fits** on ``identity_frames`` frames spread over the clip (frames with a
   detected face only): ``eos.fitting.fit_shape_and_pose`` (scaled orthographic camera, shape,
   blendshapes, contour landmarks; ``iterations`` iterations) gives each frame's affine camera
   ``P_k`` (3x4, model mm -> image pixels) and expression weights ``b_k``.
2. **Identity over many frames**: one shape vector ``a`` [63] for all those frames, the MAP estimate
   of eos's linear shape fit (``fit_shape_to_landmarks_linear``: landmark noise sigma^2 = 3 px^2,
   prior ``lambda_identity`` on the rescaled PCA coefficients) with the data of all K frames stacked:
   ``(sum_k A_k^T A_k / sigma^2 + lambda I) a = sum_k A_k^T r_k / sigma^2``, where ``A_k`` is the
   camera-projected shape basis at the mapped landmark vertices and ``r_k`` the landmark residual of
   the mean face + expression. The prior counts once, the evidence K times, so the shape is
   determined by the clip, not by one frame.
3. **Per-frame pose and expression with the identity fixed**, for every frame, alternating
   ``iterations`` times: scaled orthographic pose (``estimate_orthographic_projection_linear``) on
   the current face, then the 6 expression weights (``fit_expressions``, non-negative, prior
   ``lambda_expressions``). Steps 2-3 are repeated once with the refined poses.
4. **Error**: mean distance (pixels) between each frame's landmarks and the fitted model's projected
   landmark vertices (the mapped, non-contour iBUG points).

Frames without a detected face (``landmarks.json`` ``failed_frames``; their ``.lms`` are
interpolated) are fitted like the others but marked in ``valid`` and left out of step 1-2 and of
the error.

Outputs: ``threedmm.npz`` (see :func:`save_npz`) and ``threedmm.json`` (model, files, lambdas,
identity frames, landmark error, timing). When the SFM files are not installed the stage does not
fail: it writes ``threedmm.json`` with ``status: "n/a"``, the reason and the fetch command, and an
``threedmm.npz`` holding only ``status`` and ``reason``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from pipeline.common.config import StageConfig, parse_cfg_arg, stage_weights_dir
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_path, atomic_write_json, read_json
from pipeline.common.log import run_main, setup_logging

log = logging.getLogger("pipeline.preprocess.threedmm")

#: SFM files: weights-manifest entry name -> file name inside the model folder
SFM_FILES = {
    "sfm_shape_3448": "sfm_shape_3448.bin",
    "sfm_expression_blendshapes_3448": "expression_blendshapes_3448.bin",
    "sfm_ibug_to_sfm": "ibug_to_sfm.txt",
    "sfm_edge_topology_3448": "sfm_3448_edge_topology.json",
    "sfm_model_contours": "sfm_model_contours.json",
}
#: the SFM expression blendshapes, in the order of expression_blendshapes_3448.bin
EXPRESSION_NAMES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
#: landmark noise variance of eos's linear shape fit (detector standard deviation sqrt(3) px)
LANDMARK_VAR = 3.0


@dataclass
class ThreeDMMConfig(StageConfig):
    """Config ``preprocess.threedmm``."""

    enabled: bool = True
    """Run the stage (false: the rule writes an n/a report without loading the model)."""
    model_dir: str | None = None
    """Folder with the SFM files; null: ``{weights_dir}/sfm`` (the weights manifest's place)."""
    identity_frames: int = 40
    """Frames (spread over the clip) whose landmarks determine the identity shape."""
    iterations: int = 3
    """Pose/expression alternations per frame (eos's num_iterations)."""
    lambda_identity: float = 30.0
    """Prior weight on the 63 shape coefficients (eos default)."""
    lambda_expressions: float = 30.0
    """Prior weight on the 6 expression weights (eos default)."""


@dataclass
class SurreyModel:
    """The SFM with its eos fitting helpers (see :func:`load_sfm`)."""

    model: object          # eos.morphablemodel.MorphableModel with the 6 blendshapes
    blendshapes: list      # [6] eos.morphablemodel.Blendshape
    mapper: object         # eos.core.LandmarkMapper (iBUG 1..68 -> SFM vertex)
    edge_topology: object
    contour_landmarks: object
    model_contour: object
    mean: np.ndarray       # [V*3] float64 mean shape (mm)
    basis: np.ndarray      # [V*3, 63] rescaled PCA basis (mm per unit coefficient)
    expr: np.ndarray       # [V*3, 6] blendshape deformations (mm)
    ibug: np.ndarray       # [L] 0-based iBUG indices with a fixed vertex
    vertex_ids: np.ndarray  # [L] their SFM vertex ids
    files: dict            # file name -> path


def sfm_dir(cfg: ThreeDMMConfig, weights_dir: str | Path | None) -> tuple[Path | None, str | None]:
    """The SFM folder, or (None, reason with the fetch command) when a file is missing."""
    folder = Path(cfg.model_dir) if cfg.model_dir else Path(weights_dir or "weights_cache") / "sfm"
    missing = [f for f in SFM_FILES.values() if not (folder / f).is_file()]
    if missing:
        return None, (f"Surrey Face Model files not found in {folder} ({', '.join(missing)}); run "
                      f"`python -m pipeline.weights fetch {' '.join(SFM_FILES)}` on a machine with internet "
                      "or set preprocess.threedmm.model_dir")
    return folder, None


def load_sfm(folder: str | Path) -> SurreyModel:
    """Load the SFM, its blendshapes and eos's fitting files from ``folder``.

    Raises:
        InputError: a file eos cannot read (naming it).
    """
    import eos

    folder = Path(folder)
    files = {name: str(folder / f) for name, f in SFM_FILES.items()}
    try:
        shape = eos.morphablemodel.load_model(files["sfm_shape_3448"])
    except RuntimeError as exc:
        raise InputError(files["sfm_shape_3448"], f"not an eos morphable model ({exc})") from None
    try:
        bs = eos.morphablemodel.load_blendshapes(files["sfm_expression_blendshapes_3448"])
        mapper = eos.core.LandmarkMapper(files["sfm_ibug_to_sfm"])
        topo = eos.morphablemodel.load_edge_topology(files["sfm_edge_topology_3448"])
        contour_lms = eos.fitting.ContourLandmarks.load(files["sfm_ibug_to_sfm"])
        contour = eos.fitting.ModelContour.load(files["sfm_model_contours"])
    except RuntimeError as exc:
        raise InputError(folder, f"unreadable eos fitting file ({exc})") from None
    sm = shape.get_shape_model()
    model = eos.morphablemodel.MorphableModel(sm, bs, color_model=eos.morphablemodel.PcaModel(),
                                              vertex_definitions=None,
                                              texture_coordinates=shape.get_texture_coordinates())
    pairs = sorted((int(k) - 1, int(v)) for k, v in mapper.get_mappings().items())
    return SurreyModel(
        model=model, blendshapes=bs, mapper=mapper, edge_topology=topo, contour_landmarks=contour_lms,
        model_contour=contour, mean=np.asarray(sm.get_mean(), np.float64),
        basis=np.asarray(sm.get_rescaled_pca_basis(), np.float64),
        expr=np.stack([np.asarray(b.deformation, np.float64) for b in bs], axis=1),
        ibug=np.array([p[0] for p in pairs]), vertex_ids=np.array([p[1] for p in pairs]),
        files={Path(p).name: p for p in files.values()})


def _points(lms: np.ndarray) -> list:
    return [np.asarray(p, np.float32).reshape(2, 1) for p in lms]


def _camera(sfm: SurreyModel, face: np.ndarray, pts: list, width: int, height: int):
    """Scaled orthographic pose of ``face`` [V, 3] on the mapped landmarks: (RenderingParameters, P [3, 4])."""
    import eos

    model_pts = [np.r_[face[v], 1.0].astype(np.float32).reshape(4, 1) for v in sfm.vertex_ids]
    ortho = eos.fitting.estimate_orthographic_projection_linear(pts, model_pts, True, height)
    rp = eos.fitting.RenderingParameters(ortho, width, height)
    return rp, np.asarray(eos.fitting.get_3x4_affine_camera_matrix(rp, width, height), np.float64)


def project(cam: np.ndarray, face_flat: np.ndarray, vertex_ids: np.ndarray) -> np.ndarray:
    """Image points [L, 2] of the vertices ``vertex_ids`` of a flat face [V*3] under an affine camera [3, 4]."""
    v = face_flat.reshape(-1, 3)[vertex_ids]
    return v @ cam[:2, :3].T + cam[:2, 3]


def fit_identity(sfm: SurreyModel, lms: np.ndarray, cams: np.ndarray, exprs: np.ndarray,
                 lambda_identity: float) -> np.ndarray:
    """One shape vector for many frames (step 2 of the module docstring).

    Args:
        lms: [K, 68, 2] landmarks (pixels); cams: [K, 3, 4] affine cameras; exprs: [K, 6] weights.
        lambda_identity: prior weight on the rescaled PCA coefficients.
    Returns:
        [63] shape coefficients (units of the PCA standard deviation).
    """
    rows = (3 * sfm.vertex_ids[:, None] + np.arange(3)[None, :]).reshape(-1)   # [3L]
    basis = sfm.basis[rows].reshape(len(sfm.vertex_ids), 3, -1)                 # [L, 3, 63]
    lhs = lambda_identity * np.eye(basis.shape[-1])
    rhs = np.zeros(basis.shape[-1])
    for y, cam, b in zip(lms, cams, exprs):
        face0 = sfm.mean + sfm.expr @ b
        resid = (y[sfm.ibug] - project(cam, face0, sfm.vertex_ids)).reshape(-1)  # [2L]
        a = np.einsum("ij,ljk->lik", cam[:2, :3], basis).reshape(-1, basis.shape[-1])  # [2L, 63]
        lhs += a.T @ a / LANDMARK_VAR
        rhs += a.T @ resid / LANDMARK_VAR
    return np.linalg.solve(lhs, rhs)


def fit_frame(sfm: SurreyModel, lms: np.ndarray, shape: np.ndarray, width: int, height: int,
              iterations: int, lambda_expressions: float, expr0: np.ndarray | None = None):
    """Pose and expression of one frame with the identity fixed (step 3).

    Args:
        lms: [68, 2] landmarks (pixels); shape: [63] identity coefficients.
    Returns:
        (rendering parameters, camera [3, 4], expression weights [6], landmark error in pixels).
    """
    import eos

    pts_all = lms[sfm.ibug]
    pts = _points(pts_all)
    ident = (sfm.mean + sfm.basis @ shape).astype(np.float32)
    b = np.zeros(len(sfm.blendshapes)) if expr0 is None else np.asarray(expr0, np.float64)
    for _ in range(max(1, iterations)):
        face = ident.astype(np.float64) + sfm.expr @ b
        rp, cam = _camera(sfm, face.reshape(-1, 3), pts, width, height)
        b = np.asarray(eos.fitting.fit_expressions(sfm.blendshapes, ident, cam.astype(np.float32), pts,
                                                   [int(v) for v in sfm.vertex_ids],
                                                   lambda_expressions=lambda_expressions), np.float64)
    face = ident.astype(np.float64) + sfm.expr @ b
    rp, cam = _camera(sfm, face.reshape(-1, 3), pts, width, height)
    err = float(np.linalg.norm(project(cam, face, sfm.vertex_ids) - pts_all, axis=1).mean())
    return rp, cam, b, err


def spread(pool: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` entries of ``pool`` evenly spread over it (first and last included)."""
    pool = np.asarray(pool)
    if len(pool) == 0:
        return pool
    return pool[np.unique(np.linspace(0, len(pool) - 1, min(k, len(pool))).round().astype(int))]


@dataclass
class ThreeDMMFit:
    """Result of :func:`fit_clip` (N frames)."""

    shape: np.ndarray            # [63]
    expression: np.ndarray       # [N, 6]
    rotation: np.ndarray         # [N, 3, 3] model -> camera (eos: x right, y up, z towards the camera)
    yaw_pitch_roll: np.ndarray   # [N, 3] degrees (eos RenderingParameters.get_yaw_pitch_roll)
    scale: np.ndarray            # [N] pixels per millimetre (scaled orthographic)
    translation: np.ndarray      # [N, 2] mm (eos modelview): u = s (R[0] X + tx), v = H - s (R[1] X + ty)
    camera: np.ndarray           # [N, 3, 4] affine camera, model mm -> image pixels (x right, y down)
    landmark_error: np.ndarray   # [N] mean landmark distance (pixels)
    identity_frames: np.ndarray  # [K]


def fit_clip(sfm: SurreyModel, lms: np.ndarray, width: int, height: int, cfg: ThreeDMMConfig,
             valid: np.ndarray | None = None) -> ThreeDMMFit:
    """Fit one identity shape and per-frame pose + expressions to a clip's landmarks.

    Args:
        lms: [N, 68, 2] iBUG landmarks (pixels, x right, y down).
        width, height: image size (pixels).
        valid: [N] bool, frames with a detected face (default all); only those determine the shape.
    Returns:
        :class:`ThreeDMMFit`.
    """
    import eos

    n = len(lms)
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    ident_frames = spread(np.flatnonzero(valid), cfg.identity_frames)
    cams, exprs = [], []
    for i in ident_frames:
        landmarks = [eos.core.Landmark(str(j + 1), [float(x), float(y)]) for j, (x, y) in enumerate(lms[i])]
        _, rp, _, bc = eos.fitting.fit_shape_and_pose(
            sfm.model, landmarks, sfm.mapper, width, height, sfm.edge_topology, sfm.contour_landmarks,
            sfm.model_contour, num_iterations=cfg.iterations, lambda_identity=cfg.lambda_identity,
            lambda_expressions=cfg.lambda_expressions)
        cams.append(np.asarray(eos.fitting.get_3x4_affine_camera_matrix(rp, width, height), np.float64))
        exprs.append(np.asarray(bc, np.float64))
    cams, exprs = np.array(cams), np.array(exprs)
    shape = fit_identity(sfm, lms[ident_frames], cams, exprs, cfg.lambda_identity)
    for _ in range(2):  # refine: poses/expressions with this shape, then the shape again
        fits = [fit_frame(sfm, lms[i], shape, width, height, cfg.iterations, cfg.lambda_expressions, exprs[k])
                for k, i in enumerate(ident_frames)]
        cams = np.array([f[1] for f in fits])
        exprs = np.array([f[2] for f in fits])
        shape = fit_identity(sfm, lms[ident_frames], cams, exprs, cfg.lambda_identity)
    out = {k: [] for k in ("rot", "ypr", "scale", "trans", "cam", "expr", "err")}
    prev = None
    for i in range(n):
        rp, cam, b, err = fit_frame(sfm, lms[i], shape, width, height, cfg.iterations, cfg.lambda_expressions, prev)
        prev = b
        mv = np.asarray(rp.get_modelview(), np.float64)
        out["rot"].append(mv[:3, :3])
        out["ypr"].append(np.asarray(rp.get_yaw_pitch_roll(), np.float64))
        proj = np.asarray(rp.get_projection(), np.float64)
        out["scale"].append(width / 2.0 * proj[0, 0])  # ortho projection maps mm to NDC; viewport to pixels
        out["trans"].append(mv[:2, 3])
        out["cam"].append(cam)
        out["expr"].append(b)
        out["err"].append(err)
    return ThreeDMMFit(shape=shape, expression=np.array(out["expr"]), rotation=np.array(out["rot"]),
                       yaw_pitch_roll=np.array(out["ypr"]), scale=np.array(out["scale"]),
                       translation=np.array(out["trans"]), camera=np.array(out["cam"]),
                       landmark_error=np.array(out["err"]), identity_frames=ident_frames)


def save_npz(path: str | Path, fit: ThreeDMMFit, valid: np.ndarray) -> None:
    """``threedmm.npz`` (``np.load``):

    ``shape`` float32 [63] SFM identity coefficients (PCA standard deviations), one per identity;
    ``expression`` float32 [N, 6] SFM blendshape weights (>= 0; ``expression_names``);
    ``rotation`` float32 [N, 3, 3] model -> camera (x right, y up, z towards the camera);
    ``yaw_pitch_roll`` float32 [N, 3] degrees; ``scale`` float32 [N] pixels per mm;
    ``translation`` float32 [N, 2] (eos modelview, mm: pixel ``u = scale (R[0] X + tx)``,
    ``v = height - scale (R[1] X + ty)``); ``camera`` float32 [N, 3, 4] affine
    camera model mm -> image pixels (x right, y down; apply to ``[x, y, z, 1]``);
    ``landmark_error`` float32 [N] mean distance of the mapped iBUG landmarks (pixels);
    ``valid`` bool [N] (a face was detected); ``identity_frames`` int64 [K]; ``status`` "ok".
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, shape=fit.shape.astype(np.float32), expression=fit.expression.astype(np.float32),
                     expression_names=np.array(EXPRESSION_NAMES), rotation=fit.rotation.astype(np.float32),
                     yaw_pitch_roll=fit.yaw_pitch_roll.astype(np.float32), scale=fit.scale.astype(np.float32),
                     translation=fit.translation.astype(np.float32), camera=fit.camera.astype(np.float32),
                     landmark_error=fit.landmark_error.astype(np.float32), valid=np.asarray(valid, bool),
                     identity_frames=fit.identity_frames.astype(np.int64), status=np.array("ok"))


#: ``track_params.pt`` keys this stage provides (see :func:`adnerf_fields`)
TRACK_PARAMS_KEYS = ("id", "id_model", "exp_sfm", "exp_sfm_names")


def read_status(threedmm: str | Path) -> tuple[str, str]:
    """(status, reason) of a ``threedmm.npz``: ``("ok", "")`` or ``("n/a", why)``.

    Raises:
        InputError: the file is missing or not an npz with a ``status`` entry.
    """
    try:
        with np.load(threedmm) as z:
            status = str(z["status"])
            reason = str(z["reason"]) if "reason" in z else ""
    except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
        raise InputError(threedmm, f"not a threedmm.npz ({exc})") from None
    return status, reason


def adnerf_fields(threedmm: str | Path, n_frames: int) -> dict:
    """The AD-NeRF ``track_params.pt`` keys this stage provides, for the tracking stage to merge.

    AD-NeRF / ER-NeRF ``face_tracker.py`` (ER-NeRF lines 381-390) saves ``id`` [1, id_dim] and
    ``exp`` [N, exp_dim] next to ``euler``, ``trans``, ``focal`` (which stay the tracking stage's
    perspective poses). Here ``id`` is the SFM identity and the articulated expression ``exp`` stays
    the 52 MediaPipe blendshapes (the 6 SFM expressions carry no jaw or lip motion); the SFM
    expression weights go under their own key ``exp_sfm``.

    Args:
        threedmm: ``threedmm.npz`` of this stage (status ``ok``).
        n_frames: the clip's frame count (rows of the tracking outputs).
    Returns:
        ``{"id": float32 [1, 63] SFM shape coefficients (PCA standard deviations), "id_model":
        "surrey_face_model_3448", "exp_sfm": float32 [N, 6] SFM expression weights (>= 0),
        "exp_sfm_names": list[str] (6)}`` as numpy arrays (``torch.as_tensor`` them to save).
    Raises:
        InputError: the npz is n/a or its frame count differs from ``n_frames``.
    """
    status, reason = read_status(threedmm)
    if status != "ok":
        raise InputError(threedmm, f"no 3DMM fit ({reason or status})")
    with np.load(threedmm) as z:
        shape, expr, names = z["shape"], z["expression"], [str(x) for x in z["expression_names"]]
    if len(expr) != n_frames:
        raise InputError(threedmm, f"{len(expr)} frames but the clip has {n_frames}")
    return {"id": shape.astype(np.float32)[None], "id_model": "surrey_face_model_3448",
            "exp_sfm": expr.astype(np.float32), "exp_sfm_names": names}


def read_frame_landmarks(frames_dir: Path) -> tuple[np.ndarray, int, int]:
    """All ``ori_imgs/{i}.lms`` as [N, 68, 2] and the frame size (width, height) of ``0.jpg``.

    Raises:
        InputError: no frames, a missing or malformed ``.lms`` file, unreadable first frame.
    """
    import cv2

    from pipeline.preprocess.landmarks import list_frames, read_lms

    frames = list_frames(frames_dir)
    if not frames:
        raise InputError(frames_dir, "no frames ({i}.jpg)")
    lms = np.stack([read_lms(p.with_suffix(".lms")) for p in frames])
    img = cv2.imread(str(frames[0]))
    if img is None:
        raise InputError(frames[0], "cannot read the first frame")
    return lms.astype(np.float64), img.shape[1], img.shape[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", required=True, type=Path, help="ori_imgs folder ({i}.jpg + {i}.lms)")
    ap.add_argument("--landmarks", type=Path, help="landmarks.json (failed_frames)")
    ap.add_argument("--out", required=True, type=Path, help="threedmm.npz")
    ap.add_argument("--report", required=True, type=Path, help="threedmm.json")
    ap.add_argument("--weights-dir", type=Path, default=None,
                    help="weights folder (default weights_cache; relative to the project root; $TALKING_NERF_WEIGHTS overrides it)")
    ap.add_argument("--cfg", default="{}", help="JSON of config preprocess.threedmm")
    args = ap.parse_args(argv)
    setup_logging("pipeline.preprocess.threedmm")
    cfg = ThreeDMMConfig.from_dict(parse_cfg_arg(args.cfg))
    folder, reason = sfm_dir(cfg, stage_weights_dir(args.weights_dir)) if cfg.enabled else (None, "disabled (preprocess.threedmm.enabled: false)")
    config = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    if folder is None:
        log.warning("3DMM: n/a: %s", reason)
        with atomic_path(args.out) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, status=np.array("n/a"), reason=np.array(reason))
        atomic_write_json(args.report, {"status": "n/a", "reason": reason, "config": config})
        return 0
    lms, width, height = read_frame_landmarks(args.frames)
    report = read_json(args.landmarks) if args.landmarks else {}
    from pipeline.preprocess.tracking import failed_frames

    failed = failed_frames(report)
    valid = np.array([i not in failed for i in range(len(lms))])
    if valid.sum() < 1:
        raise InputError(args.landmarks or args.frames, "no frame with a detected face")
    t0 = time.perf_counter()
    sfm = load_sfm(folder)
    t1 = time.perf_counter()
    fit = fit_clip(sfm, lms, width, height, cfg, valid)
    t2 = time.perf_counter()
    save_npz(args.out, fit, valid)
    err = fit.landmark_error[valid]
    from pipeline.weights import file_sha256

    atomic_write_json(args.report, {
        "status": "ok",
        "model": "Surrey Face Model 3448 (shape 63 PCA components, 6 expression blendshapes), eos-py",
        "files": {name: {"path": p, "sha256": file_sha256(p)} for name, p in sfm.files.items()},
        "frames": len(lms), "width": width, "height": height,
        "identity_frames": fit.identity_frames.tolist(),
        "landmarks_fitted": int(len(sfm.ibug)),
        "mean_landmark_error_px": float(err.mean()),
        "max_landmark_error_px": float(err.max()),
        "shape_norm": float(np.linalg.norm(fit.shape)),
        "expression_names": list(EXPRESSION_NAMES),
        "seconds": {"load": round(t1 - t0, 3), "fit": round(t2 - t1, 3)},
        "frames_per_second": round(len(lms) / max(t2 - t1, 1e-9), 2),
        "config": config,
    })
    log.info("%s: SFM fitted to %d frames (identity from %d), mean landmark error %.2f px, %.1f frames/s",
             args.frames, len(lms), len(fit.identity_frames), err.mean(), len(lms) / max(t2 - t1, 1e-9))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
