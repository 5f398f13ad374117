"""Per-project jobs: what the UI's Launchpad runs, tagged with the project.

Asset tags are not run tags, so a materialization started from the asset graph carries only
Dagster's own partition tags. Launching one of these jobs (or a backfill of it) tags every run with
``vidpipe/project``, which the run queue's per-project limit in ``deploy/dagster.yaml`` keys on;
Dagster adds ``dagster/partition`` (one scene or tag) or the partition-range tags itself.
"""

from __future__ import annotations

import dagster as dg

from vidpipe_dagster.db.project_graphs import ProjectGraph

PROJECT_TAG = "vidpipe/project"  # on every run that touches a project (the run queue keys on it)


def stage_key(graph: ProjectGraph, stage: str) -> dg.AssetKey:
    """``<prefix>/<stage>``: one asset group and key prefix per project."""
    return dg.AssetKey([graph.prefix, stage])


def scenes_job_name(graph: ProjectGraph) -> str:
    return f"{graph.prefix}_scenes_job"


def build_project_jobs(graph: ProjectGraph) -> list[dg.UnresolvedAssetJobDefinition]:
    """``<prefix>_scenes_job`` (references and clips), ``_final_cut_job`` and, with a manifest,
    ``_clean_sheets_job``: what the CLI runs and the UI lists. One job per partitioning (a job's
    assets must share one partitions definition)."""
    tags = {PROJECT_TAG: graph.slug}
    jobs = [
        dg.define_asset_job(
            name=scenes_job_name(graph),
            selection=dg.AssetSelection.assets(
                stage_key(graph, "scene_references"), stage_key(graph, "scene_clip")
            ),
            tags=tags,
            description=f"{graph.slug}: reference selection and clips for the chosen scenes.",
        ),
        dg.define_asset_job(
            name=f"{graph.prefix}_final_cut_job",
            selection=dg.AssetSelection.assets(stage_key(graph, "final_cut")),
            tags=tags,
            description=f"{graph.slug}: the film, from every scene's clip.",
        ),
    ]
    if graph.has_manifest and graph.tags:  # the clean_sheet asset exists (assets/partitions.py)
        jobs.append(
            dg.define_asset_job(
                name=f"{graph.prefix}_clean_sheets_job",
                selection=dg.AssetSelection.assets(stage_key(graph, "clean_sheet")),
                tags=tags,
                description=f"{graph.slug}: clean reference sheets for the chosen manifest tags.",
            )
        )
    return jobs
