"""``<project>/scene_references``: up to three reference images per scene, persisted for the UI.

The work is ``stages.scene_references``; this module is its Dagster face.
"""

from typing import Any

import dagster as dg

from vidpipe_dagster.assets import metadata as md
from vidpipe_dagster.assets.partitions import ProjectPartitions
from vidpipe_dagster.assets.per_partition import DATA_VERSION_TAG, per_partition_results
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.jobs import PROJECT_TAG, stage_key
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.stages import scene_references as stage


def build_scene_references(graph: ProjectGraph, parts: ProjectPartitions) -> list[Any]:
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
        tags={PROJECT_TAG: graph.slug},
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=[
            dg.AssetCheckSpec(
                stage.CHECK_AT_MOST_THREE, asset=key, description="Veo takes at most 3."
            ),
            dg.AssetCheckSpec(
                stage.CHECK_TAGS_IN_MANIFEST,
                asset=key,
                description="Every selected tag exists in the project's manifest.",
            ),
        ],
    )
    def scene_references(
        context: dg.AssetExecutionContext,
        database: DatabaseResource,
        media: MediaStoreResource,
    ):
        ctx = md.stage_context(context.log, database, media)
        selections = stage.select_scenes(ctx, graph.slug, context.partition_keys)
        materializations = [
            dg.AssetMaterialization(
                asset_key=context.asset_key,
                partition=scene.key,
                metadata={
                    "selected_reference_tags": dg.MetadataValue.json(scene.tags),
                    "reference_count": len(scene.tags),
                    "shot_type": scene.shot_type or "n/a",
                    "reason": scene.reason,
                    "skipped_undeclared_tags": dg.MetadataValue.json(scene.undeclared),
                    "preview": dg.MetadataValue.md(_preview(ctx, scene)),
                },
                tags={DATA_VERSION_TAG: scene.version},
            )
            for scene in selections
        ]
        yield from per_partition_results(materializations, all_succeeded=True)
        for outcome in stage.selection_checks(selections):
            yield md.check_result(outcome)

    persisted = md.read_back_check(
        key,
        graph.slug,
        stage.CHECK_PERSISTED,
        "The tags read back from the database equal the selection the manifest gives today.",
        stage.persisted_check,
    )
    return [scene_references, persisted]


def _preview(ctx, scene: stage.SceneSelection) -> str:
    if not scene.chosen:
        return "_no references for this scene_"
    items, problems = stage.reference_images(ctx, scene.chosen)
    notes = "\n".join(f"- {problem}" for problem in problems)
    return md.gallery(items).value + (f"\n\n{notes}" if notes else "")
