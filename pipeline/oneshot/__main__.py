"""``python -m pipeline.oneshot``: drive one reference photo with one driving render or video.

Usage::

    python -m pipeline.oneshot --reference Macron --photo resources/photos/Macron.png \
        --driving results/renders/er_nerf/German/jfk --test er_nerf-German-jfk \
        --backend auto --size 128 --out results/renders/oneshot_meshwarp/Macron/er_nerf-German-jfk

``--flip`` mirrors the photo first (NeRFFaceSpeech's internal differences); ``--anchor N`` sets the
driving anchor frame (default: chosen automatically and recorded in the manifest).
"""
from __future__ import annotations

import argparse
import sys

from pipeline.common.log import run_main, setup_logging


def main(argv=None) -> int:
    """CLI entry point (see module docstring)."""
    from pipeline.oneshot.backends import BACKENDS
    from pipeline.oneshot.render import add_run_arguments

    ap = argparse.ArgumentParser(prog="python -m pipeline.oneshot", description=__doc__.splitlines()[0])
    add_run_arguments(ap)
    ap.add_argument("--backend", choices=BACKENDS, default="auto")
    ap.add_argument("--method", default=None, help="expected method name (checked against the backend)")
    ap.add_argument("--weights-dir", default=None, help="weights folder (default: $TALKING_NERF_WEIGHTS or weights_cache)")
    ap.add_argument("--anchor", type=int, default=None, help="driving anchor frame (default: automatic)")
    ap.add_argument("--device", default="auto", help="torch device of the liveportrait backend (auto: cuda when present)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    log = setup_logging("pipeline.oneshot")

    import cv2
    import torch

    from pipeline.common.config import weights_dir as config_weights_dir
    from pipeline.oneshot.render import render_oneshot

    cv2.setNumThreads(max(1, args.threads))
    torch.set_num_threads(max(1, args.threads))
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    m = render_oneshot(args.reference, args.photo, args.driving, args.test, args.out, args.backend,
                       args.weights_dir or config_weights_dir(), args.size, args.anchor, args.flip,
                       args.method, args.device)
    log.info("%s: %d frames at %.2f fps (%s; anchor %d)", args.out, m["n_frames"], m["fps_render"] or 0.0,
             m["backend"]["reason"], m["anchor"]["index"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
