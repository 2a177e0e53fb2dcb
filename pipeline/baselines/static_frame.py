"""Static-frame baseline: the first training frame repeated for every output frame.

A sanity lower bound for the tables: no motion and no lip sync at all, but perfect identity and
image statistics of the training data. For each test it writes the render contract with the
test's driving audio (self-driven: the identity's validation-segment audio; cross-driven: the
driving clip), so every metric runs on it exactly as on the NeRFs.

Usage::

    python -m pipeline.baselines.static_frame --data results/data/German --identity German \
        --test self --out results/renders/static_frame/German/self
    python -m pipeline.baselines.static_frame --data results/data/German --identity German \
        --test jfk --audio resources/audio/jfk_4.2s.flac --out results/renders/static_frame/German/jfk
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from pipeline.baselines.spec import first_training_frame, spec_for
from pipeline.common.layout import DatasetLayout
from pipeline.common.log import run_main, setup_logging
from pipeline.render.contract import write_contract

METHOD = "static_frame"


def render_static_frame(data_dir: str | Path, identity: str, test: str, out: str | Path,
                        audio: str | Path | None = None, source: str = "gt") -> dict:
    """Write the static-frame render of one test.

    Args:
        data_dir: ``results/data/{identity}``.
        test: ``self`` or a cross-driven test name (then ``audio`` is its driving audio).
        out: ``results/renders/static_frame/{identity}/{test}``.
        source: ``gt`` (gt_imgs, default) or ``ori`` (ori_imgs) for the repeated frame.
    Returns:
        the manifest written.
    Raises:
        InputError: missing dataset files or driving audio.
    """
    data = DatasetLayout(Path(data_dir), identity)
    spec = spec_for(data, test, audio)
    frame_path, frame = first_training_frame(data, source)
    fields = {
        "method": METHOD, "identity": identity, "test": test, "protocol": spec.protocol,
        "driving_audio": spec.driving_audio(), "compositing": "full", "controls": {},
        "device": "cpu", "render_seconds": None, "fps_render": None,
        "gt_reference": spec.gt_reference, "baseline": {"kind": METHOD, "frame": str(frame_path)},
    }
    return write_contract(out, itertools.repeat(frame, spec.n_frames), spec.audio_16k, fields)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="results/data/{identity}")
    ap.add_argument("--identity", required=True)
    ap.add_argument("--test", required=True, help="'self' or a cross-driven test name")
    ap.add_argument("--audio", default=None, help="driving audio of a cross-driven test")
    ap.add_argument("--source", choices=("gt", "ori"), default="gt", help="gt_imgs or ori_imgs")
    ap.add_argument("--out", required=True, help="results/renders/static_frame/{identity}/{test}")
    args = ap.parse_args(argv)
    log = setup_logging("baselines.static_frame")
    m = render_static_frame(args.data, args.identity, args.test, args.out, args.audio, args.source)
    log.info("%s/%s: %d frames of %s", args.identity, args.test, m["n_frames"], m["baseline"]["frame"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
