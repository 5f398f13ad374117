"""The asset factory: one ``dg.Definitions`` per project (its group of assets and checks, its jobs
and its schedule), generated from the project's database rows and merged in ``definitions.py``.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from types import CodeType
from typing import Any

import dagster as dg

from vidpipe_dagster.assets.clean_sheet import build_clean_sheet
from vidpipe_dagster.assets.final_cut import build_final_cut
from vidpipe_dagster.assets.model_check import build_model_check
from vidpipe_dagster.assets.partitions import project_partitions
from vidpipe_dagster.assets.scenes import build_scenes
from vidpipe_dagster.assets.sources import build_source_specs
from vidpipe_dagster.automation import build_backfill_schedule
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.jobs import build_project_jobs, scenes_job_name
from vidpipe_dagster.settings import Settings

# Deliberate choices Dagster 1.13 marks as beta/preview, and would warn about once per asset and
# check of every project on every load (thousands of lines for a studio): single-run ranges (one
# step submits a range's scenes together), partitioned checks (results per scene), checks
# that share their asset's step, and code references (the UI links each asset to its source).
# Only these messages are silenced.
for _message, _category in (
    (r"Parameter `backfill_policy` of function", dg.BetaWarning),
    (r"Specifying a partitions_def on an AssetCheckSpec", dg.PreviewWarning),
    (r"Function `with_source_code_references` is currently in beta", dg.BetaWarning),
    (r"Class `(LocalFileCodeReference|CodeReferencesMetadataValue)` is currently", dg.BetaWarning),
    (r"Parameter `execution_type` of function `AssetsDefinition.__init__`", dg.BetaWarning),
):
    warnings.filterwarnings("ignore", message=_message, category=_category)


def build_project_assets(graph: ProjectGraph) -> list[Any]:
    """Source specs, stage assets and their checks for one project."""
    parts = project_partitions(graph)
    owners = list(graph.owners)
    items: list[Any] = list(build_source_specs(graph, parts, owners))
    if parts.tags is not None:
        items.append(build_clean_sheet(graph, parts, owners))
    items.append(build_scenes(graph, parts, owners))
    items.append(build_final_cut(graph, parts, owners))
    items.append(build_model_check(graph))
    return with_code_references(items)


_CODE_REFERENCES: dict[CodeType, dg.CodeReferencesMetadataValue] = {}
CODE_REFERENCES_KEY = "dagster/code_references"  # where dg.with_source_code_references puts them


def with_code_references(items: Sequence[Any]) -> list[Any]:
    """``dg.with_source_code_references(items)`` (the UI links each asset to its function), with
    each builder's source location found once per process: Dagster re-reads and tokenizes the
    function's source for every asset (about 1.5 ms each, most of a 500-project load's time),
    although every project's asset of one stage comes from the same function."""
    return [_with_code_reference(item) for item in items]


def _with_code_reference(item: Any) -> Any:
    if not isinstance(item, dg.AssetsDefinition) or not isinstance(item.node_def, dg.OpDefinition):
        return item  # specs have no function to point to (as in Dagster's own helper)
    fn = item.op.compute_fn
    value = _code_reference(getattr(fn, "decorated_fn", fn))
    return item.map_asset_specs(
        lambda spec: spec.merge_attributes(metadata={CODE_REFERENCES_KEY: value})
    )


def _code_reference(fn: Callable[..., Any]) -> dg.CodeReferencesMetadataValue:
    """The file and first line of ``fn``'s definition, as Dagster computes them."""
    code = fn.__code__
    if code not in _CODE_REFERENCES:
        path = os.path.abspath(os.path.join(os.getcwd(), inspect.getsourcefile(fn) or ""))
        line = inspect.getsourcelines(fn)[1]
        reference = dg.LocalFileCodeReference(file_path=path, line_number=line)
        _CODE_REFERENCES[code] = dg.CodeReferencesMetadataValue(code_references=[reference])
    return _CODE_REFERENCES[code]


def build_project_definitions(
    graph: ProjectGraph, settings: Settings, resources: Mapping[str, Any]
) -> dg.Definitions:
    """Everything Dagster needs for one project; ``definitions.py`` merges the projects.

    The project's jobs are resolved here, against its own assets only: resolving them later
    against the merged repository would walk every project's assets once per job, which made
    loading quadratic in the number of projects (docs/architecture.md, "Loading").
    """
    items = build_project_assets(graph)
    assets = [i for i in items if not isinstance(i, dg.AssetChecksDefinition)]
    checks = [i for i in items if isinstance(i, dg.AssetChecksDefinition)]
    unresolved = build_project_jobs(graph)
    local = dg.Definitions(assets=assets, asset_checks=checks, jobs=unresolved, resources=resources)
    jobs = {job.name: local.resolve_job_def(job.name) for job in unresolved}
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=list(jobs.values()),
        schedules=[build_backfill_schedule(graph, settings, jobs[scenes_job_name(graph)])],
    )
