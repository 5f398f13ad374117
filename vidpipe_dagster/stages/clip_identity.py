"""Clip identity for one scene, and the project's identity matrix (``domain.clip_identity``).

Reads the scene's stored clip and its placed CHARACTER tags, recognises each in frames sampled
across the clip with the configured face engine (references: each of the character's assets,
face crop first, as the clip stage sends it: its primary clean sheet, else the original photo),
saves one row per (clip, character) with the best-matching face crop under
``identity/<slug>/``, and reuses the rows while the clip's fingerprint and the engine are
unchanged. Local and free; a low score never regenerates anything (that is ``regenerate``).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sqlalchemy.orm import Session

from vidpipe_dagster.db import queries
from vidpipe_dagster.db.models import ClipIdentityScore, Project
from vidpipe_dagster.db.project_graphs import graph_name
from vidpipe_dagster.domain.clip_identity import (
    DEFAULT_SAMPLE_FRAMES,
    CharacterIdentity,
    CharacterReference,
    ClipIdentity,
    reference_from_images,
    score_clip_identity,
)
from vidpipe_dagster.domain.faces import FaceEngineStatus
from vidpipe_dagster.domain.identity import Box, DetectedFace, FaceEmbedding, FaceEngine, Metric
from vidpipe_dagster.domain.identity_matrix import render_identity_matrix
from vidpipe_dagster.domain.media import MediaError
from vidpipe_dagster.domain.render import animatic_reference_strip_box, probe_mp4
from vidpipe_dagster.domain.takes import TakeScore, scored_fingerprint
from vidpipe_dagster.stages.context import CheckOutcome, StageContext, StageError

CHECK_RECOGNISABLE = "characters_recognisable"


@dataclass(frozen=True)
class SceneIdentity:
    """One scene's clip identity: per character, with where its crop and reference live."""

    slug: str
    scene_index: int
    characters: tuple[CharacterIdentity, ...]
    engine_note: str
    cached: bool  # rows reused: same clip fingerprint, same engine
    clip_fingerprint: str | None = None
    crops: dict[str, str] = field(default_factory=dict)  # tag -> media-relative PNG
    references: dict[str, str] = field(default_factory=dict)  # tag -> image compared against
    note: str = ""  # why nothing was scored (no clip, no characters), if so
    problem: str | None = None  # scoring itself failed: then nothing is known, never a pass

    def failed(self) -> list[str]:
        return [c.tag for c in self.characters if c.status == "failed"]

    def unscored(self) -> list[str]:
        return [c.tag for c in self.characters if c.status == "not_scored"]


class RememberedFaces:
    """The engine, remembering the embedding of each reference image it has seen in this
    process (by content hash): a character's references are the same few images in every scene,
    and embedding them took about a quarter of a scene's scoring time in the demo."""

    KEPT = 128
    _known: ClassVar[OrderedDict[tuple[str, str, str], FaceEmbedding | None]] = OrderedDict()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, engine: FaceEngine) -> None:
        self._engine = engine
        self.name: str = engine.name
        self.metric: Metric = engine.metric
        self._where = str(getattr(engine, "pack_dir", "") or getattr(engine, "files", ""))

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        return self._engine.detect(rgb)

    def embed_face(self, image_bytes: bytes) -> FaceEmbedding | None:
        key = (self.name, self._where, hashlib.sha256(image_bytes).hexdigest())
        with self._lock:
            if key in self._known:
                self._known.move_to_end(key)
                return self._known[key]
        embedding = self._engine.embed_face(image_bytes)
        with self._lock:
            self._known[key] = embedding
            while len(self._known) > self.KEPT:
                self._known.popitem(last=False)
        return embedding


def placed_characters(ctx: StageContext, slug: str, scene_index: int) -> list[str]:
    """The scene's placed tags that name a CHARACTER in the manifest, in placement order."""
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        sm = queries.scene_manifest(session, project.id, scene_index)
        characters = _character_tags(project)
    return _placed(sm.manifest_json if sm else None, characters)


def _character_tags(project: Project) -> set[str]:
    assets = project.manifest.assets if project.manifest else []
    return {a.manifest_tag for a in assets if a.asset_type == "CHARACTER"}


def _placed(manifest_json: Any, characters: set[str]) -> list[str]:
    placements = (manifest_json or {}).get("placements", []) if manifest_json else []
    tags: list[str] = []
    for placement in placements:
        tag = placement.get("asset_tag") if isinstance(placement, dict) else None
        if tag in characters and tag not in tags:
            tags.append(tag)
    return tags


def stored_identities(
    session: Session, project: Project, asset_prefix: str
) -> dict[int, tuple[CharacterIdentity, ...]]:
    """Per scene with a finished clip, each placed character's identity in that clip, in
    placement order, from what the clip step recorded (a few queries for the whole project;
    nothing is scored here).
    A character without a score of this very clip is "not scored", saying why: never a pass,
    and never a number measured on another clip."""
    characters = _character_tags(project)
    manifests = queries.scene_manifests(session, project.id)
    clips = dict(queries.clips_in_scene_order(session, project.id))
    rows: dict[tuple[int, str], ClipIdentityScore] = {
        (index, row.character_tag): row
        for index, row in queries.project_clip_identities(session, project.id)
    }
    result: dict[int, tuple[CharacterIdentity, ...]] = {}
    for index, clip in clips.items():
        if clip is None or clip.status != "done":
            continue
        sm = manifests.get(index)
        cells = []
        for tag in _placed(sm.manifest_json if sm else None, characters):
            row = rows.get((index, tag))
            if row is None:
                why = f"not scored yet (materialize {asset_prefix}/scene_clip for this scene)"
            elif row.video_clip_id != clip.id or row.clip_fingerprint != scored_fingerprint(
                clip.fingerprint, clip.chosen_take
            ):
                why = f"scored on an older clip (materialize {asset_prefix}/scene_clip again)"
            else:
                cells.append(queries.identity_of_row(row))
                continue
            cells.append(
                CharacterIdentity(tag, "not_scored", why, None, None, None, None, None, 0, 0, 0)
            )
        if cells:
            result[index] = tuple(cells)
    return result


def reusable_scene_identities(
    ctx: StageContext, slug: str, scene_indexes: Sequence[int]
) -> dict[int, SceneIdentity]:
    """What ``score_scene_identity`` would reuse, for a run's scenes at once, in a fixed number
    of queries (a cached rerun reads this instead of about eleven statements per scene): each
    scene whose stored scores are those of its current clip on the current engine, or that
    places no character and has no scores to clear. Scenes left out are scored one by one."""
    status = ctx.models.face_engine()
    engine_name = status.engine.name if status.engine is not None else None
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        characters = _character_tags(project)
        manifests = queries.scene_manifests(session, project.id, scene_indexes)
        clips = {
            scene.scene_index: clip
            for scene, clip in queries.scenes_with_clips(session, project.id, scene_indexes)
            if clip is not None and clip.status == "done" and clip.file_url
        }
        rows_of = queries.clip_identity_rows_of(session, [c.id for c in clips.values()])
        placed = {
            index: _placed(
                manifests[index].manifest_json if index in manifests else None, characters
            )
            for index in clips
        }
        reference_images = _reference_images(
            session, project, sorted({t for tags in placed.values() for t in tags})
        )
    known: dict[int, SceneIdentity] = {}
    for index, clip in clips.items():
        tags, rows = placed[index], rows_of[clip.id]
        fingerprint = scored_fingerprint(clip.fingerprint, clip.chosen_take)
        if not tags:
            if not rows:
                note = "no CHARACTER is placed in this scene"
                known[index] = SceneIdentity(
                    slug, index, (), status.note, False, fingerprint, note=note
                )
            continue
        reused = _reused(
            slug, index, tags, rows, fingerprint, engine_name, status.note, reference_images
        )
        if reused is not None:
            known[index] = reused
    return known


def _reused(
    slug: str,
    index: int,
    tags: Sequence[str],
    rows: Sequence[ClipIdentityScore],
    fingerprint: str | None,
    engine_name: str | None,
    engine_note: str,
    reference_images: Mapping[str, list[tuple[str, str]]],
) -> SceneIdentity | None:
    """The scene's stored identity, when its rows are exactly its placed characters scored on
    this clip (``fingerprint``) by this engine; None: the scene must be scored."""
    if (
        not rows
        or sorted(r.character_tag for r in rows) != sorted(tags)
        or not all(r.clip_fingerprint == fingerprint and r.engine == engine_name for r in rows)
    ):
        return None
    by_tag = {r.character_tag: r for r in rows}
    return SceneIdentity(
        slug,
        index,
        tuple(queries.identity_of_row(by_tag[t]) for t in tags),
        engine_note,
        True,
        fingerprint,
        crops={t: r.best_frame_url for t, r in by_tag.items() if r.best_frame_url},
        references={t: reference_images[t][0][1] for t in tags if reference_images.get(t)},
    )


def score_scene_identity(
    ctx: StageContext,
    slug: str,
    scene_index: int,
    *,
    frames: int = DEFAULT_SAMPLE_FRAMES,
    force: bool = False,
) -> SceneIdentity:
    """Score (or reuse) the identity of every character placed in the scene's clip (its chosen
    take: the stored rows are keyed by ``domain.takes.scored_fingerprint``).

    Raises ``StageError`` when the clip file is missing or unreadable. A scene without a done
    clip or without placed characters returns an empty result with ``note`` saying so.
    """
    tags = placed_characters(ctx, slug, scene_index)
    status = ctx.models.face_engine()
    engine = status.engine
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        scene = queries.scene_of(session, project, scene_index)
        clip = scene.clip
        if clip is None or clip.status != "done" or not clip.file_url:
            return SceneIdentity(
                slug, scene_index, (), status.note, False, note="the scene has no finished clip"
            )
        clip_id, file_url = clip.id, clip.file_url
        fingerprint = scored_fingerprint(clip.fingerprint, clip.chosen_take)
        reference_count = len(clip.reference_tags or [])
        aspect_ratio = project.aspect_ratio
        rows = queries.clip_identity_rows(session, clip_id)
        reference_images = _reference_images(session, project, tags)
    if not tags:
        with ctx.database.session() as session:
            queries.delete_clip_identities_except(session, clip_id, [])
        return SceneIdentity(
            slug,
            scene_index,
            (),
            status.note,
            False,
            fingerprint,
            note="no CHARACTER is placed in this scene",
        )
    engine_name = engine.name if engine is not None else None
    reused = _reused(
        slug, scene_index, tags, rows, fingerprint, engine_name, status.note, reference_images
    )
    if reused is not None and not force:
        return reused

    path = ctx.media.path(file_url)
    if not path.is_file():
        raise StageError(f"scene {scene_index}: clip file {file_url} is missing; run clips again")
    references = _character_references(ctx, tags, reference_images, engine)
    try:
        identity = _score_file(path, references, status, aspect_ratio, reference_count, frames)
    except ValueError as exc:
        raise StageError(f"scene {scene_index}: clip {file_url} is not readable: {exc}") from exc
    crops = _save_identity(ctx, slug, scene_index, clip_id, identity, fingerprint, tags)
    for character in identity.characters:
        ctx.log.info(f"scene {scene_index}: {character.describe()}")
    return SceneIdentity(
        slug,
        scene_index,
        identity.characters,
        status.note,
        False,
        fingerprint,
        crops=crops,
        references={t: v[0][1] for t, v in reference_images.items() if v},
    )


def _reference_images(
    session: Session, project: Project, tags: Sequence[str]
) -> dict[str, list[tuple[str, str]]]:
    """Per character: (asset id, image the clip stage sends) of each of its assets, face crop
    first."""
    return {
        tag: [
            (a.asset_key, queries.chosen_reference(session, a).image_url or "")
            for a in queries.character_reference_assets(session, project, tag)
        ]
        for tag in tags
    }


def _character_references(
    ctx: StageContext,
    tags: Sequence[str],
    reference_images: Mapping[str, list[tuple[str, str]]],
    engine: FaceEngine | None,
) -> list[CharacterReference]:
    """Each character's reference embeddings (each image embedded once per process)."""
    if engine is None:
        return [CharacterReference(tag, ()) for tag in tags]
    references: list[CharacterReference] = []
    for tag in tags:
        images = []
        for key, url in reference_images[tag]:
            data = ctx.media.load(url) if url else None
            if data is not None:
                images.append((key, data))
        try:
            references.append(reference_from_images(RememberedFaces(engine), tag, images))
        except MediaError as exc:
            references.append(CharacterReference(tag, (), f"unreadable reference: {exc}"))
    return references


def _score_file(
    path: Path,
    references: Sequence[CharacterReference],
    status: FaceEngineStatus,
    aspect_ratio: str,
    reference_count: int,
    frames: int,
) -> ClipIdentity:
    """One mp4 scored against the references (ValueError: not a readable mp4)."""
    ignore: list[Box] = []
    if probe_mp4(path).is_animatic:  # its burned-in strip shows the references themselves
        box = animatic_reference_strip_box(aspect_ratio, reference_count)
        ignore = [box] if box else []
    return score_clip_identity(
        path,
        references,
        status.engine,
        engine_problem=status.problem,
        frames=frames,
        ignore_regions=ignore,
    )


def _save_identity(
    ctx: StageContext,
    slug: str,
    scene_index: int,
    clip_id: Any,
    identity: ClipIdentity,
    fingerprint: str | None,
    tags: Sequence[str],
) -> dict[str, str]:
    """Store each character's row (keyed by ``fingerprint``) and best-face crop; returns the
    crops' media paths by tag."""
    crops: dict[str, str] = {}
    for character in identity.characters:
        if character.best_frame_crop_png is not None:
            rel = f"identity/{slug}/scene_{scene_index}_{character.tag}.png"
            ctx.media.write(rel, character.best_frame_crop_png)
            crops[character.tag] = rel
    with ctx.database.session() as session:
        for character in identity.characters:
            queries.save_clip_identity(
                session,
                clip_id,
                character,
                clip_fingerprint=fingerprint,
                best_frame_url=crops.get(character.tag),
            )
        queries.delete_clip_identities_except(session, clip_id, list(tags))
    return crops


@dataclass(frozen=True)
class ScoredTakes:
    """Every take of a scene's clip scored once, and the face engine they were scored with."""

    scores: tuple[TakeScore, ...]
    identities: dict[int, ClipIdentity]  # take (1-based) -> its identity, when scored
    engine: str | None
    metric: Metric | None
    engine_problem: str | None
    tags: tuple[str, ...]


def score_takes(
    ctx: StageContext,
    slug: str,
    scene_index: int,
    take_urls: Sequence[str],
    reference_count: int,
    *,
    frames: int = DEFAULT_SAMPLE_FRAMES,
) -> ScoredTakes:
    """Score each take of a scene's clip against its placed characters, once each (the
    references are embedded once per process). Nothing is decoded without a face engine or
    without placed characters; a take that cannot be read is scored as a problem, not a pass."""
    tags = placed_characters(ctx, slug, scene_index)
    status = ctx.models.face_engine()
    engine = status.engine
    metric = engine.metric if engine is not None else None
    name = engine.name if engine is not None else None
    if engine is None or not tags:
        scores = tuple(TakeScore(i + 1) for i in range(len(take_urls)))
        return ScoredTakes(scores, {}, name, metric, status.problem, tuple(tags))
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        aspect_ratio = project.aspect_ratio
        reference_images = _reference_images(session, project, tags)
    references = _character_references(ctx, tags, reference_images, engine)
    scores_list: list[TakeScore] = []
    identities: dict[int, ClipIdentity] = {}
    for number, url in enumerate(take_urls, start=1):
        try:
            path = ctx.media.path(url)
            if not path.is_file():
                raise MediaError(f"take file {url} is missing")
            identity = _score_file(path, references, status, aspect_ratio, reference_count, frames)
        except (ValueError, OSError) as exc:  # MediaError and EngineMismatch included
            problem = " ".join(str(exc).split()) or type(exc).__name__
            scores_list.append(TakeScore(number, problem=problem))
            continue
        identities[number] = identity
        scores_list.append(TakeScore(number, identity.characters))
    return ScoredTakes(tuple(scores_list), identities, name, metric, status.problem, tuple(tags))


def save_take_identity(
    ctx: StageContext, slug: str, scene_index: int, take: int, identity: ClipIdentity
) -> bool:
    """Store the chosen take's scores as the clip's identity, so the clip step reuses them
    instead of scoring that take again. False when the clip row no longer has that take chosen
    (then nothing is written)."""
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        clip = queries.scene_of(session, project, scene_index).clip
        if clip is None or clip.status != "done" or (clip.chosen_take or 1) != take:
            return False
        clip_id = clip.id
        fingerprint = scored_fingerprint(clip.fingerprint, take)
    tags = [c.tag for c in identity.characters]
    _save_identity(ctx, slug, scene_index, clip_id, identity, fingerprint, tags)
    return True


def score_scene_identity_or_say_why(
    ctx: StageContext, slug: str, scene_index: int, *, frames: int = DEFAULT_SAMPLE_FRAMES
) -> SceneIdentity:
    """``score_scene_identity`` for a step that must go on: a clip that was paid for and probed
    fine is never failed because scoring it did not work. The problem is logged and returned in
    ``problem``, and each placed character is "not scored" with that reason (never a pass)."""
    try:
        return score_scene_identity(ctx, slug, scene_index, frames=frames)
    except Exception as exc:  # scoring is a local convenience beside a paid clip
        problem = " ".join(str(exc).split()) or type(exc).__name__
        ctx.log.warning(f"scene {scene_index}: identity not scored: {problem}")
        try:
            tags = placed_characters(ctx, slug, scene_index)
        except Exception:  # the database is gone as well: the problem says enough
            tags = []
        unscored = tuple(
            CharacterIdentity(t, "not_scored", problem, None, None, None, None, None, 0, 0, 0)
            for t in tags
        )
        return SceneIdentity(slug, scene_index, unscored, "", False, problem=problem)


def verdict(character: CharacterIdentity) -> str:
    """One character's verdict in the words the UI, ``status`` and the check share: "validated
    by dlib (distance 0.21 ≤ 0.62)", "rejected by dlib (distance 0.71 > 0.62)" (the median over
    the sampled frames, against the engine's clip threshold), or "not scored: <why>"."""
    score = character.median_score()
    if score is None:
        return f"not scored: {character.reason}" if character.reason else "not scored"
    return score.describe()


def identity_details(character: CharacterIdentity) -> dict[str, Any]:
    """One character's scores as the check, the final cut's timeline and ``status`` record them."""
    c = character
    return {
        "status": c.status,
        "verdict": verdict(c),
        "engine": c.engine,
        "metric": c.metric,
        "median": c.median,
        "best": c.best,
        "threshold": c.threshold,
        "frames_found": c.frames_found,
        "frames_sampled": c.frames_sampled,
    }


def identity_images(
    ctx: StageContext, result: SceneIdentity
) -> dict[str, tuple[bytes | None, bytes | None]]:
    """Per character: the best-matching face cropped from the clip and the reference image it
    was compared against (either None when there is none or its file is gone)."""
    fresh = {c.tag: c.best_frame_crop_png for c in result.characters if c.best_frame_crop_png}
    images: dict[str, tuple[bytes | None, bytes | None]] = {}
    for character in result.characters:
        crop = fresh.get(character.tag)
        if crop is None and character.tag in result.crops:
            crop = _load(ctx, result.crops[character.tag])
        reference = result.references.get(character.tag)
        images[character.tag] = (crop, _load(ctx, reference) if reference else None)
    return images


def _load(ctx: StageContext, relative: str) -> bytes | None:
    try:
        return ctx.media.load(relative)
    except MediaError:  # a symlink on the way: show nothing rather than fail the clip
        return None


def identity_check(result: SceneIdentity, *, blocking: bool = False) -> CheckOutcome:
    """``characters_recognisable``: fails when a placed character is not recognised or cannot be
    scored (never a silent pass); WARN by default, ERROR when the project makes it blocking."""
    severity = "error" if blocking else "warn"
    metadata = {c.tag: identity_details(c) for c in result.characters}
    if result.problem is not None:
        return CheckOutcome(
            CHECK_RECOGNISABLE,
            passed=False,
            severity=severity,
            description=f"not scored: {result.problem}",
            metadata=metadata,
        )
    if not result.characters:
        return CheckOutcome(
            CHECK_RECOGNISABLE,
            passed=True,
            severity=severity,
            description=f"not applicable: {result.note}",
        )
    lines = [c.describe() for c in result.characters]
    failed, unscored = result.failed(), result.unscored()
    if failed or unscored:
        problems = []
        if failed:
            problems.append(f"NOT recognised: {failed}")
        if unscored:
            problems.append(f"not scored: {unscored}")
        return CheckOutcome(
            CHECK_RECOGNISABLE,
            passed=False,
            severity=severity,
            description="; ".join(problems) + ". " + "; ".join(lines),
            metadata=metadata,
        )
    return CheckOutcome(
        CHECK_RECOGNISABLE,
        passed=True,
        severity=severity,
        description="; ".join(lines),
        metadata=metadata,
    )


def project_identity_matrix(
    ctx: StageContext, slug: str, scene_indexes: Sequence[int] | None = None
) -> bytes | None:
    """The identity matrix PNG of the project's current clips (None: no scene places a
    character): what the final cut shows (``identity_matrix``)."""
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        identities = stored_identities(session, project, graph_name(slug))
        scenes = [s.scene_index for s in project.scenes]
    if scene_indexes is not None:
        scenes = [i for i in scenes if i in scene_indexes]
    return identity_matrix(slug, scenes, identities)


def identity_matrix(
    slug: str, scenes: Sequence[int], identities: Mapping[int, Sequence[CharacterIdentity]]
) -> bytes | None:
    """Scenes by characters (in order of first appearance), one cell per placed character."""
    shown = [i for i in scenes if identities.get(i)]
    if not shown:
        return None
    characters: list[str] = []
    for index in shown:
        characters += [c.tag for c in identities[index] if c.tag not in characters]
    cells = {(f"scene {i}", c.tag): c for i in shown for c in identities[i]}
    return render_identity_matrix(
        [f"scene {i}" for i in scenes], characters, cells, title=f"Identity per scene: {slug}"
    )


def identity_problems(identities: Mapping[int, Sequence[CharacterIdentity]]) -> list[str]:
    """Each scene whose characters are not all recognised, in one line each (a blocking
    identity check holds the final cut back on these)."""
    return [
        f"scene {index}: " + "; ".join(c.describe() for c in cells if c.status != "passed")
        for index, cells in sorted(identities.items())
        if any(c.status != "passed" for c in cells)
    ]
