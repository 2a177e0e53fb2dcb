"""Landmarks stage: 68-point iBUG landmarks per frame, dense MediaPipe mesh, blendshapes, poses.

Outputs (ER-NeRF layout, see :mod:`pipeline.common.layout`):

* ``ori_imgs/{i}.lms`` - 68 rows ``"x y"`` in pixels (iBUG order), next to frame ``ori_imgs/{i}.jpg``;
* ``face_mesh.npy`` - float32 [N, 478, 3], x/y in pixels, z in pixels of the same scale;
* ``blendshapes.npy`` - float32 [N, 52] MediaPipe blendshape scores in [0, 1];
* ``face_pose_mp.npy`` - float32 [N, 4, 4] MediaPipe facial transformation matrices (extra file);
* ``landmarks.json`` - backends, failed / interpolated frames, blendshape names, extra files, timings.

Frame ``i`` always maps to ``{i}.lms`` and row ``i``: frames without a face are filled by linear
interpolation between their neighbours (at the clip's ends the nearest detected frame is repeated),
and recorded. Runs of at most ``max_gap`` failed frames are *interpolated* and stay in the dataset;
more of them than ``max_failed_fraction`` of the frames refuse the identity. Longer runs are
*face-less stretches* (the face left the frame, a cutaway): their frames keep their files but are
listed in ``excluded_frames`` and left out of the train/val splits by the tracking stage (as AD-NeRF
keeps only its ``valid_img_ids``); only when they cover more than ``max_faceless_fraction`` of the
frames is the identity refused. Refusals are one :class:`InputError` naming the frames.

Backends: MediaPipe Face Landmarker (mesh, blendshapes, poses; always); the 68 points come from the
FAN 2DFAN4 network when its weights are present (``backend: auto|fan``, the anchors' choice: ER-NeRF
and AD-NeRF run face_alignment), else from the mesh by a fixed index mapping (``lms68: auto|mesh``) or
from dlib's 68-point predictor on the mesh's face box (``lms68: dlib``). ``auto`` takes the mesh
mapping: on the sample clip it is within 1-6 px of dlib (jaw 2-12 px), 2-3x less jittery from frame
to frame (mean second difference 0.6-1.1 px against 1.4-2.7 px) and saves dlib's 1-2 s model load.

CLI: ``python -m pipeline.preprocess.landmarks --frames DIR --out-mesh F --out-blendshapes F
[--out-pose F] --out-report F [--weights-dir D] [--cfg JSON]``.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.common.config import StageConfig, parse_cfg_arg, stage_weights_dir
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_path, atomic_write_json
from pipeline.common.log import run_main, setup_logging

log = logging.getLogger("pipeline.preprocess.landmarks")

#: name of the extra pose file written next to face_mesh.npy
POSE_FILE = "face_pose_mp.npy"


@dataclass
class LandmarksConfig(StageConfig):
    """Config ``preprocess.landmarks``."""

    backend: str = "auto"
    """auto | mediapipe | fan: 68-point source; auto uses FAN when its weights are present."""
    lms68: str = "auto"
    """auto | dlib | mesh: 68-point source when FAN is not used (auto = mesh, see module docstring)."""
    max_failed_fraction: float = 0.1
    """refuse the identity when more than this fraction of the frames are short gaps without a face
    (runs of at most ``max_gap`` frames, interpolated)."""
    max_gap: int = 12
    """longest run of consecutive failed frames that is interpolated and kept (frames); longer runs
    are face-less stretches, left out of the train/val splits."""
    max_faceless_fraction: float = 0.5
    """refuse the identity when face-less stretches (runs longer than ``max_gap``) cover more than
    this fraction of the frames."""


# --------------------------------------------------------------------------------------------------
# frame folder helpers (shared by the parsing and background stages)

_FRAME_RE = re.compile(r"^(\d+)\.jpg$")


def list_frames(frames_dir: str | Path, suffix: str = ".jpg") -> list[Path]:
    """Frames ``{i}{suffix}`` of a folder, ordered by ``i`` = 0..N-1.

    Raises:
        InputError: the folder is missing, empty, or its numbering has a hole (indices must never
            shift, so a missing frame is an error).
    """
    frames_dir = Path(frames_dir)
    if not frames_dir.is_dir():
        raise InputError(frames_dir, "frames folder not found")
    pat = re.compile(rf"^(\d+){re.escape(suffix)}$") if suffix != ".jpg" else _FRAME_RE
    idx = sorted(int(m.group(1)) for name in os.listdir(frames_dir) if (m := pat.match(name)))
    if not idx:
        raise InputError(frames_dir, f"no frames named {{i}}{suffix} in the folder")
    if idx[-1] != len(idx) - 1:
        missing = sorted(set(range(idx[-1] + 1)) - set(idx))
        raise InputError(frames_dir, f"frame numbering has holes: missing {format_frames(missing)}")
    return [frames_dir / f"{i}{suffix}" for i in idx]


def format_frames(frames: list[int], limit: int = 20) -> str:
    """``"3, 4, 5"`` or the first ``limit`` numbers followed by ``"... (K in all)"``."""
    s = ", ".join(str(f) for f in frames[:limit])
    return s + (f", ... ({len(frames)} in all)" if len(frames) > limit else "")


def read_bgr(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] BGR image; an unreadable file raises :class:`InputError`."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(path, "cannot decode image")
    return img


# --------------------------------------------------------------------------------------------------
# gap filling


def failed_runs(ok: np.ndarray) -> list[tuple[int, int]]:
    """Runs of failed frames as half-open ``(start, stop)`` index pairs.

    Args:
        ok: bool [N], True where detection succeeded.
    """
    runs, start = [], None
    for i, good in enumerate(ok):
        if not good and start is None:
            start = i
        elif good and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(ok)))
    return runs


def fill_gaps(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Linear interpolation over failed frames, per element.

    Args:
        values: [N, ...] per-frame values (rows of failed frames are ignored).
        ok: bool [N], at least one True.
    Returns:
        float32 array of the same shape; a failed frame between detected frames ``a < i < b`` gets
        ``v[a] + (i - a) / (b - a) * (v[b] - v[a])``; before the first / after the last detected frame
        the nearest detected value is repeated.
    """
    values = np.asarray(values, dtype=np.float32)
    good = np.flatnonzero(ok)
    if good.size == len(ok):
        return values
    n = len(ok)
    flat = values.reshape(n, -1)
    out = np.empty_like(flat)
    t = np.arange(n)
    for j in range(flat.shape[1]):  # np.interp clamps at the ends = nearest value
        out[:, j] = np.interp(t, good, flat[good, j])
    return out.reshape(values.shape)


def orthonormalize_poses(poses: np.ndarray) -> np.ndarray:
    """Project the 3x3 rotation blocks of [N, 4, 4] matrices back to rotations (SVD), after
    interpolation (a linear blend of rotations is not a rotation)."""
    u, _, vt = np.linalg.svd(poses[:, :3, :3])
    r = u @ vt
    det = np.linalg.det(r)
    u[det < 0, :, -1] *= -1
    out = poses.copy()
    out[:, :3, :3] = u @ vt
    return out


def check_failures(ok: np.ndarray, cfg: LandmarksConfig, where: Path) -> tuple[list[int], list[int]]:
    """Sort the failed frames into interpolated gaps and face-less stretches; refuse the identity
    when either exceeds its limit (module docstring).

    Args:
        ok: bool [N], True where a face was detected.
    Returns:
        (interpolated frames: runs of at most ``max_gap``, excluded frames: longer runs), sorted.
    Raises:
        InputError: naming ``where`` and the failed frame numbers.
    """
    n = len(ok)
    failed = np.flatnonzero(~ok).tolist()
    if not failed:
        return [], []
    if len(failed) == n:
        raise InputError(where, f"no face found in any of the {n} frames")
    short, long = [], []
    for a, b in failed_runs(ok):
        (short if b - a <= cfg.max_gap else long).extend(range(a, b))
    if len(short) > cfg.max_failed_fraction * n:
        raise InputError(where, f"no face in {len(short)} of {n} frames (more than max_failed_fraction="
                                f"{cfg.max_failed_fraction}): frames {format_frames(short)}")
    if len(long) > cfg.max_faceless_fraction * n:
        runs = [f"{a}-{b - 1}" for a, b in failed_runs(ok) if b - a > cfg.max_gap]
        raise InputError(where, f"no face in {len(long)} of {n} frames in runs longer than max_gap={cfg.max_gap} "
                                f"(frames {', '.join(runs)}; more than max_faceless_fraction={cfg.max_faceless_fraction})")
    return short, long


# --------------------------------------------------------------------------------------------------


def write_lms(path: Path, pts: np.ndarray) -> None:
    """Write one ``.lms`` file: 68 rows ``"x y"`` (pixels, 2 decimals).

    Written in place (no temporary + rename: renames cost milliseconds each on overlay file
    systems); the stage writes its declared outputs only after all ``.lms`` files, so a killed run
    is redone by Snakemake.
    """
    with open(path, "w") as fh:
        fh.write("".join(f"{x:.2f} {y:.2f}\n" for x, y in pts))


def read_lms(path: str | Path) -> np.ndarray:
    """Read an ``.lms`` file: float32 [68, 2] (x, y pixels).

    Raises:
        InputError: missing file or not 68 rows of two numbers.
    """
    try:
        arr = np.loadtxt(path, dtype=np.float32, ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read landmarks ({exc})") from None
    if arr.shape != (68, 2):
        raise InputError(path, f"expected 68 rows 'x y', found shape {arr.shape}")
    return arr


def _choose_68(cfg: LandmarksConfig, weights_dir: Path | None, report: dict):
    """Pick the 68-point backend; returns ``(name, callable(bgr, mesh) -> [68,2])``."""
    from pipeline.preprocess.backends.mesh68 import mesh_to_68

    if cfg.backend in ("auto", "fan"):
        from pipeline.weights import WeightsMissing

        try:
            from pipeline.preprocess.backends.fan import FanLandmarks, torch_device

            fan = FanLandmarks.from_weights_dir(weights_dir, device=torch_device())
            report["fan_device"] = fan.device
            return "fan", lambda bgr, mesh: fan.predict(bgr[..., ::-1], mesh_box(mesh))
        except WeightsMissing as exc:
            reason = exc.reason
        except ImportError as exc:  # torch missing from the environment
            reason = f"torch cannot be imported ({exc})"
        log.warning("FAN landmarks not used: %s; falling back to %s", reason,
                    "dlib" if cfg.lms68 == "dlib" else "the mesh mapping")
        report["fan_skipped_reason"] = reason
    if cfg.lms68 == "dlib":
        import cv2

        from pipeline.preprocess.backends.dlib68 import Dlib68, box_from_68

        d68 = Dlib68()
        return "dlib", lambda bgr, mesh: d68.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY),
                                                     box_from_68(mesh_to_68(mesh)))
    return "mesh", lambda bgr, mesh: mesh_to_68(mesh)


def mesh_box(mesh: np.ndarray) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) pixel box of the mesh's x, y."""
    x0, y0 = mesh[:, :2].min(axis=0)
    x1, y1 = mesh[:, :2].max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def run(frames_dir: Path, out_mesh: Path, out_blendshapes: Path, out_report: Path, cfg: LandmarksConfig,
        weights_dir: Path | None = None, out_pose: Path | None = None) -> dict:
    """Run the stage (see module docstring). Returns the report written to ``out_report``.

    ``out_pose`` defaults to :data:`POSE_FILE` next to ``out_mesh``.

    Raises:
        InputError: frames folder problems, or too many frames without a face.
    """
    import cv2
    from tqdm import tqdm

    from pipeline.preprocess.backends.mediapipe_mesh import MeshDetector

    t0, c0 = time.perf_counter(), time.process_time()
    frames = list_frames(frames_dir)
    n = len(frames)
    report: dict = {"n_frames": n}
    name68, predict68 = _choose_68(cfg, weights_dir, report)
    mesh = np.zeros((n, 478, 3), np.float32)
    bshapes = np.zeros((n, 52), np.float32)
    poses = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    lms = np.zeros((n, 68, 2), np.float32)
    ok = np.zeros(n, bool)
    size = None
    with MeshDetector(video_mode=True) as det, ThreadPoolExecutor(max_workers=1) as pool:
        nxt = pool.submit(read_bgr, frames[0])          # decode the next frame while this one runs
        for i, path in enumerate(tqdm(frames, desc="landmarks", mininterval=5, file=sys.stderr)):
            bgr = nxt.result()
            if i + 1 < n:
                nxt = pool.submit(read_bgr, frames[i + 1])
            if size is None:
                size = bgr.shape[:2]
            elif bgr.shape[:2] != size:
                raise InputError(path, f"frame size {bgr.shape[1]}x{bgr.shape[0]} differs from frame 0 "
                                       f"({size[1]}x{size[0]})")
            res = det.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), i)
            if res is None:
                continue
            ok[i] = True
            mesh[i], bshapes[i], poses[i] = res.mesh, res.blendshapes, res.pose
            lms[i] = predict68(bgr, res.mesh)
        names = det.blendshape_names
    interpolated, excluded = check_failures(ok, cfg, Path(frames_dir))
    failed = np.flatnonzero(~ok).tolist()
    if interpolated:
        log.warning("no face in %d frame(s): %s (interpolated)", len(interpolated), format_frames(interpolated))
    if excluded:
        runs = [f"{a}-{b - 1}" for a, b in failed_runs(ok) if b - a > cfg.max_gap]
        log.warning("no face in %d frame(s) in runs longer than max_gap=%d (frames %s): left out of the "
                    "train/val splits", len(excluded), cfg.max_gap, ", ".join(runs))
    if failed:
        mesh, bshapes, lms = fill_gaps(mesh, ok), fill_gaps(bshapes, ok), fill_gaps(lms, ok)
        poses = orthonormalize_poses(fill_gaps(poses, ok))
    for i, path in enumerate(frames):
        write_lms(path.with_suffix(".lms"), lms[i])
    pose_path = Path(out_pose) if out_pose else Path(out_mesh).with_name(POSE_FILE)
    for arr, dst in ((mesh, out_mesh), (bshapes, out_blendshapes), (poses, pose_path)):
        with atomic_path(dst) as tmp:
            np.save(tmp, arr.astype(np.float32))
    seconds = time.perf_counter() - t0
    report.update({
        "image_size": [int(size[1]), int(size[0])],
        "backends": {"mesh": "mediapipe_face_landmarker", "lms68": name68},
        "failed_frames": failed,
        "interpolated_frames": interpolated,
        "excluded_frames": excluded,
        "max_gap": cfg.max_gap,
        "max_failed_fraction": cfg.max_failed_fraction,
        "blendshape_names": names,
        "files": {"lms": "ori_imgs/{i}.lms", "mesh": Path(out_mesh).name,
                  "blendshapes": Path(out_blendshapes).name, "pose_mp": pose_path.name},
        "config": asdict(cfg),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(time.process_time() - c0, 3),     # all threads of this process
        "frames_per_second": round(n / seconds, 2),
    })
    atomic_write_json(out_report, report)
    log.info("landmarks: %d frames, 68-point backend %s, %d failed, %.1f frames/s", n, name68, len(failed),
             n / seconds)
    return report


def main(argv=None) -> int:
    """CLI entry point (see module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.preprocess.landmarks", description=__doc__.split("\n")[0])
    ap.add_argument("--frames", required=True, type=Path, help="ori_imgs folder ({i}.jpg)")
    ap.add_argument("--out-mesh", required=True, type=Path)
    ap.add_argument("--out-blendshapes", required=True, type=Path)
    ap.add_argument("--out-pose", type=Path, default=None, help=f"default: {POSE_FILE} next to --out-mesh")
    ap.add_argument("--out-report", required=True, type=Path)
    ap.add_argument("--weights-dir", type=Path, default=None,
                    help="weights folder (default weights_cache; relative to the project root; $TALKING_NERF_WEIGHTS overrides it)")
    ap.add_argument("--cfg", default="{}", help="JSON of config preprocess.landmarks")
    args = ap.parse_args(argv)
    setup_logging("pipeline.preprocess.landmarks")
    cfg = LandmarksConfig.from_dict(parse_cfg_arg(args.cfg))
    run(args.frames, args.out_mesh, args.out_blendshapes, args.out_report, cfg, stage_weights_dir(args.weights_dir),
        args.out_pose)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
