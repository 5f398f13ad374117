"""``<project>/scene_clip``: one generated clip per scene, many scenes concurrently in one run.

A backfill runs as a single run (``BackfillPolicy.single_run``): ``stages.scene_clip`` submits and
polls the scenes together. Each finished scene is materialized on its own; failed scenes fail the
run with their reasons and never hide the others.
"""

from dataclasses import replace
from typing import Any, Literal

import dagster as dg

from vidpipe_dagster.assets import metadata as md
from vidpipe_dagster.assets.partitions import ProjectPartitions
from vidpipe_dagster.assets.per_partition import DATA_VERSION_TAG, per_partition_results
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.domain.preview import PREVIEW_LABEL
from vidpipe_dagster.domain.render import thumbnail_strip
from vidpipe_dagster.jobs import PROJECT_TAG, stage_key
from vidpipe_dagster.resources.budget import BudgetResource
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.resources.vertex import VertexResource
from vidpipe_dagster.stages import scene_clip as stage
from vidpipe_dagster.stages.context import StageError


class SceneClipConfig(dg.Config):
    """Run config for clip generation (defaults are safe for Vertex's per-model quota)."""

    conditioning_policy: Literal["auto", "frames", "references", "hybrid"] = "auto"
    max_in_flight: int = 4
    requests_per_minute: int = 10
    poll_interval_seconds: float = 10.0
    backoff_base_seconds: float = 1.0  # transient errors: full-jitter exponential backoff
    generate_audio: bool = True
    price_per_second_usd: dict[str, float] = {}  # model -> USD per second, overrides defaults
    budget_per_run_usd: float | None = None  # default: the budget resource (settings)
    budget_per_day_usd: float | None = None
    # Accept a risk of paying twice: resend a submit whose outcome is unknown (Veo has no
    # idempotency key), and buy again a paid clip whose video is gone for good. Off by default.
    retry_ambiguous_submits: bool = False
    regenerate_lost_results: bool = False

    def options(self) -> stage.ClipOptions:
        values = self.model_dump()
        values.pop("budget_per_run_usd")
        values.pop("budget_per_day_usd")
        return stage.ClipOptions(**values)


CHECK_DESCRIPTIONS = {
    stage.CHECK_VALID_MP4: "The stored file is an mp4 whose duration is the requested one "
    "(8 s with references, the project target otherwise).",
    stage.CHECK_REQUEST_LEGAL: "At most 3 references and a conditioning mode the model accepts.",
    stage.CHECK_COST: "Every finished clip records what it cost, reused or not: a Veo (billed) "
    "clip more than 0 and exactly what the ledger billed for its request, an animatic preview 0.",
}


def build_scene_clip(graph: ProjectGraph, parts: ProjectPartitions) -> dg.AssetsDefinition:
    key = stage_key(graph, "scene_clip")

    @dg.asset(
        key=key,
        group_name=graph.prefix,
        partitions_def=parts.scenes,
        deps=[stage_key(graph, "scene_references"), stage_key(graph, "keyframes")],
        description=(
            "One clip per scene from Veo 3.1 (or the local animatic preview when Vertex is not "
            "configured), with up to 3 reference images; every paid request is ledgered first."
        ),
        code_version="1",
        kinds={"python", "video"},
        tags={PROJECT_TAG: graph.slug},
        pool="veo",
        output_required=False,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=[
            dg.AssetCheckSpec(name, asset=key, description=text)
            for name, text in CHECK_DESCRIPTIONS.items()
        ],
    )
    def scene_clip(
        context: dg.AssetExecutionContext,
        config: SceneClipConfig,
        database: DatabaseResource,
        media: MediaStoreResource,
        vertex: VertexResource,
        budget: BudgetResource,
    ):
        ctx = md.stage_context(context.log, database, media, vertex=vertex, budget=budget)
        limits = ctx.budget
        if config.budget_per_run_usd is not None:
            limits = replace(limits, per_run_usd=config.budget_per_run_usd)
        if config.budget_per_day_usd is not None:
            limits = replace(limits, per_day_usd=config.budget_per_day_usd)
        keys = list(context.partition_keys)
        try:
            run = stage.make_clips(
                replace(ctx, budget=limits),
                graph.slug,
                keys,
                config.options(),
                run_id=context.run.run_id,
            )
        except StageError as exc:
            raise md.failure(exc) from exc
        materializations = [
            dg.AssetMaterialization(
                asset_key=context.asset_key,
                partition=result.key,
                metadata=_metadata(context, run, result),
                tags={DATA_VERSION_TAG: result.outcome.request.fingerprint[:24]},
            )
            for result in run.done
            if result.outcome is not None
        ]
        failed = run.failed
        yield from per_partition_results(materializations, all_succeeded=not failed)
        for outcome in stage.run_checks(run):
            yield md.check_result(outcome)
        if failed:
            lines = "; ".join(f"scene {k}: {v}" for k, v in sorted(failed.items()))
            done = sorted(r.key for r in run.done)
            raise dg.Failure(
                description=f"{len(failed)} of {len(keys)} scene(s) failed ({lines}); "
                f"materialized: {done or 'none'}",
                metadata={"failed": dg.MetadataValue.json(failed), "done": done},
                allow_retries=False,
            )

    at_most_one_billed = md.read_back_check(
        key,
        graph.slug,
        stage.CHECK_ONE_BILLED,
        "The ledger shows at most one billed generation per scene clip (over the request and "
        "its remediated or frames-fallback forms).",
        stage.billed_check,
    )
    return [scene_clip, at_most_one_billed]


def _metadata(
    context: dg.AssetExecutionContext, run: stage.ClipRun, result: stage.ClipResult
) -> dict[str, Any]:
    outcome = result.outcome
    assert outcome is not None and result.path is not None
    request = outcome.request
    label = f"**{PREVIEW_LABEL}**\n\n" if run.preview else ""
    try:  # thumbnails are a convenience: a clip that probed fine is not failed for them
        shown = label + md.thumbnail(thumbnail_strip(result.path, n=4), "thumbnails", size=None)
    except ValueError as exc:
        context.log.warning(f"scene {result.key}: no thumbnails: {exc}")
        shown = f"{label}no thumbnails: {exc}"
    return {
        "status": "cached" if outcome.cached else ("resumed" if outcome.resumed else "generated"),
        "backend": PREVIEW_LABEL if run.preview else run.backend,
        "preview": dg.MetadataValue.md(shown),
        "path": outcome.result_url or "",
        "duration_seconds": result.duration_seconds,
        "conditioning_mode": request.conditioning_mode,
        "conditioning_reason": request.conditioning_reason,
        "references": dg.MetadataValue.json(list(request.reference_tags)),
        "remediation_level": outcome.remediation_level,
        "cost_usd": result.cost_usd,  # what the clip cost, paid once
        "spent_this_run_usd": outcome.cost_usd,  # 0 when reused
        "api_calls": outcome.api_calls,
        "submissions": outcome.attempts,
        "attempts": result.attempts,
        "fingerprint": request.fingerprint,
        "operation_name": outcome.operation_name or "",
    }
