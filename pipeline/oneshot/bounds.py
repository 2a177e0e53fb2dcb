"""Bounds of the one-shot protocol, written by the render contract like any method:

* ``still_photo``: the reference photo repeated for every driving frame, with the driving audio:
  perfect identity, no motion (a method must move to beat it on motion fidelity);
* ``driving_video``: the driving frames themselves: perfect motion, the wrong identity (a method
  must keep the reference's identity to beat it on CSIM).

Usage::

    python -m pipeline.oneshot.bounds --kind still_photo --reference Macron --photo resources/photos/Macron.png \
        --driving results/renders/er_nerf/German/jfk --test er_nerf-German-jfk --size 128 \
        --out results/renders/still_photo/Macron/er_nerf-German-jfk
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from pipeline.common.log import run_main, setup_logging
from pipeline.oneshot import BOUND_METHODS, PROTOCOL


def render_bound(kind: str, reference: str, photo: str | Path, driving: str | Path, test: str,
                 out: str | Path, size: int | None = None, flip: bool = False) -> dict:
    """Write one bound run.

    Args:
        kind: ``still_photo`` or ``driving_video``.
        reference, photo, driving, test, size, flip: as :func:`pipeline.oneshot.render.render_oneshot`
            (``driving_video`` frames are scaled to the photo's output size so that every method of
            a reference has one resolution).
    Returns:
        the manifest written.
    Raises:
        ValueError: unknown kind. InputError: unreadable photo or driving clip.
    """
    import cv2

    from pipeline.oneshot.driving import load_driving
    from pipeline.oneshot.render import load_reference
    from pipeline.render.contract import write_contract

    if kind not in BOUND_METHODS:
        raise ValueError(f"kind {kind!r} not in {BOUND_METHODS}")
    img, ref_rec = load_reference(photo, size, flip)
    drv = load_driving(driving)
    n = len(drv.frames)
    w, h = img.shape[1], img.shape[0]
    if kind == "still_photo":
        frames = itertools.repeat(img, n)
    else:
        frames = (f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
                  for f in drv.frames)
    fields = {
        "method": kind, "identity": reference, "test": test, "protocol": PROTOCOL,
        "driving_audio": dict(drv.record["audio"]), "compositing": "full", "controls": {}, "device": "cpu",
        "render_seconds": None, "fps_render": None, "gt_reference": None,
        "reference": {"name": reference, **ref_rec}, "driving": drv.record,
        "baseline": {"kind": kind, "bound": "identity upper bound, no motion" if kind == "still_photo"
                     else "motion upper bound, wrong identity"},
    }
    return write_contract(out, frames, drv.audio_16k, fields)


def main(argv=None) -> int:
    """CLI entry point (see module docstring)."""
    from pipeline.oneshot.render import add_run_arguments

    ap = argparse.ArgumentParser(prog="python -m pipeline.oneshot.bounds", description=__doc__.splitlines()[0])
    ap.add_argument("--kind", required=True, choices=BOUND_METHODS)
    add_run_arguments(ap)
    args = ap.parse_args(argv)
    log = setup_logging("pipeline.oneshot.bounds")
    m = render_bound(args.kind, args.reference, args.photo, args.driving, args.test, args.out, args.size, args.flip)
    log.info("%s: %s, %d frames", args.out, args.kind, m["n_frames"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
