"""Pydantic schemas: the scene manifest (composition + placements) and the project spec YAML.

The project spec is a public interface (README, "Project spec"); keep it backwards compatible.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vidpipe_dagster.domain.catalog import ModelCatalog
from vidpipe_dagster.domain.video_requests import DEFAULT_RESOLUTION

AssetType = Literal["CHARACTER", "ENVIRONMENT", "PROP", "VEHICLE"]
PlacementRole = Literal["subject", "interaction_target", "background"]
ShotType = Literal[
    "establishing",
    "wide_shot",
    "medium_shot",
    "close_up",
    "extreme_close_up",
    "two_shot",
    "over_the_shoulder",
]
AspectRatio = Literal["16:9", "9:16"]
IdentityCheck = Literal["warn", "block"]

# Matched with ``fullmatch`` (``$`` would let a trailing newline through, and a slug becomes a
# Dagster group name, an asset key and a folder name).
SLUG_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
ASSET_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,80}")
TAG_PATTERN = re.compile(r"[A-Za-z0-9_]{1,40}")
# Scene indexes are an INTEGER column (32-bit on PostgreSQL) and Dagster partition keys.
MAX_SCENE_INDEX = 2**31 - 1
# What Dagster accepts as an asset owner: an email address or a team name after "team:"
EMAIL_PATTERN = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,7}")


def is_valid_slug(value: str) -> bool:
    return SLUG_PATTERN.fullmatch(value) is not None


def is_valid_owner(value: str) -> bool:
    """An owner Dagster shows (and accepts): ``someone@studio.example`` or ``team:editorial``."""
    return EMAIL_PATTERN.fullmatch(value) is not None or (
        value.startswith("team:") and len(value) > 5 and value.isprintable()
    )


def is_valid_tag(value: str) -> bool:
    return TAG_PATTERN.fullmatch(value) is not None


def _media_path(value: str | None) -> str | None:
    """An image path as written in the spec: not empty, no NUL byte (checked before any file is
    touched, so the message names the field)."""
    if value is None:
        return None
    if not value.strip():
        raise ValueError(
            "is empty; give the image's path relative to the YAML file, or leave it out"
        )
    if "\0" in value:
        raise ValueError("contains a NUL byte; give a plain relative path")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SceneComposition(_Strict):
    shot_type: ShotType = "medium_shot"
    camera_movement: str = "static"
    focal_point: str | None = None


class AssetPlacement(_Strict):
    asset_tag: str = Field(min_length=1, max_length=40)
    role: PlacementRole
    position: str | None = None
    action: str | None = None
    expression: str | None = None
    wardrobe_notes: str | None = None


class SceneManifestSchema(_Strict):
    """What a scene shows: its composition and which manifest tags appear in which role.

    Placements may name tags the manifest lacks (new-asset declarations): they are kept, and
    reference selection skips them.
    """

    scene_index: int | None = Field(default=None, ge=0, le=MAX_SCENE_INDEX)
    composition: SceneComposition = SceneComposition()
    placements: list[AssetPlacement] = []


class ProjectInfo(_Strict):
    slug: str
    name: str = Field(min_length=1, max_length=200)
    target_clip_duration: int = Field(default=8, ge=1, le=60)
    aspect_ratio: AspectRatio = "16:9"
    video_model: str = "veo-3.1-generate-001"
    resolution: str = DEFAULT_RESOLUTION  # what the model offers: the model catalog decides
    takes: int = Field(default=1, ge=1)  # videos per scene request; the model's maximum applies
    # warn: a clip whose characters are not recognised gets a WARN check; block: an ERROR check
    # that is blocking, so the final cut waits until the clip is regenerated or accepted
    identity_check: IdentityCheck = "warn"
    # who to ask about the project's assets in the UI; omitted: the project's own team
    owners: list[str] | None = Field(default=None, min_length=1, max_length=20)

    @field_validator("owners")
    @classmethod
    def _owners(cls, value: list[str] | None) -> list[str] | None:
        for owner in value or []:
            if not is_valid_owner(owner):
                raise ValueError(
                    f"owner {owner!r} must be an email address or a team name after 'team:' "
                    "(e.g. team:editorial)"
                )
        if value is not None and len(set(value)) != len(value):
            raise ValueError("owners must not repeat a name")
        return value

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not is_valid_slug(value):
            raise ValueError(
                f"slug {value!r} must be 1-63 lowercase letters, digits or '-', not starting "
                "with '-' (nothing else, not even a trailing newline)"
            )
        return value


class ManifestAssetSpec(_Strict):
    id: str
    tag: str
    type: AssetType
    name: str | None = Field(default=None, max_length=200)
    image: str
    reverse_prompt: str | None = None
    quality_score: float | None = Field(default=None, ge=0, le=10)
    face_crop_of: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if ASSET_ID_PATTERN.fullmatch(value) is None:
            raise ValueError(f"id {value!r} must be 1-80 letters, digits, '_', '.' or '-'")
        return value

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if not is_valid_tag(value):
            raise ValueError(f"tag {value!r} must be 1-40 letters, digits or '_'")
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        return _media_path(value) or value


class ManifestSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    assets: list[ManifestAssetSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _references_resolve(self) -> ManifestSpec:
        ids = [asset.id for asset in self.assets]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate asset id(s): {', '.join(duplicates)}")
        for asset in self.assets:
            if asset.face_crop_of is None:
                continue
            if asset.face_crop_of == asset.id:
                raise ValueError(f"asset {asset.id!r}: face_crop_of names itself")
            if asset.face_crop_of not in ids:
                raise ValueError(
                    f"asset {asset.id!r}: face_crop_of {asset.face_crop_of!r} names no asset "
                    f"(known ids: {', '.join(ids)})"
                )
        # A face crop belongs to a full-body photo: naming another crop (or a cycle of crops)
        # would leave the crop with no full body to fall back on in reference selection.
        crops = {a.id: a.face_crop_of for a in self.assets if a.face_crop_of is not None}
        for asset_id, source in crops.items():
            if source in crops:
                raise ValueError(
                    f"asset {asset_id!r}: face_crop_of {source!r} is itself a face crop (of "
                    f"{crops[source]!r}); name the full-body asset instead"
                )
        return self


class SceneSpec(_Strict):
    index: int = Field(ge=0, le=MAX_SCENE_INDEX)
    prompt: str = Field(min_length=1)
    start_frame: str | None = None
    end_frame: str | None = None
    manifest: SceneManifestSchema | None = None
    video_model: str | None = None  # this scene's model instead of the project's

    @field_validator("start_frame", "end_frame")
    @classmethod
    def _frame_path(cls, value: str | None) -> str | None:
        return _media_path(value)


class ProjectSpec(_Strict):
    """The whole YAML file: one project, its optional manifest, its scenes."""

    project: ProjectInfo
    manifest: ManifestSpec | None = None
    scenes: list[SceneSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_scene_indexes(self) -> ProjectSpec:
        indexes = [scene.index for scene in self.scenes]
        duplicates = sorted({i for i in indexes if indexes.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate scene index(es): {', '.join(map(str, duplicates))}")
        return self


def model_choice_problems(
    spec: ProjectSpec, catalog: ModelCatalog, *, today: date | None = None
) -> list[str]:
    """Why the spec's models, resolution or takes cannot be used, one line each naming the field
    and the catalog's reason: a retired, unknown or not-yet-known model, a resolution the model
    lacks, more takes than it makes. Each scene's override is checked with the project's
    resolution and takes."""
    info = spec.project
    problems = [
        f"project.{field}: {reason}"
        for field, reason in _choice_reasons(
            catalog, info.video_model, info.resolution, info.takes, today
        )
    ]
    for position, scene in enumerate(spec.scenes):
        if scene.video_model is None:
            continue
        for field, reason in _choice_reasons(
            catalog, scene.video_model, info.resolution, info.takes, today
        ):
            where = (
                "video_model" if field == "video_model" else f"video_model (with project.{field})"
            )
            problems.append(f"scenes.{position}.{where} (scene {scene.index}): {reason}")
    return problems


def _choice_reasons(
    catalog: ModelCatalog, model: str, resolution: str, takes: int, today: date | None
) -> list[tuple[str, str]]:
    """(field, reason) for the model alone first, then its resolution and takes."""
    alone = catalog.video_choice_problems(model, today=today)
    if alone:
        return [("video_model", reason) for reason in alone]
    return [
        ("resolution", reason)
        for reason in catalog.video_choice_problems(model, resolution=resolution, today=today)
    ] + [
        ("takes", reason)
        for reason in catalog.video_choice_problems(model, takes=takes, today=today)
    ]
