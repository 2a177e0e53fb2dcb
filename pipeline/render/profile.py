"""Where the time of one rendered frame goes: a per-stage profile of trained models.

    python -m pipeline.render.profile --model results/models/rad_nerf/German [--model ...]
        [--size 128 --size 512] [--threads 1] [--out profile.json]

Renders the first self-driven frame of each model (once untimed, then once timed) at each
``--size`` and splits its time into exclusive stages, timed around the functions of each stage
with the process CPU time (``time.process_time``: CPU ops are synchronous, and with one thread the
CPU time is the op time without the waits of a shared machine; the frame's wall time is reported
beside it):

* ``rays``: pixel rays and their box intersection (``get_rays``, ``aabb_near_far``);
* ``occupancy``: occupancy-grid look-ups (each ray's occupied span, per-sample occupied flags);
* ``encodings``: hash grids, tri-plane grids, spherical harmonics;
* ``mlps``: the linear layers and their activations (``nn.Linear``, ``nn.ReLU``);
* ``audio``: the audio encoder (once per frame);
* ``sampling+compositing``: the rest of :func:`pipeline.models.volume.render_rays` (sample
  placement, masks, gathers, alpha compositing);
* ``other``: the rest of the frame (torso deformation and pose code outside its grid and MLPs,
  frame assembly, Python between the stages).

Python/dispatcher overhead (it overlaps the stages above, which include their Python): a second
pass under ``torch.profiler`` counts the aten operator calls of the frame (nested calls included:
an upper bound), times the CPU cost of one call of a tiny operator from Python measured at start
(``op_overhead_us``). Also reported: rays, rays whose box
and occupied span are hit, and field samples evaluated per ray.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # as pipeline.render.benchmark

import torch  # noqa: E402

from pipeline.common.log import run_main, setup_logging

STAGES = ("rays", "occupancy", "encodings", "mlps", "audio", "sampling+compositing", "other")


class StageTimer:
    """Exclusive process CPU time per stage of nested timed calls (a stack of open stages)."""

    def __init__(self):
        self.seconds = {s: 0.0 for s in STAGES}
        self._stack: list[list] = []

    def wrap(self, stage: str, fn: Callable) -> Callable:
        """``fn`` timed as ``stage`` (time of nested timed calls is subtracted)."""

        @functools.wraps(fn)
        def timed(*a, **k):
            self._stack.append([time.process_time(), 0.0])
            try:
                return fn(*a, **k)
            finally:
                t0, inner = self._stack.pop()
                dt = time.process_time() - t0
                self.seconds[stage] += dt - inner
                if self._stack:
                    self._stack[-1][1] += dt

        return timed


@contextlib.contextmanager
def instrumented(timer: StageTimer, counts: dict) -> Iterator[None]:
    """Patch the renderer's functions and modules with ``timer``; ``counts`` collects rays,
    rays hitting the occupied span and evaluated samples of :func:`render_rays`. Restored on exit."""
    from torch import nn

    import pipeline.models.model as model_mod
    import pipeline.models.volume as volume
    from pipeline.models import encodings
    from pipeline.models.audio import AudioEncoder
    from pipeline.models.occupancy import OccupancyGrid

    saved: list[tuple[object, str, object]] = []

    def patch(owner, name: str, stage: str, fn=None):
        old = getattr(owner, name)
        saved.append((owner, name, old))
        setattr(owner, name, timer.wrap(stage, fn or old))

    render_rays = volume.render_rays

    def counted(field_fn, o, d, *a, **k):
        out = render_rays(field_fn, o, d, *a, **k)
        counts["rays"] += o.shape[0]
        counts["samples"] += out["n_evals"]
        counts["rays_hit"] += int((out["alpha"] > 0).sum())
        return out

    for mod in (volume, model_mod):
        if hasattr(mod, "get_rays"):
            patch(mod, "get_rays", "rays")
    patch(volume, "aabb_near_far", "rays")
    patch(model_mod, "render_rays", "sampling+compositing", counted)
    for name in ("ray_bounds", "query"):
        patch(OccupancyGrid, name, "occupancy")
    for cls in (encodings.HashGrid, encodings.TriPlaneHashGrid, encodings.SHEncoding, encodings.TcnnHashGrid):
        patch(cls, "forward", "encodings")
    patch(nn.Linear, "forward", "mlps")
    patch(nn.ReLU, "forward", "mlps")
    patch(AudioEncoder, "forward", "audio")
    try:
        yield
    finally:
        for owner, name, old in reversed(saved):
            setattr(owner, name, old)


def op_overhead(n: int = 5000) -> float:
    """CPU seconds of one call of a tiny operator (4-element add) from Python: the fixed cost of
    every operator call (Python, argument parsing, dispatcher, allocation)."""
    a, b = torch.zeros(4), torch.ones(4)
    for _ in range(200):
        a + b
    t0 = time.process_time()
    for _ in range(n):
        a + b
    return (time.process_time() - t0) / n


def profile_frame(model, data, size: int) -> dict:
    """Profile of one frame of ``model`` (a loaded :class:`~pipeline.models.api.TrainedTalkingHead`)
    at ``size`` x ``size``: seconds per stage, total wall and process CPU seconds, aten calls,
    rays and samples (see module docstring)."""
    from pipeline.render.benchmark import at_resolution
    from pipeline.render.protocol import self_driven
    from pipeline.render.renderer import Renderer

    seq = self_driven(data, model.meta.get("audio_feature", "mel"), model.conditions, model.method).head(1)
    with at_resolution(model, size):
        renderer = Renderer(model, data, "full")
        inp = renderer.frame_input(seq, 0, torch.from_numpy(seq.features).to(renderer.device),
                                   renderer._backdrop(int(seq.frame_ids[0])))
        model.render(inp)                                            # warm-up
        timer, counts = StageTimer(), {"rays": 0, "rays_hit": 0, "samples": 0}
        with instrumented(timer, counts):
            t0, c0 = time.perf_counter(), time.process_time()
            model.render(inp)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        timer.seconds["other"] += cpu - sum(timer.seconds.values())
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.render(inp)
        calls = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
        per_op = op_overhead()
    return {"method": model.method, "size": size, "wall_s": round(wall, 4), "cpu_s": round(cpu, 4),
            "stages_s": {k: round(v, 4) for k, v in timer.seconds.items()},
            "aten_calls": calls, "op_overhead_us": round(per_op * 1e6, 2),
            "python_overhead_s": round(calls * per_op, 4), **counts,
            "samples_per_ray": round(counts["samples"] / max(counts["rays"], 1), 3),
            "samples_per_hit_ray": round(counts["samples"] / max(counts["rays_hit"], 1), 3)}


def markdown(rows: list[dict]) -> str:
    """The profiles as a markdown table (CPU milliseconds and shares of the frame's CPU time)."""
    head = ("| method | size | wall ms | CPU ms | " + " | ".join(STAGES)
            + " | Python overhead ms (aten calls x per-call cost) | samples/ray (hit rays) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        c = r["cpu_s"]
        cells = [f"{r['stages_s'][s] * 1e3:.0f} ({100 * r['stages_s'][s] / c:.0f}%)" for s in STAGES]
        lines.append(f"| {r['method']} | {r['size']} | {r['wall_s'] * 1e3:.0f} | {c * 1e3:.0f} | " + " | ".join(cells)
                     + f" | {r['python_overhead_s'] * 1e3:.0f} ({r['aten_calls']} x "
                     f"{r['op_overhead_us']:.1f} us) | "
                     f"{r['samples_per_ray']:.2f} ({r['samples_per_hit_ray']:.2f}) |")
    return "\n".join(lines)


@torch.no_grad()   # not torch.set_grad_enabled(False): callers in the same process keep autograd
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.render.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="model folder (repeatable)")
    ap.add_argument("--data", help="dataset folder (default results/data/{identity of the model folder})")
    ap.add_argument("--results", default="results", help="results folder (default: results)")
    ap.add_argument("--size", type=int, action="append", help="square size in pixels (repeatable; default 128 and 512)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as the render rule)")
    ap.add_argument("--out", help="also write the profiles as JSON here")
    args = ap.parse_args(argv)
    setup_logging("pipeline.render.profile")
    torch.set_num_threads(args.threads)
    from pipeline.common.layout import DatasetLayout
    from pipeline.models.registry import load_trained

    rows = []
    for d in map(Path, args.model):
        data = DatasetLayout(Path(args.data) if args.data else DatasetLayout.of(d.name, args.results).root, d.name)
        model = load_trained(d, "cpu")
        for size in args.size or [128, 512]:
            rows.append(profile_frame(model, data, size))
            print(json.dumps(rows[-1]), flush=True)
    print(markdown(rows))
    if args.out:
        from pipeline.common.io import atomic_write_json

        atomic_write_json(args.out, {"host": platform.node(), "torch": torch.__version__,
                                     "threads": torch.get_num_threads(), "profiles": rows})
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
