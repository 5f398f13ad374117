"""``<project>/scene_references``: up to three reference images per scene, persisted for the UI."""

import hashlib
import json

import dagster as dg
from sqlalchemy import select

from vidpipe_dagster.assets.partitions import ProjectPartitions, stage_key
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
    ) -> dg.MaterializeResult:
        scene_index = int(context.partition_key)
        with database.session() as session:
            project = session.scalars(select(Project).where(Project.slug == graph.slug)).one()
            manifest_assets = list(project.manifest.assets) if project.manifest else []
            scene_manifest = session.scalars(
                select(SceneManifest).where(
                    SceneManifest.project_id == project.id,
                    SceneManifest.scene_index == scene_index,
                )
            ).one_or_none()
            placements = (
                (scene_manifest.manifest_json or {}).get("placements", []) if scene_manifest else []
            )
            selected = (
                select_references_for_scene(scene_manifest.manifest_json, manifest_assets)
                if scene_manifest and manifest_assets
                else []
            )
            chosen = [chosen_reference(session, asset) for asset in selected]
            tags = [asset.manifest_tag for asset in selected]
            if scene_manifest is not None:
                scene_manifest.selected_reference_tags = tags
            manifest_tags = {asset.manifest_tag for asset in manifest_assets}
            shot_type = (
                (scene_manifest.manifest_json or {}).get("composition", {}).get("shot_type")
                if scene_manifest
                else None
            )
            manifest_id = project.id
        with database.session() as session:  # read back what a later stage will read
            persisted = session.scalars(
                select(SceneManifest.selected_reference_tags).where(
                    SceneManifest.project_id == manifest_id,
                    SceneManifest.scene_index == scene_index,
                )
            ).one_or_none()

        undeclared = sorted({p.get("asset_tag") for p in placements} - manifest_tags)
        if not manifest_assets:
            reason = "project has no manifest: no references (frames only)"
        elif scene_manifest is None:
            reason = "scene has no placements: no references"
        else:
            reason = f"{len(tags)} reference(s) for a {shot_type} shot"
        context.log.info(f"scene {scene_index}: {reason}: {tags}")
        if undeclared:
            context.log.info(f"scene {scene_index}: skipped undeclared tags {undeclared}")

        return dg.MaterializeResult(
            metadata={
                "selected_reference_tags": dg.MetadataValue.json(tags),
                "reference_count": len(tags),
                "shot_type": shot_type or "n/a",
                "reason": reason,
                "skipped_undeclared_tags": dg.MetadataValue.json(undeclared),
                "preview": dg.MetadataValue.md(_preview(chosen, media)),
            },
            data_version=dg.DataVersion(_selection_version(chosen)),
            check_results=[
                dg.AssetCheckResult(
                    check_name=CHECK_AT_MOST_THREE,
                    passed=len(tags) <= MAX_REFERENCES,
                    metadata={"count": len(tags)},
                ),
                dg.AssetCheckResult(
                    check_name=CHECK_TAGS_IN_MANIFEST,
                    passed=set(tags) <= manifest_tags,
                    metadata={
                        "not_in_manifest": dg.MetadataValue.json(sorted(set(tags) - manifest_tags))
                    },
                ),
                dg.AssetCheckResult(
                    check_name=CHECK_PERSISTED,
                    passed=(persisted or []) == tags,
                    metadata={"persisted": dg.MetadataValue.json(persisted)},
                ),
            ],
        )

    return scene_references


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
