"""``<project>/clean_sheet``: a clean reference per manifest asset of one tag (Tier 2 or Tier 3).

The work is ``stages.clean_sheet`` (gray is composited in ``domain.clean_sheets``); this module
is its Dagster face. The checks run with each tag, or alone (read back) from the UI.
"""

from typing import Any, Literal

import dagster as dg

from vidpipe_dagster.assets import metadata as md
from vidpipe_dagster.assets.partitions import ProjectPartitions
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.jobs import PROJECT_TAG, stage_key
from vidpipe_dagster.resources.budget import BudgetResource
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.resources.models import LocalModelsResource
from vidpipe_dagster.resources.vertex import VertexResource
from vidpipe_dagster.stages import clean_sheet as stage
from vidpipe_dagster.stages.context import StageError


class CleanSheetConfig(dg.Config):
    """Run config: which tier to make (Tier 3 falls back to Tier 2, then to the original)."""

    tier: Literal["tier2", "tier3"] = "tier2"
    image_model: str | None = None  # default: the Vertex resource's image model
    price_per_image_usd: float | None = None  # default: the model catalog's price


# Built once, not per project: a typed ``config`` parameter would make Dagster infer this schema
# again for every project's asset; the asset rebuilds the typed config from ``op_config``.
CONFIG_SCHEMA = CleanSheetConfig.to_fields_dict()

CHECK_DESCRIPTIONS = {
    stage.CHECK_ORIGINAL: "The original reference photo still has the hash taken at import.",
    stage.CHECK_GRAY: "Tier 2 sheets: at least half the border is #808080 (±12).",
    stage.CHECK_ONE_PRIMARY: "Each asset with a clean sheet has exactly one primary, its newest "
    "(assets that keep their original photo have none).",
    stage.CHECK_FACES: "Tier 3 characters: the face matched on the face engine's own scale "
    "(insightface similarity or dlib distance); warns when not validated (no face engine), errors "
    "when the face did not match (Tier 2 used instead).",
}


def build_clean_sheet(graph: ProjectGraph, parts: ProjectPartitions, owners: list[str]) -> Any:
    key = stage_key(graph, "clean_sheet")
    assert parts.tags is not None

    @dg.multi_asset(
        name=f"{graph.prefix}__clean_sheet",
        specs=[
            dg.AssetSpec(
                key,
                group_name=graph.prefix,
                partitions_def=parts.tags,
                deps=[stage_key(graph, "reference_image")],
                description="Clean reference sheets for every asset of a manifest tag: Tier 2 "
                "removes the background with rembg onto #808080; Tier 3 asks a Gemini image "
                "model and checks the face.",
                code_version=stage.CODE_VERSION,
                kinds=md.CLEAN_SHEET_KINDS,
                tags={PROJECT_TAG: graph.slug},
                owners=owners,
                skippable=True,
            )
        ],
        check_specs=[
            dg.AssetCheckSpec(name, asset=key, description=text, partitions_def=parts.tags)
            for name, text in CHECK_DESCRIPTIONS.items()
        ],
        can_subset=True,
        retry_policy=dg.RetryPolicy(
            max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
        ),
        config_schema=CONFIG_SCHEMA,
    )
    def clean_sheet(
        context: dg.AssetExecutionContext,
        database: DatabaseResource,
        media: MediaStoreResource,
        models: LocalModelsResource,
        vertex: VertexResource,
        budget: BudgetResource,
    ):
        ctx = md.stage_context(
            context.log, database, media, vertex=vertex, models=models, budget=budget
        )
        tag = context.partition_key
        if key not in context.selected_asset_keys:  # the checks alone, read back
            for outcome in stage.read_back_checks(ctx, graph.slug, tag):
                if dg.AssetCheckKey(key, outcome.name) in context.selected_asset_check_keys:
                    yield md.check_result(outcome, asset_key=key)
            return
        config = CleanSheetConfig(**context.op_execution_context.op_config)
        options = stage.CleanSheetOptions(**config.model_dump())
        try:
            run = stage.make_clean_sheets(ctx, graph.slug, tag, options, run_id=context.run.run_id)
        except StageError as exc:
            raise md.failure(exc) from exc
        outcomes = [*stage.run_checks(run), stage.primary_sheet_check(ctx, graph.slug, [tag])]
        yield dg.MaterializeResult(
            asset_key=key,
            metadata=_metadata(run),
            data_version=dg.DataVersion(run.data_version),
            check_results=[
                md.check_result(outcome, asset_key=key)
                for outcome in outcomes
                if dg.AssetCheckKey(key, outcome.name) in context.selected_asset_check_keys
            ],
        )

    return clean_sheet


def _metadata(run: stage.CleanSheetRun) -> dict[str, Any]:
    rows = [
        "| asset | tier | status | engine / model | face | tries | cost (USD) |",
        "|---|---|---|---|---|---|---|",
    ]
    pictures: list[tuple[str, bytes]] = []
    for r in run.results:
        sim = (
            r.face_score.describe()
            if r.face_score is not None
            else ("-" if r.similarity is None else f"{r.similarity:.3f}")
        )
        rows.append(
            f"| {r.asset.key} | {r.tier or 'original (no sheet)'} | {r.status} | "
            f"{r.engine or '-'} / {r.model or '-'} | {sim} ({r.validation}) | {len(r.tries)} | "
            f"{r.cost_usd:.3f} |"
        )
        pictures.append((f"{r.asset.key}: original", r.original))
        if r.clean_png is not None:
            pictures.append((f"{r.asset.key}: {r.tier}", r.clean_png))
    results = run.results
    return {
        "requested_tier": run.requested_tier,
        "tiers": dg.MetadataValue.json({r.asset.key: r.tier for r in results}),
        "summary": dg.MetadataValue.md("\n".join(rows)),
        "before_after": md.gallery(pictures),
        "background_removal": run.remover_note,
        "face_model": run.face_engine_note or run.face_problem or "-",
        "face_validation": dg.MetadataValue.json({r.asset.key: r.validation for r in results}),
        "total_cost_usd": round(sum(r.cost_usd for r in results), 4),
        "tier3_tries": dg.MetadataValue.json({r.asset.key: r.tries for r in results if r.tries}),
        "notes": dg.MetadataValue.json({r.asset.key: r.notes for r in results}),
        "clean_sheet_paths": dg.MetadataValue.json({r.asset.key: r.clean_url for r in results}),
    }
