"""Comparison tables, paper-table presets, plots and the static HTML report.

Stages (each ``python -m pipeline.report.<stage>``):

- ``aggregate``: every metric JSON -> one tidy table ``results/tables/metrics_long.{csv,parquet}``.
- ``tables``: per-protocol comparison tables (Markdown, CSV, LaTeX/booktabs) for a column preset.
- ``plots``: bar charts per metric, FPS against PSNR, per-frame LMD over time.
- ``html``: ``results/report/index.html`` (tables, plots, side-by-side videos).
- ``readme_assets``: trimmed example table and a screenshot of the report for the README.
"""
