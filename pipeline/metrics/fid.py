"""FID (Heusel et al. 2017) between generated and ground-truth frame sets, as pytorch-fid 0.3.0.

Features: Inception v3 pool3 (2048-d) with the TensorFlow FID weights
(``pt_inception-2015-12-05-6726825d.pth``, weights entry ``fid_inception``), inputs resized to
299x299 inside pytorch-fid's ``InceptionV3`` (normalize_input=True). The file is handed to
pytorch-fid by pointing ``torch.hub``'s checkpoint folder at a temporary folder holding a link to
it (no download happens: torch.hub loads a present file).

With fewer frames than 2048 the covariances are rank-deficient; the distance is computed anyway
exactly as pytorch-fid does (``calculate_frechet_distance``, with its eps offset when sqrtm is
singular), and ``n_frames`` is recorded next to the value.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.weights import file_sha256, require


def frechet_distance(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to two feature sets.

    ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` with sample means and covariances
    (``np.cov``, ddof 1), computed by ``pytorch_fid.fid_score.calculate_frechet_distance``.

    Args:
        feats1, feats2: [N, D] float features (N >= 2).
    """
    from pipeline.common.tvcompat import import_torchvision

    import_torchvision()
    from pytorch_fid.fid_score import calculate_frechet_distance

    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError("FID needs at least 2 frames per set")
    return float(calculate_frechet_distance(f1.mean(0), np.cov(f1, rowvar=False),
                                            f2.mean(0), np.cov(f2, rowvar=False)))


@contextlib.contextmanager
def hub_checkpoint(path: Path):
    """Temporarily make ``torch.hub`` find ``path`` as ``<hub>/checkpoints/<name>``."""
    old = torch.hub.get_dir()
    with tempfile.TemporaryDirectory(prefix="hub") as tmp:
        ck = Path(tmp) / "checkpoints"
        ck.mkdir()
        os.symlink(Path(path).resolve(), ck / Path(path).name)
        torch.hub.set_dir(tmp)
        try:
            yield
        finally:
            torch.hub.set_dir(old)


class InceptionFeatures:
    """pytorch-fid's FID Inception (pool3, 2048-d), weights from the weights folder.

    Raises:
        WeightsMissing: ``pt_inception-2015-12-05-6726825d.pth`` absent (or fails the hash check).
    """

    backend = "pytorch-fid 0.3.0 InceptionV3 pool3 (2048-d)"

    def __init__(self, weights_dir, verify: bool | None = None, device: str = "cpu"):
        from pipeline.common.tvcompat import import_torchvision

        import_torchvision()
        from pytorch_fid.inception import InceptionV3

        path = require("fid_inception", weights_dir, verify=verify)
        self.weights_sha256 = file_sha256(path)
        with hub_checkpoint(path):
            model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], use_fid_inception=True)
        self.model = model.eval().to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """[B, H, W, 3] float RGB in [0, 1] -> [B, 2048] float64 pool3 features."""
        x = torch.from_numpy(np.ascontiguousarray(frames, np.float32)).permute(0, 3, 1, 2).to(self.device)
        out = self.model(x)[0]
        return out.squeeze(-1).squeeze(-1).cpu().double().numpy()
