"""The ``emotion_edit`` protocol: the self-driven test (validation poses and audio) of a model with
an ``emotion`` condition (AED-NeRF) rendered once under every emotion label the model was trained
with (``meta["condition_values"]["emotion"]``), each as a render contract whose manifest records
the label (``controls.emotion``).

    python -m pipeline.render.emotion_edit --model results/models/aed_nerf/X --data results/data/X \\
        --method aed_nerf --identity X --out results/renders/aed_nerf/X/emotion_edit [--cfg '<render JSON>']

Writes ``{out}/{category}-{level}/`` (frames/, video.mp4, manifest.json) per label and
``{out}/index.json`` (``{"labels": [...], "folders": {label: folder}}``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.common.config import parse_cfg_arg
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_write_json
from pipeline.common.layout import SELF_DRIVEN_TEST
from pipeline.common.log import run_main, setup_logging


def trained_labels(model, model_dir: str | Path) -> list[str]:
    """Emotion labels a loaded model was trained with. Raises InputError for a model without an
    emotion condition."""
    labels = (model.meta.get("condition_values") or {}).get("emotion")
    if "emotion" not in getattr(model, "conditions", ()) or not labels:
        raise InputError(model_dir, f"{model.method} has no emotion condition; emotion_edit needs a method like aed_nerf")
    return list(labels)


def render_emotion_edit(model_dir: str | Path, data_dir: str | Path, method: str, identity: str, out: str | Path,
                        render_cfg: dict | None = None, device: str = "auto", model=None) -> dict:
    """Render the self-driven test under every trained label into ``out/{category}-{level}/``.
    Returns the index written to ``out/index.json``."""
    from pipeline.models.registry import load_trained, resolve_device
    from pipeline.render.__main__ import render_test

    out = Path(out)
    model = model or load_trained(model_dir, resolve_device(device))
    labels = trained_labels(model, model_dir)
    render_cfg = dict(render_cfg or {})
    folders = {}
    for label in labels:
        cfg = {**render_cfg, "controls": {**(render_cfg.get("controls") or {}), "emotion": label}}
        folder = label.replace(":", "-")
        render_test(model_dir, data_dir, method, identity, SELF_DRIVEN_TEST, out / folder, render_cfg=cfg,
                    device=device, model=model)
        folders[label] = folder
    index = {"method": method, "identity": identity, "protocol": "emotion_edit", "test": SELF_DRIVEN_TEST,
             "labels": labels, "folders": folders}
    atomic_write_json(out / "index.json", index)
    return index


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.render.emotion_edit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--method", required=True)
    ap.add_argument("--identity", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cfg", default="{}", help="config 'render' section as JSON (compositing, controls)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    log = setup_logging("pipeline.render.emotion_edit")
    import torch

    torch.set_num_threads(max(a.threads, 1))
    with torch.no_grad():   # not set_grad_enabled(False): callers in the same process keep autograd
        idx = render_emotion_edit(a.model, a.data, a.method, a.identity, a.out, parse_cfg_arg(a.cfg), a.device)
    log.info("%s/%s: emotion_edit under %s", a.method, a.identity, ", ".join(idx["labels"]))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
