"""``python -m pipeline.weights list|fetch|verify [NAME ...]``: the pretrained-weights manager.

* ``list``: every manifest entry, present or missing in the weights folder, with its stages.
* ``fetch``: download (urllib) and hash-check the named entries (all when none is named); needs
  internet. Entries that are not direct downloads say where to get them.
* ``verify``: check present files against the manifest sha256 (or the published prefix).

The weights folder is ``--weights-dir``, else ``$TALKING_NERF_WEIGHTS``, else config ``weights_dir``.
Exit status 1 when ``fetch`` or ``verify`` found a problem.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.common.config import load_config, weights_dir as config_weights_dir
from pipeline.common.log import run_main, setup_logging
from pipeline.weights import (MANIFEST, WeightsMissing, fetch, hash_problem, load_manifest)


def main(argv=None) -> int:
    """CLI entry point (see module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.weights", description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=["list", "fetch", "verify"])
    ap.add_argument("names", nargs="*", help="manifest entries (default: all)")
    ap.add_argument("--weights-dir", help="weights folder (default: $TALKING_NERF_WEIGHTS or config weights_dir)")
    ap.add_argument("--config", default=None, help="config.yaml to read weights_dir from")
    ap.add_argument("--manifest", default=str(MANIFEST), help=argparse.SUPPRESS)
    ap.add_argument("--force", action="store_true", help="fetch: download again even when present")
    args = ap.parse_args(argv)
    log = setup_logging("pipeline.weights")

    if args.weights_dir:
        wdir = Path(args.weights_dir)
    else:
        wdir = config_weights_dir(load_config(args.config) if args.config else None)
    manifest = load_manifest(args.manifest)
    names = args.names or list(manifest)
    unknown = [n for n in names if n not in manifest]
    if unknown:
        ap.error(f"unknown weights {', '.join(unknown)} (known: {', '.join(manifest)})")

    failures = 0
    print(f"weights folder: {wdir}")
    for name in names:
        entry = manifest[name]
        present = entry.present(wdir)
        if args.command == "list":
            print(f"{name:20s} {'present' if present else 'MISSING':8s} {entry.filename:40s} "
                  f"{','.join(entry.stages)}")
        elif args.command == "fetch":
            try:
                path = fetch(name, wdir, force=args.force, manifest=args.manifest)
                print(f"{name:20s} ok       {path}")
            except WeightsMissing as exc:
                failures += 1
                print(f"{name:20s} FAILED   {exc.reason}")
        else:  # verify
            if not present:
                print(f"{name:20s} MISSING  {entry.path(wdir)}")
                continue
            if entry.kind == "folder":
                print(f"{name:20s} present  (folder, not hashed)")
                continue
            problem = hash_problem(entry, entry.path(wdir))
            if problem:
                failures += 1
                print(f"{name:20s} BAD      {entry.path(wdir)}: {problem}")
            else:
                pinned = "sha256" if entry.sha256 else ("sha256 prefix" if entry.sha256_prefix else "nothing pinned")
                print(f"{name:20s} ok       ({pinned})")
    if failures:
        log.error("%d of %d entries failed", failures, len(names))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
