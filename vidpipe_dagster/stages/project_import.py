"""Import a project spec (YAML) into the database and media root, all or nothing.

Everything is validated before anything is written: YAML (no duplicate keys), schema, paths
(confined to the spec's folder), images (fully decoded, size-bounded). Media is copied
content-addressed, so re-importing unchanged files is a no-op and rows derived from unchanged
inputs (clean sheets, face embeddings, selected references, clips) survive a re-import. If the
database step fails, the files this import copied are removed again (``import_spec`` also covers
a failed commit).
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from vidpipe_dagster.db.media import MediaStore
from vidpipe_dagster.db.models import (
    Asset,
    Keyframe,
    Manifest,
    Project,
    Scene,
    SceneManifest,
)
from vidpipe_dagster.db.session import Database
from vidpipe_dagster.domain.catalog import ModelCatalog, packaged_catalog
from vidpipe_dagster.domain.media import (
    MediaError,
    confine,
    decode_image,
    read_image_bytes,
    sha256_bytes,
    sha256_file,
)
from vidpipe_dagster.domain.schemas import ProjectSpec, model_choice_problems


class SpecError(ValueError):
    """The spec cannot be imported; the message says what to fix. Nothing was changed."""


@dataclass(frozen=True)
class LoadedImage:
    source: Path
    data: bytes
    sha256: str
    suffix: str


class MediaCopies:
    """The files (and folders) one import adds to the media root, so that a failure can take
    exactly those back: files that were already there (same content) are never removed."""

    def __init__(self, store: MediaStore, slug: str) -> None:
        self.store = store
        self.folder = f"projects/{slug}/inputs"
        folders = ("projects", f"projects/{slug}", self.folder)
        self.new_folders = [f for f in folders if not store.path(f).exists()]
        self.written: list[str] = []

    def add(self, image: LoadedImage) -> str:
        """Copy ``image`` in (content-addressed); returns its relative path."""
        rel = f"{self.folder}/{image.sha256[:20]}{image.suffix}"
        target = self.store.path(rel)
        existed = target.is_file()
        if existed and sha256_file(target) == image.sha256:
            return rel
        self.store.write(rel, image.data)
        if not existed:
            self.written.append(rel)
        return rel

    def undo(self) -> None:
        """Remove what this import wrote (best effort: the original error is what matters)."""
        for rel in [*reversed(self.written), *reversed(self.new_folders)]:
            with suppress(OSError, MediaError):
                self.store.remove(rel)  # a folder only goes if it is empty
        self.written.clear()


@dataclass
class ImportSummary:
    slug: str
    created: bool
    scenes: int
    assets: int
    changed: list[str] = field(default_factory=list)
    media: MediaCopies | None = field(default=None, repr=False, compare=False)

    def undo_media(self) -> None:
        """Remove the files this import copied (the caller's commit failed)."""
        if self.media is not None:
            self.media.undo()

    def describe(self) -> str:
        verb = "created" if self.created else "updated"
        if self.created:
            return f"project {self.slug!r} created: {self.scenes} scenes, {self.assets} assets"
        changes = "; ".join(self.changed) if self.changed else "no input changed"
        return (
            f"project {self.slug!r} {verb}: {self.scenes} scenes, {self.assets} assets ({changes})"
        )


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {message}")
    return "invalid project spec:\n" + "\n".join(lines)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: object, line: int) -> None:
        super().__init__(f"duplicate key {key!r} on line {line}")
        self.key, self.line = key, line


class _SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the
    later value silently). Keys merged in with ``<<`` may still be overridden, as YAML says."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable: the base class reports it
                continue
            if duplicate:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


def _spec_file(spec_path: Path) -> Path:
    if spec_path.is_dir():
        found = sorted(p.name for p in spec_path.glob("*.y*ml"))[:3]
        hint = f" (it has {', '.join(found)})" if found else ""
        raise SpecError(
            f"{spec_path} is a directory; give the project's YAML file{hint}, "
            f"e.g. vidpipe-dagster import {spec_path / (found[0] if found else 'project.yaml')}"
        )
    if not spec_path.is_file():
        raise SpecError(f"spec file {spec_path} does not exist")
    return spec_path


def parse_spec(spec_path: Path) -> ProjectSpec:
    """Read and validate the YAML; errors name the field and say what is expected."""
    _spec_file(spec_path)
    try:
        raw = yaml.load(
            spec_path.read_text(encoding="utf-8"), Loader=_SpecLoader
        )  # safe: SafeLoader subclass
    except _DuplicateKey as exc:
        raise SpecError(
            f"{spec_path} line {exc.line}: key {exc.key!r} is given twice in the same mapping; "
            "keep one (YAML would silently use the later value)"
        ) from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{spec_path} is not valid YAML: {exc}") from exc
    except RecursionError:
        raise SpecError(
            f"{spec_path} nests too deeply to read; a project spec needs only a few levels "
            "(project, manifest.assets, scenes[].manifest.placements)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read {spec_path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{spec_path}: expected a mapping with 'project' and 'scenes' at the top")
    try:
        return ProjectSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format_validation_error(exc)) from exc
    except RecursionError:  # a deep structure under a field that accepts anything
        raise SpecError(f"{spec_path} nests too deeply to validate") from None


def _load_images(spec: ProjectSpec, spec_dir: Path) -> dict[str, LoadedImage]:
    """Every image the spec names, read and decoded; all problems reported together."""
    wanted: list[tuple[str, str]] = []
    if spec.manifest:
        wanted += [(f"manifest asset {a.id!r} image", a.image) for a in spec.manifest.assets]
    for scene in spec.scenes:
        for position, rel in (("start_frame", scene.start_frame), ("end_frame", scene.end_frame)):
            if rel:
                wanted.append((f"scene {scene.index} {position}", rel))
    loaded: dict[str, LoadedImage] = {}
    problems: list[str] = []
    for label, rel in wanted:
        if rel in loaded:
            continue
        try:
            path = confine(spec_dir, rel)
            data = read_image_bytes(path, label=label)
        except MediaError as exc:
            problems.append(f"  {label}: {exc}")
            continue
        fmt = (decode_image(data).format or "png").lower()
        suffix = {"jpeg": ".jpg"}.get(fmt, f".{fmt}")
        loaded[rel] = LoadedImage(path, data, sha256_bytes(data), suffix)
    if problems:
        raise SpecError("cannot import: bad image path(s) or file(s):\n" + "\n".join(problems))
    return loaded


def import_project(
    session: Session,
    spec_path: Path,
    media_root: Path | MediaStore,
    catalog: ModelCatalog | None = None,
) -> ImportSummary:
    """Validate ``spec_path`` fully (models, resolution and takes against ``catalog``, default
    the packaged one), copy its images, then upsert the project in the caller's transaction. On
    any failure here the copied files are removed; if the caller's commit fails, it calls
    ``summary.undo_media()`` (``import_spec`` does both)."""
    spec_path = spec_path.resolve()
    spec = parse_spec(spec_path)
    choices = model_choice_problems(spec, catalog or packaged_catalog())
    if choices:
        raise SpecError("invalid project spec:\n" + "\n".join(f"  {p}" for p in choices))
    images = _load_images(spec, spec_path.parent)
    slug = spec.project.slug
    store = media_root if isinstance(media_root, MediaStore) else MediaStore(media_root)
    copies: MediaCopies | None = None
    try:
        copies = MediaCopies(store, slug)
        stored = {rel: copies.add(img) for rel, img in images.items()}
    except (MediaError, OSError) as exc:  # a symlink in the media root, a full disk, ...
        if copies is not None:
            copies.undo()
        detail = exc if isinstance(exc, MediaError) else f"{exc.strerror or exc} ({exc.filename})"
        raise SpecError(f"cannot copy the images into the media root: {detail}") from exc
    except BaseException:
        if copies is not None:
            copies.undo()
        raise
    try:
        summary = _upsert(session, spec, images, stored)
    except BaseException:
        copies.undo()
        raise
    summary.media = copies
    return summary


def import_spec(
    database: Database,
    spec_path: Path,
    media_root: Path | MediaStore,
    catalog: ModelCatalog | None = None,
) -> ImportSummary:
    """Import and commit in one transaction; if anything fails, the commit included, the
    database is unchanged and the files this import copied are gone again."""
    summary: ImportSummary | None = None
    try:
        with database.session() as session:
            summary = import_project(session, spec_path, media_root, catalog)
    except BaseException:
        if summary is not None:
            summary.undo_media()
        raise
    return summary


def _upsert(
    session: Session,
    spec: ProjectSpec,
    images: dict[str, LoadedImage],
    stored: dict[str, str],
) -> ImportSummary:
    slug = spec.project.slug
    project = session.scalars(select(Project).where(Project.slug == slug)).one_or_none()
    created = project is None
    changed: list[str] = []
    if project is None:
        project = Project(slug=slug, name=spec.project.name)
        session.add(project)
    for attr in (
        "name",
        "target_clip_duration",
        "aspect_ratio",
        "video_model",
        "resolution",
        "takes",
        "identity_check",
        "owners",
    ):
        new = getattr(spec.project, attr)
        if not created and getattr(project, attr) != new:
            changed.append(f"{attr} changed")
        setattr(project, attr, new)
    if project.archived:  # importing is asking for the project: it shows in the graph again
        changed.append("unarchived")
    project.archived = False

    asset_count = _sync_manifest(session, project, spec, images, stored, changed)
    session.flush()
    _sync_scenes(session, project, spec, images, stored, changed)
    session.flush()
    return ImportSummary(slug, created, len(spec.scenes), asset_count, changed)


def _sync_manifest(
    session: Session,
    project: Project,
    spec: ProjectSpec,
    images: dict[str, LoadedImage],
    stored: dict[str, str],
    changed: list[str],
) -> int:
    if spec.manifest is None:
        if project.manifest is not None:
            changed.append("manifest removed")
        project.manifest = None
        return 0
    manifest = project.manifest
    if manifest is None:
        manifest = Manifest(name=spec.manifest.name)
        session.add(manifest)
        project.manifest = manifest
    manifest.name = spec.manifest.name
    session.flush()

    existing = {a.asset_key: a for a in manifest.assets}
    keep: dict[str, Asset] = {}
    for item in spec.manifest.assets:
        image = images[item.image]
        asset = existing.get(item.id)
        if asset is None:
            asset = Asset(manifest=manifest, asset_key=item.id)
            session.add(asset)
            changed.append(f"asset {item.id} added")
        elif asset.original_sha256 != image.sha256:
            changed.append(f"asset {item.id} image changed")
            asset.face_embedding = None  # derived from the old image
            for clean in asset.clean_references:  # stale: made from the old image
                clean.is_primary = False
        asset.manifest_tag = item.tag
        asset.asset_type = item.type
        asset.name = item.name
        asset.reference_image_url = stored[item.image]
        asset.original_sha256 = image.sha256
        asset.reverse_prompt = item.reverse_prompt
        asset.quality_score = item.quality_score
        asset.is_face_crop = item.face_crop_of is not None
        keep[item.id] = asset
    removed = {asset.id for key, asset in existing.items() if key not in keep}
    for asset in existing.values():  # unlink crops (kept or not) from removed sources first
        if asset.source_asset_id in removed:
            asset.source_asset_id = None
    session.flush()
    for key, asset in existing.items():
        if key not in keep:
            changed.append(f"asset {key} removed")
            manifest.assets.remove(asset)
    session.flush()
    for item in spec.manifest.assets:
        source = keep[item.face_crop_of].id if item.face_crop_of else None
        keep[item.id].source_asset_id = source
    return len(keep)


def _sync_scenes(
    session: Session,
    project: Project,
    spec: ProjectSpec,
    images: dict[str, LoadedImage],
    stored: dict[str, str],
    changed: list[str],
) -> None:
    scenes = {s.scene_index: s for s in project.scenes}
    scene_manifests = {
        sm.scene_index: sm
        for sm in session.scalars(
            select(SceneManifest).where(SceneManifest.project_id == project.id)
        )
    }
    wanted = {s.index for s in spec.scenes}
    for index, scene in scenes.items():
        if index not in wanted:
            changed.append(f"scene {index} removed")
            project.scenes.remove(scene)
    for index, sm in scene_manifests.items():
        if index not in wanted:
            session.delete(sm)

    for item in spec.scenes:
        scene = scenes.get(item.index)
        if scene is None:
            scene = Scene(scene_index=item.index, prompt=item.prompt)
            project.scenes.append(scene)
            changed.append(f"scene {item.index} added")
        elif scene.prompt != item.prompt:
            changed.append(f"scene {item.index} prompt changed")
        scene.prompt = item.prompt
        if item.index in scenes and scene.video_model != item.video_model:
            changed.append(f"scene {item.index} video_model changed")
        scene.video_model = item.video_model
        frames = {k.position: k for k in scene.keyframes}
        for position, rel in (("start", item.start_frame), ("end", item.end_frame)):
            frame = frames.get(position)
            if rel is None:
                if frame is not None:
                    scene.keyframes.remove(frame)
                continue
            if frame is None:
                frame = Keyframe(position=position, image_url="", content_sha256="")
                scene.keyframes.append(frame)
            elif frame.content_sha256 != images[rel].sha256:
                changed.append(f"scene {item.index} {position} keyframe changed")
            frame.image_url = stored[rel]
            frame.content_sha256 = images[rel].sha256

        sm = scene_manifests.get(item.index)
        if item.manifest is None:
            if sm is not None:
                session.delete(sm)
            continue
        manifest_json = item.manifest.model_dump(mode="json", exclude_none=True)
        manifest_json["scene_index"] = item.index
        if sm is None:
            sm = SceneManifest(
                project_id=project.id, scene_index=item.index, manifest_json=manifest_json
            )
            session.add(sm)
        elif sm.manifest_json != manifest_json:
            changed.append(f"scene {item.index} placements changed")
            sm.manifest_json = manifest_json
            sm.selected_reference_tags = None  # must be selected again
