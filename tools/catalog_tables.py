"""Write the README's model and price tables from the packaged model catalog.

``python tools/catalog_tables.py`` rewrites the block between the README's model-catalog markers;
``--check`` exits 1 if the README is out of date (tests/test_readme_catalog.py checks the same).
"""

from __future__ import annotations

import sys
from pathlib import Path

from vidpipe_dagster.domain.catalog import packaged_catalog
from vidpipe_dagster.domain.catalog_docs import catalog_markdown, replace_block

README = Path(__file__).resolve().parents[1] / "README.md"


def main(argv: list[str]) -> int:
    text = README.read_text(encoding="utf-8")
    updated = replace_block(text, catalog_markdown(packaged_catalog()))
    if "--check" in argv:
        if updated != text:
            print("README.md model tables differ from the catalog: run tools/catalog_tables.py")
            return 1
        return 0
    if updated != text:
        README.write_text(updated, encoding="utf-8")
        print(f"{README}: model tables rewritten from the catalog")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
