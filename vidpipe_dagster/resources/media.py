"""The media store: every media path is relative to one root and confined to it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from vidpipe_dagster.domain.media import confine, relative_to_root, write_atomic


class MediaStoreResource(dg.ConfigurableResource):
    """Files under ``root`` (``$VIDPIPE_HOME/media`` by default)."""

    root: str

    @property
    def root_path(self) -> Path:
        return Path(self.root).resolve()

    def path(self, relative: str) -> Path:
        """The absolute path of a stored relative path; refuses anything outside the root."""
        return confine(self.root_path, relative)

    def read(self, relative: str) -> bytes:
        return self.path(relative).read_bytes()

    def write(self, relative: str, data: bytes) -> Path:
        target = self.path(relative)
        write_atomic(target, data)
        return target

    def relative(self, path: Path) -> str:
        return relative_to_root(self.root_path, path)
