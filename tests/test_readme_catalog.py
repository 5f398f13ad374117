"""The README's model and price tables are the catalog's (generated, and checked here)."""

from __future__ import annotations

from pathlib import Path

from vidpipe_dagster.domain.catalog import packaged_catalog
from vidpipe_dagster.domain.catalog_docs import BEGIN, END, catalog_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tables_are_generated_from_the_catalog() -> None:
    text = README.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == catalog_markdown(packaged_catalog()), (
        "README.md's model tables differ from the catalog: run `python tools/catalog_tables.py`"
    )


def test_the_tables_show_the_issue_prices() -> None:
    block = catalog_markdown(packaged_catalog())
    assert (
        "| `veo-3.1-fast-generate-001` | GA | 4, 6, 8 s (8 s with references; 8 s at 1080p and 4k)"
        in block
    )
    assert "720p 0.10 / 0.08; 1080p 0.12 / 0.10; 4k 0.30 / 0.25 |" in block
    assert "| `veo-2.0-generate-001` | 2026-06-30 | `veo-3.1-generate-001` |" in block
    assert "| Child | 58061214, 17301594 | stops at once, says what to change |" in block
    assert "1K 0.039 (default)" in block
