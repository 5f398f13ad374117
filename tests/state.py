"""What "nothing changed" means in a test: the database's rows and the media root's entries."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

from vidpipe_dagster.settings import Settings


def media_tree(folder: Path) -> dict[str, str]:
    """Every entry below ``folder`` (links not followed): relative path -> kind and content."""
    found: dict[str, str] = {}
    if not folder.exists():
        return found
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                found[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def database_dump(settings: Settings) -> list[str]:
    """Every row of the SQLite database, as SQL (the test settings use SQLite)."""
    path = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        return list(connection.iterdump())


def snapshot(settings: Settings) -> tuple[list[str], dict[str, str]]:
    return database_dump(settings), media_tree(settings.media_root)
