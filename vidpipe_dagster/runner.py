"""Materialize a project's stages in-process on a Dagster instance, so the UI shows history."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from vidpipe_dagster.assets import event_log
from vidpipe_dagster.assets.model_check import evaluation
from vidpipe_dagster.db.project_graphs import ProjectGraph, load_project_graphs
from vidpipe_dagster.db.session import Database
from vidpipe_dagster.definitions import build_definitions, default_resources
from vidpipe_dagster.jobs import PROJECT_TAG
from vidpipe_dagster.run_health import host_tags
from vidpipe_dagster.sensors import observations
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.model_check import model_problems
from vidpipe_dagster.stages.sources import source_versions
from vidpipe_dagster.stages.status import failure_reason


@dataclass(frozen=True)
class Stage:
    name: str  # CLI name
    asset: str  # asset name inside the project's group
    partitioned_by: str  # "tags" | "scenes" | "none"
    single_run: bool  # all partitions in one run (concurrent work inside the asset)


STAGES: tuple[Stage, ...] = (
    Stage("clean-sheets", "clean_sheet", "tags", False),
    Stage("references", "scene_references", "scenes", True),
    Stage("clips", "scene_clip", "scenes", True),
    Stage("final-cut", "final_cut", "none", False),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


class RunnerError(RuntimeError):
    """A stage could not run or failed; the message names the project, stage and partitions."""


@dataclass
class StageReport:
    stage: str
    asset: str = ""  # the asset's name in the project's group (its key: <prefix>/<asset>)
    succeeded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # partition -> reason, one line each
    skipped: str | None = None
    run_ids: list[str] = field(default_factory=list)  # the runs whose log has the detail


def ensure_dagster_home(settings: Settings) -> str:
    """Use ``$DAGSTER_HOME``, defaulting to ``$VIDPIPE_HOME/dagster`` (printed by the CLI)."""
    home = str(settings.dagster_home or settings.home / "dagster")
    os.makedirs(home, exist_ok=True)
    yaml_path = os.path.join(home, "dagster.yaml")
    if not os.path.exists(yaml_path):
        with open(yaml_path, "w", encoding="utf-8") as handle:
            handle.write(
                "# Local Dagster instance for vidpipe-dagster (see README, Deployment).\n"
                "telemetry:\n  enabled: false\n"
            )
    os.environ["DAGSTER_HOME"] = home
    # create the instance's storages now: a webserver and a daemon starting together on an empty
    # home can race to migrate them ("alembic_version has more than one head")
    with dg.DagsterInstance.from_config(home):
        pass
    return home


def report_inputs(slug: str, settings: Settings, instance: dg.DagsterInstance | None = None) -> int:
    """Tell Dagster the project's input versions now (the inputs sensor would, within a minute),
    so the UI shows which scenes an import made stale. Returns how many observations it sent."""
    graph = find_graph(slug, settings)
    versions = source_versions(Database(settings.database_url), [slug]).get(slug, {})
    if instance is None:
        ensure_dagster_home(settings)
        instance = dg.DagsterInstance.get()
    problems = model_problems(Database(settings.database_url), settings.model_catalog(), [slug])
    events = [*observations(graph, versions), evaluation(graph, problems.get(slug, []))]
    for event in events:
        instance.report_runless_asset_event(event)
    return len(events)


def find_graph(slug: str, settings: Settings) -> ProjectGraph:
    graphs = {g.slug: g for g in load_project_graphs(settings.database_url)}
    if slug not in graphs:
        known = ", ".join(sorted(graphs)) or "none imported yet"
        raise RunnerError(
            f"no active project {slug!r} (known: {known}); run `vidpipe-dagster import`"
        )
    return graphs[slug]


def _first_error(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE" and event.step_failure_data:
            error = event.step_failure_data.error
            if error is None:
                continue
            while error.cause is not None and error.message.startswith("Error occurred"):
                error = error.cause
            return error.message.strip().splitlines()[-1] if error.message else "step failed"
    return "run failed"


def materialize_project(
    slug: str,
    stages: Sequence[str] = STAGE_NAMES,
    *,
    partitions: Sequence[str] | None = None,
    instance: dg.DagsterInstance | None = None,
    resources: dict[str, Any] | None = None,
    settings: Settings | None = None,
    asset_config: dict[str, dict[str, Any]] | None = None,
    log_level: str = "WARNING",
) -> list[StageReport]:
    """Run the chosen stages in order through the project's own jobs (so each run is listed
    under its job, carries ``vidpipe/project`` and can be re-executed from the UI); one failed
    partition never stops the other partitions.

    ``asset_config`` maps a stage's asset name (``"clean_sheet"``, ``"scene_clip"``) to its run
    config. Unknown partitions are an error naming the valid ones, before anything runs.
    """
    settings = settings or Settings.from_env()
    graph = find_graph(slug, settings)
    _check_partitions(graph, stages, partitions)
    resources = resources or default_resources(settings)
    definitions = build_definitions([graph], settings, resources)
    if instance is None:
        ensure_dagster_home(settings)
        instance = dg.DagsterInstance.get()
    built = {spec.key for spec in definitions.resolve_all_asset_specs()}
    reports = []
    for stage in STAGES:
        if stage.name not in stages:
            continue
        report = StageReport(stage.name, stage.asset)
        reports.append(report)
        key = dg.AssetKey([graph.prefix, stage.asset])
        if key not in built:
            report.skipped = (
                "not part of this project" if stage.partitioned_by == "tags" else "not built"
            )
            continue
        job = definitions.resolve_job_def(_job_name(graph, stage))
        all_keys = {"tags": list(graph.tags), "scenes": list(graph.scene_keys), "none": [""]}[
            stage.partitioned_by
        ]
        wanted = [k for k in all_keys if partitions is None or k in partitions or k == ""]
        config = (asset_config or {}).get(stage.asset)
        op = _op_name(graph, stage)
        run_config = {
            "loggers": {"console": {"config": {"log_level": log_level}}},
            **({"ops": {op: {"config": config}}} if config else {}),
        }

        def run(
            partition_key: str | None,
            tags: dict[str, str],
            job: dg.JobDefinition = job,
            key: dg.AssetKey = key,
            stage: Stage = stage,
            run_config: dict[str, Any] = run_config,
        ) -> dg.ExecuteInProcessResult:
            # a run stores an event per partition before its step starts (planned ones)
            with event_log.kept_open(instance):
                return job.execute_in_process(
                    run_config=run_config,
                    instance=instance,
                    partition_key=partition_key,
                    asset_selection=[key],
                    # the host lets a later tick prove the run dead if this process is killed
                    tags={PROJECT_TAG: slug, "vidpipe/stage": stage.name, **host_tags(), **tags},
                    raise_on_error=False,
                )

        if stage.partitioned_by == "none":
            _record(report, run(None, {}), ["all"], slug)
        elif stage.single_run and len(wanted) > 1 and _contiguous(wanted, all_keys):
            range_tags = {
                "dagster/asset_partition_range_start": wanted[0],
                "dagster/asset_partition_range_end": wanted[-1],
            }
            _record(report, run(None, range_tags), wanted, slug)
        else:
            for k in wanted:
                _record(report, run(k, {}), [k], slug)
    return reports


def _job_name(graph: ProjectGraph, stage: Stage) -> str:
    return {
        "tags": f"{graph.prefix}_clean_sheets_job",
        "scenes": f"{graph.prefix}_scenes_job",
        "none": f"{graph.prefix}_final_cut_job",
    }[stage.partitioned_by]


def _op_name(graph: ProjectGraph, stage: Stage) -> str:
    """The step that runs a stage (run config is keyed by it)."""
    return {
        "clean_sheet": f"{graph.prefix}__clean_sheet",
        "scene_references": f"{graph.prefix}__scenes",
        "scene_clip": f"{graph.prefix}__scenes",
        "final_cut": f"{graph.prefix}__final_cut",
    }[stage.asset]


def _check_partitions(
    graph: ProjectGraph, stages: Sequence[str], partitions: Sequence[str] | None
) -> None:
    """Every requested partition must exist in some requested stage: name the valid ones."""
    if not partitions:
        return
    valid: set[str] = set()
    names: list[str] = []
    if any(s in stages for s in ("references", "clips")):
        valid |= set(graph.scene_keys)
        names.append(f"scenes {', '.join(graph.scene_keys) or 'none'}")
    if "clean-sheets" in stages:
        valid |= set(graph.tags)
        names.append(f"tags {', '.join(graph.tags) or 'none'}")
    unknown = [p for p in partitions if p not in valid]
    if unknown:
        raise RunnerError(
            f"{graph.slug} has no partition {', '.join(unknown)} for "
            f"{', '.join(stages)}; valid: {'; '.join(names) or 'none (final-cut has none)'}"
        )


def _contiguous(wanted: list[str], all_keys: list[str]) -> bool:
    start = all_keys.index(wanted[0])
    return all_keys[start : start + len(wanted)] == wanted


def _per_partition_errors(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """A multi-partition step reports each scene's reason in its Failure's ``failed`` metadata."""
    for event in result.all_events:
        data = event.step_failure_data if event.event_type_value == "STEP_FAILURE" else None
        if data is not None and data.user_failure_data is not None:
            failed = data.user_failure_data.metadata.get("failed")
            if failed is not None and isinstance(failed.value, dict):
                return {str(k): str(v) for k, v in failed.value.items()}
    return {}


def _record(
    report: StageReport, result: dg.ExecuteInProcessResult, expected: list[str], slug: str
) -> None:
    """Partitions materialized by this run succeeded; the rest failed with their own reason (one
    line, said once: without the ``scene k:`` prefixes the layers add, assets named by key)."""
    materialized = {event.partition or "all" for event in result.get_asset_materialization_events()}
    error = None if result.success else _first_error(result)
    reasons = _per_partition_errors(result)
    if not result.success:
        report.run_ids.append(result.run_id)
    for k in expected:
        if k in materialized:
            report.succeeded.append(k)
        else:
            reason = reasons.get(k) or error or "not materialized"
            report.failed[k] = failure_reason(reason, None if k == "all" else k, slug)
