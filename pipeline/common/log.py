"""Logging set-up shared by every ``python -m pipeline.<stage>`` entry point."""
from __future__ import annotations

import logging
import sys


def setup_logging(name: str, level: int = logging.INFO) -> logging.Logger:
    """Configure root logging to stderr (Snakemake redirects it to the rule's ``log:`` file).

    Returns the named logger.
    """
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    return logging.getLogger(name)


def run_main(main, argv=None) -> int:
    """Run a CLI ``main(argv)``; a :class:`PipelineError` prints one clear line and exits 1.

    Any other exception keeps its traceback (it is a bug, not a user error).
    """
    from pipeline.common.errors import PipelineError

    try:
        rc = main(argv)
        return 0 if rc is None else int(rc)
    except PipelineError as exc:
        logging.getLogger("pipeline").error("%s", exc)
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
