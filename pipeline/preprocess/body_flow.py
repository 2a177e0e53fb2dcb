"""Body flow per frame: ``body_flow.npy``, how each part of the body (neck and torso) moved from a
reference frame, measured by dense optical flow.

The shoulders (:mod:`pipeline.preprocess.body_pose`) say where the body is, not where its collar,
the hair over it or the folds of its clothes are: on the long-haired and gesturing speakers of
``docs/quality.md`` the training frame nearest a held-out frame in its shoulders predicts that
frame's body hardly better than the mean training frame, while the nearest in this flow comes
near the oracle that chooses with the ground truth (cause 16). This stage measures the body's
motion as a low-dimensional pose, as the tracker measures the head's: a torso conditioned on it
(``TrainConfig.torso_body_flow``, condition ``body_flow`` in :mod:`pipeline.models.conditions`)
places the body of a held-out frame from numbers measured on that frame, as the head is placed by
its tracked pose. It is not part of RAD-NeRF or ER-NeRF.

Method: the reference frame is the frame whose shoulders (MediaPipe Pose, ``body_pose.npy``) are
nearest their median over the clip (the middle frame when no shoulders were found). Its body
pixels (parsing labels neck 2 and torso 3, ``parsing/{i}.png``) are split by a ``grid x grid``
grid over their bounding box; a cell holding less than :data:`MIN_CELL_SHARE` of the body takes the
whole body instead (so every cell is a measured body motion). Every frame is compared with the
reference by OpenCV's Farneback dense optical flow (Farneback 2003, ``cv2.calcOpticalFlowFarneback``;
grey frames resized to ``size`` px on the longer side), and each cell's output is the mean flow
of its pixels, reference -> frame.

Output ``body_flow.npy``: float32 [N, grid * grid, 2] indexed by ``img_id``, the displacement
(x, y) of each cell in the frame's [-1, 1] coordinates (2 * pixels / width or height, the units of
the ``body_pose`` condition), row-major cells; 0 for the reference frame. Report ``body_flow.json``:
the reference frame, the body pixels per cell, whether a cell fell back to the whole body, the
flow's settings and the seconds. A frame set whose reference has no body pixels (a face-only crop)
gets zeros with a warning: a torso conditioned on it then sees a constant input.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.common.errors import InputError
from pipeline.common.io import atomic_path, atomic_write_json
from pipeline.common.log import run_main, setup_logging
from pipeline.preprocess.landmarks import list_frames, read_bgr

log = logging.getLogger("pipeline.preprocess.body_flow")

#: cells per side of the grid over the reference body's bounding box
GRID = 3
#: longer side (pixels) at which the flow is computed
SIZE = 256
#: a cell with less than this share of the reference's body pixels takes the whole body instead
MIN_CELL_SHARE = 0.02
#: parsing labels of the body (:func:`pipeline.preprocess.parsing.read_parsing`): neck, torso
BODY_LABELS = (2, 3)
#: ``cv2.calcOpticalFlowFarneback`` settings: pyramid scale, levels, window (px at ``SIZE``),
#: iterations, polynomial neighbourhood and its sigma. The window spans large, weakly textured
#: clothing; the 4 levels follow shifts of about 20 px at 256 px
FARNEBACK = {"pyr_scale": 0.5, "levels": 4, "winsize": 21, "iterations": 5, "poly_n": 7, "poly_sigma": 1.5,
             "flags": 0}


def reference_frame(shoulders: np.ndarray | None, n: int) -> int:
    """Index of the reference frame: the frame whose shoulders are nearest (Euclidean, frame
    units) their per-coordinate median over the clip; ``n // 2`` when ``shoulders`` is None or
    has no finite row.

    Args:
        shoulders: [N, 4] shoulder positions (x1, y1, x2, y2, any consistent unit) or None.
        n: number of frames (N).
    Raises:
        ValueError: ``n`` < 1.
    """
    if n < 1:
        raise ValueError("reference_frame needs at least one frame")
    if shoulders is None:
        return n // 2
    s = np.asarray(shoulders, np.float64).reshape(n, -1)
    ok = np.isfinite(s).all(1)
    if not ok.any():
        return n // 2
    d = np.linalg.norm(s - np.median(s[ok], 0), axis=1)
    d[~ok] = np.inf
    return int(np.argmin(d))


def body_cells(labels: np.ndarray, grid: int = GRID, min_share: float = MIN_CELL_SHARE
               ) -> tuple[list[np.ndarray], list[int], list[bool]]:
    """The cells of the body of one parsing map.

    Args:
        labels: [H, W] uint8 parsing labels (0 background, 1 head, 2 neck, 3 torso).
        grid: cells per side over the body's bounding box.
        min_share: a cell with less than this share of the body pixels is replaced by the whole body.
    Returns: ``(masks, pixels, whole)``: ``grid * grid`` bool [H, W] masks in row-major order, the
        body pixels each cell holds (before the fallback) and whether it fell back to the whole
        body. Empty lists when the map has no body pixel.
    """
    body = np.isin(labels, BODY_LABELS)
    if not body.any():
        return [], [], []
    rr, cc = np.nonzero(body)
    r0, r1, c0, c1 = rr.min(), rr.max() + 1, cc.min(), cc.max() + 1
    masks, pixels, whole = [], [], []
    for a in range(grid):
        for b in range(grid):
            m = np.zeros_like(body)
            m[r0 + (r1 - r0) * a // grid: r0 + (r1 - r0) * (a + 1) // grid,
              c0 + (c1 - c0) * b // grid: c0 + (c1 - c0) * (b + 1) // grid] = True
            m &= body
            pixels.append(int(m.sum()))
            small = m.sum() < min_share * body.sum()
            whole.append(bool(small))
            masks.append(body if small else m)
    return masks, pixels, whole


def grey(bgr: np.ndarray, size: int) -> np.ndarray:
    """[H, W, 3] BGR uint8 -> grey uint8 with the longer side ``size`` px (area resampling)."""
    import cv2

    h, w = bgr.shape[:2]
    s = size / max(h, w)
    g = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return cv2.resize(g, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def cell_flow(ref: np.ndarray, frame: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """Mean Farneback flow (reference -> frame) of each cell.

    Args:
        ref, frame: grey uint8 [h, w] images of the same size.
        masks: bool [h, w] cell masks (:func:`body_cells` at this size).
    Returns: [len(masks), 2] float32 displacement (x, y) in the frame's [-1, 1] units
        (``2 * px / w``, ``2 * px / h``).
    """
    import cv2

    fl = cv2.calcOpticalFlowFarneback(ref, frame, None, FARNEBACK["pyr_scale"], FARNEBACK["levels"],
                                      FARNEBACK["winsize"], FARNEBACK["iterations"], FARNEBACK["poly_n"],
                                      FARNEBACK["poly_sigma"], FARNEBACK["flags"])
    h, w = ref.shape
    scale = np.array([2.0 / w, 2.0 / h], np.float32)
    return np.stack([fl[m].mean(0) * scale for m in masks]).astype(np.float32)


def compute(read_frame: Callable[[int], np.ndarray], n: int, read_labels: Callable[[int], np.ndarray],
            shoulders: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """The body flow of a clip (see the module docstring).

    Args:
        read_frame: frame index -> BGR uint8 [H, W, 3] (``ori_imgs/{i}.jpg``).
        n: number of frames.
        read_labels: frame index -> uint8 [H', W'] parsing labels (any size; resized, nearest).
        shoulders: [n, 4] shoulder positions (``body_pose`` condition or MediaPipe x, y) or None.
    Returns: ``(flow, report)``: float32 [n, GRID * GRID, 2] and the report's dict.
    Raises:
        ValueError: ``n`` < 1.
    """
    import cv2

    t0 = time.perf_counter()
    ref_i = reference_frame(shoulders, n)
    ref = grey(read_frame(ref_i), SIZE)
    labels = cv2.resize(read_labels(ref_i), (ref.shape[1], ref.shape[0]), interpolation=cv2.INTER_NEAREST)
    masks, pixels, whole = body_cells(labels)
    out = np.zeros((n, GRID * GRID, 2), np.float32)
    if masks:
        for i in range(n):
            out[i] = cell_flow(ref, grey(read_frame(i), SIZE), masks)
            if i and i % 250 == 0:
                log.info("body flow: %d / %d frames", i, n)
    else:
        log.warning("the reference frame %d has no body pixels (parsing labels 2, 3); the body flow is zero", ref_i)
    report = {"frames": n, "reference_frame": ref_i, "grid": GRID, "size_px": SIZE,
              "cell_body_pixels": pixels, "cell_is_whole_body": whole,
              "backend": f"opencv {cv2.__version__} calcOpticalFlowFarneback", "farneback": FARNEBACK,
              "rms_displacement": [float(v) for v in np.sqrt((out ** 2).mean((0, 1)))],
              "seconds": round(time.perf_counter() - t0, 2)}
    return out, report


def main(argv=None) -> int:
    from pipeline.preprocess.body_pose import SHOULDERS
    from pipeline.preprocess.parsing import read_parsing

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", required=True, type=Path, help="ori_imgs folder ({i}.jpg)")
    ap.add_argument("--parsing", required=True, type=Path, help="parsing folder ({i}.png)")
    ap.add_argument("--body-pose", required=True, type=Path, help="body_pose.npy (chooses the reference frame)")
    ap.add_argument("--out", required=True, type=Path, help="body_flow.npy")
    ap.add_argument("--report", required=True, type=Path, help="body_flow.json")
    a = ap.parse_args(argv)
    setup_logging("pipeline.preprocess.body_flow")
    frames = list_frames(a.frames)
    if not frames:
        raise InputError(a.frames, "no frames (*.jpg)")
    try:
        lm = np.load(a.body_pose)
    except (OSError, ValueError) as exc:
        raise InputError(a.body_pose, f"cannot read ({exc})") from None
    if lm.ndim != 3 or len(lm) != len(frames) or lm.shape[1] <= max(SHOULDERS):
        raise InputError(a.body_pose, f"expected [{len(frames)}, 33, 4] landmarks, got shape {list(lm.shape)}")
    out, report = compute(lambda i: read_bgr(frames[i]), len(frames),
                          lambda i: read_parsing(a.parsing / f"{frames[i].stem}.png"),
                          lm[:, list(SHOULDERS), :2].reshape(len(lm), 4))
    with atomic_path(a.out) as tmp:
        np.save(tmp, out)
    atomic_write_json(a.report, report)
    log.info("body flow of %d frames (reference %d) in %.1f s; RMS displacement %s", len(frames),
             report["reference_frame"], report["seconds"], report["rms_displacement"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
