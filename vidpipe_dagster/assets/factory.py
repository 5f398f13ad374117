"""The asset factory: one asset group per project, generated from the project's database rows."""

from __future__ import annotations

from typing import Any

from vidpipe_dagster.assets.clean_sheet import build_clean_sheet
from vidpipe_dagster.assets.final_cut import build_final_cut
from vidpipe_dagster.assets.partitions import project_partitions
from vidpipe_dagster.assets.scene_clip import build_scene_clip
from vidpipe_dagster.assets.scene_references import build_scene_references
from vidpipe_dagster.assets.sources import build_source_specs
from vidpipe_dagster.db.project_graphs import ProjectGraph


def build_project_assets(graph: ProjectGraph) -> list[Any]:
    """Source specs, stage assets and their checks for one project."""
    parts = project_partitions(graph)
    items: list[Any] = list(build_source_specs(graph, parts))
    if parts.tags is not None:
        items.append(build_clean_sheet(graph, parts))
    items.append(build_scene_references(graph, parts))
    items.append(build_scene_clip(graph, parts))
    items.append(build_final_cut(graph, parts))
    return items
