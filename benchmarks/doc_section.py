"""Benchmarks write their tables into the docs between two HTML-comment markers, leaving the prose
around them (written by hand) alone."""

from __future__ import annotations

from pathlib import Path


def write_section(doc: Path, section: str, *, start: str, end: str, heading: str) -> None:
    """Replace the text from ``start`` to ``end`` in ``doc`` with ``section`` (which carries both
    markers); a doc without them gets them appended under ``## heading``."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if start not in text:
        text = text.rstrip("\n") + f"\n\n## {heading}\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    doc.write_text(head + section + rest.partition(end)[2])
