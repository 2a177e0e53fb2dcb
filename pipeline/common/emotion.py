"""Emotion labels (AED-NeRF, Lu et al. 2026): ``category[:level]`` with the 5 categories and 3
intensity levels of AED-NeRF / MEAD, per clip or per time segment, and the 8-dimensional code
``e`` (one-hot category ++ one-hot level) the AED-NeRF field takes as input (its Eq. 1).

Identities table (``identities.tsv``) column ``emotion``:

* one label for the whole clip: ``happy:3``, ``neutral`` (level omitted = 1);
* time segments, ``;``-separated, each ``START-END LABEL`` in seconds of the identity's video:
  ``0-30.5 happy:3; 30.5-62 neutral:1``. Segments are in order, without gaps or overlaps; the last
  one may end after the video (it is cut at the last frame).

No torch import (used when the Snakefile reads the identities table).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.common.errors import InputError

#: AED-NeRF's emotion categories (MEAD's folder names), in code order
CATEGORIES = ("neutral", "angry", "fearful", "happy", "sad")
#: intensity levels (MEAD ``level_1`` .. ``level_3``)
LEVELS = (1, 2, 3)
#: length of the emotion code e
CODE_DIM = len(CATEGORIES) + len(LEVELS)

_LABEL = re.compile(r"^\s*([A-Za-z]+)\s*(?::\s*([0-9]+))?\s*$")
_SEGMENT = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*-\s*([0-9]+(?:\.[0-9]*)?)\s+(\S+)\s*$")


@dataclass(frozen=True)
class Segment:
    """A labelled time span of a clip: ``start_s`` .. ``end_s`` (seconds; None = to the end)."""

    start_s: float
    end_s: float | None
    category: str
    level: int

    @property
    def label(self) -> str:
        """``category:level``."""
        return f"{self.category}:{self.level}"


def parse_label(text: str) -> tuple[str, int]:
    """``category[:level]`` -> (category, level). Raises ValueError with the reason."""
    m = _LABEL.match(text or "")
    if not m:
        raise ValueError(f"emotion label {text!r} is not category[:level] (e.g. happy:3)")
    cat, level = m.group(1).lower(), int(m.group(2) or 1)
    if cat not in CATEGORIES:
        raise ValueError(f"unknown emotion category {cat!r} (one of {', '.join(CATEGORIES)})")
    if level not in LEVELS:
        raise ValueError(f"emotion level {level} of {text.strip()!r} is not one of {', '.join(map(str, LEVELS))}")
    return cat, level


def parse_spec(text: str) -> list[Segment]:
    """The ``emotion`` cell of an identities row -> its segments (one open-ended segment for a
    single label). Raises ValueError with the reason."""
    if ";" not in text and not _SEGMENT.match(text):
        cat, level = parse_label(text)
        return [Segment(0.0, None, cat, level)]
    segs: list[Segment] = []
    for part in [p for p in text.split(";") if p.strip()]:
        m = _SEGMENT.match(part)
        if not m:
            raise ValueError(f"emotion segment {part.strip()!r} is not 'START-END category[:level]' (seconds)")
        start, end = float(m.group(1)), float(m.group(2))
        if end <= start:
            raise ValueError(f"emotion segment {part.strip()!r} ends before it starts")
        if segs and abs(start - segs[-1].end_s) > 1e-6:
            raise ValueError(f"emotion segment {part.strip()!r} does not start where the previous one ends "
                             f"({segs[-1].end_s:g} s)")
        if not segs and start != 0:
            raise ValueError(f"the first emotion segment must start at 0 s, not {start:g}")
        cat, level = parse_label(m.group(3))
        segs.append(Segment(start, end, cat, level))
    return segs


def check_spec(text: str | None, path: str | Path, row: int, ident: str | None) -> None:
    """Validate an identities ``emotion`` cell. Raises InputError naming ``path`` and the row."""
    if text is None:
        return
    try:
        parse_spec(text)
    except ValueError as exc:
        raise InputError(path, f"row {row} ({ident!r}): {exc}") from None


def emotion_code(category: str, level: int) -> np.ndarray:
    """The AED-NeRF emotion code: [8] float32, one-hot over :data:`CATEGORIES` ++ one-hot over
    :data:`LEVELS`."""
    e = np.zeros(CODE_DIM, np.float32)
    e[CATEGORIES.index(category)] = 1.0
    e[len(CATEGORIES) + LEVELS.index(level)] = 1.0
    return e


def label_code(label: str) -> np.ndarray:
    """``category[:level]`` -> [8] code (ValueError for a bad label)."""
    return emotion_code(*parse_label(label))


def code_label(code) -> str:
    """[8] code -> ``category:level`` (argmax of each one-hot part)."""
    c = np.asarray(code, np.float32).reshape(-1)
    return f"{CATEGORIES[int(c[:len(CATEGORIES)].argmax())]}:{LEVELS[int(c[len(CATEGORIES):].argmax())]}"


def frame_labels(segments: list[Segment], n_frames: int, fps: float, source: str | Path) -> list[str]:
    """Label of each frame ``i`` (time ``i / fps``).

    Raises:
        InputError: naming ``source``, when the segments end before the last frame.
    """
    out = []
    for i in range(n_frames):
        t = i / fps
        seg = next((s for s in segments if s.end_s is None or t < s.end_s - 1e-9), None)
        if seg is None:
            raise InputError(source, f"the emotion segments end at {segments[-1].end_s:g} s but the clip has "
                                     f"{n_frames} frames ({n_frames / fps:g} s at {fps:g} fps)")
        out.append(seg.label)
    return out
