"""The conditioning contract: the per-frame conditions a method consumes.

A method declares its conditions (:class:`Condition`: name, per-frame shape, the dataset artefact
that provides it in training and self-driven renders, the render control that overrides it, and
how a raw value is encoded for the field). The data provider (:mod:`pipeline.train.data`), the
trainer, the occupancy-grid update and every render protocol (:mod:`pipeline.render.protocol`)
build them from these declarations; no part of them names a particular condition except through
this module.

Per frame the model sees one **raw record** ``{name: value}``: ``audio`` is the window of audio
feature rows around the frame ([W, T, C], built by the model, see
:func:`pipeline.models.audio.audio_window`), every other condition one row of its artefact's
per-frame table (indexed by ``img_id``). The model encodes the raw record into the **condition
record** its field receives (``audio`` -> AudioNet/AudioAttNet code, ``eye`` -> eye input in
[0, 1], ...; :meth:`Condition.encode`).

This module imports no torch at import time (the Snakefile reads the registry at start-up).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from pipeline.common.errors import InputError

if TYPE_CHECKING:  # annotations only: no torch at import time
    import torch


@dataclass(frozen=True)
class Condition:
    """One per-frame condition of a method.

    Attributes:
        name: key in the raw and encoded records (``audio``, ``eye``, ``emotion``, ...).
        shape: shape of one frame's raw value (``audio``: ``("W", "T", "C")`` symbolic).
        artefact: dataset file that provides it, relative to the dataset folder
            (``au.csv``, ``emotion.npy``; ``audio``: the configured feature file).
        control: name of the render control (config ``render.controls``) that overrides it for
            every frame, or None.
        doc: one line for the docs and error messages.
        load: ``(dataset_root, n_frames) -> [n_frames, *shape]`` float32 per-frame table indexed
            by ``img_id`` (None for ``audio``); raises :class:`InputError` naming the file.
        encode: raw value (tensor of ``shape``) -> field input tensor (default: float32 as is).
        summarize: ``[N, *shape]`` training values -> a JSON-able summary stored in the model's
            ``meta["condition_values"][name]`` (e.g. the emotion labels trained with), or None.
    """

    name: str
    shape: tuple
    artefact: str
    control: str | None = None
    doc: str = ""
    load: Callable[[Path, int], np.ndarray] | None = field(default=None, compare=False)
    encode: Callable[[Any], Any] | None = field(default=None, compare=False)
    summarize: Callable[[np.ndarray], Any] | None = field(default=None, compare=False)

    def read(self, root: str | Path, n_frames: int, method: str) -> np.ndarray:
        """The per-frame table of this condition for a dataset with frames 0..n_frames-1.

        Raises:
            InputError: the artefact is missing (naming the file and ``method``) or malformed.
        """
        path = Path(root) / self.artefact
        if not path.is_file():
            raise InputError(path, f"file not found (method {method} needs it for its {self.name!r} condition: "
                                   f"{self.doc})")
        assert self.load is not None, self.name
        values = np.asarray(self.load(path, n_frames), np.float32)
        if len(values) < n_frames:
            raise InputError(path, f"{len(values)} rows but the transforms reference frame {n_frames - 1}")
        return values

    def encode_value(self, value):
        """Raw value -> field input (float32 tensor)."""
        import torch

        value = torch.as_tensor(value, dtype=torch.float32)
        return self.encode(value) if self.encode is not None else value


def eye_value(au45: "float | np.ndarray | torch.Tensor") -> "torch.Tensor":
    """AU45_r intensity (0..5) -> eye input in [0, 1] (RAD-NeRF: clip to [0, 2], divide by 2).

    Returns a [1] float32 tensor."""
    import torch

    return torch.as_tensor(au45, dtype=torch.float32).clamp(0.0, 2.0).reshape(1) / 2.0


def read_au45(path: Path, n_needed: int) -> np.ndarray:
    """AU45_r column of an OpenFace CSV (headers may have leading spaces). Returns [rows] float32.

    Raises: InputError (missing file/column, fewer rows than ``n_needed``)."""
    if not path.is_file():
        raise InputError(path, "file not found (needed for the eye/blink input)")
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise InputError(path, "empty CSV")
    header = [h.strip() for h in rows[0]]
    if "AU45_r" not in header:
        raise InputError(path, "no AU45_r column (OpenFace format expected)")
    col = header.index("AU45_r")
    try:
        vals = np.array([float(r[col]) for r in rows[1:] if r], np.float32)
    except (ValueError, IndexError):
        raise InputError(path, "AU45_r has a non-numeric value") from None
    if len(vals) < n_needed:
        raise InputError(path, f"{len(vals)} rows but the transforms reference frame {n_needed - 1}")
    return vals


def _load_au45(path: Path, n_frames: int) -> np.ndarray:
    return read_au45(path, n_frames)[:, None]


#: audio feature window (built from the dataset's configured audio feature file)
AUDIO = Condition("audio", ("W", "T", "C"), "aud_{feature}.npy", None,
                  "window of audio feature rows centred on the frame (config train.audio_feature)")
#: eye closure (OpenFace AU45_r of au.csv); render control ``eye_openness``
EYE = Condition("eye", (1,), "au.csv", "eye_openness", "AU45_r blink intensity per frame",
                load=_load_au45, encode=eye_value)



def _load_emotion(path: Path, n_frames: int) -> np.ndarray:
    from pipeline.common.emotion import CODE_DIM

    try:
        codes = np.load(path)
    except ValueError as exc:
        raise InputError(path, f"not a .npy array ({exc})") from None
    if codes.ndim != 2 or codes.shape[1] != CODE_DIM:
        raise InputError(path, f"expected [N, {CODE_DIM}] emotion codes, got shape {list(codes.shape)}")
    unlabelled = np.flatnonzero(codes[:n_frames].sum(1) == 0)
    if len(unlabelled):
        raise InputError(path, f"frame {int(unlabelled[0])} has no emotion label (set the identity's emotion "
                               "column in the identities table, e.g. 'happy:3')")
    return codes


def _emotion_labels(values: np.ndarray) -> list[str]:
    from pipeline.common.emotion import code_label

    return sorted({code_label(v) for v in values})


#: emotion code e in R^8 (AED-NeRF): one-hot category ++ one-hot level, emotion.npy of the
#: dataset (pipeline.preprocess.emotion); render control ``emotion`` (``happy:3``)
EMOTION = Condition("emotion", (8,), "emotion.npy", "emotion",
                    "per-frame emotion code from the identities table's emotion column",
                    load=_load_emotion, summarize=_emotion_labels)

def _load_body_pose(path: Path, n_frames: int) -> np.ndarray:
    from pipeline.preprocess.body_pose import N_LANDMARKS, SHOULDERS

    try:
        lm = np.load(path)
    except ValueError as exc:
        raise InputError(path, f"not a .npy array ({exc})") from None
    if lm.ndim != 3 or lm.shape[1:] != (N_LANDMARKS, 4):
        raise InputError(path, f"expected [N, {N_LANDMARKS}, 4] MediaPipe Pose landmarks, got shape {list(lm.shape)}")
    xy = lm[:, list(SHOULDERS), :2].reshape(len(lm), 4)
    if not np.isfinite(xy[:n_frames]).all():
        bad = int(np.flatnonzero(~np.isfinite(xy[:n_frames]).all(1))[0])
        raise InputError(path, f"frame {bad} has no shoulder landmarks (MediaPipe Pose found no body, see "
                               "body_pose.json): train this identity with train.overrides torso_body_pose: false")
    return xy * 2.0 - 1.0


def _body_pose_stats(values: np.ndarray) -> dict:
    return {"mean": [float(v) for v in values.mean(0)], "std": [float(v) for v in values.std(0)]}


#: body pose: image positions of the two shoulders (MediaPipe Pose landmarks 11 and 12, x and y
#: in [-1, 1] of the frame: ``2 * (x, y) - 1``), body_pose.npy of the dataset
#: (:mod:`pipeline.preprocess.body_pose`). Consumed by the torso when ``torso_body_pose`` is on
#: (not a condition of RAD-NeRF or ER-NeRF as published); its training mean and standard
#: deviation are kept in the model's meta.
BODY_POSE = Condition("body_pose", (4,), "body_pose.npy", None,
                      "shoulder positions per frame (MediaPipe Pose, body_pose.npy)",
                      load=_load_body_pose, summarize=_body_pose_stats)

def _load_body_flow(path: Path, n_frames: int) -> np.ndarray:
    from pipeline.preprocess.body_flow import GRID

    try:
        flow = np.load(path)
    except ValueError as exc:
        raise InputError(path, f"not a .npy array ({exc})") from None
    if flow.ndim != 3 or flow.shape[1:] != (GRID * GRID, 2):
        raise InputError(path, f"expected [N, {GRID * GRID}, 2] cell displacements, got shape {list(flow.shape)}")
    flow = flow.reshape(len(flow), -1)
    if not np.isfinite(flow[:n_frames]).all():
        bad = int(np.flatnonzero(~np.isfinite(flow[:n_frames]).all(1))[0])
        raise InputError(path, f"frame {bad} has a non-finite body flow")
    return flow


#: body flow: the mean optical flow (reference frame -> this frame) of the 3 x 3 cells of the body
#: (neck and torso), x and y in the frame's [-1, 1] units, flattened to 18 numbers,
#: body_flow.npy of the dataset (:mod:`pipeline.preprocess.body_flow`). Consumed by the torso when
#: ``torso_body_flow`` is on (not a condition of RAD-NeRF or ER-NeRF as published); its training
#: mean and standard deviation are kept in the model's meta.
BODY_FLOW = Condition("body_flow", (18,), "body_flow.npy", None,
                      "optical flow of the body's 3 x 3 cells per frame (body_flow.npy)",
                      load=_load_body_flow, summarize=_body_pose_stats)

#: every condition a registered method may declare, by name
CONDITIONS: dict[str, Condition] = {c.name: c for c in (AUDIO, EYE, EMOTION, BODY_POSE, BODY_FLOW)}


def register_condition(cond: Condition) -> Condition:
    """Make ``cond`` known by name (a method module declaring a new condition calls this once)."""
    CONDITIONS[cond.name] = cond
    return cond


def get_condition(name: str) -> Condition:
    """The declared condition ``name``. Raises KeyError listing the known ones."""
    if name not in CONDITIONS:
        raise KeyError(f"unknown condition {name!r} (known: {', '.join(CONDITIONS)})")
    return CONDITIONS[name]
