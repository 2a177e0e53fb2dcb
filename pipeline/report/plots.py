"""Report plots (matplotlib, Agg backend): bar charts per metric, FPS against PSNR, per-frame LMD.

Outputs in ``--out-dir`` (``results/report/plots``):

- ``bar_self_driven_{metric}.png``: mean over identities per method (error bar: min..max over
  identities) for every self-driven metric with at least one value;
- ``bar_cross_driven_{metric}.png``: the same, one group of bars per cross-driven test;
- ``fps_vs_psnr.png``: rendering FPS against self-driven PSNR, one point per method (mean over
  identities); the figure says so when no method has both;
- ``lmd_{identity}_{test}.png``: per-frame mouth LMD over time (frame index / 25 fps in seconds),
  one line per method, from the metrics' per-frame CSVs (``{test}.frames.csv`` next to each JSON);
- ``plots.json``: ``[{"file", "title", "kind"}]`` in display order (read by the HTML stage).

Usage::

    python -m pipeline.report.plots --long results/tables/metrics_long.parquet \
        --out-dir results/report/plots
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.common.io import atomic_dir, atomic_write_json  # noqa: E402
from pipeline.common.log import run_main, setup_logging  # noqa: E402
from pipeline.report.aggregate import read_long  # noqa: E402
from pipeline.report.presets import COLUMNS  # noqa: E402
from pipeline.report.tables import method_order  # noqa: E402

log = logging.getLogger(__name__)
FPS = 25
_BY_METRIC = {c.metric: c for c in COLUMNS.values() if c.metric}


def _label(metric: str) -> str:
    c = _BY_METRIC.get(metric)
    if c is None:
        return metric
    unit = " (s)" if metric == "training_time_s" else ""
    return f"{c.label if metric != 'training_time_s' else 'Training time'}{unit} {c.arrow}"


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bar_charts(df: pd.DataFrame, methods: list[str], out: Path) -> list[dict]:
    """Bar charts of every metric with values (see module doc). Returns plots.json entries."""
    entries = []
    for protocol in ("self_driven", "cross_driven"):
        sub = df[(df["protocol"] == protocol) & df["value"].notna()]
        for metric in sorted(sub["metric"].unique()):
            msub = sub[sub["metric"] == metric]
            order = method_order(msub, methods)
            tests = sorted(msub["test"].unique())
            fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(order) * len(tests) + 1.5), 3.2))
            width = 0.8 / len(tests)
            for k, test in enumerate(tests):
                g = msub[msub["test"] == test].groupby("method")["value"]
                mean, lo, hi = g.mean(), g.min(), g.max()
                xs = [i + (k - (len(tests) - 1) / 2) * width for i in range(len(order))]
                ys = [mean.get(m, math.nan) for m in order]
                err = [[y - lo.get(m, y) for m, y in zip(order, ys)], [hi.get(m, y) - y for m, y in zip(order, ys)]]
                ax.bar(xs, ys, width=width, yerr=err, capsize=3,
                       label=test if protocol == "cross_driven" else None)
            ax.set_xticks(range(len(order)), order, rotation=20, ha="right")
            ax.set_ylabel(_label(metric))
            ax.set_title(f"{protocol.replace('_', '-')}: {_label(metric)}")
            if protocol == "cross_driven":
                ax.legend(title="test", fontsize=8)
            name = f"bar_{protocol}_{metric}.png"
            _save(fig, out / name)
            entries.append({"file": name, "title": f"{protocol.replace('_', '-')} {_label(metric)}", "kind": "bar"})
    return entries


def fps_vs_psnr(df: pd.DataFrame, methods: list[str], out: Path) -> dict:
    """Scatter of rendering FPS (x, log scale) against self-driven PSNR (y), one point per method."""
    sub = df[(df["protocol"] == "self_driven") & df["metric"].isin(["fps", "psnr"]) & df["value"].notna()]
    piv = sub.groupby(["method", "metric"])["value"].mean().unstack()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    pts = piv.dropna() if {"fps", "psnr"} <= set(piv.columns) else pd.DataFrame()
    for m in method_order(pts.reset_index(), methods) if len(pts) else []:
        ax.scatter(pts.loc[m, "fps"], pts.loc[m, "psnr"], s=40)
        ax.annotate(m, (pts.loc[m, "fps"], pts.loc[m, "psnr"]), textcoords="offset points", xytext=(5, 4))
    if len(pts):
        ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "n/a: no method has both FPS and PSNR", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("rendering FPS ↑")
    ax.set_ylabel("PSNR (self-driven) ↑")
    ax.set_title("Speed against quality")
    _save(fig, out / "fps_vs_psnr.png")
    return {"file": "fps_vs_psnr.png", "title": "FPS against PSNR", "kind": "scatter"}


def lmd_over_time(df: pd.DataFrame, methods: list[str], out: Path) -> list[dict]:
    """Per-frame LMD lines per (identity, test) from the per-frame CSVs beside the metric JSONs."""
    entries = []
    files = df[["method", "identity", "test", "source_file"]].drop_duplicates()
    for (ident, test), g in files.groupby(["identity", "test"]):
        series = {}
        for _, r in g.iterrows():
            csv_path = Path(str(r["source_file"])).with_suffix(".frames.csv")
            if not csv_path.is_file():
                continue
            frames = pd.read_csv(csv_path)
            if "lmd" in frames.columns and frames["lmd"].notna().any():
                x = frames["frame"] if "frame" in frames.columns else pd.Series(range(len(frames)))
                series[r["method"]] = (x / FPS, frames["lmd"])
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 3))
        for m in [m for m in methods if m in series] + sorted(set(series) - set(methods)):
            ax.plot(*series[m], label=m, linewidth=1.2)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("LMD (mouth) ↓")
        ax.set_title(f"Per-frame LMD: {ident}, test {test}")
        ax.legend(fontsize=8)
        name = f"lmd_{ident}_{test}.png"
        _save(fig, out / name)
        entries.append({"file": name, "title": f"Per-frame LMD {ident} / {test}", "kind": "lmd"})
    return entries


def make_plots(df: pd.DataFrame, methods: list[str], out_dir: str | Path) -> list[dict]:
    """Write every plot and ``plots.json`` into ``out_dir`` (built atomically). Returns the entries."""
    with atomic_dir(out_dir) as tmp:
        entries = bar_charts(df, methods, tmp)
        entries.append(fps_vs_psnr(df, methods, tmp))
        entries += lmd_over_time(df, methods, tmp)
        atomic_write_json(tmp / "plots.json", entries)
    return entries


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", required=True, help="metrics_long.parquet or .csv")
    ap.add_argument("--methods", nargs="*", default=[], help="preferred method order")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args(argv)
    setup_logging("report.plots")
    entries = make_plots(read_long(args.long), args.methods, args.out_dir)
    log.info("%d plots in %s", len(entries), args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
