"""TalkingGaussian extra: per-frame teeth masks ``teeth_mask/{i}.npy`` (an estimate).

``python -m pipeline.preprocess.teeth --frames ori_imgs --mesh face_mesh.npy --out teeth_mask
--report teeth_mask.json --cfg JSON``

TalkingGaussian reads ``teeth_mask/{img_id}.npy`` as a boolean [H, W] array
(``scene/dataset_readers.py`` lines 197-204: it is XOR-ed out of the face mask and added to the
mouth mask); its own ``data_utils/easyportrait/create_teeth_mask.py`` gets it from an EasyPortrait
segmentation network (class 7, teeth), whose weights are not available here. This stage
**estimates** it instead, and says so in its report:

1. **Mouth opening**: the polygon of MediaPipe's inner-lip ring (face mesh vertices
   :data:`INNER_LIPS`, the inner contour of ``FACEMESH_LIPS``), filled; a closed mouth gives an
   (almost) empty polygon and so no teeth.
2. **Teeth appearance test** inside it (CIE L*a*b*, OpenCV 8-bit scale): a pixel is teeth when
   it is bright, ``L >= min_lightness x`` the median ``L`` of the face (the mesh's convex hull), and
   nearly grey, chroma ``sqrt((a-128)^2 + (b-128)^2) <= max_chroma``. Tongue, lips and the dark
   mouth cavity fail one of the two.

Off by default (config ``preprocess.teeth_mask.enabled``): 300 masks of 512x512 are 79 MB.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from pipeline.common.config import parse_cfg_arg
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_dir, atomic_write_json
from pipeline.common.log import run_main, setup_logging

#: MediaPipe face mesh: inner lip ring (upper lip left to right, then lower lip right to left)
INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)


@dataclass
class TeethConfig:
    """Config ``preprocess.teeth_mask``."""

    enabled: bool = False
    """Build teeth_mask/ with the dataset (TalkingGaussian); off by default. Read by the workflow:
    the command itself always writes the masks."""
    min_lightness: float = 0.85
    """Teeth pixels have CIE L* at least this fraction of the face's median L*."""
    max_chroma: float = 22.0
    """Teeth pixels have a*b* chroma at most this (OpenCV 8-bit Lab units)."""

    @classmethod
    def from_dict(cls, d: dict | None) -> "TeethConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})


def mouth_opening(mesh_xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Filled inner-lip polygon: bool [height, width].

    Args:
        mesh_xy: [>=468, 2] MediaPipe face mesh x, y in pixels.
    """
    import cv2

    mask = np.zeros((height, width), np.uint8)
    poly = np.round(mesh_xy[list(INNER_LIPS), :2]).astype(np.int32)
    cv2.fillPoly(mask, [poly], 1)
    return mask.astype(bool)


def face_region(mesh_xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Convex hull of the face mesh: bool [height, width]."""
    import cv2

    mask = np.zeros((height, width), np.uint8)
    hull = cv2.convexHull(np.round(mesh_xy[:468, :2]).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def teeth_mask(img_bgr: np.ndarray, mesh_xy: np.ndarray, cfg: TeethConfig) -> np.ndarray:
    """Estimated teeth pixels of one frame (module docstring): bool [H, W].

    Args:
        img_bgr: uint8 [H, W, 3] (OpenCV order).
        mesh_xy: [>=468, 2] face mesh in pixels.
    """
    import cv2

    h, w = img_bgr.shape[:2]
    mouth = mouth_opening(mesh_xy, h, w)
    if not mouth.any():
        return mouth
    lab = cv2.cvtColor(img_bgr, cv2.COLOR_BGR2LAB).astype(np.float32)
    face = face_region(mesh_xy, h, w)
    ref = float(np.median(lab[..., 0][face])) if face.any() else 128.0
    chroma = np.hypot(lab[..., 1] - 128.0, lab[..., 2] - 128.0)
    return mouth & (lab[..., 0] >= cfg.min_lightness * ref) & (chroma <= cfg.max_chroma)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", required=True, type=Path, help="ori_imgs folder ({i}.jpg)")
    ap.add_argument("--mesh", required=True, type=Path, help="face_mesh.npy [N, 478, 3] (pixels)")
    ap.add_argument("--out", required=True, type=Path, help="teeth_mask folder")
    ap.add_argument("--report", required=True, type=Path, help="teeth_mask.json")
    ap.add_argument("--cfg", default="{}", help="JSON of config preprocess.teeth_mask")
    args = ap.parse_args(argv)
    log = setup_logging("pipeline.preprocess.teeth")
    cfg = TeethConfig.from_dict(parse_cfg_arg(args.cfg))
    from pipeline.preprocess.landmarks import list_frames, read_bgr
    from pipeline.preprocess.tracking import load_array

    frames = list_frames(args.frames)
    mesh = load_array(args.mesh, (478, 3), (468, 3))
    if len(mesh) != len(frames):
        raise InputError(args.mesh, f"{len(mesh)} mesh rows but {args.frames} has {len(frames)} frames")
    counts = []
    with atomic_dir(args.out) as tmp:
        for i, path in enumerate(frames):
            mask = teeth_mask(read_bgr(path), mesh[i, :, :2].astype(np.float64), cfg)
            np.save(tmp / f"{i}.npy", mask)
            counts.append(int(mask.sum()))
    counts = np.array(counts)
    atomic_write_json(args.report, {
        "extractor": "estimate: MediaPipe inner-lip polygon + teeth appearance test (bright, grey)",
        "estimate": True, "frames": len(frames), "frames_with_teeth": int((counts > 0).sum()),
        "mean_teeth_pixels": float(counts.mean()) if len(counts) else 0.0,
        "config": {f.name: getattr(cfg, f.name) for f in fields(cfg)},
    })
    log.info("%s: teeth masks for %d frames (estimate), teeth visible in %d", args.out, len(frames),
             int((counts > 0).sum()))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
