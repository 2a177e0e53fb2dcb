"""Render one test of one trained model into the render contract.

    python -m pipeline.render --model results/models/er_nerf/German --data results/data/German \\
        --method er_nerf --identity German --test self --out results/renders/er_nerf/German/self \\
        [--audio driving.flac] [--cfg '<config render JSON>'] [--audio-cfg '<preprocess.audio JSON>']

``--test self`` (pipeline.common.layout.SELF_DRIVEN_TEST) is the self-driven protocol; any other
test is cross-driven and needs ``--audio``. Writes ``frames/``, ``video.mp4``, ``manifest.json``.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

from pipeline.common.config import resolve_path, parse_cfg_arg
from pipeline.common.errors import InputError
from pipeline.common.layout import SELF_DRIVEN_TEST, DatasetLayout
from pipeline.common.log import run_main, setup_logging
from pipeline.render.contract import write_contract
from pipeline.render.controls import Controls
from pipeline.render.protocol import cross_driven, self_driven
from pipeline.render.renderer import Renderer, RenderStats


def render_test(model_dir: str | Path, data_dir: str | Path, method: str, identity: str, test: str,
                out: str | Path, audio: str | Path | None = None, render_cfg: dict | None = None,
                audio_cfg: dict | None = None, device: str = "auto", model=None,
                fps512_frames: int = -1) -> dict:
    """Render ``test`` (``self`` or a cross-driven name with ``audio``) and write the contract.

    Args:
        model_dir: ``results/models/{method}/{identity}`` (loaded with
            :func:`pipeline.models.registry.load_trained` unless ``model`` is given).
        render_cfg: config ``render`` (``compositing``, ``controls``).
        audio_cfg: config ``preprocess.audio`` (cross-driven feature extraction).
        model: an already loaded :class:`~pipeline.models.api.TrainedTalkingHead` (tests).
        fps512_frames: frames rendered again at 512x512 after the render to record
            ``fps_render_512`` when the render resolution differs (-1: 3 on CUDA, none on CPU,
            where ``python -m pipeline.render.benchmark`` measures it).
    Returns:
        the manifest written.
    """
    render_cfg = render_cfg or {}
    if model is None:
        from pipeline.models.registry import load_trained, resolve_device

        model = load_trained(model_dir, resolve_device(device))
    data = DatasetLayout(Path(data_dir), identity)
    feature = model.meta.get("audio_feature", "mel")
    if test == SELF_DRIVEN_TEST:
        seq = self_driven(data, feature, model.conditions, method)
        pose_source = "transforms_val.json"
    else:
        if audio is None:
            raise InputError(test, "a cross-driven test needs its driving audio (--audio, config render.cross_driven)")
        seq = cross_driven(data, audio, feature, audio_cfg or {}, model.conditions, method)
        pose_source = "transforms_train.json (ping-pong)"
    controls_cfg = dict(render_cfg.get("controls") or {})
    if controls_cfg.get("background"):
        controls_cfg["background"] = str(resolve_path(controls_cfg["background"]))
    controls = Controls.from_config(controls_cfg)
    compositing = render_cfg.get("compositing", "full")
    renderer = Renderer(model, data, compositing, controls)
    stats = RenderStats()
    fps512: dict = {}

    def manifest() -> dict:
        return {
            "method": method,
            "identity": identity,
            "test": test,
            "protocol": seq.protocol,
            "driving_audio": {"path": str(seq.audio_path), "sha256": seq.audio_sha256},
            "compositing": compositing,
            "controls": controls.as_manifest(),
            "device": str(renderer.device),
            "render_seconds": round(stats.render_seconds, 6),
            "fps_render": (stats.n_frames / round(stats.render_seconds, 6)) if stats.render_seconds > 0 else None,
            "warmup_seconds": round(stats.warmup_seconds, 6),
            **fps512,
            "gt_reference": seq.gt_reference,
            "model_dir": str(model_dir),
            "model_profile": model.meta.get("profile"),
            "audio_feature": feature,
            "pose_source": pose_source,
            "pose_frame_ids": [int(i) for i in seq.frame_ids],
            "torch": torch.__version__,
            "host": platform.node(),
        }

    def frames():
        yield from renderer.frames(seq, stats)
        fps512.update(_fps_at_512(model, data, seq, renderer, stats, fps512_frames))

    return write_contract(out, frames(), seq.audio_16k, manifest)


def _fps_at_512(model, data, seq, renderer, stats, frames: int) -> dict:
    """``fps_render_512`` of this run (see :func:`render_test`), with how it was obtained."""
    from pipeline.render.benchmark import measure_fps

    if renderer.size == (512, 512):
        return {"fps_render_512": stats.fps_render, "fps_render_512_source": "this render"}
    if frames < 0:
        frames = 3 if renderer.device.type == "cuda" else 0
    if frames == 0:
        return {"fps_render_512": None,
                "fps_render_512_source": "not measured per run on CPU: python -m pipeline.render.benchmark"}
    r = measure_fps(model, data, 512, frames, seq=seq)
    return {"fps_render_512": r["fps_render"], "fps_render_512_source": f"{r['frames']} frames re-rendered at 512x512"}


_GPU_CLAIM = None


@torch.no_grad()   # not torch.set_grad_enabled(False): callers in the same process keep autograd
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.render", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="trained model folder results/models/{method}/{identity}")
    ap.add_argument("--data", required=True, help="dataset folder results/data/{identity}")
    ap.add_argument("--method", required=True)
    ap.add_argument("--identity", required=True)
    ap.add_argument("--test", required=True, help=f"'{SELF_DRIVEN_TEST}' or a cross-driven test name")
    ap.add_argument("--audio", help="driving audio (cross-driven tests)")
    ap.add_argument("--out", required=True, help="render folder results/renders/{method}/{identity}/{test}")
    ap.add_argument("--cfg", default="{}", help="config 'render' section as JSON")
    ap.add_argument("--audio-cfg", default="{}", help="config 'preprocess.audio' section as JSON")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    ap.add_argument("--fps512-frames", type=int, default=-1,
                    help="frames re-rendered at 512x512 to record fps_render_512 (-1: 3 on CUDA, 0 on CPU)")
    args = ap.parse_args(argv)
    log = setup_logging("pipeline.render")
    if args.device != "cpu":
        # one GPU per concurrent job on a multi-GPU workstation (profiles/workstation); a no-op
        # on CPU machines and under SLURM, which binds the job's GPU itself
        from pipeline.common.gpu import claim_gpu

        global _GPU_CLAIM
        _GPU_CLAIM = claim_gpu()  # held (lock file open) until the process exits
    torch.set_num_threads(max(args.threads, 1))
    m = render_test(args.model, args.data, args.method, args.identity, args.test, args.out,
                    audio=args.audio, render_cfg=parse_cfg_arg(args.cfg), audio_cfg=parse_cfg_arg(args.audio_cfg, "--audio-cfg"),
                    device=args.device, fps512_frames=args.fps512_frames)
    log.info("%s/%s/%s: %d frames %dx%d, %.2f fps (model time) on %s", args.method, args.identity,
             args.test, m["n_frames"], *m["resolution"], m["fps_render"] or 0.0, m["device"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
