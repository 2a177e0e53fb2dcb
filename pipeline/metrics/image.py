"""PSNR and SSIM of a generated frame against its ground-truth frame.

Both take RGB frames as float arrays in [0, 1] of shape [H, W, 3] (full frame, no mask) and give
one number per frame; the reported value is the mean over frames.
"""
from __future__ import annotations

import cv2
import numpy as np


def float_type(pred: np.ndarray, gt: np.ndarray) -> type:
    """The float type scikit-image computes a pair in (``skimage._shared.utils._supported_float_type``):
    ``np.float32`` when both arrays are float16/float32 (the metrics stage's frames: uint8 / 255 as
    float32), else ``np.float64``."""
    both = np.result_type(np.asarray(pred).dtype, np.asarray(gt).dtype)
    return np.float32 if both in (np.float16, np.float32) else np.float64


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """Peak signal-to-noise ratio ``-10 log10(MSE)`` on [0, 1] RGB over the full frame (dB).

    Equal to ``skimage.metrics.peak_signal_noise_ratio(gt, pred, data_range=1)`` on the same arrays:
    the difference and its square in the arrays' float type (:func:`float_type`, float32 for float32
    frames, as scikit-image does), the mean accumulated in float64. Identical frames give ``inf``
    (MSE = 0): the mean over frames is then ``inf`` too and the JSON says "inf".

    Args:
        pred, gt: [H, W, 3] float in [0, 1].
    """
    dt = float_type(pred, gt)
    mse = float(np.mean((np.asarray(pred, dt) - np.asarray(gt, dt)) ** 2, dtype=np.float64))
    return float("inf") if mse == 0.0 else -10.0 * np.log10(mse)


_K1, _K2, _WIN = 0.01, 0.03, 7
_BAND = 32  # output rows per band: keeps the band's temporaries in cache (about 2x faster than whole-frame)


def ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """Structural similarity, defined as ``skimage.metrics.structural_similarity(gt, pred,
    channel_axis=-1, data_range=1)`` (Wang et al. 2004 with scikit-image's defaults: 7x7 uniform
    window, sample covariance, K1=0.01, K2=0.03, mean over the frame without the 3-pixel border,
    then over channels).

    Computed with OpenCV box filters over bands of rows: the definition averages only pixels whose
    7x7 window lies inside the frame, so each band needs only a 3-row halo of real rows and no
    padding. The maps are in the arrays' float type as in scikit-image (:func:`float_type`: float32
    for float32 frames, the metrics stage's; float64 otherwise), the mean accumulated in float64.
    Values agree with scikit-image's on the same arrays to about 1e-14 in float64 and 1e-7 in
    float32 (its filters are SciPy's). On a 512x512 RGB frame 9.5 ms in float32 and 15 ms in
    float64, 4.9x and 6.1x faster than scikit-image (2-core Intel Xeon, 2026-12-05; docs/metrics.md).

    Args:
        pred, gt: [H, W, 3] (or [H, W]) float in [0, 1], the same shape, at least 7x7.

    Raises:
        ValueError: shapes differ or the frame is smaller than the 7x7 window.
    """
    dt = float_type(pred, gt)
    x = np.asarray(pred, dt)
    y = np.asarray(gt, dt)
    if x.shape != y.shape:
        raise ValueError(f"ssim: frame shapes differ: {x.shape} vs {y.shape}")
    h, w = x.shape[:2]
    if h < _WIN or w < _WIN:
        raise ValueError(f"ssim: frame {h}x{w} is smaller than the {_WIN}x{_WIN} window")
    pad = (_WIN - 1) // 2
    n = _WIN * _WIN
    cov_norm = n / (n - 1.0)
    c1, c2 = _K1 ** 2, _K2 ** 2
    crop = (slice(pad, -pad), slice(pad, -pad))

    def blur(a: np.ndarray) -> np.ndarray:  # 7x7 mean; only the band's interior is kept
        return cv2.blur(a, (_WIN, _WIN), borderType=cv2.BORDER_REFLECT)[crop]

    total = 0.0
    for r0 in range(pad, h - pad, _BAND):
        r1 = min(r0 + _BAND, h - pad)
        xb, yb = x[r0 - pad:r1 + pad], y[r0 - pad:r1 + pad]
        ux, uy = blur(xb), blur(yb)
        uxy, ux2, uy2 = ux * uy, ux * ux, uy * uy
        num = (2 * uxy + c1) * (2 * cov_norm * (blur(xb * yb) - uxy) + c2)
        den = (ux2 + uy2 + c1) * (cov_norm * (blur(xb * xb) + blur(yb * yb) - ux2 - uy2) + c2)
        total += float((num / den).sum(dtype=np.float64))
    channels = x.shape[2] if x.ndim == 3 else 1
    return total / ((h - 2 * pad) * (w - 2 * pad) * channels)
