"""``final_cut`` in-process on the animatic backend: the film, its timeline and contact sheet.

Files are read back with PyAV, OTIO and Pillow; rows come from the database the stage read.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import av
import dagster as dg
import opentimelineio as otio
import pytest
from PIL import Image
from sqlalchemy import select

from vidpipe_dagster.db.models import Scene, SceneManifest, VideoClip
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.domain.preview import CUT_NOTE
from vidpipe_dagster.domain.render import probe_mp4
from vidpipe_dagster.runner import materialize_project
from vidpipe_dagster.settings import Settings

FAST = {"poll_interval_seconds": 0.05, "backoff_base_seconds": 0.01, "requests_per_minute": 0}


def run(
    settings: Settings,
    instance: dg.DagsterInstance,
    stages: list[str],
    final_cut: dict[str, Any] | None = None,
) -> dict:
    reports = materialize_project(
        "spring-ad",
        stages,
        instance=instance,
        settings=settings,
        asset_config={"scene_clip": FAST, **({"final_cut": final_cut} if final_cut else {})},
    )
    return {r.stage: r for r in reports}


def cut_metadata(instance: dg.DagsterInstance) -> dict[str, Any]:
    key = dg.AssetKey(["spring_ad", "final_cut"])
    record = instance.fetch_materializations(key, limit=1).records[0]
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def clip_rows(settings: Settings) -> dict[int, tuple[str, str, list[str], list[str] | None]]:
    """scene index -> (prompt, clip file, tags sent, tags selected)."""
    with session_scope(settings.database_url) as session:
        rows = session.execute(
            select(Scene.scene_index, Scene.prompt, VideoClip.file_url, VideoClip.reference_tags)
            .join(VideoClip, VideoClip.scene_id == Scene.id)
            .order_by(Scene.scene_index)
        ).all()
        selected = {
            m.scene_index: m.selected_reference_tags for m in session.scalars(select(SceneManifest))
        }
    return {i: (prompt, url, list(tags or []), selected.get(i)) for i, prompt, url, tags in rows}


def inline_image(markdown: str) -> Image.Image:
    data = re.search(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", markdown)
    assert data, markdown[:200]
    return Image.open(io.BytesIO(base64.b64decode(data.group(1))))


@pytest.fixture
def clips_made(settings: Settings, imported, instance: dg.DagsterInstance) -> Settings:
    imported()
    reports = run(settings, instance, ["references", "clips"])
    assert reports["clips"].succeeded == ["0", "1"], reports["clips"].failed
    return settings


def test_matching_previews_are_stream_copied_with_chapters_timeline_and_contact_sheet(
    clips_made: Settings, instance: dg.DagsterInstance
) -> None:
    settings = clips_made
    assert run(settings, instance, ["final-cut"])["final-cut"].succeeded == ["all"]
    meta = cut_metadata(instance)
    folder = settings.media_root / "projects" / "spring-ad"
    assert meta["cut_mode"] == "stream_copy"
    assert meta["cut"] == "stream copy: 2 clips, h264 640x360 12 fps, no sound"
    assert meta["resolution"] == "640x360" and meta["has_audio"] is False
    assert meta["scene_boundaries_seconds"] == {"0": 0.0, "1": 8.0}

    film = folder / "final_cut.mp4"
    info = probe_mp4(film)
    assert (info.width, info.height) == (640, 360), "the clips' own size, not a 360p default"
    assert info.duration_seconds == pytest.approx(16.0, abs=1e-3) and info.is_animatic
    with av.open(str(film)) as container:
        chapters = [
            (float(c["start"] * c["time_base"]), c["metadata"]["title"])
            for c in container.chapters()
        ]
    assert chapters == [
        (0.0, "Scene 0: Mia walks into the park (animatic preview)"),
        (8.0, "Scene 1: The park at dusk (animatic preview)"),
    ]
    assert [(m["scene"], m["start_seconds"], m["end_seconds"]) for m in meta["scene_markers"]] == [
        (0, 0.0, 8.0),
        (1, 8.0, 16.0),
    ]
    assert meta["chapters"] == 2 and all(m["preview"] for m in meta["scene_markers"])

    rows = clip_rows(settings)
    assert meta["timeline"] == str(folder / "final_cut.otio")
    timeline = otio.adapters.read_from_file(meta["timeline"])
    clips = list(timeline.tracks[0].find_clips())
    assert len(timeline.tracks) == 1, "silent clips: no audio track"
    assert timeline.duration().to_seconds() == pytest.approx(16.0)
    for clip, (index, (prompt, url, sent, selected)) in zip(clips, rows.items(), strict=True):
        media = folder / otio.url_utils.filepath_from_url(clip.media_reference.target_url)
        assert media.resolve() == (settings.media_root / url).resolve()
        assert clip.duration().to_seconds() == pytest.approx(8.0)
        fields = clip.metadata["vidpipe"]
        assert fields["scene_index"] == index and fields["prompt"] == prompt
        assert list(fields["references"]) == sent and sent
        assert list(fields["selected_references"]) == selected
        assert fields["cost_usd"] == 0.0 and fields["preview"] is True
    assert [m.name for m in timeline.tracks[0].markers] == ["scene 0", "scene 1"]
    assert set(meta["timeline_files"]) == {"otio", "otioz", "otiod"}
    assert Path(meta["timeline_files"]["otioz"]).is_file()
    assert (Path(meta["timeline_files"]["otiod"]) / "content.otio").is_file()

    sheet = Image.open(meta["contact_sheet"])
    assert sheet.format == "JPEG" and sheet.width > sheet.height  # two tiles side by side
    shown = inline_image(meta["preview"])
    assert shown.width <= 560, "the metadata panel shows the whole sheet"
    assert CUT_NOTE in meta["preview"]


def test_run_config_forces_one_re_encode_at_a_larger_size(
    clips_made: Settings, instance: dg.DagsterInstance
) -> None:
    settings = clips_made
    config = {"force_reencode": True, "height": 540, "timeline_formats": ["otio"]}
    assert run(settings, instance, ["final-cut"], config)["final-cut"].succeeded == ["all"]
    meta = cut_metadata(instance)
    assert meta["cut_mode"] == "reencode"
    assert meta["cut"] == "re-encoded at 960x540 12 fps: re-encode requested"
    info = probe_mp4(Path(meta["path"]))
    assert (info.width, info.height, info.frame_count) == (960, 540, 192)
    assert info.is_animatic, "the preview label survives a re-encode"
    folder = settings.media_root / "projects" / "spring-ad"
    assert (folder / "final_cut.otio").is_file()
    assert not (folder / "final_cut.otioz").exists() and not (folder / "final_cut.otiod").exists()


def test_bad_config_and_unreadable_clips_fail_naming_what_to_fix_and_change_nothing(
    clips_made: Settings, instance: dg.DagsterInstance
) -> None:
    settings = clips_made
    folder = settings.media_root / "projects" / "spring-ad"
    bad = run(settings, instance, ["final-cut"], {"timeline_formats": ["otio", "edl"]})
    assert "timeline_formats: ['edl'] are not available" in bad["final-cut"].failed["all"]
    assert not folder.joinpath("final_cut.mp4").exists()

    assert run(settings, instance, ["final-cut"])["final-cut"].succeeded == ["all"]
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    film = (folder / "final_cut.mp4").read_bytes()
    clip = settings.media_root / clip_rows(settings)[1][1]
    clip.write_bytes(b"truncated" * 50)
    failed = run(settings, instance, ["final-cut"])["final-cut"].failed["all"]
    assert "scene 1" in failed and "spring_ad/scene_clip" in failed, failed
    assert (folder / "final_cut.mp4").read_bytes() == film
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
