"""FAN 2DFAN4 68-point landmarks (Bulat & Tzimiropoulos, "How far are we from solving the 2D & 3D
Face Alignment problem?", ICCV 2017), as run by the anchors.

The anchors (AD-NeRF, RAD-NeRF, ER-NeRF ``data_utils/process.py``) call the face_alignment package:
S3FD face box, a 256x256 crop around it (centre moved up by 0.12 box heights, side
200 * (w + h) / 195 pixels), the 4-hourglass FAN, arg-max of the last 64x64 heatmaps moved a quarter
pixel towards the larger neighbour, mapped back to the image. This module implements the same
network (parameter names as face_alignment's ``models/fan.py``, so its checkpoints load strictly),
crop and decoding; the face box comes from the MediaPipe mesh (no S3FD). The face_alignment package
itself is not a dependency: its metadata requires ``opencv-python``, which clashes with the
project's ``opencv-python-headless``. Differences to face_alignment: the crop is one affine warp
(face_alignment cuts an integer box then resizes) and the points keep sub-pixel precision
(face_alignment truncates them to integers); both are below one pixel.

Weights (manifest entry ``fan_2dfan4``): the state dict ``2DFAN4-11f355bf06.pth.tar`` of
face_alignment >= 1.4, or the TorchScript archive ``2DFAN4-cd938726ad.zip`` of face_alignment 1.3
(same network) under the manifest's file name.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: manifest entry of the 2DFAN4 weights
WEIGHTS_NAME = "fan_2dfan4"
CROP = 256                 # network input side
HEATMAP = 64               # heatmap side
REFERENCE_SCALE = 195.0    # face_alignment: scale = (w + h) / 195 for an S3FD-like box
CENTER_Y_OFFSET = 0.12     # face_alignment: crop centre moved up by this many box heights


def torch_device() -> str:
    """``"cuda"`` when a GPU is visible to torch, else ``"cpu"`` (torch imported here)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _build_network(num_modules: int):
    """The FAN module (constructed lazily so that importing this file does not import torch)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def conv3x3(cin, cout):
        return nn.Conv2d(cin, cout, 3, 1, 1, bias=False)

    class ConvBlock(nn.Module):
        """Pre-activation residual block: three 3x3 convs (C/2, C/4, C/4) concatenated."""

        def __init__(self, cin: int, cout: int):
            super().__init__()
            self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv3x3(cin, cout // 2)
            self.bn2, self.conv2 = nn.BatchNorm2d(cout // 2), conv3x3(cout // 2, cout // 4)
            self.bn3, self.conv3 = nn.BatchNorm2d(cout // 4), conv3x3(cout // 4, cout // 4)
            self.downsample = (nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(True), nn.Conv2d(cin, cout, 1, bias=False))
                               if cin != cout else None)

        def forward(self, x):
            o1 = self.conv1(F.relu(self.bn1(x)))
            o2 = self.conv2(F.relu(self.bn2(o1)))
            o3 = self.conv3(F.relu(self.bn3(o2)))
            res = x if self.downsample is None else self.downsample(x)
            return torch.cat([o1, o2, o3], 1) + res

    class HourGlass(nn.Module):
        """Recursive hourglass of ``depth`` levels (modules b1_, b2_, b2_plus_, b3_ per level)."""

        def __init__(self, depth: int, features: int):
            super().__init__()
            self.depth = depth
            for level in range(depth, 0, -1):
                self.add_module(f"b1_{level}", ConvBlock(features, features))
                self.add_module(f"b2_{level}", ConvBlock(features, features))
                if level == 1:
                    self.add_module("b2_plus_1", ConvBlock(features, features))
                self.add_module(f"b3_{level}", ConvBlock(features, features))

        def _level(self, level: int, x):
            up = self._modules[f"b1_{level}"](x)
            low = self._modules[f"b2_{level}"](F.avg_pool2d(x, 2, stride=2))
            low = self._level(level - 1, low) if level > 1 else self._modules["b2_plus_1"](low)
            low = self._modules[f"b3_{level}"](low)
            return up + F.interpolate(low, scale_factor=2, mode="nearest")

        def forward(self, x):
            return self._level(self.depth, x)

    class FAN(nn.Module):
        """Stacked hourglasses; input float [B, 3, 256, 256] RGB in [0, 1]; output a list of
        [B, 68, 64, 64] heatmaps, one per hourglass."""

        def __init__(self, n: int):
            super().__init__()
            self.num_modules = n
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3)
            self.bn1 = nn.BatchNorm2d(64)
            self.conv2, self.conv3, self.conv4 = ConvBlock(64, 128), ConvBlock(128, 128), ConvBlock(128, 256)
            for i in range(n):
                self.add_module(f"m{i}", HourGlass(4, 256))
                self.add_module(f"top_m_{i}", ConvBlock(256, 256))
                self.add_module(f"conv_last{i}", nn.Conv2d(256, 256, 1))
                self.add_module(f"bn_end{i}", nn.BatchNorm2d(256))
                self.add_module(f"l{i}", nn.Conv2d(256, 68, 1))
                if i < n - 1:
                    self.add_module(f"bl{i}", nn.Conv2d(256, 256, 1))
                    self.add_module(f"al{i}", nn.Conv2d(68, 256, 1))

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            x = self.conv4(self.conv3(F.avg_pool2d(self.conv2(x), 2, stride=2)))
            prev, outs = x, []
            for i in range(self.num_modules):
                ll = self._modules[f"top_m_{i}"](self._modules[f"m{i}"](prev))
                ll = F.relu(self._modules[f"bn_end{i}"](self._modules[f"conv_last{i}"](ll)))
                out = self._modules[f"l{i}"](ll)
                outs.append(out)
                if i < self.num_modules - 1:
                    prev = prev + self._modules[f"bl{i}"](ll) + self._modules[f"al{i}"](out)
            return outs

    return FAN(num_modules)


def _strip_prefix(sd: dict) -> dict:
    """Unwrap ``{"state_dict": ...}`` and drop DataParallel's ``module.`` prefixes."""
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


def load_fan(path: str | Path, num_modules: int | None = None, device: str = "cpu"):
    """Load a FAN network from a state dict or a TorchScript archive.

    Args:
        path: ``.pth``/``.pth.tar`` state dict (face_alignment >= 1.4) or TorchScript archive
            (face_alignment 1.3).
        num_modules: stacked hourglasses (4 for 2DFAN4); None: counted from the state dict's ``m{k}.``
            keys.
        device: torch device.
    Returns:
        a ``torch.nn.Module`` in eval mode: float [B, 3, 256, 256] RGB in [0, 1] -> heatmaps
        [B, 68, 64, 64] (or a list of them, one per hourglass; the last is used).
    Raises:
        RuntimeError: the file holds neither (message names the file).
    """
    import torch

    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            is_script = any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
        if is_script:
            net = torch.jit.load(str(path), map_location=device)
            return net.eval()
    sd = torch.load(str(path), map_location=device, weights_only=True)
    if not isinstance(sd, dict):
        raise RuntimeError(f"{path}: not a FAN state dict")
    sd = _strip_prefix(sd)
    if num_modules is None:
        heads = {k.split(".")[0] for k in sd}
        num_modules = sum(1 for h in heads if h[:1] == "m" and h[1:].isdigit())
    net = _build_network(max(num_modules, 1))
    try:
        net.load_state_dict(sd)
    except RuntimeError as exc:
        raise RuntimeError(f"{path}: not a FAN checkpoint ({str(exc)[:300]})") from None
    return net.to(device).eval()


def crop_transform(box: tuple[float, float, float, float]) -> tuple[np.ndarray, float]:
    """Crop geometry of face_alignment for a face box.

    Returns:
        (centre [2] pixels, side of the square crop in pixels = 200 * scale).
    """
    x0, y0, x1, y1 = box
    center = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0 - (y1 - y0) * CENTER_Y_OFFSET])
    return center, 200.0 * (x1 - x0 + y1 - y0) / REFERENCE_SCALE


def crop_face(rgb: np.ndarray, center: np.ndarray, side: float) -> np.ndarray:
    """The network's input: the square of ``side`` pixels around ``center``, resized to 256x256.

    One affine warp (bilinear, black outside the image) where face_alignment's ``utils.crop`` cuts
    an integer box and then resizes it; the -0.5 matches that box's 1-based corners. Checked against
    face_alignment's ``crop`` on real frames in ``tests/test_landmarks.py``.

    Args:
        rgb: uint8 [H, W, 3] image.
        center, side: from :func:`crop_transform` (pixels).
    Returns:
        uint8 [256, 256, 3] crop.
    """
    import cv2

    s = CROP / side
    m = np.array([[s, 0, CROP / 2 - s * center[0] - 0.5], [0, s, CROP / 2 - s * center[1] - 0.5]], np.float64)
    return cv2.warpAffine(np.ascontiguousarray(rgb), m, (CROP, CROP), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def decode_heatmaps(hm: np.ndarray, center: np.ndarray, side: float) -> np.ndarray:
    """Landmarks from heatmaps (face_alignment ``get_preds_fromhm``, without its integer truncation).

    Args:
        hm: [68, 64, 64] heatmaps.
        center, side: from :func:`crop_transform`.
    Returns:
        float32 [68, 2] x, y image pixels.
    """
    k, h, w = hm.shape
    flat = hm.reshape(k, -1).argmax(axis=1)
    py, px = flat // w, flat % w
    pts = np.stack([px, py], axis=1).astype(np.float64) + 0.5       # pixel centres
    inner = (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1)
    j = np.flatnonzero(inner)
    dx = hm[j, py[j], px[j] + 1] - hm[j, py[j], px[j] - 1]
    dy = hm[j, py[j] + 1, px[j]] - hm[j, py[j] - 1, px[j]]
    pts[j, 0] += 0.25 * np.sign(dx)
    pts[j, 1] += 0.25 * np.sign(dy)
    return (pts * side / w + center - side / 2.0).astype(np.float32)


class FanLandmarks:
    """2DFAN4 68-point predictor on a given face box.

    Args:
        net: a network from :func:`load_fan`.
        device: torch device.
    """

    def __init__(self, net, device: str = "cpu"):
        self.net = net
        self.device = device

    @classmethod
    def from_weights_dir(cls, weights_dir: str | Path | None, device: str = "cpu") -> "FanLandmarks":
        """Load the manifest's 2DFAN4 weights from ``weights_dir``.

        Raises:
            WeightsMissing: the file is absent (``weights_dir`` None counts as absent).
        """
        from pipeline.weights import WeightsMissing, require

        if weights_dir is None:
            raise WeightsMissing(WEIGHTS_NAME, "no weights folder given")
        path = require(WEIGHTS_NAME, weights_dir)
        log.info("FAN weights: %s", path)
        return cls(load_fan(path, device=device), device)

    def predict(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """68 points of the face in ``box``.

        Args:
            rgb: uint8 [H, W, 3] RGB image.
            box: (left, top, right, bottom) pixels of a detector-style face box (here the mesh's).
        Returns:
            float32 [68, 2] x, y in pixels (iBUG order).
        """
        import torch

        center, side = crop_transform(box)
        inp = crop_face(rgb, center, side)
        x = torch.from_numpy(inp.transpose(2, 0, 1).astype(np.float32) / 255.0)[None].to(self.device)
        with torch.no_grad():
            out = self.net(x)
        if isinstance(out, (list, tuple)):
            out = out[-1]
        return decode_heatmaps(out[0].detach().to("cpu", torch.float32).numpy(), center, side)
