"""Dataset builder: raw talking-portrait video -> ER-NeRF-compatible training set.

Stages (each ``python -m pipeline.preprocess.<stage>``, called by ``workflow/rules/preprocess.smk``):
probe, crop, frames, landmarks, parsing, background, tracking, aus, audio_features, manifest.
Shared helpers: :mod:`pipeline.preprocess.media` (ffmpeg / PyAV) and
:mod:`pipeline.preprocess.faces` (face detection).
"""
