"""README first-screen material from a finished run's ``results/``.

Writes ``docs/assets/example_table.md`` (the self-driven mean table, trimmed: every measured row,
the last ``--max-reported`` reported rows, only the footnotes still referenced, paths in them named
relative to the run's project folder) and
``docs/assets/report.png`` (a headless-Chromium screenshot of ``results/report/index.html``, its
paths named the same way).

Usage (after ``snakemake --cores N``)::

    python -m pipeline.report.readme_assets            # --results results --out-dir docs/assets
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

from pipeline.common.config import PROJECT_ROOT
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_path, atomic_write, read_json
from pipeline.common.log import run_main, setup_logging
from pipeline.report.browser import screenshot
from pipeline.report.tables import Table, reported_tag, to_markdown

log = logging.getLogger(__name__)


def trimmed_table(tab: dict, max_reported: int = 3) -> Table:
    """A copy of a ``tables.json`` table keeping every measured row, the last ``max_reported``
    reported rows, and the footnotes those rows (and the notes naming their papers) still use, and
    the note on how bold ranks (``Bold: ...``), renumbered."""
    measured = [r for r in tab["rows"] if r["kind"] == "measured"]
    reported = [r for r in tab["rows"] if r["kind"] == "reported"][-max_reported:] if max_reported else []
    rows = measured + reported
    used = sorted({int(n) for r in rows for c in r["cells"] for group in re.findall(r"\(([\d,]+)\)$", c)
                   for n in group.split(",")})
    used += [i + 1 for i, t in enumerate(tab["footnotes"]) if t.startswith("Bold:")]
    if reported:
        kept = {f"reported rows '{reported_tag(r)}':" for r in reported}
        used += [i + 1 for i, t in enumerate(tab["footnotes"]) if t.startswith(("–:", *kept))]
    remap = {old: new for new, old in enumerate(sorted(set(used)), start=1)}

    def renum(cell: str) -> str:
        return re.sub(r"\(([\d,]+)\)$", lambda m: "(" + ",".join(str(remap[int(n)]) for n in m.group(1).split(","))
                      + ")", cell)

    out = Table(tab["protocol"], tab["title"], list(tab["columns"]), list(tab["headers"]))
    out.rows = [{**r, "cells": [renum(c) for c in r["cells"]]} for r in rows]
    out.footnotes = [tab["footnotes"][old - 1] for old in sorted(remap)]
    return out


def provenance_path(results: Path, cwd: Path | None = None) -> str:
    """The tables file named in ``example_table.md``'s first line, without this machine's paths.

    Args:
        results: the finished run's ``results/`` folder, relative or absolute.
        cwd: the folder paths are made relative to (default: the current directory).

    Returns:
        ``<results>/tables/tables.json`` relative to ``cwd`` when ``results`` lies under it
        (``results/tables/tables.json`` for the default run), else ``<results' name>/tables/tables.json``,
        so a committed README asset never names a home folder or a temporary path.

    Raises nothing: neither folder has to exist (a folder outside ``cwd`` falls back to its name).
    """
    base = Path(cwd) if cwd is not None else Path.cwd()
    try:
        rel = results.resolve().relative_to(base.resolve())
    except ValueError:
        rel = Path(results.resolve().name)
    return (rel / "tables" / "tables.json").as_posix()


def relative_to_roots(text: str, roots: list[Path]) -> str:
    """``text`` with every absolute path under one of ``roots`` named relative to that root.

    The n/a reasons of a run name the folders they looked in as absolute paths (``not found in
    /home/me/project/weights_cache``): right for the user who ran it, but a README asset would carry
    that machine's folders. Here ``<root>/weights_cache`` becomes ``weights_cache``.

    Args:
        text: a footnote or cell.
        roots: absolute folders (the finished run's project folder, this code's project root, the
            working folder); the longest is replaced first, so a nested root wins.

    Returns:
        the text with ``<root>/`` removed wherever it starts a path (after a space, an opening
        bracket or a quote, or at the start); other text unchanged.

    Raises nothing.
    """
    for root in sorted({str(r).rstrip("/") for r in roots if str(r) not in ("", "/")}, key=len, reverse=True):
        text = re.sub(r"(^|[\s(\[`'\"])" + re.escape(root) + "/", r"\1", text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results", help="a finished run's results/ folder")
    ap.add_argument("--out-dir", default="docs/assets")
    ap.add_argument("--max-reported", type=int, default=3, help="reported rows kept in the example table")
    ap.add_argument("--window", default="1280,1600", help="screenshot size W,H in pixels")
    args = ap.parse_args(argv)
    setup_logging("report.readme_assets")
    results, out = Path(args.results), Path(args.out_dir)
    summary = read_json(results / "tables" / "tables.json")
    page = results / "report" / "index.html"
    if not page.is_file():
        raise InputError(page, "report not found (run snakemake first)")
    tab = trimmed_table(summary["protocols"]["self_driven"]["mean"], args.max_reported)
    roots = [results.resolve().parent, PROJECT_ROOT, Path.cwd().resolve()]
    tab.footnotes = [relative_to_roots(t, roots) for t in tab.footnotes]
    text = (f"<!-- generated by `python -m pipeline.report.readme_assets` from {provenance_path(results)} "
            f"(preset {summary['preset']}) -->\n" + to_markdown(tab, level=4))
    with atomic_write(out / "example_table.md", "w") as fh:
        fh.write(text)
    w, h = (int(v) for v in args.window.split(","))
    # the screenshot is of a copy of the page whose paths are named as in the table, beside the
    # page so that its images and videos resolve; the run's own report is left as it is
    fd, shown = tempfile.mkstemp(suffix=".html", prefix=".readme_", dir=page.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(relative_to_roots(page.read_text(encoding="utf-8"), roots))
        with atomic_path(out / "report.png") as tmp:
            screenshot(shown, tmp, size=(w, h))
    finally:
        Path(shown).unlink(missing_ok=True)
    log.info("wrote %s and %s", out / "example_table.md", out / "report.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
