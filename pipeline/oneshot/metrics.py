"""Metrics of the ``one_shot`` protocol: one JSON + per-frame CSV per one-shot render.

``results/metrics/one_shot/{method}/{reference}/{test}.json``::

    {"method", "identity" (= the reference), "test", "protocol": "one_shot", "n_frames",
     "reference": {...}, "flipped": bool, "anchor": {...},
     "metrics": {NAME: {"value", "backend", "weights_sha256", "na_reason", "n_frames"}}}

================  =====================================================================  =========
NAME              what it measures (definition)                                          better
================  =====================================================================  =========
``csim``          identity kept: cosine similarity of each frame's face embedding with    higher
                  the reference photo's (ArcFace when its weights are present, else dlib's
                  128-d descriptor, :mod:`pipeline.metrics.identity`), mean over frames
``cpbd``          sharpness, CPBD (:mod:`pipeline.metrics.sharpness`), mean over frames    higher
``lse_c/lse_d``   lip sync with the driving audio, SyncNet (:mod:`pipeline.metrics.sync`)  higher/lower
``fid``           FID (pytorch-fid Inception) against the reference identity's real       lower
                  frames (``--identity-frames``: the dataset ``gt_imgs`` of an identity of
                  the same name; mirrored for a flipped run); n/a for a lone photo
``expr_l1``       expression error: mean absolute difference of the 52 MediaPipe          lower
                  blendshapes (gaze and ``_neutral`` excluded) of output and driver, each
                  relative to its own anchor frame: ``|(b_out_t - b_out_a) - (b_drv_t - b_drv_a)|``
``pose_err_deg``  head-motion error: geodesic angle (degrees) between the output's and    lower
                  the driver's head rotation relative to their anchor frames
``mouth_corr``    Pearson correlation over time of the mouth opening (inner-lip gap /     higher
                  eye-corner distance) of output and driver
``fps``           frames per second of the one-shot stage (render manifest)               higher
``fps_chain``     frames per second of audio -> NeRF -> photo (render manifest)           higher
================  =====================================================================  =========

The anchor frame ``a`` is the one recorded in the render manifest (the bounds have none: the
driver's automatic anchor, :func:`pipeline.oneshot.face.choose_anchor`, is used for both videos).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.common.errors import InputError
from pipeline.common.io import atomic_write, atomic_write_json, read_json
from pipeline.common.log import run_main, setup_logging
from pipeline.metrics import MetricValue
from pipeline.weights import WeightsMissing, require

if TYPE_CHECKING:  # only for annotations: the face toolkit loads MediaPipe
    from pipeline.oneshot.face import FaceTrack

log = logging.getLogger(__name__)

#: metric names of a one-shot metrics JSON, in table order
ONESHOT_METRICS = ("csim", "cpbd", "lse_c", "lse_d", "fid", "expr_l1", "pose_err_deg", "mouth_corr", "fps",
                   "fps_chain")

MOTION_BACKEND = "MediaPipe Face Landmarker (resources/models/face_landmarker.task), IMAGE mode per frame"


def motion_fidelity(out: FaceTrack, drv: FaceTrack, anchor: int) -> tuple[dict[str, MetricValue], dict]:
    """Expression error, pose error and mouth-opening correlation of an output against its driver.

    Args:
        out, drv: face tracks of the output and driving frames (same length N).
        anchor: the anchor frame index (both videos).
    Returns:
        ({"expr_l1", "pose_err_deg", "mouth_corr"}: MetricValue, per-frame columns).
    """
    from pipeline.oneshot.face import expression_columns, mouth_opening, rotation_deg

    n = min(len(out), len(drv))
    ok = out.ok[:n] & drv.ok[:n]
    if not ok.any() or not (out.ok[anchor] and drv.ok[anchor]):
        why = "no face found in the output or the driver (at the anchor frame or in every frame)"
        return {k: MetricValue.na(why, MOTION_BACKEND) for k in ("expr_l1", "pose_err_deg", "mouth_corr")}, {}
    cols = expression_columns(drv.names)
    d_out = out.blendshapes[:n, cols] - out.blendshapes[anchor, cols]
    d_drv = drv.blendshapes[:n, cols] - drv.blendshapes[anchor, cols]
    expr = np.abs(d_out - d_drv).mean(1)
    r_out = np.einsum("nij,kj->nik", out.pose[:n, :3, :3].astype(np.float64), out.pose[anchor, :3, :3])
    r_drv = np.einsum("nij,kj->nik", drv.pose[:n, :3, :3].astype(np.float64), drv.pose[anchor, :3, :3])
    pose = rotation_deg(r_out, r_drv)
    mo, md = mouth_opening(out.mesh[:n]), mouth_opening(drv.mesh[:n])
    k = int(ok.sum())
    res = {"expr_l1": MetricValue(float(expr[ok].mean()), MOTION_BACKEND + "; 50 expression blendshapes, "
                                  "anchor-relative", None, None, k),
           "pose_err_deg": MetricValue(float(pose[ok].mean()), MOTION_BACKEND + "; facial transformation "
                                       "matrix, anchor-relative rotation", None, None, k)}
    if k < 3 or np.ptp(mo[ok]) < 1e-6 or np.ptp(md[ok]) < 1e-6:
        res["mouth_corr"] = MetricValue.na("mouth opening constant in the output or the driver (no mouth "
                                           "motion): correlation undefined", MOTION_BACKEND, k)
    else:
        res["mouth_corr"] = MetricValue(float(np.corrcoef(mo[ok], md[ok])[0, 1]), MOTION_BACKEND +
                                        "; inner-lip gap / eye-corner distance, Pearson r", None, None, k)
    frames = {"expr_l1": [float(x) if o else math.nan for x, o in zip(expr, ok)],
              "pose_err_deg": [float(x) if o else math.nan for x, o in zip(pose, ok)],
              "mouth_out": [float(x) for x in mo], "mouth_driver": [float(x) for x in md]}
    return res, frames


def _identity(frames: list[np.ndarray], ref: np.ndarray, weights_dir: Path) -> tuple[MetricValue, list[float]]:
    """CSIM of every frame against the reference photo."""
    from pipeline.metrics.identity import ArcFaceEmbedder, DlibEmbedder
    from pipeline.metrics.landmarks import make_landmarker

    lmk, _ = make_landmarker(weights_dir)
    try:
        emb = ArcFaceEmbedder(weights_dir, lmk)
    except WeightsMissing as exc:
        log.info("CSIM: dlib descriptor (%s)", exc.reason)
        emb = DlibEmbedder(lmk)
    r = emb(ref)
    if r is None:
        return MetricValue.na("no face found in the reference photo by the CSIM landmarker", emb.backend), []
    vals = []
    for f in frames:
        e = emb(f)
        vals.append(math.nan if e is None else float(np.dot(e, r) / (np.linalg.norm(e) * np.linalg.norm(r))))
    ok = [v for v in vals if not math.isnan(v)]
    if not ok:
        return MetricValue.na("no face found in any frame", emb.backend), vals
    return MetricValue(float(np.mean(ok)), emb.backend + "; vs the reference photo", emb.weights_sha256,
                       None, len(ok)), vals


def _fid(frames: list[np.ndarray], identity_frames: Path, flipped: bool, weights_dir: Path) -> MetricValue:
    """FID of the output frames against the identity's real frames (all ``*.jpg``/``*.png`` of the
    folder, mirrored when the run used the mirrored photo)."""
    from pipeline.metrics.compute import read_rgb
    from pipeline.metrics.fid import InceptionFeatures, frechet_distance

    try:
        require("fid_inception", weights_dir)
        inc = InceptionFeatures(weights_dir)
    except WeightsMissing as exc:
        return MetricValue.na(exc.reason, InceptionFeatures.backend)
    paths = sorted(p for p in Path(identity_frames).iterdir() if p.suffix.lower() in (".jpg", ".png"))
    if len(paths) < 2 or len(frames) < 2:
        return MetricValue.na(f"FID needs at least 2 frames per set ({len(paths)} in {identity_frames})",
                              inc.backend)

    def feats(imgs):
        out = []
        for k in range(0, len(imgs), 16):
            out.append(inc(np.stack([im.astype(np.float32) / 255.0 for im in imgs[k:k + 16]])))
        return np.concatenate(out)

    real = [read_rgb(p) for p in paths]
    if flipped:
        real = [np.ascontiguousarray(r[:, ::-1]) for r in real]
    value = frechet_distance(feats(frames), feats(real))
    return MetricValue(value, f"{inc.backend}; vs {len(paths)} frames of {identity_frames}", inc.weights_sha256,
                       None, len(frames))


def evaluate_oneshot(render_dir: str | Path, weights_dir: str | Path, lse_min_frames: int = 100,
                     stride: int = 1, identity_frames: str | Path | None = None) -> tuple[dict, dict[str, list]]:
    """All one-shot metrics of one render folder (protocol ``one_shot``).

    Args:
        render_dir: ``results/renders/{method}/{reference}/{test}``; its manifest names the
            reference photo (``reference.path``, ``reference.flipped``, ``reference.size``) and
            the driving clip (``driving.path``).
        weights_dir: pretrained weights (ArcFace, SyncNet); missing ones make metrics n/a.
        stride: CSIM and CPBD on every ``stride``-th frame (config ``oneshot.metric_stride``; the
            face descriptor costs tens of ms per frame on a CPU); motion metrics use every frame.
        identity_frames: folder of real frames of the photographed person (FID); None: FID n/a.
    Returns:
        (metrics JSON dict, per-frame columns).
    Raises:
        InputError: not a one-shot render, unreadable frames, reference or driving clip.
    """
    import cv2

    from pipeline.metrics.compute import MetricsConfig, _lse, read_rgb
    from pipeline.metrics.sharpness import BACKEND as CPBD_BACKEND, cpbd
    from pipeline.oneshot.driving import load_driving
    from pipeline.oneshot.face import choose_anchor, track_frames
    from pipeline.oneshot.render import load_reference

    render_dir = Path(render_dir)
    man = read_json(render_dir / "manifest.json")
    if man.get("protocol") != "one_shot":
        raise InputError(render_dir / "manifest.json", f"protocol {man.get('protocol')!r} is not one_shot")
    n = int(man["n_frames"])
    frames = [read_rgb(render_dir / "frames" / f"{i}.png") for i in range(n)]
    ref_rec = man["reference"]
    ref, _ = load_reference(ref_rec["path"], None, bool(ref_rec.get("flipped")))
    results: dict[str, MetricValue] = {}
    per_frame: dict[str, list] = {"frame": list(range(n))}

    stride = max(1, int(stride))
    picked = frames[::stride]
    note = f"; one frame in {stride} (frames 0, {stride}, {2 * stride}, ...)" if stride > 1 else ""
    results["csim"], csim = _identity(picked, ref, Path(weights_dir))
    if note and results["csim"].available:
        results["csim"].backend += note
    sharp = [cpbd(f) for f in picked]
    results["cpbd"] = MetricValue(float(np.mean(sharp)), CPBD_BACKEND + note, None, None, len(picked))
    per_frame["csim"] = [math.nan] * n
    per_frame["cpbd"] = [math.nan] * n
    for j, i in enumerate(range(0, n, stride)):
        per_frame["cpbd"][i] = sharp[j]
        if csim:
            per_frame["csim"][i] = csim[j]
    try:   # check the files first: importing SyncNet's stack costs seconds per job
        for name in ("syncnet_v2", "s3fd"):
            require(name, weights_dir)
        results.update(_lse(MetricsConfig(weights_dir=Path(weights_dir), lse_min_frames=lse_min_frames),
                            render_dir / "video.mp4"))
    except WeightsMissing as exc:
        from pipeline.metrics.sync import LSE

        results.update({k: MetricValue.na(exc.reason, LSE.backend) for k in ("lse_c", "lse_d")})
    if identity_frames is None:
        results["fid"] = MetricValue.na("FID needs a set of real frames of the reference identity; this one-shot "
                                        "reference is a single photo (no dataset of that name)")
    else:
        results["fid"] = _fid(frames, Path(identity_frames), bool(ref_rec.get("flipped")), Path(weights_dir))

    drv = load_driving(man["driving"]["path"])
    if len(drv.frames) != n:
        raise InputError(man["driving"]["path"], f"driving clip has {len(drv.frames)} frames, render has {n}")
    w, h = man["resolution"]
    dframes = [f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
               for f in drv.frames]
    # IMAGE mode: each frame on its own, so identical frames give identical landmarks (a still
    # output has exactly constant motion, not the tracker's jitter)
    out_track, drv_track = track_frames(frames, video_mode=False), track_frames(dframes, video_mode=False)
    anchor = (man.get("anchor") or {}).get("index")
    if anchor is None:
        anchor, _ = choose_anchor(drv_track)
    motion, cols = motion_fidelity(out_track, drv_track, int(anchor))
    results.update(motion)
    per_frame.update(cols)

    fr = man.get("fps_render")
    res = "x".join(str(v) for v in man.get("resolution") or [])
    results["fps"] = (MetricValue(float(fr), f"render manifest fps_render at {res} on {man.get('device')}",
                                  None, None, n) if isinstance(fr, (int, float))
                      else MetricValue.na("render manifest has no fps_render (a bound: nothing is computed)"))
    fc = man.get("fps_chain")
    results["fps_chain"] = (MetricValue(float(fc), "render manifest fps_chain: 1 / (1/fps NeRF + 1/fps one-shot)",
                                        None, None, n) if isinstance(fc, (int, float))
                            else MetricValue.na("no NeRF render FPS for the driving clip (a video or a bound)"))
    out = {k: man.get(k) for k in ("method", "identity", "test", "protocol")}
    out.update(n_frames=n, reference=ref_rec, flipped=bool(ref_rec.get("flipped")),
               anchor={"index": int(anchor), "source": "render manifest" if man.get("anchor") else "driver auto"},
               backend=man.get("backend"), driving=man.get("driving"),
               metrics={k: results[k].to_json() for k in ONESHOT_METRICS})
    return out, per_frame


def main(argv=None) -> int:
    """``python -m pipeline.oneshot.metrics --render DIR --out JSON --out-frames CSV``."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.oneshot.metrics", description=__doc__.splitlines()[0])
    ap.add_argument("--render", required=True, help="one-shot render contract folder")
    ap.add_argument("--out", required=True, help="metrics JSON")
    ap.add_argument("--out-frames", required=True, help="per-frame CSV")
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--stride", type=int, default=1, help="CSIM and CPBD on every N-th frame")
    ap.add_argument("--identity-frames", default=None, help="real frames of the photographed person (FID)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    lg = setup_logging("pipeline.oneshot.metrics")
    import cv2
    import pandas as pd
    import torch

    from pipeline.common.config import weights_dir as config_weights_dir

    cv2.setNumThreads(max(1, args.threads))
    torch.set_num_threads(max(1, args.threads))
    result, per_frame = evaluate_oneshot(args.render, args.weights_dir or config_weights_dir(), stride=args.stride,
                                         identity_frames=args.identity_frames)
    atomic_write_json(args.out, result)
    n = len(per_frame["frame"])
    with atomic_write(args.out_frames, "w") as fh:
        pd.DataFrame({k: v for k, v in per_frame.items() if len(v) == n}).to_csv(fh, index=False, float_format="%.6g")
    for name, m in result["metrics"].items():
        lg.info("%-14s %s", name, m["value"] if m["value"] is not None else f"n/a ({m['na_reason']})")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
