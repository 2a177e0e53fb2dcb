"""The static HTML report ``results/report/index.html``.

One self-contained page (no scripts, no network): the comparison tables of both protocols (mean
over identities, per identity in collapsible sections, reported rows marked), the plots, and
side-by-side video players per identity and test: ground truth | method A | method B ...

The videos are copied next to the page (``media/{identity}/{test}/{method}.mp4``) so the report
folder can be moved or served as it is. The self-driven ground-truth video is encoded here from
the validation frames ``gt_imgs/{img_id}.jpg`` of ``transforms_val.json`` with the matching
segment of the identity's ``aud.wav`` (H.264 + AAC, 25 fps, like the render contract).
Cross-driven tests have no ground truth: their first player is the driving audio.

Usage::

    python -m pipeline.report.html --tables results/tables/tables.json --plots results/report/plots \
        --videos results/renders/*/*/*/video.mp4 --data results/data/German \
        --audio jfk=resources/audio/jfk_4.2s.flac --methods rad_nerf er_nerf \
        --media results/report/media --out results/report/index.html
"""
from __future__ import annotations

import argparse
import datetime as _dt
import html
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from pipeline.common.errors import InputError
from pipeline.common.io import atomic_dir, atomic_write, read_json
from pipeline.common.layout import SELF_DRIVEN_TEST, DatasetLayout
from pipeline.common.log import run_main, setup_logging
from pipeline.report.tables import reported_tag

log = logging.getLogger(__name__)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0 4px 0;font-size:.9em}
th,td{padding:3px 9px;border-bottom:1px solid #e3e3e3;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
thead th{border-bottom:2px solid #444;background:#f6f6f6}
tr.reported td{color:#555;font-style:italic;background:#fbfbf3}
tr.banner td{text-align:left;font-weight:600;color:#7a6a00;background:#f5f1d6}
td.best{font-weight:700}
.notes{font-size:.8em;color:#555;margin:0 0 14px 0}
.plots img{max-width:420px;margin:6px;border:1px solid #ddd}
.videos{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
figure{margin:0}figcaption{font-size:.85em;text-align:center}
video{width:240px;height:240px;background:#000}
details{margin:6px 0}.scroll{overflow-x:auto}summary{cursor:pointer;color:#235}
.md p{font-size:.85em;color:#444;max-width:1100px}
"""


def table_html(tab: dict) -> str:
    """HTML of one table from ``tables.json`` (best cells bold, reported rows marked)."""
    out = [f"<div class='scroll'><table class='metrics' data-protocol='{tab['protocol']}'>",
           f"<caption>{html.escape(tab['title'])}</caption>",
           "<thead><tr><th>Method</th>" + "".join(f"<th>{html.escape(h)}</th>" for h in tab["headers"])
           + "</tr></thead><tbody>"]
    banner = False
    has_measured = any(r["kind"] == "measured" for r in tab["rows"])
    for r in tab["rows"]:
        if r["kind"] == "reported" and not banner and has_measured:
            out.append(f"<tr class='banner'><td colspan='{len(tab['headers']) + 1}'>reported in papers "
                       "(their data and set-up; not ranked)</td></tr>")
        banner = banner or r["kind"] == "reported"
        label = r["method"] if r["kind"] == "measured" else (
            f"{html.escape(r['method'])} <small title='{html.escape(r['source'])}'>(reported: "
            f"{html.escape(reported_tag(r))})</small>")
        cells = "".join(f"<td class='best'>{html.escape(c)}</td>" if b else f"<td>{html.escape(c)}</td>"
                        for c, b in zip(r["cells"], r["bold"]))
        out.append(f"<tr class='{r['kind']}'><td>{label if r['kind'] == 'reported' else html.escape(label)}</td>"
                   f"{cells}</tr>")
    out.append("</tbody></table></div>")
    if tab["footnotes"]:
        out.append("<p class='notes'>" + "<br>".join(f"({i}) {html.escape(t)}"
                                                     for i, t in enumerate(tab["footnotes"], start=1)) + "</p>")
    return "\n".join(out)


def markdown_html(text: str) -> str:
    """HTML of a Markdown text the pipeline wrote (the one-shot, free-view and quality tables):
    CommonMark with GitHub-style tables, by markdown-it-py; raw HTML in the text is escaped, not
    passed through (``CSIM<frontal>`` -> ``CSIM&lt;frontal&gt;``); headings move two levels down
    (``#`` -> ``h3``), under the page's section headings (``h2``). Wrapped in a horizontally
    scrolling ``div`` of class ``md``. Never raises."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    for tok in tokens:
        if tok.type in ("heading_open", "heading_close"):
            tok.tag = f"h{min(6, int(tok.tag[1]) + 2)}"
    return "<div class='md scroll'>" + md.renderer.render(tokens, md.options, {}) + "</div>"


def gt_video(data: DatasetLayout, out: Path) -> None:
    """Encode the self-driven ground truth (validation ``gt_imgs`` + ``aud.wav`` segment) to ``out``.

    Raises:
        InputError: missing transforms_val.json, gt_imgs frames or aud.wav.
    """
    import cv2

    from pipeline.baselines.spec import spec_for
    from pipeline.render.contract import encode_video

    spec = spec_for(data, SELF_DRIVEN_TEST)
    with tempfile.TemporaryDirectory(prefix="gt") as tmp:
        for k, i in enumerate(spec.gt_reference["indices"]):
            img = cv2.imread(str(data.gt_img(i)), cv2.IMREAD_COLOR)
            if img is None:
                raise InputError(data.gt_img(i), "ground-truth frame missing or unreadable")
            cv2.imwrite(str(Path(tmp) / f"{k}.png"), img)
        encode_video(Path(tmp), spec.audio_16k, out)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def parse_video_path(p: str | Path) -> tuple[str, str, str]:
    """``(method, identity, test)`` of ``.../renders/{method}/{identity}/{test}/video.mp4``.

    Raises:
        InputError: the path does not end in ``{method}/{identity}/{test}/video.mp4``.
    """
    parts = Path(p).parts
    if len(parts) < 4 or parts[-1] != "video.mp4":
        raise InputError(p, "expected .../renders/{method}/{identity}/{test}/video.mp4")
    return parts[-4], parts[-3], parts[-2]


def poster(video: Path) -> None:
    """Write the first frame of ``video`` as ``video.with_suffix('.jpg')`` (the player's poster)."""
    import ffmpeg

    try:
        (ffmpeg.input(str(video)).output(str(video.with_suffix(".jpg")), vframes=1, **{"q:v": 3})
         .overwrite_output().run(quiet=True))
    except ffmpeg.Error:
        log.warning("%s: no poster frame could be extracted", video)


#: group key prefix of emotion edits: ``(identity, "emotion_edit/{method}")``
EDIT_GROUP = "emotion_edit/"


def build_media(videos: list[str], data_dirs: list[str], audio: dict[str, str], media: Path,
                edits: list[str] = ()) -> dict:
    """Copy the videos and make the ground truths into ``media`` (atomically).

    ``edits``: ``results/renders/{method}/{identity}/emotion_edit`` folders
    (:mod:`pipeline.render.emotion_edit`); each becomes the group ``(identity,
    "emotion_edit/{method}")`` with one video per emotion label, side by side.

    Returns:
        ``{(identity, test): [(label, relative path under media, kind)]}`` with the ground truth
        (or driving audio) first; kind is ``video`` or ``audio``.
    """
    import ffmpeg

    groups: dict[tuple[str, str], list] = {}
    by_identity = {Path(d).name: Path(d) for d in data_dirs}
    with atomic_dir(media) as tmp:
        for v in videos:
            method, ident, test = parse_video_path(v)
            rel = f"{ident}/{test}/{method}.mp4"
            _copy(Path(v), tmp / rel)
            groups.setdefault((ident, test), []).append((method, rel, "video"))
        for e in edits:
            method, ident = Path(e).parts[-3], Path(e).parts[-2]
            for label, folder in read_json(Path(e) / "index.json")["folders"].items():
                rel = f"{ident}/{EDIT_GROUP}{method}/{folder}.mp4"
                _copy(Path(e) / folder / "video.mp4", tmp / rel)
                groups.setdefault((ident, f"{EDIT_GROUP}{method}"), []).append((f"{method} · {label}", rel, "video"))
        for (ident, test), items in groups.items():
            if (test == SELF_DRIVEN_TEST or test.startswith(EDIT_GROUP)) and ident in by_identity:
                rel = f"{ident}/{test}/ground_truth.mp4"
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                gt_video(DatasetLayout(by_identity[ident], ident), tmp / rel)
                items.insert(0, ("ground truth", rel, "video"))
            elif test in audio and Path(audio[test]).is_file():
                rel = f"{ident}/{test}/driving_audio.m4a"
                try:
                    (ffmpeg.input(audio[test]).output(str(tmp / rel), acodec="aac", ac=1, ar=48000)
                     .overwrite_output().run(quiet=True))
                    items.insert(0, ("driving audio (no ground truth)", rel, "audio"))
                except ffmpeg.Error:
                    log.warning("%s: could not be converted for the report; left out", audio[test])
        for mp4 in tmp.rglob("*.mp4"):
            poster(mp4)
    return groups


def copy_one_shot(videos: list[str], media: Path) -> list[tuple[str, str]]:
    """Copy the one-shot side-by-side videos (``results/report/one_shot/{reference}/{test}.mp4``,
    photo | driving | output) into ``media/one_shot/`` with a poster each. Returns
    ``[(caption, path relative to media)]``."""
    out = []
    for v in sorted(videos):
        ref, test = Path(v).parent.name, Path(v).stem
        rel = f"one_shot/{ref}/{test}.mp4"
        _copy(Path(v), media / rel)
        poster(media / rel)
        out.append((f"{ref} driven by {test}: photo | driving | output", rel))
    return out


def copy_val_frames(frames: list[str], media: Path) -> list[tuple[str, str]]:
    """Copy each trained model's validation panel (``results/models/{method}/{identity}/val_frame.png``,
    render | ground truth of the middle validation frame, written by the torso stage) into
    ``media/val/{identity}__{method}.png``. Returns ``[(caption, path relative to media)]``; the
    caption carries the model's val PSNR (head + torso, full frame) from ``train_manifest.json`` (``val_psnr_db``)."""
    out = []
    for f in sorted(frames, key=lambda x: (Path(x).parent.name, Path(x).parent.parent.name)):
        model = Path(f).parent
        method, ident = model.parent.name, model.name
        rel = f"val/{ident}__{method}.png"
        _copy(Path(f), media / rel)
        man = model / "train_manifest.json"
        val = read_json(man).get("val_psnr_db") if man.is_file() else None
        psnr = f", val PSNR {val:.2f} dB" if isinstance(val, (int, float)) else ""
        out.append((f"{ident} · {method}: render | ground truth{psnr}", rel))
    return out


def _quality_images(doc: Path, lines: list[str], media: Path, label: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Split markdown ``lines`` of the quality page ``doc`` into text lines and image lines; each
    image is copied to ``media/quality/{label}/`` (a parsing overlay as ``parsing__{name}``).
    Returns ``(text lines, [(caption, path relative to media)])``; an image the page names but
    that is missing is left out with a warning."""
    import re

    log = logging.getLogger("report.html")
    text, images = [], []
    for line in lines:
        m = re.match(r"!\[([^\]]*)\]\(([^)]+)\)\s*$", line.strip())
        if m is None:
            text.append(line)
            continue
        src = (doc.parent / m.group(2)).resolve()
        if not src.is_file():
            log.warning("%s: image %s not found; left out of the report", doc, m.group(2))
            continue
        rel = f"quality/{label}/{src.parent.name + '__' if src.parent.name == 'parsing' else ''}{src.name}"
        _copy(src, media / rel)
        images.append((m.group(1), rel))
    return text, images


def copy_quality(doc: Path, media: Path) -> list[dict]:
    """The measured runs of the quality benchmark page ``doc`` (docs/quality.md, written by
    ``python -m pipeline.train.benchmark --quality``), with their images copied into
    ``media/quality/{label}/``.

    Returns one dict per run label in page order: ``label``, ``text`` (the section's markdown
    without its image lines: the settings line and the table) and ``images`` ``[(caption, path
    relative to media)]`` (parsing overlays and validation montages, render | ground truth). An
    image the page names but that is missing is left out with a warning."""
    from pipeline.train.quality import doc_sections

    out = []
    for label, sec in doc_sections(doc.read_text()).items():
        text, images = _quality_images(doc, sec.splitlines(), media, label)
        text = [t for t in text if not t.startswith("### ") and not t.endswith("per identity:")
                and not t.endswith("per run:")]
        out.append({"label": label, "text": "\n".join(text).strip(), "images": images})
    return out


def quality_targets(doc: Path, media: Path) -> dict:
    """The targets block of the quality page ``doc`` (between
    :data:`pipeline.train.quality.TARGETS_BEGIN` and ``TARGETS_END``, written by ``python -m
    pipeline.train.benchmark --quality --targets``): ``{"text": markdown without image lines,
    "images": [(caption, path relative to media)]}`` (its blur plot, copied to
    ``media/quality/targets/``). Empty text and no images when the page has no block."""
    from pipeline.train.quality import TARGETS_BEGIN, TARGETS_END

    text = doc.read_text()
    if TARGETS_BEGIN not in text or TARGETS_END not in text:
        return {"text": "", "images": []}
    lines = text.split(TARGETS_BEGIN, 1)[1].split(TARGETS_END, 1)[0].strip().splitlines()
    body, images = _quality_images(doc, lines, media, "targets")
    return {"text": "\n".join(body).strip(), "images": images}


def _figures(images: list[tuple[str, str]], media_rel: str) -> list[str]:
    """HTML figures (lazy images with captions) of ``[(caption, path relative to the media folder)]``."""
    return [f"<figure><img loading='lazy' src='{media_rel}/{rel}' alt='{html.escape(cap)}'>"
            f"<figcaption>{html.escape(cap)}</figcaption></figure>" for cap, rel in images]


def render_page(tables: dict, plots: list[dict], plots_rel: str, groups: dict, media_rel: str,
                methods: list[str], one_shot_md: str = "", one_shot_videos: list[tuple[str, str]] = (),
                val_frames: list[tuple[str, str]] = (), free_view_md: str = "",
                quality: list[dict] = (), quality_targets: dict | None = None) -> str:
    """The HTML text of the report page; with ``one_shot_md`` (the text of
    ``results/tables/one_shot.md``) and ``one_shot_videos`` (:func:`copy_one_shot`) a one-shot
    face-replacement section; with ``val_frames`` (:func:`copy_val_frames`) a section of validation
    panels (render | ground truth) per trained model; with ``free_view_md`` (the text of
    ``results/tables/free_view.md``, config ``render.free_view``) a free-view section; with
    ``quality`` (:func:`copy_quality`, config ``report.quality_doc``) the multi-identity quality
    benchmark, one collapsed block per run (the last one open), opened by ``quality_targets``
    (:func:`quality_targets`: the targets table and its plot) when given."""
    def order(items):
        rank = {m: k for k, m in enumerate(methods)}
        first = lambda it: it[2] == "audio" or it[0] == "ground truth"  # noqa: E731
        return sorted(items, key=lambda it: (not first(it), rank.get(it[0], len(rank)), it[0]))

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = ["<h1>Talking-portrait NeRFs: comparison report</h1>",
            f"<p>Column preset <code>{html.escape(tables.get('preset', ''))}</code> "
            f"({html.escape(tables.get('preset_title', ''))}); generated {now}. Measured rows are means over "
            "identities; reported rows are copied from the papers and never ranked with them. Each row "
            "gives its render resolution, compositing mode and training set-up; a header in brackets and a footnote name a "
            "backend other than the papers' (LMD: FAN, AUE: OpenFace, CSIM: ArcFace), whose cells are not "
            "comparable with the reported ones; LMD is in pixels at 512 px height; bold ranks only rows "
            "measured over the same identities with the same backend, resolution and compositing.</p>",
            "<nav><a href='#tables'>Tables</a> · <a href='#videos'>Videos</a> · <a href='#validation'>Validation frames</a> · "
            "<a href='#one-shot'>One-shot</a> · "
            + ("<a href='#free-view'>Free view</a> · " if free_view_md else "")
            + ("<a href='#quality'>Quality on real identities</a> · " if quality else "") +
            "<a href='#plots'>Plots</a></nav>",
            "<h2 id='tables'>Tables</h2>"]
    for protocol, t in tables["protocols"].items():
        body.append(f"<h3>{protocol.replace('_', '-')}</h3>")
        body.append(table_html(t["mean"]))
        body += [table_html(x) for x in t["reported"]]
        for x in t["per_identity"]:
            body.append(f"<details><summary>{html.escape(x['title'].split(' - ')[-1])}</summary>"
                        f"{table_html(x)}</details>")
    body.append("<h2 id='videos'>Videos</h2>")
    if not groups:
        body.append("<p>No rendered videos.</p>")
    for (ident, test) in sorted(groups, key=lambda k: (k[0], k[1] != SELF_DRIVEN_TEST, k[1])):
        proto = "self-driven" if test == SELF_DRIVEN_TEST else "cross-driven"
        if test.startswith(EDIT_GROUP):
            proto = "emotion edits: the self-driven test under every trained label"
        body.append(f"<h3>{html.escape(ident)} · {html.escape(test)} ({proto})</h3><div class='videos'>")
        for label, rel, kind in order(groups[(ident, test)]):
            src = f"{media_rel}/{rel}"
            if kind == "audio":
                player = f"<audio controls preload='none'><source src='{src}' type='audio/mp4'></audio>"
            else:
                jpg = src[:-4] + ".jpg"
                player = (f"<video controls preload='none' poster='{jpg}'><source src='{src}' "
                          "type='video/mp4'></video>")
            body.append(f"<figure>{player}<figcaption>{html.escape(label)}</figcaption></figure>")
        body.append("</div>")
    if val_frames:
        body.append("<h2 id='validation'>Validation frames</h2><p>Each trained model on the middle frame of "
                    "its identity's validation split (render | ground truth, training resolution). The same "
                    "panels for every real identity of the quality benchmark: <code>python -m "
                    "pipeline.train.benchmark --quality</code>, docs/quality.md.</p><div class='plots'>")
        for label, rel in val_frames:
            body.append(f"<figure><img src='{media_rel}/{rel}' alt='{html.escape(label)}'>"
                        f"<figcaption>{html.escape(label)}</figcaption></figure>")
        body.append("</div>")
    if one_shot_md or one_shot_videos:
        body.append("<h2 id='one-shot'>One-shot face replacement</h2>")
        if one_shot_md:
            body.append(markdown_html(one_shot_md))
        body.append("<div class='videos'>")
        for label, rel in one_shot_videos:
            src = f"{media_rel}/{rel}"
            body.append(f"<figure><video controls preload='none' poster='{src[:-4]}.jpg'><source src='{src}' "
                        f"type='video/mp4'></video><figcaption>{html.escape(label)}</figcaption></figure>")
        body.append("</div>")
    if free_view_md:
        body.append("<h2 id='free-view'>Free view</h2><p>Each model rendered from camera poses off the "
                    "training trajectory (config <code>render.free_view</code>), scored without ground truth: "
                    "CSIM against the frontal render and CPBD per view (docs/metrics.md).</p>")
        body.append(markdown_html(free_view_md))
    if quality:
        body.append("<h2 id='quality'>Quality on real identities</h2><p>The multi-identity quality benchmark "
                    "(<code>python -m pipeline.train.benchmark --quality</code>, docs/quality.md): every method "
                    "trained with the <code>quick</code> profile on every real identity, val PSNR / SSIM / LMD "
                    "full frame and on the head box, and where the validation error lies (share per parsing "
                    "region; the body's error against the mean training frame, the nearest-pose frame and an "
                    "oracle that picks training bodies with the ground truth). "
                    "One block per run, in the order they were measured; "
                    "runs with other settings or code are not ranked against each other.</p>")
        if quality_targets and quality_targets.get("text"):
            body.append("<details open><summary>targets (the same code over seeds)</summary>"
                        + markdown_html(quality_targets["text"]) + "<div class='plots'>")
            body += _figures(quality_targets.get("images", []), media_rel)
            body.append("</div></details>")
        for k, q in enumerate(quality):
            body.append(f"<details{' open' if k == len(quality) - 1 else ''}><summary>{html.escape(q['label'])}"
                        "</summary>" + markdown_html(q["text"]) + "<div class='plots'>")
            body += _figures(q["images"], media_rel)
            body.append("</div></details>")
    body.append("<h2 id='plots'>Plots</h2><div class='plots'>")
    for p in plots:
        body.append(f"<img src='{plots_rel}/{html.escape(p['file'])}' alt='{html.escape(p['title'])}' "
                    f"title='{html.escape(p['title'])}'>")
    body.append("</div>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>Talking-portrait NeRF report</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", required=True, help="results/tables/tables.json")
    ap.add_argument("--plots", required=True, help="results/report/plots (with plots.json)")
    ap.add_argument("--videos", nargs="*", default=[], help="render contract video.mp4 files")
    ap.add_argument("--data", nargs="*", default=[], help="results/data/{identity} folders")
    ap.add_argument("--audio", nargs="*", default=[], help="cross-driven TEST=PATH driving audio")
    ap.add_argument("--methods", nargs="*", default=[], help="preferred method order")
    ap.add_argument("--edits", nargs="*", default=[], help="emotion_edit render folders (side by side)")
    ap.add_argument("--one-shot-table", nargs="*", default=[], help="results/tables/one_shot.md (when one-shot runs)")
    ap.add_argument("--one-shot-videos", nargs="*", default=[], help="one-shot side-by-side videos")
    ap.add_argument("--free-view-table", nargs="*", default=[], help="results/tables/free_view.md (when enabled)")
    ap.add_argument("--val-frames", nargs="*", default=[], help="results/models/{method}/{identity}/val_frame.png")
    ap.add_argument("--quality-doc", nargs="*", default=[], help="docs/quality.md (config report.quality_doc)")
    ap.add_argument("--media", required=True, help="results/report/media")
    ap.add_argument("--out", required=True, help="results/report/index.html")
    args = ap.parse_args(argv)
    setup_logging("report.html")
    tables = read_json(args.tables)
    plots = read_json(Path(args.plots) / "plots.json")
    audio = dict(a.split("=", 1) for a in args.audio)
    groups = build_media(args.videos, args.data, audio, Path(args.media), args.edits)
    out = Path(args.out)
    rel = lambda p: Path(os.path.relpath(Path(p).resolve(), out.parent.resolve())).as_posix()  # noqa: E731
    one_md = "\n".join(Path(p).read_text() for p in args.one_shot_table)
    one_videos = copy_one_shot(args.one_shot_videos, Path(args.media))
    val_frames = copy_val_frames(args.val_frames, Path(args.media))
    free_md = "\n".join(Path(p).read_text() for p in args.free_view_table)
    quality = [q for doc in args.quality_doc for q in copy_quality(Path(doc), Path(args.media))]
    blocks = [quality_targets(Path(doc), Path(args.media)) for doc in args.quality_doc]
    targets = {"text": "\n\n".join(b["text"] for b in blocks if b["text"]),
               "images": [im for b in blocks for im in b["images"]]}
    page = render_page(tables, plots, rel(args.plots), groups, rel(args.media), args.methods, one_md, one_videos,
                       val_frames, free_md, quality, targets)
    with atomic_write(out, "w") as fh:
        fh.write(page)
    log.info("report: %s (%d video groups, %d plots)", out, len(groups), len(plots))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
