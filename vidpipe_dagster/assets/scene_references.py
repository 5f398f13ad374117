"""``<project>/scene_references``: up to three reference images per scene, persisted for the UI."""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import dagster as dg
from sqlalchemy import select

from vidpipe_dagster.assets.partitions import ProjectPartitions, stage_key
from vidpipe_dagster.assets.per_partition import DATA_VERSION_TAG, per_partition_results
from vidpipe_dagster.db.models import Project, SceneManifest
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.domain.media import MediaError, markdown_gallery, read_image_bytes
from vidpipe_dagster.domain.reference_selection import (
    MAX_REFERENCES,
    ChosenReference,
    chosen_reference,
    select_references_for_scene,
)
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource

CHECK_AT_MOST_THREE = "at_most_three_references"
CHECK_TAGS_IN_MANIFEST = "selected_tags_are_in_manifest"
CHECK_PERSISTED = "persisted_tags_match_selection"


def build_scene_references(graph: ProjectGraph, parts: ProjectPartitions) -> dg.AssetsDefinition:
    key = stage_key(graph, "scene_references")
    deps = []
    if parts.tags is not None:
        deps.append(
            dg.AssetDep(stage_key(graph, "clean_sheet"), partition_mapping=parts.tag_to_scenes)
        )

    @dg.asset(
        key=key,
        group_name=graph.prefix,
        partitions_def=parts.scenes,
        deps=deps,
        description=(
            "Up to 3 reference images per scene, chosen by role and shot type; the chosen tags are "
            "saved to SceneManifest.selected_reference_tags."
        ),
        code_version="1",
        kinds={"python"},
        tags={"vidpipe/project": graph.slug},
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=[
            dg.AssetCheckSpec(CHECK_AT_MOST_THREE, asset=key, description="Veo takes at most 3."),
            dg.AssetCheckSpec(
                CHECK_TAGS_IN_MANIFEST,
                asset=key,
                description="Every selected tag exists in the project's manifest.",
            ),
            dg.AssetCheckSpec(
                CHECK_PERSISTED,
                asset=key,
                description="The tags read back from the database equal the selection.",
            ),
        ],
    )
    def scene_references(
        context: dg.AssetExecutionContext,
        database: DatabaseResource,
        media: MediaStoreResource,
    ):
        counts: dict[str, int] = {}
        not_in_manifest: dict[str, list[str]] = {}
        mismatched: dict[str, Any] = {}
        materializations = []
        for key in context.partition_keys:
            scene = _select_scene(database, graph.slug, int(key))
            context.log.info(f"scene {key}: {scene.reason}: {scene.tags}")
            if scene.undeclared:
                context.log.info(f"scene {key}: skipped undeclared tags {scene.undeclared}")
            counts[key] = len(scene.tags)
            if not set(scene.tags) <= scene.manifest_tags:
                not_in_manifest[key] = sorted(set(scene.tags) - scene.manifest_tags)
            if scene.has_manifest_row and scene.persisted != scene.tags:
                mismatched[key] = scene.persisted
            materializations.append(
                dg.AssetMaterialization(
                    asset_key=context.asset_key,
                    partition=key,
                    metadata={
                        "selected_reference_tags": dg.MetadataValue.json(scene.tags),
                        "reference_count": len(scene.tags),
                        "shot_type": scene.shot_type or "n/a",
                        "reason": scene.reason,
                        "skipped_undeclared_tags": dg.MetadataValue.json(scene.undeclared),
                        "preview": dg.MetadataValue.md(_preview(scene.chosen, media)),
                    },
                    tags={DATA_VERSION_TAG: _selection_version(scene.chosen)},
                )
            )
        yield from per_partition_results(materializations, all_succeeded=True)
        yield dg.AssetCheckResult(
            check_name=CHECK_AT_MOST_THREE,
            passed=all(n <= MAX_REFERENCES for n in counts.values()),
            metadata={"count_per_scene": dg.MetadataValue.json(counts)},
        )
        yield dg.AssetCheckResult(
            check_name=CHECK_TAGS_IN_MANIFEST,
            passed=not not_in_manifest,
            metadata={"not_in_manifest": dg.MetadataValue.json(not_in_manifest)},
        )
        yield dg.AssetCheckResult(
            check_name=CHECK_PERSISTED,
            passed=not mismatched,
            metadata={"mismatched_persisted_tags": dg.MetadataValue.json(mismatched)},
        )

    return scene_references


@dataclass(frozen=True)
class SceneSelection:
    tags: list[str]
    chosen: list[ChosenReference]
    persisted: list[str] | None
    has_manifest_row: bool
    manifest_tags: set[str]
    undeclared: list[str]
    shot_type: str | None
    reason: str


def _select_scene(database: DatabaseResource, slug: str, scene_index: int) -> SceneSelection:
    """Select, persist, and read back one scene's references (each in its own transaction)."""
    with database.session() as session:
        project = session.scalars(select(Project).where(Project.slug == slug)).one()
        manifest_assets = list(project.manifest.assets) if project.manifest else []
        scene_manifest = session.scalars(
            select(SceneManifest).where(
                SceneManifest.project_id == project.id,
                SceneManifest.scene_index == scene_index,
            )
        ).one_or_none()
        manifest_json = (scene_manifest.manifest_json or {}) if scene_manifest else {}
        selected = (
            select_references_for_scene(manifest_json, manifest_assets)
            if scene_manifest and manifest_assets
            else []
        )
        chosen = [chosen_reference(session, asset) for asset in selected]
        tags = [asset.manifest_tag for asset in selected]
        if scene_manifest is not None:
            scene_manifest.selected_reference_tags = tags
        manifest_tags = {asset.manifest_tag for asset in manifest_assets}
        project_id = project.id
    with database.session() as session:  # read back what a later stage will read
        persisted = session.scalars(
            select(SceneManifest.selected_reference_tags).where(
                SceneManifest.project_id == project_id,
                SceneManifest.scene_index == scene_index,
            )
        ).one_or_none()
    shot_type = manifest_json.get("composition", {}).get("shot_type") if scene_manifest else None
    if not manifest_assets:
        reason = "project has no manifest: no references (frames only)"
    elif scene_manifest is None:
        reason = "scene has no placements: no references"
    else:
        reason = f"{len(tags)} reference(s) for a {shot_type} shot"
    placed = {p.get("asset_tag") for p in manifest_json.get("placements", [])}
    return SceneSelection(
        tags=tags,
        chosen=chosen,
        persisted=persisted,
        has_manifest_row=scene_manifest is not None,
        manifest_tags=manifest_tags,
        undeclared=sorted(t for t in placed - manifest_tags if t),
        shot_type=shot_type,
        reason=reason,
    )


def _selection_version(chosen: list[ChosenReference]) -> str:
    """Changes when the selection or any chosen image changes, so clips downstream go stale."""
    payload = [(c.tag, c.asset_key, c.image_url, c.source) for c in chosen]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:24]


def _preview(chosen: list[ChosenReference], media: MediaStoreResource) -> str:
    if not chosen:
        return "_no references for this scene_"
    items = []
    notes = []
    for ref in chosen:
        try:
            data = read_image_bytes(media.path(ref.image_url or ""), label=ref.caption())
        except MediaError as exc:
            notes.append(f"- {exc}")
            continue
        items.append((ref.caption(), data))
    return markdown_gallery(items) + ("\n\n" + "\n".join(notes) if notes else "")
