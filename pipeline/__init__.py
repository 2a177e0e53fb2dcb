"""talking-nerf-pipeline: raw talking-portrait videos -> NeRF datasets -> audio-driven NeRFs ->
renders -> metrics -> comparison tables.

Sub-packages, one per stage: ``preprocess`` (dataset builder), ``models`` and ``train`` (NeRFs),
``render`` (test protocols, render contract), ``metrics``, ``weights`` (pretrained-file manager),
``report`` (tables, plots, HTML). ``common`` holds the shared plumbing (errors, atomic I/O, config).
"""
__version__ = "0.1.0"
