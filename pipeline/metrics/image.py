"""PSNR and SSIM of a generated frame against its ground-truth frame.

Both take RGB frames as float arrays in [0, 1] of shape [H, W, 3] (full frame, no mask) and give
one number per frame; the reported value is the mean over frames.
"""
from __future__ import annotations

import cv2
import numpy as np


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """Peak signal-to-noise ratio ``-10 log10(MSE)`` on [0, 1] RGB over the full frame (dB).

    Equal to ``skimage.metrics.peak_signal_noise_ratio(gt, pred, data_range=1)``. Identical frames
    give ``inf`` (MSE = 0): the mean over frames is then ``inf`` too and the JSON says "inf".

    Args:
        pred, gt: [H, W, 3] float in [0, 1].
    """
    mse = float(np.mean((np.asarray(pred, np.float64) - np.asarray(gt, np.float64)) ** 2))
    return float("inf") if mse == 0.0 else -10.0 * np.log10(mse)


_K1, _K2, _WIN = 0.01, 0.03, 7


def ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """Structural similarity, defined as ``skimage.metrics.structural_similarity(gt, pred,
    channel_axis=-1, data_range=1)`` (Wang et al. 2004 with scikit-image's defaults: 7x7 uniform
    window, sample covariance, K1=0.01, K2=0.03, mean over the frame without the 3-pixel border,
    then over channels).

    Computed with OpenCV box filters (about 5x faster than scikit-image; the border that the
    filters handle differently is excluded by the definition, so the values agree to 1e-9).

    Args:
        pred, gt: [H, W, 3] float in [0, 1] (at least 7x7).
    """
    x = np.asarray(pred, np.float64)
    y = np.asarray(gt, np.float64)
    n = _WIN * _WIN
    cov_norm = n / (n - 1.0)
    c1, c2 = _K1 ** 2, _K2 ** 2
    blur = lambda a: cv2.blur(a, (_WIN, _WIN), borderType=cv2.BORDER_REFLECT)  # noqa: E731
    ux, uy = blur(x), blur(y)
    vx = cov_norm * (blur(x * x) - ux * ux)
    vy = cov_norm * (blur(y * y) - uy * uy)
    vxy = cov_norm * (blur(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = (_WIN - 1) // 2
    return float(s[pad:-pad, pad:-pad].reshape(-1, s.shape[-1] if s.ndim == 3 else 1).mean(0).mean())
