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
grey levels, between the render and the same frame rendered with the split's first frame's audio:
every key of :data:`AUDIO_KEYS` the model's conditions hold),
and where: the share of that difference (summed over the pixels and frames) inside each frame's
mouth box (:class:`pipeline.train.data.SplitData`'s ``mouth``: the box of the 68-point mouth
landmarks 48-67), beside the share of the frame that box covers. ``--audio-map`` draws where
the audio changes the renders (:func:`audio_map_image`). ``--montage`` writes mouth crops, ground
truth | render, of ten frames spread over the split's range of mouth openings (closed at the
top). Raises the loader's errors for a missing model or dataset file.
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


#: the condition keys the audio reaches a head through: the audio code, and the raw audio window of
#: fields that read it (``reads_audio_window``: NeRF-3DTalker's speech branch)
AUDIO_KEYS = ("audio", "audio_window")


def mouth_motion(model_dir: Path, data_root: Path, split: str = "val", every: int = 1) -> dict:
    """The numbers above for one model, over every ``every``-th frame of ``split``.

    Returns :func:`mouth_statistics`'s dict, ``"audio_effect"`` (grey levels),
    :func:`audio_effect_share`'s ``"audio_in_mouth"`` and ``"mouth_area"`` (0-1), ``"audio_map"``
    ([H, W] float, the mean over the frames of the |difference| the audio makes, summed over RGB,
    grey levels; for :func:`audio_map_image`), plus ``"renders"``, ``"gts"`` (uint8 [H, W, 3]
    lists) and ``"mouths"`` ([F, 4] mouth boxes of :class:`pipeline.train.data.SplitData`) for
    :func:`montage`."""
    model, _ = load_checkpoint(model_dir / "torso.pt")
    model.eval()
    data = TalkingDataset.for_config(data_root, model.cfg, tuple(dict.fromkeys(("train", split))),
                                     max_frames={split: None})
    sp, cpu = data.splits[split], torch.device("cpu")
    ks = list(range(0, len(sp), max(1, every)))
    first = frame_conditions(model, sp, 0, data.audio, cpu)
    renders, gts, effect, diffs = [], [], [], []
    with torch.no_grad():
        for k in ks:
            c2w = model.scene_pose(sp.poses[k])
            cond = frame_conditions(model, sp, k, data.audio, cpu)
            img = _rgb(model.render_frame(c2w, cond, data.bc))
            other = _rgb(model.render_frame(c2w, {**cond, **{a: first[a] for a in AUDIO_KEYS if a in cond}},
                                            data.bc))
            renders.append(img)
            gts.append(sp.gt[k].numpy())
            diff = np.abs(img.astype(np.int16) - other.astype(np.int16))
            effect.append(float(diff.max()))
            diffs.append(diff.sum(-1))
    mouths = sp.mouth[ks].numpy()
    return {**mouth_statistics(renders, gts), "audio_effect": float(np.mean(effect)),
            **audio_effect_share(diffs, mouths), "audio_map": np.mean(diffs, 0), "renders": renders,
            "gts": gts, "mouths": mouths}


def audio_map_image(result: dict) -> np.ndarray:
    """uint8 [H, 2W, 3]: the split's first render | the same darkened to 40 % with the mean
    |difference| the audio makes per pixel (``result["audio_map"]`` [H, W], :func:`mouth_motion`)
    added in orange, scaled so that its largest value is full red."""
    img = result["renders"][0].astype(np.float64)
    m = result["audio_map"] / max(float(result["audio_map"].max()), 1e-12)
    heat = np.stack([m, 0.3 * m, np.zeros_like(m)], -1) * 255
    return np.concatenate([img, np.clip(0.4 * img + heat, 0, 255)], 1).round().astype(np.uint8)


def audio_effect_share(diffs: list[np.ndarray], boxes: np.ndarray) -> dict:
    """Where the audio changes the renders: ``{"audio_in_mouth", "mouth_area"}``, the share (0-1) of
    the summed |difference| ``diffs`` (per frame [H, W], any non-negative unit) inside each frame's
    box ``boxes`` [F, 4] (row0, row1, col0, col1, end-exclusive pixels), and the mean share of the
    frame's pixels the boxes cover. ``audio_in_mouth`` is NaN when the audio changes nothing.

    Raises:
        ValueError: ``diffs`` and ``boxes`` differ in length.
    """
    if len(diffs) != len(boxes):
        raise ValueError(f"{len(diffs)} difference maps for {len(boxes)} mouth boxes")
    inside = total = area = 0.0
    for d, (r0, r1, c0, c1) in zip(diffs, np.asarray(boxes, dtype=int)):
        inside += float(d[r0:r1, c0:c1].sum())
        total += float(d.sum())
        area += d[r0:r1, c0:c1].size / d.size
    return {"audio_in_mouth": inside / total if total > 0 else float("nan"),
            "mouth_area": area / max(len(diffs), 1)}


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
    ap.add_argument("--audio-map", type=Path, help="PNG: where the audio changes the renders, one row per model "
                    "(first render | mean |difference|, audio_map_image), 3x enlarged")
    ap.add_argument("models", nargs="+", type=Path, help="model folders holding torso.pt")
    args = ap.parse_args(argv)
    maps = []
    for i, md in enumerate(args.models):
        res = mouth_motion(md, args.data, args.split, args.every)
        maps.append(audio_map_image(res))
        print(f"{md} [{args.split}, {res['frames']} frames]: mouth opening std render {res['render_std']:.4f} "
              f"vs ground truth {res['gt_std']:.4f}, correlation {res['corr']:.3f}; audio alone changes the "
              f"render by {res['audio_effect']:.1f} grey levels (mean over frames of the max), "
              f"{100 * res['audio_in_mouth']:.0f} % of it inside the mouth box ({100 * res['mouth_area']:.1f} % "
              f"of the frame)")
        if args.montage:
            out = args.montage if len(args.models) == 1 else \
                args.montage.with_name(f"{args.montage.stem}_{i}{args.montage.suffix}")
            montage(res, out)
    if args.audio_map:
        from PIL import Image

        img = np.concatenate(maps, 0)
        Image.fromarray(img).resize((img.shape[1] * 3, img.shape[0] * 3), Image.NEAREST).save(args.audio_map)
    return 0


if __name__ == "__main__":
    sys.exit(main())
