"""Benchmark of the 3DMM stage on real identities: landmark error, shape stability, frames/s.

``python -m pipeline.preprocess.benchmark_threedmm --sfm ../shared/models/sfm [--videos V ...]
[--out DIR] [--cores 2]`` builds, with the project's Snakefile, each video's dataset up to
``threedmm.json`` (rules probe, crop, frames, landmarks, threedmm: 512x512 crops at 25 fps), then
reports per identity

* the SFM fit of the whole clip (``threedmm.json``): mean landmark error (pixels at 512 px), fit
  frames/s, and the rule's wall time (its ``benchmark:`` TSV, start-up included);
* **shape stability across halves**: the identity shape fitted separately (same config) to the
  first and the second half of the clip's frames with a detected face, as the RMS distance in
  millimetres between the two SFM meshes (:func:`mesh_rms_mm`); for scale, the median RMS
  distance between the whole-clip shapes of two different identities.

Default videos: every ``*.mp4`` in ``../shared/data/identities``. Output: a table on stdout and,
with ``--out``, ``DIR/benchmark_threedmm.json``. The machine's 1-minute load average before and
after is printed (a loaded machine gives lower frames/s).
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.common.config import PROJECT_ROOT
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_write_json, read_json
from pipeline.common.log import run_main, setup_logging
from pipeline.preprocess.benchmark import bench_workdir, format_load, identity_name, load_average, prepare_workdir

log = logging.getLogger("pipeline.preprocess.benchmark_threedmm")

SHARED_IDENTITIES = PROJECT_ROOT.parent / "shared" / "data" / "identities"


def mesh_rms_mm(basis: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """RMS vertex distance (mm) between the SFM shapes of coefficient vectors ``a`` and ``b`` [63]
    (``basis``: [V*3, 63] rescaled PCA basis; the mean and expressions cancel)."""
    d = (basis @ (np.asarray(a, np.float64) - np.asarray(b, np.float64))).reshape(-1, 3)
    return float(np.sqrt((d ** 2).sum(1).mean()))


def halves_stability(sfm, data: Path, cfg) -> dict:
    """Fit the identity on each half of the clip's detected-face frames; RMS (mm) between them.

    Args:
        sfm: :class:`pipeline.preprocess.threedmm.SurreyModel`; data: dataset folder (``ori_imgs``,
            ``landmarks.json``); cfg: :class:`pipeline.preprocess.threedmm.ThreeDMMConfig`.
    Returns:
        ``{"frames": [n1, n2], "rms_mm": float, "shapes": [[63], [63]]}``.
    """
    from pipeline.preprocess import threedmm as M
    from pipeline.preprocess.tracking import failed_frames

    lms, w, h = M.read_frame_landmarks(data / "ori_imgs")
    failed = failed_frames(read_json(data / "landmarks.json"))
    good = np.array([i for i in range(len(lms)) if i not in failed])
    parts = (good[: len(good) // 2], good[len(good) // 2:])
    shapes = [M.fit_clip(sfm, lms[p], w, h, cfg).shape for p in parts]
    return {"frames": [int(len(p)) for p in parts], "rms_mm": round(mesh_rms_mm(sfm.basis, *shapes), 3),
            "shapes": [s.tolist() for s in shapes]}


def build(workdir: Path, videos: list[Path], sfm: Path, cores: int, timeout: float) -> tuple[list[str], float]:
    """Run Snakemake for every video's ``threedmm.json``; returns (identities, wall seconds)."""
    ids = [identity_name(v) for v in videos]
    if len(set(ids)) != len(ids):
        raise InputError(videos[0].parent, "two videos give the same identity name")
    prepare_workdir(workdir, videos[0], ids[0], sfm)
    (workdir / "identities.tsv").write_text("id\tvideo\n" + "".join(f"{i}\t{v}\n" for i, v in zip(ids, videos)))
    targets = [f"results/data/{i}/threedmm.json" for i in ids]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(PROJECT_ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", str(cores), *targets]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        raise InputError(workdir, f"build failed: {tail}")
    return ids, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sfm", type=Path, required=True, help="Surrey Face Model folder (e.g. ../shared/models/sfm)")
    ap.add_argument("--videos", type=Path, nargs="*", help=f"videos (default: {SHARED_IDENTITIES}/*.mp4)")
    ap.add_argument("--out", type=Path, help="working folder to keep (default: a temporary one)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=7200)
    args = ap.parse_args(argv)
    setup_logging("pipeline.preprocess.benchmark_threedmm")
    videos = [v.resolve() for v in (args.videos or sorted(SHARED_IDENTITIES.glob("*.mp4")))]
    if not videos:
        raise InputError(SHARED_IDENTITIES, "no videos")
    from pipeline.preprocess import threedmm as M

    folder, reason = M.sfm_dir(M.ThreeDMMConfig(model_dir=str(args.sfm.resolve())), None)
    if folder is None:
        raise InputError(args.sfm, reason)
    with bench_workdir(args.out, "threedmm_bench_") as workdir:
        load0 = os.getloadavg()[0]
        ids, wall = build(workdir, videos, folder, args.cores, args.timeout)
        sfm = M.load_sfm(folder)
        cfg = M.ThreeDMMConfig()
        rows = {}
        for ident in ids:
            data = workdir / "results" / "data" / ident
            rep = read_json(data / "threedmm.json")
            bench = workdir / "results" / "benchmarks" / "threedmm" / f"{ident}.tsv"
            rule_s = float(bench.read_text().splitlines()[1].split("\t")[0]) if bench.is_file() else None
            rows[ident] = {"frames": rep["frames"], "mean_landmark_error_px": round(rep["mean_landmark_error_px"], 3),
                           "max_landmark_error_px": round(rep["max_landmark_error_px"], 3),
                           "fit_frames_per_second": rep["frames_per_second"], "rule_seconds": rule_s,
                           "halves": halves_stability(sfm, data, cfg)}
            with np.load(data / "threedmm.npz") as z:
                rows[ident]["shape"] = z["shape"].astype(float).tolist()
        between = [mesh_rms_mm(sfm.basis, rows[a]["shape"], rows[b]["shape"])
                   for a, b in itertools.combinations(ids, 2)]
        summary = {"identities": rows, "between_identities_rms_mm": {
                       "median": round(float(np.median(between)), 3) if between else None,
                       "min": round(float(np.min(between)), 3) if between else None},
                   "build_seconds": round(wall, 1), "load_average": load_average(load0)}
        print(f"{'identity':<22}{'frames':>7}{'err px':>8}{'fit f/s':>9}{'rule s':>8}{'halves mm':>11}")
        for ident, r in rows.items():
            print(f"{ident:<22}{r['frames']:>7}{r['mean_landmark_error_px']:>8.2f}{r['fit_frames_per_second']:>9.1f}"
                  f"{(r['rule_seconds'] or 0):>8.1f}{r['halves']['rms_mm']:>11.2f}")
        print(f"between identities: median {summary['between_identities_rms_mm']['median']} mm, "
              f"min {summary['between_identities_rms_mm']['min']} mm")
        print(format_load(summary["load_average"]))
        if args.out:
            atomic_write_json(workdir / "benchmark_threedmm.json", summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
