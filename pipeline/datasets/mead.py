"""MEAD importer: one actor's front-view clips concatenated per emotion and level into one video
with time-segment emotion labels, as AED-NeRF prepares its data (MEAD clips of one identity
concatenated per label), plus the identities-table row.

    python -m pipeline.datasets.mead MEAD/M003 --out data/mead [--identity M003] [--clips 0]
        [--append identities.tsv]

MEAD (Wang et al. 2020, https://wywu.github.io/projects/MEAD/MEAD.html) is licensed for research
use and may not be redistributed: download it there. Layout read::

    {actor}/video/front/{emotion}/level_{n}/{nnn}.mp4
    {actor}/audio/{emotion}/level_{n}/{nnn}.m4a

Emotions AED-NeRF uses are imported (MEAD ``neutral``, ``angry``, ``fear`` -> ``fearful``,
``happy``, ``sad``); ``contempt``, ``disgusted``, ``surprised`` are skipped (logged). Groups are
written in the order of :data:`pipeline.common.emotion.CATEGORIES`, levels ascending, clips by
name. Every clip is re-encoded to 25 fps at the first clip's size with its ``.m4a`` audio (padded
or cut to the video's length), then the parts are joined without re-encoding.

Writes ``{out}/{identity}.mp4``, ``{out}/{identity}.tsv`` (identities header + one row whose
``emotion`` column holds the segments, e.g. ``0-12.48 neutral:1; 12.48-30.2 angry:3``) and
``{out}/{identity}_segments.json`` (clips, frames and label of every group).
"""
from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.common.emotion import CATEGORIES
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_path, atomic_write, atomic_write_json
from pipeline.common.log import run_main, setup_logging

log = logging.getLogger("pipeline.datasets.mead")

FPS = 25
#: MEAD emotion folder -> AED-NeRF category
MEAD_EMOTIONS = {"neutral": "neutral", "angry": "angry", "fear": "fearful", "happy": "happy", "sad": "sad"}
_LEVEL = re.compile(r"^level_([0-9]+)$")


def find_groups(actor: Path, max_clips: int = 0) -> list[dict]:
    """The (category, level, clips) groups of an actor folder, in import order.

    Returns: ``[{"label": "happy:3", "clips": [(video, audio), ...]}, ...]``.
    Raises:
        InputError: no ``video/front`` folder, a clip without its ``.m4a``, or nothing to import.
    """
    front = actor / "video" / "front"
    if not front.is_dir():
        raise InputError(front, "not found (MEAD layout: {actor}/video/front/{emotion}/level_{n}/{nnn}.mp4)")
    found: dict[tuple[str, int], list[tuple[Path, Path]]] = {}
    for emo_dir in sorted(p for p in front.iterdir() if p.is_dir()):
        cat = MEAD_EMOTIONS.get(emo_dir.name)
        if cat is None:
            log.info("skipping %s (not one of AED-NeRF's categories)", emo_dir)
            continue
        for lvl_dir in sorted(p for p in emo_dir.iterdir() if p.is_dir()):
            m = _LEVEL.match(lvl_dir.name)
            if not m or int(m.group(1)) not in (1, 2, 3):
                log.info("skipping %s (not level_1..level_3)", lvl_dir)
                continue
            clips = []
            for video in sorted(lvl_dir.glob("*.mp4")):
                audio = actor / "audio" / emo_dir.name / lvl_dir.name / f"{video.stem}.m4a"
                if not audio.is_file():
                    raise InputError(audio, f"audio of {video} not found (MEAD layout: audio/{{emotion}}/level_{{n}}/{{nnn}}.m4a)")
                clips.append((video, audio))
            if max_clips:
                clips = clips[:max_clips]
            if clips:
                found[(cat, int(m.group(1)))] = clips
    if not found:
        raise InputError(front, "no front-view clips of neutral, angry, fear, happy or sad at level_1..3")
    order = sorted(found, key=lambda k: (CATEGORIES.index(k[0]), k[1]))
    return [{"label": f"{c}:{lv}", "clips": found[(c, lv)]} for c, lv in order]


def _video_size(path: Path) -> tuple[int, int]:
    proc = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                           "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    try:
        w, h = (int(v) for v in proc.stdout.strip().split(",")[:2])
    except ValueError:
        raise InputError(path, f"unreadable video ({proc.stderr.strip()[-200:]})") from None
    return w + w % 2, h + h % 2


def _encode_part(video: Path, audio: Path, size: tuple[int, int], dst: Path) -> None:
    """``video`` + ``audio`` -> 25 fps H.264 + AAC part of ``size``, audio padded/cut to the video."""
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(video), "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0",
           "-vf", f"fps={FPS},scale={size[0]}:{size[1]},setsar=1", "-af", "apad", "-shortest",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-ar", "48000", "-ac", "1", str(dst)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise InputError(video, f"ffmpeg could not re-encode the clip ({proc.stderr.strip()[-300:]})")


def import_actor(actor: str | Path, out: str | Path, identity: str | None = None, max_clips: int = 0) -> dict:
    """Concatenate an actor's clips (see module docstring). Returns the segments record written to
    ``{out}/{identity}_segments.json``."""
    from pipeline.preprocess.media import count_packets

    actor, out = Path(actor), Path(out)
    identity = identity or actor.name
    if not re.match(r"^[A-Za-z0-9_-]+$", identity):
        raise InputError(actor, f"identity {identity!r} must be letters, digits, '_' or '-'")
    groups = find_groups(actor, max_clips)
    size = _video_size(groups[0]["clips"][0][0])
    out.mkdir(parents=True, exist_ok=True)
    segments, start = [], 0
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        parts = []
        for g in groups:
            frames = 0
            for video, audio in g["clips"]:
                part = Path(tmp) / f"part{len(parts):04d}.mp4"
                _encode_part(video, audio, size, part)
                frames += count_packets(part)
                parts.append(part)
            segments.append({"label": g["label"], "start_frame": start, "end_frame": start + frames,
                             "clips": [str(v) for v, _ in g["clips"]]})
            start += frames
        listing = Path(tmp) / "parts.txt"
        listing.write_text("".join(f"file '{p.name}'\n" for p in parts))
        with atomic_path(out / f"{identity}.mp4") as dst:
            proc = subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                                   "-c", "copy", "-movflags", "+faststart", str(dst)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise InputError(actor, f"ffmpeg could not join the clips ({proc.stderr.strip()[-300:]})")
    spec = "; ".join(f"{s['start_frame'] / FPS:g}-{s['end_frame'] / FPS:g} {s['label']}" for s in segments)
    record = {"identity": identity, "video": str(out / f"{identity}.mp4"), "fps": FPS, "frames": start,
              "emotion": spec, "segments": segments, "source": str(actor)}
    with atomic_write(out / f"{identity}.tsv", "w") as fh:
        fh.write("id\tvideo\temotion\tnotes\n")
        fh.write(identities_row(record))
    atomic_write_json(out / f"{identity}_segments.json", record)
    return record


def identities_row(record: dict) -> str:
    """One identities-table line (tab-separated, newline-terminated) of an import record."""
    return f"{record['identity']}\t{record['video']}\t{record['emotion']}\tMEAD {record['source']} (research licence)\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.datasets.mead", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("actor", type=Path, help="MEAD actor folder (e.g. MEAD/M003)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the concatenated video and its rows")
    ap.add_argument("--identity", help="identity id (default: the actor folder's name)")
    ap.add_argument("--clips", type=int, default=0, help="at most this many clips per emotion and level (0: all)")
    ap.add_argument("--append", type=Path, help="identities table to append the row to")
    a = ap.parse_args(argv)
    setup_logging("pipeline.datasets.mead")
    rec = import_actor(a.actor, a.out, a.identity, a.clips)
    if a.append:
        with a.append.open("a") as fh:
            fh.write(identities_row(rec))
    log.info("%s: %d frames, %s", rec["identity"], rec["frames"], rec["emotion"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
