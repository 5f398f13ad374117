"""``<project>/scene_references`` and ``<project>/scene_clip``: one step for a range of scenes.

The clip engine submits a range's scenes together, so a backfill is one run and one step. Both
assets live in that step so that no in-run downstream step waits on an output: the step yields no
output at all, only each scene's materialization (``assets/provenance.py``) and each scene's check
results as that scene finishes. Either asset, or the checks alone, can be selected.
"""

from typing import Any

import dagster as dg

from vidpipe_dagster.assets import event_log, scene_clip, scene_references
from vidpipe_dagster.assets import metadata as md
from vidpipe_dagster.assets.partitions import ProjectPartitions
from vidpipe_dagster.assets.provenance import Inputs
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.jobs import PROJECT_TAG, stage_key
from vidpipe_dagster.resources.budget import BudgetResource
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.resources.models import LocalModelsResource
from vidpipe_dagster.resources.vertex import VertexResource
from vidpipe_dagster.stages.clip_identity import CHECK_RECOGNISABLE

# Built once, not per project: a typed ``config`` parameter would make Dagster infer this schema
# again for every project's step; the step rebuilds the typed config from ``op_config``.
CONFIG_SCHEMA = scene_clip.SceneClipConfig.to_fields_dict()


def build_scenes(graph: ProjectGraph, parts: ProjectPartitions, owners: list[str]) -> Any:
    refs = stage_key(graph, "scene_references")
    clip = stage_key(graph, "scene_clip")
    storyboard, keyframes = stage_key(graph, "storyboard"), stage_key(graph, "keyframes")
    clean, photos = stage_key(graph, "clean_sheet"), stage_key(graph, "reference_image")
    sources = {storyboard, keyframes, photos}
    by_tag = []
    if parts.tags is not None:
        by_tag = [
            dg.AssetDep(photos, partition_mapping=parts.tag_to_scenes),
            dg.AssetDep(clean, partition_mapping=parts.tag_to_scenes),
        ]
    common: dict[str, Any] = {
        "group_name": graph.prefix,
        "partitions_def": parts.scenes,
        "tags": {PROJECT_TAG: graph.slug},
        "owners": owners,
        "skippable": True,
    }
    specs = [
        dg.AssetSpec(
            refs,
            deps=[storyboard, *by_tag],
            description="Up to 3 reference images per scene, chosen by role and shot type; the "
            "chosen tags are saved to SceneManifest.selected_reference_tags.",
            code_version=scene_references.CODE_VERSION,
            kinds={"python", "sqlalchemy"},
            **common,
        ),
        dg.AssetSpec(
            clip,
            deps=[refs, keyframes, storyboard, *by_tag],
            description="One clip per scene from Veo 3.1 on Vertex AI (or the local animatic "
            "preview when Vertex is not configured), with up to 3 reference images; every paid "
            "request is written to the ledger before it is sent.",
            code_version=scene_clip.CODE_VERSION,
            kinds=md.CLIP_KINDS,
            **common,
        ),
    ]
    # characters_recognisable blocks (the final cut waits for it) when the project says so
    blocking = {(clip, CHECK_RECOGNISABLE): graph.identity_blocking}
    check_specs = [
        dg.AssetCheckSpec(
            name,
            asset=asset,
            description=text,
            partitions_def=parts.scenes,
            blocking=blocking.get((asset, name), False),
        )
        for asset, descriptions in (
            (refs, scene_references.CHECK_DESCRIPTIONS),
            (clip, scene_clip.CHECK_DESCRIPTIONS),
        )
        for name, text in descriptions.items()
    ]

    def inputs_of_refs(scene: str) -> Inputs:
        tags = graph.tags_of_scene(scene)
        return {storyboard: [scene], photos: tags, clean: tags} if tags else {storyboard: [scene]}

    def inputs_of_clip(scene: str) -> Inputs:
        tags = graph.tags_of_scene(scene)
        inputs: dict[dg.AssetKey, list[str] | tuple[str, ...]] = {
            refs: [scene],
            keyframes: [scene],
            storyboard: [scene],
        }
        if tags:
            inputs.update({photos: tags, clean: tags})
        return inputs

    @dg.multi_asset(
        name=f"{graph.prefix}__scenes",
        specs=specs,
        check_specs=check_specs,
        can_subset=True,
        pool="veo",
        backfill_policy=dg.BackfillPolicy.single_run(),
        config_schema=CONFIG_SCHEMA,
    )
    def scenes(
        context: dg.AssetExecutionContext,
        database: DatabaseResource,
        media: MediaStoreResource,
        vertex: VertexResource,
        budget: BudgetResource,
        models: LocalModelsResource,
    ):
        # Dagster's SQLite event log stays open while the scenes report (docs/sqlite.md)
        with event_log.kept_open(context.instance, context.run.run_id):
            config = scene_clip.SceneClipConfig(**context.op_execution_context.op_config)
            ctx = md.stage_context(
                context.log, database, media, vertex=vertex, models=models, budget=budget
            )
            ctx = md.with_run_budget(ctx, config.budget_per_run_usd, config.budget_per_day_usd)
            selected = context.selected_asset_keys
            if refs in selected:
                yield from scene_references.events(
                    context, ctx, graph.slug, refs, context.partition_keys, inputs_of_refs, sources
                )
            elif any(check.asset_key == refs for check in context.selected_asset_check_keys):
                yield from scene_references.read_back(context, ctx, graph.slug, refs)
            if clip in selected:
                yield from scene_clip.events(
                    context,
                    ctx,
                    graph.slug,
                    clip,
                    config,
                    inputs_of_clip,
                    sources,
                    identity_blocking=graph.identity_blocking,
                )
            elif any(check.asset_key == clip for check in context.selected_asset_check_keys):
                yield from scene_clip.read_back(
                    context, ctx, graph.slug, clip, identity_blocking=graph.identity_blocking
                )

    return scenes
