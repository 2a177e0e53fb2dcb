"""dlib's 68-point shape predictor (iBUG 300-W), run on a face box given by the mesh.

Model: ``face_recognition_models.pose_predictor_model_location()`` (dlib's
shape_predictor_68_face_landmarks.dat; trained on iBUG 300-W, whose licence excludes commercial use).
"""
from __future__ import annotations

import numpy as np


def predictor_path() -> str:
    """Path of dlib's 68-point model shipped by ``face_recognition_models``."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources
        import face_recognition_models
    return face_recognition_models.pose_predictor_model_location()


def box_from_68(pts68: np.ndarray) -> tuple[float, float, float, float]:
    """dlib-style face box (left, top, right, bottom) in pixels from approximate 68 points.

    dlib's HOG detector box spans roughly the jaw horizontally and from the brows to the chin
    vertically; the bounding box of the 68 points matches it to a few percent.
    """
    x0, y0 = pts68.min(axis=0)
    x1, y1 = pts68.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


class Dlib68:
    """dlib 68-point predictor.

    Args:
        model: path of a dlib shape predictor ``.dat`` (default: the 68-point model).
    """

    def __init__(self, model: str | None = None):
        import dlib

        self._dlib = dlib
        self._pred = dlib.shape_predictor(model or predictor_path())

    def predict(self, gray: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """68 landmarks inside ``box``.

        Args:
            gray: uint8 [H, W] (or [H, W, 3] RGB) image.
            box: (left, top, right, bottom) pixels.
        Returns:
            float32 [68, 2] x, y pixels, iBUG order.
        """
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self._pred(np.ascontiguousarray(gray), rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
