"""SQLAlchemy 2.0 typed models: the system of record for projects, references, clips and spend.

Media paths are stored relative to the media root (see ``domain.media``) so a ``VIDPIPE_HOME`` can
move, and so every read goes through the one function that confines paths to that root.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base; Alembic reads ``Base.metadata``."""


class Manifest(Base):
    """A cast list: the characters, props and environments a project's scenes may reference."""

    __tablename__ = "manifests"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())

    assets: Mapped[list[Asset]] = relationship(
        back_populates="manifest", cascade="all, delete-orphan", order_by="Asset.asset_key"
    )


class Project(Base):
    """A video project: a storyboard of scenes, optionally with a manifest."""

    __tablename__ = "projects"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    slug: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(200))
    target_clip_duration: Mapped[int] = mapped_column(Integer, default=8)
    aspect_ratio: Mapped[str] = mapped_column(String(8), default="16:9")
    video_model: Mapped[str] = mapped_column(String(80), default="veo-3.1-generate-001")
    resolution: Mapped[str] = mapped_column(String(8), default="720p", server_default="720p")
    takes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # videos per scene
    # "warn" or "block": whether characters_recognisable failing stops the final cut
    identity_check: Mapped[str] = mapped_column(String(8), default="warn", server_default="warn")
    # Dagster owners of the project's assets (emails or "team:name"); None: the project's team
    owners: Mapped[Optional[list[str]]] = mapped_column(JSON, nullable=True)
    manifest_id: Mapped[Optional[uuid.UUID]] = mapped_column(
        ForeignKey("manifests.id"), nullable=True
    )
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, server_default=func.now(), onupdate=func.now()
    )

    manifest: Mapped[Optional[Manifest]] = relationship()
    scenes: Mapped[list[Scene]] = relationship(
        back_populates="project", cascade="all, delete-orphan", order_by="Scene.scene_index"
    )


class Scene(Base):
    """One storyboard scene; ``scene_index`` is the Dagster partition key."""

    __tablename__ = "scenes"
    __table_args__ = (UniqueConstraint("project_id", "scene_index"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"), index=True)
    scene_index: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)
    # this scene's model instead of the project's (None: the project's)
    video_model: Mapped[Optional[str]] = mapped_column(String(80), nullable=True)

    project: Mapped[Project] = relationship(back_populates="scenes")
    keyframes: Mapped[list[Keyframe]] = relationship(
        back_populates="scene", cascade="all, delete-orphan", order_by="Keyframe.position"
    )
    clip: Mapped[Optional[VideoClip]] = relationship(
        back_populates="scene", cascade="all, delete-orphan", uselist=False
    )


class Keyframe(Base):
    """A start or end keyframe image of a scene."""

    __tablename__ = "keyframes"
    __table_args__ = (UniqueConstraint("scene_id", "position"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    scene_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("scenes.id"), index=True)
    position: Mapped[str] = mapped_column(String(8))  # "start" | "end"
    image_url: Mapped[str] = mapped_column(String(500))
    content_sha256: Mapped[str] = mapped_column(String(64))

    scene: Mapped[Scene] = relationship(back_populates="keyframes")


class Asset(Base):
    """A manifest entry with its original reference photo (never overwritten)."""

    __tablename__ = "assets"
    __table_args__ = (UniqueConstraint("manifest_id", "asset_key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    manifest_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("manifests.id"), index=True)
    asset_key: Mapped[str] = mapped_column(String(80))  # the spec's `id`, stable across imports
    manifest_tag: Mapped[str] = mapped_column(String(40), index=True)
    asset_type: Mapped[str] = mapped_column(String(20))
    name: Mapped[Optional[str]] = mapped_column(String(200), nullable=True)
    reference_image_url: Mapped[Optional[str]] = mapped_column(String(500), nullable=True)
    original_sha256: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    reverse_prompt: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    quality_score: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    is_face_crop: Mapped[bool] = mapped_column(Boolean, default=False)
    source_asset_id: Mapped[Optional[uuid.UUID]] = mapped_column(
        ForeignKey("assets.id"), nullable=True
    )
    face_embedding: Mapped[Optional[bytes]] = mapped_column(LargeBinary, nullable=True)
    # which face engine made ``face_embedding`` and on which scale it compares; embeddings of
    # different engines are never compared (``domain.identity``)
    face_embedding_engine: Mapped[Optional[str]] = mapped_column(String(20), nullable=True)
    face_embedding_metric: Mapped[Optional[str]] = mapped_column(String(20), nullable=True)

    manifest: Mapped[Manifest] = relationship(back_populates="assets")
    clean_references: Mapped[list[AssetCleanReference]] = relationship(
        cascade="all, delete-orphan", order_by="AssetCleanReference.created_at"
    )


class SceneManifest(Base):
    """A scene's composition and placements, and the references selected for it."""

    __tablename__ = "scene_manifests"
    __table_args__ = (UniqueConstraint("project_id", "scene_index"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("projects.id"), index=True)
    scene_index: Mapped[int] = mapped_column(Integer)
    manifest_json: Mapped[dict[str, Any]] = mapped_column(JSON)
    selected_reference_tags: Mapped[Optional[list[str]]] = mapped_column(JSON, nullable=True)


class AssetCleanReference(Base):
    """A clean reference image for an asset at one tier (the plan's ten columns, exactly)."""

    __tablename__ = "asset_clean_references"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    asset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("assets.id"), index=True)
    tier: Mapped[str] = mapped_column(String(20))  # 'tier2_rembg', 'tier3_gemini', ...
    clean_image_url: Mapped[str] = mapped_column(String(500))
    generation_prompt: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    face_similarity_score: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    quality_score: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)
    generation_cost: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())


class VideoClip(Base):
    """The generated clip of one scene (one row per scene, updated in place on regeneration)."""

    __tablename__ = "video_clips"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    scene_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("scenes.id"), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|done|failed
    backend: Mapped[Optional[str]] = mapped_column(String(20), nullable=True)
    file_url: Mapped[Optional[str]] = mapped_column(String(500), nullable=True)
    duration_seconds: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    conditioning_mode: Mapped[Optional[str]] = mapped_column(String(20), nullable=True)
    conditioning_reason: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    remediation_level: Mapped[int] = mapped_column(Integer, default=0)
    operation_name: Mapped[Optional[str]] = mapped_column(String(500), nullable=True)
    fingerprint: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    reference_tags: Mapped[Optional[list[str]]] = mapped_column(JSON, nullable=True)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)  # reused, no API call
    error: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    # Every take of the request (file_url is the chosen one), its 1-based index, and why it won
    take_urls: Mapped[Optional[list[str]]] = mapped_column(JSON, nullable=True)
    chosen_take: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    take_choice: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, server_default=func.now(), onupdate=func.now()
    )

    scene: Mapped[Scene] = relationship(back_populates="clip")


class GenerationLedger(Base):
    """One row per paid API request, written *before* the request is sent.

    The fingerprint identifies what the request would produce; a ``done`` row is reused, an
    ``in_flight`` row is resumed from its ``operation_name``, so nothing is paid for twice.
    States: submitting, in_flight, done, failed_unbilled, failed_billed, unknown (may have been
    billed: sent, but no operation name came back), result_lost (see ``db.ledger``).
    """

    __tablename__ = "generation_ledger"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # "video" | "image"
    model: Mapped[str] = mapped_column(String(80))
    backend: Mapped[str] = mapped_column(String(20))
    project_slug: Mapped[Optional[str]] = mapped_column(String(64), nullable=True, index=True)
    subject: Mapped[Optional[str]] = mapped_column(String(120), nullable=True)  # scene or asset
    state: Mapped[str] = mapped_column(String(20), default="submitting")
    operation_name: Mapped[Optional[str]] = mapped_column(String(500), nullable=True)
    billed: Mapped[bool] = mapped_column(Boolean, default=False)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    result_url: Mapped[Optional[str]] = mapped_column(String(500), nullable=True)
    # video requests: the resolution and number of takes asked for (what the price depends on)
    resolution: Mapped[Optional[str]] = mapped_column(String(8), nullable=True)
    takes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    details: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON, nullable=True)
    error: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, server_default=func.now(), onupdate=func.now()
    )


class CleanSheetFaceScore(Base):
    """The face score that validated a Tier 3 clean sheet, with its engine, metric and bar.

    ``AssetCleanReference.face_similarity_score`` holds the same value (the plan's ten columns);
    this row says which engine's scale it is on: insightface similarity or dlib distance.
    """

    __tablename__ = "clean_sheet_face_scores"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    clean_reference_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("asset_clean_references.id", ondelete="CASCADE"), unique=True
    )
    engine: Mapped[str] = mapped_column(String(20))  # "insightface" | "dlib"
    metric: Mapped[str] = mapped_column(String(20))  # "cosine" | "euclidean"
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column(Boolean)
    try_number: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())


class ClipIdentityScore(Base):
    """How recognisable one placed character is in a scene's clip (``domain.clip_identity``).

    Recomputed when the clip changes: ``clip_fingerprint`` is the clip's fingerprint it was
    computed from. ``status`` is passed, failed or not_scored (then ``reason`` says why).
    """

    __tablename__ = "clip_identity_scores"
    __table_args__ = (UniqueConstraint("video_clip_id", "character_tag"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    video_clip_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("video_clips.id", ondelete="CASCADE"), index=True
    )
    character_tag: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    engine: Mapped[Optional[str]] = mapped_column(String(20), nullable=True)
    metric: Mapped[Optional[str]] = mapped_column(String(20), nullable=True)
    best_score: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    median_score: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    threshold: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    passed: Mapped[Optional[bool]] = mapped_column(Boolean, nullable=True)
    frames_found: Mapped[int] = mapped_column(Integer, default=0)
    frames_matched: Mapped[int] = mapped_column(Integer, default=0)
    frames_sampled: Mapped[int] = mapped_column(Integer, default=0)
    best_frame_time: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    best_frame_url: Mapped[Optional[str]] = mapped_column(String(500), nullable=True)
    clip_fingerprint: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime, server_default=func.now(), onupdate=func.now()
    )
