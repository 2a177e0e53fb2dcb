"""Evaluation metrics of the talking-head field, with their reference definitions.

One small pure function or class per metric (piq's style); each module names its reference:

=============  =========================================  ==================================
JSON name      definition                                 module
=============  =========================================  ==================================
psnr, ssim     per frame vs ground truth, mean over frames :mod:`pipeline.metrics.image`
lpips          LPIPS(net="alex"), [-1, 1] inputs           :mod:`pipeline.metrics.perceptual`
fid            pytorch-fid Inception pool3 (2048-d)        :mod:`pipeline.metrics.fid`
lmd, lmd_face  68-point landmark distance (mouth / face)   :mod:`pipeline.metrics.landmarks`
aue, aue_*     action-unit intensity error (17 AUs)        :mod:`pipeline.metrics.aue`
au_acc         lip-AU presence agreement (NeRF-3DTalker)    :mod:`pipeline.metrics.aue`
lmd_lips       MediaPipe lip-set landmark distance         :mod:`pipeline.metrics.lips`
lse_c, lse_d   SyncNet confidence / distance (Wav2Lip)     :mod:`pipeline.metrics.sync`
csim           identity cosine similarity                  :mod:`pipeline.metrics.identity`
cpbd           cumulative probability of blur detection    :mod:`pipeline.metrics.sharpness`
fps, training_time_s  read from the render / training manifests  :mod:`pipeline.metrics.compute`
=============  =========================================  ==================================

Every metric yields a :class:`MetricValue`: a number, or ``None`` with ``na_reason`` (missing
weights, too short a clip, no face found). Stand-in or random weights never produce a value.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

#: the tables' ``Training`` text for a model whose torso also saw the body pose
#: (``TrainConfig.torso_body_pose``; :func:`pipeline.metrics.compute.training_setup`)
BODY_POSE_TORSO = "torso + body pose"
#: the tables' ``Training`` text for a model whose torso also saw the body flow
#: (``TrainConfig.torso_body_flow``; :func:`pipeline.metrics.compute.training_setup`)
BODY_FLOW_TORSO = "torso + body flow"
#: the tables' ``Training`` text for a model whose torso also read the nearest training bodies
#: (``TrainConfig.torso_retrieval`` > 0; :func:`pipeline.metrics.compute.training_setup`)
RETRIEVAL_TORSO = "torso + retrieved bodies"
#: the tables' ``Training`` text for a model whose torso drew the body in its frame
#: (``TrainConfig.torso_body_frame``, on for that identity; :func:`pipeline.metrics.compute.training_setup`)
BODY_FRAME_TORSO = "torso in body frame"
#: the tables' ``Training`` text for a model whose head also saw the head-up input
#: (``TrainConfig.head_up``; :func:`pipeline.metrics.compute.training_setup`)
HEAD_UP_HEAD = "head + up axis"
#: the tables' ``Training`` text for a model whose head stage drew a step's rays from several frames
#: or put a share of them on the mouth (``TrainConfig.frames_per_step`` > 1 or
#: ``TrainConfig.mouth_rays`` > 0; :func:`pipeline.metrics.compute.training_setup`)
HEAD_RAYS_HEAD = "head rays over frames + mouth"

#: every metric name of the output JSON, in table order
METRIC_NAMES = ("psnr", "ssim", "lpips", "fid", "lmd", "lmd_face", "aue", "aue_lower", "aue_upper",
                "au_acc", "lmd_lips", "lse_c", "lse_d", "csim", "cpbd", "fps", "training_time_s")

#: config metric group (config ``metrics.self_driven`` / ``metrics.cross_driven``) -> JSON names
GROUPS = {
    "psnr": ("psnr",), "ssim": ("ssim",), "lpips": ("lpips",), "fid": ("fid",),
    "lmd": ("lmd", "lmd_face"), "aue": ("aue", "aue_lower", "aue_upper"),
    "lse": ("lse_c", "lse_d"), "csim": ("csim",), "cpbd": ("cpbd",),
    "au_acc": ("au_acc",), "lmd_lips": ("lmd_lips",),
}

#: groups that compare against ground-truth frames (self-driven protocol only); FID compares
#: frame sets: with the ground truth (self-driven) or with the identity's training frames
#: (cross-driven, when ``fid`` is in config ``metrics.cross_driven``)
NEEDS_GT = ("psnr", "ssim", "lpips", "lmd", "aue", "au_acc", "lmd_lips")


def training_frame_paths(data_dir, n: int | None = None, exclude: tuple[int, ...] = (),
                         prefer: tuple[str, ...] = ("gt_imgs", "ori_imgs")) -> list:
    """Image paths of an identity's training split: ``transforms_train.json`` frames, except the
    positions in ``exclude``, at most ``n`` evenly spaced ones (all when None), each the first
    existing ``{sub}/{img_id}.jpg`` for ``sub`` in ``prefer``. Empty without a training split.

    Args:
        data_dir: ``results/data/{identity}``.
    """
    import json
    from pathlib import Path

    data_dir = Path(data_dir)
    tj = data_dir / "transforms_train.json"
    if not tj.is_file():
        return []
    frames = json.loads(tj.read_text()).get("frames") or []
    ids = [int(f.get("img_id", i)) for i, f in enumerate(frames) if i not in exclude]
    if n is not None and len(ids) > n:
        ids = [ids[round(k * (len(ids) - 1) / (n - 1))] for k in range(n)] if n > 1 else ids[:1]
    out = []
    for i in ids:
        for sub in prefer:
            if (data_dir / sub / f"{i}.jpg").is_file():
                out.append(data_dir / sub / f"{i}.jpg")
                break
    return out


@dataclass
class MetricValue:
    """One metric of one render.

    Attributes:
        value: the number (``math.inf`` possible for PSNR of identical frames), or None when n/a.
        backend: what produced it ("scikit-image", "dlib-68 (face_recognition_models)", ...).
        weights_sha256: sha256 of the pretrained file used, None when no weights are involved.
        na_reason: why ``value`` is None (one line), else None.
        n_frames: number of frames the value is computed over.
        note: what the reader must know about the value, e.g. frames left out (``"render: no face
            in 3 of 28 frames (not scored)"``); None when nothing.
    """

    value: float | None
    backend: str | None
    weights_sha256: str | None = None
    na_reason: str | None = None
    n_frames: int = 0
    note: str | None = None

    @classmethod
    def na(cls, reason: str, backend: str | None = None, n_frames: int = 0) -> "MetricValue":
        """A not-available value with its reason."""
        return cls(None, backend, None, reason, n_frames)

    def to_json(self) -> dict:
        """The JSON shape ``{"value", "backend", "weights_sha256", "na_reason", "n_frames", "note"}``."""
        d = asdict(self)
        if d["value"] is not None:
            d["value"] = float(d["value"])
        return d

    @property
    def available(self) -> bool:
        """True when the metric has a value (not n/a: neither None nor NaN)."""
        return self.value is not None and not (isinstance(self.value, float) and math.isnan(self.value))
