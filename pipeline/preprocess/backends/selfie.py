"""MediaPipe person (selfie) segmentation + face-mesh geometry: head / neck / torso / background.

Person mask: ``resources/models/selfie_segmentation.tflite`` (MediaPipe's selfie segmenter,
Apache-2.0) through ``mediapipe.tasks.python.vision.ImageSegmenter``, confidence > 0.5.

The split uses the 478-point mesh of the same frame (x, y pixels) and the face's skin colour
(:class:`MeshSplitter`): head above the jaw line plus the hair (:func:`hair_mask`, so that hair
hanging beside the face and neck belongs to the head as in BiSeNet's parsing, classes 1-13 and 17),
neck from the jaw down to where the skin ends (the collar), torso the rest of the person.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.common.errors import InputError
from pipeline.preprocess.backends.mediapipe_mesh import FACE_OVAL, MODELS_DIR, import_mediapipe

DEFAULT_MODEL = MODELS_DIR / "selfie_segmentation.tflite"

#: label values of the parsing maps (index into PARSING_CLASSES)
BACKGROUND, HEAD, NECK, TORSO = 0, 1, 2, 3
PARSING_CLASSES = ("background", "head", "neck", "torso")

#: BiSeNet face-parsing checkpoints (manifest entries), tried in this order
BISENET_WEIGHTS = ("face_parsing_79999", "parsing_bisenet")

_JAW_R, _JAW_L = 12, 24         # positions of vertices 397 and 172
_CHIN, _TOP = 152, 10


class PersonSegmenter:
    """MediaPipe selfie segmentation.

    Args:
        model_path: the ``.tflite`` model.
    Raises:
        InputError: the model file is missing.
    """

    def __init__(self, model_path: str | Path = DEFAULT_MODEL):
        import warnings

        import_mediapipe()
        from mediapipe.tasks.python import BaseOptions, vision

        model_path = Path(model_path)
        if not model_path.is_file():
            raise InputError(model_path, "MediaPipe selfie segmentation model not found (restore resources/models/)")
        opts = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(model_path)),
                                            running_mode=vision.RunningMode.IMAGE,
                                            output_confidence_masks=True, output_category_mask=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protobuf deprecation warning inside mediapipe
            self._seg = vision.ImageSegmenter.create_from_options(opts)

    def confidence(self, rgb: np.ndarray) -> np.ndarray:
        """Person probability.

        Args:
            rgb: uint8 [H, W, 3] RGB.
        Returns:
            float32 [H, W] in [0, 1].
        """
        mp = import_mediapipe()
        res = self._seg.segment(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
        return np.array(res.confidence_masks[-1].numpy_view(), dtype=np.float32)

    def close(self) -> None:
        """Release the MediaPipe graph."""
        self._seg.close()

    def __enter__(self) -> "PersonSegmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class SplitGeometry:
    """Parameters of the mesh-based head / neck / torso split."""

    side_margin: float = 0.35
    """head band on each side of the face oval, in face widths (hair volume, ears)."""
    neck_length: float = 0.45
    """deepest neck zone below the chin, in face heights (forehead vertex 10 to chin 152)."""
    neck_inset: float = 0.05
    """the neck zone's lower corners move inwards from the jaw angles by this many face widths."""
    skin_tolerance: float = 14.0
    """a pixel is skin-coloured when its Cr and Cb (YCrCb, 0-255) are within this of the face's median."""
    collar_skin_fraction: float = 0.35
    """the neck ends at the first row below the chin whose neck-zone pixels are less skin than this."""
    smooth_frames: int = 5
    """median of the collar depth over this many recent frames (temporal stability)."""
    hair: bool = True
    """add the hair below the jaw line to the head (:func:`hair_mask`); False: the jaw-line split only."""
    hair_max_depth: float = 0.5
    """hair is head down to this many face heights below the chin; hair lower down (on the chest)
    stays torso, as it moves with the shoulders more than with the head."""
    hair_roi_px: int = 128
    """longer side (pixels) of the downscaled head region the hair segmentation runs on."""
    hair_iterations: int = 2
    """GrabCut iterations of the hair segmentation."""
    hair_spread: float = 0.15
    """below the jaw line, hair reaches at most this many face widths beyond the head's extent
    on the jaw line (hair hangs from the head; dark clothes across the shoulders that GrabCut takes
    for hair do not count); negative: no limit."""


def hair_mask(rgb: np.ndarray, person: np.ndarray, mesh: np.ndarray, geom: SplitGeometry | None = None
              ) -> np.ndarray:
    """Hair pixels around the head of one frame: GrabCut (Rother et al., SIGGRAPH 2004;
    ``cv2.grabCut``) seeded by the face geometry.

    The segmentation runs on the head region (face-box sized margins, down to
    ``hair_max_depth`` face heights below the chin) downscaled to ``hair_roi_px``:

    * sure hair: person pixels above the forehead line (mesh vertex 10 + 0.1 face height), outside
      the dilated face oval, within 0.8 face widths of the face centre;
    * sure not hair: non-person pixels, the eroded face oval (skin) and a strip of neck below the
      chin centre (skin);
    * probably hair: the other person pixels within 1.1 face widths of the face centre; the rest of
      the region probably not.

    GrabCut's colour GMMs and graph cut decide the uncertain pixels; only connected hair regions
    that reach above the jaw angles (hair attached to the head) are kept.

    Args:
        rgb: uint8 [H, W, 3] frame (RGB).
        person: bool [H, W] person mask.
        mesh: [478, 2+] face mesh of the frame, x/y in pixels.
        geom: split parameters (``hair_max_depth``, ``hair_roi_px``, ``hair_iterations``).
    Returns:
        bool [H, W] hair pixels (a subset of ``person``); all False when no hair seed is visible
        (bald head, or a head leaving the frame).
    """
    import cv2

    g = geom or SplitGeometry()
    h, w = person.shape
    oval = mesh[FACE_OVAL, :2].astype(np.float64)
    fw = float(oval[:, 0].max() - oval[:, 0].min())
    fh = float(np.linalg.norm(mesh[_CHIN, :2] - mesh[_TOP, :2]))
    cxf = float(oval[:, 0].mean())
    top, chin = float(mesh[_TOP, 1]), float(mesh[_CHIN, 1])
    x0, x1 = int(max(0, cxf - 1.3 * fw)), int(min(w, cxf + 1.3 * fw))
    y0, y1 = int(max(0, top - 0.8 * fh)), int(min(h, chin + g.hair_max_depth * fh))
    out = np.zeros((h, w), bool)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return out
    s = min(1.0, g.hair_roi_px / max(x1 - x0, y1 - y0))
    small = cv2.resize(np.ascontiguousarray(rgb[y0:y1, x0:x1]), None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    pers = cv2.resize(person[y0:y1, x0:x1].astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST) > 0
    m = (mesh[:, :2] - [x0, y0]) * s
    face = np.zeros((sh, sw), np.uint8)
    cv2.fillPoly(face, [np.round(cv2.convexHull(m[FACE_OVAL].astype(np.float32))).astype(np.int32)], 1)
    yy, xx = np.mgrid[:sh, :sw]
    fws, fhs, cx, tp, ch = fw * s, fh * s, m[FACE_OVAL, 0].mean(), m[_TOP, 1], m[_CHIN, 1]
    near = np.abs(xx - cx)
    mask = np.full((sh, sw), cv2.GC_PR_BGD, np.uint8)
    mask[pers & (near < 1.1 * fws)] = cv2.GC_PR_FGD
    seed = pers & (cv2.dilate(face, np.ones((5, 5), np.uint8)) == 0) & (yy < tp + 0.1 * fhs) & (near < 0.8 * fws)
    mask[seed] = cv2.GC_FGD
    mask[~pers] = cv2.GC_BGD
    mask[cv2.erode(face, np.ones((3, 3), np.uint8)) > 0] = cv2.GC_BGD
    mask[pers & (yy > ch + 0.05 * fhs) & (yy < ch + 0.35 * fhs) & (near < 0.12 * fws)] = cv2.GC_BGD
    if (mask == cv2.GC_FGD).sum() < 10 or (mask == cv2.GC_BGD).sum() < 10:
        return out
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(small, mask, None, bgd, fgd, int(g.hair_iterations), cv2.GC_INIT_WITH_MASK)
    hair = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(hair)
    jaw = m[[172, 397], 1].mean()
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_TOP] < jaw
    hair = keep[comp].astype(np.uint8)
    out[y0:y1, x0:x1] = cv2.resize(hair, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST) > 0
    return out & person


class MeshSplitter:
    """Head / neck / torso labels from a person mask and the face mesh, frame after frame.

    * head = the filled face oval, plus the person pixels above the jaw line inside a band of
      ``side_margin`` face widths on either side of the face; the jaw line is the lower part of the
      face oval (jaw angle 172 -> chin 152 -> jaw angle 397), continued horizontally from the jaw
      angles (so ears, hair and the ear lobes beside the jaw are head); plus, with ``hair``, the
      hair below the jaw line found by :func:`hair_mask` (long hair beside the face and neck),
      except under the collar in the neck zone's columns (clothes: hair hangs beside the neck) and,
      below the lower jaw angle, beyond ``hair_spread`` face widths of the head's extent on that
      row (dark clothes across the shoulders taken for hair);
    * neck = person pixels below the jaw line, inside the zone bounded by the jaw, down to the collar:
      the first row below the chin whose zone pixels are mostly not skin-coloured (the face's own
      median chroma is the skin reference; the clothes' collar is where the skin ends), at most
      ``neck_length`` face heights below the chin; the collar depth is a running median over
      ``smooth_frames`` frames;
    * torso = the remaining person pixels; background = the rest.

    Args:
        geom: split parameters.
    """

    def __init__(self, geom: SplitGeometry | None = None):
        self.geom = geom or SplitGeometry()
        self._depths: list[float] = []

    def _collar_depth(self, rgb: np.ndarray, zone: np.ndarray, face: np.ndarray, chin_y: float,
                      max_depth: float) -> float:
        """Collar depth below the chin (pixels) for this frame, from skin chroma.

        Args:
            rgb: uint8 [H, W, 3]; zone: bool [H, W] neck-zone person pixels; face: bool [H, W] face oval.
        """
        import cv2

        g = self.geom
        fy, fx = np.nonzero(face)
        step = max(1, fy.size // 2000)
        ref = cv2.cvtColor(rgb[fy[::step], fx[::step]][None], cv2.COLOR_RGB2YCrCb)[0, :, 1:]
        ref = np.median(ref, axis=0).astype(np.int16)
        y0 = int(np.clip(chin_y, 0, zone.shape[0]))
        y1 = int(np.clip(chin_y + max_depth, 0, zone.shape[0]))
        cols = np.flatnonzero(zone[y0:y1].any(axis=0))
        if y1 <= y0 or cols.size == 0:
            return max_depth
        x0, x1 = cols[0], cols[-1] + 1
        ycc = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2YCrCb)
        skin = (np.abs(ycc[..., 1:].astype(np.int16) - ref) <= g.skin_tolerance).all(axis=-1)
        z = zone[y0:y1, x0:x1]
        n = z.sum(axis=1)
        frac = np.where(n > 0, (skin & z).sum(axis=1) / np.maximum(n, 1), 1.0)
        frac = np.convolve(frac, np.ones(5) / 5, mode="same")
        low = np.flatnonzero(frac < g.collar_skin_fraction)
        return float(low[0]) if low.size else max_depth

    def __call__(self, person: np.ndarray, mesh: np.ndarray, rgb: np.ndarray | None = None) -> np.ndarray:
        """Label map of one frame.

        Args:
            person: bool [H, W] person pixels.
            mesh: [478, 2+] mesh, x/y in pixels of the same image.
            rgb: uint8 [H, W, 3] the frame (for the collar); None: the neck goes down to
                ``neck_length`` face heights below the chin.
        Returns:
            uint8 [H, W] labels: 0 background, 1 head, 2 neck, 3 torso.
        """
        import cv2

        g = self.geom
        h, w = person.shape
        oval = mesh[FACE_OVAL, :2].astype(np.float64)
        fw = float(oval[:, 0].max() - oval[:, 0].min())
        fh = float(np.linalg.norm(mesh[_CHIN, :2] - mesh[_TOP, :2]))
        jaw = oval[_JAW_R:_JAW_L + 1]                  # jaw angle (image right) -> chin -> jaw angle (left)
        (xr, yr), (xl, yl) = jaw[0], jaw[-1]
        ext = g.side_margin * fw
        big = 4 * (h + w)                              # polygon corners far outside the image
        head_zone = np.vstack([jaw, [[xl - ext, yl], [xl - ext, -big], [xr + ext, -big], [xr + ext, yr]]])
        chin_y = float(mesh[_CHIN, 1])
        max_depth = g.neck_length * fh
        inset = g.neck_inset * fw
        x_in_r, x_in_l = xr - inset, xl + inset
        neck_zone = np.vstack([jaw, [[x_in_l, chin_y + max_depth], [x_in_r, chin_y + max_depth]]])

        zones = np.zeros((h, w), np.uint8)
        cv2.fillPoly(zones, [np.round(neck_zone).astype(np.int32)], NECK)
        cv2.fillPoly(zones, [np.round(head_zone).astype(np.int32)], HEAD)
        face = np.zeros((h, w), np.uint8)
        cv2.fillPoly(face, [np.round(cv2.convexHull(oval.astype(np.float32))).astype(np.int32)], 1)
        face = face > 0
        neck = person & (zones == NECK)
        collar = None
        if rgb is not None and face.any():
            self._depths = (self._depths + [self._collar_depth(rgb, neck, face, chin_y, max_depth)])
            self._depths = self._depths[-max(g.smooth_frames, 1):]
            collar = int(np.clip(chin_y + np.median(self._depths), 0, h))
            neck[collar:] = False

        labels = np.where(person, TORSO, BACKGROUND).astype(np.uint8)
        labels[neck] = NECK
        labels[(person & (zones == HEAD)) | face] = HEAD
        if g.hair and rgb is not None:
            hair = hair_mask(rgb, person, mesh, g)
            jaw_y = int(np.clip(round(max(yr, yl)), 0, h - 1))
            if collar is not None:
                # under the collar, in the neck's columns, are clothes: hair hangs beside the neck
                lo, hi = sorted((x_in_r, x_in_l))
                hair[collar:, int(np.clip(np.floor(lo), 0, w)):int(np.clip(np.ceil(hi) + 1, 0, w))] = False
            cols = np.flatnonzero((labels[jaw_y] == HEAD) | hair[jaw_y])
            if g.hair_spread >= 0 and cols.size:
                spread = g.hair_spread * fw
                keep = (np.arange(w) >= cols[0] - spread) & (np.arange(w) <= cols[-1] + spread)
                hair[jaw_y + 1:, ~keep] = False
            labels[hair] = HEAD
        return labels


def find_bisenet_weights(weights_dir: str | Path | None) -> Path:
    """First present BiSeNet checkpoint of :data:`BISENET_WEIGHTS` (kept here, free of torch, so
    that checking for the weights does not import torch).

    Raises:
        WeightsMissing: none is present; the reason lists what was looked for.
    """
    from pipeline.weights import WeightsMissing, require

    if weights_dir is None:
        raise WeightsMissing(BISENET_WEIGHTS[0], "no weights folder given")
    reasons = []
    for name in BISENET_WEIGHTS:
        try:
            return require(name, weights_dir)
        except WeightsMissing as exc:
            reasons.append(exc.reason)
    raise WeightsMissing(BISENET_WEIGHTS[0], "; ".join(reasons))
