"""Sensors: what keeps Dagster's picture of the inputs true, and the final cut up to date.

- ``vidpipe_inputs_sensor`` (running by default; it launches no run and costs nothing) reports
  the source assets' versions (``stages.sources``) as observations whenever a project's inputs
  change, so the UI marks exactly the scenes that use a changed prompt, keyframe or photo stale.
  ``vidpipe-dagster import`` reports them too, at once.
- ``vidpipe_final_cut_automation`` (stopped by default, like the schedules) evaluates the final
  cut's automation condition: cut again once every scene clip exists and passes its blocking
  checks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import dagster as dg

from vidpipe_dagster.assets.model_check import evaluation
from vidpipe_dagster.assets.provenance import observation
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.jobs import stage_key
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.vertex import VertexResource
from vidpipe_dagster.stages.model_check import model_problems
from vidpipe_dagster.stages.sources import Versions, source_versions

INPUTS_SENSOR = "vidpipe_inputs_sensor"
FINAL_CUT_AUTOMATION = "vidpipe_final_cut_automation"


def observations(graph: ProjectGraph, versions: Versions) -> list[dg.AssetObservation]:
    """One observation per partition of each of the project's source assets."""
    events = []
    for source, by_partition in versions.items():
        if source == "reference_image" and not graph.tags:
            continue  # no manifest: the project has no reference_image asset
        key = stage_key(graph, source)
        known = set(graph.tags if source == "reference_image" else graph.scene_keys)
        events += [
            observation(key, partition, version)
            for partition, version in sorted(by_partition.items())
            if partition in known
        ]
    return events


def build_inputs_sensor(graphs: Sequence[ProjectGraph]) -> dg.SensorDefinition:
    by_slug = {graph.slug: graph for graph in graphs}

    @dg.sensor(
        name=INPUTS_SENSOR,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Reports each project's inputs (prompts and placements, keyframes, reference "
        "photos) as observed data versions when they change, so staleness in the UI is per "
        "scene, and whether its models are still available (model_available). Launches no runs.",
    )
    def vidpipe_inputs_sensor(
        context: dg.SensorEvaluationContext, database: DatabaseResource, vertex: VertexResource
    ) -> dg.SensorResult:
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        current = source_versions(database.database(), list(by_slug))
        problems = model_problems(database.database(), vertex.backends().catalog(), list(by_slug))
        events: list[dg.AssetObservation | dg.AssetCheckEvaluation] = []
        digests: dict[str, str] = {}
        for slug, versions in current.items():
            graph = by_slug.get(slug)
            if graph is None:
                continue
            state = {"inputs": versions, "model_problems": problems.get(slug, [])}
            digests[slug] = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[
                :16
            ]
            if seen.get(slug) != digests[slug]:
                events += observations(graph, versions)
                events.append(evaluation(graph, problems.get(slug, [])))
        changed = sorted(slug for slug in digests if seen.get(slug) != digests[slug])
        if not events:
            return dg.SensorResult(skip_reason="no project's inputs changed", cursor=context.cursor)
        context.log.info(f"inputs changed for {', '.join(changed)}: {len(events)} observations")
        return dg.SensorResult(asset_events=events, cursor=json.dumps(digests, sort_keys=True))

    return vidpipe_inputs_sensor


def build_final_cut_automation() -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        FINAL_CUT_AUTOMATION,
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Cuts a project's film again once every scene clip exists and passes its "
        "blocking checks (the final cut's automation condition). Stopped until you start it.",
    )
