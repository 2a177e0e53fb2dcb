"""The HTML report in a real headless browser (Debian chromium, installed by scripts/bootstrap.sh).

The report is built from files this test writes: a small dataset cut from the sample video, the
static_frame baseline and an external video rendered into the render contract, metric JSONs,
tables and plots. Chromium loads the page (--dump-dom): every table and video element is there
and every video source exists; a 1280x2000 screenshot is taken and must show content.
"""
from __future__ import annotations

import json
import re
import subprocess
from html.parser import HTMLParser
from urllib.parse import unquote

import numpy as np
import pytest

from pipeline.baselines import external, static_frame
from pipeline.report import aggregate, browser, html, plots, tables
from tests.conftest import PROJECT_ROOT, SAMPLE_VIDEO
from tests.test_report_data import make_tiny_dataset, write_metric_json

pytestmark = pytest.mark.browser
JFK = PROJECT_ROOT / "resources" / "audio" / "jfk_4.2s.flac"


class _Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.videos, self.sources, self.imgs, self._in_video = 0, 0, [], [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables += 1
        elif tag == "video":
            self.videos += 1
            self._in_video = True
        elif tag == "source" and self._in_video:
            self.sources.append(a.get("src"))
        elif tag == "img":
            self.imgs.append(a.get("src"))

    def handle_endtag(self, tag):
        if tag == "video":
            self._in_video = False


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if browser.chromium_binary() is None:
        pytest.skip("chromium not installed (scripts/bootstrap.sh installs it; CI has it)")
    root = tmp_path_factory.mktemp("site")
    data = make_tiny_dataset(root / "data", seconds=2.2)
    renders, metrics = root / "renders", root / "metrics"
    clip = root / "other.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "3", "-t", "1", "-i", str(SAMPLE_VIDEO), "-vf",
                    "scale=160:160", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip)], check=True)
    for test, audio in (("self", None), ("jfk", JFK)):
        static_frame.render_static_frame(data.root, "German", test, renders / "static_frame" / "German" / test,
                                         audio=audio)
        external.ingest(clip, "other_system", "German", test, data.root,
                        renders / "other_system" / "German" / test, audio=audio)
    for method in ("static_frame", "other_system"):
        write_metric_json(metrics, method, "German", "self", {"psnr": 20.0 if method == "static_frame" else 24.0,
                                                              "lpips": None},
                          reasons={"lpips": f"alexnet-owt-7be5be79.pth not found in {root.parent}/weights_cache"})
        write_metric_json(metrics, method, "German", "jfk", {"lse_c": None}, reasons={"lse_c": "no SyncNet"})
    df = aggregate.aggregate(sorted(metrics.rglob("*.json")))
    long = root / "tables" / "long.parquet"
    long.parent.mkdir()
    df.to_parquet(long)
    tables.main(["--long", str(long), "--reported", str(PROJECT_ROOT / "resources" / "reported_numbers.csv"),
                 "--out-dir", str(root / "tables")])
    site = root / "report"
    plots.make_plots(df, [], site / "plots")
    videos = sorted(str(p) for p in renders.rglob("video.mp4"))
    assert html.main(["--tables", str(root / "tables" / "tables.json"), "--plots", str(site / "plots"),
                      "--videos", *videos, "--data", str(data.root), "--audio", f"jfk={JFK}",
                      "--media", str(site / "media"), "--out", str(site / "index.html")]) == 0
    return site


def test_dom_has_every_table_and_playable_video_sources(report):
    dom = browser.dump_dom(report / "index.html")
    parsed = _Dom()
    parsed.feed(dom)
    summary = json.loads((report.parent / "tables" / "tables.json").read_text())
    n_tables = sum(1 + len(p["reported"]) + len(p["per_identity"]) for p in summary["protocols"].values())
    # mean + per identity for both protocols, and LiveNeRF Table III and ER-NeRF Table 2 (reported;
    # their own test sets)
    assert parsed.tables == n_tables == 6
    # self: ground truth + 2 methods; jfk: 2 methods (plus an <audio> player for the driving clip)
    assert parsed.videos == 5 and len(parsed.sources) == 5
    for src in parsed.sources:
        assert not src.startswith(("http:", "https:", "/")), src
        assert (report / unquote(src)).is_file(), src
    assert "media/German/self/ground_truth.mp4" in parsed.sources
    for src in parsed.imgs:
        assert (report / unquote(src)).is_file(), src
    assert "reported in papers" in dom and "other_system" in dom and "static_frame" in dom
    assert re.search(r"<td class=\"best\">24\.00</td>", dom)


def test_screenshot_shows_the_report(report, tmp_path):
    from PIL import Image

    png = browser.screenshot(report / "index.html", tmp_path / "report.png", size=(1280, 2000))
    with Image.open(png) as im:
        assert im.size == (1280, 2000)
        px = np.asarray(im.convert("L"), dtype=np.float32)
    top = px[:600]
    assert top.std() > 10, "the top of the page is blank"
    assert (px < 128).mean() > 0.005, "almost no dark pixels (text) on the page"


def test_readme_assets_from_a_finished_results_folder(report, tmp_path):
    from PIL import Image

    from pipeline.report import readme_assets

    out = tmp_path / "assets"
    assert readme_assets.main(["--results", str(report.parent), "--out-dir", str(out), "--max-reported", "2",
                               "--window", "1000,900"]) == 0
    md = (out / "example_table.md").read_text()
    # the provenance line names the tables file without this machine's absolute path
    first = md.splitlines()[0]
    assert f"from {report.parent.name}/tables/tables.json " in first and str(report.parent) not in first
    assert "| other_system |" in md and "| static_frame |" in md
    # the n/a reason named the weights folder beside the results folder (as weights_cache/ lies beside
    # results/ in the project) by its absolute path: the README material names it relative to that
    # project folder; the page copy made for the screenshot is gone, the run's own report unchanged
    project = report.parent.parent
    assert "alexnet-owt-7be5be79.pth not found in weights_cache " in md and str(project) not in md
    assert not list(report.glob(".readme_*"))
    assert f"not found in {project}/weights_cache" in (report / "index.html").read_text()
    assert md.count("(reported: AED-NeRF Table 1)") == 2 and "AED-NeRF (reported: AED-NeRF Table 1)" in md  # last two rows
    # only the paper whose rows are kept is named in the notes (ER-NeRF's rows were trimmed away)
    assert "reported rows 'AED-NeRF Table 1'" in md and "reported rows 'ER-NeRF Table 1'" not in md
    # footnotes renumbered densely and every marker has its footnote
    markers = {int(n) for group in re.findall(r"n/a \(([\d,]+)\)", md) for n in group.split(",")}
    notes = re.findall(r"^\((\d+)\) ", md, flags=re.M)
    assert markers <= {int(n) for n in notes} and [int(n) for n in notes] == list(range(1, len(notes) + 1))
    with Image.open(out / "report.png") as im:
        assert im.size == (1000, 900)
