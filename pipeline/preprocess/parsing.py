"""Face parsing stage: ``parsing/{i}.png`` head / neck / torso / background maps.

Colour code :data:`pipeline.common.layout.PARSING_COLORS` (head 255,0,0; neck 0,255,0; torso 0,0,255;
background 255,255,255) in OpenCV's channel order, as the official ER-NeRF code writes its maps with
``cv2.imwrite`` and tests ``seg[..., 0] == 255`` after ``cv2.imread`` for the head: its trainers read
our maps unchanged (an RGB viewer shows the head blue). :data:`ER_NERF_CHANNEL_ORDER` = False would
write the numbers as RGB instead. Use :func:`read_parsing` / :func:`write_parsing` rather than
comparing colours by hand.

Backends (config ``preprocess.parsing.backend``):

* ``bisenet`` - BiSeNet face parsing (:mod:`pipeline.preprocess.backends.bisenet`), used by ``auto``
  when its weights (79999_iter.pth or facexlib's parsing_bisenet.pth) are present;
* ``mediapipe`` - MediaPipe selfie segmentation + face-mesh geometry
  (:mod:`pipeline.preprocess.backends.selfie`), offline default.

Also writes ``parsing.json`` (backend, skipped backend's reason, per-class mean pixel fractions,
timings) next to the folder.

CLI: ``python -m pipeline.preprocess.parsing --frames DIR --mesh face_mesh.npy --out DIR
[--report F] [--weights-dir D] [--cfg JSON]``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.common.config import StageConfig, parse_cfg_arg, stage_weights_dir
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_dir, atomic_write_json
from pipeline.common.layout import PARSING_COLORS
from pipeline.common.log import run_main, setup_logging
from pipeline.preprocess.backends.selfie import PARSING_CLASSES
from pipeline.preprocess.landmarks import list_frames, read_bgr

log = logging.getLogger("pipeline.preprocess.parsing")

#: write the colour code in BGR order, as the official ER-NeRF code reads its maps (see module docstring)
ER_NERF_CHANNEL_ORDER = True
#: label -> colour in the file as RGB bytes (PIL order)
PALETTE = np.array([PARSING_COLORS[c] for c in PARSING_CLASSES], dtype=np.uint8)
if ER_NERF_CHANNEL_ORDER:
    PALETTE = PALETTE[:, ::-1].copy()


@dataclass
class ParsingConfig(StageConfig):
    """Config ``preprocess.parsing``."""

    backend: str = "auto"
    """auto | mediapipe | bisenet (auto: bisenet when its weights are present)."""
    hair: bool = True
    """mediapipe backend: hair below the jaw line is head (:func:`pipeline.preprocess.backends.selfie.hair_mask`)."""
    hair_max_depth: float = 0.5
    """mediapipe backend: hair is head down to this many face heights below the chin."""
    hair_spread: float = 0.15
    """mediapipe backend: below the jaw line, hair reaches at most this many face widths beyond the
    head's extent on the jaw line (dark clothes across the shoulders are not hair); negative: no
    limit (:class:`pipeline.preprocess.backends.selfie.SplitGeometry`)."""


def write_parsing(path: str | Path, labels: np.ndarray) -> None:
    """Write a label map (uint8 [H, W], 0 background, 1 head, 2 neck, 3 torso) as a colour PNG.

    Stored as a palette PNG (fast, small); ``cv2.imread`` expands it to the 3-channel colour code.
    """
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), "P")
    img.putpalette(PALETTE.ravel().tolist())
    img.save(path, format="PNG", compress_level=1)


#: colour code -> label for read_parsing: index = 4 * (R > 127) + 2 * (G > 127) + (B > 127)
_CODE_TO_LABEL = np.full(8, 255, np.uint8)
for _label, _colour in enumerate(PALETTE):
    _CODE_TO_LABEL[(_colour[0] >> 7) * 4 + (_colour[1] >> 7) * 2 + (_colour[2] >> 7)] = _label


def read_parsing(path: str | Path) -> np.ndarray:
    """Read a parsing PNG into labels.

    Each channel is thresholded at 128, so maps that were resized or re-encoded still read.

    Returns:
        uint8 [H, W]: 0 background, 1 head, 2 neck, 3 torso; 255 for a colour outside the code.
    Raises:
        InputError: missing file ("file not found") or undecodable file ("cannot read parsing map").
    """
    import cv2

    if not Path(path).is_file():
        raise InputError(path, "file not found")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(path, "cannot read parsing map")
    bits = img >> 7                                        # cv2 order: B, G, R
    return _CODE_TO_LABEL[(bits[..., 2] << 2) | (bits[..., 1] << 1) | bits[..., 0]]


def _choose_backend(cfg: ParsingConfig, weights_dir: Path | None, report: dict):
    """Returns ``(name, model(rgb) -> x, finish(x, rgb, mesh) -> labels, closer)``: ``model`` runs on
    the main thread, ``finish`` in frame order on a worker thread (overlapping the next frame)."""
    if cfg.backend in ("auto", "bisenet"):
        from pipeline.weights import WeightsMissing

        from pipeline.preprocess.backends.selfie import find_bisenet_weights

        try:
            path = find_bisenet_weights(weights_dir)
        except WeightsMissing as exc:
            log.warning("BiSeNet parsing not used: %s; using MediaPipe segmentation", exc.reason)
            report["bisenet_skipped_reason"] = exc.reason
        else:
            import torch

            from pipeline.preprocess.backends.bisenet import BiSeNetParser, load_bisenet
            from pipeline.preprocess.backends.fan import torch_device

            torch.set_num_threads(1)
            device = torch_device()
            parser = BiSeNetParser(load_bisenet(path, device), device=device)
            report["device"] = device
            report["weights"] = str(path)
            return "bisenet", parser.labels, lambda labels, rgb, mesh: labels, lambda: None
    from pipeline.preprocess.backends.selfie import MeshSplitter, PersonSegmenter, SplitGeometry

    seg = PersonSegmenter()
    split = MeshSplitter(SplitGeometry(hair=cfg.hair, hair_max_depth=cfg.hair_max_depth,
                                        hair_spread=cfg.hair_spread))
    return ("mediapipe", lambda rgb: seg.confidence(rgb) > 0.5,
            lambda person, rgb, mesh: split(person, mesh, rgb), seg.close)


def run(frames_dir: Path, mesh_path: Path, out_dir: Path, cfg: ParsingConfig, weights_dir: Path | None = None,
        report_path: Path | None = None) -> dict:
    """Run the stage (see module docstring). Returns the report.

    Raises:
        InputError: frames folder problems, or a mesh file that does not match the frames.
    """
    import cv2
    from tqdm import tqdm

    t0, c0 = time.perf_counter(), time.process_time()
    frames = list_frames(frames_dir)
    n = len(frames)
    try:
        mesh = np.load(mesh_path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise InputError(mesh_path, f"cannot read face mesh ({exc})") from None
    if mesh.ndim != 3 or mesh.shape[0] != n or mesh.shape[1:] != (478, 3):
        raise InputError(mesh_path, f"face mesh shape {tuple(mesh.shape)} does not match {n} frames x 478 x 3")
    report: dict = {"n_frames": n}
    name, model, finish, close = _choose_backend(cfg, weights_dir, report)
    counts = np.zeros(len(PARSING_CLASSES), np.float64)

    def post(x, rgb: np.ndarray, i: int, out: Path) -> None:
        labels = finish(x, rgb, np.asarray(mesh[i]))
        counts[:] += np.bincount(labels.ravel(), minlength=len(PARSING_CLASSES))[:len(PARSING_CLASSES)]
        write_parsing(out / f"{i}.png", labels)

    try:
        with atomic_dir(out_dir) as tmp, ThreadPoolExecutor(max_workers=1) as reader, \
                ThreadPoolExecutor(max_workers=1) as writer:       # one writer: frame order (splitter state)
            nxt = reader.submit(read_bgr, frames[0])
            done = []
            for i in tqdm(range(n), desc="parsing", mininterval=5, file=sys.stderr):
                bgr = nxt.result()
                if i + 1 < n:
                    nxt = reader.submit(read_bgr, frames[i + 1])
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                done.append(writer.submit(post, model(rgb), rgb, i, tmp))
                if len(done) > 8:                              # bounded queue, surface errors early
                    done.pop(0).result()
            for d in done:
                d.result()
    finally:
        close()
    seconds = time.perf_counter() - t0
    fractions = counts / counts.sum()
    report.update({
        "backend": name,
        "colors": {c: list(PARSING_COLORS[c]) for c in PARSING_CLASSES},
        "channel_order": "BGR (official ER-NeRF)" if ER_NERF_CHANNEL_ORDER else "RGB",
        "class_fractions": {c: round(float(f), 4) for c, f in zip(PARSING_CLASSES, fractions)},
        "config": asdict(cfg),
        "seconds": round(seconds, 3),
        "cpu_seconds": round(time.process_time() - c0, 3),     # all threads of this process
        "frames_per_second": round(n / seconds, 2),
    })
    if fractions[1] < 0.005:
        log.warning("head pixels cover only %.2f%% of the frames: check the parsing maps", 100 * fractions[1])
    if report_path is not None:
        atomic_write_json(report_path, report)
    log.info("parsing: %d frames with %s, %.1f frames/s", n, name, n / seconds)
    return report


def main(argv=None) -> int:
    """CLI entry point (see module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.preprocess.parsing", description=__doc__.split("\n")[0])
    ap.add_argument("--frames", required=True, type=Path, help="ori_imgs folder ({i}.jpg)")
    ap.add_argument("--mesh", required=True, type=Path, help="face_mesh.npy of the landmarks stage")
    ap.add_argument("--out", required=True, type=Path, help="parsing folder to write")
    ap.add_argument("--report", type=Path, default=None, help="parsing.json to write")
    ap.add_argument("--weights-dir", type=Path, default=None,
                    help="weights folder (default weights_cache; relative to the project root; $TALKING_NERF_WEIGHTS overrides it)")
    ap.add_argument("--cfg", default="{}", help="JSON of config preprocess.parsing")
    args = ap.parse_args(argv)
    setup_logging("pipeline.preprocess.parsing")
    cfg = ParsingConfig.from_dict(parse_cfg_arg(args.cfg))
    run(args.frames, args.mesh, args.out, cfg, stage_weights_dir(args.weights_dir), args.report)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
