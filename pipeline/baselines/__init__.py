"""Baselines that write the render contract (``results/renders/{method}/{identity}/{test}/``), so
that the metrics and report stages compare them exactly like the trained NeRFs.

- :mod:`pipeline.baselines.static_frame`: repeats the first training frame (a sanity lower bound).
- :mod:`pipeline.baselines.external`: ingests videos produced by any other system.

Each has a rule file under ``workflow/rules/baselines/`` (docs/adding-a-baseline.md).
"""
