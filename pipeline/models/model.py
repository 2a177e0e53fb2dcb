"""The per-identity talking-head model: audio encoder + the method's head field and torso
(:mod:`pipeline.models.methods`) + occupancy grid, with the rendering of rays, patches and full
frames.

``meta`` (stored in checkpoints): ``H``, ``W``, ``focal``, ``cx``, ``cy`` (pixels at the training
resolution), ``scene_scale`` (world units of transforms_*.json -> scene units), ``bound`` (head box
half-size in scene units, 1.0), ``audio_feature``, ``audio_window``, ``audio_shape`` ([T, C] of one
feature row), ``eye_scale`` (AU45_r -> [0, 1]), ``profile``, ``device``; ``audio_norm`` (per-channel training
mean and spread of the audio features, :func:`audio_norm_stats`) for a model built with
``cfg.audio_norm``; ``head_up`` (training mean
and spread of the head-up input, :func:`head_up_stats`) for a head built with ``cfg.head_up``;
``body_frame`` (:func:`body_frame_meta`: the training body's sway and whether the torso draws
the body in its frame) for a config with ``torso_body_frame`` other than ``off``; ``torso_bank``
(``{"frames", "H", "W"}``: the shape of the training frames a torso built with
``cfg.torso_retrieval`` keeps, set by :meth:`TalkingHeadModel.set_torso_bank` in the torso stage).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.models.audio import AudioEncoder
from pipeline.models.conditions import get_condition
from pipeline.models.configs import TrainConfig
from pipeline.models.encodings import volume_interpolation
from pipeline.models.methods import get_method, model_conditions
from pipeline.models.occupancy import OccupancyGrid
from pipeline.models.volume import get_rays, render_rays


#: width of the head-up input (:attr:`pipeline.models.configs.TrainConfig.head_up`)
HEAD_UP_DIM = 3
#: the standardised head-up input is clamped to +-this many training spreads (free-view poses far
#: outside the clip's range; the eight real clips' frames lie within 4.7)
HEAD_UP_CLAMP = 5.0


def head_up_stats(poses) -> dict:
    """Training mean and spread of the head-up input, stored in the model's ``meta["head_up"]``.

    Args:
        poses: [N, 4, 4] camera-to-head matrices of the training frames (transforms_train.json).
    Returns: ``{"mean": [3], "std": [3]}`` (unitless; ``std`` includes the 1e-3 floor that keeps a
        still head's spread from dividing by zero).
    Raises:
        ValueError: no poses.
    """
    up = np.asarray(poses, np.float32)[:, :3, 1]
    if len(up) == 0:
        raise ValueError("head_up_stats needs at least one training pose")
    return {"mean": [float(v) for v in up.mean(0)], "std": [float(v) for v in up.std(0) + np.float32(1e-3)]}


def audio_norm_stats(features) -> dict:
    """Per-channel mean and spread of the training frames' audio features, stored in the model's
    ``meta["audio_norm"]`` (``cfg.audio_norm``) and applied to every audio window before the
    AudioNet (:meth:`TalkingHeadModel.standardise_audio`).

    Args:
        features: [N, T, C] feature rows of the training frames (``aud_*.npy`` rows at their
            ``aud_id``), any units (log-mel: natural log of mel power).
    Returns: ``{"mean": [C], "std": [C]}`` over the N x T time steps; ``std`` includes a 1e-3
        floor (a constant channel, e.g. a silent band, does not divide by zero).
    Raises:
        ValueError: no rows, or not [N, T, C].
    """
    f = np.asarray(features, np.float64)
    if f.ndim != 3 or len(f) == 0:
        raise ValueError(f"audio_norm_stats needs [N, T, C] training rows, got shape {list(f.shape)}")
    flat = f.reshape(-1, f.shape[-1])
    return {"mean": [float(v) for v in flat.mean(0)], "std": [float(v) for v in flat.std(0) + 1e-3]}


def body_frame_meta(cfg: TrainConfig, body) -> dict | None:
    """Whether the torso draws the body in its frame (``cfg.torso_body_frame``), stored in the
    model's ``meta["body_frame"]``: ``{"mode", "sway", "min_sway", "on"}`` with ``sway`` the
    training frames' :func:`pipeline.models.torso.body_sway` (shoulder widths); ``on`` for mode
    ``on``, or for ``auto`` when ``sway >= cfg.torso_body_frame_min_sway``. None for mode ``off``.

    Args:
        body: [N, 4] shoulder positions of the training frames (condition ``body_pose``).
    Raises:
        ValueError: see :func:`pipeline.models.torso.body_sway`.
    """
    from pipeline.models.torso import body_sway

    mode = cfg.torso_body_frame
    if mode == "off":
        return None
    sway = body_sway(body)
    on = mode == "on" or sway >= cfg.torso_body_frame_min_sway
    return {"mode": mode, "sway": round(sway, 5), "min_sway": cfg.torso_body_frame_min_sway, "on": bool(on)}


def head_up_value(c2w: torch.Tensor, stats: dict) -> torch.Tensor:
    """The head-up input of a frame: the camera's up axis in head coordinates, ``c2w[:3, 1]``,
    standardised, ``(up - mean) / std`` with the training statistics of :func:`head_up_stats`,
    clamped to +-:data:`HEAD_UP_CLAMP`.

    Args:
        c2w: [4, 4] camera-to-head matrix (transforms or scene units: only the rotation is read).
        stats: ``{"mean": [3], "std": [3]}``.
    Returns: [3] float32 on ``c2w``'s device (about -2..2 on the training frames).
    """
    mean = torch.tensor(stats["mean"], dtype=torch.float32, device=c2w.device)
    std = torch.tensor(stats["std"], dtype=torch.float32, device=c2w.device)
    return ((c2w[:3, 1].float() - mean) / std).clamp(-HEAD_UP_CLAMP, HEAD_UP_CLAMP)


class TalkingHeadModel(nn.Module):
    """Audio-driven head NeRF + torso of one identity.

    Args:
        cfg: method config (:class:`pipeline.models.configs.TrainConfig` subclass).
        meta: see module docstring (needs ``audio_shape``).
    """

    def __init__(self, cfg: TrainConfig, meta: dict):
        super().__init__()
        self.cfg, self.meta = cfg, meta
        self.bound = float(meta.get("bound", 1.0))
        self.spec = get_method(cfg.method)
        self.conditions = model_conditions(cfg)
        self.audio = AudioEncoder(meta["audio_shape"][-1], cfg.audio_dim, cfg.audio_window)
        self.head = self.spec.field(cfg, cfg.audio_dim)
        self.build_torso(cfg)
        #: the head field reads the head-up input (fixed when it is built: a later stage's config
        #: does not change the field)
        self.head_up = bool(getattr(cfg, "head_up", False))
        if self.head_up and meta.get("head_up") is None:
            raise ValueError("head_up needs meta['head_up'] (training mean/std of the up axis, head_up_stats)")
        self.occ = OccupancyGrid(cfg.occ_resolution, self.bound)
        self.last_frame_stats: dict = {}
        # meta["audio_norm"] as tensors, built once (not saved: the meta holds them)
        stats = meta.get("audio_norm")
        self.audio_norm = stats is not None
        if self.audio_norm:
            self.register_buffer("audio_mean", torch.tensor(stats["mean"], dtype=torch.float32), persistent=False)
            self.register_buffer("audio_std", torch.tensor(stats["std"], dtype=torch.float32), persistent=False)

    # ---------------------------------------------------------------- conditioning
    def standardise_audio(self, win: torch.Tensor) -> torch.Tensor:
        """``(win - mean) / std`` per feature channel with the training statistics in
        ``meta["audio_norm"]`` (:func:`audio_norm_stats`); ``win`` itself for a model built
        without them (``cfg.audio_norm`` off, or a checkpoint from before it).

        Args:
            win: [W, T, C] audio window (or any [..., C]).
        Returns: the same shape, float32, on ``win``'s device.
        """
        win = torch.as_tensor(win).float()
        if not self.audio_norm:
            return win
        return (win - self.audio_mean.to(win.device)) / self.audio_std.to(win.device)

    def audio_code(self, win: torch.Tensor) -> torch.Tensor:
        """[W, T, C] audio window -> [audio_dim] code (standardised first: :meth:`standardise_audio`)."""
        return self.audio(self.standardise_audio(win))

    def encode(self, raw: dict, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Raw per-frame record -> the condition record of the field (conditioning contract,
        :mod:`pipeline.models.conditions`).

        Args:
            raw: ``{"audio": [W, T, C] window, name: raw value, ...}`` for every condition of the
                method (``eye``: AU45_r, ``emotion``: [8] code, ...).
        Returns: ``{"audio": [audio_dim] code, name: encoded tensor on ``device``, ...}``, plus
            ``"audio_window"`` (the raw [W, T, C] window) when the field sets ``reads_audio_window``.
        """
        out = {}
        for name in self.conditions:
            if name == "audio":
                out[name] = self.audio_code(raw[name])
                if getattr(self.head, "reads_audio_window", False):   # e.g. NeRF-3DTalker's speech branch
                    out["audio_window"] = torch.as_tensor(raw[name]).float()
            else:
                v = get_condition(name).encode_value(raw[name])
                out[name] = v.to(device) if device is not None else v
        return out

    def scene_pose(self, c2w: torch.Tensor) -> torch.Tensor:
        """transforms_*.json c2w [4,4] -> scene units (translation scaled by ``scene_scale``)."""
        c2w = c2w.clone().float()
        c2w[:3, 3] = c2w[:3, 3] * float(self.meta["scene_scale"])
        return c2w

    def with_pose_inputs(self, cond: dict[str, torch.Tensor], c2w: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cond`` plus the inputs derived from the frame's pose ``c2w`` [4, 4]: ``head_up``
        (:func:`head_up_value`) when the head was built to read it (``cfg.head_up``); ``cond``
        itself otherwise."""
        if not self.head_up:
            return cond
        return {**cond, "head_up": head_up_value(c2w, self.meta["head_up"])}

    # ---------------------------------------------------------------- rendering
    def render_head_rays(self, c2w: torch.Tensor, pix: torch.Tensor, cond: dict[str, torch.Tensor],
                         perturb: bool = True, occ: bool = True, skip_empty: bool = True) -> dict:
        """Head rays for pixels ``pix`` [R, 2] (row, col) of a camera ``c2w`` (scene units) under
        the condition record ``cond`` (:meth:`encode`; the pose-derived inputs are added here,
        :meth:`with_pose_inputs`).

        Returns the dict of :func:`pipeline.models.volume.render_rays` (``rgb`` premultiplied)."""
        m = self.meta
        cond = self.with_pose_inputs(cond, c2w)
        o, d = get_rays(c2w, m["focal"], m["cx"], m["cy"], pix)
        return render_rays(lambda x, dd: self.head(x, dd, cond), o, d, self.bound, self.cfg.n_samples,
                           self.occ if occ else None, perturb=perturb,
                           tight_bounds=self.cfg.occ_tight_bounds, skip_empty=skip_empty)

    def build_torso(self, cfg: TrainConfig) -> None:
        """(Re)build the torso of ``cfg`` (fresh weights: the caller seeds) with what the meta
        holds for it: the body input's training statistics (``condition_values``), the body frame
        (``body_frame``) and an empty bank of ``torso_bank``'s shape.

        Raises:
            ValueError: the meta lacks the statistics the torso's body input needs, or holds a
                body frame or bank the torso does not use."""
        self.torso = self.spec.torso(cfg)
        meta = self.meta
        if self.torso.uses_body:
            names = self.torso_body_conditions()
            stats = [(meta.get("condition_values") or {}).get(n) for n in names]
            for n, st in zip(names, stats):
                if st is None:
                    raise ValueError(f"the torso's {n} input needs meta['condition_values'][{n!r}] (training mean/std)")
            self.torso.set_body_stats([v for st in stats for v in st["mean"]], [v for st in stats for v in st["std"]])
        #: the torso draws the body in its frame (cfg.torso_body_frame, decided when the model was
        #: first built: meta["body_frame"]["on"]; absent in older models: off)
        if (meta.get("body_frame") or {}).get("on"):
            if not self.torso.uses_body:
                raise ValueError("meta['body_frame'] is on but the torso does not see the body pose (torso_body_pose)")
            self.torso.body_frame = True
        bank = meta.get("torso_bank")
        if bank:
            if not self.torso.retrieval_k:
                raise ValueError("meta['torso_bank'] is set but the torso does not retrieve training bodies (torso_retrieval 0)")
            self.torso.empty_bank(int(bank["frames"]), int(bank["H"]), int(bank["W"]))

    def set_torso_bank(self, rgb: torch.Tensor, conds: dict, ids) -> None:
        """Give a torso built with ``cfg.torso_retrieval`` the training frames it retrieves from
        (the torso stage; :meth:`pipeline.models.torso.DeformedTorso.set_bank`) and record their
        shape in ``meta["torso_bank"]``.

        Args:
            rgb: [N, H, W, 3] uint8 training frames (gt_imgs at the training resolution).
            conds: the training split's raw conditions ({name: [N, ...]}), read for the torso's
                body input (:meth:`torso_body_conditions`).
            ids: [N] their ``img_id``.
        Raises:
            ValueError: the torso has no retrieval, a body condition is missing, or shapes differ.
        """
        names = self.torso_body_conditions()
        missing = [n for n in names if n not in conds]
        if missing:
            raise ValueError(f"set_torso_bank: the training conditions have no {missing[0]!r}")
        n = len(rgb)
        body = torch.cat([torch.as_tensor(conds[name], dtype=torch.float32).reshape(n, -1) for name in names], 1)
        self.torso.set_bank(rgb, body, ids)
        self.meta["torso_bank"] = {"frames": int(n), "H": int(rgb.shape[1]), "W": int(rgb.shape[2])}

    def pixel_xy(self, pix: torch.Tensor) -> torch.Tensor:
        """Pixel centres ``pix`` [R, 2] (row, col; integers of the training resolution ``meta["H"]``
        x ``meta["W"]``) -> the torso's image coordinates [R, 2] (x, y) in [-1, 1]
        (``grid_sample``'s ``align_corners=False`` convention)."""
        H, W = self.meta["H"], self.meta["W"]
        return torch.stack([(pix[:, 1].float() + 0.5) / W * 2 - 1, (pix[:, 0].float() + 0.5) / H * 2 - 1], -1)

    def render_torso_pix(self, pix: torch.Tensor, c2w: torch.Tensor, cond: dict | None = None,
                         exclude: int | None = None, window: int | None = None):
        """Torso colour [R,3], alpha [R] and deformation [R,2] at pixels ``pix`` [R, 2] for head
        pose ``c2w`` (scene units); ``cond`` the frame's condition record, read for its
        ``body_pose`` (and ``body_flow``) when the torso is conditioned on it (built with
        ``cfg.torso_body_pose``, ``cfg.torso_body_flow``; :meth:`torso_body_conditions`);
        ``exclude``: the ``img_id`` of the training frame being fitted, which a torso with
        retrieval (``cfg.torso_retrieval``) leaves out of it with its neighbours in time, ``window``
        frames on either side (None: ``cfg.torso_retrieval_exclude``; both None at render time).

        Raises:
            ValueError: the torso needs ``body_pose`` or ``body_flow`` and ``cond`` has none."""
        xy = self.pixel_xy(pix)
        body = None
        if self.torso.uses_body:
            if not cond or "body_pose" not in cond:
                raise ValueError("this torso is conditioned on the body pose: the condition record has no 'body_pose'")
            names = self.torso_body_conditions()
            missing = [n for n in names[1:] if n not in cond]
            if missing:
                raise ValueError(f"this torso is conditioned on the body flow: the condition record has no {missing[0]!r}")
            body = torch.cat([cond[n].reshape(-1).to(xy.device) for n in names])
        return self.torso(xy, c2w[:3, :4].reshape(-1), body, exclude, window)

    def torso_body_conditions(self) -> tuple[str, ...]:
        """The conditions whose values, in this order, make the torso's body input: ``body_pose``
        (``cfg.torso_body_pose``), then ``body_flow`` (``cfg.torso_body_flow``); empty when the
        torso sees the head pose only."""
        if not self.torso.uses_body:
            return ()
        return ("body_pose", "body_flow") if self.torso.uses_flow else ("body_pose",)

    @torch.no_grad()
    def render_frame(self, c2w: torch.Tensor, cond: dict[str, torch.Tensor], bg: torch.Tensor,
                     torso: bool = True, chunk: int = 8192, fast: bool = True, skip_empty: bool = True) -> dict:
        """A full frame (rays in chunks). ``c2w`` in scene units, ``cond`` the condition record,
        ``bg`` [H, W, 3] in [0, 1]. ``fast``: hash grids through
        :func:`pipeline.models.encodings.volume_interpolation` (False: the bit-exact corner path
        that training uses; the images agree within 1e-4, tests/test_performance.py);
        ``skip_empty``: occupancy skipping and early termination (False: every sample evaluated).
        Sets :attr:`last_frame_stats` (``rays``, ``samples`` evaluated, ``samples_per_ray``).

        Returns ``rgb`` [H,W,3], ``head_alpha`` [H,W], ``torso_alpha`` [H,W], ``head_rgb`` [H,W,3]
        (un-premultiplied head colour).
        """
        H, W = self.meta["H"], self.meta["W"]
        dev = bg.device
        rr, cc = torch.meshgrid(torch.arange(H, device=dev), torch.arange(W, device=dev), indexing="ij")
        pix = torch.stack([rr, cc], -1).reshape(-1, 2)
        rgb_h = torch.zeros(H * W, 3, device=dev)
        a_h = torch.zeros(H * W, device=dev)
        n_evals = 0
        with volume_interpolation(fast):
            for s in range(0, pix.shape[0], chunk):
                out = self.render_head_rays(c2w, pix[s:s + chunk], cond, perturb=False, skip_empty=skip_empty)
                rgb_h[s:s + chunk], a_h[s:s + chunk] = out["rgb"], out["alpha"]
                n_evals += out["n_evals"]
            bgf = bg.reshape(-1, 3)
            t_rgb, t_a, _ = self.render_torso_pix(pix, c2w, cond) if torso else (None, None, None)
        self.last_frame_stats = {"rays": H * W, "samples": n_evals, "samples_per_ray": n_evals / (H * W)}
        if torso:
            under = t_rgb * t_a[:, None] + (1 - t_a[:, None]) * bgf
        else:
            t_a = torch.zeros_like(a_h)
            under = bgf
        rgb = rgb_h + (1 - a_h[:, None]) * under
        head_rgb = rgb_h / a_h.clamp(min=1e-6)[:, None]
        return {"rgb": rgb.clamp(0, 1).view(H, W, 3), "head_alpha": a_h.clamp(0, 1).view(H, W),
                "torso_alpha": t_a.view(H, W), "head_rgb": head_rgb.clamp(0, 1).view(H, W, 3)}
