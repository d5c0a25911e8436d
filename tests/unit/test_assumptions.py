"""docs/assumptions.md: every entry names at least one existing test that pins it.

An entry is a top-level bullet starting with `- **`, with its continuation lines up to the next
bullet or heading. A reference is `tests/<path>.py::<name>`, where `<name>` is a test function
(`def <name>(`) or a `pytest.param(..., id="<name>")` id in that file; a `[param]` suffix is
allowed and only the part before `[` is looked up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ASSUMPTIONS = ROOT / "docs" / "assumptions.md"
REFERENCE = re.compile(r"tests/[\w/]+\.py::[\w\-\.\[\]]+")
TITLE = re.compile(r"^- \*\*(.+?)\*\*")


@dataclass(frozen=True)
class Entry:
    section: str
    title: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0]


def parse_entries(markdown: str) -> list[Entry]:
    """Top-level `- **` bullets with their continuation lines, each with the heading it sits under."""
    entries: list[Entry] = []
    section = ""
    current: list[str] | None = None

    def close() -> None:
        nonlocal current
        if current is not None:
            title = TITLE.match(current[0])
            assert title is not None
            entries.append(Entry(section, title.group(1), "\n".join(current).rstrip()))
        current = None

    for line in markdown.splitlines():
        if line.startswith("#"):
            close()
            section = line.lstrip("#").strip()
        elif line.startswith("- **"):
            close()
            current = [line]
        elif line.startswith("- "):
            close()
        elif current is not None:
            current.append(line)
    close()
    return entries


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-.")


def entry_ids(entries: list[Entry]) -> list[str]:
    """The bold title, sanitized; a title used twice is qualified by its section."""
    titles = [slug(e.title) for e in entries]
    return [t if titles.count(t) == 1 else f"{t}--{slug(e.section)}" for t, e in zip(titles, entries, strict=True)]


ENTRIES = parse_entries(ASSUMPTIONS.read_text(encoding="utf-8"))


def test_the_document_has_entries_and_their_ids_are_unique():
    ids = entry_ids(ENTRIES)
    assert len(ENTRIES) >= 70, "the parser found fewer entries than docs/assumptions.md holds"
    assert len(set(ids)) == len(ids)


def test_the_parser_keeps_continuation_lines_and_stops_at_the_next_bullet_or_heading():
    markdown = "\n".join(
        [
            "# Title",
            "- **One.** first line",
            "  continued (`tests/unit/a.py::x`)",
            "- **Two** alone",
            "  - nested bullet ends nothing",
            "",
            "## Next",
            "plain paragraph",
            "- not an entry",
            "  continuation of nothing",
            "- **Three** last",
        ]
    )

    entries = parse_entries(markdown)

    assert [(e.section, e.title) for e in entries] == [("Title", "One."), ("Title", "Two"), ("Next", "Three")]
    assert entries[0].text == "- **One.** first line\n  continued (`tests/unit/a.py::x`)"
    assert "nested bullet" in entries[1].text and "paragraph" not in entries[1].text
    assert REFERENCE.findall(entries[0].text) == ["tests/unit/a.py::x"]


def _problems(entry: Entry) -> list[str]:
    references = REFERENCE.findall(entry.text)
    if not references:
        return ["names no test (expected `tests/<path>.py::<test or param id>`)"]
    problems = []
    for reference in references:
        path, name = reference.split("::", 1)
        name = name.split("[", 1)[0]
        file = ROOT / path
        if not file.is_file():
            problems.append(f"{reference}: {path} does not exist")
            continue
        source = file.read_text(encoding="utf-8")
        if f"def {name}(" not in source and f'id="{name}"' not in source:
            problems.append(f'{reference}: neither `def {name}(` nor `id="{name}"` is in {path}')
    return problems


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_ids(ENTRIES))
def test_each_assumption_names_the_tests_that_pin_it(entry: Entry):
    problems = _problems(entry)

    assert not problems, f"docs/assumptions.md entry {entry.first_line!r} ({entry.section}): " + "; ".join(problems)
