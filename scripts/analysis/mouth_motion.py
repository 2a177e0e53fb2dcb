"""Does a trained model move the mouth as the speaker did (docs/quality.md, cause 19)? Renders
frames of one split self-driven (each frame's own pose, audio and eye input), finds MediaPipe's
face mesh on the renders and on the ground truth (both at the model's resolution) and compares
their mouth openings (:func:`pipeline.oneshot.face.mouth_opening`: inner-lip gap over the
outer-eye-corner distance). A diagnostic of this project, not a paper's metric (LMD and LSE are
the papers' mouth metrics; LMD averages landmark distances over the frames, so a mouth that stays
half open scores as well as one that moves).

    .venv/bin/python scripts/analysis/mouth_motion.py --data results/data/German \
        --split train --every 2 --montage mouth_train.png results/models/rad_nerf/German

Prints one line per model directory (``torso.pt``): the spread (standard deviation over the
frames) of the render's and of the ground truth's mouth opening, their Pearson correlation, and
how much the audio alone changes the renders (mean over the frames of the largest |difference|, in
grey levels, between the render and the same frame rendered with the split's first frame's audio).
``--montage`` writes mouth crops, ground truth | render, of ten frames spread over the split's
range of mouth openings (closed at the top). Raises the loader's errors for a missing model or
dataset file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.models.registry import load_checkpoint  # noqa: E402
from pipeline.train.data import TalkingDataset  # noqa: E402
from pipeline.train.trainer import frame_conditions  # noqa: E402


def _rgb(out) -> np.ndarray:
    img = out if isinstance(out, torch.Tensor) else out["rgb"]
    return (img.clamp(0, 1).numpy() * 255).round().astype(np.uint8)


def mouth_motion(model_dir: Path, data_root: Path, split: str = "val", every: int = 1) -> dict:
    """The numbers above for one model, over every ``every``-th frame of ``split``.

    Returns :func:`mouth_statistics`'s dict and ``"audio_effect"`` (grey levels), plus
    ``"renders"``, ``"gts"`` (uint8 [H, W, 3] lists) and ``"mouths"`` ([F, 4] mouth boxes of
    :class:`pipeline.train.data.SplitData`) for :func:`montage`."""
    model, _ = load_checkpoint(model_dir / "torso.pt")
    model.eval()
    data = TalkingDataset.for_config(data_root, model.cfg, tuple(dict.fromkeys(("train", split))),
                                     max_frames={split: None})
    sp, cpu = data.splits[split], torch.device("cpu")
    ks = list(range(0, len(sp), max(1, every)))
    first = frame_conditions(model, sp, 0, data.audio, cpu)
    renders, gts, effect = [], [], []
    with torch.no_grad():
        for k in ks:
            c2w = model.scene_pose(sp.poses[k])
            cond = frame_conditions(model, sp, k, data.audio, cpu)
            img = _rgb(model.render_frame(c2w, cond, data.bc))
            other = _rgb(model.render_frame(c2w, {**cond, "audio": first["audio"]}, data.bc))
            renders.append(img)
            gts.append(sp.gt[k].numpy())
            effect.append(float(np.abs(img.astype(np.int16) - other.astype(np.int16)).max()))
    return {**mouth_statistics(renders, gts), "audio_effect": float(np.mean(effect)), "renders": renders,
            "gts": gts, "mouths": sp.mouth[ks].numpy()}


def mouth_statistics(renders: list[np.ndarray], gts: list[np.ndarray]) -> dict:
    """Mouth openings of paired frames (uint8 [H, W, 3] RGB each, same order) and how they agree.

    Returns ``{"frames", "render_std", "gt_std", "corr", "gt_opening"}``: the number of frames
    where MediaPipe's face mesh (VIDEO mode, :func:`pipeline.oneshot.face.track_frames`) is found
    on both images, the standard deviations over them of the render's and the ground truth's
    :func:`pipeline.oneshot.face.mouth_opening` (dimensionless; NaN without such frames), their
    Pearson correlation (NaN with fewer than 3 frames or a constant side) and the ground truth's
    opening of every frame ([N], NaN where no face was found)."""
    from pipeline.oneshot.face import mouth_opening, track_frames

    def opening(frames):
        try:
            track = track_frames(frames)
        except ValueError:                      # no face in any frame
            return np.full(len(frames), np.nan)
        return np.where(track.ok, mouth_opening(track.mesh), np.nan)

    mo_r, mo_g = opening(renders), opening(gts)
    ok = np.isfinite(mo_r) & np.isfinite(mo_g)
    a, b = mo_r[ok], mo_g[ok]
    corr = float(np.corrcoef(a, b)[0, 1]) if ok.sum() >= 3 and a.std() > 0 and b.std() > 0 else float("nan")
    return {"frames": int(ok.sum()), "render_std": float(a.std()) if ok.any() else float("nan"),
            "gt_std": float(b.std()) if ok.any() else float("nan"), "corr": corr, "gt_opening": mo_g}


def montage(result: dict, out: Path, rows: int = 10, half: tuple[int, int] = (16, 20), zoom: int = 4) -> None:
    """Write mouth crops (2*half[0] x 2*half[1] pixels around each mouth box's centre, ground truth
    | render, ``zoom`` x nearest-neighbour) of ``rows`` frames spread over the ground truth's
    mouth openings, closed at the top, to ``out`` (PNG)."""
    from PIL import Image

    mo = np.nan_to_num(result["gt_opening"], nan=-1.0)
    order = np.argsort(mo)
    order = order[mo[order] >= 0]
    pick = order[np.linspace(0, len(order) - 1, min(rows, len(order))).round().astype(int)]
    strips = []
    for i in pick:
        r0, r1, c0, c1 = result["mouths"][i].tolist()
        cr, cc = (r0 + r1) // 2, (c0 + c1) // 2
        g, r = result["gts"][i], result["renders"][i]
        pad = ((half[0], half[0]), (half[1], half[1]), (0, 0))
        g, r = np.pad(g, pad, mode="edge"), np.pad(r, pad, mode="edge")
        sl = (slice(cr, cr + 2 * half[0]), slice(cc, cc + 2 * half[1]))
        strips.append(np.concatenate([g[sl], r[sl]], 1))
    img = np.concatenate(strips, 0)
    Image.fromarray(img).resize((img.shape[1] * zoom, img.shape[0] * zoom), Image.NEAREST).save(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="dataset folder (results/data/ID)")
    ap.add_argument("--split", default="val", choices=("train", "val"))
    ap.add_argument("--every", type=int, default=1, help="render every N-th frame of the split")
    ap.add_argument("--montage", type=Path, help="PNG of mouth crops (one model: that path; more: NAME_{i}.png)")
    ap.add_argument("models", nargs="+", type=Path, help="model folders holding torso.pt")
    args = ap.parse_args(argv)
    for i, md in enumerate(args.models):
        res = mouth_motion(md, args.data, args.split, args.every)
        print(f"{md} [{args.split}, {res['frames']} frames]: mouth opening std render {res['render_std']:.4f} "
              f"vs ground truth {res['gt_std']:.4f}, correlation {res['corr']:.3f}; audio alone changes the "
              f"render by {res['audio_effect']:.1f} grey levels (mean over frames of the max)")
        if args.montage:
            out = args.montage if len(args.models) == 1 else \
                args.montage.with_name(f"{args.montage.stem}_{i}{args.montage.suffix}")
            montage(res, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
