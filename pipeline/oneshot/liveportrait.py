"""LivePortrait inference (backend ``liveportrait``, method ``livenerf``), our own PyTorch modules.

Guo et al., "LivePortrait: Efficient Portrait Animation with Stitching and Retargeting Control",
arXiv 2407.03168 (KwaiVGI/LivePortrait, MIT). The networks, with the shapes for a 256x256 input:

=====================  ==================================  =========================================
module (weight file)   input                               output
=====================  ==================================  =========================================
F appearance feature   image [B, 3, 256, 256] in [0, 1]    feature volume f_s [B, 32, 16, 64, 64]
M motion extractor     image [B, 3, 256, 256]              canonical keypoints kp [B, 63] (21 x 3),
  (ConvNeXt-V2 tiny)                                       pitch / yaw / roll bins [B, 66] each,
                                                           translation t [B, 3], expression exp
                                                           [B, 63], scale [B, 1]
W warping module       f_s, x_s, x_d [B, 21, 3]            warped feature [B, 256, 64, 64],
  (dense motion                                            occlusion [B, 1, 64, 64], deformation
  hourglass)                                               [B, 16, 64, 64, 3]
G SPADE generator      warped feature [B, 256, 64, 64]     image [B, 3, 512, 512] in [0, 1]
S stitching MLP        [x_s, x_d] flattened [B, 126]       keypoint offsets [B, 63] + (tx, ty) [B, 2]
=====================  ==================================  =========================================

Head pose angles: ``deg = 3 * sum_i softmax(bins)_i * i - 97.5`` (66 bins). Keypoints (paper eq. 2,
row vectors): ``x = s * (x_c @ R + exp) + t`` with ``R = (R_z R_y R_x)^T`` from pitch (x), yaw (y),
roll (z) and t's z set to 0. Relative motion from the driving anchor frame ``a`` (the paper's
"relative" mode): ``R_new = (R_d,i R_d,a^T) R_s``, ``exp_new = exp_s + exp_d,i - exp_d,a``,
``s_new = s_s * s_d,i / s_d,a``, ``t_new = t_s + t_d,i - t_d,a``; then the stitching MLP adds its
offsets to ``x_d`` (first 63 outputs per keypoint, last two to x and y of every keypoint), and
``G(W(f_s; x_s, x_d))`` renders the 512x512 crop, pasted back into the photo with a feathered mask.

Crops come from our MediaPipe mesh (no InsightFace): a square around the mesh's bounding box, side
``2.3 x`` its longer side for the photo (``2.2 x`` for driving frames), centre moved up by 0.125
(0.1) of the side, rotated so that the eye corners are level (LivePortrait's crop_config values).

Weight files (``pipeline/weights/manifest.yaml``, entries ``liveportrait_*``) are loaded by
:meth:`LivePortrait.from_weights_dir` with strict state-dict checks; a missing file raises
:class:`pipeline.weights.WeightsMissing` whose reason names ``python -m pipeline.weights fetch``.
Written from the paper and the public repository's formulas and state-dict layout (no code copied).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NAME = "liveportrait"
DESCRIPTION = "LivePortrait (Guo et al. 2024) implicit keypoints, warping, SPADE generator, stitching"

NUM_KP = 21
NUM_BINS = 66
INPUT = 256


# ----------------------------------------------------------------------------------- blocks
def _conv_bn(cls_conv, cls_bn, cin, cout, k=3, p=1):
    return cls_conv(cin, cout, kernel_size=k, padding=p), cls_bn(cout, affine=True)


class ConvNormAct2d(nn.Module):
    """conv 3x3 -> BatchNorm -> ReLU (or LeakyReLU); keys ``conv``, ``norm``."""

    def __init__(self, cin: int, cout: int, leaky: bool = False):
        super().__init__()
        self.conv, self.norm = _conv_bn(nn.Conv2d, nn.BatchNorm2d, cin, cout)
        self.leaky = leaky

    def forward(self, x):
        y = self.norm(self.conv(x))
        return F.leaky_relu(y) if self.leaky else F.relu(y)


class Down2d(ConvNormAct2d):
    """ConvNormAct2d then 2x2 average pooling."""

    def forward(self, x):
        return F.avg_pool2d(super().forward(x), 2)


class Down3d(nn.Module):
    """conv 3x3x3 -> BatchNorm3d -> ReLU -> average pooling (1, 2, 2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv, self.norm = _conv_bn(nn.Conv3d, nn.BatchNorm3d, cin, cout)

    def forward(self, x):
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), (1, 2, 2))


class Up3d(nn.Module):
    """nearest upsampling (1, 2, 2) -> conv 3x3x3 -> BatchNorm3d -> ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv, self.norm = _conv_bn(nn.Conv3d, nn.BatchNorm3d, cin, cout)

    def forward(self, x):
        return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=(1, 2, 2)))))


class Res3d(nn.Module):
    """pre-activation residual block: x + conv2(relu(bn2(conv1(relu(bn1(x))))))."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.norm1 = _conv_bn(nn.Conv3d, nn.BatchNorm3d, c, c)
        self.conv2, self.norm2 = _conv_bn(nn.Conv3d, nn.BatchNorm3d, c, c)

    def forward(self, x):
        return x + self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))


class _Encoder(nn.Module):
    def __init__(self, base: int, cin: int, n: int, cmax: int):
        super().__init__()
        ch = [cin] + [min(cmax, base * 2 ** (i + 1)) for i in range(n)]
        self.down_blocks = nn.ModuleList(Down3d(ch[i], ch[i + 1]) for i in range(n))

    def forward(self, x):
        feats = [x]
        for blk in self.down_blocks:
            feats.append(blk(feats[-1]))
        return feats


class _Decoder(nn.Module):
    def __init__(self, base: int, cin: int, n: int, cmax: int):
        super().__init__()
        blocks = []
        for i in reversed(range(n)):
            width = min(cmax, base * 2 ** (i + 1))
            blocks.append(Up3d(width if i == n - 1 else 2 * width, min(cmax, base * 2 ** i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = base + cin
        self.conv, self.norm = _conv_bn(nn.Conv3d, nn.BatchNorm3d, self.out_filters, self.out_filters)

    def forward(self, feats):
        feats = list(feats)
        y = feats.pop()
        for blk in self.up_blocks:
            y = torch.cat([blk(y), feats.pop()], 1)
        return F.relu(self.norm(self.conv(y)))


class Hourglass3d(nn.Module):
    """3-D U-Net (keys ``encoder.down_blocks.i``, ``decoder.up_blocks.i``, ``decoder.conv/norm``)."""

    def __init__(self, base: int, cin: int, n: int, cmax: int):
        super().__init__()
        self.encoder = _Encoder(base, cin, n, cmax)
        self.decoder = _Decoder(base, cin, n, cmax)
        self.out_filters = self.decoder.out_filters

    def forward(self, x):
        return self.decoder(self.encoder(x))


def coordinate_grid(d: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """[d, h, w, 3] (x, y, z) coordinates in [-1, 1] (x right, y down, z into the image)."""
    lin = [torch.linspace(-1.0, 1.0, s, dtype=like.dtype, device=like.device) for s in (d, h, w)]
    z, y, x = torch.meshgrid(*lin, indexing="ij")
    return torch.stack([x, y, z], -1)


# ----------------------------------------------------------------------------------- F
class AppearanceFeatureExtractor(nn.Module):
    """F: image [B, 3, H, W] -> feature volume [B, 32, 16, H/4, W/4]."""

    def __init__(self, base: int = 64, n_down: int = 2, cmax: int = 512, channels: int = 32, depth: int = 16,
                 n_res: int = 6):
        super().__init__()
        self.first = ConvNormAct2d(3, base)
        ch = [min(cmax, base * 2 ** i) for i in range(n_down + 1)]
        self.down_blocks = nn.ModuleList(Down2d(ch[i], ch[i + 1]) for i in range(n_down))
        self.second = nn.Conv2d(ch[-1], cmax, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(n_res):
            self.resblocks_3d.add_module(f"3dr{i}", Res3d(channels))
        self.channels, self.depth = channels, depth

    def forward(self, img):
        y = self.first(img)
        for blk in self.down_blocks:
            y = blk(y)
        y = self.second(y)
        b, _, h, w = y.shape
        return self.resblocks_3d(y.view(b, self.channels, self.depth, h, w))


# ----------------------------------------------------------------------------------- M
class _LayerNorm(nn.Module):
    """LayerNorm over channels of [B, C, H, W] (``channels_first``) or the last axis."""

    def __init__(self, dim: int, channels_first: bool = False, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.channels_first, self.eps = channels_first, eps

    def forward(self, x):
        if not self.channels_first:
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * (x - mu) / torch.sqrt(var + self.eps) + self.bias[:, None, None]


class _GRN(nn.Module):
    """Global response normalisation (ConvNeXt-V2, Woo et al. 2023) on [B, H, W, C]."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x):
        g = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        return self.gamma * (x * (g / (g.mean(-1, keepdim=True) + 1e-6))) + self.beta + x


class _CNBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = _LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = _GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(y))))
        return x + y.permute(0, 3, 1, 2)


class _ConvNeXtV2(nn.Module):
    """ConvNeXt-V2 tiny trunk (depths 3-3-9-3, widths 96-768) with LivePortrait's heads."""

    def __init__(self, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), num_kp: int = NUM_KP, bins: int = NUM_BINS):
        super().__init__()
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4), _LayerNorm(dims[0], True))]
            + [nn.Sequential(_LayerNorm(dims[i], True), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
               for i in range(3)])
        self.stages = nn.ModuleList(nn.Sequential(*[_CNBlock(dims[i]) for _ in range(depths[i])]) for i in range(4))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        c = dims[-1]
        self.fc_kp, self.fc_exp = nn.Linear(c, 3 * num_kp), nn.Linear(c, 3 * num_kp)
        self.fc_scale, self.fc_t = nn.Linear(c, 1), nn.Linear(c, 3)
        self.fc_pitch, self.fc_yaw, self.fc_roll = nn.Linear(c, bins), nn.Linear(c, bins), nn.Linear(c, bins)

    def forward(self, x):
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        f = self.norm(x.mean((-2, -1)))
        return {k: getattr(self, f"fc_{k}")(f) for k in ("kp", "pitch", "yaw", "roll", "t", "exp", "scale")}


class MotionExtractor(nn.Module):
    """M: image [B, 3, 256, 256] -> {kp, exp: [B, 63]; pitch, yaw, roll: [B, 66]; t: [B, 3]; scale: [B, 1]}."""

    def __init__(self, num_kp: int = NUM_KP):
        super().__init__()
        self.detector = _ConvNeXtV2(num_kp=num_kp)

    def forward(self, img):
        return self.detector(img)


# ----------------------------------------------------------------------------------- W
def gaussian_heatmaps(kp: torch.Tensor, d: int, h: int, w: int, variance: float = 0.01) -> torch.Tensor:
    """[B, K, d, h, w] Gaussians exp(-|g - kp|^2 / (2 variance)) at keypoints kp [B, K, 3]."""
    g = coordinate_grid(d, h, w, kp)[None, None]
    return torch.exp(-0.5 * ((g - kp[:, :, None, None, None, :]) ** 2).sum(-1) / variance)


class DenseMotion(nn.Module):
    """Dense 3-D deformation from K sparse keypoint motions (+ identity) and an occlusion map."""

    def __init__(self, num_kp: int = NUM_KP, feature_channel: int = 32, base: int = 32, n_blocks: int = 5,
                 cmax: int = 1024, depth: int = 16, compress: int = 4):
        super().__init__()
        self.hourglass = Hourglass3d(base, (num_kp + 1) * (compress + 1), n_blocks, cmax)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters * depth, 1, kernel_size=7, padding=3)
        self.num_kp = num_kp

    def forward(self, feature, kp_driving, kp_source):
        feature = F.relu(self.norm(self.compress(feature)))
        b, c, d, h, w = feature.shape
        k = self.num_kp
        ident = coordinate_grid(d, h, w, kp_source)[None, None].expand(b, 1, d, h, w, 3)
        # for each keypoint, where a driving-space point came from: grid - x_d + x_s
        shifted = ident - kp_driving[:, :, None, None, None, :] + kp_source[:, :, None, None, None, :]
        motions = torch.cat([ident, shifted], 1)                                     # [B, K+1, d, h, w, 3]
        rep = feature[:, None].expand(b, k + 1, c, d, h, w).reshape(b * (k + 1), c, d, h, w)
        deformed = F.grid_sample(rep, motions.reshape(b * (k + 1), d, h, w, 3), align_corners=False)
        deformed = deformed.view(b, k + 1, c, d, h, w)
        heat = gaussian_heatmaps(kp_driving, d, h, w) - gaussian_heatmaps(kp_source, d, h, w)
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], 1)[:, :, None]
        pred = self.hourglass(torch.cat([heat, deformed], 2).view(b, -1, d, h, w))
        mask = F.softmax(self.mask(pred), 1)                                          # [B, K+1, d, h, w]
        deformation = (motions * mask[..., None]).sum(1)                              # [B, d, h, w, 3]
        occlusion = torch.sigmoid(self.occlusion(pred.reshape(b, -1, h, w)))
        return deformation, occlusion


class WarpingModule(nn.Module):
    """W: (f_s [B, 32, 16, 64, 64], x_d, x_s [B, 21, 3]) -> {out [B, 256, 64, 64], occlusion_map
    [B, 1, 64, 64], deformation [B, 16, 64, 64, 3]}."""

    def __init__(self, num_kp: int = NUM_KP, base: int = 64, cmax: int = 512, n_down: int = 2, channels: int = 32):
        super().__init__()
        self.dense_motion_network = DenseMotion(num_kp, channels)
        width = base * 2 ** n_down
        self.third = ConvNormAct2d(cmax, width, leaky=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)

    def forward(self, feature_3d, kp_driving, kp_source):
        deformation, occlusion = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        warped = F.grid_sample(feature_3d, deformation, align_corners=False)
        b, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.view(b, c * d, h, w))) * occlusion
        return {"out": out, "occlusion_map": occlusion, "deformation": deformation}


# ----------------------------------------------------------------------------------- G
class SPADE(nn.Module):
    """Spatially-adaptive normalisation (Park et al. 2019): IN(x) * (1 + gamma(seg)) + beta(seg)."""

    def __init__(self, channels: int, label_channels: int, hidden: int = 128):
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(channels, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x, seg):
        a = self.mlp_shared(F.interpolate(seg, size=x.shape[2:], mode="nearest"))
        return self.param_free_norm(x) * (1 + self.mlp_gamma(a)) + self.mlp_beta(a)


class SPADEResBlock(nn.Module):
    """Residual block with SPADE norms and spectrally normalised convolutions."""

    def __init__(self, cin: int, cout: int, label_channels: int):
        super().__init__()
        sn = nn.utils.spectral_norm
        mid = min(cin, cout)
        self.conv_0 = sn(nn.Conv2d(cin, mid, 3, padding=1))
        self.conv_1 = sn(nn.Conv2d(mid, cout, 3, padding=1))
        self.norm_0, self.norm_1 = SPADE(cin, label_channels), SPADE(mid, label_channels)
        self.learned_shortcut = cin != cout
        if self.learned_shortcut:
            self.conv_s = sn(nn.Conv2d(cin, cout, 1, bias=False))
            self.norm_s = SPADE(cin, label_channels)

    def forward(self, x, seg):
        skip = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        y = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        return skip + self.conv_1(F.leaky_relu(self.norm_1(y, seg), 0.2))


class SPADEGenerator(nn.Module):
    """G: warped feature [B, 256, 64, 64] -> image [B, 3, 512, 512] in [0, 1] (x4 upsampling, then
    a pixel shuffle x2)."""

    def __init__(self, cin: int = 256, out_channels: int = 64):
        super().__init__()
        self.fc = nn.Conv2d(cin, 2 * cin, 3, padding=1)
        for i in range(6):
            setattr(self, f"G_middle_{i}", SPADEResBlock(2 * cin, 2 * cin, cin))
        self.up_0 = SPADEResBlock(2 * cin, cin, cin)
        self.up_1 = SPADEResBlock(cin, out_channels, cin)
        self.conv_img = nn.Sequential(nn.Conv2d(out_channels, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, feature):
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = self.up_0(F.interpolate(x, scale_factor=2), feature)
        x = self.up_1(F.interpolate(x, scale_factor=2), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))


# ----------------------------------------------------------------------------------- S
class MLP(nn.Module):
    """Linear-ReLU stack (keys ``mlp.0``, ``mlp.2``, ...): the stitching / retargeting networks."""

    def __init__(self, cin: int = 2 * 3 * NUM_KP, hidden=(128, 128, 64), cout: int = 3 * NUM_KP + 2):
        super().__init__()
        sizes = [cin, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(sizes[-1], cout))

    def forward(self, x):
        return self.mlp(x)


# ----------------------------------------------------------------------------------- geometry
def bins_to_degrees(bins: torch.Tensor) -> torch.Tensor:
    """Head angle in degrees from 66 bin logits [B, 66]: 3 * E[bin index] - 97.5 -> [B, 1]."""
    idx = torch.arange(bins.shape[1], dtype=bins.dtype, device=bins.device)
    return (F.softmax(bins, 1) * idx).sum(1, keepdim=True) * 3 - 97.5


def rotation(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """[B, 3, 3] = (R_z(roll) R_y(yaw) R_x(pitch))^T from angles in degrees [B, 1] (keypoints are
    row vectors multiplied on the right)."""
    p, y, r = (torch.deg2rad(a.reshape(-1)) for a in (pitch, yaw, roll))
    o, z = torch.ones_like(p), torch.zeros_like(p)
    rx = torch.stack([o, z, z, z, p.cos(), -p.sin(), z, p.sin(), p.cos()], 1).view(-1, 3, 3)
    ry = torch.stack([y.cos(), z, y.sin(), z, o, z, -y.sin(), z, y.cos()], 1).view(-1, 3, 3)
    rz = torch.stack([r.cos(), -r.sin(), z, r.sin(), r.cos(), z, z, z, o], 1).view(-1, 3, 3)
    return (rz @ ry @ rx).transpose(1, 2)


def keypoint_info(raw: dict) -> dict:
    """M's raw outputs -> kp [B, 21, 3], exp [B, 21, 3], R [B, 3, 3], t [B, 3], scale [B, 1]."""
    b = raw["kp"].shape[0]
    return {"kp": raw["kp"].view(b, -1, 3), "exp": raw["exp"].view(b, -1, 3), "t": raw["t"], "scale": raw["scale"],
            "R": rotation(bins_to_degrees(raw["pitch"]), bins_to_degrees(raw["yaw"]), bins_to_degrees(raw["roll"]))}


def transform_keypoints(kp, R, exp, scale, t) -> torch.Tensor:
    """Paper eq. 2: ``s * (x_c @ R + exp) + t`` with t's z ignored; [B, 21, 3]."""
    x = scale[:, :, None] * (kp @ R + exp)
    return torch.cat([x[..., :2] + t[:, None, :2], x[..., 2:]], -1)


def relative_keypoints(src: dict, drv: dict, anchor: dict) -> torch.Tensor:
    """Driving keypoints for the source from the motion of ``drv`` relative to ``anchor`` (dicts of
    :func:`keypoint_info`)."""
    R = drv["R"] @ anchor["R"].transpose(1, 2) @ src["R"]
    exp = src["exp"] + drv["exp"] - anchor["exp"]
    scale = src["scale"] * drv["scale"] / anchor["scale"]
    t = src["t"] + drv["t"] - anchor["t"]
    return transform_keypoints(src["kp"], R, exp, scale, t)


def stitch(mlp: MLP, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
    """x_d plus the stitching offsets: the MLP sees [x_s, x_d] flattened [B, 126] and returns 63
    keypoint offsets and a shared (tx, ty)."""
    b, k, _ = x_s.shape
    delta = mlp(torch.cat([x_s.reshape(b, -1), x_d.reshape(b, -1)], 1))
    out = x_d + delta[:, :3 * k].view(b, k, 3)
    return torch.cat([out[..., :2] + delta[:, None, 3 * k:3 * k + 2], out[..., 2:]], -1)


def crop_transform(mesh: np.ndarray, scale: float, vy: float, size: int = 512) -> np.ndarray:
    """2x3 affine from image pixels to a ``size`` square crop around a face mesh [478, >=2]: centre of
    the mesh's bounding box moved by ``vy`` x side (negative: up), side ``scale`` x the box's longer
    side, rotated so that the outer eye corners (33, 263) are level."""
    pts = np.asarray(mesh, np.float64)[:, :2]
    lo, hi = pts.min(0), pts.max(0)
    side = scale * float(max(hi - lo))
    eye = pts[263] - pts[33]
    ang = math.atan2(eye[1], eye[0])
    c = (lo + hi) / 2
    up = np.array([math.sin(ang), -math.cos(ang)])       # the face's "up" in image coordinates
    c = c - vy * side * up
    s = size / side
    cos, sin = math.cos(-ang) * s, math.sin(-ang) * s
    m = np.array([[cos, -sin, 0.0], [sin, cos, 0.0]])
    m[:, 2] = size / 2 - m[:, :2] @ c
    return m


def paste_mask(size: int = 512) -> np.ndarray:
    """Feathered [size, size] float32 mask in [0, 1] for pasting a crop back: 1 inside, falling to
    0 over the outer 10% of the crop (a smooth rounded square)."""
    r = np.linspace(-1, 1, size)
    d = np.maximum(np.abs(r)[:, None], np.abs(r)[None, :])
    return np.clip((0.95 - d) / 0.1, 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------------- the engine
#: manifest entry -> module attribute of :class:`LivePortrait`
WEIGHT_FILES = {
    "liveportrait_appearance_feature_extractor": "appearance",
    "liveportrait_motion_extractor": "motion",
    "liveportrait_warping_module": "warping",
    "liveportrait_spade_generator": "generator",
    "liveportrait_stitching": "stitching",
}


def _strip(state: dict) -> dict:
    return {k.removeprefix("module."): v for k, v in state.items()}


class LivePortrait:
    """The five networks in eval mode on ``device``; :meth:`animate` drives a photo.

    Build with :meth:`from_weights_dir` (the real files) or :meth:`from_state_dicts`.
    """

    def __init__(self, device: str = "cpu"):
        self.device = torch.device(device)
        self.appearance = AppearanceFeatureExtractor()
        self.motion = MotionExtractor()
        self.warping = WarpingModule()
        self.generator = SPADEGenerator()
        self.stitching = MLP()
        self.weights_sha256: dict[str, str] = {}

    def modules(self) -> dict[str, nn.Module]:
        """The networks by attribute name."""
        return {a: getattr(self, a) for a in WEIGHT_FILES.values()}

    def load_state_dicts(self, states: dict[str, dict]) -> "LivePortrait":
        """Load state dicts (keys of :data:`WEIGHT_FILES` values; the stitching entry is the whole
        checkpoint ``{"retarget_shoulder": ..., ...}`` or the stitching MLP's own state dict).

        Raises:
            RuntimeError: missing or unexpected keys, or shape mismatches (strict loading).
        """
        for attr, state in states.items():
            if attr == "stitching" and "retarget_shoulder" in state:
                state = state["retarget_shoulder"]
            getattr(self, attr).load_state_dict(_strip(state), strict=True)
        for m in self.modules().values():
            m.to(self.device).eval()
        return self

    @classmethod
    def from_weights_dir(cls, weights_dir: str | Path, device: str = "cpu", verify: bool = False) -> "LivePortrait":
        """Load the five LivePortrait files of the manifest from ``weights_dir``.

        Raises:
            pipeline.weights.WeightsMissing: a file is absent (the reason names the fetch command)
                or fails its hash check.
        """
        from pipeline.weights import WeightsMissing, file_sha256, require

        paths = {}
        for name in WEIGHT_FILES:
            paths[name] = require(name, weights_dir, verify=verify)
        eng = cls(device)
        states = {}
        for name, path in paths.items():
            try:
                states[WEIGHT_FILES[name]] = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # a corrupt or foreign file: refuse it with the reason
                raise WeightsMissing(name, f"{path}: not a loadable state dict ({exc})") from None
            eng.weights_sha256[name] = file_sha256(path)
        try:
            return eng.load_state_dicts(states)
        except RuntimeError as exc:
            raise WeightsMissing("liveportrait", f"state dict does not match LivePortrait's layout: "
                                 f"{str(exc).splitlines()[0]}") from None

    # ---- inference
    def _tensor(self, rgb256: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(rgb256.astype(np.float32) / 255.0).permute(2, 0, 1)[None].to(self.device)

    @torch.no_grad()
    def keypoints(self, rgb256: np.ndarray) -> dict:
        """:func:`keypoint_info` of a 256x256 uint8 RGB crop."""
        return keypoint_info(self.motion(self._tensor(rgb256)))

    @torch.no_grad()
    def animate(self, photo: np.ndarray, photo_track, frames: np.ndarray, track, anchor: int) -> list[np.ndarray]:
        """Drive ``photo`` with ``frames`` relative to frame ``anchor``; returns uint8 RGB frames of
        the photo's size (the generated 512x512 crop pasted back with :func:`paste_mask`).

        Args:
            photo: uint8 RGB [H, W, 3]; photo_track: its :class:`~pipeline.oneshot.face.FaceTrack`.
            frames: uint8 RGB [N, h, w, 3] driving frames; track: their face track.
            anchor: the driving anchor frame index.
        """
        import cv2

        m_src = crop_transform(photo_track.mesh[0], 2.3, -0.125)
        crop = cv2.warpAffine(photo, m_src, (512, 512), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        x256 = cv2.resize(crop, (INPUT, INPUT), interpolation=cv2.INTER_AREA)
        src = self.keypoints(x256)
        f_s = self.appearance(self._tensor(x256))
        x_s = transform_keypoints(src["kp"], src["R"], src["exp"], src["scale"], src["t"])

        def drv_info(i):
            m = crop_transform(track.mesh[i], 2.2, -0.1, INPUT)
            return self.keypoints(cv2.warpAffine(frames[i], m, (INPUT, INPUT), flags=cv2.INTER_AREA,
                                                 borderMode=cv2.BORDER_REFLECT))

        ref = drv_info(anchor)
        h, w = photo.shape[:2]
        inv = cv2.invertAffineTransform(m_src)
        mask = cv2.warpAffine(paste_mask(), inv, (w, h))[..., None]
        out = []
        for i in range(len(frames)):
            x_d = stitch(self.stitching, x_s, relative_keypoints(src, drv_info(i), ref))
            img = self.generator(self.warping(f_s, x_d, x_s)["out"])[0].permute(1, 2, 0).cpu().numpy()
            gen = cv2.warpAffine((img * 255).clip(0, 255).astype(np.uint8), inv, (w, h), flags=cv2.INTER_LINEAR)
            out.append((gen * mask + photo * (1 - mask) + 0.5).clip(0, 255).astype(np.uint8))
        return out
