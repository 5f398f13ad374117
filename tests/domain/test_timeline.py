"""The editorial timeline: written with OTIO's own adapters and read back with OTIO."""

from __future__ import annotations

import zipfile
from pathlib import Path

import opentimelineio as otio
import pytest

from tests.fixtures.clips import veo_like_clip
from vidpipe_dagster.domain.render import probe_mp4
from vidpipe_dagster.domain.timeline import (
    METADATA_KEY,
    TIMELINE_FORMATS,
    TimelineScene,
    build_timeline,
    write_timeline,
)

RATE = 24.0


@pytest.fixture
def scenes(tmp_path: Path) -> list[TimelineScene]:
    clips = tmp_path / "projects" / "ad" / "clips"
    return [
        TimelineScene(
            index=0,
            media=veo_like_clip(clips / "aaa.mp4", 2.0),
            frames=48,
            prompt="Mia walks into the park",
            has_audio=True,
            backend="vertex",
            references=["CHAR_01", "CHAR_01", "ENV_01"],
            selected_references=["CHAR_01", "ENV_01"],
            conditioning_mode="references",
            cost_usd=3.2,
        ),
        TimelineScene(
            index=1,
            media=veo_like_clip(clips / "bbb.mp4", 1.0, audio=False),
            frames=24,
            prompt="The park at dusk",
            preview=True,
            backend="animatic",
            cost_usd=0.0,
        ),
        TimelineScene(
            index=3,
            media=veo_like_clip(clips / "ccc.mp4", 1.5),
            frames=36,
            prompt="Close-up",
            has_audio=True,
            backend="vertex",
            take=2,
            identity_scores={"CHAR_01": 0.71},
            cost_usd=3.2,
        ),
    ]


def written(scenes: list[TimelineScene], folder: Path) -> dict[str, Path]:
    timeline = build_timeline("Spring ad", scenes, rate=RATE, metadata={"project": "ad"})
    return write_timeline(timeline, folder, "final_cut")


def seconds(time: otio.opentime.RationalTime) -> float:
    return time.to_seconds()


def test_otio_has_one_clip_per_scene_with_relative_media_and_metadata(
    tmp_path: Path, scenes: list[TimelineScene]
) -> None:
    folder = tmp_path / "projects" / "ad"
    paths = written(scenes, folder)
    assert set(paths) == set(TIMELINE_FORMATS)
    timeline = otio.adapters.read_from_file(str(paths["otio"]))
    assert timeline.name == "Spring ad"
    assert timeline.metadata[METADATA_KEY]["project"] == "ad"
    video, audio = timeline.tracks
    assert video.kind == otio.schema.TrackKind.Video and audio.kind == otio.schema.TrackKind.Audio
    clips = list(video.find_clips())
    assert [c.name for c in clips] == ["scene 0", "scene 1", "scene 3"]
    assert [seconds(c.duration()) for c in clips] == [2.0, 1.0, 1.5]
    assert seconds(timeline.duration()) == 4.5
    for clip, scene in zip(clips, scenes, strict=True):
        url = clip.media_reference.target_url
        assert not url.startswith(("/", "file:")), "media is referenced relative to the .otio"
        media = folder / otio.url_utils.filepath_from_url(url)
        assert media.resolve() == scene.media.resolve()
        assert probe_mp4(media).duration_seconds == pytest.approx(seconds(clip.duration()))
    first, preview, later = (c.metadata[METADATA_KEY] for c in clips)
    assert first["prompt"] == "Mia walks into the park" and first["scene_index"] == 0
    assert list(first["references"]) == ["CHAR_01", "CHAR_01", "ENV_01"]
    assert list(first["selected_references"]) == ["CHAR_01", "ENV_01"]
    assert first["cost_usd"] == 3.2 and first["conditioning_mode"] == "references"
    assert "take" not in first and "identity_scores" not in first, "unknown values are left out"
    assert preview["preview"] is True and preview["backend"] == "animatic"
    assert later["take"] == 2 and dict(later["identity_scores"]) == {"CHAR_01": 0.71}
    markers = {m.name: m for m in video.markers}
    assert {name: seconds(m.marked_range.start_time) for name, m in markers.items()} == {
        "scene 0": 0.0,
        "scene 1": 2.0,
        "scene 3": 3.0,
    }
    assert markers["scene 1"].color == otio.schema.MarkerColor.YELLOW
    assert markers["scene 0"].comment == "Mia walks into the park"
    sound = [type(item).__name__ for item in audio]
    assert sound == ["Clip", "Gap", "Clip"], "the silent scene is a gap on the audio track"
    assert seconds(audio.duration()) == 4.5


def test_otioz_bundle_carries_the_media(tmp_path: Path, scenes: list[TimelineScene]) -> None:
    paths = written(scenes, tmp_path / "projects" / "ad")
    assert zipfile.is_zipfile(paths["otioz"])
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    timeline = otio.adapters.read_from_file(str(paths["otioz"]), extract_to_directory=unpacked)
    clips = list(timeline.tracks[0].find_clips())
    for clip, scene in zip(clips, scenes, strict=True):
        media = unpacked / otio.url_utils.filepath_from_url(clip.media_reference.target_url)
        assert media.parent.name == "media"
        assert media.read_bytes() == scene.media.read_bytes()
        assert probe_mp4(media).duration_seconds == pytest.approx(seconds(clip.duration()))


def test_otiod_folder_bundle_is_replaced_whole(tmp_path: Path, scenes: list[TimelineScene]) -> None:
    folder = tmp_path / "projects" / "ad"
    written(scenes, folder)
    paths = written(scenes[:2], folder)  # a second cut replaces the first, bundles included
    timeline = otio.adapters.read_from_file(str(paths["otiod"]))
    clips = list(timeline.tracks[0].find_clips())
    assert [c.name for c in clips] == ["scene 0", "scene 1"]
    for clip, scene in zip(clips, scenes[:2], strict=True):
        media = paths["otiod"] / otio.url_utils.filepath_from_url(clip.media_reference.target_url)
        assert media.read_bytes() == scene.media.read_bytes()
    assert sorted(p.name for p in (paths["otiod"] / "media").iterdir()) == ["aaa.mp4", "bbb.mp4"]
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert leftovers == [], "no temporary file or folder is left behind"


def test_unknown_formats_are_refused_before_anything_is_written(
    tmp_path: Path, scenes: list[TimelineScene]
) -> None:
    timeline = build_timeline("x", scenes, rate=RATE)
    with pytest.raises(ValueError, match="edl"):
        write_timeline(timeline, tmp_path / "out", "final_cut", ("otio", "edl"))
    assert not (tmp_path / "out").exists()


def test_otio_ships_no_edl_adapter_without_a_plug_in() -> None:
    """Why no CMX 3600 EDL is written: OTIO moved it to a plug-in (otio-cmx3600-adapter)."""
    shipped = {adapter.name for adapter in otio.plugins.ActiveManifest().adapters}
    assert "cmx_3600" not in shipped
    assert {"otio_json", "otioz", "otiod"} <= shipped
