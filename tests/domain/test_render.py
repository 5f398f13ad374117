"""The animatic renderer, mp4 probe, concatenation and thumbnails, checked by reading files back."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vidpipe_dagster.domain.preview import CONTAINER_TAG as PREVIEW_METADATA
from vidpipe_dagster.domain.render import (
    concat_mp4,
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


def clip_with_tone(seconds: float, size: tuple[int, int] = (320, 240), fps: int = 24) -> bytes:
    """A Veo-like clip: H.264 at 24 fps with an AAC sine tone."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        audio = container.add_stream("aac", rate=48_000)
        audio.layout = "stereo"
        for index in range(round(seconds * fps)):
            array = np.full((size[1], size[0], 3), (index * 7) % 255, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        total = round(seconds * 48_000)
        for start in range(0, total, 1024):
            t = (np.arange(start, start + 1024) / 48_000).astype(np.float32)
            tone = np.sin(2 * np.pi * 440 * t).astype(np.float32) * 0.2
            frame = av.AudioFrame.from_ndarray(
                np.stack([tone, tone]), format="fltp", layout="stereo"
            )
            frame.sample_rate = 48_000
            frame.pts = start
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return buffer.getvalue()


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


def test_concat_letterboxes_mixed_clips_and_returns_boundaries() -> None:
    wide = render_animatic(
        start_frame=png((255, 0, 0)),
        end_frame=png((255, 0, 0)),
        references=[],
        prompt="wide",
        duration_seconds=4,
        aspect_ratio="16:9",
    )
    tall = render_animatic(
        start_frame=png((0, 0, 255)),
        end_frame=png((0, 0, 255)),
        references=[],
        prompt="tall",
        duration_seconds=6,
        aspect_ratio="9:16",
        fps=8,
        height=180,
    )
    data, boundaries = concat_mp4([wide, tall], aspect_ratio="16:9")
    info = probe_mp4(data)
    assert boundaries == [0.0, 4.0]
    assert (info.width, info.height, info.fps) == (640, 360, 12)
    assert info.frame_count == 120
    assert info.duration_seconds == pytest.approx(10.0, abs=1e-6)
    with av.open(io.BytesIO(data)) as container:
        frames = [f for i, f in enumerate(container.decode(video=0)) if i in (60, 100)]
    tall_frame = frames[1].to_ndarray(format="rgb24")
    assert tall_frame[180, 5].max() < 30, "the portrait clip is letterboxed with black bars"
    assert tall_frame[180, 320][2] > 150, "the portrait clip sits in the middle"


def test_concat_keeps_sound_and_pads_silent_clips(tmp_path: Path) -> None:
    veo_like = tmp_path / "veo.mp4"
    veo_like.write_bytes(clip_with_tone(2.0))
    silent = render_animatic(
        start_frame=None,
        end_frame=None,
        references=[],
        prompt="silent",
        duration_seconds=2,
        aspect_ratio="16:9",
        fps=12,
        height=180,
    )
    data, boundaries = concat_mp4([veo_like, silent], height=180, fps=24)
    info = probe_mp4(data)
    assert boundaries == [0.0, 2.0]
    assert info.has_audio
    assert info.frame_count == 96
    assert Fraction(info.fps).limit_denominator(1001) == 24
    with av.open(io.BytesIO(data)) as container:
        audio = container.streams.audio[0]
        assert float(audio.duration * audio.time_base) == pytest.approx(4.0, abs=0.05)


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


def test_concat_of_previews_stays_labelled_as_preview() -> None:
    clip = render_animatic(
        start_frame=None,
        end_frame=None,
        references=[],
        prompt="p",
        duration_seconds=1,
        aspect_ratio="16:9",
        fps=4,
        height=90,
    )
    joined, starts = concat_mp4([clip, clip], height=90)
    info = probe_mp4(joined)
    assert info.is_animatic and starts == [0.0, 1.0]
    assert abs(info.duration_seconds - 2.0) < 0.3
