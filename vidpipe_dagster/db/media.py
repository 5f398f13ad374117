"""The media store: every media path is relative to one root and confined to it."""

from __future__ import annotations

from pathlib import Path

from vidpipe_dagster.domain.media import MediaError, confine, relative_to_root, write_atomic


class MediaStore:
    """Files under ``root`` (``$VIDPIPE_HOME/media`` by default); the database stores paths
    relative to it, so a home can move and no stored path can point outside it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def path(self, relative: str) -> Path:
        """The absolute path of a stored relative path; refuses anything outside the root."""
        return confine(self.root, relative)

    def read(self, relative: str) -> bytes:
        return self.path(relative).read_bytes()

    def write(self, relative: str, data: bytes) -> Path:
        target = self.path(relative)
        write_atomic(target, data)
        return target

    def relative(self, path: Path) -> str:
        return relative_to_root(self.root, path)

    def load(self, relative: str) -> bytes | None:
        """The stored bytes, or None when the file is gone (or the path is not allowed)."""
        try:
            path = self.path(relative)
        except MediaError:
            return None
        return path.read_bytes() if path.is_file() else None
