"""Small pictures a person would rather look at than read: a clip's frames, animated.

Frames are decoded in order and only the picked ones are converted (and scaled on the way out).
Picking frames from an H.264 clip still decodes every frame before the last one picked (about
200 ms for Veo's 8 s at 1280x720), so the picked frames of a stored clip are kept beside it
(``.<clip>.frames-<n>x<height>.png``, a strip of a few kB, tagged with the clip's size and
modification time): a rerun that reuses the clip decodes that strip, not the clip.
"""

from __future__ import annotations

import io
from contextlib import suppress
from pathlib import Path

import av
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from vidpipe_dagster.domain.media import write_atomic


def sample_frames(mp4: bytes | Path, n: int = 8, *, height: int = 90) -> list[Image.Image]:
    """``n`` frames spread evenly across the clip, each ``height`` pixels high.

    ValueError for anything unreadable: a preview is a convenience and callers skip it.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    if isinstance(mp4, bytes):
        return _decode_frames(mp4, n, height)
    stamp = _stamp(mp4)
    kept = _kept_frames(mp4, n, height, stamp)
    if kept is not None:
        return kept
    frames = _decode_frames(mp4, n, height)
    _keep_frames(mp4, n, height, stamp, frames)
    return frames


def _strip_path(mp4: Path, n: int, height: int) -> Path:
    return mp4.with_name(f".{mp4.name}.frames-{n}x{height}.png")


def _stamp(mp4: Path) -> str | None:
    """What an atomic rewrite of the clip always changes (size, mtime, inode)."""
    try:
        stat = mp4.stat()
    except OSError:
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"


def _kept_frames(mp4: Path, n: int, height: int, stamp: str | None) -> list[Image.Image] | None:
    """The frames kept beside the clip, when they were taken from this very file."""
    strip_path = _strip_path(mp4, n, height)
    if stamp is None or not strip_path.is_file():
        return None
    try:
        with Image.open(strip_path) as strip:
            info = strip.info
            count = int(info.get("frames", 0))
            if info.get("source") != stamp or count < 1 or strip.height != height:
                return None
            strip.load()
            width = strip.width // count
            return [strip.crop((i * width, 0, (i + 1) * width, height)) for i in range(count)]
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def _keep_frames(
    mp4: Path, n: int, height: int, stamp: str | None, frames: list[Image.Image]
) -> None:
    """Keep the picked frames beside the clip; a folder that cannot be written only costs the
    next preview a decode."""
    if stamp is None or len({frame.size for frame in frames}) != 1:
        return
    width = frames[0].width
    strip = Image.new("RGB", (width * len(frames), height))
    for i, frame in enumerate(frames):
        strip.paste(frame.convert("RGB"), (i * width, 0))
    text = PngImagePlugin.PngInfo()
    text.add_text("source", stamp)
    text.add_text("frames", str(len(frames)))
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG", pnginfo=text, compress_level=1)
    with suppress(OSError):
        write_atomic(_strip_path(mp4, n, height), buffer.getvalue())


def _decode_frames(mp4: bytes | Path, n: int, height: int) -> list[Image.Image]:
    source = io.BytesIO(mp4) if isinstance(mp4, bytes) else str(mp4)
    picked: list[Image.Image] = []
    try:
        with av.open(source, mode="r") as container:
            stream = container.streams.video[0]
            total = stream.frames or 0
            if total <= 0:  # no frame count in the header: fall back to the duration
                rate = float(stream.average_rate or 24)
                seconds = float(stream.duration * stream.time_base) if stream.duration else 8.0
                total = max(1, round(seconds * rate))
            wanted = sorted({min(total - 1, round((i + 0.5) * total / n)) for i in range(n)})
            width = None
            for index, frame in enumerate(container.decode(stream)):
                if index not in wanted:
                    continue
                if width is None:
                    width = max(2, round(frame.width * height / frame.height))
                picked.append(frame.reformat(width=width, height=height).to_image())
                if len(picked) == len(wanted):
                    break
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise ValueError(f"cannot read the clip's frames: {exc}") from exc
    if not picked:
        raise ValueError("the clip has no decodable video frames")
    return picked


def animated_webp(frames: list[Image.Image], *, frame_ms: int = 400, quality: int = 60) -> bytes:
    """An endlessly looping animated WebP (browsers and Dagster's markdown show it in place)."""
    if not frames:
        raise ValueError("no frames to animate")
    buffer = io.BytesIO()
    first, *rest = [frame.convert("RGB") for frame in frames]
    first.save(
        buffer,
        format="WEBP",
        save_all=True,
        append_images=rest,
        duration=frame_ms,
        loop=0,
        quality=quality,
    )
    return buffer.getvalue()
