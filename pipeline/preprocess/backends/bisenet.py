"""BiSeNet face parsing (Yu et al., ECCV 2018), 19 CelebAMask-HQ classes, mapped to head/neck/torso.

Network: the face-parsing BiSeNet with a ResNet-18 context path used by the anchors
(zllrunning/face-parsing.PyTorch ``model.py``, shipped in AD-NeRF / RAD-NeRF / ER-NeRF
``data_utils/face_parsing``; facexlib's ``parsing/bisenet.py`` has the same layers and parameter
names), written here from the paper's description with the same module names so that both
checkpoints load strictly:

* ``79999_iter.pth`` (the anchors'; manifest entry ``face_parsing_79999``);
* ``parsing_bisenet.pth`` (facexlib's; manifest entry ``parsing_bisenet``).

Inference as ER-NeRF ``face_parsing/test.py``: RGB resized to 512x512, ImageNet mean/std
normalisation, arg-max of the main output, resized back with nearest neighbour. Class map
(:data:`CLASS_TO_PART`): 1-13 (skin, brows, eyes, glasses, ears, earring, nose, mouth, lips) and
17-18 (hair, hat) -> head; 14-15 (neck, necklace) -> neck; 16 (cloth) -> torso; 0 -> background.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.preprocess.backends.selfie import BACKGROUND, HEAD, NECK, TORSO
from pipeline.preprocess.backends.selfie import BISENET_WEIGHTS as WEIGHTS_NAMES  # noqa: F401
from pipeline.preprocess.backends.selfie import find_bisenet_weights as find_weights

log = logging.getLogger(__name__)
N_CLASSES = 19
#: CelebAMask-HQ class -> part label (as ER-NeRF face_parsing/test.py)
CLASS_TO_PART = np.array([BACKGROUND] + [HEAD] * 13 + [NECK] * 2 + [TORSO] + [HEAD] * 2, dtype=np.uint8)
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    """conv (no bias) -> batch norm -> ReLU."""

    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs, projection shortcut when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        res = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        short = x if self.downsample is None else self.downsample(x)
        return F.relu(short + res)


def _layer(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))


class Resnet18(nn.Module):
    """ResNet-18 trunk returning the 1/8, 1/16 and 1/32 feature maps (128, 256, 512 channels)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _layer(64, 64, 1)
        self.layer2 = _layer(64, 128, 2)
        self.layer3 = _layer(128, 256, 2)
        self.layer4 = _layer(256, 512, 2)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        f8 = self.layer2(self.layer1(x))
        f16 = self.layer3(f8)
        return f8, f16, self.layer4(f16)


class AttentionRefinementModule(nn.Module):
    """ARM: features re-weighted by a global-pooled channel attention (BiSeNet Sec. 3.2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x):
        feat = self.conv(x)
        att = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * att


class ContextPath(nn.Module):
    """Context path: ResNet-18 + ARMs on the 1/16 and 1/32 maps + global context."""

    def __init__(self):
        super().__init__()
        self.resnet = Resnet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, 1, 1, 0)

    def forward(self, x):
        f8, f16, f32 = self.resnet(x)
        glob = self.conv_avg(F.adaptive_avg_pool2d(f32, 1))
        s32 = self.arm32(f32) + F.interpolate(glob, size=f32.shape[2:], mode="nearest")
        up32 = self.conv_head32(F.interpolate(s32, size=f16.shape[2:], mode="nearest"))
        s16 = self.arm16(f16) + up32
        up16 = self.conv_head16(F.interpolate(s16, size=f8.shape[2:], mode="nearest"))
        return f8, up16, up32


class FeatureFusionModule(nn.Module):
    """FFM: concatenation, conv, and a squeeze-excitation style re-weighting with a residual."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, 1, 1, 0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, fsp, fcp):
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        att = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat + feat * att


class BiSeNetOutput(nn.Module):
    """3x3 ConvBNReLU then a 1x1 classifier."""

    def __init__(self, cin: int, cmid: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cmid)
        self.conv_out = nn.Conv2d(cmid, n_classes, 1, bias=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face-parsing BiSeNet. Input float [B, 3, H, W] normalised RGB; output logits
    [B, n_classes, H, W] (main head, then the two auxiliary heads)."""

    def __init__(self, n_classes: int = N_CLASSES):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, n_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, n_classes)
        self.conv_out32 = BiSeNetOutput(128, 64, n_classes)

    def forward(self, x):
        size = x.shape[2:]
        f8, cp8, cp16 = self.cp(x)
        out = self.conv_out(self.ffm(f8, cp8))
        out16, out32 = self.conv_out16(cp8), self.conv_out32(cp16)
        up = [F.interpolate(o, size=size, mode="bilinear", align_corners=True) for o in (out, out16, out32)]
        return up[0], up[1], up[2]


def load_bisenet(path: str | Path, device: str = "cpu") -> BiSeNet:
    """Load a 19-class BiSeNet checkpoint (state dict; ``module.`` prefixes stripped; strict).

    Raises:
        RuntimeError: parameter names or shapes do not match (message names the file).
    """
    sd = torch.load(str(path), map_location=device, weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    net = BiSeNet(N_CLASSES)
    try:
        net.load_state_dict(sd)
    except RuntimeError as exc:
        raise RuntimeError(f"{path}: not a 19-class face-parsing BiSeNet checkpoint ({str(exc)[:300]})") from None
    return net.to(device).eval()


class BiSeNetParser:
    """Per-frame head/neck/torso labels from BiSeNet.

    Args:
        net: a loaded :class:`BiSeNet`.
        size: network input side (512 as the anchors).
    """

    def __init__(self, net: BiSeNet, size: int = 512, device: str = "cpu"):
        self.net, self.size, self.device = net, size, device

    @classmethod
    def from_weights_dir(cls, weights_dir: str | Path | None, device: str = "cpu") -> "BiSeNetParser":
        """Load the first present checkpoint of :data:`WEIGHTS_NAMES` (see :func:`find_weights`).

        Raises:
            WeightsMissing: none is present.
        """
        return cls(load_bisenet(find_weights(weights_dir), device), device=device)

    def classes(self, rgb: np.ndarray) -> np.ndarray:
        """CelebAMask-HQ class per pixel: uint8 [H, W] in 0..18 for a uint8 [H, W, 3] RGB image."""
        import cv2

        h, w = rgb.shape[:2]
        x = cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
        x = (x - np.array(_MEAN, np.float32)) / np.array(_STD, np.float32)
        with torch.no_grad():
            out = self.net(torch.from_numpy(x.transpose(2, 0, 1))[None].to(self.device))[0]
        cls = out[0].argmax(0).to("cpu", torch.uint8).numpy()
        return cv2.resize(cls, (w, h), interpolation=cv2.INTER_NEAREST)

    def labels(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [H, W] part labels (0 background, 1 head, 2 neck, 3 torso)."""
        return CLASS_TO_PART[self.classes(rgb)]
