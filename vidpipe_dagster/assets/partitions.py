"""Each project's partitions, built in one place from its own rows: none can never succeed."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from vidpipe_dagster.db.project_graphs import ProjectGraph


@dataclass(frozen=True)
class ProjectPartitions:
    scenes: dg.StaticPartitionsDefinition
    tags: dg.StaticPartitionsDefinition | None
    tag_to_scenes: dg.StaticPartitionMapping | None


def project_partitions(graph: ProjectGraph) -> ProjectPartitions:
    """Scene-index partitions, manifest-tag partitions, and the exact tag→scenes lineage."""
    scenes = dg.StaticPartitionsDefinition(list(graph.scene_keys))
    if not graph.has_manifest or not graph.tags:
        return ProjectPartitions(scenes=scenes, tags=None, tag_to_scenes=None)
    tags = dg.StaticPartitionsDefinition(list(graph.tags))
    mapping = dg.StaticPartitionMapping(
        {tag: scene_keys for tag, scene_keys in graph.scenes_of_tag().items() if scene_keys}
    )
    return ProjectPartitions(scenes=scenes, tags=tags, tag_to_scenes=mapping)
