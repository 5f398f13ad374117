"""The media store: every media path is relative to one root and confined to it.

No component below the root may be a symlink (the file itself included): a link planted inside
the root would otherwise let a write land, or a read come from, anywhere on the machine. Writes
and reads walk the path with ``O_NOFOLLOW`` (``domain.media``), so the rule holds even against a
link swapped in after a check.
"""

from __future__ import annotations

from pathlib import Path

from vidpipe_dagster.domain.media import (
    MediaMissing,
    confine_media,
    ensure_media_folder,
    media_file_exists,
    move_into_media,
    read_media,
    relative_to_root,
    remove_media,
    write_media,
)


class MediaStore:
    """Files under ``root`` (``$VIDPIPE_HOME/media`` by default); the database stores paths
    relative to it, so a home can move and no stored path can point outside it."""

    def __init__(self, root: str | Path) -> None:
        # the root itself may be a link (a media disk mounted elsewhere): resolved once, here
        self.root = Path(root).resolve()

    def path(self, relative: str) -> Path:
        """The absolute path of a stored relative path, for tools that open files by name
        (PyAV, Pillow); refuses ``..``, absolute paths and any symlink on the way."""
        return confine_media(self.root, relative)

    def read(self, relative: str) -> bytes:
        """The file's bytes; ``MediaMissing`` when absent, ``MediaError`` through a symlink."""
        return read_media(self.root, relative)

    def write(self, relative: str, data: bytes) -> Path:
        """Write atomically, creating folders; refuses to write through or onto a symlink."""
        return write_media(self.root, relative, data)

    def write_from(self, relative: str, source: Path) -> Path:
        """Move the file ``source`` in atomically without reading it into memory (a rename on
        the same disk), with ``write``'s rules; ``source`` is gone afterwards."""
        return move_into_media(self.root, relative, source)

    def exists(self, relative: str) -> bool:
        """Whether the file is there; a symlink on the way is an error, not a missing file."""
        return media_file_exists(self.root, relative)

    def prepare_folder(self, relative: str) -> Path:
        """Create ``relative`` (and its parents) as real folders, or prove they are: a stage
        calls this before it pays for something it will store there."""
        return ensure_media_folder(self.root, relative)

    def remove(self, relative: str) -> bool:
        """Remove a file or an empty folder (never through a symlink); whether it was there."""
        return remove_media(self.root, relative)

    def relative(self, path: Path) -> str:
        return relative_to_root(self.root, path)

    def load(self, relative: str) -> bytes | None:
        """The stored bytes, or None when the file is gone. A symlink on the way is an error,
        not a missing file: it must not make a paid result look lost."""
        try:
            return read_media(self.root, relative)
        except MediaMissing:
            return None
