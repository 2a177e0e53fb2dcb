"""GPU check of the ``paper`` settings (512x512, the papers' network sizes): is the CUDA path
correct, and how fast is it? Run through ``scripts/gpu_check.sh`` (docs/performance.md).

    python -m pipeline.train.gpu_check prepare [--dir results/gpu_check] [--frames 100] [--steps 8]
    python -m pipeline.train.gpu_check run [--dir results/gpu_check] [--steps 8] [--time-steps 150]
        [--render-frames 8] [--json FILE]

``prepare`` (on a CPU machine with the project's environment) builds a small real dataset (the
first ``--frames`` frames of the sample video in the ER-NeRF layout, :mod:`pipeline.train.devdata`)
and records the CPU loss curve of the first ``--steps`` head-stage steps of ``rad_nerf`` and
``er_nerf`` (``paper`` profile, seed 0) in ``cpu_losses.json``. ``run`` (on the CUDA machine,
which reaches no package registry) then

1. trains the same first steps on CUDA with the PyTorch hash grid and compares the loss curve with
   the CPU one (relative tolerance :data:`CURVE_RTOL` per step). Both curves are made without
   sample jitter and without occupancy updates (their random numbers come from the device's
   generator, which differs between CPU and CUDA) and without TF32, so they differ only by float
   rounding and atomic-add order;
2. times ``--time-steps`` training steps (after ``--warmup`` 20 steps, occupancy updates on) per
   hash-grid backend (PyTorch; tinycudann when importable): steps/s, rays/s, peak GPU memory;
3. renders ``--render-frames`` full frames at 512x512 (head + torso over the background, model time,
   CUDA synchronised) from the model of step 2, in float32 and under float16 autocast (with the
   largest pixel difference between the two): frames per second and peak memory.

The model of step 3 has trained for a few hundred steps only: its occupancy grid prunes less than
a fully trained model's, so the frame rate is a lower bound of a trained model's.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from pipeline.common.log import run_main, setup_logging

METHODS = ("rad_nerf", "er_nerf")
#: largest relative difference per step between the CUDA and the CPU loss of the first steps
CURVE_RTOL = 1e-3


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device) -> float | None:
    """Peak allocated GPU memory in GiB since the last :func:`_reset_peak` (None on the CPU)."""
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 3) if device.type == "cuda" else None


def _stage(method: str, data_root: Path, device, work: Path, overrides: dict):
    """A head-stage trainer of ``method`` with the ``paper`` profile (seed 0) plus ``overrides``."""
    from pipeline.models.methods import model_conditions
    from pipeline.train.data import TalkingDataset
    from pipeline.train.profiles import resolve_config
    from pipeline.train.trainer import Stage

    cfg = resolve_config(method, {"profile": "paper", "seed": 0, "device": str(device),
                                  "overrides": {"checkpoint_every": 10 ** 9, **overrides}})
    data = TalkingDataset(data_root, cfg.resolution, cfg.audio_feature, ("train",),
                          conditions=model_conditions(cfg), method=method)
    return Stage("head", cfg, data, work / method, None, None, device), data


def first_losses(method: str, data_root: Path, steps: int, device, resolution: int = 512) -> list[float]:
    """Losses of the first ``steps`` head steps, deterministic across devices (no jitter, no
    occupancy update, PyTorch hash grid, no TF32)."""
    import torch

    os.environ["TALKING_NERF_HASH_BACKEND"] = "torch"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            st, _ = _stage(method, data_root, device, Path(tmp),
                           {"head_steps": steps, "occ_warmup": 10 ** 9, "resolution": resolution})
            render = st.model.render_head_rays
            st.model.render_head_rays = lambda c2w, pix, cond, **kw: render(c2w, pix, cond, **{**kw, "perturb": False})
            with torch.enable_grad():
                st.run()
            with st.log_path().open(newline="") as fh:
                return [float(r["loss"]) for r in csv.DictReader(fh)]
    finally:
        os.environ.pop("TALKING_NERF_HASH_BACKEND", None)


def prepare(a) -> int:
    """Dataset + CPU loss curves into ``a.dir`` (see module docstring)."""
    import torch

    from pipeline.common.io import atomic_write_json
    from pipeline.train.devdata import build

    log = setup_logging("pipeline.train.gpu_check")
    data = a.dir / "data"
    if not (data / "devdata.json").is_file():
        build(a.video, data, a.frames, log)
    torch.set_num_threads(a.threads)
    curves = {}
    for method in a.methods:
        t0 = time.perf_counter()
        curves[method] = first_losses(method, data, a.steps, torch.device("cpu"), a.resolution)
        log.info("%s: CPU losses of the first %d steps %s (%.0f s)", method, a.steps, curves[method],
                 time.perf_counter() - t0)
    atomic_write_json(a.dir / "cpu_losses.json", {"steps": a.steps, "resolution": a.resolution,
                                                  "torch": torch.__version__, "host": platform.node(),
                                                  "losses": curves})
    return 0


def time_training(method: str, data_root: Path, device, backend: str, steps: int, work: Path,
                  resolution: int = 512, warmup: int = 20):
    """Steps/s, rays/s and peak memory of ``steps`` head steps after ``warmup`` steps (occupancy
    updates every 16 steps from step 16). Returns (result dict, trained model, dataset)."""
    import torch

    os.environ["TALKING_NERF_HASH_BACKEND"] = backend
    try:
        st, data = _stage(method, data_root, device, work / backend,
                          {"head_steps": steps + warmup, "occ_warmup": 16, "occ_update_every": 16,
                           "resolution": resolution})
    finally:
        os.environ.pop("TALKING_NERF_HASH_BACKEND", None)
    st.total = warmup
    with torch.enable_grad():
        st.run()
        st.total = steps + warmup
        _reset_peak(device)
        _sync(device)
        t0 = time.perf_counter()
        st.run()
        _sync(device)
    dt = time.perf_counter() - t0
    rays = st.cfg.rays_per_step
    return ({"backend": backend, "steps": steps, "steps_per_s": round(steps / dt, 3),
             "rays_per_s": round(steps * rays / dt, 1), "rays_per_step": rays, "n_samples": st.cfg.n_samples,
             "peak_memory_gib": _peak_gib(device),
             "occupied_fraction": round(float(st.model.occ.occupied.float().mean()), 3)}, st.model, data)


def time_render(model, data, frames: int, device) -> dict:
    """Frames per second of full 512x512 frames (head + torso over bc), float32 and float16
    autocast, with the largest pixel difference between the two and the peak memory."""
    import torch

    from pipeline.train.trainer import frame_conditions

    model.eval()
    tr = data.splits["train"]
    bg = data.bc.to(device)
    audio = data.audio.to(device)
    inputs = [(model.scene_pose(tr.poses[k].to(device)), frame_conditions(model, tr, k, audio, device))
              for k in range(min(frames, len(tr)))]
    out = {"size": [data.W, data.H], "frames": len(inputs)}
    first = {}
    modes = [("fp32", contextlib.nullcontext)]
    if device.type == "cuda":
        modes.append(("fp16_autocast", lambda: torch.autocast("cuda", dtype=torch.float16)))
    for name, ctx in modes:
        try:
            first[name], out[name] = _timed_frames(model, inputs, bg, ctx, device)
        except Exception as exc:  # noqa: BLE001 (a failing mode is a finding, not the end of the check)
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    if "fp16_autocast" in first:
        out["fp16_max_abs_diff"] = round(float((first["fp16_autocast"] - first["fp32"]).abs().max()), 5)
    return out


def _timed_frames(model, inputs, bg, ctx, device):
    """(first frame's rgb, timing dict) of rendering ``inputs`` under context ``ctx``."""
    import torch

    with torch.no_grad(), ctx():
        model.render_frame(*inputs[0], bg)                          # warm-up
        _reset_peak(device)
        _sync(device)
        t0 = time.perf_counter()
        for c2w, cond in inputs:
            model.render_frame(c2w, cond, bg)
        _sync(device)
        dt = time.perf_counter() - t0
        rgb = model.render_frame(*inputs[0], bg)["rgb"].float()
    return rgb, {"fps": round(len(inputs) / dt, 2), "seconds_per_frame": round(dt / len(inputs), 4),
                 "samples_per_ray": round(model.last_frame_stats.get("samples_per_ray", float("nan")), 3),
                 "peak_memory_gib": _peak_gib(device)}


def _render_line(rd: dict, mode: str) -> str:
    r = rd[mode]
    if "error" in r:
        return f"{mode} failed ({r['error']})"
    diff = ""
    if mode != "fp32" and "fp16_max_abs_diff" in rd:
        diff = f", max pixel difference to fp32 {rd['fp16_max_abs_diff']:.4f}"
    return (f"{r['fps']:.2f} fps {mode} ({r['samples_per_ray']:.1f} samples/ray, peak {r['peak_memory_gib']} GiB"
            f"{diff})")


def run(a) -> int:
    """The CUDA checks (see module docstring); prints one line per figure, writes ``a.json``."""
    import torch

    from pipeline.common.io import atomic_write_json
    from pipeline.models.encodings import tcnn_available

    setup_logging("pipeline.train.gpu_check")
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device visible to torch {torch.__version__} (nothing measured)", flush=True)
        return 2
    ref = json.loads((a.dir / "cpu_losses.json").read_text())
    data = a.dir / "data"
    side = int(ref.get("resolution", 512))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    report = {"gpu": name, "torch": torch.__version__, "cuda": torch.version.cuda, "tcnn": tcnn_available(),
              "curve_rtol": CURVE_RTOL, "methods": {}}
    print(f"gpu_check: {name}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"tinycudann {'importable' if report['tcnn'] else 'not importable'}", flush=True)
    ok = True
    for method in a.methods:
        res = report["methods"][method] = {}
        cpu = ref["losses"][method][: a.steps]
        t0 = time.perf_counter()
        gpu = first_losses(method, data, len(cpu), device, side)
        rel = [abs(g - c) / max(abs(c), 1e-12) for g, c in zip(gpu, cpu)]
        res["curve"] = {"cpu": cpu, "cuda": gpu, "max_rel_diff": max(rel), "ok": max(rel) <= CURVE_RTOL,
                        "seconds": round(time.perf_counter() - t0, 1)}
        ok &= res["curve"]["ok"]
        print(f"{method}: loss curve of the first {len(cpu)} steps, {device.type.upper()} vs CPU: "
              f"max relative difference {max(rel):.2e} ({'ok' if res['curve']['ok'] else 'DIFFERS'}, "
              f"tolerance {CURVE_RTOL:g})", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            model = ds = None
            for backend in ("torch", "tcnn") if report["tcnn"] else ("torch",):
                tr, model, ds = time_training(method, data, device, backend, a.time_steps, Path(tmp), side,
                                              a.warmup)
                res[f"train_{backend}"] = tr
                print(f"{method}: training {side}x{side} paper settings, {backend} hash grid: "
                      f"{tr['steps_per_s']:.2f} steps/s, {tr['rays_per_s']:.0f} rays/s ({tr['rays_per_step']} rays x "
                      f"{tr['n_samples']} samples), peak {tr['peak_memory_gib']} GiB", flush=True)
                rd = res[f"render_{backend}"] = time_render(model, ds, a.render_frames, device)
                print(f"{method}: render {rd['size'][0]}x{rd['size'][1]} head+torso, {backend} hash grid: "
                      + "; ".join(_render_line(rd, mode) for mode in ("fp32", "fp16_autocast") if mode in rd),
                      flush=True)
                del model
                torch.cuda.empty_cache()
    report["ok"] = ok
    if a.json:
        atomic_write_json(a.json, report)
    print(f"gpu_check: {'all loss curves agree' if ok else 'a loss curve DIFFERS'}", flush=True)
    return 0 if ok else 1


#: the project folder (not from pipeline.common.config: that imports jsonschema, which the GPU
#: machine may lack)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.train.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("prepare", "run"))
    ap.add_argument("--dir", type=Path, default=Path("results/gpu_check"), help="dataset and CPU curves")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--steps", type=int, default=8, help="compared first steps")
    ap.add_argument("--frames", type=int, default=100, help="prepare: frames of the sample video")
    ap.add_argument("--video", type=Path, default=PROJECT_ROOT / "resources" / "sample" / "German_12s.mp4")
    ap.add_argument("--threads", type=int, default=2, help="prepare: CPU threads")
    ap.add_argument("--time-steps", type=int, default=150, help="run: timed training steps per backend")
    ap.add_argument("--warmup", type=int, default=20, help="run: untimed training steps before the timed ones")
    ap.add_argument("--render-frames", type=int, default=8, help="run: timed 512x512 frames")
    ap.add_argument("--json", type=Path, default=None, help="run: write the figures here")
    ap.add_argument("--resolution", type=int, default=512,
                    help="prepare: image side (512: the paper profile's; smaller only to try the script)")
    ap.add_argument("--device", default="cuda", help="run: cuda (cpu only to try the script on a small set-up)")
    a = ap.parse_args(argv)
    return prepare(a) if a.mode == "prepare" else run(a)


if __name__ == "__main__":
    sys.exit(run_main(main))
