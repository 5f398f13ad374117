"""Source assets: the inputs people bring (reference photos per tag, keyframes per scene)."""

from __future__ import annotations

import dagster as dg

from vidpipe_dagster.assets.partitions import ProjectPartitions
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.jobs import stage_key


def build_source_specs(graph: ProjectGraph, parts: ProjectPartitions) -> list[dg.AssetSpec]:
    specs = [
        dg.AssetSpec(
            key=stage_key(graph, "keyframes"),
            group_name=graph.prefix,
            partitions_def=parts.scenes,
            description="Start and end keyframes of each scene, as imported (never modified).",
            kinds={"image"},
        )
    ]
    if parts.tags is not None:
        specs.append(
            dg.AssetSpec(
                key=stage_key(graph, "reference_image"),
                group_name=graph.prefix,
                partitions_def=parts.tags,
                description="Original reference photos of each manifest tag (never overwritten).",
                kinds={"image"},
            )
        )
    return specs
