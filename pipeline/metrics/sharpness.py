"""CPBD: cumulative probability of blur detection (Narvekar & Karam 2011), as the ``cpbd`` package.

Computed on the greyscale frame (higher is sharper); the value is the mean over frames. cpbd 1.0.7
imports ``scipy.ndimage.imread`` (removed from SciPy): a stand-in is set before the import.

:func:`cpbd` runs the package's definition with its two pixel loops vectorised
(:func:`edge_widths` for ``marziliano_method``, :func:`sharpness_from_widths` for
``_calculate_sharpness_metric``); the edge maps are the package's own (skimage ``canny``, its
Octave ``sobel``). The result equals ``cpbd.compute`` bit for bit
(``tests/test_metrics.py::test_cpbd_fast_path_equals_the_cpbd_package``) and takes about 0.05 s
instead of 0.3 s of CPU for a 512x512 frame.
"""
from __future__ import annotations

import math

import numpy as np


def _cpbd_module():
    import scipy.ndimage

    if not hasattr(scipy.ndimage, "imread"):
        def _imread(*_a, **_k):  # only the cpbd CLI uses it
            raise NotImplementedError("scipy.ndimage.imread was removed from SciPy")

        scipy.ndimage.imread = _imread
    import cpbd

    return cpbd


def _cpbd_compute():
    """The ``cpbd.compute`` module (the package's ``__init__`` shadows it with the function)."""
    import sys

    _cpbd_module()
    return sys.modules["cpbd.compute"]


BACKEND = "cpbd 1.0.7 (greyscale)"
#: most pixels the Marziliano edge-width walk goes to each side (cpbd: ``range(100 + 1)``)
MAX_MARGIN = 100


def _walk(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, step: int, stop_if_diff_le: bool) -> np.ndarray:
    """Width on one side of each edge pixel: cpbd's ``for margin in range(101)`` walk from
    ``col + step`` outwards along the row, stopping at the image border or where the intensity
    step ``image[outer] - image[inner]`` is <= 0 (``stop_if_diff_le``) or >= 0; ``margin + 1``.

    Args: image [H, W] float64; rows, cols [N] int (edge pixels). Returns [N] int64 in [1, 101].
    """
    m = np.arange(MAX_MARGIN + 1)
    inner = cols[:, None] + step * (1 + m)[None, :]          # [N, 101]
    outer = inner + step
    width = image.shape[1]
    valid = (outer >= 0) & (outer < width)
    r = rows[:, None]
    diff = image[r, np.clip(outer, 0, width - 1)] - image[r, np.clip(inner, 0, width - 1)]
    stop = ~valid | ((diff <= 0) if stop_if_diff_le else (diff >= 0))
    first = np.where(stop.any(axis=1), stop.argmax(axis=1), MAX_MARGIN)  # no stop: the loop ends at 100
    return first + 1


def edge_widths(edges: np.ndarray, image: np.ndarray) -> np.ndarray:
    """cpbd's ``marziliano_method`` without pixel loops: the width of every vertical edge.

    Args:
        edges: [H, W] Sobel edge map (nonzero = edge; cpbd.octave.sobel).
        image: [H, W] float64 greyscale in [0, 255].
    Returns:
        [H, W] float64: 0 off the edges and at edges whose gradient angle does not quantise to 0 or
        +-180 degrees; else the Marziliano edge width (left + right walk, 2..202 pixels).
    Source: ``cpbd/compute.py`` 1.0.7 ``marziliano_method`` (same angles with ``math.atan2``, same
    quantisation, same walks), checked equal in the tests.
    """
    out = np.zeros(image.shape)
    gy, gx = np.gradient(image)
    # cpbd's angle map is nonzero where gx != 0 unless atan2 gives +-0 (gy == 0, gx > 0), and 90
    # where gx == 0 and gy == pi/2; with no nonzero angle it returns zeros
    if not (np.any((gx != 0) & ~((gy == 0) & (gx > 0))) or np.any((gx == 0) & (gy == math.pi / 2))):
        return out
    inner = np.zeros(image.shape, bool)
    inner[1:-1, 1:-1] = edges[1:-1, 1:-1] == 1
    rows, cols = np.nonzero(inner)
    if len(rows) == 0:
        return out
    angle = np.array([math.atan2(y, x) * (180 / math.pi) if x != 0 else (90.0 if y == math.pi / 2 else 0.0)
                      for y, x in zip(gy[rows, cols].tolist(), gx[rows, cols].tolist())], dtype=np.float64)
    q = 45 * np.round(angle / 45)
    for sel, rising in ((q == 180) | (q == -180), False), (q == 0, True):
        r, c = rows[sel], cols[sel]
        if len(r) == 0:
            continue
        # rising (angle 0): left walk stops where the intensity stops falling leftwards (diff >= 0),
        # right walk where it stops rising (diff <= 0); falling (angle 180): the reverse
        left = _walk(image, r, c, -1, stop_if_diff_le=not rising)
        right = _walk(image, r, c, +1, stop_if_diff_le=rising)
        out[r, c] = left + right
    return out


def sharpness_from_widths(image: np.ndarray, edges: np.ndarray, widths: np.ndarray) -> float:
    """cpbd's ``_calculate_sharpness_metric`` with the per-edge histogram loop as one ``bincount``.

    Args: image [H, W] float64; edges [H, W] Canny edge map (edge blocks); widths [H, W] from
    :func:`edge_widths`. Returns the CPBD value in [0, 1] (share of edges with blur probability
    <= 0.63 over the 64x64 edge blocks). Source: ``cpbd/compute.py`` 1.0.7.
    """
    C = _cpbd_compute()
    bh, bw = C.BLOCK_HEIGHT, C.BLOCK_WIDTH
    hist = np.zeros(101)
    total = 0
    for i in range(image.shape[0] // bh):
        for j in range(image.shape[1] // bw):
            rows, cols = slice(bh * i, bh * (i + 1)), slice(bw * j, bw * (j + 1))
            if not C.is_edge_block(edges[rows, cols], C.THRESHOLD):
                continue
            w = np.rot90(np.flipud(widths[rows, cols]), 3)
            w = w[w != 0]
            jnb = C.WIDTH_JNB[C.get_block_contrast(image[rows, cols])]
            p = 1 - np.exp(-abs(w / jnb) ** C.BETA)
            hist += np.bincount(np.round(p * 100).astype(np.int64), minlength=101)
            total += len(p)
    if total > 0:
        hist = hist / total
    return np.sum(hist[:64])


def cpbd(rgb: np.ndarray) -> float:
    """CPBD sharpness in [0, 1] of an [H, W, 3] RGB frame (uint8, or float in [0, 1]).

    The frame is converted to 8-bit greyscale (ITU-R 601 luma, as OpenCV) first, the input range
    cpbd's thresholds assume. Equal to ``cpbd.compute`` of that greyscale frame.
    """
    import cv2

    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    grey = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cpbd_grey(grey))


def cpbd_grey(grey: np.ndarray) -> float:
    """CPBD of an [H, W] float64 greyscale image in [0, 255]: ``cpbd.compute`` with the loops
    vectorised (:func:`edge_widths`, :func:`sharpness_from_widths`)."""
    _cpbd_module()
    from cpbd.octave import sobel
    from skimage.feature import canny

    image = grey.astype(np.float64)
    return float(sharpness_from_widths(image, canny(image), edge_widths(sobel(image), image)))
