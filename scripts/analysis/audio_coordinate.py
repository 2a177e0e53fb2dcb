"""Where does a RAD-NeRF head put its audio coordinate (docs/quality.md, "The mouth hardly moves")?

RAD-NeRF (Tang et al. 2022, Sec. 3.2) maps each point's position encoding and the frame's audio
code to a 2-D audio coordinate ``a = tanh(MLP([enc(x), aud]))`` in [-1, 1]^2 and reads a 2-D hash
grid there (:class:`pipeline.models.methods.rad_nerf.RadNeRFField`). The audio can change the render
only where ``a`` moves with the audio, and only if it stays off tanh's saturation (where the
coordinate is stuck at a corner of the grid and its gradient vanishes). A diagnostic of this
project, not a paper's metric.

    .venv/bin/python scripts/analysis/audio_coordinate.py --data results/data/German \
        results/models/rad_nerf/German/torso.pt

Prints one line per checkpoint: over the ``--points`` points of highest head density (out of
200,000 drawn uniformly in the head's [-1, 1]^3 box, rendered with the split's first frame) and
every ``--every``-th frame of the split (each frame's own audio; the first frame's pose and eye
value, so that only the audio changes): the mean |a|, the share of coordinates with |a| > 0.99
(saturated), the standard deviation of ``a`` over the frames (mean over points and the two axes:
how far the audio moves the coordinate; the finest level of a grid of resolution R over [-1, 1]
has cells 2/R wide), and that of the audio code itself (mean over its channels). Raises
``ValueError`` for a model without an audio coordinate (not ``rad_nerf`` or a method built on its
field), and the loader's errors for a missing checkpoint or dataset file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.models.registry import load_checkpoint  # noqa: E402
from pipeline.train.data import TalkingDataset  # noqa: E402
from pipeline.train.trainer import frame_conditions  # noqa: E402

#: |a| above this counts as saturated (tanh' = 1 - a^2 < 0.02)
SATURATED = 0.99


@torch.no_grad()
def audio_coordinate(model, data: TalkingDataset, split: str = "train", every: int = 4, points: int = 2000,
                     seed: int = 0) -> dict[str, float]:
    """Statistics of the audio coordinate of ``model`` (a loaded :class:`TalkingHeadModel` whose head
    has ``amb_net``) over every ``every``-th frame of ``data.splits[split]``.

    Returns ``mean_abs`` (mean |a|, in [0, 1]), ``saturated`` (share of |a| > :data:`SATURATED`),
    ``frame_std`` (standard deviation over frames, mean over points and axes, in the coordinate's
    [-1, 1] units), ``audio_std`` (the encoded audio code's standard deviation over frames, mean over
    channels) and ``frames``, ``points``. Raises ``ValueError`` when the head has no audio coordinate."""
    head = model.head
    if not hasattr(head, "amb_net"):
        raise ValueError(f"{type(head).__name__} has no audio coordinate (RAD-NeRF's amb_net)")
    sp, cpu = data.splits[split], torch.device("cpu")
    c2w = model.scene_pose(sp.poses[0])
    first = model.with_pose_inputs(frame_conditions(model, sp, 0, data.audio, cpu), c2w)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(200_000, 3, generator=gen) * 2 - 1
    sigma = head._sigma(head._hidden(x, first)[0]).reshape(-1)
    x = x[torch.argsort(sigma, descending=True)[:points]]
    coords, codes = [], []
    for k in range(0, len(sp), max(1, every)):
        audio = frame_conditions(model, sp, k, data.audio, cpu)["audio"]
        coords.append(head._hidden(x, {**first, "audio": audio})[1])
        codes.append(audio.reshape(-1))
    a, code = torch.stack(coords), torch.stack(codes)          # [F, P, 2], [F, C]
    return {"mean_abs": float(a.abs().mean()), "saturated": float((a.abs() > SATURATED).float().mean()),
            "frame_std": float(a.std(0).mean()), "audio_std": float(code.std(0).mean()),
            "frames": int(a.shape[0]), "points": int(a.shape[1])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path, help="head.pt, lips.pt or torso.pt")
    ap.add_argument("--data", type=Path, required=True, help="dataset folder (results/data/ID)")
    ap.add_argument("--split", choices=("train", "val"), default="train")
    ap.add_argument("--every", type=int, default=4, help="use every N-th frame of the split")
    ap.add_argument("--points", type=int, default=2000)
    a = ap.parse_args(argv)
    for ck in a.checkpoints:
        model, _ = load_checkpoint(ck)
        model.eval()
        data = TalkingDataset.for_config(a.data, model.cfg, tuple(dict.fromkeys(("train", a.split))),
                                         max_frames={a.split: None})
        s = audio_coordinate(model, data, a.split, a.every, a.points)
        print(f"{ck} [{a.split}, {s['frames']} frames, {s['points']} points]: mean |a| {s['mean_abs']:.4f}, "
              f"saturated {s['saturated']:.3f}, std over frames {s['frame_std']:.4f}; "
              f"audio code std over frames {s['audio_std']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
