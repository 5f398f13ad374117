"""Media files: confinement to the media root, hashes, image checks, atomic writes, previews.

Every stage reads and writes media through these functions so that a path can never leave the
media root, a half-written file is never seen, and a corrupt image fails naming its file.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile
from pathlib import Path

from PIL import Image, UnidentifiedImageError


class MediaError(ValueError):
    """A media file is missing, unreadable, not an image, or outside the allowed folder."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def confine(root: Path, relative: str | os.PathLike[str]) -> Path:
    """Resolve ``relative`` under ``root``; refuse absolute paths, ``..`` and symlinks out."""
    rel = Path(relative)
    if rel.is_absolute():
        raise MediaError(f"path {str(relative)!r} is absolute; give a path relative to {root}")
    root_resolved = root.resolve()
    candidate = (root_resolved / rel).resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise MediaError(f"path {str(relative)!r} leaves the folder {root_resolved}")
    return candidate


def relative_to_root(root: Path, path: Path) -> str:
    """The POSIX path of ``path`` relative to ``root`` (what the database stores)."""
    resolved = path.resolve()
    root_resolved = root.resolve()
    if root_resolved not in resolved.parents:
        raise MediaError(f"{resolved} is outside the media root {root_resolved}")
    return resolved.relative_to(root_resolved).as_posix()


def read_image_bytes(path: Path, *, label: str = "image") -> bytes:
    """Read a file and prove it decodes as an image; errors name the label and the file."""
    if not path.exists():
        raise MediaError(f"{label}: file {path} does not exist")
    if not path.is_file():
        raise MediaError(f"{label}: {path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MediaError(f"{label}: cannot read {path}: {exc.strerror or exc}") from exc
    decode_image(data, label=f"{label} ({path})")
    return data


def decode_image(data: bytes, *, label: str = "image") -> Image.Image:
    """Decode fully (not just the header), so truncated files are caught here, not later."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MediaError(f"{label} is not a decodable image: {exc}") from exc


def image_mime_type(data: bytes) -> str:
    fmt = (decode_image(data).format or "PNG").upper()
    return {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}.get(fmt, "image/png")


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def thumbnail_data_uri(
    image: Image.Image | bytes, size: int | None = 128, *, quality: int = 80
) -> str:
    """An inline JPEG for Dagster's markdown metadata (the UI renders data URIs); ``size`` bounds
    the longer side, ``None`` keeps the image's own size (a strip already made small)."""
    img = decode_image(image) if isinstance(image, bytes) else image
    thumb = img.convert("RGB")
    if size is not None:
        thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def markdown_gallery(items: list[tuple[str, Image.Image | bytes]], size: int = 128) -> str:
    """A one-row markdown table of captioned thumbnails."""
    if not items:
        return "_no images_"
    header = "| " + " | ".join(caption for caption, _ in items) + " |"
    rule = "|" + "---|" * len(items)
    cells = "| " + " | ".join(f"![{c}]({thumbnail_data_uri(img, size)})" for c, img in items) + " |"
    return "\n".join([header, rule, cells])
