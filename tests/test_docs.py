"""The documentation speaks in the project's own words: it names nothing a reader of the repository
cannot see (planning documents, issue numbers, the source documents the project started from)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OUTSIDE = re.compile(r"\bseed 00\d|\bDESIGN\.md\b|\bSTYLE\.md\b|\bissue #?\d+\b|\bissue's\b", re.IGNORECASE)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_only_what_the_repository_holds(doc):
    found = [
        f"{doc.name}:{n}: {m.group(0)!r}"
        for n, line in enumerate(doc.read_text().splitlines(), 1)
        for m in OUTSIDE.finditer(line)
    ]
    assert not found, "references to things outside the repository:\n" + "\n".join(found)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_point_at_files_that_exist(doc):
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text()):
        assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
