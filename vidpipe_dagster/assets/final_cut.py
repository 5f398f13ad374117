"""``<project>/final_cut``: the project's clips joined in scene order into one mp4.

The work is ``stages.final_cut``; this module is its Dagster face.
"""

import dagster as dg

from vidpipe_dagster.assets import metadata as md
from vidpipe_dagster.assets.partitions import ProjectPartitions
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.domain.preview import CUT_NOTE
from vidpipe_dagster.domain.render import thumbnail_strip
from vidpipe_dagster.jobs import PROJECT_TAG, stage_key
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.stages import final_cut as stage
from vidpipe_dagster.stages.context import StageError


def build_final_cut(graph: ProjectGraph, parts: ProjectPartitions) -> dg.AssetsDefinition:
    @dg.asset(
        key=stage_key(graph, "final_cut"),
        group_name=graph.prefix,
        deps=[
            dg.AssetDep(stage_key(graph, "scene_clip"), partition_mapping=dg.AllPartitionMapping())
        ],
        description="Every scene's clip, in scene order, joined into one mp4 with its total cost.",
        code_version="1",
        kinds={"python", "video"},
        tags={PROJECT_TAG: graph.slug},
    )
    def final_cut(
        context: dg.AssetExecutionContext, database: DatabaseResource, media: MediaStoreResource
    ) -> dg.MaterializeResult:
        ctx = md.stage_context(context.log, database, media)
        try:
            cut = stage.make_final_cut(ctx, graph.slug, graph.prefix)
        except StageError as exc:
            raise md.failure(exc) from exc
        strip = thumbnail_strip(cut.data, n=min(8, max(2, len(cut.fingerprints))))
        note = f"**{CUT_NOTE}**\n\n" if cut.contains_previews else ""
        return dg.MaterializeResult(
            metadata={
                "path": str(ctx.media.path(cut.relative_path)),
                "duration_seconds": round(cut.info.duration_seconds, 3),
                "scene_boundaries_seconds": dg.MetadataValue.json(cut.scene_starts),
                "total_cost_usd": cut.total_cost_usd,
                "contains_previews": cut.contains_previews,
                "preview": dg.MetadataValue.md(note + md.thumbnail(strip, "final cut", size=None)),
            },
            data_version=dg.DataVersion(cut.data_version),
        )

    return final_cut
