"""Error types. Every error a user can cause names the file and the reason in one line."""
from __future__ import annotations

from pathlib import Path


class PipelineError(RuntimeError):
    """Base class for all errors raised deliberately by the pipeline."""


class InputError(PipelineError):
    """Bad user input: a file that cannot be used, with the path and the reason.

    The message is always one line: ``"<path>: <reason>"`` so that Snakemake logs and the
    README troubleshooting table can be matched by the reason text.

    Args:
        path: the offending file (video, audio, config, dataset file).
        reason: why it is refused, phrased for the user ("no audio stream", ...).
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
