"""Render-speed benchmark: frames per second of trained models at 512x512 (the papers' setting).

    python -m pipeline.render.benchmark [--model results/models/er_nerf/German ...] [--size 512]
        [--frames 5] [--device auto] [--out fps.json]

Without ``--model`` every trained model under ``results/models/*/*`` is measured. Frames are the
self-driven sequence of the model's dataset (``results/data/{identity}``, or ``--data``); the
model's intrinsics are scaled to ``--size`` (a model trained at a reduced resolution, as the CPU
quick profile is, renders the same scene with ``size`` x ``size`` rays). Time counts the model's
``render`` calls only, after one warm-up frame (see :class:`pipeline.render.renderer.RenderStats`).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Iterator

# OpenMP threads sleep instead of spinning while they wait: with 2 threads on a shared CPU,
# spinning made a frame 5x slower than with one thread (docs/performance.md)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from pipeline.common.errors import InputError, PipelineError
from pipeline.common.io import atomic_write_json
from pipeline.common.layout import RESULTS, DatasetLayout
from pipeline.common.log import run_main, setup_logging
from pipeline.models.api import TrainedTalkingHead
from pipeline.render.protocol import Sequence, self_driven
from pipeline.render.renderer import Renderer, RenderStats

log = logging.getLogger(__name__)


def _meta_dicts(model: TrainedTalkingHead) -> list[dict]:
    """The model's meta dict, and the wrapped network's own when it keeps one (``model.model``)."""
    metas = [model.meta]
    inner = getattr(getattr(model, "model", None), "meta", None)
    if isinstance(inner, dict) and inner is not model.meta:
        metas.append(inner)
    return metas


@contextlib.contextmanager
def at_resolution(model: TrainedTalkingHead, size: int) -> Iterator[TrainedTalkingHead]:
    """Temporarily render ``model`` at ``size`` x ``size``: ``H``, ``W`` set and ``focal``,
    ``cx``, ``cy`` scaled by ``size / W`` (the same field of view); restored on exit.

    Works for models that read their intrinsics from ``meta`` at render time (ours do);
    :func:`measure_fps` checks the rendered size.
    """
    saved = [dict(m) for m in _meta_dicts(model)]
    try:
        for m in _meta_dicts(model):
            s = size / float(m["W"])
            m.update(H=size, W=size, focal=float(m["focal"]) * s,
                     cx=float(m["cx"]) * s, cy=float(m["cy"]) * s)
        yield model
    finally:
        for m, old in zip(_meta_dicts(model), saved):
            m.clear()
            m.update(old)


def measure_fps(model: TrainedTalkingHead, data: DatasetLayout, size: int = 512, frames: int = 5,
                seq: Sequence | None = None) -> dict:
    """Render ``frames`` frames of ``data``'s self-driven sequence at ``size`` x ``size``.

    Returns:
        ``{"size": [W, H], "frames", "render_seconds", "fps_render", "warmup_seconds", "rays_per_s",
        "samples_per_ray"`` (field samples evaluated per ray after occupancy skipping and early
        termination; None for models that do not report it), ``"cpu_seconds_per_frame"``
        (process CPU time of the loop per timed frame), ``"device"}``.
    Raises:
        PipelineError: the model ignored the requested resolution.
    """
    seq = seq or self_driven(data, model.meta.get("audio_feature", "mel"), model.conditions, model.method)
    k = max(1, min(frames, len(seq)))
    part = seq.head(k)
    stats = RenderStats()
    inner = getattr(model, "model", None)
    samples: list[float] = []
    with at_resolution(model, size):
        renderer = Renderer(model, data, "full")
        c0 = time.process_time()
        shapes = set()
        for f in renderer.frames(part, stats, progress=False):
            shapes.add(f.shape)
            spr = getattr(inner, "last_frame_stats", {}).get("samples_per_ray")
            if spr is not None:
                samples.append(spr)
        cpu = time.process_time() - c0
    if shapes != {(size, size, 3)}:
        raise PipelineError(f"{model.method}: renders {sorted(shapes)} instead of {size}x{size}")
    n = max(stats.n_frames, 1)
    return {"size": [size, size], "frames": stats.n_frames, "render_seconds": round(stats.render_seconds, 6),
            "fps_render": stats.fps_render, "warmup_seconds": round(stats.warmup_seconds, 6),
            "rays_per_s": (round(size * size * stats.n_frames / stats.render_seconds, 1)
                           if stats.render_seconds else None),
            "samples_per_ray": round(sum(samples) / len(samples), 3) if samples else None,
            # process CPU time of the whole loop (warm-up frame and image I/O included) per timed frame:
            # on a shared machine it moves less with the load than the wall time
            "cpu_seconds_per_frame": round(cpu / n, 4), "device": str(renderer.device)}


def find_models(results: str | Path = RESULTS) -> list[Path]:
    """Model folders ``results/models/{method}/{identity}`` holding a checkpoint (``*.pt``)."""
    root = Path(results) / "models"
    return sorted(p for p in root.glob("*/*") if p.is_dir() and any(p.glob("*.pt")))


@torch.no_grad()   # not torch.set_grad_enabled(False): callers in the same process keep autograd
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.render.benchmark", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="model folder (repeatable); default: all trained models")
    ap.add_argument("--data", help="dataset folder (default results/data/{identity of the model folder})")
    ap.add_argument("--results", default=RESULTS, help="results folder (default: results)")
    ap.add_argument("--size", type=int, default=512, help="square render size in pixels (default 512)")
    ap.add_argument("--frames", type=int, default=5, help="timed frames per model (default 5)")
    ap.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda[:N]")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    setup_logging("pipeline.render.benchmark")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from pipeline.models.registry import load_trained, resolve_device

    dirs = [Path(m) for m in args.model] if args.model else find_models(args.results)
    if not dirs:
        raise InputError(Path(args.results) / "models", "no trained models found (train first, or pass --model)")
    device = resolve_device(args.device)
    rows = []
    for d in dirs:
        identity = d.name
        data = DatasetLayout(Path(args.data) if args.data else DatasetLayout.of(identity, args.results).root, identity)
        model = load_trained(d, device)
        r = measure_fps(model, data, args.size, args.frames)
        r.update(method=model.method, identity=identity, model_dir=str(d),
                 trained_resolution=[int(model.meta["W"]), int(model.meta["H"])])
        rows.append(r)
        print(f"{model.method:>10} {identity:>12} {args.size}x{args.size} {r['device']:>6}: "
              f"{r['fps_render']:.3f} fps, {r['rays_per_s']:.0f} rays/s, {r['samples_per_ray']} samples/ray "
              f"({r['frames']} frames, {r['render_seconds']:.2f} s; {r['cpu_seconds_per_frame']:.3f} CPU s/frame "
              f"incl. warm-up; load {os.getloadavg()[0]:.1f})", flush=True)
    if args.out:
        atomic_write_json(args.out, {"host": platform.node(), "torch": torch.__version__,
                                     "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
                                     "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
