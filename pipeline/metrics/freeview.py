"""Metrics of the free-view protocol (:mod:`pipeline.render.freeview`) and its table.

There is no ground truth at a novel view, so per view (yaw / pitch offset of the camera about the
head centre):

* ``csim``: identity consistency with the frontal render: per frame, the cosine similarity of the
  face embedding of the view's frame and of the frontal frame (ArcFace when its weights are
  present, else dlib's 128-d descriptor, named in the backend: :mod:`pipeline.metrics.identity`),
  mean over the frames where both faces are found (the others are counted in the note);
* ``cpbd``: sharpness of the view's frames (:mod:`pipeline.metrics.sharpness`), mean over frames.

``python -m pipeline.metrics.freeview metrics --renders results/renders/{m}/{i}/freeview --out
results/metrics/{m}/{i}/freeview.json`` and ``python -m pipeline.metrics.freeview table --out-md
results/tables/free_view.md --out-csv results/tables/free_view.csv JSON...``.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from pipeline.common.errors import InputError
from pipeline.common.io import atomic_write, atomic_write_json, read_json
from pipeline.common.log import run_main, setup_logging
from pipeline.metrics import MetricValue


def view_csim(embed, view_frames: list[np.ndarray], front_frames: list[np.ndarray]) -> MetricValue:
    """CSIM of a view against the frontal render, frame by frame (see module docstring).

    Args:
        embed: ``rgb [H, W, 3] uint8 -> embedding or None`` (with a ``backend`` attribute).
        view_frames, front_frames: the same number of frames of the view and of the front.
    """
    from pipeline.metrics.identity import cosine_similarity

    sims, missing = [], 0
    for v, f in zip(view_frames, front_frames):
        ev, ef = embed(v), embed(f)
        if ev is None or ef is None:
            missing += 1
            continue
        sims.append(float(cosine_similarity(ev, ef)))
    note = f"no face in the view or the frontal frame in {missing} of {len(view_frames)} frames (not scored)" \
        if missing else None
    if not sims:
        return MetricValue(None, embed.backend, getattr(embed, "weights_sha256", None),
                           f"no face pair found in any of {len(view_frames)} frames", 0, note)
    return MetricValue(float(np.mean(sims)), embed.backend,
                       getattr(embed, "weights_sha256", None), None, len(sims), note)


def _frames(folder: Path) -> list[np.ndarray]:
    from pipeline.metrics.compute import read_rgb

    man = read_json(folder / "manifest.json")
    return [read_rgb(folder / "frames" / f"{i}.png") for i in range(int(man["n_frames"]))]


def evaluate_freeview(renders: str | Path, weights_dir: str | Path = "weights_cache") -> dict:
    """CSIM and CPBD of every view of a free-view render folder (``{renders}/manifest.json``).

    Returns ``{"method", "identity", "protocol": "free_view", "reference_view", "views": {name:
    {"yaw_deg", "pitch_deg", "csim": MetricValue JSON, "cpbd": MetricValue JSON}}}``.

    Raises:
        InputError: a missing manifest or frame.
    """
    from pipeline.metrics.identity import ArcFaceEmbedder, DlibEmbedder
    from pipeline.metrics.landmarks import make_landmarker
    from pipeline.metrics.sharpness import BACKEND, cpbd
    from pipeline.weights import WeightsMissing

    renders = Path(renders)
    index = read_json(renders / "manifest.json")
    if "views" not in index:
        raise InputError(renders / "manifest.json", "not a free-view index (no 'views')")
    lmk, _ = make_landmarker(Path(weights_dir))
    try:
        embed = ArcFaceEmbedder(Path(weights_dir), lmk)
    except WeightsMissing:
        embed = DlibEmbedder(lmk)
    ref = index.get("reference_view", "front")
    front = _frames(renders / index["views"][ref]["dir"])
    out = {k: index.get(k) for k in ("method", "identity", "protocol", "reference_view")}
    out["views"] = {}
    for name, v in index["views"].items():
        frames = front if name == ref else _frames(renders / v["dir"])
        n = min(len(frames), len(front))
        out["views"][name] = {
            "yaw_deg": v["yaw_deg"], "pitch_deg": v["pitch_deg"],
            "csim": view_csim(embed, frames[:n], front[:n]).to_json(),
            "cpbd": MetricValue(float(np.mean([cpbd(f) for f in frames])), BACKEND, None, None, len(frames)).to_json()}
    return out


def write_table(results: list[dict], out_md: str | Path, out_csv: str | Path,
                not_rendered: dict[str, str] | None = None) -> None:
    """The free-view table: one row per (method, identity, view); CSIM vs the frontal render and
    CPBD, n/a cells with their reason as footnotes; one n/a row per method of ``not_rendered``
    (method -> reason, e.g. a 2D baseline without a 3D model). Writes Markdown and CSV atomically."""
    import pandas as pd

    rows, notes = [], []

    def cell(m: dict) -> str:
        if m.get("value") is not None and not (isinstance(m["value"], float) and math.isnan(m["value"])):
            return f"{m['value']:.3f}"
        notes.append(m.get("na_reason") or "not available")
        return f"n/a ({len(notes)})"

    for r in results:
        ordered = sorted(r["views"].items(), key=lambda kv: (kv[0] != r.get("reference_view", "front"),
                                                             kv[1]["pitch_deg"] != 0, kv[1]["yaw_deg"],
                                                             kv[1]["pitch_deg"]))
        for name, v in ordered:
            rows.append({"method": r["method"], "identity": r["identity"], "view": name, "yaw_deg": v["yaw_deg"],
                         "pitch_deg": v["pitch_deg"], "csim_vs_front": cell(v["csim"]), "cpbd": cell(v["cpbd"])})
    for method, reason in (not_rendered or {}).items():
        rows.append({"method": method, "identity": "all", "view": "all", "yaw_deg": math.nan, "pitch_deg": math.nan,
                     "csim_vs_front": cell({"value": None, "na_reason": reason}), "cpbd": f"n/a ({len(notes)})"})
    df = pd.DataFrame(rows, columns=["method", "identity", "view", "yaw_deg", "pitch_deg", "csim_vs_front", "cpbd"])
    backends = sorted({v["csim"].get("backend") or "" for r in results for v in r["views"].values()} - {""})
    lines = ["#### Free view: identity consistency with the frontal render (CSIM) and sharpness (CPBD)", "",
             "| Method | Identity | View | Yaw (deg) | Pitch (deg) | CSIM vs front↑ | CPBD↑ |",
             "|---|---|---|---:|---:|---:|---:|"]
    deg = lambda v: "–" if math.isnan(v) else f"{v:g}"  # noqa: E731
    lines += [f"| {r.method} | {r.identity} | {r.view} | {deg(r.yaw_deg)} | {deg(r.pitch_deg)} | {r.csim_vs_front} | "
              f"{r.cpbd} |" for r in df.itertuples()]
    lines += ["", "No ground truth exists at a novel view: CSIM compares each view's frame with the frontal "
              "frame (the tracked camera; its row is 1 by definition). CSIM backend: "
              + ("; ".join(backends) or "none") + "."]
    lines += [f"({k}) {t}  " for k, t in enumerate(notes, 1)]
    with atomic_write(out_md, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with atomic_write(out_csv, "w") as fh:
        df.to_csv(fh, index=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.metrics.freeview", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("metrics")
    m.add_argument("--renders", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--weights-dir", default="weights_cache")
    t = sub.add_parser("table")
    t.add_argument("--out-md", required=True)
    t.add_argument("--out-csv", required=True)
    t.add_argument("--not-rendered", default="{}", help="JSON {method: reason} of methods without free-view renders")
    t.add_argument("inputs", nargs="*")
    args = ap.parse_args(argv)
    setup_logging("pipeline.metrics.freeview")
    if args.cmd == "metrics":
        atomic_write_json(args.out, evaluate_freeview(args.renders, args.weights_dir))
    else:
        import json

        write_table([read_json(p) for p in args.inputs], args.out_md, args.out_csv, json.loads(args.not_rendered))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
