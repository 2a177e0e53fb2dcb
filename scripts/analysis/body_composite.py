"""Where the body pixels' error of a quality-benchmark model comes from (docs/quality.md, "Where
the target is not met"): over the validation frames' ground-truth body pixels (parsing labels 2-3,
neck and torso), the MSE of the full render (head over torso over ``bc.jpg``), of the torso alone
over ``bc.jpg``, and of the torso's own retrieval input (cause 17: the mean of the K training frames
nearest the frame's body input), and the share of the body pixels the head covers (head alpha > 0.5)
with the share of the body error they hold. A diagnostic of this project, not a paper's metric.

    .venv/bin/python scripts/analysis/body_composite.py --workdir results/quality --label retrieval \
        rad_nerf:longhair_pt er_nerf:longhair_pt

Prints one line per ``method:identity`` (models in ``{workdir}/models/{label}/{method}/{identity}``,
datasets in ``{workdir}/results/data/{identity}``). Raises the loader's errors for a missing model
or dataset file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.models.registry import load_checkpoint  # noqa: E402
from pipeline.preprocess.parsing import read_parsing  # noqa: E402
from pipeline.train.data import TalkingDataset  # noqa: E402
from pipeline.train.trainer import frame_conditions  # noqa: E402


def body_composite(model_dir: Path, data_root: Path) -> dict:
    """The numbers above for one model. Returns ``{"full", "torso_over_bc", "retrieved"}`` (body
    MSE, channel mean, colours in [0, 1]; ``retrieved`` None for a torso without retrieval),
    ``"head_covered"`` (fraction of the body pixels) and ``"head_covered_error"`` (their fraction
    of the full render's body error)."""
    import cv2

    model, _ = load_checkpoint(model_dir / "torso.pt")
    model.eval()
    cfg = model.cfg
    data = TalkingDataset.for_config(data_root, cfg, ("train", "val"), max_frames={"val": None})
    val, H, W = data.splits["val"], data.H, data.W
    rr, cc = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pix = torch.stack([rr, cc], -1).reshape(-1, 2)
    xy = model.pixel_xy(pix)
    sums = dict.fromkeys(("full", "torso_over_bc", "retrieved", "covered_error"), 0.0)
    n = covered = 0
    for k in range(len(val)):
        c2w = model.scene_pose(val.poses[k])
        cond = frame_conditions(model, val, k, data.audio, torch.device("cpu"))
        with torch.no_grad():
            out = model.render_frame(c2w, cond, data.bc)
            t_rgb, t_a, _ = model.render_torso_pix(pix, c2w, cond)
            under = (t_rgb * t_a[:, None] + (1 - t_a[:, None]) * data.bc.reshape(-1, 3)).view(H, W, 3)
            ret = None
            if model.torso.retrieval_k:
                body = torch.cat([cond[name].reshape(-1) for name in model.torso_body_conditions()])
                ret = model.torso.retrieved_colour(xy, body).view(H, W, 3)
        gt = val.gt[k].float() / 255
        lab = cv2.resize(read_parsing(data_root / "parsing" / f"{val.ids[k]}.png"), (W, H),
                         interpolation=cv2.INTER_NEAREST)
        m = torch.from_numpy(np.isin(lab, (2, 3)))
        err = ((out["rgb"] - gt) ** 2).mean(-1)[m]
        sums["full"] += err.sum().item()
        sums["torso_over_bc"] += ((under - gt) ** 2).mean(-1)[m].sum().item()
        if ret is not None:
            sums["retrieved"] += ((ret - gt) ** 2).mean(-1)[m].sum().item()
        head = (out["head_alpha"] > 0.5)[m]
        sums["covered_error"] += err[head].sum().item()
        covered += int(head.sum())
        n += int(m.sum())
    n = max(n, 1)
    return {"full": sums["full"] / n, "torso_over_bc": sums["torso_over_bc"] / n,
            "retrieved": sums["retrieved"] / n if model.torso.retrieval_k else None,
            "head_covered": covered / n, "head_covered_error": sums["covered_error"] / max(sums["full"], 1e-12)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("results/quality"))
    ap.add_argument("--label", required=True)
    ap.add_argument("runs", nargs="+", help="method:identity")
    a = ap.parse_args()
    torch.set_num_threads(1)
    for spec in a.runs:
        method, ident = spec.split(":")
        r = body_composite(a.workdir / "models" / a.label / method / ident, a.workdir / "results" / "data" / ident)
        ret = "n/a" if r["retrieved"] is None else f"{r['retrieved']:.4f}"
        print(f"{a.label} {method} {ident}: body MSE full render {r['full']:.4f}, torso over bc {r['torso_over_bc']:.4f}, "
              f"retrieval input {ret}; head alpha > 0.5 on {100 * r['head_covered']:.1f} % of the body pixels, "
              f"holding {100 * r['head_covered_error']:.0f} % of the body error", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
