"""The editorial timeline beside the final cut: OpenTimelineIO, one clip per scene.

An editor who wants to trim, reorder or swap a take opens the timeline in their editing tool
instead of the flattened mp4: every scene is a clip referencing the stored Veo file, with the
scene's prompt, references, cost and (when other stages record them) take and identity scores as
clip metadata, and a marker at each scene boundary.

Formats are the adapters OpenTimelineIO 0.18 ships, which need no plug-in and work offline:
``.otio`` (JSON), ``.otioz`` (one zip carrying the media) and ``.otiod`` (a folder carrying the
media). CMX 3600 EDL is a separate plug-in (``otio-cmx3600-adapter``) since OTIO 0.16, so it is
not written.

Media paths: the ``.otio`` names each clip by a path relative to the ``.otio`` file
(``clips/<id>.mp4``), the convention OTIO's own bundles use. Every stored path in this project is
relative to the media root so that a home can move; an absolute path would break on that move,
and on any other machine. The bundles carry the media for a machine without the media root.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import opentimelineio as otio

from vidpipe_dagster.domain.editorial import atomic_path

TIMELINE_FORMATS = ("otio", "otioz", "otiod")
METADATA_KEY = "vidpipe"  # the namespace of our fields in OTIO metadata


@dataclass(frozen=True)
class TimelineScene:
    """One scene's clip in the timeline. Values that are not known yet stay None and are left
    out of the metadata rather than written as guesses."""

    index: int
    media: Path  # the clip file (absolute)
    frames: int  # the scene's length in the cut, in frames at the timeline's rate
    prompt: str
    media_frames: int | None = None  # the whole file, if longer than the part used
    has_audio: bool = False
    preview: bool = False
    backend: str | None = None
    references: Sequence[str] = ()  # the tags sent with the request, in order
    selected_references: Sequence[str] | None = None  # the scene's current selection
    conditioning_mode: str | None = None
    cost_usd: float | None = None
    take: int | None = None
    identity_scores: Mapping[str, float] | None = None  # tag -> face similarity
    extra: Mapping[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        known = {
            "scene_index": self.index,
            "prompt": self.prompt,
            "references": list(self.references),
            "selected_references": (
                list(self.selected_references) if self.selected_references is not None else None
            ),
            "backend": self.backend,
            "preview": self.preview,
            "conditioning_mode": self.conditioning_mode,
            "cost_usd": self.cost_usd,
            "take": self.take,
            "identity_scores": dict(self.identity_scores) if self.identity_scores else None,
            **self.extra,
        }
        return {key: value for key, value in known.items() if value is not None}


def build_timeline(
    name: str,
    scenes: Sequence[TimelineScene],
    *,
    rate: float,
    metadata: Mapping[str, Any] | None = None,
) -> otio.schema.Timeline:
    """A timeline with one video clip per scene (and an audio track when any clip has sound),
    referencing each clip by an absolute file URL (``relative_media`` makes them relative)."""
    if not scenes:
        raise ValueError("a timeline needs at least one scene")
    start = otio.opentime.RationalTime(0, rate)
    timeline = otio.schema.Timeline(name=name, global_start_time=start)
    timeline.metadata[METADATA_KEY] = dict(metadata or {})
    video = otio.schema.Track(name="Video", kind=otio.schema.TrackKind.Video)
    position = 0
    for scene in scenes:
        video.append(_clip(scene, rate))
        video.markers.append(
            otio.schema.Marker(
                name=f"scene {scene.index}",
                marked_range=_range(position, 0, rate),
                color=otio.schema.MarkerColor.YELLOW
                if scene.preview
                else otio.schema.MarkerColor.GREEN,
                metadata={METADATA_KEY: {"scene_index": scene.index, "preview": scene.preview}},
                comment=scene.prompt[:200],
            )
        )
        position += scene.frames
    timeline.tracks.append(video)
    if any(scene.has_audio for scene in scenes):
        audio = otio.schema.Track(name="Audio", kind=otio.schema.TrackKind.Audio)
        for scene in scenes:
            if scene.has_audio:
                audio.append(_clip(scene, rate))
            else:
                audio.append(otio.schema.Gap(source_range=_range(0, scene.frames, rate)))
        timeline.tracks.append(audio)
    return timeline


def relative_media(timeline: otio.schema.Timeline, folder: Path) -> otio.schema.Timeline:
    """A copy whose media URLs are POSIX paths relative to ``folder`` (where the .otio lives)."""
    result = timeline.deepcopy()
    for clip in result.find_clips():
        reference = clip.media_reference
        if isinstance(reference, otio.schema.ExternalReference):
            path = Path(otio.url_utils.filepath_from_url(reference.target_url))
            relative = Path(os.path.relpath(path, folder)).as_posix()
            reference.target_url = otio.url_utils.url_from_filepath(relative)
    return result


def write_timeline(
    timeline: otio.schema.Timeline,
    folder: Path,
    stem: str,
    formats: Sequence[str] = TIMELINE_FORMATS,
) -> dict[str, Path]:
    """Write ``folder/stem.<format>`` for each format, each replacing the previous one whole.

    ``timeline`` must reference its media by absolute file URL (``build_timeline`` does); the
    ``.otio`` gets relative paths, the bundles copy the media in.
    """
    unknown = sorted(set(formats) - set(TIMELINE_FORMATS))
    if unknown:
        raise ValueError(
            f"timeline formats {unknown} are not available; choose from {list(TIMELINE_FORMATS)}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in formats:
        target = folder / f"{stem}.{fmt}"
        if fmt == "otio":
            with atomic_path(target) as temporary:
                otio.adapters.write_to_file(
                    relative_media(timeline, folder), str(temporary), adapter_name="otio_json"
                )
        elif fmt == "otioz":
            with atomic_path(target) as temporary:
                otio.adapters.write_to_file(timeline, str(temporary), adapter_name="otioz")
        else:
            _write_folder_bundle(timeline, target)
        written[fmt] = target
    return written


def _write_folder_bundle(timeline: otio.schema.Timeline, target: Path) -> None:
    """An ``.otiod`` folder, built beside the target and swapped in by two renames."""
    building = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.part")
    retired = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.old")
    try:
        otio.adapters.write_to_file(timeline, str(building), adapter_name="otiod")
        if target.exists():
            target.rename(retired)
        building.rename(target)
    finally:
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)


def _clip(scene: TimelineScene, rate: float) -> otio.schema.Clip:
    reference = otio.schema.ExternalReference(
        target_url=otio.url_utils.url_from_filepath(str(scene.media.resolve())),
        available_range=_range(0, scene.media_frames or scene.frames, rate),
    )
    return otio.schema.Clip(
        name=f"scene {scene.index}",
        media_reference=reference,
        source_range=_range(0, scene.frames, rate),
        metadata={METADATA_KEY: scene.metadata()},
    )


def _range(start: int, duration: int, rate: float) -> otio.opentime.TimeRange:
    return otio.opentime.TimeRange(
        otio.opentime.RationalTime(start, rate), otio.opentime.RationalTime(duration, rate)
    )
