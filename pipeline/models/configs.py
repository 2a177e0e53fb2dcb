"""The training/model configuration fields shared by every method (no torch import: the Snakefile
calls :func:`check_method` at start-up to refuse unknown methods). Each method's config dataclass
(a subclass of :class:`TrainConfig`) lives in its module, ``pipeline/models/methods/{method}.py``.

Every field has a docstring; profiles (:mod:`pipeline.train.profiles`) and ``train.overrides``
set fields by name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline.common.errors import InputError


@dataclass
class TrainConfig:
    """Fields shared by every method."""

    method: str = ""
    """registered method name (``rad_nerf``, ``er_nerf``, ...; :mod:`pipeline.models.methods`)."""
    profile: str = "quick"
    """profile the values came from (``quick``, ``paper``, ``smoke``)."""
    seed: int = 0
    """seed of torch/numpy/python RNGs (fixed: reruns give the same model on the same device)."""
    device: str = "auto"
    """``auto`` (cuda when available), ``cpu`` or ``cuda``."""
    audio_feature: str = "mel"
    """dataset audio feature (``mel`` -> aud_mel.npy, ``wav2vec2``, ``hubert``, ``deepspeech``)."""
    resolution: int = 512
    """training/render image side in pixels (frames are resized; intrinsics scaled)."""
    audio_dim: int = 32
    """audio code size (AudioNet output)."""
    audio_window: int = 8
    """frames in the AudioAttNet smoothing window (W of FrameInput.audio)."""
    audio_norm: bool = True
    """standardise each audio feature channel by the training frames' mean and spread before the
    AudioNet (``meta["audio_norm"]``, :func:`pipeline.models.model.audio_norm_stats`). The log-mel
    features (about -11.5 .. 4.4, mean -8) otherwise let RAD-NeRF's audio coordinate
    ``tanh(MLP([enc(x), code]))`` hardly vary with the audio and, by the end of the ``quick`` head
    stage, sit at exactly +-1, so the audio changed no render (docs/quality.md, cause 19). Not in the anchors' code, whose DeepSpeech / wav2vec
    features are network outputs of a smaller range; False restores their raw input."""
    levels: int = 16
    """hash-grid levels L."""
    features: int = 2
    """features per level F."""
    log2_hashmap: int = 19
    """log2 of the hash table size T per level."""
    max_resolution: int = 2048
    """finest hash-grid resolution N_max (RAD-NeRF: 2048 * bound)."""
    hidden: int = 64
    """hidden width of the density/colour/attention MLPs."""
    geo_dim: int = 15
    """geometry features the density MLP passes to the colour MLP (RAD-NeRF / ER-NeRF: 64)."""
    color_layers: int = 3
    """linear layers of the colour MLP (RAD-NeRF / ER-NeRF: 2)."""
    n_samples: int = 128
    """samples per ray between near and far (before occupancy skipping)."""
    head_box: float = 1.4
    """head box half-size as a multiple of half the largest head extent (from parsing)."""
    occ_resolution: int = 128
    """occupancy-grid cells per side."""
    occ_update_every: int = 16
    """steps between occupancy-grid updates."""
    occ_warmup: int = 256
    """steps before the first occupancy-grid update (all cells occupied until then)."""
    occ_conditions: int = 4
    """condition records (random training frames) whose maximum density is kept per cell."""
    occ_tight_bounds: bool = True
    """shrink each ray's [near, far] to the span of its occupied cells before placing the
    ``n_samples`` (:meth:`pipeline.models.occupancy.OccupancyGrid.ray_bounds`): the samples land
    on the head, not in the empty part of the box (False: uniform over the box, occupied cells only)."""
    torso_levels: int = 16
    """torso 2D hash-grid levels."""
    torso_resolution: int = 2048
    """finest torso 2D grid resolution."""
    torso_body_pose: bool = False
    """condition the torso on the body pose as well as the head pose: the image positions of the
    two shoulders tracked by MediaPipe Pose (condition ``body_pose``, body_pose.npy), standardised
    by their training mean and spread and frequency-encoded beside the head pose
    (:class:`pipeline.models.torso.DeformedTorso`). Not part of RAD-NeRF or ER-NeRF, whose torsos
    see the head pose only (False, the ``paper`` profile); the ``quick`` profile turns it on
    (docs/quality.md, cause 12: shoulders and hair that move independently of the head)."""
    torso_body_flow: bool = False
    """condition the torso on the body flow as well: the mean optical flow, from a reference frame,
    of the 3 x 3 cells of the body (neck and torso; condition ``body_flow``, body_flow.npy,
    :mod:`pipeline.preprocess.body_flow`), 18 numbers per frame appended to the shoulders and
    encoded as they are (:class:`pipeline.models.torso.DeformedTorso`). The shoulders say where the
    body is, not where its collar, the hair over it or its clothes are; the flow measures them on
    each frame as the tracked pose measures the head. Needs ``torso_body_pose``. Not part of
    RAD-NeRF or ER-NeRF (False, the ``paper`` profile); the ``quick`` profile turns it on
    (docs/quality.md, cause 16)."""
    torso_body_frame: str = "off"
    """draw the torso in the body's frame: each frame's image coordinates are mapped by the 2-D
    similarity (rotation, scale, shift) that takes its two shoulders (condition ``body_pose``) onto
    their training mean before the torso reads them
    (:meth:`pipeline.models.torso.DeformedTorso.to_body_frame`), so a body that sways across the
    frame is one image in the torso's grid instead of a smear of positions. ``off`` (the
    references' image-plane torso; the ``paper`` profile), ``on``, or ``auto`` (the ``quick``
    profile): on when the body sways, i.e. the training frames' shoulder midpoint spreads by at
    least ``torso_body_frame_min_sway`` shoulder widths (:func:`pipeline.models.torso.body_sway`);
    below that the sway is mostly the pose tracker's noise, which the mapping would copy into the
    body (docs/quality.md, cause 15). Acts only with ``torso_body_pose`` (``auto`` is off without
    it, ``on`` refuses). Not part of RAD-NeRF or ER-NeRF."""
    torso_body_frame_min_sway: float = 0.035
    """``torso_body_frame: auto`` turns the body frame on from this sway (RMS distance of the
    shoulder midpoint from its training mean, in mean shoulder widths; unitless, >= 0)."""
    torso_retrieval: int = 0
    """K > 0: the torso MLP also reads, at each pixel, the mean colour of the K training frames
    whose body input (shoulders, then the body flow when ``torso_body_flow``) is nearest the
    frame's, standardised by the training spread (:func:`pipeline.models.torso.nearest_bodies`);
    the torso keeps those frames (gt_imgs at the training resolution, N x H x W x 3 bytes in its
    checkpoints). A torso field conditioned on a few numbers blends the training bodies, and does
    not draw arms and hands that only some frames show; the nearest frames show them where they are
    (docs/quality.md, cause 17). 0: off (RAD-NeRF, ER-NeRF, the ``paper`` and ``smoke`` profiles);
    the ``quick`` profile uses 5. Needs ``torso_body_pose``."""
    torso_retrieval_exclude: int = 5
    """while the torso trains, a training frame's retrieval leaves out the training frames within
    this many frames of it (itself included), as a held-out frame has no copy of itself among the
    training frames (frames, >= 0; 0 leaves out the frame itself). With
    ``torso_retrieval_exclude_max`` this is the smallest window of the draw."""
    torso_retrieval_exclude_max: int | None = None
    """while the torso trains, each step draws its window uniformly from
    [``torso_retrieval_exclude``, this] frames, so the torso learns from retrievals as far from the
    frame as a held-out frame's are; None: the number of validation frames (the self-driven test's
    held-out frames lie 1 .. n_val frames from the nearest training frame); equal to
    ``torso_retrieval_exclude``: one fixed window (frames, >= ``torso_retrieval_exclude``)."""
    head_up: bool = False
    """condition the head field on the camera's up axis in head coordinates (the second column of
    the frame's camera-to-head rotation, i.e. the direction of gravity as the head tilts and
    turns, for a level camera), standardised by the training frames' mean and spread
    (:func:`pipeline.models.model.head_up_value`). It is derived from the tracked head pose each
    frame already has, so every protocol (self-driven, cross-driven, free view) gives it. Hair that
    hangs keeps hanging down while the head tilts, so in the head's frame, where the field is
    static, it moves; the field gets no other input that says so. Not part of RAD-NeRF or ER-NeRF,
    whose heads see the audio and the blink only (False, the ``paper`` profile); the ``quick``
    profile turns it on (docs/quality.md, cause 14)."""
    rays_per_step: int = 4096
    """rays per training step (all from one frame, or spread over ``frames_per_step`` frames in the
    head stage)."""
    frames_per_step: int = 1
    """training frames each head-stage step draws its ``rays_per_step`` rays from (an equal share
    each, the frames' losses averaged). RAD-NeRF and ER-NeRF draw every ray of a step from one
    frame (1, every profile but the ``quick`` of ``er_nerf`` and ``rad_nerf``, which set 4: their
    ``MethodSpec.profile_values``). Measured on the eight real clips: docs/quality.md, "The mouth
    hardly moves" and "Where the audio acts"."""
    mouth_rays: float = 0.0
    """fraction (0 to 1) of the head stage's rays drawn inside the frame's mouth box (the 68-point
    landmarks 48-67 of ``ori_imgs/{i}.lms``, widened by half its size on each side), taken from the
    rays otherwise drawn over the parsed head's bounding box. Not in RAD-NeRF or ER-NeRF, whose
    head stage draws its rays over the whole frame and leaves the mouth to the lips stage (0, every
    profile but the ``quick`` of ``er_nerf`` and ``rad_nerf``, which set 0.25). Measured on the eight
    real clips: docs/quality.md, "The mouth hardly moves" and "Where the audio acts"."""
    lr_grid: float = 1e-2
    """Adam learning rate of the hash tables (torch-ngp)."""
    lr_net: float = 1e-3
    """Adam learning rate of the MLPs and audio networks."""
    lr_final: float = 0.1
    """learning-rate factor reached at the end of a stage (exponential decay)."""
    ema_decay: float = 0.95
    """decay of the exponential moving average of the trained weights (``torch_ema``, with its
    warm-up ``min(decay, (1 + n) / (10 + n))`` at the n-th update); a stage ends with the averaged
    weights, as RAD-NeRF's and ER-NeRF's trainers save and evaluate them (``ema_decay=0.95``).
    0: no average, the last step's weights."""
    ema_update_every: int = 1000
    """steps between updates of that average (RAD-NeRF / ER-NeRF ``ema_update_interval`` 1000: about
    200 updates in a 200k-step stage)."""
    head_steps: int = 200000
    """head stage steps (RAD-NeRF: 200k)."""
    lips_steps: int = 50000
    """lips fine-tuning steps (RAD-NeRF: 50k)."""
    torso_steps: int = 200000
    """torso stage steps (RAD-NeRF: 200k)."""
    lips_patch: int = 64
    """side in pixels of the mouth patch rendered in the lips stage."""
    lambda_lpips: float = 0.01
    """weight of the LPIPS patch loss in the lips stage (skipped when the AlexNet weights are missing)."""
    lambda_torso_alpha: float = 0.1
    """weight of the torso alpha loss (torso_imgs alpha) in the torso stage."""
    checkpoint_every: int = 1000
    """steps between resume checkpoints (plus one at the end of each stage)."""
    log_every: int = 1
    """steps between rows of the per-step CSV log."""
    val_frames: int = 0
    """validation frames rendered for the reported PSNR (0: all of transforms_val.json)."""
    lambda_amb: float = 1e-4
    """weight of the method's ambient/attention regulariser."""
    lambda_entropy: float = 1e-4
    """weight of the entropy of each head ray's accumulated opacity, -a log2 a - (1-a) log2(1-a),
    which pushes opacities to 0 or 1 (RAD-NeRF / ER-NeRF ``train_step``: 1e-4)."""
    lambda_head_alpha: float = 0.0
    """weight of the MSE between each head ray's accumulated opacity and the parsed head mask
    (``parsing/{i}.png`` head = 1, else 0) in the head and lips stages. Not in RAD-NeRF / ER-NeRF
    (0 keeps them as published); the ``quick`` profile turns it on: with a few hundred steps the
    photometric loss alone leaves the face semi-transparent over the background (ghosting),
    see docs/quality.md."""


def check_method(name: str, source: str = "config.yaml") -> str:
    """``name`` when it is a registered method (:mod:`pipeline.models.methods`), else InputError
    naming ``source`` and the registered names (no torch import: used by the Snakefile)."""
    from pipeline.models.methods import check_method as _check

    return _check(name, source)


def make_config(method: str, values: dict | None = None, source: str = "config.yaml") -> TrainConfig:
    """Build a method config from ``values``.

    Raises:
        InputError (naming ``source``): unknown keys; ``ema_decay`` outside [0, 1]; ``ema_update_every``
            below 1 while the weight average is on; ``torso_body_frame`` not off/on/auto, or ``on``
            without ``torso_body_pose``; ``torso_body_flow`` without ``torso_body_pose``;
            ``torso_body_frame_min_sway`` below 0; ``torso_retrieval`` below 0 or without
            ``torso_body_pose``; ``torso_retrieval_exclude`` below 0, ``torso_retrieval_exclude_max``
            below it; ``frames_per_step`` not a whole number from 1 to ``rays_per_step``; ``mouth_rays``
            outside [0, 1]; ``audio_attention`` (``er_nerf``) not sigmoid/linear (checked here,
            before any data is read).
    """
    from pipeline.models.methods import get_method

    cls = get_method(method, source).config
    names = {f.name for f in dataclasses.fields(cls)}
    values = dict(values or {})
    bad = sorted(set(values) - names)
    if bad:
        raise InputError(source, f"unknown training option(s) {', '.join(bad)} for {method}")
    values["method"] = method
    cfg = cls(**values)
    if not 0.0 <= cfg.ema_decay <= 1.0:
        raise InputError(source, f"training option ema_decay {cfg.ema_decay} is outside [0, 1] (0: no weight average)")
    if cfg.ema_decay > 0 and cfg.ema_update_every < 1:
        raise InputError(source, f"training option ema_update_every {cfg.ema_update_every}: steps between "
                                 "updates of the weight average must be at least 1")
    if cfg.torso_body_frame not in ("off", "on", "auto"):
        raise InputError(source, f"training option torso_body_frame {cfg.torso_body_frame!r}: one of off, on, auto")
    if not cfg.torso_body_frame_min_sway >= 0:
        raise InputError(source, f"training option torso_body_frame_min_sway {cfg.torso_body_frame_min_sway}: "
                                 "a sway in shoulder widths, at least 0")
    if cfg.torso_body_frame == "on" and not cfg.torso_body_pose:
        raise InputError(source, "training option torso_body_frame 'on' needs torso_body_pose (the shoulders it maps)")
    if cfg.torso_body_flow and not cfg.torso_body_pose:
        raise InputError(source, "training option torso_body_flow needs torso_body_pose (the flow joins the "
                                 "shoulders' input)")
    if cfg.torso_retrieval < 0 or cfg.torso_retrieval_exclude < 0:
        raise InputError(source, f"training options torso_retrieval {cfg.torso_retrieval} / torso_retrieval_exclude "
                                 f"{cfg.torso_retrieval_exclude}: frame counts, at least 0")
    hi = cfg.torso_retrieval_exclude_max
    if hi is not None and (isinstance(hi, bool) or not isinstance(hi, int) or hi < cfg.torso_retrieval_exclude):
        raise InputError(source, f"training option torso_retrieval_exclude_max {hi!r}: a frame count at least "
                                 f"torso_retrieval_exclude ({cfg.torso_retrieval_exclude}), or null for the number "
                                 "of validation frames")
    if isinstance(cfg.frames_per_step, bool) or not isinstance(cfg.frames_per_step, int) \
            or not 1 <= cfg.frames_per_step <= cfg.rays_per_step:
        raise InputError(source, f"training option frames_per_step {cfg.frames_per_step!r}: a whole number of "
                                 f"frames from 1 to rays_per_step ({cfg.rays_per_step})")
    if not 0.0 <= cfg.mouth_rays <= 1.0:
        raise InputError(source, f"training option mouth_rays {cfg.mouth_rays}: a fraction of the head stage's "
                                 "rays, in [0, 1]")
    if cfg.torso_retrieval and not cfg.torso_body_pose:
        raise InputError(source, "training option torso_retrieval needs torso_body_pose (the body input it retrieves by)")
    if getattr(cfg, "audio_attention", "sigmoid") not in ("sigmoid", "linear"):
        raise InputError(source, f"training option audio_attention {cfg.audio_attention!r}: one of sigmoid, linear")
    return cfg


__all__ = ["TrainConfig", "check_method", "make_config"]
