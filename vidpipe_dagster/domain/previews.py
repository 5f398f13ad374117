"""Small pictures a person would rather look at than read: a clip's frames, animated.

Frames are decoded in order and only the picked ones are converted (and scaled on the way out),
so a preview costs a fraction of the clip's decode.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
from PIL import Image


def sample_frames(mp4: bytes | Path, n: int = 8, *, height: int = 90) -> list[Image.Image]:
    """``n`` frames spread evenly across the clip, each ``height`` pixels high.

    ValueError for anything unreadable: a preview is a convenience and callers skip it.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
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
