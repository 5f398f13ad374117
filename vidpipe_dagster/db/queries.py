"""The lookups every stage shares: a project by slug, a scene and its manifest, clean sheets,
the reference a selected asset sends, a scene's clip row. Each takes the caller's session.

The ``*_of_project`` / ``*_of_manifest`` forms read a whole project in one query each, for the
readers that look at every scene at once (``status``, the schedule's tick): their cost must not
grow with the number of scenes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vidpipe_dagster.db.models import (
    Asset,
    AssetCleanReference,
    CleanSheetFaceScore,
    ClipIdentityScore,
    GenerationLedger,
    Keyframe,
    Project,
    Scene,
    SceneManifest,
    VideoClip,
)
from vidpipe_dagster.domain.clip_identity import CharacterIdentity
from vidpipe_dagster.domain.faces import embedding_from_bytes, embedding_to_bytes
from vidpipe_dagster.domain.identity import FaceEmbedding, FaceScore, Metric
from vidpipe_dagster.domain.reference_selection import ChosenReference, select_references_for_scene


class NotFound(LookupError):
    """A row the caller named does not exist; the message says which and what exists."""


def project_by_slug(session: Session, slug: str) -> Project:
    project = session.scalars(select(Project).where(Project.slug == slug)).one_or_none()
    if project is None:
        known = ", ".join(session.scalars(select(Project.slug).order_by(Project.slug))) or "none"
        raise NotFound(f"no project {slug!r} (known: {known})")
    return project


def scene_of(session: Session, project: Project, index: int) -> Scene:
    scene = session.scalars(
        select(Scene).where(Scene.project_id == project.id, Scene.scene_index == index)
    ).one_or_none()
    if scene is None:
        known = ", ".join(str(s.scene_index) for s in project.scenes) or "none"
        raise NotFound(f"project {project.slug!r} has no scene {index} (scenes: {known})")
    return scene


def scene_manifest(session: Session, project_id: uuid.UUID, index: int) -> SceneManifest | None:
    return session.scalars(
        select(SceneManifest).where(
            SceneManifest.project_id == project_id, SceneManifest.scene_index == index
        )
    ).one_or_none()


# Up to this many scene indexes, reads for some scenes filter by index (``IN``); more read the
# whole project (as cheap by then, and within every backend's bound-parameter limit).
FEW_SCENES = 500


def _few(indexes: Sequence[int] | None) -> list[int] | None:
    return list(indexes) if indexes is not None and len(indexes) <= FEW_SCENES else None


def scene_manifests(
    session: Session, project_id: uuid.UUID, indexes: Sequence[int] | None = None
) -> dict[int, SceneManifest]:
    """Per scene index, its manifest row; ``indexes`` reads only those scenes' rows."""
    query = select(SceneManifest).where(SceneManifest.project_id == project_id)
    if (few := _few(indexes)) is not None:
        query = query.where(SceneManifest.scene_index.in_(few))
    rows = session.scalars(query)
    return {row.scene_index: row for row in rows}


def assets_of_tag(session: Session, project: Project, tag: str) -> list[Asset]:
    """Full bodies first, then face crops, each by asset id (the order sheets are made in)."""
    return list(
        session.scalars(
            select(Asset)
            .where(Asset.manifest_id == project.manifest_id, Asset.manifest_tag == tag)
            .order_by(Asset.is_face_crop, Asset.asset_key)
        )
    )


def primary_clean_sheet(session: Session, asset_id: uuid.UUID) -> AssetCleanReference | None:
    """The asset's primary clean sheet, if any (the clean-sheet stage keeps at most one)."""
    return session.scalars(
        select(AssetCleanReference)
        .where(AssetCleanReference.asset_id == asset_id, AssetCleanReference.is_primary.is_(True))
        .order_by(AssetCleanReference.created_at.desc())
        .limit(1)
    ).first()


def primary_counts(session: Session, asset_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many primary clean sheets each asset has (the stage keeps exactly one, or none)."""
    rows = session.execute(
        select(AssetCleanReference.asset_id, func.count())
        .where(
            AssetCleanReference.asset_id.in_(list(asset_ids)),
            AssetCleanReference.is_primary.is_(True),
        )
        .group_by(AssetCleanReference.asset_id)
    ).all()
    counts = dict.fromkeys(asset_ids, 0)
    counts.update({asset_id: int(n) for asset_id, n in rows})
    return counts


def chosen_reference(session: Session, asset: Asset) -> ChosenReference:
    """The image a selected asset sends: its primary clean sheet, else its original photo."""
    return reference_of(asset, primary_clean_sheet(session, asset.id))


def reference_of(asset: Asset, clean: AssetCleanReference | None) -> ChosenReference:
    """``chosen_reference`` from an already loaded primary clean sheet (or None)."""
    return ChosenReference(
        tag=asset.manifest_tag,
        asset_key=asset.asset_key,
        face_crop=bool(asset.is_face_crop),
        image_url=clean.clean_image_url if clean else asset.reference_image_url,
        source=clean.tier if clean else "original",
    )


def current_selection(session: Session, project: Project, index: int) -> list[Asset] | None:
    """The assets the manifest selects for a scene today (``domain.reference_selection``), or None
    for a scene without placements. Every stage that needs the selection asks here."""
    if project.manifest is None:
        return []
    row = scene_manifest(session, project.id, index)
    if row is None:
        return None
    return select_references_for_scene(row.manifest_json or {}, project.manifest.assets)


def clip_row(session: Session, scene_id: uuid.UUID) -> VideoClip:
    """The scene's clip row, created (pending) when it has none yet."""
    clip = session.scalars(select(VideoClip).where(VideoClip.scene_id == scene_id)).one_or_none()
    if clip is None:
        clip = VideoClip(scene_id=scene_id)
        session.add(clip)
    return clip


def clip_of_scene(session: Session, scene_id: uuid.UUID) -> VideoClip | None:
    """The scene's clip row, or None (unlike ``clip_row``, never creates one)."""
    return session.scalars(select(VideoClip).where(VideoClip.scene_id == scene_id)).one_or_none()


def clips_in_scene_order(
    session: Session, project_id: uuid.UUID
) -> list[tuple[int, VideoClip | None]]:
    return [
        (index, clip)
        for index, clip in session.execute(
            select(Scene.scene_index, VideoClip)
            .outerjoin(VideoClip, VideoClip.scene_id == Scene.id)
            .where(Scene.project_id == project_id)
            .order_by(Scene.scene_index)
        ).all()
    ]


def clip_states(session: Session, slug: str) -> dict[str, tuple[str | None, str | None]]:
    """Per scene key: (clip status, clip fingerprint), both None for a scene never generated."""
    rows = session.execute(
        select(Scene.scene_index, VideoClip.status, VideoClip.fingerprint)
        .join(Project, Project.id == Scene.project_id)
        .outerjoin(VideoClip, VideoClip.scene_id == Scene.id)
        .where(Project.slug == slug)
    ).all()
    return {str(index): (status, fingerprint) for index, status, fingerprint in rows}


def latest_image_model(session: Session, slug: str, asset_key: str) -> str | None:
    """The model of an asset's newest finished Tier 3 request (None: no ledger record)."""
    return session.scalars(
        select(GenerationLedger.model)
        .where(
            GenerationLedger.kind == "image",
            GenerationLedger.project_slug == slug,
            GenerationLedger.subject == asset_key,
            GenerationLedger.state == "done",
        )
        .order_by(GenerationLedger.created_at.desc())
        .limit(1)
    ).first()


def project_slugs(session: Session) -> list[str]:
    return list(session.scalars(select(Project.slug).order_by(Project.slug)))


# --- face identity: engine-tagged embeddings, Tier 3 face scores, clip identity ----------------


def stored_face_embedding(asset: Asset) -> FaceEmbedding | None:
    """The asset's stored embedding with its engine and metric (None: none stored)."""
    if asset.face_embedding is None or not asset.face_embedding_engine:
        return None
    return FaceEmbedding(
        embedding_from_bytes(asset.face_embedding),
        asset.face_embedding_engine,
        cast(Metric, asset.face_embedding_metric or "cosine"),
    )


def set_face_embedding(session: Session, asset_id: uuid.UUID, embedding: FaceEmbedding) -> None:
    """Store an asset's embedding together with the engine and metric that made it."""
    asset = session.get(Asset, asset_id)
    if asset is None:
        raise NotFound(f"no asset with id {asset_id}")
    asset.face_embedding = embedding_to_bytes(embedding.vector)
    asset.face_embedding_engine = embedding.engine
    asset.face_embedding_metric = embedding.metric


def record_clean_sheet_face_score(
    session: Session, clean_reference_id: uuid.UUID, score: FaceScore, try_number: int | None
) -> None:
    """The score that validated a Tier 3 sheet, on its engine's scale (one row per sheet)."""
    session.add(
        CleanSheetFaceScore(
            clean_reference_id=clean_reference_id,
            engine=score.engine,
            metric=score.metric,
            score=score.value,
            threshold=score.threshold,
            passed=score.passed,
            try_number=try_number,
        )
    )


def clean_sheet_face_scores(
    session: Session, clean_reference_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, FaceScore]:
    """The face score of each of these clean sheets that has one (Tier 3, validated)."""
    if not clean_reference_ids:
        return {}
    rows = session.scalars(
        select(CleanSheetFaceScore).where(
            CleanSheetFaceScore.clean_reference_id.in_(list(clean_reference_ids))
        )
    )
    return {
        row.clean_reference_id: FaceScore(
            row.engine, cast(Metric, row.metric), row.score, row.threshold, row.passed
        )
        for row in rows
    }


def character_reference_assets(session: Session, project: Project, tag: str) -> list[Asset]:
    """A character's assets to recognise it by: face crops first, then full bodies (the face
    crop shows the face largest). Empty for a tag that is not a CHARACTER."""
    return [
        a
        for a in sorted(
            assets_of_tag(session, project, tag), key=lambda a: (not a.is_face_crop, a.asset_key)
        )
        if a.asset_type == "CHARACTER"
    ]


def save_clip_identity(
    session: Session,
    clip_id: uuid.UUID,
    character: CharacterIdentity,
    *,
    clip_fingerprint: str | None,
    best_frame_url: str | None,
) -> ClipIdentityScore:
    """Insert or update the (clip, character) identity row."""
    row = session.scalars(
        select(ClipIdentityScore).where(
            ClipIdentityScore.video_clip_id == clip_id,
            ClipIdentityScore.character_tag == character.tag,
        )
    ).one_or_none()
    if row is None:
        row = ClipIdentityScore(video_clip_id=clip_id, character_tag=character.tag)
        session.add(row)
    row.status = character.status
    row.reason = character.reason
    row.engine = character.engine
    row.metric = character.metric
    row.best_score = character.best
    row.median_score = character.median
    row.threshold = character.threshold
    row.passed = character.passed
    row.frames_found = character.frames_found
    row.frames_matched = character.frames_matched
    row.frames_sampled = character.frames_sampled
    row.best_frame_time = character.best_frame_time
    row.best_frame_url = best_frame_url
    row.clip_fingerprint = clip_fingerprint
    return row


def delete_clip_identities_except(
    session: Session, clip_id: uuid.UUID, keep_tags: Sequence[str]
) -> None:
    """Drop identity rows of characters no longer placed in the scene."""
    for row in session.scalars(
        select(ClipIdentityScore).where(ClipIdentityScore.video_clip_id == clip_id)
    ):
        if row.character_tag not in keep_tags:
            session.delete(row)


def clip_identity_rows(session: Session, clip_id: uuid.UUID) -> list[ClipIdentityScore]:
    return list(
        session.scalars(
            select(ClipIdentityScore)
            .where(ClipIdentityScore.video_clip_id == clip_id)
            .order_by(ClipIdentityScore.character_tag)
        )
    )


def clip_identity_rows_of(
    session: Session, clip_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[ClipIdentityScore]]:
    """Per clip, its stored identity rows by character tag (one query for a run's clips)."""
    rows: dict[uuid.UUID, list[ClipIdentityScore]] = {clip_id: [] for clip_id in clip_ids}
    if not clip_ids:
        return rows
    query = (
        select(ClipIdentityScore)
        .where(ClipIdentityScore.video_clip_id.in_(list(clip_ids)))
        .order_by(ClipIdentityScore.character_tag)
    )
    for row in session.scalars(query):
        rows[row.video_clip_id].append(row)
    return rows


def identity_of_row(row: ClipIdentityScore) -> CharacterIdentity:
    """A stored row as the domain value (without the crop's bytes: ``best_frame_url`` has it)."""
    return CharacterIdentity(
        tag=row.character_tag,
        status=cast(Any, row.status),
        reason=row.reason or "",
        engine=row.engine,
        metric=cast(Metric | None, row.metric),
        threshold=row.threshold,
        best=row.best_score,
        median=row.median_score,
        frames_found=row.frames_found,
        frames_matched=row.frames_matched,
        frames_sampled=row.frames_sampled,
        best_frame_time=row.best_frame_time,
    )


def project_clip_identities(
    session: Session, project_id: uuid.UUID
) -> list[tuple[int, ClipIdentityScore]]:
    """Every stored (scene index, identity row) of a project's clips, in scene then tag order."""
    return [
        (index, row)
        for index, row in session.execute(
            select(Scene.scene_index, ClipIdentityScore)
            .join(VideoClip, VideoClip.scene_id == Scene.id)
            .join(ClipIdentityScore, ClipIdentityScore.video_clip_id == VideoClip.id)
            .where(Scene.project_id == project_id)
            .order_by(Scene.scene_index, ClipIdentityScore.character_tag)
        ).all()
    ]


def clean_sheets_of_manifest(
    session: Session, manifest_id: uuid.UUID | None
) -> dict[uuid.UUID, list[AssetCleanReference]]:
    """Every clean sheet of a manifest's assets in one query, per asset, oldest first (the order of
    ``Asset.clean_references``)."""
    if manifest_id is None:
        return {}
    rows = session.scalars(
        select(AssetCleanReference)
        .join(Asset, Asset.id == AssetCleanReference.asset_id)
        .where(Asset.manifest_id == manifest_id)
        .order_by(AssetCleanReference.created_at)
    )
    sheets: dict[uuid.UUID, list[AssetCleanReference]] = {}
    for row in rows:
        sheets.setdefault(row.asset_id, []).append(row)
    return sheets


def primary_clean_sheets(
    session: Session, manifest_id: uuid.UUID | None
) -> dict[uuid.UUID, AssetCleanReference]:
    """Each asset's primary clean sheet (as ``primary_clean_sheet``: the newest primary), for a
    whole manifest in one query; assets without one are absent."""
    if manifest_id is None:
        return {}
    rows = session.scalars(
        select(AssetCleanReference)
        .join(Asset, Asset.id == AssetCleanReference.asset_id)
        .where(Asset.manifest_id == manifest_id, AssetCleanReference.is_primary.is_(True))
        .order_by(AssetCleanReference.created_at.desc())
    )
    primaries: dict[uuid.UUID, AssetCleanReference] = {}
    for row in rows:
        primaries.setdefault(row.asset_id, row)
    return primaries


def scenes_with_clips(
    session: Session, project_id: uuid.UUID, indexes: Sequence[int] | None = None
) -> list[tuple[Scene, VideoClip | None]]:
    """Every scene of a project (or those of ``indexes``) with its clip row (None: never
    generated), in scene order."""
    query = (
        select(Scene, VideoClip)
        .outerjoin(VideoClip, VideoClip.scene_id == Scene.id)
        .where(Scene.project_id == project_id)
        .order_by(Scene.scene_index)
    )
    if (few := _few(indexes)) is not None:
        query = query.where(Scene.scene_index.in_(few))
    return [(scene, clip) for scene, clip in session.execute(query).all()]


def keyframes_of_project(
    session: Session, project_id: uuid.UUID, indexes: Sequence[int] | None = None
) -> dict[int, dict[str, Keyframe]]:
    """Per scene index (all, or those of ``indexes``), its keyframes by position
    (``start``/``end``), in one query."""
    query = (
        select(Scene.scene_index, Keyframe)
        .join(Keyframe, Keyframe.scene_id == Scene.id)
        .where(Scene.project_id == project_id)
    )
    if (few := _few(indexes)) is not None:
        query = query.where(Scene.scene_index.in_(few))
    frames: dict[int, dict[str, Keyframe]] = {}
    for index, frame in session.execute(query).all():
        frames.setdefault(index, {})[frame.position] = frame
    return frames


def current_selections(
    session: Session, project: Project, indexes: Sequence[int]
) -> dict[int, tuple[list[Asset] | None, SceneManifest | None]]:
    """``current_selection`` for many scenes at once, with each scene's manifest row (whose
    ``selected_reference_tags`` is the persisted selection): two queries whatever the count."""
    rows = scene_manifests(session, project.id, indexes)
    if project.manifest is None:
        return {index: ([], rows.get(index)) for index in indexes}
    assets = list(project.manifest.assets)
    selections: dict[int, tuple[list[Asset] | None, SceneManifest | None]] = {}
    for index in indexes:
        row = rows.get(index)
        picks = (
            None if row is None else select_references_for_scene(row.manifest_json or {}, assets)
        )
        selections[index] = (picks, row)
    return selections
