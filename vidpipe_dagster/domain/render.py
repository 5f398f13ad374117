"""Local video work: the animatic preview renderer, mp4 probing, thumbnails, shared encoders.

The animatic lets the whole pipeline run offline with real mp4 files of the right duration and
shape, so downstream steps (probe, the final cut, UI previews) are exercised for real. Every
animatic is labelled as a preview in its pixels and in its container metadata, so it cannot pass
for Veo output.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vidpipe_dagster.domain.media import decode_image
from vidpipe_dagster.domain.preview import CONTAINER_TAG, FRAME_LABEL

AspectRatio = Literal["16:9", "9:16"]

_AUDIO_RATE = 48_000
_BAND_COLOR = (16, 16, 20)
_ACCENT = (255, 196, 0)


@dataclass(frozen=True)
class Mp4Info:
    """What a clip really is, read from the file rather than trusted from the request."""

    duration_seconds: float
    width: int
    height: int
    codec: str
    fps: float
    frame_count: int
    comment: str | None
    title: str | None = None
    has_audio: bool = False

    @property
    def is_animatic(self) -> bool:
        return CONTAINER_TAG in f"{self.title or ''} {self.comment or ''}".lower()


def frame_size(aspect_ratio: str, height: int = 360) -> tuple[int, int]:
    """(width, height) for an aspect ratio; ``height`` is the short side, as in "360p"/"720p"."""
    short = even(height)
    long = even(short * 16 / 9)
    if aspect_ratio == "16:9":
        return long, short
    if aspect_ratio == "9:16":
        return short, long
    raise ValueError(f"aspect ratio must be '16:9' or '9:16', not {aspect_ratio!r}")


def render_animatic(
    *,
    start_frame: bytes | None,
    end_frame: bytes | None,
    references: Sequence[tuple[str, bytes]],
    prompt: str,
    duration_seconds: float,
    aspect_ratio: AspectRatio,
    fps: int = 12,
    height: int = 360,
) -> bytes:
    """An H.264 mp4 of exactly ``duration_seconds * fps`` frames moving from start to end frame.

    Missing keyframes become a neutral card showing the prompt; references appear as a strip of
    labelled thumbnails; a burned-in band says this is a preview, not Veo output.
    """
    if duration_seconds <= 0:
        raise ValueError(f"duration must be positive, got {duration_seconds}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    width, out_h = frame_size(aspect_ratio, height)
    n_frames = max(1, round(duration_seconds * fps))
    margin = max(2, round(min(width, out_h) * 0.04))
    big = (width + 2 * margin, out_h + 2 * margin)

    card = None if start_frame and end_frame else _prompt_card(big, prompt)
    start = _cover(decode_image(start_frame, label="start frame"), big) if start_frame else card
    end = _cover(decode_image(end_frame, label="end frame"), big) if end_frame else card
    assert start is not None and end is not None
    start_arr = np.asarray(start.convert("RGB"), dtype=np.uint16)
    end_arr = np.asarray(end.convert("RGB"), dtype=np.uint16)

    band = _label_band(width, out_h)
    band_h = band.shape[0]
    strip = _reference_strip(references, width, out_h)

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        container.metadata["title"] = CONTAINER_TAG
        container.metadata["comment"] = CONTAINER_TAG
        stream = add_h264_stream(container, width, out_h, fps)
        for index in range(n_frames):
            t = index / (n_frames - 1) if n_frames > 1 else 1.0
            eased = t * t * (3 - 2 * t)
            # The window pans diagonally across the oversized keyframes while they cross-fade.
            x0 = round(t * 2 * margin)
            y0 = round(t * margin)
            a = start_arr[y0 : y0 + out_h, x0 : x0 + width]
            b = end_arr[y0 : y0 + out_h, x0 : x0 + width]
            weight = round(eased * 256)
            frame = ((a * (256 - weight) + b * weight) >> 8).astype(np.uint8)
            frame[:band_h] = band
            frame[band_h - 3 : band_h, : max(1, round(width * t))] = _ACCENT
            if strip is not None:
                sh, sw = strip.shape[:2]
                frame[out_h - sh - margin : out_h - margin, margin : margin + sw] = strip
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def probe_mp4(data_or_path: bytes | Path | str) -> Mp4Info:
    """Duration, size, codec and frame count of an mp4, read with PyAV; ValueError if invalid."""
    label = "mp4 bytes" if isinstance(data_or_path, bytes) else str(data_or_path)
    try:
        with open_media(data_or_path) as container:
            if "mp4" not in (container.format.name or ""):
                raise ValueError(f"{label} is not an mp4 file (format {container.format.name})")
            if not container.streams.video:
                raise ValueError(f"{label} has no video stream")
            stream = container.streams.video[0]
            has_audio = bool(container.streams.audio)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            frame_count = stream.frames or sum(
                1 for packet in container.demux(stream) if packet.size
            )
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / av.time_base
            else:
                duration = frame_count / fps if fps else 0.0
            metadata = dict(container.metadata)
            return Mp4Info(
                duration_seconds=duration,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                codec=stream.codec_context.name,
                fps=fps,
                frame_count=frame_count,
                comment=metadata.get("comment"),
                title=metadata.get("title"),
                has_audio=has_audio,
            )
    except (av.FFmpegError, OSError, IndexError) as exc:  # FFmpegError is a ValueError too
        raise ValueError(f"{label} is not a readable mp4: {exc}") from exc


def thumbnail_strip(mp4: bytes | Path, n: int = 4, *, height: int = 90) -> Image.Image:
    """``n`` frames spread across the clip, side by side, for UI previews.

    ValueError for anything unreadable, as ``probe_mp4``: a container can probe fine and still
    fail to decode, and callers must be able to skip a preview without failing the clip.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    info = probe_mp4(mp4)
    targets = [(i + 0.5) * info.duration_seconds / n for i in range(n)]
    picked: list[Image.Image] = []
    last: Image.Image | None = None
    try:
        with open_media(mp4) as container:
            first_time: float | None = None
            for frame in container.decode(container.streams.video[0]):
                time = frame.time or 0.0
                first_time = time if first_time is None else first_time
                last = frame.to_image() if not picked else last
                while len(picked) < n and time - first_time >= targets[len(picked)] - 1e-6:
                    picked.append(frame.to_image())
                if len(picked) == n:
                    break
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"cannot decode the clip's frames: {exc}") from exc
    if last is None:
        raise ValueError("the clip has no decodable video frames")
    # Short clips may end before the last target instant: repeat the last frame shown.
    picked += [picked[-1] if picked else last] * (n - len(picked))
    scale = height / picked[0].height
    thumb_w = max(1, round(picked[0].width * scale))
    strip = Image.new("RGB", (thumb_w * n + 2 * (n - 1), height), (0, 0, 0))
    for index, image in enumerate(picked):
        strip.paste(
            image.resize((thumb_w, height), Image.Resampling.BILINEAR), (index * (thumb_w + 2), 0)
        )
    return strip


def frame_at(mp4: bytes | Path, seconds: float, *, width: int | None = None) -> Image.Image:
    """The frame shown ``seconds`` into the clip (the last one past its end), as RGB, scaled down
    to ``width`` if given (a contact sheet of many 1080p scenes need not hold them full size).

    Seeks to the keyframe before the instant and decodes from there, so a long clip is not decoded
    from its start. ValueError for anything unreadable, as ``probe_mp4``.
    """
    shown: av.VideoFrame | None = None
    try:
        with open_media(mp4) as container:
            stream = container.streams.video[0]
            origin = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
            if seconds > 0 and stream.time_base:
                container.seek(
                    round((origin + seconds) / stream.time_base), stream=stream, backward=True
                )
            for frame in container.decode(stream):
                if shown is not None and (frame.time or 0.0) - origin > seconds + 1e-6:
                    break
                shown = frame
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise ValueError(f"cannot decode a frame of {_label(mp4)}: {exc}") from exc
    if shown is None:
        raise ValueError(f"{_label(mp4)} has no decodable video frames")
    if width is not None and shown.width > width:
        height = even(shown.height * width / shown.width)
        return shown.to_image(width=even(width), height=height)
    return shown.to_image()


def _label(mp4: bytes | Path | str) -> str:
    return "mp4 bytes" if isinstance(mp4, bytes) else str(mp4)


def even(value: float) -> int:
    """The nearest even number of pixels (at least 2): yuv420p needs even sizes."""
    return max(2, round(value / 2) * 2)


def open_media(data_or_path: bytes | Path | str) -> av.container.InputContainer:
    """An mp4 from bytes or a path, opened for reading with PyAV."""
    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else str(data_or_path)
    return av.open(source, mode="r")


def _h264_codec_name() -> str:
    for name in ("libx264", "h264", "libopenh264"):
        try:
            av.codec.Codec(name, "w")
        except (av.FFmpegError, ValueError):
            continue
        return name
    raise RuntimeError("this PyAV build has no H.264 encoder")


def add_h264_stream(
    container: av.container.OutputContainer,
    width: int,
    height: int,
    rate: float | Fraction,
    *,
    crf: int = 26,
    preset: str = "veryfast",
) -> av.VideoStream:
    """A yuv420p H.264 stream; ``crf``/``preset`` apply to libx264 (26: preview quality)."""
    name = _h264_codec_name()
    stream = container.add_stream(name, rate=Fraction(rate).limit_denominator(1001))
    stream.width = width
    stream.height = height
    stream.pix_fmt = "yuv420p"
    if name == "libx264":
        stream.options = {"preset": preset, "crf": str(crf)}
    return stream


@lru_cache(maxsize=64)
def label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans when installed (it has the em dash); Pillow's built-in font otherwise."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", max(8, size))
    except OSError:
        return ImageFont.load_default(size=max(8, size))


def drawable(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> str:
    """Swap typographic characters the built-in font lacks for ASCII, so no glyph is a box."""
    if "DejaVu" in str(getattr(font, "path", "")):
        return text
    return text.replace("\u2014", "-").replace("\u2026", "...")


def _fitting_font(
    text: str, max_width: int, size: int
) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    font = label_font(size)
    while size > 8 and font.getbbox(drawable(text, font))[2] > max_width:
        size -= 1
        font = label_font(size)
    return font


def _cover(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale and centre-crop to fill ``size`` exactly (keyframes keep their proportions)."""
    width, height = size
    image = image.convert("RGB")
    scale = max(width / image.width, height / image.height)
    resized = image.resize(
        (max(width, round(image.width * scale)), max(height, round(image.height * scale))),
        Image.Resampling.BILINEAR,
    )
    left = (resized.width - width) // 2
    top = (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height))


def _contain(image: Image.Image, size: tuple[int, int], fill: tuple[int, int, int]) -> Image.Image:
    """Scale to fit inside ``size`` on a plain background (references show whole)."""
    canvas = Image.new("RGB", size, fill)
    rgba = image.convert("RGBA")
    rgba.thumbnail(size, Image.Resampling.BILINEAR)
    offset = ((size[0] - rgba.width) // 2, (size[1] - rgba.height) // 2)
    canvas.paste(rgba, offset, rgba)
    return canvas


def _prompt_card(size: tuple[int, int], prompt: str) -> Image.Image:
    """A neutral card with the prompt, standing in for a missing keyframe."""
    width, height = size
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    top, bottom = np.array([58, 62, 74], np.float32), np.array([30, 32, 40], np.float32)
    pixels = (top * (1 - ramp) + bottom * ramp).repeat(width, axis=1).astype(np.uint8)
    card = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(card)
    font_size = max(9, min(width, height) // 18)
    font = label_font(font_size)
    chars = max(12, int(width * 0.8 / (font_size * 0.55)))
    wrapped = textwrap.wrap(prompt.strip() or "(no prompt)", width=chars)
    lines = wrapped[:6]
    if len(wrapped) > 6:
        lines[-1] = lines[-1][: max(0, chars - 1)] + "\u2026"
    line_h = round(font_size * 1.3)
    y = (height - line_h * (len(lines) + 2)) // 2
    small = label_font(font_size - 2)
    draw.text(
        (width // 2, y),
        drawable("no keyframe \u2014 prompt:", small),
        font=small,
        fill=(170, 176, 190),
        anchor="mt",
    )
    for index, line in enumerate(lines):
        draw.text(
            (width // 2, y + line_h * (index + 2)),
            drawable(line, font),
            font=font,
            fill=(235, 235, 240),
            anchor="mt",
        )
    return card


def _label_band(width: int, height: int) -> np.ndarray:
    """The opaque top band carrying the preview label (plus room for a progress line)."""
    font = _fitting_font(FRAME_LABEL, round(width * 0.94), max(10, min(width, height) // 22))
    text = drawable(FRAME_LABEL, font)
    box = font.getbbox(text)
    band_h = even(box[3] - box[1] + 12)
    band = Image.new("RGB", (width, band_h), _BAND_COLOR)
    ImageDraw.Draw(band).text(
        (width // 2, (band_h - 3) // 2), text, font=font, fill=(255, 255, 255), anchor="mm"
    )
    return np.asarray(band)


def _strip_geometry(count: int, width: int, height: int) -> tuple[int, int, int]:
    """(thumbnail side, gap, caption height) of the reference strip for ``count`` references."""
    gap = 4
    side = round(min(width, height) * 0.2)
    side = max(16, min(side, (round(width * 0.9) - gap * (count - 1)) // count))
    return side, gap, round(max(8, side // 6) * 1.4)


def animatic_reference_strip_box(
    aspect_ratio: str, reference_count: int, height: int = 360
) -> tuple[float, float, float, float] | None:
    """Where ``render_animatic`` burns in its reference thumbnails, as (x1, y1, x2, y2) in 0-1
    frame coordinates; None without references. Identity scoring ignores faces there: they are
    the references themselves, not the clip's characters."""
    if reference_count < 1:
        return None
    width, out_h = frame_size(aspect_ratio, height)
    margin = max(2, round(min(width, out_h) * 0.04))
    side, gap, caption_h = _strip_geometry(reference_count, width, out_h)
    strip_w = reference_count * side + gap * (reference_count - 1)
    top = out_h - margin - (side + caption_h)
    return (margin / width, top / out_h, (margin + strip_w) / width, (out_h - margin) / out_h)


def _reference_strip(
    references: Sequence[tuple[str, bytes]], width: int, height: int
) -> np.ndarray | None:
    """Labelled thumbnails of the chosen references, bottom-left, so a viewer sees what was sent."""
    if not references:
        return None
    count = len(references)
    side, gap, caption_h = _strip_geometry(count, width, height)
    font = label_font(max(8, side // 6))
    strip = Image.new("RGB", (count * side + gap * (count - 1), side + caption_h), _BAND_COLOR)
    draw = ImageDraw.Draw(strip)
    for index, (tag, data) in enumerate(references):
        thumb = _contain(
            decode_image(data, label=f"reference {tag}"), (side, side), (128, 128, 128)
        )
        x = index * (side + gap)
        strip.paste(thumb, (x, 0))
        draw.text(
            (x + side // 2, side + caption_h // 2),
            drawable(tag[:14], font),
            font=font,
            fill=(255, 255, 255),
            anchor="mm",
        )
    return np.asarray(strip)
