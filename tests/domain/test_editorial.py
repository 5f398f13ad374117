"""The final cut's film: stream copy or one re-encode, chapters, labels, atomic writes.

Every assertion reads the written file back with PyAV.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.fixtures.clips import packets, veo_like_clip
from vidpipe_dagster.domain import editorial
from vidpipe_dagster.domain.editorial import (
    atomic_path,
    contact_sheet,
    cut_film,
    inspect_clip,
    plan_cut,
)
from vidpipe_dagster.domain.preview import CONTAINER_TAG
from vidpipe_dagster.domain.render import probe_mp4, render_animatic


def animatic(
    path: Path,
    seconds: float,
    *,
    aspect: str = "16:9",
    fps: int = 12,
    height: int = 90,
    color: tuple[int, int, int] = (255, 0, 0),
) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buffer, format="PNG")
    png = buffer.getvalue()
    data = render_animatic(
        start_frame=png,
        end_frame=png,
        references=[],
        prompt="p",
        duration_seconds=seconds,
        aspect_ratio=aspect,  # type: ignore[arg-type]
        fps=fps,
        height=height,
    )
    path.write_bytes(data)
    return path


def chapters(path: Path) -> list[tuple[float, float, str]]:
    with av.open(str(path)) as container:
        return [
            (
                float(c["start"] * c["time_base"]),
                float(c["end"] * c["time_base"]),
                c["metadata"].get("title", ""),
            )
            for c in container.chapters()
        ]


def audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


def test_matching_clips_are_stream_copied_packet_for_packet(tmp_path: Path) -> None:
    paths = [
        veo_like_clip(tmp_path / f"c{i}.mp4", seconds, shade=40 * i)
        for i, seconds in enumerate((2.0, 3.0, 1.0))
    ]
    clips = [inspect_clip(p) for p in paths]
    target = tmp_path / "cut" / "final.mp4"
    result = cut_film(
        clips,
        target,
        titles=["Scene 0: a", "Scene 1: b", "Scene 2: c"],
        names=["scene 0", "scene 1", "scene 2"],
    )

    assert result.plan.mode == "stream_copy"
    assert result.plan.reason == "stream copy: 3 clips, h264 320x180 24 fps, aac stereo 48 kHz"
    assert result.starts == (0.0, 2.0, 5.0) and result.durations == (2.0, 3.0, 1.0)
    # no decode, no re-encode: the film's video packets are the clips' packets, byte for byte
    assert packets(target, "video") == [pkt for p in paths for pkt in packets(p, "video")]
    copied = set(packets(target, "audio"))
    assert copied <= {pkt for p in paths for pkt in packets(p, "audio")}
    info = probe_mp4(target)
    assert (info.width, info.height, info.fps, info.frame_count) == (320, 180, 24, 144)
    assert info.duration_seconds == pytest.approx(6.0, abs=1e-3)
    assert info.has_audio and audio_seconds(target) == pytest.approx(6.0, abs=0.03)
    assert chapters(target) == [
        (0.0, 2.0, "Scene 0: a"),
        (2.0, 5.0, "Scene 1: b"),
        (5.0, 6.0, "Scene 2: c"),
    ]
    assert not info.is_animatic
    assert [p.name for p in target.parent.iterdir()] == ["final.mp4"], "no temporary file left"


def test_the_stream_copy_decodes_to_the_clips_own_frames(tmp_path: Path) -> None:
    paths = [veo_like_clip(tmp_path / f"c{i}.mp4", 1.0, shade=100 * i) for i in range(2)]
    target = tmp_path / "final.mp4"
    cut_film([inspect_clip(p) for p in paths], target)
    with av.open(str(target)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    expected = []
    for path in paths:
        with av.open(str(path)) as container:
            expected += [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == len(expected) == 48
    assert all((a == b).all() for a, b in zip(frames, expected, strict=True))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"size": (160, 90)}, "scene 1 is 160x90, scene 0 320x180"),
        ({"fps": 25}, "scene 1 is 25 fps, scene 0 24 fps"),
        ({"audio": False}, "scene 1 has no sound"),
        (
            {"x264": {"preset": "veryfast", "profile": "baseline"}},
            "scene 1's h264 encoder settings differ from scene 0's",
        ),
    ],
    ids=["size", "fps", "sound", "encoder-settings"],
)
def test_clips_that_differ_are_re_encoded_and_the_reason_names_the_scene(
    tmp_path: Path, change: dict, reason: str
) -> None:
    first = veo_like_clip(tmp_path / "a.mp4", 1.0)
    second = veo_like_clip(tmp_path / "b.mp4", 1.0, **change)
    plan = plan_cut([inspect_clip(first), inspect_clip(second)], ["scene 0", "scene 1"])
    assert plan.mode == "reencode"
    assert plan.reason.endswith(f": {reason}"), plan.reason
    assert plan.reason.startswith("re-encoded at 320x180 ")


def test_re_encode_letterboxes_mixed_shapes_at_the_largest_clip_size(tmp_path: Path) -> None:
    wide = animatic(tmp_path / "wide.mp4", 4, height=360, color=(255, 0, 0))
    tall = animatic(tmp_path / "tall.mp4", 6, aspect="9:16", fps=8, height=180, color=(0, 0, 255))
    target = tmp_path / "final.mp4"
    result = cut_film([inspect_clip(wide), inspect_clip(tall)], target, names=["s0", "s1"])
    assert result.plan.reason == "re-encoded at 640x360 12 fps: s1 is 180x320, s0 640x360"
    assert result.starts == (0.0, 4.0)
    info = probe_mp4(target)
    assert (info.width, info.height, info.fps, info.frame_count) == (640, 360, 12, 120)
    assert info.duration_seconds == pytest.approx(10.0, abs=1e-6)
    assert info.is_animatic, "a cut that contains an animatic keeps the preview label"
    assert CONTAINER_TAG in (info.title or "")
    with av.open(str(target)) as container:
        frames = [f for i, f in enumerate(container.decode(video=0)) if i in (20, 100)]
    left, right = (f.to_ndarray(format="rgb24") for f in frames)
    assert left[200, 320][0] > 150, "the wide clip fills the frame"
    assert right[180, 5].max() < 30, "the portrait clip is letterboxed with black bars"
    assert right[200, 320][2] > 150, "the portrait clip sits in the middle"
    assert [c[:2] for c in chapters(target)] == [(0.0, 4.0), (4.0, 10.0)]


def test_re_encode_keeps_sound_and_pads_silent_clips(tmp_path: Path) -> None:
    veo = veo_like_clip(tmp_path / "veo.mp4", 2.0, size=(320, 180))
    silent = animatic(tmp_path / "silent.mp4", 2, height=180)
    target = tmp_path / "final.mp4"
    result = cut_film([inspect_clip(veo), inspect_clip(silent)], target)
    assert result.plan.mode == "reencode" and result.starts == (0.0, 2.0)
    info = probe_mp4(target)
    assert info.has_audio and info.frame_count == 96
    assert Fraction(info.fps).limit_denominator(1001) == 24
    assert audio_seconds(target) == pytest.approx(4.0, abs=0.05)
    assert info.is_animatic


def test_re_encode_is_never_below_the_largest_clip(tmp_path: Path) -> None:
    big = veo_like_clip(tmp_path / "big.mp4", 0.5, size=(320, 180), audio=False)
    small = veo_like_clip(tmp_path / "small.mp4", 0.5, size=(160, 90), audio=False)
    clips = [inspect_clip(small), inspect_clip(big)]
    low = plan_cut(clips, ["scene 0", "scene 1"], height=90)
    assert (low.width, low.height) == (320, 180)
    assert "configured 90p is below the largest clip's 180p: kept 180p" in low.reason
    high = cut_film(clips, tmp_path / "final.mp4", height=360)
    assert (high.plan.width, high.plan.height) == (640, 360)
    assert probe_mp4(high.path).height == 360


def test_forced_re_encode_of_matching_clips_says_so(tmp_path: Path) -> None:
    paths = [veo_like_clip(tmp_path / f"c{i}.mp4", 1.0) for i in range(2)]
    result = cut_film([inspect_clip(p) for p in paths], tmp_path / "f.mp4", force_reencode=True)
    assert result.plan.reason == "re-encoded at 320x180 24 fps: re-encode requested"
    assert packets(result.path, "video") != [x for p in paths for x in packets(p, "video")]
    assert probe_mp4(result.path).frame_count == 48


def test_previews_joined_by_stream_copy_stay_labelled(tmp_path: Path) -> None:
    clips = [inspect_clip(animatic(tmp_path / f"a{i}.mp4", 1, fps=4)) for i in range(2)]
    result = cut_film(clips, tmp_path / "final.mp4")
    assert result.plan.mode == "stream_copy" and result.starts == (0.0, 1.0)
    info = probe_mp4(result.path)
    assert info.is_animatic and info.duration_seconds == pytest.approx(2.0, abs=1e-3)


def test_a_stream_copy_the_muxer_refuses_falls_back_to_one_re_encode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise av.ArgumentError(22, "non monotonically increasing dts")

    monkeypatch.setattr(editorial, "_remux", refuse)
    paths = [veo_like_clip(tmp_path / f"c{i}.mp4", 0.5, audio=False) for i in range(2)]
    result = cut_film([inspect_clip(p) for p in paths], tmp_path / "final.mp4")
    assert result.plan.mode == "reencode"
    assert "stream copy failed" in result.plan.reason and "dts" in result.plan.reason
    assert probe_mp4(result.path).frame_count == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c0.mp4", "c1.mp4", "final.mp4"]


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "final.mp4"
    target.write_bytes(b"previous cut")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"previous cut"
    assert [p.name for p in tmp_path.iterdir()] == ["final.mp4"]


def test_inspect_names_an_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "scene.mp4"
    bad.write_bytes(b"not a video" * 20)
    with pytest.raises(ValueError, match=str(bad)):
        inspect_clip(bad)


def test_contact_sheet_labels_every_scene_and_marks_previews() -> None:
    frames = [Image.new("RGB", (320, 180), (20 * i, 90, 200)) for i in range(6)]
    tiles = [(f"scene {i}", frame, i == 4) for i, frame in enumerate(frames)]
    sheet = contact_sheet(tiles, tile_width=160)
    assert sheet.width == 4 * 160 + 5 * 6  # four columns, two rows
    caption_h = max(16, 160 // 9)
    assert sheet.height == 2 * (90 + caption_h) + 3 * 6
    preview_x, preview_y = 6, 6 + 90 + caption_h + 6  # the fifth tile: second row, first column
    assert sheet.getpixel((preview_x, preview_y + 40))[:2] == (255, 196), "amber frame"
    assert sheet.getpixel((6, 6 + 40)) != (255, 196, 0), "a Veo scene has no amber frame"
    caption = sheet.crop((6, 6 + 90, 6 + 160, 6 + 90 + caption_h))
    assert np.asarray(caption).max() > 200, "the caption is written in light text"
