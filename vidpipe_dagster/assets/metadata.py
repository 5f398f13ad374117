"""How stage results look in Dagster: metadata values, check results, failures, the stage context.

Every asset module formats through these, so a preview, a table or a failure reads the same in
every stage.
"""

from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
from PIL import Image

from vidpipe_dagster.domain.media import markdown_gallery, thumbnail_data_uri
from vidpipe_dagster.resources.budget import BudgetResource
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.resources.models import LocalModelsResource
from vidpipe_dagster.resources.vertex import VertexResource
from vidpipe_dagster.stages.context import CheckOutcome, Log, StageContext, StageError


def stage_context(
    log: Log,
    database: DatabaseResource,
    media: MediaStoreResource,
    vertex: VertexResource | None = None,
    models: LocalModelsResource | None = None,
    budget: BudgetResource | None = None,
) -> StageContext:
    """The plain objects a stage works with, from the asset's resources."""
    optional: dict[str, Any] = {}
    if vertex is not None:
        optional["backends"] = vertex.backends()
    if models is not None:
        optional["models"] = models.models()
    if budget is not None:
        optional["budget"] = budget.budget()
    return StageContext(database=database.database(), media=media.store(), log=log, **optional)


def value(raw: Any) -> Any:
    """Lists and dicts as JSON (Dagster shows them folded); numbers and text as they are."""
    if isinstance(raw, list | dict | tuple):
        return dg.MetadataValue.json(list(raw) if isinstance(raw, tuple) else raw)
    return raw


def values(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value(item) for key, item in raw.items()}


def check_result(outcome: CheckOutcome, **extra: Any) -> dg.AssetCheckResult:
    severity = (
        dg.AssetCheckSeverity.WARN if outcome.severity == "warn" else dg.AssetCheckSeverity.ERROR
    )
    return dg.AssetCheckResult(
        check_name=outcome.name,
        passed=outcome.passed,
        severity=severity,
        description=outcome.description,
        metadata=values(outcome.metadata),
        **extra,
    )


def failure(exc: StageError) -> dg.Failure:
    """A stage's error as a run failure; Dagster retries it only when waiting may help."""
    return dg.Failure(description=str(exc), metadata=values(exc.metadata), allow_retries=exc.retry)


def thumbnail(image: Image.Image | bytes, alt: str, size: int | None = 128) -> str:
    """An inline markdown image (Dagster's UI renders data URIs); ``size=None`` keeps its size."""
    return f"![{alt}]({thumbnail_data_uri(image, size, quality=75)})"


def gallery(items: list[tuple[str, Image.Image | bytes]]) -> dg.MarkdownMetadataValue:
    return dg.MetadataValue.md(markdown_gallery(items))


ReadBack = Callable[[StageContext, str, list[str] | None], CheckOutcome]


def read_back_check(
    key: dg.AssetKey, slug: str, name: str, description: str, read_back: ReadBack
) -> dg.AssetChecksDefinition:
    """A check that reads the stored results back from the database (a person can re-run it from
    the UI): over the partitions of the run it runs in, or over all of them when run alone."""

    @dg.asset_check(asset=key, name=name, description=description)
    def check(
        context: dg.AssetCheckExecutionContext,
        database: DatabaseResource,
        media: MediaStoreResource,
    ) -> dg.AssetCheckResult:
        ctx = stage_context(context.log, database, media)
        return check_result(read_back(ctx, slug, run_partition_keys(context)))

    return check


def run_partition_keys(context: dg.AssetCheckExecutionContext) -> list[str] | None:
    """The partitions of the run a read-back check runs in; None (check all) in a run without
    partitions, e.g. when a person executes the check alone from the UI."""
    op_context = context.op_execution_context
    if op_context.has_partition_key or op_context.has_partition_key_range:
        return list(op_context.partition_keys)
    return None
