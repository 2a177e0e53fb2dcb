"""Training throughput: rays/s and steps/s of the head stage of each method (CUDA when present,
else CPU), on a real dataset (``--data``; default: 24 frames of the sample video built with
:mod:`pipeline.train.devdata` in a temporary folder).

    python -m pipeline.train.benchmark [--data results/data/ID] [--profile quick] [--steps 60]

With ``--quality``: the multi-identity quality benchmark of :mod:`pipeline.train.quality` (train
every method on every real identity with one profile, score the validation frames, write
``docs/quality.md``); ``--quality --rescore --label L`` scores the models of ``L`` in ``--workdir``
again without training; ``--quality --targets L1 L2 ...`` writes the targets table of those labels
(:func:`pipeline.train.quality.write_targets`) into ``--doc``; ``--targets`` given again adds a table
of its own labels (one per method's current rows, for example).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pipeline.common.log import run_main, setup_logging  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--profile", default="quick", choices=("quick", "paper", "smoke"))
    ap.add_argument("--methods", nargs="+", default=None,
                    help="methods to run (default: rad_nerf er_nerf; with --quality every registered method)")
    ap.add_argument("--steps", type=int, default=60, help="timed steps (after 10 warm-up steps)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quality", action="store_true", help="multi-identity quality benchmark (pipeline.train.quality)")
    ap.add_argument("--identities", type=Path, default=None,
                    help="--quality: identities TSV (default: the sample + ../shared/data/identities/*.mp4)")
    ap.add_argument("--only", nargs="+", default=None, help="--quality: restrict to these identity ids")
    ap.add_argument("--overrides", default="{}", help="--quality: JSON of train.overrides on top of the profile")
    ap.add_argument("--label", default="current", help="--quality: name of this run in docs/quality.md")
    ap.add_argument("--note", default="", help="--quality: one line describing the variant")
    ap.add_argument("--workdir", type=Path, default=Path("results/quality"))
    ap.add_argument("--doc", default="docs/quality.md",
                    help="--quality: the page to write ('' writes none: runs in parallel, write it after)")
    ap.add_argument("--no-build", action="store_true", help="--quality: use the datasets already in --workdir")
    ap.add_argument("--reuse-heads", default=None, metavar="LABEL",
                    help="--quality: train only the torso stage, on the head and lips of LABEL's models in "
                         "--workdir (same seed; a torso-only ablation)")
    ap.add_argument("--rescore", action="store_true",
                    help="--quality: score the models of --label already in --workdir again (no training)")
    ap.add_argument("--train-only", action="store_true",
                    help="--quality: train and keep the validation panels, no scores or page (a machine without "
                         "the scoring libraries, e.g. the GPU machine of scripts/gpu_quality.sh); --rescore "
                         "--label L scores them later")
    ap.add_argument("--pack", type=Path, default=None, metavar="DIR",
                    help="--quality: write the datasets of --workdir (--only: those) as the trainer loads them "
                         "at the profile's resolution into DIR/results/data/ (a few MB each, to carry to a GPU "
                         "machine; pipeline.train.quality.pack_dataset); no training")
    ap.add_argument("--targets", nargs="+", action="append", default=None, metavar="LABEL",
                    help="--quality: write the issue's targets table (26 dB, within 3 dB of the sample) of these "
                         "labels' rows of --doc into --doc (no training); repeat it for one table per group "
                         "(seeds of one set of runs go in one group)")
    a = ap.parse_args(argv)
    log = setup_logging("pipeline.train.benchmark")
    if a.quality:
        return quality_main(a)
    import torch

    from pipeline.models.registry import resolve_device
    from pipeline.train.data import TalkingDataset
    from pipeline.train.devdata import cached
    from pipeline.train.profiles import resolve_config
    from pipeline.train.trainer import Stage

    torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({a.threads} threads)"
    with tempfile.TemporaryDirectory() as tmp:
        data_root = a.data or cached(Path(tmp))
        for method in a.methods or ["rad_nerf", "er_nerf"]:
            cfg = resolve_config(method, {"profile": a.profile, "device": str(device),
                                          "overrides": {"head_steps": a.steps + 10, "checkpoint_every": 10 ** 9,
                                                        "occ_warmup": 5}})
            data = TalkingDataset.for_config(data_root, cfg)
            st = Stage("head", cfg, data, Path(tmp) / method, None, None, device)
            st.total = 10
            st.run()                                     # warm-up (occupancy grid, allocator)
            st.total = a.steps + 10
            counts = count_samples(st.model)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            st.run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            rays = a.steps * cfg.rays_per_step
            print(f"{method:9s} profile={a.profile} res={cfg.resolution} device={name}: "
                  f"{a.steps / dt:.2f} steps/s, {rays / dt:.0f} rays/s, "
                  f"{counts['samples'] / max(counts['rays'], 1):.2f} samples/ray evaluated "
                  f"({cfg.rays_per_step} rays x {cfg.n_samples} samples per step; "
                  f"{cpu / a.steps * 1e3:.0f} CPU ms/step; load {os.getloadavg()[0]:.1f})", flush=True)
    log.info("done")
    return 0


def count_samples(model) -> dict:
    """Wrap ``model.render_head_rays`` so that the rays and the field samples it evaluates
    (``n_evals`` of :func:`pipeline.models.volume.render_rays`) add up in the returned dict."""
    counts = {"rays": 0, "samples": 0}
    render = model.render_head_rays

    def counted(c2w, pix, *args, **kw):
        out = render(c2w, pix, *args, **kw)
        counts["rays"] += pix.shape[0]
        counts["samples"] += out["n_evals"]
        return out

    model.render_head_rays = counted
    return counts


def quality_main(a) -> int:
    """``--quality``: see :mod:`pipeline.train.quality`."""
    import torch

    from pipeline.common.config import parse_cfg_arg
    from pipeline.train import quality

    torch.set_num_threads(a.threads)
    idents = quality.read_identities(a.identities) if a.identities else quality.default_identities()
    if a.only:
        idents = [r for r in idents if r[0] in a.only]
    train_cfg = {"profile": a.profile, "device": a.device, "overrides": parse_cfg_arg(a.overrides, "--overrides")}
    doc = Path(a.doc) if a.doc else None            # Path("") would be "." (the current folder)
    if a.targets:
        if doc is None:
            raise SystemExit("--targets reads and writes the page: give --doc")
        every = [lab for group in a.targets for lab in group]
        plot = quality.blur_plot(a.workdir.resolve(), every, doc.parent / "assets" / "quality" / "targets_blur.png")
        quality.write_targets(doc, a.targets, plot=plot)
        return 0
    if a.pack:
        import logging

        from pipeline.train.profiles import resolve_config

        log = logging.getLogger("pipeline.train.benchmark")
        res = resolve_config((a.methods or ["rad_nerf"])[0], train_cfg).resolution
        for ident, _ in idents:
            src = a.workdir / "results" / "data" / ident
            if not (src / "manifest.json").is_file():
                log.error("%s: no built dataset in %s (build it with --quality first), not packed", ident, src)
                continue
            info = quality.pack_dataset(src, a.pack / "results" / "data" / ident, res)
            log.info("%s: packed at %d px into %s (%d files, %.1f MB)", ident, res, a.pack / "results" / "data" / ident,
                     info["files"], info["bytes"] / 1e6)
        return 0
    if a.rescore:
        quality.rescore(a.workdir.resolve(), a.label, a.only)
        if doc is not None:
            quality.write_doc(a.workdir.resolve(), doc, doc.parent / "assets" / "quality")
        return 0
    from pipeline.models.methods import method_names

    quality.run_quality(idents, a.methods or method_names(), train_cfg, a.label, a.workdir.resolve(), doc,
                        doc.parent / "assets" / "quality" if doc else a.workdir / "montages", a.note,
                        build=not a.no_build, reuse_heads=a.reuse_heads, score=not a.train_only)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
