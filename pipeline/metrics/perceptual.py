"""LPIPS (Zhang et al. 2018) with the AlexNet backbone, as ``lpips.LPIPS(net="alex")`` v0.1.

The linear calibration layers ship in the ``lpips`` wheel; the AlexNet ImageNet backbone
(torchvision ``alexnet-owt-7be5be79.pth``, weights entry ``lpips_alexnet``) comes from the weights
folder: the network is built with ``pnet_rand=True`` (no download) and the backbone's
``features.*`` tensors are loaded into LPIPS's slices. Without the file the metric is n/a.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.weights import file_sha256, require

#: AlexNet ``features`` index -> LPIPS slice (lpips.pretrained_networks.alexnet)
_SLICES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 2, 5: 3, 6: 3, 7: 3, 8: 4, 9: 4, 10: 5, 11: 5}


class LPIPS:
    """Full-frame LPIPS distance (lower is better).

    Args:
        weights_dir: folder holding ``alexnet-owt-7be5be79.pth``.
        verify: check the file against the manifest sha256 (None: on unless $TALKING_NERF_VERIFY_WEIGHTS=0).
    Raises:
        WeightsMissing: the backbone is absent (or fails the hash check).
    """

    backend = "lpips 0.1.4 LPIPS(net='alex', version='0.1')"

    def __init__(self, weights_dir, verify: bool | None = None, device: str = "cpu"):
        from pipeline.common.tvcompat import import_torchvision

        import_torchvision()
        import lpips

        path = require("lpips_alexnet", weights_dir, verify=verify)
        self.weights_sha256 = file_sha256(path)
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        state = torch.load(path, map_location="cpu", weights_only=True)
        feats = {k: v for k, v in state.items() if k.startswith("features.")}
        if not feats:
            raise ValueError(f"{path}: no 'features.*' tensors (not a torchvision AlexNet state dict)")
        mapped = {}
        for key, val in feats.items():
            _, idx, kind = key.split(".")
            mapped[f"slice{_SLICES[int(idx)]}.{idx}.{kind}"] = val
        missing, unexpected = model.net.load_state_dict(mapped, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: AlexNet tensors do not fit LPIPS (missing {missing}, unexpected {unexpected})")
        self.model = model.eval().to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, pred: np.ndarray, gt: np.ndarray) -> float:
        """LPIPS of two [H, W, 3] float RGB frames in [0, 1] (mapped to [-1, 1])."""
        def t(a):
            x = torch.from_numpy(np.ascontiguousarray(a, np.float32)).permute(2, 0, 1)[None]
            return (x * 2.0 - 1.0).to(self.device)

        return float(self.model(t(pred), t(gt)).item())
