"""Torso modules: RAD-NeRF's pseudo-3D deformable torso (Tang et al. 2022 Sec. 3.3) and ER-NeRF's
torso with its adaptive pose encoding (Li et al. 2023 Sec. 3.4).

A torso module is called as ``torso(xy, pose, body)`` with ``xy`` [P, 2] image-plane coordinates
in [-1, 1], ``pose`` [12] = c2w[:3, :4] flattened (scene units) and ``body`` the frame's body pose
([4] shoulder positions, condition ``body_pose``; only for a torso built with
``cfg.torso_body_pose``, followed by the 18 numbers of the body flow, condition ``body_flow``, for a
torso built with ``cfg.torso_body_flow``; None otherwise); it returns ``rgb`` [P, 3] in [0, 1], ``alpha`` [P] in
[0, 1] and ``deform`` [P, 2]. A torso built with ``cfg.torso_retrieval`` > 0 also reads the mean
colour of the training frames whose body input is nearest the frame's (:func:`nearest_bodies`,
:meth:`DeformedTorso.set_bank`); ``exclude`` (the training frame's ``img_id`` while it trains) keeps
the frame and its neighbours in time out of that retrieval.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from pipeline.models.encodings import make_hash_grid
from pipeline.models.fields import mlp


def freq_encode(x: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """NeRF positional encoding: [P, D] -> [P, D * (1 + 2 * n_freqs)]."""
    out = [x]
    for k in range(n_freqs):
        out += [torch.sin((2.0 ** k) * math.pi * x), torch.cos((2.0 ** k) * math.pi * x)]
    return torch.cat(out, -1)


def body_sway(body: np.ndarray) -> float:
    """How much the body moves across the frame: the RMS distance of the shoulders' midpoint from
    its mean over the frames, in mean shoulder widths (unitless, >= 0; the ``auto`` rule of
    ``TrainConfig.torso_body_frame``).

    Args:
        body: [N, 4] shoulder positions per frame (condition ``body_pose``: x1, y1, x2, y2 in
            [-1, 1] of the frame).
    Raises:
        ValueError: not [N, 4] with N >= 1, or the shoulders coincide (zero mean width).
    """
    b = np.asarray(body, np.float64)
    if b.ndim != 2 or b.shape[1] != 4 or len(b) == 0:
        raise ValueError(f"body_sway needs [N, 4] shoulder positions, got shape {list(b.shape)}")
    width = np.linalg.norm(b[:, :2] - b[:, 2:], axis=1).mean()
    if width <= 0:
        raise ValueError("body_sway: the two shoulders coincide (mean width 0)")
    mid = (b[:, :2] + b[:, 2:]) / 2
    return float(np.sqrt(((mid - mid.mean(0)) ** 2).sum(1).mean()) / width)


def nearest_bodies(bank: torch.Tensor, query: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, k: int,
                   ids: torch.Tensor | None = None, exclude: int | None = None, window: int = 0) -> torch.Tensor:
    """Indices of the ``k`` bank frames whose body input is nearest ``query``: squared Euclidean
    distance of the inputs standardised by ``mean`` and ``std`` (the torso's training statistics),
    ties broken by the lower index. With ``exclude`` (an ``img_id``) the bank frames whose
    ``ids`` lie within ``window`` frames of it (``|id - exclude| <= window``, the frame itself
    included) are left out: a training frame does not retrieve itself or its neighbours in time,
    which a held-out frame cannot either.

    Args:
        bank: [N, D] body inputs of the bank frames (shoulders in [-1, 1], then the body flow).
        query: [D] the frame's body input.
        mean, std: [D] standardisation (std > 0).
        k: number of frames, >= 1; fewer when fewer frames remain after the exclusion.
        ids: [N] ``img_id`` of the bank frames (needed with ``exclude``).
        exclude, window: see above (frames, >= 0).
    Returns: [min(k, candidates)] long indices into the bank, nearest first.
    Raises:
        ValueError: ``k`` < 1, shapes that do not match, ``exclude`` without ``ids``, or no bank
            frame left.
    Source: not in RAD-NeRF / ER-NeRF (docs/quality.md, cause 17); the analysis of cause 16 (the 5
    training frames nearest by the body flow) made into a torso input.
    """
    if k < 1:
        raise ValueError(f"nearest_bodies: k must be at least 1, got {k}")
    if bank.ndim != 2 or query.reshape(-1).shape[0] != bank.shape[1]:
        raise ValueError(f"nearest_bodies: bank [N, D] and query [D] do not match ({list(bank.shape)}, {list(query.shape)})")
    z = (bank.float() - mean) / std
    d = ((z - (query.reshape(1, -1).float().to(z) - mean) / std) ** 2).sum(1)
    if exclude is not None:
        if ids is None:
            raise ValueError("nearest_bodies: exclude needs the bank's ids")
        d = torch.where((ids.to(d.device) - int(exclude)).abs() <= window, torch.full_like(d, float("inf")), d)
    n = int(torch.isfinite(d).sum())
    if n == 0:
        raise ValueError(f"nearest_bodies: no bank frame is left after excluding +-{window} frames of {exclude}")
    # stable sort: equal distances keep the bank order
    return torch.sort(d, stable=True).indices[:min(k, n)]


def euler_xyz(rot: torch.Tensor) -> torch.Tensor:
    """Euler angles (radians) of a rotation matrix in the intrinsic ``XYZ`` convention,
    ``R = Rx(a) @ Ry(b) @ Rz(c)`` -> ``(a, b, c)``, as pytorch3d's ``matrix_to_euler_angles(R, "XYZ")``
    that RAD-NeRF's ``convert_poses`` calls (``nerf/utils.py``).

    ``rot`` [..., 3, 3] -> [..., 3]; ``b`` in [-pi/2, pi/2], ``a``, ``c`` in (-pi, pi].
    """
    b = torch.asin(rot[..., 0, 2].clamp(-1.0, 1.0))
    a = torch.atan2(-rot[..., 1, 2], rot[..., 2, 2])
    c = torch.atan2(-rot[..., 0, 1], rot[..., 0, 0])
    return torch.stack([a, b, c], -1)


class DeformedTorso(nn.Module):
    """Shared body of the two torsos: the image coordinate ``xy`` is multiplied by ``shrink``
    (the references' ``torso_shrink``, room for the deformation) and frequency-encoded
    (``xy_freqs``); with the subclass's encoded head pose (:meth:`pose_features`, [1, d_pose]) it
    drives a deformation MLP ``dxy``; a 2D hash grid at ``clamp(xy + dxy, -1, 1)`` plus the same
    encodings go through the torso MLP to colour and alpha (RAD-NeRF ``forward_torso``, ER-NeRF
    ``forward_torso``).

    With ``cfg.torso_body_pose`` (not in the references) the body pose joins the head pose:
    the shoulders' image positions ``b`` [4] (condition ``body_pose``, x and y in [-1, 1]),
    standardised by their training mean ``m`` and standard deviation ``s``
    (:meth:`set_body_stats`) as ``clamp((b - m) / (4 s), -1.5, 1.5)`` (about [-1, 1] over the
    training frames) and frequency-encoded (``body_freqs``), are appended to the pose encoding
    that drives the deformation and the torso MLP. With ``cfg.torso_body_flow`` as well (not in
    the references) the body input is ``b`` [4 + 18]: the shoulders followed by the body flow
    (condition ``body_flow``: the 3 x 3 body cells' displacement from a reference frame, x and y in
    [-1, 1] units), standardised and encoded alike.

    With ``cfg.torso_retrieval`` = K > 0 (not in the references) the torso MLP also reads, at each
    pixel, the mean colour of the K training frames whose body input is nearest the frame's
    (:func:`nearest_bodies`; the frames ``gt_imgs`` at the training resolution, kept in the torso
    as its *bank*, :meth:`set_bank`), bilinearly sampled at the pixel's image coordinate and
    scaled to [-1, 1]: the torso draws the body the training frames show for such a body input and
    learns what to keep of it (hands and arms that the fields' inputs cannot place otherwise).

    With :attr:`body_frame` on (``cfg.torso_body_frame``, set by the model from its meta; not in
    the references) the image coordinates are first mapped into the body's frame
    (:meth:`to_body_frame`): the similarity that takes the frame's shoulders onto their training
    mean, so the grid holds one image of a body that sways across the frame.

    ``forward(xy [P,2] in [-1,1] (image plane), pose [12] = c2w[:3,:4] flattened (scene units),
    body [body_dim] or None, exclude img_id or None)`` returns ``rgb`` [P,3] in [0,1], ``alpha`` [P] in [0,1], ``deform`` [P,2]
    (in the shrunk coordinates).
    """

    xy_freqs = 8
    shrink = 0.8
    body_freqs = 3
    #: numbers of the body input: the two shoulders' x and y, plus the 18 of the body flow when the
    #: torso sees it (set by :meth:`_build`)
    body_dim = 4
    #: map the image coordinates into the body's frame (:meth:`to_body_frame`) before anything
    #: else; set from the model's ``meta["body_frame"]`` (no parameters of its own)
    body_frame = False

    def _build(self, cfg, d_pose: int, color_hidden: int) -> None:
        """Create the deformation MLP, the 2D grid and the torso MLP (in that order) for a pose
        encoding of ``d_pose`` numbers (plus the body pose's when ``cfg.torso_body_pose``) and a
        torso MLP ``color_hidden`` wide."""
        self.uses_body = bool(getattr(cfg, "torso_body_pose", False))
        #: the body input ends with the body flow (``cfg.torso_body_flow``)
        self.uses_flow = self.uses_body and bool(getattr(cfg, "torso_body_flow", False))
        self.body_dim = 4 + (18 if self.uses_flow else 0)
        if self.uses_body:
            self.register_buffer("body_mean", torch.zeros(self.body_dim))
            self.register_buffer("body_std", torch.ones(self.body_dim))
            d_pose += self.body_dim * (1 + 2 * self.body_freqs)
        d_xy = 2 * (1 + 2 * self.xy_freqs)
        self.deform_net = mlp(d_xy + d_pose, 2, cfg.hidden, 3)
        self.grid = make_hash_grid(2, n_levels=cfg.torso_levels, n_features=2,
                                   log2_hashmap_size=min(cfg.log2_hashmap, 18), base_resolution=16,
                                   desired_resolution=cfg.torso_resolution)
        #: training frames averaged into the retrieval input (``cfg.torso_retrieval``; 0: none)
        self.retrieval_k = int(getattr(cfg, "torso_retrieval", 0)) if self.uses_body else 0
        #: frames on either side of a training frame left out of its retrieval
        self.retrieval_window = int(getattr(cfg, "torso_retrieval_exclude", 0))
        if self.retrieval_k:
            self.register_buffer("bank_rgb", torch.zeros(0, 1, 1, 3, dtype=torch.uint8))
            self.register_buffer("bank_body", torch.zeros(0, self.body_dim))
            self.register_buffer("bank_ids", torch.zeros(0, dtype=torch.long))
        self.net = mlp(self.grid.output_dim + d_xy + d_pose + (3 if self.retrieval_k else 0), 4, color_hidden, 3)

    def set_bank(self, rgb: torch.Tensor, body: torch.Tensor, ids) -> None:
        """Keep the training frames the retrieval draws from (``cfg.torso_retrieval`` > 0).

        Args:
            rgb: [N, H, W, 3] uint8 frames (gt_imgs at the training resolution; N*H*W*3 bytes in
                every checkpoint of the torso).
            body: [N, body_dim] their body input, as :meth:`forward` takes it.
            ids: [N] their ``img_id`` (for the exclusion window).
        Raises:
            ValueError: the torso has no retrieval, or the shapes do not match.
        """
        if not self.retrieval_k:
            raise ValueError("set_bank: this torso was built without retrieval (torso_retrieval 0)")
        rgb = torch.as_tensor(rgb)
        body = torch.as_tensor(body, dtype=torch.float32).reshape(len(rgb), -1)
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != torch.uint8 or body.shape[1] != self.body_dim \
                or len(ids) != len(rgb) or len(rgb) == 0:
            raise ValueError(f"set_bank: need uint8 [N, H, W, 3] frames, [N, {self.body_dim}] body inputs and [N] ids "
                             f"with N >= 1, got {list(rgb.shape)} {rgb.dtype}, {list(body.shape)}, {list(ids.shape)}")
        dev = self.body_mean.device
        self.bank_rgb, self.bank_body, self.bank_ids = rgb.to(dev), body.to(dev), ids.to(dev)

    def empty_bank(self, frames: int, height: int, width: int) -> None:
        """Zero bank of ``frames`` frames of ``height`` x ``width`` px, the shape a stored torso
        is loaded into (:class:`pipeline.models.model.TalkingHeadModel`, ``meta["torso_bank"]``)."""
        dev = self.body_mean.device
        self.bank_rgb = torch.zeros(frames, height, width, 3, dtype=torch.uint8, device=dev)
        self.bank_body = torch.zeros(frames, self.body_dim, device=dev)
        self.bank_ids = torch.zeros(frames, dtype=torch.long, device=dev)

    def retrieved_colour(self, xy: torch.Tensor, body: torch.Tensor, exclude: int | None = None,
                         window: int | None = None) -> torch.Tensor:
        """The retrieval input: the mean of the :attr:`retrieval_k` bank frames nearest ``body``
        (:func:`nearest_bodies`, leaving out ``exclude`` +- ``window`` frames, by default
        :attr:`retrieval_window`), sampled
        bilinearly (``grid_sample``, ``align_corners=False``: a pixel centre of the training
        resolution reads that pixel; border padding) at ``xy`` [P, 2] in [-1, 1].
        Returns [P, 3] in [0, 1].

        Raises:
            ValueError: the bank is empty (a torso stage never set it)."""
        if len(self.bank_rgb) == 0:
            raise ValueError("this torso retrieves training bodies (torso_retrieval) but holds no bank of training "
                             "frames: train its torso stage first")
        idx = nearest_bodies(self.bank_body, body.reshape(-1).to(self.bank_body), self.body_mean, self.body_std,
                             self.retrieval_k, self.bank_ids, exclude,
                             self.retrieval_window if window is None else int(window))
        img = self.bank_rgb[idx].float().mean(0).permute(2, 0, 1)[None] / 255       # [1, 3, H, W]
        out = torch.nn.functional.grid_sample(img, xy.reshape(1, 1, -1, 2).to(img), mode="bilinear",
                                              padding_mode="border", align_corners=False)
        return out[0, :, 0].t().to(xy)

    def pose_features(self, pose: torch.Tensor) -> torch.Tensor:
        """[12] c2w[:3,:4] -> [1, d_pose] encoded head pose (subclasses)."""
        raise NotImplementedError

    def set_body_stats(self, mean, std) -> None:
        """Training mean and standard deviation of the body input ([body_dim] each; a spread under
        1e-3 counts as 1e-3) used to standardise it (:class:`DeformedTorso`)."""
        self.body_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.body_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp(min=1e-3))

    def body_features(self, body: torch.Tensor) -> torch.Tensor:
        """[body_dim] body input (shoulder positions in [-1, 1], then the body flow when the torso
        sees it) -> [1, body_dim * (1 + 2 * body_freqs)]: standardised, clamped to [-1.5, 1.5] and
        frequency-encoded."""
        z = ((body.reshape(1, -1).float() - self.body_mean) / (4 * self.body_std)).clamp(-1.5, 1.5)
        return freq_encode(z, self.body_freqs)

    def to_body_frame(self, xy: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
        """Image coordinates ``xy`` [P, 2] (x, y in [-1, 1]) -> the body's frame: the 2-D
        similarity ``z -> a (z - p) + q`` (complex numbers; ``p``, ``q`` the midpoints of the
        frame's shoulders, the first 4 numbers of ``body``, and of their training mean, ``a = (q2 - q1) / (p2 - p1)``
        the rotation and scale between the shoulder vectors), which takes each shoulder onto its
        training mean; the identity when the shoulders are at their mean.

        Raises:
            ValueError: the frame's two shoulders coincide."""
        b = body.reshape(-1)[:4].reshape(2, 2).to(xy)
        q = self.body_mean[:4].reshape(2, 2).to(xy)
        pv, qv = b[1] - b[0], q[1] - q[0]
        den = (pv ** 2).sum()
        if float(den) == 0.0:
            raise ValueError("to_body_frame: the frame's two shoulders coincide")
        # a = qv / pv as complex numbers: (c, s) with a * z = (c x - s y, s x + c y)
        c = (qv[0] * pv[0] + qv[1] * pv[1]) / den
        s = (qv[1] * pv[0] - qv[0] * pv[1]) / den
        z = xy - b.mean(0)
        return torch.stack([c * z[:, 0] - s * z[:, 1], s * z[:, 0] + c * z[:, 1]], -1) + q.mean(0)

    def forward(self, xy: torch.Tensor, pose: torch.Tensor, body: torch.Tensor | None = None,
                exclude: int | None = None, window: int | None = None):
        ref = None
        if self.retrieval_k:
            if body is None:
                raise ValueError("this torso retrieves training bodies by the body input (torso_retrieval): body is None")
            ref = self.retrieved_colour(xy, body, exclude, window) * 2 - 1
        if self.body_frame:
            if body is None:
                raise ValueError("this torso draws the body in its frame (torso_body_frame): body is None")
            xy = self.to_body_frame(xy, body)
        xy = xy * self.shrink
        enc_p = self.pose_features(pose)
        if self.uses_body:
            if body is None:
                raise ValueError("this torso is conditioned on the body pose (torso_body_pose): body is None")
            enc_p = torch.cat([enc_p, self.body_features(body.to(enc_p))], -1)
        enc_p = enc_p.expand(xy.shape[0], -1)
        h = torch.cat([freq_encode(xy, self.xy_freqs), enc_p], -1)
        dxy = self.deform_net(h)
        warped = (xy + dxy).clamp(-1, 1)
        feats = [self.grid((warped + 1) / 2), h] + ([ref] if ref is not None else [])
        out = self.net(torch.cat(feats, -1))
        return torch.sigmoid(out[:, :3]), torch.sigmoid(out[:, 3]), dxy


class TorsoField(DeformedTorso):
    """RAD-NeRF pseudo-3D deformable torso (Tang et al. 2022 Sec. 3.3; reference
    github.com/ashawkey/RAD-NeRF ``nerf/network.py::forward_torso``).

    The head pose enters as RAD-NeRF's 6-vector (``convert_poses``: XYZ Euler angles of the c2w
    rotation in radians and the c2w translation in scene units), frequency-encoded
    (``pose_freqs``); the image coordinate, shrunk by ``shrink`` (the reference's ``torso_shrink``
    0.8, room for the deformation), is frequency-encoded (``xy_freqs``); both drive a deformation
    MLP ``dxy``; a 2D hash grid at ``clamp(xy + dxy, -1, 1)`` plus the same encodings go through the
    torso MLP to colour and alpha.

    ``forward(xy [P,2] in [-1,1] (image plane), pose [12] = c2w[:3,:4] flattened (scene units))``
    returns ``rgb`` [P,3] in [0,1], ``alpha`` [P] in [0,1], ``deform`` [P,2] (in the shrunk
    coordinates).

    Differences from the reference: no per-frame individual torso code (the reference uses code 0
    for every test frame); our frequency encoding multiplies by pi, so ``xy_freqs`` 8 and
    ``pose_freqs`` 3 reach the reference's highest frequencies (2^9 and 2^3 rad per unit) within
    a factor 1.6; widths follow our ``hidden`` (the reference: 64 deformation, 32 colour).
    """

    pose_freqs = 3

    def __init__(self, cfg):
        super().__init__()
        self._build(cfg, 6 * (1 + 2 * self.pose_freqs), max(cfg.hidden // 2, 16))

    @staticmethod
    def pose_vector(pose: torch.Tensor) -> torch.Tensor:
        """[12] c2w[:3,:4] -> [6] RAD-NeRF pose: XYZ Euler angles (radians) and translation."""
        m = pose.reshape(3, 4)
        return torch.cat([euler_xyz(m[:, :3]), m[:, 3]])

    def pose_features(self, pose: torch.Tensor) -> torch.Tensor:
        """[12] c2w[:3,:4] -> [1, 6 * (1 + 2 * pose_freqs)]: the frequency-encoded 6-vector."""
        return freq_encode(self.pose_vector(pose)[None], self.pose_freqs)


class AdaptivePoseTorso(DeformedTorso):
    """ER-NeRF torso with its adaptive pose encoding (Li et al. 2023 Sec. 3.4).

    The head pose enters as the image-plane projection of K = 3 learnable anchor points ``P_k``
    (head space = world, scene units): ``q_k = (x_k / z_k, y_k / z_k)`` of ``w2c @ P_k`` with
    ``w2c = c2w^-1``, i.e. where the anchors appear for this head pose. The 6-vector ``q`` is
    frequency-encoded (``anchor_freqs``) and, with the frequency-encoded image coordinate
    (``xy_freqs``; the coordinate first multiplied by ``shrink``, the reference's ``torso_shrink``
    0.8, room for the deformation), drives a deformation MLP ``dxy``; a 2D hash grid at ``clamp(xy + dxy, -1, 1)``
    plus the same encodings go through the torso MLP to colour and alpha.

    ``forward(xy [P,2] in [-1,1] (image plane), pose [12] = c2w[:3,:4] flattened (scene units))``
    returns ``rgb`` [P,3] in [0,1], ``alpha`` [P] in [0,1], ``deform`` [P,2].

    Differences from the official code (github.com/Fictionarry/ER-NeRF ``nerf_triplane/network.py``):
    anchors start at head-box-relative positions (our scene is scaled so the head fills
    [-1, 1]^3, theirs is not); no per-frame individual torso code; widths follow our
    ``hidden`` instead of their fixed 32.
    """

    anchor_freqs = 3
    #: initial anchors (scene units): in front of the head centre, spread left/right/down
    ANCHORS = ((0.05, 0.05, 0.5), (-0.5, -0.5, 0.5), (0.5, -0.5, 0.5))

    def __init__(self, cfg):
        super().__init__()
        self.anchors = nn.Parameter(torch.tensor(self.ANCHORS, dtype=torch.float32))
        self._build(cfg, 6 * (1 + 2 * self.anchor_freqs), cfg.hidden)

    def anchor_projection(self, pose: torch.Tensor) -> torch.Tensor:
        """[12] c2w[:3,:4] -> [6] image-plane projections (x/z, y/z) of the three anchors."""
        c2w = torch.eye(4, dtype=pose.dtype, device=pose.device)
        c2w[:3, :4] = pose.reshape(3, 4)
        w2c = torch.linalg.inv(c2w)
        cam = self.anchors @ w2c[:3, :3].t() + w2c[:3, 3]                    # [3, 3]
        z = torch.where(cam[:, 2:].abs() < 1e-6, torch.full_like(cam[:, 2:], -1e-6), cam[:, 2:])
        return (cam[:, :2] / z).reshape(-1)

    def pose_features(self, pose: torch.Tensor) -> torch.Tensor:
        """[12] c2w[:3,:4] -> [1, 6 * (1 + 2 * anchor_freqs)]: the frequency-encoded anchor projections."""
        return freq_encode(self.anchor_projection(pose)[None], self.anchor_freqs)
