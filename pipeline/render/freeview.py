"""Free-view protocol (NeRF-3DTalker's novel-view claim, for every trained method): the self-driven
test rendered from the frontal (tracked) cameras and from cameras rotated about the head centre by
yaw / pitch offsets, each into the render contract with protocol ``free_view``.

    python -m pipeline.render.freeview --model results/models/{method}/{identity} \\
        --data results/data/{identity} --method M --identity I --out results/renders/{method}/{identity}/freeview \\
        [--cfg '{"views": {"yaw+15": [15, 0], ...}, "frames": 8}']

Writes ``{out}/{view}/`` (frames, video.mp4, manifest.json) for ``front`` and every configured
view, then ``{out}/manifest.json`` listing them. Only the head is rendered from the novel view: it
is composited over the ground-truth torso and background of the frame (``head_on_gt``), since the
2D torso models have no novel views. There is no ground truth at a novel view, so the metrics
(:mod:`pipeline.metrics.freeview`) are identity consistency against the frontal render (CSIM) and
sharpness (CPBD).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pipeline.common.config import parse_cfg_arg
from pipeline.common.io import atomic_write_json
from pipeline.common.layout import DatasetLayout
from pipeline.common.log import run_main, setup_logging

PROTOCOL = "free_view"
FRONT = "front"
#: default views: name -> (yaw, pitch) degrees of the camera about the head centre
DEFAULT_VIEWS = {"yaw-30": (-30.0, 0.0), "yaw-15": (-15.0, 0.0), "yaw+15": (15.0, 0.0), "yaw+30": (30.0, 0.0),
                 "pitch-30": (0.0, -30.0), "pitch-15": (0.0, -15.0), "pitch+15": (0.0, 15.0),
                 "pitch+30": (0.0, 30.0)}


def render_views(model, data_dir: str | Path, method: str, identity: str, out: str | Path,
                 views: dict[str, tuple[float, float]] | None = None, frames: int = 0) -> dict:
    """Render the frontal and the offset views of the self-driven test.

    Args:
        model: a :class:`pipeline.models.api.TrainedTalkingHead`.
        views: view name -> (yaw, pitch) in degrees (default :data:`DEFAULT_VIEWS`).
        frames: render the first ``frames`` validation frames (0: all).
    Returns:
        the index manifest written to ``{out}/manifest.json``: ``{"method", "identity",
        "protocol": "free_view", "reference_view": "front", "views": {name: {"yaw_deg",
        "pitch_deg", "dir"}}}``.
    """
    from pipeline.render.contract import sha256_file, write_contract
    from pipeline.render.controls import Controls
    from pipeline.render.protocol import self_driven
    from pipeline.render.renderer import Renderer, RenderStats

    out = Path(out)
    data = DatasetLayout(Path(data_dir), identity)
    feature = model.meta.get("audio_feature", "mel")
    seq = self_driven(data, feature, model.conditions, method)
    if frames and frames < len(seq):
        seq = seq.head(frames)
    index = {"method": method, "identity": identity, "protocol": PROTOCOL, "reference_view": FRONT, "views": {}}
    for name, (yaw, pitch) in {FRONT: (0.0, 0.0), **(views or DEFAULT_VIEWS)}.items():
        controls = Controls(yaw_deg=float(yaw), pitch_deg=float(pitch))
        renderer = Renderer(model, data, "head_on_gt", controls)
        stats = RenderStats()

        def manifest(controls=controls, renderer=renderer, stats=stats, name=name):
            return {"method": method, "identity": identity, "test": f"freeview/{name}", "protocol": PROTOCOL,
                    "driving_audio": {"path": seq.audio_path, "sha256": seq.audio_sha256},
                    "compositing": "head_on_gt", "controls": controls.as_manifest(), "device": str(renderer.device),
                    "render_seconds": round(stats.render_seconds, 6),
                    "fps_render": (stats.n_frames / round(stats.render_seconds, 6)) if stats.render_seconds > 0
                    else None,
                    "gt_reference": None, "view": {"name": name, "yaw_deg": float(yaw), "pitch_deg": float(pitch)},
                    "pose_frame_ids": [int(i) for i in seq.frame_ids], "model_profile": model.meta.get("profile")}

        write_contract(out / name, renderer.frames(seq, stats, progress=False), seq.audio_16k, manifest)
        index["views"][name] = {"yaw_deg": float(yaw), "pitch_deg": float(pitch), "dir": name}
    index["driving_audio_sha256"] = sha256_file(data.audio)
    atomic_write_json(out / "manifest.json", index)
    return index


@torch.no_grad()   # not torch.set_grad_enabled(False): callers in the same process keep autograd
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.render.freeview", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--method", required=True)
    ap.add_argument("--identity", required=True)
    ap.add_argument("--out", required=True, help="results/renders/{method}/{identity}/freeview")
    ap.add_argument("--cfg", default="{}", help="config render.free_view as JSON ({views, frames})")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    log = setup_logging("pipeline.render.freeview")
    torch.set_num_threads(max(args.threads, 1))
    from pipeline.models.registry import load_trained, resolve_device

    cfg = parse_cfg_arg(args.cfg)
    views = {k: tuple(v) for k, v in (cfg.get("views") or DEFAULT_VIEWS).items()}
    model = load_trained(args.model, resolve_device(args.device))
    idx = render_views(model, args.data, args.method, args.identity, args.out, views, int(cfg.get("frames") or 0))
    log.info("%s/%s: free-view renders %s", args.method, args.identity, ", ".join(idx["views"]))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
