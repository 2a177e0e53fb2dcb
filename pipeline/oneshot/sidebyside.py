"""``python -m pipeline.oneshot.sidebyside``: a side-by-side video photo | driving | output(s).

One H.264 video per reference x driver for the report: the reference photo (as the output uses
it), the driving frames (scaled to the output's height) and each given one-shot render, side by
side, with the driving audio; a caption row names each panel.

Usage::

    python -m pipeline.oneshot.sidebyside --render results/renders/oneshot_meshwarp/Macron/er_nerf-German-jfk \
        [--render results/renders/oneshot_meshwarp/Macron-flipped/er_nerf-German-jfk] --out results/report/one_shot/Macron/er_nerf-German-jfk.mp4
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from pipeline.common.log import run_main, setup_logging


def _label(img: np.ndarray, text: str) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    bar = np.full((max(14, h // 10), w, 3), 255, np.uint8)
    scale = bar.shape[0] / 30
    tw = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
    scale *= min(1.0, (w - 6) / max(tw, 1))          # shrink long captions to the panel width
    cv2.putText(bar, text, (3, int(bar.shape[0] * 0.75)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], 0)


def side_by_side(renders: list[str | Path], out: str | Path) -> int:
    """Write the video; returns its frame count.

    Args:
        renders: one-shot render folders of the same reference photo size and driver (the first
            one's manifest names the photo and the driving clip).
        out: the .mp4 to write (atomically).
    Raises:
        InputError: unreadable render folders, photo or driving clip.
    """
    import cv2

    from pipeline.common.io import atomic_path, read_json
    from pipeline.metrics.compute import read_rgb
    from pipeline.oneshot.driving import load_driving
    from pipeline.oneshot.render import load_reference
    from pipeline.render.contract import encode_video, fit_audio

    mans = [read_json(Path(r) / "manifest.json") for r in renders]
    first = mans[0]
    w, h = first["resolution"]
    ref = first["reference"]
    photo, _ = load_reference(ref["path"], max(w, h), bool(ref.get("flipped")))
    drv = load_driving(first["driving"]["path"])
    n = first["n_frames"]
    with tempfile.TemporaryDirectory(prefix="sbs") as tmp:
        for i in range(n):
            d = drv.frames[min(i, len(drv.frames) - 1)]
            d = cv2.resize(d, (round(d.shape[1] * h / d.shape[0]), h), interpolation=cv2.INTER_AREA)
            panels = [_label(photo, "photo"), _label(d, "driving")]
            for r, m in zip(renders, mans):
                panels.append(_label(read_rgb(Path(r) / "frames" / f"{i}.png"),
                                     (m.get("backend") or {}).get("name", m["method"])
                                     + (" (mirrored photo)" if m["reference"].get("flipped") else "")))
            frame = np.concatenate(panels, 1)
            cv2.imwrite(str(Path(tmp) / f"{i}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        with atomic_path(out) as dst:
            encode_video(Path(tmp), fit_audio(drv.audio_16k, n), dst)
    return n


def main(argv=None) -> int:
    """CLI entry point (see module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.oneshot.sidebyside", description=__doc__.splitlines()[0])
    ap.add_argument("--render", action="append", required=True, help="one-shot render folder (repeatable)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    log = setup_logging("pipeline.oneshot.sidebyside")
    n = side_by_side(args.render, args.out)
    log.info("%s: %d frames", args.out, n)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
