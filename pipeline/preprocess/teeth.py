"""TalkingGaussian extras: teeth masks ``teeth_mask/{i}.npy`` and parsing maps in TalkingGaussian's
colours ``parsing_tg/{i}.png`` (both estimates).

``python -m pipeline.preprocess.teeth --frames ori_imgs --mesh face_mesh.npy --out teeth_mask
--report teeth_mask.json [--parsing parsing --out-parsing parsing_tg] --cfg JSON``

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

**TalkingGaussian parsing** (``parsing_tg/{i}.png``, with ``--parsing``): TalkingGaussian's
``data_utils/face_parsing/test.py`` (lines 32-51, commit 9bd34f7) colours BiSeNet classes 1-13 as
head ``[255, 0, 0]``, the inner mouth (class 11) ``[100, 100, 100]``, neck (14-15) ``[0, 255, 0]``,
cloth (16) ``[0, 0, 255]`` and hair / hat (17-18) ``[0, 0, 0]``, background white, written with
``cv2.imwrite`` (so the bytes are B, G, R); ``scene/dataset_readers.py`` lines 200-204 reads
``parsing/{img_id}.png`` with PIL as RGB: face = ``B > 254, R = G = 0``, hair = all channels 0,
mouth = all channels 100. This stage recolours our parsing map (:func:`talkinggaussian_parsing`):
the head class splits into **hair** (head pixels outside the face: the face mesh's convex hull,
grown by :data:`FACE_GROW` of the face width, plus an ear ellipse on each side) and **face**; the
inner-lip polygon becomes the **inner mouth**; neck, torso and background keep their colours. It
is an estimate (no BiSeNet hair class): ears are kept by a fixed ellipse, side hair at ear height
counts as face.

Off by default (config ``preprocess.teeth_mask.enabled``): 300 masks of 512x512 are 79 MB.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from pipeline.common.config import StageConfig, parse_cfg_arg
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_dir, atomic_write_json
from pipeline.common.log import run_main, setup_logging

#: TalkingGaussian parsing colours as stored in the PNG (B, G, R = cv2.imwrite order of test.py)
TG_COLORS = {"background": (255, 255, 255), "face": (255, 0, 0), "neck": (0, 255, 0), "torso": (0, 0, 255),
             "hair": (0, 0, 0), "mouth": (100, 100, 100)}
#: the face region (for hair) = mesh hull grown by this fraction of the face width
FACE_GROW = 0.03
#: MediaPipe face-oval points beside the ears (subject's right = image left, subject's left)
EAR_POINTS = (234, 454)
#: MediaPipe face mesh: inner lip ring (upper lip left to right, then lower lip right to left)
INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)


@dataclass
class TeethConfig(StageConfig):
    """Config ``preprocess.teeth_mask``."""

    enabled: bool = False
    """Build teeth_mask/ with the dataset (TalkingGaussian); off by default. Read by the workflow:
    the command itself always writes the masks."""
    min_lightness: float = 0.85
    """Teeth pixels have CIE L* at least this fraction of the face's median L*."""
    max_chroma: float = 22.0
    """Teeth pixels have a*b* chroma at most this (OpenCV 8-bit Lab units)."""


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


def face_with_ears(mesh_xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """The face for TalkingGaussian's face/hair split: bool [height, width], the mesh's convex hull
    grown by ``FACE_GROW`` x the face width, plus an ellipse per ear (centred 0.08 face widths
    outside the face-oval points :data:`EAR_POINTS`, semi-axes 0.1 face width x 0.18 face height).

    Args:
        mesh_xy: [>=468, 2] MediaPipe face mesh x, y in pixels.
    """
    import cv2

    pts = mesh_xy[:468, :2]
    fw = float(np.ptp(pts[:, 0])) or 1.0
    fh = float(np.ptp(pts[:, 1])) or 1.0
    mask = face_region(mesh_xy, height, width).astype(np.uint8)
    grow = max(1, int(round(FACE_GROW * fw)))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    cx = float(pts[:, 0].mean())
    for k in EAR_POINTS:
        x, y = pts[k]
        side = 1.0 if x > cx else -1.0
        centre = (int(round(x + side * 0.08 * fw)), int(round(y)))
        cv2.ellipse(mask, centre, (max(1, int(0.1 * fw)), max(1, int(0.18 * fh))), 0, 0, 360, 1, -1)
    return mask.astype(bool)


def talkinggaussian_parsing(labels: np.ndarray, mesh_xy: np.ndarray) -> np.ndarray:
    """Our parsing labels recoloured in TalkingGaussian's scheme (module docstring).

    Args:
        labels: uint8 [H, W] from :func:`pipeline.preprocess.parsing.read_parsing` (0 background,
            1 head, 2 neck, 3 torso).
        mesh_xy: [>=468, 2] MediaPipe face mesh x, y in pixels.
    Returns:
        uint8 [H, W, 3] in B, G, R order (``cv2.imwrite`` it): :data:`TG_COLORS`.
    """
    h, w = labels.shape
    head = labels == 1
    face = head & face_with_ears(mesh_xy, h, w)
    out = np.empty((h, w, 3), np.uint8)
    out[...] = TG_COLORS["background"]
    out[labels == 2] = TG_COLORS["neck"]
    out[labels == 3] = TG_COLORS["torso"]
    out[head] = TG_COLORS["hair"]
    out[face] = TG_COLORS["face"]
    out[face & mouth_opening(mesh_xy, h, w)] = TG_COLORS["mouth"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", required=True, type=Path, help="ori_imgs folder ({i}.jpg)")
    ap.add_argument("--mesh", required=True, type=Path, help="face_mesh.npy [N, 478, 3] (pixels)")
    ap.add_argument("--out", required=True, type=Path, help="teeth_mask folder")
    ap.add_argument("--report", required=True, type=Path, help="teeth_mask.json")
    ap.add_argument("--parsing", type=Path, help="parsing folder ({i}.png, our colour code)")
    ap.add_argument("--out-parsing", type=Path, help="parsing_tg folder: the maps in TalkingGaussian's colours")
    ap.add_argument("--cfg", default="{}", help="JSON of config preprocess.teeth_mask")
    args = ap.parse_args(argv)
    if (args.parsing is None) != (args.out_parsing is None):
        ap.error("--parsing and --out-parsing go together")
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
    tg = write_tg_parsing(args.parsing, args.out_parsing, mesh) if args.parsing else None
    atomic_write_json(args.report, {
        "extractor": "estimate: MediaPipe inner-lip polygon + teeth appearance test (bright, grey)",
        "parsing_tg": tg,
        "estimate": True, "frames": len(frames), "frames_with_teeth": int((counts > 0).sum()),
        "mean_teeth_pixels": float(counts.mean()) if len(counts) else 0.0,
        "config": {f.name: getattr(cfg, f.name) for f in fields(cfg)},
    })
    log.info("%s: teeth masks for %d frames (estimate), teeth visible in %d", args.out, len(frames),
             int((counts > 0).sum()))
    return 0


def write_tg_parsing(parsing: Path, out: Path, mesh: np.ndarray) -> dict:
    """Write ``out/{i}.png`` (:func:`talkinggaussian_parsing`) for every ``parsing/{i}.png``.

    Returns:
        report dict: ``frames``, mean ``hair_fraction`` / ``mouth_pixels`` (of the head, per frame).
    Raises:
        InputError: a parsing frame count other than the mesh rows, or an unreadable map.
    """
    import cv2

    from pipeline.preprocess.landmarks import list_frames
    from pipeline.preprocess.parsing import read_parsing

    maps = list_frames(parsing, ".png")
    if len(maps) != len(mesh):
        raise InputError(parsing, f"{len(maps)} parsing maps but face_mesh.npy has {len(mesh)} frames")
    hair, mouth = [], []
    with atomic_dir(out) as tmp:
        for i, path in enumerate(maps):
            labels = read_parsing(path)
            img = talkinggaussian_parsing(labels, mesh[i, :, :2].astype(np.float64))
            cv2.imwrite(str(tmp / f"{i}.png"), img)
            is_hair = (img == TG_COLORS["hair"]).all(-1)
            hair.append(float(is_hair.sum()) / max(1, int((labels == 1).sum())))
            mouth.append(int((img == TG_COLORS["mouth"]).all(-1).sum()))
    return {"frames": len(maps), "colours_bgr": TG_COLORS, "mean_hair_fraction_of_head": float(np.mean(hair)),
            "mean_mouth_pixels": float(np.mean(mouth)),
            "note": "estimate: hair = head outside the mesh hull and ear ellipses; mouth = inner-lip polygon"}


if __name__ == "__main__":
    sys.exit(run_main(main))
