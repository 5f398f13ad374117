"""Source assets: the inputs people bring, observed as one content hash per partition.

``storyboard`` (a scene's prompt, placements and the project's model settings) and ``keyframes``
per scene, ``reference_image`` per manifest tag. Their versions come from ``stages.sources`` and
reach Dagster as observations, on import and from the inputs sensor (``automation.py``), so a
changed input marks exactly the scenes that use it stale in the UI.
"""

from __future__ import annotations

import dagster as dg

from vidpipe_dagster.assets.partitions import ProjectPartitions
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.jobs import PROJECT_TAG, stage_key


def build_source_specs(
    graph: ProjectGraph, parts: ProjectPartitions, owners: list[str]
) -> list[dg.AssetSpec]:
    common = {"group_name": graph.prefix, "owners": owners, "tags": {PROJECT_TAG: graph.slug}}
    specs = [
        dg.AssetSpec(
            key=stage_key(graph, "storyboard"),
            partitions_def=parts.scenes,
            description="Each scene's prompt and placements, with the project's model, aspect "
            "ratio and target duration, as imported.",
            kinds={"yaml", "sqlalchemy"},
            **common,
        ),
        dg.AssetSpec(
            key=stage_key(graph, "keyframes"),
            partitions_def=parts.scenes,
            description="Start and end keyframes of each scene, as imported (never modified).",
            kinds={"image", "sqlalchemy"},
            **common,
        ),
    ]
    if parts.tags is not None:
        specs.append(
            dg.AssetSpec(
                key=stage_key(graph, "reference_image"),
                partitions_def=parts.tags,
                description="Original reference photos of each manifest tag (never overwritten).",
                kinds={"image", "sqlalchemy"},
                **common,
            )
        )
    return specs
