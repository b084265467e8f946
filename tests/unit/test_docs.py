"""The README stays a short newcomer's page, and README.md and docs/ stay linked and factual."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 12_000

# Phrases that narrate how the work went instead of describing the software.
NARRATION = [
    "previous session", "this session", "last session", "earlier session", "next session",
    "throwaway script", "not in the repo", "on a slower day", "we tried",
]
FIRST_PERSON = re.compile(r"(?<![\w/])I(?![\w/])")  # "I", "I'm", not "I/O"

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
AUTOLINK = re.compile(r"<([a-z][a-z0-9+.-]*:[^>\s]+)>", re.I)
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)


def prose(text: str) -> str:
    """The text without code blocks and code spans, where commands and paths live."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(FENCE.sub("", path.read_text()))}


def links(path: Path) -> list[str]:
    text = prose(path.read_text())
    return LINK.findall(text) + AUTOLINK.findall(text)


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/"


def test_readme_starts_with_the_two_commands():
    lines = [line for line in README.read_text().splitlines() if line.strip()]
    assert lines[0].startswith("# "), "the README opens with its title"
    assert lines[1].startswith("```"), "the first thing after the title is the commands"
    block = lines[2:lines.index("```", 2)]
    commands = [line.split("#", 1)[0].strip() for line in block]
    assert commands[:2] == ["make up", "make test"], commands


def test_readme_links_to_the_docs_index():
    assert "docs/README.md" in links(README)


def test_the_docs_index_lists_every_page():
    index = (ROOT / "docs" / "README.md").read_text()
    for page in PAGES:
        if page.parent.name == "docs" and page.name != "README.md":
            assert f"({page.name})" in index, f"docs/README.md does not link {page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        missing = not dest.exists()
        if missing or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            broken.append(target)
    assert not broken, f"{page.name}: links that lead nowhere: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_describe_the_software_not_the_work(page):
    text = prose(page.read_text())
    found = [phrase for phrase in NARRATION if phrase in text.lower()]
    found += [f"'{m.group(0)}' at offset {m.start()}" for m in FIRST_PERSON.finditer(text)]
    assert not found, f"{page.name} narrates: {found}"


def test_the_checks_catch_what_they_guard():
    """The helpers above find a narrating phrase, a bare I and a broken anchor."""
    text = "In the previous session I ran it, see [x](nowhere.md) and `I` in code."
    assert "previous session" in prose(text).lower()
    assert len(FIRST_PERSON.findall(prose(text))) == 1
    assert LINK.findall(prose(text)) == ["nowhere.md"]
    assert slug("Local: `make up`") == "local-make-up"
    assert slug("Set B, all five runs") == "set-b-all-five-runs"
