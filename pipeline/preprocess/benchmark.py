"""Benchmark of the dataset builder: run the dataset rules on one video and report frames/s.

``python -m pipeline.preprocess.benchmark [--video V] [--out DIR] [--cores 2]`` builds the dataset of
``V`` (default: the sample ``resources/sample/German_12s.mp4``) with the project's Snakefile in a
working folder (``DIR``, or a temporary folder removed afterwards), then prints, per stage, the
seconds and frames/s from the rules' ``benchmark:`` TSVs, their sum, and the end-to-end wall time of
the Snakemake run (which includes Snakemake's own start-up). With ``--out`` the dataset stays in
``DIR/results/data/{identity}/`` and the table is also written to ``DIR/benchmark.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pipeline.common.config import PROJECT_ROOT
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_write_json, read_json
from pipeline.common.layout import DatasetLayout
from pipeline.common.log import run_main, setup_logging
from pipeline.preprocess.manifest import read_benchmarks

log = logging.getLogger("pipeline.preprocess.benchmark")

SAMPLE_VIDEO = PROJECT_ROOT / "resources" / "sample" / "German_12s.mp4"
#: dataset rules in pipeline order (benchmark folders under results/benchmarks/)
STAGES = ("probe", "crop", "frames", "landmarks", "parsing", "background", "tracking", "threedmm", "aus",
          "audio_features", "dataset_manifest")


def identity_name(video: Path) -> str:
    """An identity id (``[A-Za-z0-9_-]+``) from the video's file name."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", video.stem) or "video"


def prepare_workdir(workdir: Path, video: Path, identity: str, sfm: Path | None = None) -> None:
    """Write ``config.yaml`` (the project's, with absolute paths; ``sfm``: the Surrey Face Model
    folder for the 3DMM stage) and a one-row identities table."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    (workdir / "identities.tsv").write_text(f"id\tvideo\n{identity}\t{video}\n")
    cfg["identities"] = str(workdir / "identities.tsv")
    if sfm:
        cfg["preprocess"].setdefault("threedmm", {})["model_dir"] = str(sfm)
    cross = cfg.get("render", {}).get("cross_driven") or {}
    cfg.setdefault("render", {})["cross_driven"] = {k: str(PROJECT_ROOT / v) if not os.path.isabs(v) else v
                                                    for k, v in cross.items()}
    rep = cfg.get("report", {})
    if rep.get("reported_numbers") and not os.path.isabs(rep["reported_numbers"]):
        rep["reported_numbers"] = str(PROJECT_ROOT / rep["reported_numbers"])
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def run_builder(workdir: Path, identity: str, cores: int, timeout: float) -> float:
    """Run Snakemake for ``results/data/{identity}/manifest.json``; returns the wall time (s).

    Raises:
        InputError: the run failed (the message names the failing rule's log).
    """
    target = f"results/data/{identity}/manifest.json"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(PROJECT_ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", str(cores), "--forceall", target]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        logs = sorted((workdir / "results" / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)
        last = logs[-1] if logs else workdir
        tail = (last.read_text().strip().splitlines()[-1:] if logs else proc.stderr.strip().splitlines()[-1:]) or [""]
        raise InputError(last, f"dataset build failed: {tail[0]}")
    return wall


def summarize(workdir: Path, identity: str, wall: float) -> dict:
    """Timings table from the benchmark TSVs and the manifest's frame count."""
    layout = DatasetLayout.of(identity, workdir / "results")
    frames = int(read_json(layout.manifest)["frames"])
    tsvs = [workdir / "results" / "benchmarks" / s / f"{identity}.tsv" for s in STAGES]
    stages = read_benchmarks([p for p in tsvs if p.exists()], frames)
    return {"identity": identity, "frames": frames, "cores": None, "stages": stages,
            "end_to_end": {"seconds": round(wall, 3), "frames_per_second": round(frames / wall, 2)}}


@contextlib.contextmanager
def bench_workdir(out: Path | None, prefix: str):
    """The working folder ``out`` (kept), or a temporary one removed afterwards."""
    workdir = out.resolve() if out else Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield workdir
    finally:
        if not out:
            shutil.rmtree(workdir, ignore_errors=True)


def load_average(before: float) -> dict:
    """1-minute load averages ``before`` and now, and the CPU count (a loaded machine gives lower figures)."""
    return {"before": round(before, 2), "after": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


def format_load(load: dict) -> str:
    """One line for :func:`load_average`'s dict."""
    return f"load average (1 min) before / after: {load['before']} / {load['after']} on {load['cpus']} CPUs"


def format_table(summary: dict) -> str:
    """Plain-text table of the summary (one stage per line)."""
    lines = [f"{'stage':<16}{'seconds':>10}{'frames/s':>12}"]
    for stage, t in summary["stages"].items():
        lines.append(f"{stage:<16}{t['seconds']:>10.2f}{(t['frames_per_second'] or 0):>12.1f}")
    e = summary["end_to_end"]
    lines.append(f"{'end-to-end':<16}{e['seconds']:>10.2f}{e['frames_per_second']:>12.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=SAMPLE_VIDEO, help="talking-portrait video (default: sample)")
    ap.add_argument("--out", type=Path, help="working folder to keep (default: a temporary one)")
    ap.add_argument("--cores", type=int, default=2, help="snakemake --cores (default 2)")
    ap.add_argument("--timeout", type=float, default=3600, help="limit of the build (seconds)")
    ap.add_argument("--sfm", type=Path, help="Surrey Face Model folder (preprocess.threedmm.model_dir), "
                                           "e.g. ../shared/models/sfm; default: the config's")
    args = ap.parse_args(argv)
    setup_logging("pipeline.preprocess.benchmark")
    video = args.video.resolve()
    if not video.is_file():
        raise InputError(video, "video not found")
    identity = identity_name(video)
    with bench_workdir(args.out, "dataset_bench_") as workdir:
        prepare_workdir(workdir, video, identity, args.sfm.resolve() if args.sfm else None)
        log.info("building the dataset of %s in %s (%d cores)", video, workdir, args.cores)
        load0 = os.getloadavg()[0]
        wall = run_builder(workdir, identity, args.cores, args.timeout)
        summary = summarize(workdir, identity, wall)
        summary["cores"] = args.cores
        summary["load_average"] = load_average(load0)
        summary["video"] = str(video)
        print(format_table(summary))
        print(format_load(summary["load_average"]))
        if args.out:
            atomic_write_json(workdir / "benchmark.json", summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
