"""Shared plumbing: errors, atomic file output, config loading and validation, logging."""
from pipeline.common.errors import PipelineError, InputError
from pipeline.common.io import atomic_write, atomic_write_json, atomic_dir, read_json

__all__ = ["PipelineError", "InputError", "atomic_write", "atomic_write_json", "atomic_dir", "read_json"]
