"""Comparison tables per protocol: methods as rows, metrics as columns (Markdown, CSV, LaTeX).

For each protocol (self-driven, cross-driven) and the column preset of config ``report.preset``
(:mod:`pipeline.report.presets`):

- measured rows: one per method (trained methods in config order, then baselines), the value is the
  mean over identities (and, in the per-identity tables, per identity); cross-driven columns repeat
  the preset's metrics for every test;
- every row starts with its render resolution, compositing mode and training set-up
  (``Resolution``, ``Compositing``, ``Training``: the profile and departures from the paper, e.g.
  a torso that also sees the body pose, with a footnote; reported rows: the resolution the paper
  states, from ``resources/reported_sources.csv``);
- a measured cell whose backend is not the column's reference (LMD: FAN, AUE: OpenFace, CSIM:
  ArcFace) carries a footnote naming its backend, and the header names the backend in brackets
  (``LMD (px @512) [dlib-68]``); pixel metrics are in pixels at the 512 px reference height; a
  metric that compares with something other than the ground truth names it in the header (CSIM:
  ``CSIM↑ (vs mean embedding of 16 training frames)``);
- the best measured value of each column is bold, compared only among rows measured over the same
  identities with the same backend, render resolution, compositing mode and reference (ties on the
  printed value are all bold; a group needs two measured values to have a best);
- n/a cells carry a footnote number; the footnotes list the reasons (from the metric JSONs'
  ``na_reason``, or why the column is not measured), and a metric's ``note`` (frames left out);
- reported rows (``resources/reported_numbers.csv``) follow under a separator, marked "reported",
  printed exactly as in the CSV and never ranked with the measured rows; a footnote names their
  paper, table and set-up (``reported_sources.csv``), and a cell's own ``notes`` (an OCR reading,
  what the paper printed) is a footnote on that cell; a table the preset lists but the CSV lacks
  is named in a footnote. A reported table whose columns are per test
  set (``metric@test``) is printed as its own table with the paper's columns.

Outputs in ``--out-dir`` (``results/tables``): ``{protocol}.md``, ``{protocol}.csv``,
``{protocol}.tex`` (booktabs), ``{protocol}_per_identity.csv`` and ``tables.json`` (what the HTML
report renders). Usage::

    python -m pipeline.report.tables --long results/tables/metrics_long.parquet \
        --reported resources/reported_numbers.csv --preset livenerf_table2 --methods rad_nerf er_nerf \
        --out-dir results/tables
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from pylatexenc.latexencode import RULE_DICT, UnicodeToLatexConversionRule, UnicodeToLatexEncoder

from pipeline.common.config import parse_cfg_arg
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_write, atomic_write_json
from pipeline.common.log import run_main, setup_logging
from pipeline.metrics import (BODY_FLOW_TORSO, BODY_FRAME_TORSO, BODY_POSE_TORSO, HEAD_RAYS_HEAD, HEAD_UP_HEAD,
                              RETRIEVAL_TORSO)
from pipeline.report.aggregate import read_long
from pipeline.report.presets import COLUMNS, Column, Preset, compared_against, get_preset, short_backend

PROTOCOLS = ("self_driven", "cross_driven")
PROTOCOL_TITLES = {"self_driven": "Self-driven (validation split, ground truth available)",
                   "cross_driven": "Cross-driven (driving audio from another speaker)"}
REPORTED_FIELDS = ["method", "source", "table", "metric", "value", "notes"]
SOURCE_FIELDS = ["source", "table", "id", "protocol", "caption", "setup", "resolution", "read_from", "notes"]
#: the per-table sources file, next to the reported numbers
SOURCES_NAME = "reported_sources.csv"
INFO_COLUMNS = (("resolution", "Resolution"), ("compositing", "Compositing"), ("training", "Training"))
#: index of the training set-up among the info columns
TRAINING = 2
#: footnote of a Training cell whose torso saw the body pose
BODY_POSE_NOTE = (f"Training '{BODY_POSE_TORSO}': the torso also sees the body pose (both shoulders' image "
                  "positions, MediaPipe Pose; config torso_body_pose, on in the quick profile), which the RAD-NeRF "
                  "and ER-NeRF torsos as published do not (head pose only; docs/quality.md, cause 12).")
#: footnote of a Training cell whose torso saw the body flow
BODY_FLOW_NOTE = (f"Training '{BODY_FLOW_TORSO}': the torso also sees the body flow (the mean optical flow of the "
                  "body's 3 x 3 cells from a reference frame, measured on the frame whose head pose is rendered: the "
                  "validation frame itself in the self-driven test, the replayed training frame in cross-driven ones; "
                  "config torso_body_flow, on in the quick profile), which the RAD-NeRF and ER-NeRF torsos as "
                  "published do not (head pose only; docs/quality.md, cause 16).")
#: footnote of a Training cell whose torso read the nearest training bodies
RETRIEVAL_NOTE = (f"Training '{RETRIEVAL_TORSO}': the torso also reads, at each pixel, the mean colour of the training "
                  "frames whose body input (shoulders and body flow of the frame whose head pose is rendered) is nearest "
                  "(config torso_retrieval, 5 in the quick profile), an image-based input that the RAD-NeRF and "
                  "ER-NeRF torsos as published do not have (docs/quality.md, cause 17).")
#: footnote of a Training cell whose torso drew the body in its frame
BODY_FRAME_NOTE = (f"Training '{BODY_FRAME_TORSO}': the torso drew the body in the shoulders' frame (each frame's image "
                   "mapped by the similarity that takes its shoulders onto their training mean; config torso_body_frame, "
                   "auto in the quick profile: on for a speaker whose body sways across the frame), which the RAD-NeRF "
                   "and ER-NeRF torsos as published do not (image coordinates; docs/quality.md, cause 15).")
#: footnote of a Training cell whose head saw the camera's up axis
HEAD_UP_NOTE = (f"Training '{HEAD_UP_HEAD}': the head field also sees the camera's up axis in head coordinates (the "
                "direction of gravity as the head tilts and turns, from the tracked head pose; config head_up, on in "
                "the quick profile), which the RAD-NeRF and ER-NeRF heads as published do not (audio and blink only; "
                "docs/quality.md, cause 14).")
#: footnote of a Training cell whose head stage sampled its rays over frames and on the mouth
HEAD_RAYS_NOTE = (f"Training '{HEAD_RAYS_HEAD}': each head-stage step drew its rays from several training frames "
                  "(config frames_per_step above 1), put a share of them in the mouth box (config mouth_rays above "
                  "0), or both (4 frames and 25 % for er_nerf, rad_nerf and nerf3dtalker in the quick profile), where RAD-NeRF and ER-NeRF draw "
                  "a step's rays from one frame (docs/quality.md, 'The mouth hardly moves').")
NA = "n/a"
NOT_REPORTED = "–"
REPORTED_BANNER = "reported in papers (their data and set-up; not ranked)"


@dataclass
class Table:
    """A rendered comparison table (cells are the printed strings).

    Attributes:
        protocol: ``self_driven`` or ``cross_driven``.
        title: caption.
        columns: column ids (``psnr``; cross-driven ``{test}:{key}``).
        headers: printed headers with arrows (``PSNR↑``; ``jfk: LSE-C↑``).
        rows: ``{"kind": "measured"|"reported", "method", "source", "table", "identity",
            "cells": [str], "bold": [bool]}``.
        footnotes: footnote texts; footnote k (1-based) is ``footnotes[k-1]``.

    The first columns are :data:`INFO_COLUMNS` (resolution, compositing) in measured tables; the
    metric columns follow.
    """

    protocol: str
    title: str
    columns: list[str]
    headers: list[str]
    rows: list[dict] = field(default_factory=list)
    footnotes: list[str] = field(default_factory=list)

    def note(self, text: str) -> int:
        """Footnote number of ``text`` (added when new)."""
        if text not in self.footnotes:
            self.footnotes.append(text)
        return self.footnotes.index(text) + 1


def fmt(value: float, digits: int) -> str:
    """Printed number: fixed decimals; infinities as ``inf``/``-inf``."""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def _read_commented_csv(path: Path, fields: list[str], what: str) -> pd.DataFrame:
    """A CSV whose ``#`` lines are comments; InputError naming the missing columns."""
    with open(path, newline="") as fh:
        lines = [ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    df = pd.DataFrame(list(csv.DictReader(lines)))
    missing = [c for c in fields if c not in df.columns]
    if missing:
        raise InputError(path, f"{what} need columns {fields}; missing {missing}")
    return df[fields].fillna("")


def reported_number(value: str) -> float:
    """The number of a reported cell as printed (``"72.2%"`` -> 72.2; ValueError when not a number)."""
    return float(value[:-1] if value.endswith("%") else value)


def read_sources(path: str | Path) -> pd.DataFrame:
    """Per-table notes of the reported numbers (``resources/reported_sources.csv``; columns
    :data:`SOURCE_FIELDS`, one row per ``(source, table)``).

    Raises:
        InputError: missing file, missing columns or a duplicated ``(source, table)``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "reported sources file not found (it sits next to report.reported_numbers)")
    df = _read_commented_csv(path, SOURCE_FIELDS, "reported sources")
    dup = df[df.duplicated(["source", "table"])]
    if len(dup):
        raise InputError(path, f"({dup.iloc[0]['source']}, {dup.iloc[0]['table']}) is listed twice")
    return df


def reported_files(path: str | Path | None) -> list[str]:
    """The files :func:`read_reported` reads for a configured reported-numbers ``path`` (the rules'
    inputs, so that editing either reruns the tables): ``[path]`` plus ``reported_sources.csv``
    beside it when present; ``[]`` when none is configured."""
    if not path:
        return []
    src = Path(path).with_name(SOURCES_NAME)
    return [str(path), *([str(src)] if src.is_file() else [])]


def read_reported(path: str | Path | None) -> pd.DataFrame:
    """Published numbers (``method, source, table, metric, value, notes``; values kept as text),
    joined with their table's ``setup``, ``resolution``, ``id`` and ``table_notes`` (the sources
    file's ``notes``: what was left out or kept as printed) from ``reported_sources.csv`` next to
    ``path`` (empty when that file is absent).

    Raises:
        InputError: missing file, missing columns, a value that is not a number (a trailing ``%``
            is allowed), or a (source, table) that the sources file does not list.
    """
    extra = ["id", "setup", "resolution", "table_notes"]
    if path is None:
        return pd.DataFrame(columns=REPORTED_FIELDS + extra)
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "reported numbers file not found (config report.reported_numbers)")
    df = _read_commented_csv(path, REPORTED_FIELDS, "reported numbers")
    for i, v in enumerate(df["value"], start=2):
        try:
            reported_number(v)
        except ValueError:
            raise InputError(path, f"row {i}: value {v!r} is not a number") from None
    src_path = path.with_name(SOURCES_NAME)
    if not src_path.is_file():
        return df.assign(**{k: "" for k in extra})
    src = read_sources(src_path).rename(columns={"notes": "table_notes"})
    out = df.merge(src[["source", "table", *extra]], on=["source", "table"], how="left", indicator=True)
    lost = out[out["_merge"] != "both"]
    if len(lost):
        raise InputError(src_path, f"no row for ({lost.iloc[0]['source']}, {lost.iloc[0]['table']}) "
                                   f"of {path.name}")
    return out.drop(columns="_merge").fillna("")


def method_order(df: pd.DataFrame, methods: list[str]) -> list[str]:
    """Methods of ``df``: those in ``methods`` first (in that order), then the others sorted."""
    present = list(dict.fromkeys(df["method"]))
    return [m for m in methods if m in present] + sorted(m for m in present if m not in methods)


def _cell(tab: Table, sub: pd.DataFrame, col: Column, n_identities: int,
          where: str = "") -> tuple[str, float | None, tuple]:
    """Printed cell, its numeric value (None for n/a) and its comparison group (the identities
    with a value, the backends, and the runs' resolution and compositing) of one method x column.
    ``n_identities``: the identities of the whole table, so that a mean over fewer is marked.
    ``where`` prefixes per-run notes."""
    if col.metric is None:
        return f"{NA} ({tab.note(f'{col.label}: {col.unmeasured_reason}')})", None, ()
    sub = sub[sub["metric"] == col.metric]
    if sub.empty:
        return f"{NA} ({tab.note(f'{col.label}: not computed for this protocol (config metrics)')})", None, ()
    has = sub[sub["value"].notna()]
    if has.empty:
        reasons = sorted({str(r) for r in sub["na_reason"].dropna()} or {"no value"})
        marks = ",".join(str(tab.note(f"{col.label}: {r}")) for r in reasons)
        return f"{NA} ({marks})", None, ()
    value = float(has["value"].mean()) * col.scale
    text = fmt(value, col.digits)
    backends = sorted({str(b) for b in has["backend"].dropna()})
    marks = []
    n_with = has["identity"].nunique()
    if n_with < n_identities:
        marks.append(tab.note(f"{col.label}: mean over {n_with} of {n_identities} identities (others n/a or not run)"))
    for b in backends:
        if col.off_reference(b):
            marks.append(tab.note(f"{col.label}: measured with {short_backend(b)}, not {col.reference} as in the "
                                  f"papers (not comparable with reported {col.label} values); backend: {b}"))
    if col.measured_note:
        marks.append(tab.note(f"{col.label}: {col.measured_note}"))
    for r in has[has["note"].notna()].itertuples():
        run = "/".join(x for x in (where, r.identity, r.test if r.protocol == "cross_driven" else "") if x)
        marks.append(tab.note(f"{col.label}, {run}: {r.note}"))
    if marks:
        text += f" ({','.join(str(k) for k in dict.fromkeys(marks))})"
    # comparison group: the identities, the backends by name (not their details), the runs' render
    # resolution and compositing mode (tables without those columns, e.g. the one-shot one, leave them
    # out) and what the metric compared with (CSIM's identity reference): rows measured otherwise are
    # never ranked together
    how = tuple(tuple(sorted({str(v) for v in has[k].dropna()})) if k in has else () for k, _ in INFO_COLUMNS[:2])
    return text, value, (tuple(sorted(has["identity"].unique())), tuple(sorted({short_backend(b) for b in backends})),
                         *how, tuple(sorted({compared_against(b) for b in backends} - {""})))


def _mark_best(tab: Table, cols: list[Column | None], values: list[list[tuple[float | None, tuple]]]) -> None:
    """Bold the best measured value per column (on the printed precision, ties all bold), ranked
    only among rows with the same comparison group (:func:`_cell`: identities, backend, render
    resolution, compositing mode and what the metric compared with)."""
    measured = [r for r in tab.rows if r["kind"] == "measured"]
    for j, col in enumerate(cols):
        if col is None:
            continue
        groups: dict[tuple, list] = {}
        for i, v in enumerate(values):
            if v[j][0] is not None and not math.isnan(v[j][0]):
                groups.setdefault(v[j][1], []).append((i, round(v[j][0], col.digits)))
        if len(groups) > 1:
            tab.note("Bold: best among measured rows over the same identities with the same backend, render "
                     "resolution and compositing (and, where the header names one, the same reference); rows "
                     "measured otherwise are not ranked together.")
        for cand in groups.values():
            if len(cand) < 2:
                continue
            best = max(c[1] for c in cand) if col.higher_is_better else min(c[1] for c in cand)
            for i, v in cand:
                if v == best:
                    measured[i]["bold"][j] = True


def _info(sub: pd.DataFrame, key: str) -> str:
    """A measured row's resolution / compositing: the distinct values over its runs, '?' unknown."""
    vals = sorted({str(v) for v in sub[key].dropna()})
    return "/".join(vals) if vals else "?"


def _per_test(rep: pd.DataFrame) -> bool:
    """True when a reported table's columns are per test set (``metric@test``): it is printed as
    its own table, not under our columns."""
    return rep["metric"].str.contains("@", regex=False).any()


def _reported_footnotes(tab: Table, reported: pd.DataFrame) -> None:
    """Footnotes naming each reported table's paper, table, set-up and how it was copied (the
    sources file's ``notes``), and the dash's meaning."""
    for source, table in dict.fromkeys((r["source"], r["table"]) for r in tab.rows if r["kind"] == "reported"):
        src = reported[(reported["source"] == source) & (reported["table"] == table)]
        setup, how = ((src[k].iloc[0] if len(src) and k in src and src[k].iloc[0] else "")
                      for k in ("setup", "table_notes"))
        tab.note(f"reported rows '{reported_tag({'source': source, 'table': table})}': {table} of {source}"
                 + (f"; set-up: {setup}" if setup else "") + (f"; as copied: {how}" if how else ""))
    if any(r["kind"] == "reported" for r in tab.rows):
        tab.note(f"{NOT_REPORTED}: not reported in that paper's table. Reported rows are copied "
                 "from the papers (resources/reported_numbers.csv) and were not measured here.")


def build_table(df: pd.DataFrame, preset: Preset, protocol: str, methods: list[str],
                reported: pd.DataFrame, identity: str | None = None) -> Table:
    """One comparison table.

    Args:
        df: tidy metrics table (:func:`pipeline.report.aggregate.aggregate`).
        preset: column preset.
        protocol: ``self_driven`` or ``cross_driven``.
        methods: preferred method order (config ``train.methods``).
        reported: published numbers (:func:`read_reported`); only the preset's tables whose columns
            are plain metric keys are shown here (per-test-set tables: :func:`build_reported_tables`).
        identity: None for the mean over identities, else that identity only.
    """
    sub = df[df["protocol"] == protocol]
    if identity is not None:
        sub = sub[sub["identity"] == identity]
    keys = preset.self_driven if protocol == "self_driven" else preset.cross_driven
    tests = sorted(sub["test"].unique()) if protocol == "cross_driven" else [None]
    cols = [(t, COLUMNS[k]) for t in tests for k in keys]
    title = protocol.replace("_", "-").capitalize()
    title += f" - identity {identity}" if identity else " - mean over identities"
    tab = Table(protocol, title,
                [k for k, _ in INFO_COLUMNS] + [f"{t}:{c.key}" if t else c.key for t, c in cols],
                [h for _, h in INFO_COLUMNS] + [f"{t}: {_header(c)}" if t else _header(c) for t, c in cols])
    n_ident = sub["identity"].nunique()
    values = []
    for m in method_order(sub, methods):
        msub = sub[sub["method"] == m]
        cells, vals = [_info(msub, k) for k, _ in INFO_COLUMNS], [(None, ())] * len(INFO_COLUMNS)
        notes = [n for key, n in ((HEAD_UP_HEAD, HEAD_UP_NOTE), (HEAD_RAYS_HEAD, HEAD_RAYS_NOTE),
                                  (BODY_POSE_TORSO, BODY_POSE_NOTE),
                                  (BODY_FLOW_TORSO, BODY_FLOW_NOTE), (BODY_FRAME_TORSO, BODY_FRAME_NOTE),
                                  (RETRIEVAL_TORSO, RETRIEVAL_NOTE))
                 if key in cells[TRAINING]]
        if notes:
            cells[TRAINING] += f" ({','.join(str(tab.note(n)) for n in notes)})"
        for t, c in cols:
            text, v, group = _cell(tab, msub if t is None else msub[msub["test"] == t], c,
                                   n_ident if identity is None else 1, m)
            cells.append(text)
            vals.append((v, group))
        tab.rows.append({"kind": "measured", "method": m, "source": "measured here", "table": "",
                         "identity": identity or f"mean of {n_ident}", "cells": cells,
                         "bold": [False] * len(cells)})
        values.append(vals)
    _mark_best(tab, [None] * len(INFO_COLUMNS) + [c for _, c in cols], values)
    _mark_backends(tab, cols, values)
    if identity is None:
        for source, table in preset.reported.get(protocol, ()):
            rep = reported[(reported["source"] == source) & (reported["table"] == table)]
            if rep.empty:
                tab.note(missing_reported(source, table))
            if rep.empty or _per_test(rep):
                continue
            for m in dict.fromkeys(rep["method"]):
                mrep = rep[rep["method"] == m]
                cells = [_reported_cell(tab, mrep, c.key, c.label) for _, c in cols]
                if all(x == NOT_REPORTED for x in cells):
                    continue
                res = mrep["resolution"].iloc[0] if "resolution" in mrep and mrep["resolution"].iloc[0] else NOT_REPORTED
                cells = [res] + [NOT_REPORTED] * (len(INFO_COLUMNS) - 1) + cells
                tab.rows.append({"kind": "reported", "method": m, "source": source, "table": table,
                                 "identity": "", "cells": cells, "bold": [False] * len(cells)})
    _reported_footnotes(tab, reported)
    if not tab.rows:
        tab.note(f"no {protocol.replace('_', '-')} metric files")
    return tab


def _reported_cell(tab: Table, mrep: pd.DataFrame, key: str, label: str) -> str:
    """The printed cell of one reported method x metric key: the value exactly as in the CSV,
    :data:`NOT_REPORTED` when absent, and the CSV's ``notes`` of that cell (an OCR reading, what the
    paper printed) as a footnote naming the paper, table, method and column."""
    hit = mrep[mrep["metric"] == key]
    if hit.empty:
        return NOT_REPORTED
    r = hit.iloc[0]
    note = str(r.get("notes", "") or "").strip()
    if not note:
        return str(r["value"])
    where = f"{reported_tag({'source': r['source'], 'table': r['table']})}, {r['method']}, {label}"
    return f"{r['value']} ({tab.note(f'{where}: {note}')})"


def missing_reported(source: str, table: str) -> str:
    """The note for a (paper, table) the column preset lists but the reported-numbers file lacks."""
    return (f"{reported_tag({'source': source, 'table': table})}: listed by the column preset, but the "
            "reported-numbers file has no rows of it, so it is not shown")


def _header(col: Column) -> str:
    """Header of a measured column: label, unit in parentheses, arrow (``LMD (px @512)↓``)."""
    return f"{col.label} ({col.unit}){col.arrow}" if col.unit else f"{col.label}{col.arrow}"


def _mark_backends(tab: Table, cols: list[tuple[str | None, Column]], values: list,
                   off: int = len(INFO_COLUMNS)) -> None:
    """Name in a column's header what its frames were compared with, where that is not the ground
    truth (:func:`compared_against`: ``CSIM↑ (vs mean embedding of 16 training frames)``; several
    references: ``(vs each run's reference, N)`` with footnote N listing them), and its
    off-reference backends (``LMD (px @512)↓ [dlib-68]``), so that both are visible at a glance.
    ``values``: per row, the ``(value, group)`` of every column (:func:`_cell`); ``off``: the
    leading columns that are not metrics."""
    for j, (_, col) in enumerate(cols):
        groups = [row[off + j][1] for row in values if row[off + j][1]]
        against = sorted({a for g in groups for a in g[-1]})
        if len(against) == 1:
            tab.headers[off + j] += f" (vs {against[0]})"
        elif against:
            k = tab.note(f"{col.label}: each run's frames were compared with its own reference: " + "; ".join(against))
            tab.headers[off + j] += f" (vs each run's reference, {k})"
        names = sorted(b for b in {b for g in groups for b in g[1]} if col.off_reference(b))
        if names:
            tab.headers[off + j] += f" [{', '.join(names)}]"


def build_reported_tables(preset: Preset, reported: pd.DataFrame, protocol: str,
                          every_table: bool = False) -> list[Table]:
    """Reported tables that do not align with the measured columns (per-test-set columns
    ``metric@test``, e.g. cross-driven tables, whose test sets differ from ours), each printed with
    the paper's own metric columns; the first column is the resolution the paper states. With
    ``every_table`` (the one-shot page, whose measured columns are not the papers') every table the
    preset lists for ``protocol`` that the reported-numbers file holds is printed so (those it
    lacks: :func:`missing_reported`)."""
    out = []
    for source, table in preset.reported.get(protocol, ()):
        rep = reported[(reported["source"] == source) & (reported["table"] == table)]
        if rep.empty or not (every_table or _per_test(rep)):
            continue
        # the paper's column order: that of its fullest row (a ground-truth row may lack columns)
        fullest = rep["method"].value_counts(sort=True).index[0]
        metrics = list(dict.fromkeys([*rep.loc[rep["method"] == fullest, "metric"], *rep["metric"]]))
        headers = ["Resolution"]
        for key in metrics:
            base, _, test = key.partition("@")
            c = COLUMNS.get(base)
            label = f"{c.label}{c.arrow}" if c else base
            headers.append(f"{test}: {label}" if test else label)
        tab = Table(protocol, f"{table} of {source} (reported; their test sets)", ["resolution", *metrics], headers)
        res = rep["resolution"].iloc[0] if "resolution" in rep and rep["resolution"].iloc[0] else NOT_REPORTED
        for m in dict.fromkeys(rep["method"]):
            mrep = rep[rep["method"] == m]
            cells = [_reported_cell(tab, mrep, k, h) for k, h in zip(metrics, headers[1:])]
            tab.rows.append({"kind": "reported", "method": m, "source": source, "table": table,
                             "identity": "", "cells": [res] + cells, "bold": [False] * (len(metrics) + 1)})
        _reported_footnotes(tab, reported)
        out.append(tab)
    return out


# ----------------------------------------------------------------------------------- writers
def reported_tag(row: dict) -> str:
    """``"<paper> <table>"`` of a reported row, e.g. ``"ER-NeRF Table 1"``: the paper's short name is
    the ``source`` up to its first parenthesis, so that two papers' "Table 1" stay apart."""
    return f"{row['source'].split(' (')[0].strip()} {row['table']}".strip()


def _row_label(row: dict) -> str:
    return row["method"] if row["kind"] == "measured" else f"{row['method']} (reported: {reported_tag(row)})"


def to_markdown(tab: Table, level: int = 3) -> str:
    """GitHub Markdown: caption heading, table (bold best), banner row before reported rows,
    numbered footnotes."""
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [f"{'#' * level} {tab.title}", "", "| Method | " + " | ".join(tab.headers) + " |",
             "|---|" + "---:|" * len(tab.headers)]
    banner = False
    for r in tab.rows:
        if r["kind"] == "reported" and not banner and any(x["kind"] == "measured" for x in tab.rows):
            lines.append(f"| *{REPORTED_BANNER}* |" + " |" * len(tab.headers))
        banner = banner or r["kind"] == "reported"
        cells = [f"**{c}**" if b else c for c, b in zip(r["cells"], r["bold"])]
        lines.append(f"| {esc(_row_label(r))} | " + " | ".join(esc(c) for c in cells) + " |")
    if tab.footnotes:
        lines.append("")
        lines += [f"({i}) {esc(t)}  " for i, t in enumerate(tab.footnotes, start=1)]
    return "\n".join(lines) + "\n"


def to_csv_rows(tab: Table, with_identity: bool = False) -> list[list[str]]:
    """CSV rows (header first): ``kind, method, source, table[, identity], <column ids>``; cells
    are the printed strings (the LaTeX and Markdown cells are the same strings)."""
    head = ["kind", "method", "source", "table"] + (["identity"] if with_identity else []) + tab.columns
    out = [head]
    for r in tab.rows:
        out.append([r["kind"], r["method"], r["source"], r["table"]]
                   + ([r["identity"]] if with_identity else []) + list(r["cells"]))
    return out


#: plain text -> LaTeX by pylatexenc (its defaults: the specials ``& % $ # _ { } ~ ^ \\`` escaped,
#: every non-ASCII character it knows written as a LaTeX command, e.g. ``∞`` ->
#: ``\ensuremath{\infty}``, ``†`` -> ``{\textdagger}``, ``Δ`` -> ``\ensuremath{\Delta}``), with the
#: metric arrows as papers print them in math mode; a character it does not know is written as its
#: code point (``U+4E2D``), never passed through raw.
_TEX_ENCODER = UnicodeToLatexEncoder(
    conversion_rules=[UnicodeToLatexConversionRule(RULE_DICT, {ord("↑"): r"$\uparrow$", ord("↓"): r"$\downarrow$"}),
                      "defaults"],
    non_ascii_only=False, unknown_char_policy="unihex", unknown_char_warning=False)


def tex_escape(s: str) -> str:
    """Plain text as LaTeX that compiles with pdfLaTeX and no package beyond the kernel (ASCII out).

    Args:
        s: any text (converted with ``str``): a header, cell, row label, caption or footnote.
    Returns:
        The text with LaTeX's specials escaped and every non-ASCII character written as a LaTeX
        command (pylatexenc ``UnicodeToLatexEncoder``: ``"Δ 5%"`` -> ``"\\ensuremath{\\Delta} 5\\%"``;
        ``↑`` / ``↓`` -> ``$\\uparrow$`` / ``$\\downarrow$``; unknown characters as ``U+XXXX``).
        Never raises.
    """
    return _TEX_ENCODER.unicode_to_latex(str(s))


def to_latex(tab: Table) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``): toprule, header,
    midrule, measured rows (best in ``\\textbf``), a midrule and a banner before reported rows,
    bottomrule, then the footnotes."""
    n = len(tab.headers)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\caption{" + tex_escape(tab.title) + "}",
             r"\begin{tabular}{l" + "r" * n + "}", r"\toprule",
             "Method & " + " & ".join(tex_escape(h) for h in tab.headers) + r" \\", r"\midrule"]
    banner = False
    for r in tab.rows:
        if r["kind"] == "reported" and not banner:
            if any(x["kind"] == "measured" for x in tab.rows):
                lines.append(r"\midrule")
            lines.append(r"\multicolumn{" + str(n + 1) + r"}{l}{\emph{" + tex_escape(REPORTED_BANNER)
                         + r"}} \\")
            banner = True
        cells = [r"\textbf{" + tex_escape(c) + "}" if b else tex_escape(c)
                 for c, b in zip(r["cells"], r["bold"])]
        lines.append(tex_escape(_row_label(r)) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if tab.footnotes:
        lines.append(r"\par\smallskip\footnotesize")
        lines += [f"({i}) " + tex_escape(t) + r"\par" for i, t in enumerate(tab.footnotes, start=1)]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_tables(df: pd.DataFrame, preset: Preset, methods: list[str], reported: pd.DataFrame,
                 out_dir: str | Path) -> dict:
    """Write all table files for both protocols into ``out_dir``; returns the tables.json content."""
    out_dir = Path(out_dir)
    summary: dict = {"preset": preset.name, "preset_title": preset.title, "protocols": {}}
    for protocol in PROTOCOLS:
        mean = build_table(df, preset, protocol, methods, reported)
        extra = build_reported_tables(preset, reported, protocol)
        idents = sorted(df.loc[df["protocol"] == protocol, "identity"].unique())
        per_id = [build_table(df, preset, protocol, methods, reported, identity=i) for i in idents]
        md = [f"# {PROTOCOL_TITLES[protocol]}", "", f"Columns: {preset.title} (preset `{preset.name}`).", "",
              to_markdown(mean)]
        md += [to_markdown(t) for t in extra]
        if per_id:
            md.append("## Per identity\n")
            md += [to_markdown(t) for t in per_id]
        with atomic_write(out_dir / f"{protocol}.md", "w") as fh:
            fh.write("\n".join(md))
        with atomic_write(out_dir / f"{protocol}.csv", "w") as fh:
            csv.writer(fh, lineterminator="\n").writerows(to_csv_rows(mean))
        with atomic_write(out_dir / f"{protocol}_per_identity.csv", "w") as fh:
            w = csv.writer(fh, lineterminator="\n")
            rows = [to_csv_rows(t, with_identity=True) for t in per_id]
            if rows:
                w.writerows([rows[0][0]] + [r for t in rows for r in t[1:]])
            else:
                w.writerow(["kind", "method", "source", "table", "identity"])
        with atomic_write(out_dir / f"{protocol}.tex", "w") as fh:
            fh.write("\n".join(to_latex(t) for t in [mean, *extra]))
        summary["protocols"][protocol] = {"mean": asdict(mean), "reported": [asdict(t) for t in extra],
                                          "per_identity": [asdict(t) for t in per_id]}
    atomic_write_json(out_dir / "tables.json", summary)
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", required=True, help="metrics_long.parquet or .csv")
    ap.add_argument("--reported", default=None, help="reported_numbers.csv (omit for none)")
    ap.add_argument("--cfg", default="{}", help="JSON of config 'report' ({preset, reported_numbers})")
    ap.add_argument("--preset", default=None, help="column preset (default: --cfg preset, else livenerf_table2)")
    ap.add_argument("--methods", nargs="*", default=[], help="preferred row order")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args(argv)
    log = setup_logging("report.tables")
    cfg = parse_cfg_arg(args.cfg)
    preset = get_preset(args.preset or cfg.get("preset") or "livenerf_table2")
    df = read_long(args.long)
    reported = read_reported(args.reported or None)
    summary = write_tables(df, preset, args.methods, reported, args.out_dir)
    for p, t in summary["protocols"].items():
        log.info("%s: %d rows x %d columns", p, len(t["mean"]["rows"]), len(t["mean"]["columns"]))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
