"""Media files: confinement to the media root, hashes, image checks, atomic writes, previews.

Every stage reads and writes media through these functions so that a path can never leave the
media root, a half-written file is never seen, and a corrupt image fails naming its file.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import os
import secrets
import stat
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError


class MediaError(ValueError):
    """A media file is missing, unreadable, not an image, or outside the allowed folder."""


class MediaMissing(MediaError):
    """The file (or a folder on its path) does not exist under the media root."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def confine(root: Path, relative: str | os.PathLike[str]) -> Path:
    """Resolve ``relative`` under ``root``; refuse absolute paths, ``..`` and symlinks out.

    For folders a person hands us (a spec's images): a symlink that stays inside is fine. The
    media root is stricter (``confine_media``)."""
    text = os.fspath(relative)
    if "\0" in text:
        raise MediaError(f"path {text!r} contains a NUL byte; give a plain relative path")
    rel = Path(text)
    if rel.is_absolute():
        raise MediaError(f"path {text!r} is absolute; give a path relative to {root}")
    root_resolved = root.resolve()
    candidate = (root_resolved / rel).resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise MediaError(f"path {text!r} leaves the folder {root_resolved}")
    return candidate


# Media root confinement. Everything below the root is ours: no component may be a symlink, so
# a link planted inside the root (``projects/<slug>/inputs -> /elsewhere``) can neither receive
# writes nor serve reads. Writes and reads walk the path with directory descriptors and
# ``O_NOFOLLOW``, so a link swapped in between a check and the write is refused as well.

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def media_parts(relative: str | os.PathLike[str]) -> tuple[str, ...]:
    """The components of a media path: relative, no ``..``, no NUL, not empty."""
    text = os.fspath(relative)
    if "\0" in text:
        raise MediaError(f"media path {text!r} contains a NUL byte")
    rel = Path(text)
    if rel.is_absolute():
        raise MediaError(f"media path {text!r} is absolute; media paths are relative to the root")
    parts = rel.parts
    if not parts:
        raise MediaError("empty media path")
    if ".." in parts:
        raise MediaError(f"media path {text!r} leaves the media root (it contains '..')")
    return parts


def _symlink_error(root: Path, parts: tuple[str, ...], depth: int) -> MediaError:
    link = root.joinpath(*parts[: depth + 1])
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    return MediaError(
        f"{link} is a symlink (to {target}); nothing under the media root {root} may be a "
        "symlink. Replace it with a real folder or file (move the data into the media root, or "
        "point VIDPIPE_MEDIA_ROOT at the other disk)"
    )


def confine_media(root: Path, relative: str | os.PathLike[str]) -> Path:
    """``root / relative`` when no existing component below ``root`` is a symlink (the file
    itself included) and every existing parent is a folder; raises ``MediaError`` otherwise."""
    parts = media_parts(relative)
    current = root
    for depth, part in enumerate(parts):
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            break  # the rest does not exist yet: nothing to follow
        except OSError as exc:
            raise MediaError(f"cannot inspect {current}: {exc.strerror or exc}") from exc
        if stat.S_ISLNK(mode):
            raise _symlink_error(root, parts, depth)
        if depth < len(parts) - 1 and not stat.S_ISDIR(mode):
            raise MediaError(f"{current} is not a folder (media path {os.fspath(relative)!r})")
    return root.joinpath(*parts)


@contextmanager
def _media_dir(root: Path, parts: tuple[str, ...], *, create: bool) -> Iterator[int]:
    """A descriptor of the folder ``root/parts``, opened one component at a time, never
    through a symlink; missing folders are created when ``create``."""
    if create:
        root.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MediaMissing(f"the media root {root} does not exist") from None
    try:
        for depth, part in enumerate(parts):
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise MediaMissing(
                        f"folder {root.joinpath(*parts[: depth + 1])} does not exist"
                    ) from None
                with suppress(FileExistsError):  # made meanwhile by another writer: fine
                    os.mkdir(part, 0o755, dir_fd=fd)
                child = _open_child_dir(fd, root, parts, depth)
            except OSError as exc:
                if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                    where = root.joinpath(*parts[: depth + 1])
                    raise MediaError(f"cannot open {where}: {exc.strerror or exc}") from exc
                child = _open_child_dir(fd, root, parts, depth)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _open_child_dir(fd: int, root: Path, parts: tuple[str, ...], depth: int) -> int:
    """Open one component again, turning 'not a folder' into the reason (symlink or file)."""
    try:
        return os.open(parts[depth], _DIR_FLAGS, dir_fd=fd)
    except OSError:
        mode = os.stat(parts[depth], dir_fd=fd, follow_symlinks=False).st_mode
        if stat.S_ISLNK(mode):
            raise _symlink_error(root, parts, depth) from None
        raise MediaError(f"{root.joinpath(*parts[: depth + 1])} is not a folder") from None


def _check_leaf(dir_fd: int, root: Path, parts: tuple[str, ...]) -> bool:
    """Whether the file exists; a symlink or a folder in its place is an error."""
    try:
        mode = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        raise _symlink_error(root, parts, len(parts) - 1)
    if not stat.S_ISREG(mode):
        raise MediaError(f"{root.joinpath(*parts)} is not a file")
    return True


def write_media(root: Path, relative: str | os.PathLike[str], data: bytes) -> Path:
    """Write atomically (temporary file, fsync, rename) under ``root``, creating folders, never
    through a symlink; a symlink where the file or a folder should be is refused."""
    parts = media_parts(relative)
    with _media_dir(root, parts[:-1], create=True) as dir_fd:
        _check_leaf(dir_fd, root, parts)
        tmp = f".{parts[-1]}.{secrets.token_hex(6)}.part"
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=dir_fd,
        )
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
    return root.joinpath(*parts)


def move_into_media(root: Path, relative: str | os.PathLike[str], source: Path) -> Path:
    """Put the file ``source`` at ``root/relative`` atomically, with ``write_media``'s rules,
    without reading it into memory: a rename when it is on the same disk (stage it in the
    destination folder), else a copy in 1 MiB pieces. ``source`` is gone afterwards."""
    parts = media_parts(relative)
    with _media_dir(root, parts[:-1], create=True) as dir_fd:
        _check_leaf(dir_fd, root, parts)
        tmp = f".{parts[-1]}.{secrets.token_hex(6)}.part"
        try:
            try:
                os.rename(source, tmp, dst_dir_fd=dir_fd)
                fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                _copy_into(source, tmp, dir_fd)
                source.unlink()
            os.replace(tmp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
    return root.joinpath(*parts)


def _copy_into(source: Path, name: str, dir_fd: int) -> None:
    fd = os.open(
        name,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o644,
        dir_fd=dir_fd,
    )
    with os.fdopen(fd, "wb") as out, source.open("rb") as src:
        while chunk := src.read(1 << 20):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())


def media_file_exists(root: Path, relative: str | os.PathLike[str]) -> bool:
    """Whether the file exists, walking the path without following any symlink (a link on
    the way is an error, not a missing file: it must not make a paid result look lost)."""
    parts = media_parts(relative)
    try:
        with _media_dir(root, parts[:-1], create=False) as dir_fd:
            return _check_leaf(dir_fd, root, parts)
    except MediaMissing:
        return False


def ensure_media_folder(root: Path, relative: str | os.PathLike[str]) -> Path:
    """Create the folder ``root/relative`` and its parents, or prove they are real folders."""
    parts = media_parts(relative)
    with _media_dir(root, parts, create=True):
        pass
    return root.joinpath(*parts)


def read_media(root: Path, relative: str | os.PathLike[str]) -> bytes:
    """The file's bytes, read without following any symlink; ``MediaMissing`` when absent."""
    parts = media_parts(relative)
    with _media_dir(root, parts[:-1], create=False) as dir_fd:
        if not _check_leaf(dir_fd, root, parts):
            raise MediaMissing(f"file {root.joinpath(*parts)} does not exist")
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            raise MediaMissing(f"file {root.joinpath(*parts)} does not exist") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a link since the check
                raise _symlink_error(root, parts, len(parts) - 1) from None
            raise MediaError(f"cannot read {root.joinpath(*parts)}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as handle:
            return handle.read()


def remove_media(root: Path, relative: str | os.PathLike[str]) -> bool:
    """Remove a file (or an empty folder) under ``root`` without following symlinks; returns
    whether something was removed. Used to undo a failed import's copies."""
    parts = media_parts(relative)
    try:
        with _media_dir(root, parts[:-1], create=False) as dir_fd:
            mode = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                os.rmdir(parts[-1], dir_fd=dir_fd)
            else:
                os.unlink(parts[-1], dir_fd=dir_fd)
            return True
    except (MediaMissing, FileNotFoundError):
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise


def relative_to_root(root: Path, path: Path) -> str:
    """The POSIX path of ``path`` relative to ``root`` (what the database stores)."""
    resolved = path.resolve()
    root_resolved = root.resolve()
    if root_resolved not in resolved.parents:
        raise MediaError(f"{resolved} is outside the media root {root_resolved}")
    return resolved.relative_to(root_resolved).as_posix()


def read_image_bytes(path: Path, *, label: str = "image") -> bytes:
    """Read a file and prove it decodes as an image; errors name the label and the file."""
    return read_image(path, label=label).data


@dataclass(frozen=True)
class CheckedImage:
    """An image file's bytes, proven to decode (now, or when its recorded hash was taken)."""

    data: bytes
    mime_type: str
    sha256: str
    decoded: bool  # False: its bytes hash to the content hash recorded when it was decoded


def read_image(
    path: Path, *, label: str = "image", known_sha256: str | None = None
) -> CheckedImage:
    """Read an image file, decoding it at most once.

    ``known_sha256`` is the hash recorded when these bytes were imported (and fully decoded
    then, e.g. ``Keyframe.content_sha256``): bytes that still hash to it are the image proven
    then, so only their header is read for the MIME type. Any other bytes are decoded fully
    once (a 1280x720 PNG: about 30 ms, against under 1 ms to hash it)."""
    if not path.exists():
        raise MediaError(f"{label}: file {path} does not exist")
    if not path.is_file():
        raise MediaError(f"{label}: {path} is not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MediaError(f"{label}: cannot read {path}: {exc.strerror or exc}") from exc
    digest = sha256_bytes(data)
    if known_sha256 is not None and digest == known_sha256:
        with suppress(UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return CheckedImage(data, _mime_of(_header(data).format), digest, decoded=False)
    image = decode_image(data, label=f"{label} ({path})")
    return CheckedImage(data, _mime_of(image.format), digest, decoded=True)


def _header(data: bytes) -> Image.Image:
    """The image's header only (format and size): nothing is decompressed."""
    return Image.open(io.BytesIO(data))


def _mime_of(fmt: str | None) -> str:
    mimes = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
    return mimes.get((fmt or "PNG").upper(), "image/png")


def decode_image(data: bytes, *, label: str = "image") -> Image.Image:
    """Decode fully (not just the header), so truncated files are caught here, not later."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()  # chunk checksums: cheap (no decompression), catches corrupt PNGs
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except Image.DecompressionBombError as exc:  # the header claims more pixels than is safe
        raise MediaError(
            f"{label} is too large to decode safely ({exc}); use an image of at most "
            f"{Image.MAX_IMAGE_PIXELS} pixels"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MediaError(f"{label} is not a decodable image: {exc}") from exc


def image_mime_type(data: bytes) -> str:
    """The MIME type from the image's header (decode it first to prove it is an image: this
    does not, so that an image already decoded is not decoded a second time for its type)."""
    try:
        return _mime_of(_header(data).format)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return _mime_of(decode_image(data).format)  # raises the MediaError naming the problem


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


def png_bytes(image: Image.Image, *, compress_level: int | None = None) -> bytes:
    """PNG bytes; ``compress_level`` 0-9 (zlib), default Pillow's (6)."""
    buffer = io.BytesIO()
    if compress_level is None:
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def thumbnail_data_uri(
    image: Image.Image | bytes, size: int | None = 128, *, quality: int = 80
) -> str:
    """An inline JPEG for Dagster's markdown metadata (the UI renders data URIs); ``size`` bounds
    the longer side, ``None`` keeps the image's own size (a strip already made small).

    Encoded bytes are remembered by content hash: the same reference is shown beside every
    scene it appears in, and hashing it costs a fiftieth of decoding it."""
    if isinstance(image, bytes):
        key = (sha256_bytes(image), size, quality)
        with _THUMBS_LOCK:
            known = _THUMBS.get(key)
        if known is not None:
            return known
        uri = _thumbnail_uri(decode_image(image), size, quality)
        with _THUMBS_LOCK:
            _THUMBS[key] = uri
            while len(_THUMBS) > _THUMBS_KEPT:
                _THUMBS.popitem(last=False)
        return uri
    return _thumbnail_uri(image, size, quality)


_THUMBS: OrderedDict[tuple[str, int | None, int], str] = OrderedDict()
_THUMBS_LOCK = threading.Lock()
_THUMBS_KEPT = 256  # a few kB each


def _thumbnail_uri(img: Image.Image, size: int | None, quality: int) -> str:
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
