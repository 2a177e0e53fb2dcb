"""FAN 2DFAN4 68-point landmarks (Bulat & Tzimiropoulos, ICCV 2017), via the face_alignment package.

The anchors (AD-NeRF, RAD-NeRF, ER-NeRF ``data_utils/process.py``) run
``face_alignment.FaceAlignment(LandmarksType._2D)``: S3FD face detection, then 2DFAN4 on a 256x256
crop and the heatmaps' arg-max refined by a quarter pixel. Here the face box comes from the MediaPipe
mesh (no S3FD needed), and the network, the crop and the heatmap decoding are face_alignment's own
(``face_alignment.models.FAN``, ``utils.crop``, ``utils.get_preds_fromhm``), so the points match the
anchors' up to the detector's box.

Weights (manifest entry ``fan_2dfan4``): the state dict ``2DFAN4-11f355bf06.pth.tar`` that
face_alignment >= 1.4 downloads, or the TorchScript archive ``2DFAN4-cd938726ad.zip`` of
face_alignment 1.3 (same network), placed in the weights folder under the manifest's file name.
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: manifest entry of the 2DFAN4 weights
WEIGHTS_NAME = "fan_2dfan4"


def _strip_prefix(sd: dict) -> dict:
    """Unwrap ``{"state_dict": ...}`` and drop DataParallel's ``module.`` prefixes."""
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


def load_fan(path: str | Path, num_modules: int | None = None, device: str = "cpu"):
    """Load a FAN network from a state dict or a TorchScript archive.

    Args:
        path: ``.pth``/``.pth.tar`` state dict (face_alignment >= 1.4) or TorchScript ``.zip``/``.pt``
            (face_alignment 1.3).
        num_modules: stacked hourglasses (4 for 2DFAN4); None: counted from the state dict's
            ``m{k}.`` hourglass keys.
        device: torch device.
    Returns:
        a ``torch.nn.Module`` in eval mode mapping float [B, 3, 256, 256] RGB in [0, 1] to heatmaps
        [B, 68, 64, 64] (or a list of them, one per hourglass; the last is used).
    Raises:
        RuntimeError: the file is neither (message names the file).
    """
    import torch

    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            is_script = any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())
        if is_script:
            net = torch.jit.load(str(path), map_location=device)
            net.eval()
            return net
    from face_alignment.models import FAN

    sd = torch.load(str(path), map_location=device, weights_only=True)
    if not isinstance(sd, dict):
        raise RuntimeError(f"{path}: not a FAN state dict")
    sd = _strip_prefix(sd)
    if num_modules is None:
        num_modules = len({k.split(".")[0] for k in sd if k.split(".")[0][:1] == "m" and k.split(".")[0][1:].isdigit()})
    net = FAN(max(num_modules, 1))
    net.load_state_dict(sd)
    net.to(device).eval()
    return net


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
            ImportError: face_alignment is not installed.
        """
        from pipeline.weights import WeightsMissing, require

        if weights_dir is None:
            raise WeightsMissing(WEIGHTS_NAME, "no weights folder given")
        import face_alignment  # noqa: F401  (fail early with ImportError)

        path = require(WEIGHTS_NAME, weights_dir)
        log.info("FAN weights: %s", path)
        return cls(load_fan(path, device=device), device)

    def predict(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """68 points of the face in ``box``.

        Args:
            rgb: uint8 [H, W, 3] RGB image.
            box: (left, top, right, bottom) pixels, a face detector's box (here the mesh's).
        Returns:
            float32 [68, 2] x, y in pixels (iBUG order).

        Source: face_alignment ``FaceAlignment.get_landmarks_from_image`` (centre moved up by 0.12 of
        the box height, scale = (w + h) / 195, 256x256 crop, ``get_preds_fromhm``).
        """
        import torch
        from face_alignment.utils import CENTER_Y_OFFSET, REFERENCE_SCALE, crop, get_preds_fromhm

        x0, y0, x1, y1 = box
        center = np.array([x1 - (x1 - x0) / 2.0, y1 - (y1 - y0) / 2.0])
        center[1] -= (y1 - y0) * CENTER_Y_OFFSET
        scale = (x1 - x0 + y1 - y0) / REFERENCE_SCALE
        inp = crop(np.ascontiguousarray(rgb), center, scale).transpose(2, 0, 1).astype(np.float32) / 255.0
        with torch.no_grad():
            out = self.net(torch.from_numpy(inp)[None].to(self.device))
        if isinstance(out, (list, tuple)):
            out = out[-1]
        hm = out.detach().to("cpu", torch.float32).numpy()
        _, pts_img, _ = get_preds_fromhm(hm, center, scale)
        return pts_img.reshape(68, 2).astype(np.float32)
