"""Building, saving and loading models of the registered methods (:mod:`pipeline.models.methods`);
:func:`load_trained` returns the renderer interface (:class:`pipeline.models.api.TrainedTalkingHead`).

Checkpoints of ``results/models/{method}/{identity}/`` (one per training stage, the final one is
the torso stage's): ``head.pt``, ``lips.pt``, ``torso.pt``; each is a ``torch.save`` dict with
``method``, ``config`` (the dataclass as a dict), ``meta`` (see :mod:`pipeline.models.model`),
``model`` (state dict), ``stage``, ``stages`` ({stage: {steps, seconds}}).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from pipeline.common.errors import InputError
from pipeline.models.api import FrameInput, TrainedTalkingHead
from pipeline.models.audio import audio_window
from pipeline.models.configs import TrainConfig, make_config
from pipeline.models.methods import get_method, method_names
from pipeline.models.model import TalkingHeadModel

#: stage checkpoints in the order they are produced; load_trained takes the last present one
STAGE_FILES = ("head.pt", "lips.pt", "torso.pt")

__all__ = ["STAGE_FILES", "build_model", "checkpoint_payload", "load_checkpoint",
           "load_trained", "NerfTalkingHead", "resolve_device"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda when available else cpu."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(cfg: TrainConfig, meta: dict) -> TalkingHeadModel:
    """A fresh model of ``cfg.method`` (seeded by the caller)."""
    get_method(cfg.method)
    return TalkingHeadModel(cfg, meta)


def checkpoint_payload(model: TalkingHeadModel, stage: str, stages: dict, **extra) -> dict:
    """The dict saved as a stage checkpoint."""
    return {"method": model.cfg.method, "config": dataclasses.asdict(model.cfg), "meta": model.meta,
            "model": model.state_dict(), "stage": stage, "stages": stages, **extra}


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[TalkingHeadModel, dict]:
    """Rebuild the model stored in a checkpoint file. Returns (model on ``device``, payload).

    Raises:
        InputError: unreadable file or unknown method.
    """
    path = Path(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise InputError(path, "checkpoint not found") from None
    except Exception as exc:  # noqa: BLE001 (corrupt file: user-facing reason)
        raise InputError(path, f"not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ck, dict) or "method" not in ck:
        raise InputError(path, "not a talking-head checkpoint (no 'method')")
    if ck["method"] not in method_names():
        raise InputError(path, f"checkpoint of unknown method {ck['method']!r} (registered: {', '.join(method_names())})")
    cfg = make_config(ck["method"], {k: v for k, v in ck["config"].items() if k != "method"}, str(path))
    model = build_model(cfg, ck["meta"])
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:      # e.g. an er_nerf checkpoint from before its adaptive-pose torso
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise InputError(path, f"does not match the current {ck['method']} model (made by older code? "
                               f"retrain it): {first}") from None
    return model.to(resolve_device(device)).eval(), ck


class NerfTalkingHead(TrainedTalkingHead):
    """A trained model of a registered method behind the renderer interface."""

    def __init__(self, model: TalkingHeadModel, payload: dict):
        self.model = model
        self.method = payload["method"]
        self.conditions = model.conditions
        self.device = next(model.parameters()).device
        # the head box is centred on the world origin (the tracked head frame)
        self.meta = {**model.meta, "device": str(self.device), "stage": payload.get("stage"),
                     "head_center": [0.0, 0.0, 0.0]}

    def audio_window(self, features: torch.Tensor, index: int) -> torch.Tensor:
        """The model's audio input for frame ``index``: ``features`` [N, ...] (aud_ds.npy / aud_hu.npy
        rows) -> [audio_window, ...], edge frames repeated at the clip's ends."""
        return audio_window(torch.as_tensor(features), index, self.model.cfg.audio_window)

    @torch.no_grad()
    def render(self, frame: FrameInput, torso: bool = True) -> dict[str, torch.Tensor]:
        """One frame at the model's H x W: the renderer interface of :class:`TrainedTalkingHead`
        (``frame.background`` [h, w, 3] in [0, 1] is resized to H x W when it differs)."""
        H, W = self.meta["H"], self.meta["W"]
        dev = self.device
        bg = frame.background.to(dev).float()
        if bg.shape[:2] != (H, W):
            bg = torch.nn.functional.interpolate(bg.permute(2, 0, 1)[None], size=(H, W), mode="bilinear",
                                                 align_corners=False)[0].permute(1, 2, 0)
        raw = {**frame.conditions, "audio": frame.audio.to(dev).float()}
        missing = [c for c in self.conditions if c not in raw]
        if missing:
            raise ValueError(f"{self.method} renders from conditions {list(self.conditions)}; missing {missing}")
        cond = self.model.encode(raw, dev)
        c2w = self.model.scene_pose(frame.c2w.to(dev))
        return self.model.render_frame(c2w, cond, bg, torso=torso)


def load_trained(model_dir: str | Path, device: str | torch.device = "cpu") -> NerfTalkingHead:
    """Load the last stage checkpoint (torso.pt, else lips.pt, else head.pt) of ``model_dir``.

    Raises:
        InputError: no checkpoint in ``model_dir``, or a checkpoint of an unknown method.
    """
    model_dir = Path(model_dir)
    for name in reversed(STAGE_FILES):
        if (model_dir / name).is_file():
            model, ck = load_checkpoint(model_dir / name, device)
            return NerfTalkingHead(model, ck)
    raise InputError(model_dir, f"no trained checkpoint ({', '.join(STAGE_FILES)}) in this folder")
