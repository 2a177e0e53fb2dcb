"""What a blur costs each clip, and where the renders lie on it (docs/quality.md, "Where the
target is not met"): per identity, the pooled full-frame PSNR of its validation frames' ground
truth blurred by a Gaussian of sigma px (a line over the sigmas of
:func:`pipeline.train.quality.blur_equivalent`), and each run's render as a point at its
blur-equivalent sigma and pooled PSNR. A clip whose line lies lower loses more dB to the same blur;
points at the same sigma are equally sharp renders. A diagnostic of this project, not a paper's
metric.

    .venv/bin/python scripts/analysis/blur_curves.py --workdir results/quality --labels hairfix hairfix_seed1 \
        --out docs/assets/quality/blur_equivalent.png

Reads ``{workdir}/runs/{label}/{method}/{identity}.json`` (records scored since ``blur_equivalent``
exists; older records are skipped with a line saying so). Raises FileNotFoundError when no record
of the labels has the field.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("results/quality"))
    ap.add_argument("--labels", nargs="+", required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    curves, points = {}, {}
    for label in a.labels:
        for path in sorted((a.workdir / "runs" / label).glob("*/*.json")):
            rec = json.loads(path.read_text())
            be = rec.get("blur_equivalent")
            if not be:
                print(f"{path}: no blur_equivalent (scored before it existed), skipped")
                continue
            ident, method = path.stem, path.parent.name
            # blurs too small to change a pixel have no error: "inf" in the JSON, not drawn
            curves[ident] = sorted((float(s), float(p)) for s, p in be["psnr_blurred"].items() if float(p) < 1e9)
            if be["sigma"] is not None:
                points.setdefault(ident, []).append((be["sigma"], be["psnr_rendered"], method))
    if not curves:
        raise FileNotFoundError(f"no record of {a.labels} in {a.workdir}/runs has blur_equivalent (run --rescore)")
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    colours = plt.get_cmap("tab10")
    for i, ident in enumerate(sorted(curves)):
        s, p = zip(*curves[ident])
        ax.plot(s, p, color=colours(i), lw=1.5, label=ident)
        for sigma, psnr, method in points.get(ident, []):
            ax.plot(sigma, psnr, "o" if method == "rad_nerf" else "s", color=colours(i), ms=6, mec="black", mew=0.6)
    ax.set_xlim(0.3, 3)
    ax.set_ylim(20, 46)
    ax.set_xlabel("Gaussian blur of the ground truth, sigma (px at the training resolution)")
    ax.set_ylabel("full-frame PSNR of the validation frames, pooled (dB)")
    ax.set_title(f"Lines: the ground truth blurred; points: the renders (o rad_nerf, s er_nerf), runs {', '.join(a.labels)}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
