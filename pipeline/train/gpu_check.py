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
   largest pixel difference between the two): frames per second and peak memory;
4. trains the ``quick`` profile's three stages (head, lips, torso; seed 0; the default job's
   training, but with the profile's 4200 head steps where the default job sets 2100) on CUDA and
   compares the validation PSNR with the CPU runs of ``--quick-seeds`` seeds that ``prepare``
   recorded in ``cpu_quick.json`` (every condition, the torso's retrieval bank and the weight
   average go through the CUDA path here, where steps 1-3 run the head stage only). CUDA draws other random numbers than the CPU (ray batches, sample jitter), so a CUDA
   run is one more seed: it agrees when it lies within :func:`quick_agreement`'s band around the
   CPU seeds' mean.

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
#: the CUDA run of step 4 agrees when its val PSNR lies within this many standard deviations of
#: the CPU seeds' val PSNR from their mean (:func:`quick_agreement`)
QUICK_SIGMAS = 3.0
#: the band of :func:`quick_agreement` is never narrower than this, dB (float rounding alone)
QUICK_MIN_BAND_DB = 0.25


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
    from pipeline.train.data import TalkingDataset
    from pipeline.train.profiles import resolve_config
    from pipeline.train.trainer import Stage

    cfg = resolve_config(method, {"profile": "paper", "seed": 0, "device": str(device),
                                  "overrides": {"checkpoint_every": 10 ** 9, **overrides}})
    data = TalkingDataset.for_config(data_root, cfg)
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


def quick_agreement(device_db: float, cpu_dbs: list[float], sigmas: float = QUICK_SIGMAS,
                    min_band_db: float = QUICK_MIN_BAND_DB) -> dict:
    """Does one device run's val PSNR agree with CPU runs of other seeds?

    Args:
        device_db: val PSNR of the device run, dB.
        cpu_dbs: val PSNR of the CPU runs (one per seed, at least 2), dB.
    Returns:
        ``cpu_mean_db``, ``cpu_sd_db`` (sample standard deviation, ddof 1), ``band_db`` =
        max(``min_band_db``, ``sigmas`` x sd), ``diff_db`` = device - mean, ``ok`` = |diff| <= band.
    Raises:
        ValueError: fewer than 2 CPU runs (no spread to compare with).
    """
    import numpy as np

    if len(cpu_dbs) < 2:
        raise ValueError(f"quick_agreement needs at least 2 CPU seeds, got {len(cpu_dbs)}")
    mean, sd = float(np.mean(cpu_dbs)), float(np.std(cpu_dbs, ddof=1))
    band = max(min_band_db, sigmas * sd)
    diff = device_db - mean
    return {"cpu_mean_db": round(mean, 3), "cpu_sd_db": round(sd, 3), "band_db": round(band, 3),
            "diff_db": round(diff, 3), "ok": abs(diff) <= band}


def quick_training(method: str, data_root: Path, device, work: Path, seed: int = 0) -> dict:
    """Train the ``quick`` profile's head, lips and torso stages of ``method`` (``seed``) on
    ``data_root`` into ``work/{method}_seed{seed}`` on ``device``, as the ``train_*`` rules do.

    Returns:
        ``val_psnr_db`` and ``baseline_psnr_db`` (dB, head + torso over ``bc.jpg``, full frame, the
        validation frames; :func:`pipeline.train.trainer.evaluate`), ``steps`` and ``seconds`` per
        stage, ``resolution`` [H, W], ``val_frames``, ``val_render_seconds_per_frame`` (s).
    Raises:
        InputError: as :func:`pipeline.train.trainer.train_stages` (a dataset file missing or malformed).
    """
    from pipeline.train.profiles import resolve_config
    from pipeline.train.trainer import train_stages

    cfg = resolve_config(method, {"profile": "quick", "seed": seed, "device": str(device)})
    d = work / f"{method}_seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    info = train_stages(cfg, data_root, d)
    return {"val_psnr_db": info["val_psnr_db"], "baseline_psnr_db": info["baseline_mean_colour_psnr_db"],
            "steps": info["steps"], "seconds": info["seconds"], "resolution": info["resolution"],
            "val_frames": info["val_frames"], "val_render_seconds_per_frame": info["val_render_seconds_per_frame"]}


def prepare(a) -> int:
    """Dataset + CPU loss curves into ``a.dir`` (see module docstring)."""
    import torch

    from pipeline.common.io import atomic_write_json
    from pipeline.train.devdata import build

    log = setup_logging("pipeline.train.gpu_check")
    if a.quick and a.quick_seeds < 2:
        raise SystemExit(f"gpu_check prepare: --quick-seeds {a.quick_seeds}: the CUDA run is compared with the "
                         "CPU seeds' spread, which needs at least 2 (or --no-quick)")
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
    if a.quick:
        quick = {}
        with tempfile.TemporaryDirectory() as tmp:
            for method in a.methods:
                runs = quick[method] = {}
                for seed in range(a.quick_seeds):
                    runs[str(seed)] = quick_training(method, data, torch.device("cpu"), Path(tmp), seed)
                    log.info("%s: quick profile on the CPU, seed %d: val PSNR %.2f dB (%.0f s of training)", method,
                             seed, runs[str(seed)]["val_psnr_db"], runs[str(seed)]["seconds"]["total"])
        atomic_write_json(a.dir / "cpu_quick.json", {"torch": torch.__version__, "host": platform.node(),
                                                     "threads": a.threads, "seeds": a.quick_seeds, "methods": quick})
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

    def save() -> None:
        # after every figure: a call stopped at its time limit still leaves what it measured
        report["ok"] = ok
        if a.json:
            atomic_write_json(a.json, report)

    for method in () if a.quick_only else a.methods:
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
        save()
        with tempfile.TemporaryDirectory() as tmp:
            model = ds = None
            for backend in ("torch", "tcnn") if report["tcnn"] else ("torch",):
                tr, model, ds = time_training(method, data, device, backend, a.time_steps, Path(tmp), side,
                                              a.warmup)
                res[f"train_{backend}"] = tr
                print(f"{method}: training {side}x{side} paper settings, {backend} hash grid: "
                      f"{tr['steps_per_s']:.2f} steps/s, {tr['rays_per_s']:.0f} rays/s ({tr['rays_per_step']} rays x "
                      f"{tr['n_samples']} samples), peak {tr['peak_memory_gib']} GiB", flush=True)
                save()
                rd = res[f"render_{backend}"] = time_render(model, ds, a.render_frames, device)
                print(f"{method}: render {rd['size'][0]}x{rd['size'][1]} head+torso, {backend} hash grid: "
                      + "; ".join(_render_line(rd, mode) for mode in ("fp32", "fp16_autocast") if mode in rd),
                      flush=True)
                save()
                del model
                torch.cuda.empty_cache()
    quick_ref = a.dir / "cpu_quick.json"
    if a.quick and quick_ref.is_file():
        cpu_quick = json.loads(quick_ref.read_text())["methods"]
        report["quick"] = {"sigmas": QUICK_SIGMAS, "min_band_db": QUICK_MIN_BAND_DB}
        for method in a.methods:
            if method not in cpu_quick:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                q = quick_training(method, data, device, Path(tmp))
            cpu = [r["val_psnr_db"] for r in cpu_quick[method].values()]
            q.update(cpu_val_psnr_db=cpu, cpu_seconds=[r["seconds"]["total"] for r in cpu_quick[method].values()],
                     **quick_agreement(q["val_psnr_db"], cpu))
            report["quick"][method] = q
            ok &= q["ok"]
            print(f"{method}: quick profile (head, lips, torso) on {device.type.upper()}: val PSNR "
                  f"{q['val_psnr_db']:.2f} dB against {q['cpu_mean_db']:.2f} +- {q['cpu_sd_db']:.2f} on the CPU "
                  f"({len(cpu)} seeds; {'ok' if q['ok'] else 'DIFFERS'}, band +-{q['band_db']:.2f} dB); training "
                  f"{q['seconds']['total']:.0f} s against {min(q['cpu_seconds']):.0f}-{max(q['cpu_seconds']):.0f} s",
                  flush=True)
            save()
    elif a.quick:
        print(f"gpu_check: {quick_ref} missing, the quick-profile training is not checked", flush=True)
    save()
    print(f"gpu_check: {'every comparison agrees' if ok else 'a comparison DIFFERS'}", flush=True)
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
    ap.add_argument("--no-quick", dest="quick", action="store_false",
                    help="skip the quick profile's full training (prepare: on the CPU; run: on the device)")
    ap.add_argument("--quick-only", action="store_true",
                    help="run: step 4 alone (the whole check takes about 10-12 minutes on an H200; split it into "
                         "'run --no-quick' and 'run --quick-only' where one call is limited to less)")
    ap.add_argument("--quick-seeds", type=int, default=3,
                    help="prepare: CPU seeds of the quick profile's training (at least 2)")
    ap.add_argument("--device", default="cuda", help="run: cuda (cpu only to try the script on a small set-up)")
    a = ap.parse_args(argv)
    return prepare(a) if a.mode == "prepare" else run(a)


if __name__ == "__main__":
    sys.exit(run_main(main))
