"""CPBD: cumulative probability of blur detection (Narvekar & Karam 2011), the ``cpbd`` package.

Computed on the greyscale frame (higher is sharper); the value is the mean over frames. cpbd 1.0.7
imports ``scipy.ndimage.imread`` (removed from SciPy): a stand-in is set before the import.
"""
from __future__ import annotations

import numpy as np


def _cpbd_module():
    import scipy.ndimage

    if not hasattr(scipy.ndimage, "imread"):
        def _imread(*_a, **_k):  # only the cpbd CLI uses it
            raise NotImplementedError("scipy.ndimage.imread was removed from SciPy")

        scipy.ndimage.imread = _imread
    import cpbd

    return cpbd


BACKEND = "cpbd 1.0.7 (greyscale)"


def cpbd(rgb: np.ndarray) -> float:
    """CPBD sharpness in [0, 1] of an [H, W, 3] RGB frame (uint8, or float in [0, 1]).

    The frame is converted to 8-bit greyscale (ITU-R 601 luma, as OpenCV) first, the input range
    cpbd's thresholds assume.
    """
    import cv2

    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    grey = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(_cpbd_module().compute(grey))
