"""Every relative link of the README and of ``docs/`` leads somewhere: the file exists, and a
``#fragment`` names a heading of the linked page by GitHub's rule for heading anchors (lower case,
punctuation other than ``-`` and ``_`` dropped, spaces to ``-``, ``-1``, ``-2`` for repeats),
which is the rule of markdown-it-py's anchors plugin (mdit-py-plugins). Links inside code are not
links and are not checked."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest
from markdown_it import MarkdownIt
from mdit_py_plugins.anchors import anchors_plugin

from tests.conftest import PROJECT_ROOT

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").rglob("*.md"))]


def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark").enable("table").use(anchors_plugin, max_level=6)


def page_anchors(text: str) -> set[str]:
    """The heading anchors of a Markdown page (GitHub's ids, as the anchors plugin makes them)."""
    return {tok.attrs["id"] for tok in _parser().parse(text) if tok.type == "heading_open" and "id" in tok.attrs}


def page_links(text: str) -> list[str]:
    """The link targets of a Markdown page outside code (inline links and images)."""
    out = []
    for tok in _parser().parse(text):
        for child in tok.children or []:
            if child.type == "link_open":
                out.append(child.attrs["href"])
            elif child.type == "image":
                out.append(child.attrs["src"])
    return out


def broken_links(page: Path) -> list[str]:
    """``link (why)`` for each relative link of ``page`` whose file or heading is missing."""
    bad, anchors = [], {}  # anchors: each linked page parsed once (docs/quality.md links to itself hundreds of times)
    for link in page_links(page.read_text()):
        if link.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, frag = link.partition("#")
        target = (page.parent / unquote(path)).resolve() if path else page
        if not target.exists():
            bad.append(f"{link} (no file {target})")
        elif frag and target.suffix == ".md":
            if target not in anchors:
                anchors[target] = page_anchors(target.read_text())
            if unquote(frag) not in anchors[target]:
                bad.append(f"{link} (no heading with that anchor in {target.name})")
    return bad


def test_anchor_rule_on_hand_made_headings():
    """The rule on headings whose GitHub anchors were worked out by hand: code and punctuation,
    a repeated heading, and a link to each found by :func:`page_links` but not one in code."""
    text = ("# Rendering\n\n## Free-view protocol (`render.free_view`)\n\n## Tests\n\n### Tests\n\n"
            "See [it](#free-view-protocol-renderfree_view), ![a](x.png) and `[no](#not-a-link)`.\n\n"
            "```\n[nor](#this)\n```\n")
    assert page_anchors(text) == {"rendering", "free-view-protocol-renderfree_view", "tests", "tests-1"}
    assert page_links(text) == ["#free-view-protocol-renderfree_view", "x.png"]


def test_a_broken_link_is_found(tmp_path):
    """A missing file and a missing heading are both reported; a good link is not."""
    (tmp_path / "b.md").write_text("# Part two\n")
    page = tmp_path / "a.md"
    page.write_text("# A\n\n[ok](b.md#part-two) [self](#a) [gone](c.md) [nohead](b.md#part-three)\n")
    assert [b.split(" ")[0] for b in broken_links(page)] == ["c.md", "b.md#part-three"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_project_docs_links_resolve(page):
    """The README and every page of ``docs/``: each relative link's file exists and its
    ``#fragment`` names a heading there."""
    assert broken_links(page) == []
