"""Face detection for the probe and crop stages (MediaPipe BlazeFace, full-range model).

Why this detector: the full-range BlazeFace model (``model_selection=1``, shipped inside the
mediapipe 0.10.21 wheel) finds small faces (the Obama clip: about 110 px wide in 1280x720), where
the Face Landmarker's short-range detector finds none. The model sees a 192x192 letterboxed input,
so a wide image (or two faces side by side) shrinks each face; :func:`FaceDetector.detect` therefore
runs the model on overlapping square tiles (side = the image's short side, stride half of it) and
merges the boxes with non-maximum suppression.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Face:
    """One detected face: box in pixels of the image it was found in, and the detector score.

    ``x, y`` top-left corner, ``w, h`` size (pixels); ``score`` in [0, 1].
    """

    x: float
    y: float
    w: float
    h: float
    score: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def side(self) -> float:
        """The box's longer side (pixels): the face size the crop margin multiplies."""
        return max(self.w, self.h)

    def scaled(self, s: float) -> "Face":
        """The same box in an image ``s`` times larger."""
        return Face(self.x * s, self.y * s, self.w * s, self.h * s, self.score)

    def to_list(self) -> list[float]:
        """``[x, y, w, h, score]`` rounded for JSON."""
        return [round(self.x, 1), round(self.y, 1), round(self.w, 1), round(self.h, 1), round(self.score, 3)]


def _iou(a: Face, b: Face) -> float:
    ix = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def _overlap_small(a: Face, b: Face) -> float:
    """Intersection over the smaller box (a tile cutting a face yields a box inside the full one)."""
    ix = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    return ix * iy / max(1e-6, min(a.w * a.h, b.w * b.h))


def _tiles(length: int, side: int) -> list[int]:
    """Start offsets of overlapping windows of ``side`` covering ``length`` (stride side/2)."""
    if length <= side:
        return [0]
    n = math.ceil((length - side) / (side / 2)) + 1
    return sorted({round(i * (length - side) / (n - 1)) for i in range(n)})


class FaceDetector:
    """MediaPipe BlazeFace (full range) on overlapping square tiles, with NMS.

    Args:
        min_score: detection confidence threshold in [0, 1].
        max_side: images are downscaled so that the longer side is at most this before detection
            (boxes are returned in the input image's pixels).
    Reference: Bazarevsky et al., "BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs",
    2019; model ``face_detection_full_range_sparse.tflite`` of mediapipe 0.10.21.
    """

    def __init__(self, min_score: float = 0.5, max_side: int = 1280):
        import mediapipe as mp

        self._fd = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_score)
        self.max_side = max_side

    def close(self) -> None:
        """Releases the MediaPipe face detector."""
        self._fd.close()

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _detect_one(self, img: np.ndarray) -> list[Face]:
        h, w = img.shape[:2]
        res = self._fd.process(np.ascontiguousarray(img))
        faces = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            x0, y0 = max(0.0, b.xmin * w), max(0.0, b.ymin * h)
            x1, y1 = min(float(w), (b.xmin + b.width) * w), min(float(h), (b.ymin + b.height) * h)
            if x1 - x0 > 2 and y1 - y0 > 2:
                faces.append(Face(x0, y0, x1 - x0, y1 - y0, float(d.score[0])))
        return faces

    def detect(self, img: np.ndarray) -> list[Face]:
        """Detect faces in one image.

        Args:
            img: uint8 RGB [H, W, 3].
        Returns:
            faces sorted by box area, largest first; boxes in ``img`` pixels.
        """
        import cv2

        h, w = img.shape[:2]
        s = 1.0
        if max(h, w) > self.max_side:
            s = self.max_side / max(h, w)
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
            h, w = img.shape[:2]
        side = min(h, w)
        cands: list[Face] = []
        if max(h, w) > 1.2 * side:  # the whole frame too (a face larger than a tile)
            cands += self._detect_one(img)
        for y0 in _tiles(h, side):
            for x0 in _tiles(w, side):
                for f in self._detect_one(img[y0:y0 + side, x0:x0 + side]):
                    cands.append(Face(f.x + x0, f.y + y0, f.w, f.h, f.score))
        cands.sort(key=lambda f: f.score, reverse=True)
        kept: list[Face] = []
        for f in cands:
            if all(_iou(f, k) < 0.3 and _overlap_small(f, k) < 0.6 for k in kept):
                kept.append(f)
        kept.sort(key=lambda f: f.w * f.h, reverse=True)
        return [f.scaled(1 / s) for f in kept] if s != 1.0 else kept

    def detect_near(self, img: np.ndarray, prev: Face | None, context: float = 5.0) -> list[Face]:
        """Detect in a square region around a previous face (one model call), falling back to
        :meth:`detect` on the whole image when ``prev`` is None or nothing is found there.

        Args:
            img: uint8 RGB [H, W, 3].
            prev: the face found in an earlier frame (same pixel frame as ``img``).
            context: region side as a multiple of ``prev.side`` (clipped to the image).
        Returns:
            faces, largest first, in ``img`` pixels.
        """
        if prev is not None:
            h, w = img.shape[:2]
            side = int(min(h, w, max(64.0, context * prev.side)))
            x0 = int(min(max(0, prev.cx - side / 2), w - side))
            y0 = int(min(max(0, prev.cy - side / 2), h - side))
            found = self._detect_one(img[y0:y0 + side, x0:x0 + side])
            if found:
                found.sort(key=lambda f: f.w * f.h, reverse=True)
                return [Face(f.x + x0, f.y + y0, f.w, f.h, f.score) for f in found]
        return self.detect(img)


def count_people(faces: list[Face], min_rel_side: float = 0.4) -> int:
    """Faces that count as a second speaker: side at least ``min_rel_side`` of the largest face's.

    Small faces (a portrait in the background, a face on a TV overlay) are ignored.
    """
    if not faces:
        return 0
    big = max(f.side for f in faces)
    return sum(1 for f in faces if f.side >= min_rel_side * big)
