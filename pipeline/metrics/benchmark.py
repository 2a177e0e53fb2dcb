"""``python -m pipeline.metrics.benchmark``: per-frame CPU throughput of each metric.

Frames: the sample clip (``resources/sample/German_12s.mp4``, 512x512) as ground truth, and a
slightly blurred copy as the "render". Reports frames per second per metric, and for PSNR + SSIM +
LMD together on ``--threads`` worker threads (OpenCV, NumPy and dlib release the GIL). Network
metrics run only with their weights present, or with ``--standin`` random-weight networks of the
same architectures (timing only: a stand-in never produces a reported metric).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from pipeline.common.config import PROJECT_ROOT, weights_dir as config_weights_dir
from pipeline.common.log import run_main, setup_logging

SAMPLE = PROJECT_ROOT / "resources" / "sample" / "German_12s.mp4"


def load_frames(n: int, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(renders, ground truth): ``n`` frames of the sample clip at ``size`` px, uint8 RGB."""
    cap = cv2.VideoCapture(str(SAMPLE))
    gts = []
    while len(gts) < n:
        ok, img = cap.read()
        if not ok:
            break
        gts.append(cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (size, size), interpolation=cv2.INTER_AREA))
    cap.release()
    return [cv2.GaussianBlur(g, (0, 0), 1.0) for g in gts], gts


def _rate(fn, items, threads: int = 1) -> tuple[float, float]:
    """(frames per wall-clock second, frames per CPU second of this process). On a shared machine
    the second is the one that does not depend on the other processes' load."""
    t, c = time.perf_counter(), time.process_time()
    if threads > 1:
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(fn, items))
    else:
        for it in items:
            fn(it)
    return len(items) / (time.perf_counter() - t), len(items) / (time.process_time() - c)


def _standin_weights(folder: Path) -> None:
    """Random-weight files with the real architectures, for timing only."""
    import torch

    from pipeline.common.tvcompat import import_torchvision

    tv = import_torchvision()
    torch.save(tv.models.alexnet(weights=None).state_dict(), folder / "alexnet-owt-7be5be79.pth")
    from syncnet_python.SyncNetModel import S

    torch.save(S().state_dict(), folder / "syncnet_v2.model")


def main(argv=None) -> int:
    """CLI entry point (see module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.metrics.benchmark", description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights-dir", help="weights folder (default: $TALKING_NERF_WEIGHTS or weights_cache)")
    ap.add_argument("--standin", action="store_true", help="time LPIPS / SyncNet with random-weight stand-ins")
    args = ap.parse_args(argv)
    setup_logging("pipeline.metrics.benchmark")
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)

    from pipeline.metrics.image import psnr, ssim
    from pipeline.metrics.landmarks import frame_lmd, make_landmarker
    from pipeline.metrics.sharpness import cpbd

    preds, gts = load_frames(args.frames, args.size)
    pairs = [(p.astype(np.float32) / 255, g.astype(np.float32) / 255, p, g) for p, g in zip(preds, gts)]
    wdir = Path(args.weights_dir) if args.weights_dir else config_weights_dir()
    lmk, _ = make_landmarker(wdir)
    rows = []

    def one_lmd(t):  # as the metrics stage: a face detection in each image
        return frame_lmd(lmk, t[2], t[3])[0]

    def combined(t):
        return psnr(t[0], t[1]), ssim(t[0], t[1]), one_lmd(t)

    rows.append(("psnr", _rate(lambda t: psnr(t[0], t[1]), pairs)))
    rows.append(("ssim", _rate(lambda t: ssim(t[0], t[1]), pairs)))
    rows.append((f"lmd ({lmk.name.split(' ')[0]})", _rate(one_lmd, pairs)))
    rows.append(("psnr+ssim+lmd, 1 thread", _rate(combined, pairs)))
    rows.append((f"psnr+ssim+lmd, {args.threads} threads", _rate(combined, pairs, args.threads)))
    rows.append(("cpbd", _rate(lambda t: cpbd(t[2]), pairs[:10])))
    from pipeline.metrics.identity import DlibEmbedder

    emb = DlibEmbedder(lmk)
    rows.append(("csim (dlib descriptor)", _rate(lambda t: emb(t[2]), pairs[:10])))
    from pipeline.preprocess.backends.mediapipe_mesh import MeshDetector

    with MeshDetector(video_mode=False) as det:
        rows.append(("aue blendshapes (2 frames)", _rate(lambda t: (det.detect(t[2], 0), det.detect(t[3], 0)), pairs[:10])))

    with tempfile.TemporaryDirectory(prefix="standin") as tmp:
        if args.standin:
            _standin_weights(Path(tmp))
            wdir = Path(tmp)
        from pipeline.weights import WeightsMissing

        try:
            from pipeline.metrics.perceptual import LPIPS

            lp = LPIPS(wdir)
            rows.append(("lpips" + (" (stand-in weights)" if args.standin else ""),
                         _rate(lambda t: lp(t[0], t[1]), pairs[:10])))
        except WeightsMissing as exc:
            rows.append(("lpips", f"n/a: {exc.reason}"))
        try:
            from pipeline.metrics.sync import load_syncnet, syncnet_features

            net, _ = load_syncnet(wdir)
            crops = np.stack([cv2.resize(p, (224, 224)) for p in preds[:25]])
            t, c = time.perf_counter(), time.process_time()
            syncnet_features(net, crops, np.zeros((13, 4 * len(crops))))
            rows.append(("lse syncnet features" + (" (stand-in weights)" if args.standin else ""),
                         ((len(crops) - 5) / (time.perf_counter() - t), (len(crops) - 5) / (time.process_time() - c))))
        except WeightsMissing as exc:
            rows.append(("lse", f"n/a: {exc.reason}"))

    import os

    print(f"{args.frames} frames {args.size}x{args.size}, {args.threads} threads, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'metric':40s} {'frames/s (wall)':>16s} {'frames/CPU-s':>13s}")
    for name, val in rows:
        print(f"{name:40s} {val[0]:16.1f} {val[1]:13.1f}" if isinstance(val, tuple) else f"{name:40s} {val}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
