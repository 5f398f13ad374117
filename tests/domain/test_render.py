"""The animatic renderer, mp4 probe, frames and thumbnails, checked by reading files back."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vidpipe_dagster.domain.preview import CONTAINER_TAG as PREVIEW_METADATA
from vidpipe_dagster.domain.render import (
    frame_at,
    frame_size,
    probe_mp4,
    render_animatic,
    thumbnail_strip,
)


def png(color: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def first_frame(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(video=0):
            return frame.to_ndarray(format="rgb24")
    raise AssertionError("no frame")


@pytest.mark.parametrize("aspect_ratio", ["16:9", "9:16"])
@pytest.mark.parametrize("duration", [4, 6, 8])
def test_animatic_has_exact_duration_frames_and_shape(duration: int, aspect_ratio: str) -> None:
    data = render_animatic(
        start_frame=png((200, 40, 40)),
        end_frame=png((40, 40, 200), (240, 320)),
        references=[("CHAR_01", png((0, 200, 0), (100, 100))), ("PROP_01", png((200, 200, 0)))],
        prompt="Mia walks into the park",
        duration_seconds=duration,
        aspect_ratio=aspect_ratio,  # type: ignore[arg-type]
    )
    info = probe_mp4(data)
    assert info.codec == "h264"
    assert info.fps == 12
    assert info.frame_count == duration * 12
    assert info.duration_seconds == pytest.approx(duration, abs=1e-6)
    assert (info.width, info.height) == ((640, 360) if aspect_ratio == "16:9" else (360, 640))
    assert info.comment == PREVIEW_METADATA and info.title == PREVIEW_METADATA
    assert info.is_animatic


def test_animatic_burns_in_the_label_band_and_starts_on_the_start_frame() -> None:
    data = render_animatic(
        start_frame=png((200, 40, 40)),
        end_frame=None,
        references=[],
        prompt="a prompt card stands in for the missing end frame",
        duration_seconds=4,
        aspect_ratio="16:9",
    )
    frame = first_frame(data)
    band = frame[:20]
    assert band.mean() < 90, "the label band is dark"
    assert (band > 200).any(), "the label text is bright"
    centre = frame[180].astype(int)
    assert centre[320][0] > 150 and centre[320][2] < 90, "the first frame shows the start frame"


def test_animatic_without_keyframes_renders_a_prompt_card() -> None:
    data = render_animatic(
        start_frame=None,
        end_frame=None,
        references=[],
        prompt="no frames at all",
        duration_seconds=4,
        aspect_ratio="9:16",
        fps=6,
        height=180,
    )
    info = probe_mp4(data)
    assert (info.width, info.height, info.frame_count) == (180, 320, 24)


def test_frame_size_rejects_unknown_aspect_ratio() -> None:
    assert frame_size("16:9", 720) == (1280, 720)
    with pytest.raises(ValueError, match="aspect ratio"):
        frame_size("4:3")


def test_thumbnail_strip_spreads_frames_across_the_clip() -> None:
    data = render_animatic(
        start_frame=png((255, 0, 0)),
        end_frame=png((0, 0, 255)),
        references=[],
        prompt="strip",
        duration_seconds=4,
        aspect_ratio="16:9",
    )
    strip = thumbnail_strip(data, n=4, height=90)
    assert strip.size == (160 * 4 + 2 * 3, 90)
    first, last = strip.getpixel((80, 60)), strip.getpixel((3 * 162 + 80, 60))
    assert first[0] > first[2] and last[2] > last[0], "red start fades to blue end"


@pytest.mark.parametrize(
    "bad",
    [b"", b"not a video at all" * 10, png((1, 2, 3)), Path("/nonexistent/clip.mp4")],
    ids=["empty", "text", "png", "missing-file"],
)
def test_probe_rejects_invalid_mp4_with_value_error(bad: bytes | Path) -> None:
    with pytest.raises(ValueError):
        probe_mp4(bad)


def test_frame_at_seeks_to_the_instant_asked_for() -> None:
    data = render_animatic(
        start_frame=png((255, 0, 0)),
        end_frame=png((0, 0, 255)),
        references=[],
        prompt="seek",
        duration_seconds=4,
        aspect_ratio="16:9",
        fps=6,
        height=90,
    )
    first, middle, last = (frame_at(data, t) for t in (0.0, 2.0, 60.0))
    assert first.size == (160, 90)
    red_first, red_last = first.getpixel((80, 60)), last.getpixel((80, 60))
    assert red_first[0] > red_first[2] and red_last[2] > red_last[0], "red start, blue end"
    mid = middle.getpixel((80, 60))
    assert red_first[0] > mid[0] > red_last[0], "half-way through the cross-fade"
    with pytest.raises(ValueError, match="mp4 bytes"):
        frame_at(b"nothing", 1.0)
