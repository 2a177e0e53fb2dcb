"""Train one stage of one method on one identity.

    python -m pipeline.train --stage head|lips|torso --method rad_nerf --data results/data/ID \\
        --model-dir results/models/rad_nerf/ID --out results/models/rad_nerf/ID/head.pt \\
        [--init head.pt] --cfg '<train section of config.yaml as JSON>' [--weights-dir DIR]

The ``--cfg`` JSON is config.yaml's ``train`` section (profile, overrides, seed, device,
audio_feature); the method's dataclass config is resolved by :mod:`pipeline.train.profiles`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

# OpenMP threads sleep instead of spinning while waiting: on a shared CPU, spinning threads of
# several jobs slow each other down by an order of magnitude (set before torch is imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path

from pipeline.common.config import parse_cfg_arg
from pipeline.common.errors import InputError
from pipeline.common.log import run_main, setup_logging


_GPU_CLAIM = None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("head", "lips", "torso"), required=True)
    ap.add_argument("--method", required=True)
    ap.add_argument("--data", type=Path, required=True, help="dataset folder results/data/{identity}")
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="stage checkpoint to write")
    ap.add_argument("--init", type=Path, default=None, help="previous stage checkpoint")
    ap.add_argument("--cfg", default="{}", help="config.yaml 'train' section as JSON")
    ap.add_argument("--weights-dir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = ap.parse_args(argv)
    log = setup_logging("pipeline.train")
    train_cfg = parse_cfg_arg(a.cfg)
    from pipeline.models.configs import check_method

    check_method(a.method, "config.yaml train.methods")
    if train_cfg.get("device", "auto") != "cpu":
        # one GPU per concurrent job on a multi-GPU workstation (profiles/workstation), claimed
        # before torch initialises CUDA; a no-op on CPU machines and under SLURM
        from pipeline.common.gpu import claim_gpu

        global _GPU_CLAIM
        _GPU_CLAIM = claim_gpu()  # held (lock file open) until the process exits
    import torch

    from pipeline.train.profiles import resolve_config
    from pipeline.train.trainer import train_stage

    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = resolve_config(a.method, train_cfg)
    if a.stage != "head" and a.init is None:
        raise InputError(a.out, f"stage {a.stage} needs --init (the previous stage's checkpoint)")
    info = train_stage(a.stage, cfg, a.data, a.model_dir, a.out, a.init, a.weights_dir)
    log.info("done: %s", json.dumps(info, default=str)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
