"""``python -m pipeline.metrics``: every configured metric of one render.

Reads the render contract folder (``results/renders/{method}/{identity}/{test}/``), the identity's
dataset (ground truth ``gt_imgs``, the CSIM reference frame) and the model folder (training time);
writes ``results/metrics/{method}/{identity}/{test}.json`` and ``{test}.frames.csv``.

``--cfg`` is the JSON of config ``metrics`` (the lists ``self_driven`` / ``cross_driven``), with
``weights_dir`` and ``openface_bin`` passed separately.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.common.config import weights_dir as config_weights_dir, parse_cfg_arg
from pipeline.common.log import run_main, setup_logging


def main(argv=None) -> int:
    """CLI entry point (see module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.metrics", description=__doc__.split("\n")[0])
    ap.add_argument("--render", required=True, help="render contract folder")
    ap.add_argument("--data", help="the identity's dataset folder results/data/{identity}")
    ap.add_argument("--model-dir", help="results/models/{method}/{identity} (training time); omit for baselines")
    ap.add_argument("--out", required=True, help="metrics JSON")
    ap.add_argument("--out-frames", required=True, help="per-frame CSV")
    ap.add_argument("--cfg", default="{}", help="JSON of config 'metrics'")
    ap.add_argument("--weights-dir", help="weights folder (default: $TALKING_NERF_WEIGHTS or weights_cache)")
    ap.add_argument("--openface-bin", help="OpenFace 2 FeatureExtraction (AUE); default: blendshape estimate")
    ap.add_argument("--verify-weights", action=argparse.BooleanOptionalAction, default=None,
                    help="check weights hashes before use (default: on; --no-verify-weights only for "
                         "tests of loading code with stand-in networks)")
    ap.add_argument("--threads", type=int, default=1, help="torch / OpenCV threads")
    args = ap.parse_args(argv)
    log = setup_logging("pipeline.metrics")

    import cv2
    import torch

    from pipeline.metrics.compute import MetricsConfig, evaluate_render, write_outputs

    torch.set_num_threads(max(1, args.threads))
    cv2.setNumThreads(max(1, args.threads))
    c = parse_cfg_arg(args.cfg)
    cfg = MetricsConfig(weights_dir=Path(args.weights_dir) if args.weights_dir else config_weights_dir(),
                        threads=max(1, args.threads),
                        openface_bin=args.openface_bin or None, verify_weights=args.verify_weights)
    if "self_driven" in c:
        cfg.self_driven = list(c["self_driven"])
    if "cross_driven" in c:
        cfg.cross_driven = list(c["cross_driven"])
    cfg.lse_short_clips = bool(c.get("lse_short_clips", False))
    model_dir = Path(args.model_dir) if args.model_dir else None
    result, per_frame = evaluate_render(Path(args.render), Path(args.data) if args.data else None, model_dir, cfg)
    write_outputs(result, per_frame, Path(args.out), Path(args.out_frames))
    for name, m in result["metrics"].items():
        log.info("%-16s %s", name, m["value"] if m["value"] is not None else f"n/a ({m['na_reason']})")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
