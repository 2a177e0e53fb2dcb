"""Training profiles: named sets of config values applied over a method's defaults, then
``train.overrides`` (per key) on top.

* ``quick``: CPU, reduced resolution (128 px) and steps; the sample identity trains in a few
  minutes per method including the torso. Learning rates 3x the anchors' (``lr_grid`` 3e-2,
  ``lr_net`` 3e-3): with a few hundred steps the anchors' rates left heads and torsos
  under-fitted (+0.5 to +2.8 dB val PSNR on the moving speakers, docs/quality.md). 4200 head
  steps (2100 until rows ``head4200*`` of docs/quality.md measured +0.17 / +0.07 dB mean over the
  eight real clips, ``rad_nerf`` / ``er_nerf``, every clip but the sample at least as good): the
  heads of moving speakers still gain from steps. The default job trains the sample with 2100
  (config.yaml ``train.overrides``): the sample gains nothing from the other 2100, which took the
  job past its 20 minutes on the slower 2-core machines (README). Validation renders every frame
  of ``transforms_val.json`` (``val_frames`` 0, as the anchors' test): 6 frames spread over it measured the same ``rad_nerf`` models 0.26 dB
  above to 0.13 dB below the whole split (docs/quality.md row ``all_val``; about 0.3 s per frame
  at 128 px). The torso also sees the body pose (``torso_body_pose``, docs/quality.md cause 12)
  and the head the camera's up axis in head coordinates (``head_up``, cause 14); a torso whose
  body sways is drawn in the shoulders' frame (``torso_body_frame: auto``, cause 15), and the
  torso also sees the body flow (``torso_body_flow``, cause 16) and reads the mean colour of the 5
  training frames nearest its body input (``torso_retrieval``, cause 17); none of these is part of the papers, whose set-up the ``paper`` profile keeps.
  A method may set values of its own in a profile (:attr:`pipeline.models.methods.MethodSpec.profile_values`,
  :func:`method_profile_values`): ``er_nerf`` takes each head step's rays from 4 frames with a
  quarter on the mouth in ``quick`` (``frames_per_step``, ``mouth_rays``; docs/quality.md, "The
  mouth hardly moves"), and ``rad_nerf`` the same with RAD-NeRF's audio-coordinate loss outside
  the lower face (``lambda_amb_face`` 0.01; "Where the audio acts").
* ``paper``: the papers' step counts at 512x512, for a GPU (RAD-NeRF: 200k head, 50k lips, 200k
  torso; ER-NeRF: 100k head, 25k lips, 200k torso).
* ``smoke``: a few dozen steps at 64 px, for fast tests and the SLURM test; never for results.
"""
from __future__ import annotations

from pipeline.common.errors import InputError
from pipeline.models.configs import TrainConfig, make_config

PROFILES: dict[str, dict] = {
    "quick": dict(resolution=128, levels=8, features=2, log2_hashmap=15, max_resolution=256, hidden=64,
                  n_samples=24, occ_resolution=32, occ_update_every=16, occ_warmup=64, torso_levels=8,
                  torso_resolution=256, rays_per_step=512, head_steps=4200, lips_steps=40, torso_steps=1500,
                  lips_patch=24, checkpoint_every=100, val_frames=0, lr_grid=3e-2, lr_net=3e-3, lr_final=0.2,
                  lambda_head_alpha=0.05, torso_body_pose=True, torso_body_flow=True, torso_body_frame="auto",
                  head_up=True, torso_retrieval=5,
                  ema_update_every=10),
    "paper": dict(resolution=512),
    "smoke": dict(resolution=64, levels=4, features=2, log2_hashmap=12, max_resolution=128, hidden=32,
                  n_samples=16, occ_resolution=16, occ_update_every=8, occ_warmup=8, occ_conditions=2,
                  torso_levels=4, torso_resolution=64, rays_per_step=256, head_steps=30, lips_steps=6,
                  torso_steps=10, lips_patch=16, checkpoint_every=10, val_frames=2, ema_update_every=1),
}


#: override keys that only a later training stage reads (pipeline/train/trainer.py: the lips patch,
#: steps and LPIPS weight in the lips stage, the torso steps and the validation frames in the torso
#: stage). The rules leave them out of an earlier stage's ``--cfg`` (:func:`stage_train_cfg`), so
#: that changing one retrains that stage and the ones after it, not the head before it.
LATER_STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "head": ("lips_steps", "lips_patch", "lambda_lpips", "torso_steps", "val_frames"),
    "lips": ("torso_steps", "val_frames"),
    "torso": (),
}


def stage_train_cfg(train_cfg: dict, stage: str) -> dict:
    """The ``train`` section of config.yaml as stage ``stage`` (head, lips or torso) gets it: without
    ``methods`` (one job trains one method) and without the overrides of :data:`LATER_STAGE_KEYS`.

    Raises:
        KeyError: an unknown stage.
    """
    drop = LATER_STAGE_KEYS[stage]
    out = {k: v for k, v in train_cfg.items() if k != "methods"}
    if out.get("overrides"):
        out["overrides"] = {k: v for k, v in out["overrides"].items() if k not in drop}
    return out


def paper_steps(method: str, source: str = "config.yaml") -> dict[str, int]:
    """The papers' step counts of ``method`` (``paper`` profile), declared by its module
    (:attr:`pipeline.models.methods.MethodSpec.paper_steps`)."""
    from pipeline.models.methods import get_method

    return dict(get_method(method, source).paper_steps)


def method_profile_values(method: str, profile: str, source: str = "config.yaml") -> dict:
    """The config values ``method`` sets in ``profile``
    (:attr:`pipeline.models.methods.MethodSpec.profile_values`; ``{}`` when it sets none there).

    Raises:
        InputError: ``method`` is not a registered method (naming ``source``).
    """
    from pipeline.models.methods import get_method

    return dict(get_method(method, source).profile_values.get(profile, {}))


def resolve_config(method: str, train_cfg: dict, source: str = "config.yaml") -> TrainConfig:
    """The config of ``method`` from the ``train`` section of config.yaml (``profile``,
    ``overrides``, ``seed``, ``device``, ``audio_feature``).

    With ``torso_body_pose`` off the profile's body flow and retrieval (which read the body pose)
    are off too, unless the overrides set them.

    Raises:
        InputError: unknown method, profile or override key, or an override that needs another
            one off (naming ``source``; :func:`pipeline.models.configs.make_config`).
    """
    profile = train_cfg.get("profile", "quick")
    if profile not in PROFILES:
        raise InputError(source, f"unknown train.profile {profile!r} (one of {', '.join(PROFILES)})")
    values = dict(PROFILES[profile])
    if profile == "paper":
        values.update(paper_steps(method, source))
    values.update(method_profile_values(method, profile, source))
    for key in ("seed", "device", "audio_feature"):
        if key in train_cfg:
            values[key] = train_cfg[key]
    overrides = train_cfg.get("overrides") or {}
    values.update(overrides)
    if not values.get("torso_body_pose", False):
        # the profile's torso inputs that read the body pose follow it off (a face-only clip:
        # `torso_body_pose: false` alone gives the papers' torso); set explicitly, they are refused
        for key, off in (("torso_body_flow", False), ("torso_retrieval", 0)):
            if key not in overrides:
                values[key] = off
    values["profile"] = profile
    return make_config(method, values, source)
