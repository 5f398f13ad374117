"""How stage results look in Dagster: metadata values, check results, failures, the stage context.

Every asset module formats through these, so a preview, a table or a failure reads the same in
every stage.
"""

import base64
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import dagster as dg

# Not exported by ``dagster`` in 1.13, but ``dg.AssetCheckEvaluation`` takes it: without a target,
# a per-partition result never counts as the current status of its partition (see ``evaluations``).
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)
from PIL import Image

from vidpipe_dagster.domain.media import markdown_gallery, thumbnail_data_uri
from vidpipe_dagster.domain.reference_selection import ChosenReference
from vidpipe_dagster.resources.budget import BudgetResource
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.resources.models import LocalModelsResource
from vidpipe_dagster.resources.vertex import VertexResource
from vidpipe_dagster.stages.context import CheckOutcome, Log, StageContext, StageError

T = TypeVar("T")

# The services each stage uses, as Dagster kinds (icons in the UI). Face scoring runs on whichever
# engine is installed ("auto": insightface, else dlib); the materialization names the one used.
FACE_ENGINE_KINDS = {"insightface", "dlib"}
CLEAN_SHEET_KINDS = {"rembg", "gemini", "vertex_ai", "image", "sqlalchemy", *FACE_ENGINE_KINDS}
CLIP_KINDS = {"veo", "vertex_ai", "video", "sqlalchemy", *FACE_ENGINE_KINDS}


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


def with_run_budget(
    ctx: StageContext, per_run_usd: float | None, per_day_usd: float | None
) -> StageContext:
    """The run config's budget, where it overrides the settings' (a person's choice for a run)."""
    budget = ctx.budget
    if per_run_usd is not None:
        budget = dataclasses.replace(budget, per_run_usd=per_run_usd)
    if per_day_usd is not None:
        budget = dataclasses.replace(budget, per_day_usd=per_day_usd)
    return dataclasses.replace(ctx, budget=budget)


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


def stage_errors_as_failures(items: Iterator[T]) -> Iterator[T]:
    """Iterate a stage's results; its ``StageError`` becomes the run's failure (``failure``)."""
    try:
        yield from items
    except StageError as exc:
        raise failure(exc) from exc


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


def inline_image(data: bytes, mime_type: str, alt: str) -> str:
    """Markdown for an image shown in place (an animated WebP moves in the UI)."""
    return f"![{alt}](data:{mime_type};base64,{base64.b64encode(data).decode('ascii')})"


def references_table(chosen: Sequence[ChosenReference]) -> dg.MarkdownMetadataValue:
    """Each reference image a scene sends: its tag, asset, crop and where the image comes from."""
    if not chosen:
        return dg.MetadataValue.md("_no reference images_")
    rows = ["| tag | asset | crop | image |", "|---|---|---|---|"]
    rows += [
        f"| {c.tag} | {c.asset_key} | {'face crop' if c.face_crop else 'full body'} | "
        f"{c.source.replace('_', ' ')} |"
        for c in chosen
    ]
    return dg.MetadataValue.md("\n".join(rows))


def evaluations(
    context: dg.AssetExecutionContext,
    key: dg.AssetKey,
    outcomes_by_partition: Mapping[str, Sequence[CheckOutcome]],
) -> Iterator[dg.AssetCheckEvaluation]:
    """Check results of partitions that settled together, for the checks this run selected.

    Each result names its partition's latest materialization as its target (what Dagster's
    ``AssetCheckResult`` does for a single partition), so Dagster counts it as the check status of
    that partition's current data (``AutomationCondition.check_passed`` and the UI read it so),
    and carries its spec's ``blocking``, so a failed blocking check at ERROR fails the step. The
    targets of the whole batch are read in two queries (one per partition was a cached rerun's
    second largest cost of its own).
    """
    selected = context.selected_asset_check_keys
    wanted = {
        partition: [o for o in outcomes if dg.AssetCheckKey(key, o.name) in selected]
        for partition, outcomes in outcomes_by_partition.items()
    }
    wanted = {partition: outcomes for partition, outcomes in wanted.items() if outcomes}
    if not wanted:
        return
    targets = _latest_materializations(context.instance, key, list(wanted))
    for partition, outcomes in wanted.items():
        for outcome in outcomes:
            spec = context.assets_def.get_spec_for_check_key(dg.AssetCheckKey(key, outcome.name))
            yield dg.AssetCheckEvaluation(
                asset_key=key,
                check_name=outcome.name,
                passed=outcome.passed,
                partition=partition,
                target_materialization_data=targets.get(partition),
                severity=dg.AssetCheckSeverity.WARN
                if outcome.severity == "warn"
                else dg.AssetCheckSeverity.ERROR,
                description=outcome.description,
                metadata=_normalized(outcome.metadata),
                blocking=spec.blocking,
            )


def _latest_materializations(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Sequence[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """Each partition's newest materialization (this run's, when it made one), as a check
    target; a partition never materialized has none."""
    ids = instance.event_log_storage.get_latest_storage_id_by_partition(
        key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(partitions)
    )
    if not ids:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, storage_ids=list(ids.values())), limit=len(ids)
    ).records
    return {
        record.partition_key: AssetCheckEvaluationTargetMaterializationData(
            storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
        )
        for record in records
        if record.partition_key is not None
    }


def _normalized(raw: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    normalized: dict[str, dg.MetadataValue] = {}
    for name, item in raw.items():
        if isinstance(item, bool):
            normalized[name] = dg.MetadataValue.bool(item)
        elif isinstance(item, int):
            normalized[name] = dg.MetadataValue.int(item)
        elif isinstance(item, float):
            normalized[name] = dg.MetadataValue.float(item)
        elif isinstance(item, str):
            normalized[name] = dg.MetadataValue.text(item)
        elif item is None:
            normalized[name] = dg.MetadataValue.null()
        else:
            normalized[name] = dg.MetadataValue.json(item)
    return normalized
