"""The film: every scene's clip, in scene order, joined into one mp4, plus what an editor needs.

Beside ``projects/<slug>/final_cut.mp4`` (``domain.editorial``: stream copy when the clips allow
it, one re-encode otherwise, chapters at scene boundaries) the stage writes the editorial
timeline (``domain.timeline``: ``final_cut.otio`` and its bundles), a contact sheet
(``final_cut_contact_sheet.jpg``) and the identity matrix (``identity_matrix.png``: scenes by
characters, from the scores the clip step stored; ``stages.clip_identity``). What is missing is
named, with the asset to materialize, before anything is written. A project with
``identity_check: block`` is not cut while a scene's characters are not recognised.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vidpipe_dagster.db import queries
from vidpipe_dagster.domain.clip_identity import CharacterIdentity
from vidpipe_dagster.domain.editorial import (
    CONTACT_TILE_WIDTH,
    ClipMedia,
    CutResult,
    contact_sheet,
    cut_film,
    fps_text,
    inspect_clip,
)
from vidpipe_dagster.domain.media import MediaError
from vidpipe_dagster.domain.preview import is_preview_backend
from vidpipe_dagster.domain.render import Mp4Info, frame_at, probe_mp4
from vidpipe_dagster.domain.takes import scored_fingerprint
from vidpipe_dagster.domain.timeline import (
    TIMELINE_FORMATS,
    TimelineScene,
    build_timeline,
    write_timeline,
)
from vidpipe_dagster.stages.clip_identity import (
    identity_details,
    identity_matrix,
    identity_problems,
    stored_identities,
)
from vidpipe_dagster.stages.context import StageContext, StageError

CHAPTER_PROMPT_CHARS = 60


@dataclass(frozen=True)
class FinalCutOptions:
    """How to cut: ``height`` is the short side of a re-encode (never below the largest clip's);
    ``force_reencode`` re-encodes even clips that could be copied; ``timeline_formats`` are the
    OTIO files to write (the bundles copy every clip, so a studio short on disk may drop them)."""

    height: int | None = None
    force_reencode: bool = False
    timeline_formats: tuple[str, ...] = TIMELINE_FORMATS

    def __post_init__(self) -> None:
        unknown = sorted(set(self.timeline_formats) - set(TIMELINE_FORMATS))
        if unknown:
            raise StageError(
                f"timeline_formats: {unknown} are not available; choose from "
                f"{list(TIMELINE_FORMATS)}"
            )
        if self.height is not None and self.height < 2:
            raise StageError(f"height: {self.height} is not a frame height; give e.g. 720")


@dataclass(frozen=True)
class SceneMarker:
    """A scene boundary, as a chapter in the mp4 and a marker in the metadata and timeline."""

    scene: int
    start_seconds: float
    end_seconds: float
    title: str
    preview: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "scene": self.scene,
            "start_seconds": self.start_seconds,
            "end_seconds": self.end_seconds,
            "title": self.title,
            "preview": self.preview,
        }


@dataclass(frozen=True)
class FinalCut:
    relative_path: str
    info: Mp4Info
    mode: str  # "stream_copy" | "reencode"
    reason: str  # which path the cut took and why, one line
    scene_starts: dict[str, float]  # scene index -> start in seconds
    markers: list[SceneMarker]
    total_cost_usd: float
    contains_previews: bool
    fingerprints: list[str]
    timeline_paths: dict[str, str]  # format -> relative path
    contact_sheet_path: str
    contact_sheet: Image.Image
    # scenes x characters, coloured by score (None: no scene places a character)
    identity_matrix_path: str | None = None
    identity_summary: str | None = None  # e.g. "5 recognised, 1 NOT recognised, 2 not scored"
    notes: list[str] = field(default_factory=list)

    @property
    def data_version(self) -> str:
        clips = "-".join(f[:8] for f in self.fingerprints)[:110] or "empty"
        return f"{clips}-{'copy' if self.mode == 'stream_copy' else 'enc'}"


@dataclass(frozen=True)
class _Scene:
    """What the database knows about one scene's clip, read in one session."""

    index: int
    prompt: str
    file_url: str
    backend: str | None
    cost_usd: float
    fingerprint: str  # of the chosen take (another take is another clip: the cut changes)
    reference_tags: list[str]
    selected_tags: list[str] | None
    conditioning_mode: str | None
    identity: tuple[CharacterIdentity, ...] = ()  # each placed character, as stored for the clip
    take: int | None = None  # 1-based chosen take; None for clips from before takes


def make_final_cut(
    ctx: StageContext,
    slug: str,
    asset_prefix: str,
    options: FinalCutOptions | None = None,
) -> FinalCut:
    options = options or FinalCutOptions()
    scenes, aspect, name, blocking = _read_scenes(ctx, slug, asset_prefix)
    identities = {s.index: s.identity for s in scenes if s.identity}
    if blocking and (problems := identity_problems(identities)):
        raise StageError(
            f"cannot cut {slug}: identity_check is 'block' and characters are not recognised "
            f"in {'; '.join(problems)}. Regenerate those clips (a person's decision: "
            f"vidpipe-dagster regenerate {slug} --scene N, then materialize "
            f"{asset_prefix}/scene_clip), or accept them with identity_check: warn in the spec "
            "and import it again."
        )
    clips, frames = _inspect(ctx, slug, scenes, asset_prefix)
    matrix = identity_matrix(slug, [s.index for s in scenes], identities)
    previews = [is_preview_backend(s.backend) for s in scenes]
    sheet = contact_sheet(
        [
            (f"scene {s.index}", frame, preview)
            for s, frame, preview in zip(scenes, frames, previews, strict=True)
        ]
    )
    folder = f"projects/{slug}"
    rel, sheet_rel = f"{folder}/final_cut.mp4", f"{folder}/final_cut_contact_sheet.jpg"
    matrix_rel = f"{folder}/identity_matrix.png" if matrix is not None else None
    total_cost = round(sum(s.cost_usd for s in scenes), 4)
    try:  # the media root refuses a path through a symlink
        result = cut_film(
            clips,
            ctx.media.path(rel),
            titles=[_chapter_title(s) for s in scenes],
            names=[f"scene {s.index}" for s in scenes],
            aspect_ratio="9:16" if aspect == "9:16" else "16:9",
            height=options.height,
            force_reencode=options.force_reencode,
        )
        info = probe_mp4(result.path)
        ctx.log.info(f"final cut {rel}: {info.duration_seconds:.2f} s, {result.plan.reason}")
        timeline_paths = _write_timeline(
            ctx, name, slug, scenes, clips, result, previews, total_cost, options
        )
        buffer = io.BytesIO()
        sheet.save(buffer, format="JPEG", quality=88)
        ctx.media.write(sheet_rel, buffer.getvalue())
        if matrix is not None and matrix_rel is not None:
            ctx.media.write(matrix_rel, matrix)
    except MediaError as exc:
        raise StageError(f"cannot store the cut of {slug}: {exc}") from exc
    markers = [
        SceneMarker(s.index, start, round(start + length, 6), _chapter_title(s), preview)
        for s, start, length, preview in zip(
            scenes, result.starts, result.durations, previews, strict=True
        )
    ]
    return FinalCut(
        relative_path=rel,
        info=info,
        mode=result.plan.mode,
        reason=result.plan.reason,
        scene_starts={str(m.scene): round(m.start_seconds, 3) for m in markers},
        markers=markers,
        total_cost_usd=total_cost,
        contains_previews=any(previews),
        fingerprints=[s.fingerprint for s in scenes],
        timeline_paths=timeline_paths,
        contact_sheet_path=sheet_rel,
        contact_sheet=sheet,
        identity_matrix_path=matrix_rel,
        identity_summary=_identity_summary(identities),
    )


def _identity_summary(identities: dict[int, tuple[CharacterIdentity, ...]]) -> str | None:
    """How many (scene, character) cells were recognised, not recognised and not scored."""
    cells = [c for cells in identities.values() for c in cells]
    if not cells:
        return None
    counts = {
        label: sum(c.status == status for c in cells)
        for status, label in (
            ("passed", "recognised"),
            ("failed", "NOT recognised"),
            ("not_scored", "not scored"),
        )
    }
    return ", ".join(f"{n} {label}" for label, n in counts.items() if n) + (
        f" (scene x character, {len(identities)} scene(s) with characters)"
    )


def _read_scenes(
    ctx: StageContext, slug: str, asset_prefix: str
) -> tuple[list[_Scene], str, str, bool]:
    """Every scene's clip (all must be done), the aspect ratio, the project's name and whether
    its identity check blocks the cut."""
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        rows = queries.clips_in_scene_order(session, project.id)
        prompts = {scene.scene_index: scene.prompt for scene in project.scenes}
        manifests = queries.scene_manifests(session, project.id)
        missing = [
            f"scene {i} ({clip.status if clip else 'never generated'})"
            for i, clip in rows
            if clip is None or clip.status != "done" or not clip.file_url
        ]
        if missing:
            raise StageError(
                f"cannot cut {slug}: missing clips: {', '.join(missing)}. Materialize "
                f"{asset_prefix}/scene_clip for those scenes first."
            )
        identities = stored_identities(session, project, asset_prefix)
        scenes = [
            _Scene(
                index=index,
                prompt=prompts.get(index, ""),
                file_url=clip.file_url or "",
                backend=clip.backend,
                cost_usd=float(clip.cost_usd or 0.0),
                fingerprint=scored_fingerprint(clip.fingerprint, clip.chosen_take) or "",
                reference_tags=list(clip.reference_tags or []),
                selected_tags=(
                    list(manifests[index].selected_reference_tags)
                    if index in manifests and manifests[index].selected_reference_tags is not None
                    else None
                ),
                conditioning_mode=clip.conditioning_mode,
                identity=identities.get(index, ()),
                take=clip.chosen_take,
            )
            for index, clip in rows
            if clip is not None
        ]
        blocking = project.identity_check == "block"
        return scenes, project.aspect_ratio, project.name, blocking


def _inspect(
    ctx: StageContext, slug: str, scenes: Sequence[_Scene], asset_prefix: str
) -> tuple[list[ClipMedia], list[Image.Image]]:
    """Every clip's layout and its middle frame, before anything is written: a clip that cannot
    be read fails the cut naming its scene, and the previous cut stays as it was."""
    clips: list[ClipMedia] = []
    frames: list[Image.Image] = []
    problems: list[str] = []
    for scene in scenes:
        try:
            path = ctx.media.path(scene.file_url)
            if not path.is_file():
                raise MediaError(f"file {path} is missing")
            clip = inspect_clip(path)
            frames.append(frame_at(path, clip.duration_seconds / 2, width=CONTACT_TILE_WIDTH))
        except ValueError as exc:  # MediaError included
            problems.append(f"scene {scene.index} ({exc})")
            continue
        clips.append(clip)
    if problems:
        raise StageError(
            f"cannot cut {slug}: unusable clips: {'; '.join(problems)}. Materialize "
            f"{asset_prefix}/scene_clip for those scenes again."
        )
    return clips, frames


def _write_timeline(
    ctx: StageContext,
    name: str,
    slug: str,
    scenes: Sequence[_Scene],
    clips: Sequence[ClipMedia],
    result: CutResult,
    previews: Sequence[bool],
    total_cost: float,
    options: FinalCutOptions,
) -> dict[str, str]:
    if not options.timeline_formats:
        return {}
    rate = float(result.plan.rate)
    entries = [
        TimelineScene(
            index=scene.index,
            media=clip.path,
            frames=max(1, round(length * rate)),
            media_frames=max(1, round(clip.duration_seconds * rate)),
            prompt=scene.prompt,
            has_audio=clip.audio is not None,
            preview=preview,
            backend=scene.backend,
            references=scene.reference_tags,
            selected_references=scene.selected_tags,
            conditioning_mode=scene.conditioning_mode,
            cost_usd=scene.cost_usd,
            take=scene.take,
            identity_scores=_identity_scores(scene.identity),
            extra={"identity": _identity_details(scene.identity)} if scene.identity else {},
        )
        for scene, clip, length, preview in zip(
            scenes, clips, result.durations, previews, strict=True
        )
    ]
    timeline = build_timeline(
        name or slug,
        entries,
        rate=rate,
        metadata={
            "project": slug,
            "final_cut": result.path.name,
            "cut": result.plan.reason,
            "fps": fps_text(result.plan.rate),
            "total_cost_usd": total_cost,
        },
    )
    folder = ctx.media.path(f"projects/{slug}")
    written = write_timeline(timeline, folder, "final_cut", options.timeline_formats)
    return {fmt: ctx.media.relative(Path(path)) for fmt, path in written.items()}


def _identity_scores(cells: Sequence[CharacterIdentity]) -> dict[str, float] | None:
    """Each scored character's median score (on its engine's scale: ``identity`` in the same
    metadata names the engine, metric and threshold); None when nothing was scored."""
    scores = {c.tag: round(c.median, 4) for c in cells if c.median is not None}
    return scores or None


def _identity_details(cells: Sequence[CharacterIdentity]) -> dict[str, dict[str, Any]]:
    return {c.tag: identity_details(c) for c in cells}


def _chapter_title(scene: _Scene) -> str:
    prompt = " ".join(scene.prompt.split())
    if len(prompt) > CHAPTER_PROMPT_CHARS:
        prompt = prompt[: CHAPTER_PROMPT_CHARS - 1].rstrip() + "\u2026"
    title = f"Scene {scene.index}" + (f": {prompt}" if prompt else "")
    return title + (" (animatic preview)" if is_preview_backend(scene.backend) else "")
