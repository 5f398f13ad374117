"""Schedules: a nightly backfill of the missing, failed or stale scene clips, within budget.

One schedule per project; each tick launches at most one run for its project (``backfill_tick``):
- while a run tagged with the project is unfinished (queued, starting, running, canceling), the tick
  skips and names it, so a slow run is never doubled by the next tick; a run whose process is
  proven gone (``run_health``: killed while it ran, so Dagster never saw it end) is named as such,
  with the command that clears it (``vidpipe-dagster runs clear-dead SLUG``);
- a scene is requested when its clip is missing, failed, or stale: the request it would send now
  differs from the one that made the clip (an edited prompt, a new primary clean sheet of a
  referenced asset, an edited keyframe in frames mode). In references mode Veo is sent no keyframes
  (``domain.video_requests``), so editing a keyframe there changes nothing and is not stale;
- the budget (``domain.budget``) is per run, which for a schedule is per tick of its project,
  and per day across all projects. Today's use is what the ledger committed (billed, plus requests
  still open or of unknown outcome: ``Ledger.spend_since``) plus what unfinished scheduled runs
  estimated and have not opened yet, so ticks that fire together cannot each spend the day;
- a scene whose last request may have been billed without an answer is left to a person;
- the prefix of scenes that fits is requested as one partition-range run that never spans a scene
  left to a person, tagged with its scenes, estimate and the scenes deferred to a later tick;
  otherwise the tick says why it skipped: up to date, or what did not fit against which limits.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import dagster as dg

from vidpipe_dagster.db.ledger import Ledger
from vidpipe_dagster.db.media import MediaStore
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.db.session import Database
from vidpipe_dagster.domain.budget import Budget, DailySpend, plan_within_budget, start_of_today_utc
from vidpipe_dagster.domain.video_requests import PriceTable
from vidpipe_dagster.generation.backends import GenerationBackends
from vidpipe_dagster.jobs import PROJECT_TAG, stage_key
from vidpipe_dagster.resources.budget import BudgetResource
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.resources.vertex import VertexResource
from vidpipe_dagster.run_health import CLEAR_COMMAND, assess_run
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.context import StageContext
from vidpipe_dagster.stages.scene_clip import ClipOptions
from vidpipe_dagster.stages.schedule import SceneNeed, scenes_needing_clips

SCENES_TAG = "vidpipe/scenes"
ESTIMATE_TAG = "vidpipe/estimate_usd"
DEFERRED_TAG = "vidpipe/deferred_scenes"
# Dagster's own list of statuses of a run that has not finished (it is not public API).
UNFINISHED_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.SUSPENDED,
    dg.DagsterRunStatus.CANCELING,
]


def backfill_tick(
    graph: ProjectGraph,
    database: Database,
    media: MediaStore,
    backends: GenerationBackends,
    budget: Budget,
    instance: dg.DagsterInstance,
    log: object | None = None,
) -> dg.RunRequest | dg.SkipReason:
    """One partition-range run over the project's scenes that need work and fit the budget, or
    the reason there is none. Done scenes inside the range are reused at no cost; the run key is
    derived from what is requested, so a repeated tick is harmless."""
    unfinished = instance.get_runs(
        filters=dg.RunsFilter(tags={PROJECT_TAG: graph.slug}, statuses=UNFINISHED_RUN_STATUSES)
    )
    if unfinished:
        return dg.SkipReason(_waiting_for(graph.slug, unfinished, instance))
    options = ClipOptions()
    ctx = StageContext(database=database, media=media, backends=backends, budget=budget)
    needs, blocked = scenes_needing_clips(
        ctx, graph.slug, graph.scene_keys, graph.video_model, options
    )
    attention = "; ".join(f"scene {key}: {why}" for key, why in blocked.items())
    for key, why in blocked.items():
        _log(log, f"{graph.slug} scene {key} needs attention, not scheduled: {why}")
    if not needs:
        if blocked:
            return dg.SkipReason(
                f"{graph.slug}: nothing to request; the other scene clips are up to date, "
                f"these need attention first: {attention}"
            )
        return dg.SkipReason(f"{graph.slug}: every scene clip is up to date")
    runnable, waiting = _split_at_blocked(needs, blocked, list(graph.scene_keys))
    if waiting:
        _log(
            log,
            f"{graph.slug}: scene(s) {', '.join(n.key for n in waiting)} wait: a run's range "
            "would cross a scene that needs attention",
        )
    prices = options.prices
    plan = plan_within_budget(
        [(n.key, n.estimate_usd) for n in runnable],
        budget,
        committed_today(ctx.ledger(), instance, prices),
    )
    _log(log, f"{graph.slug}: {plan.message}")
    if not plan.accepted:
        suffix = f"; needing attention: {attention}" if blocked else ""
        return dg.SkipReason(f"{graph.slug}: {plan.nothing_fits_message}{suffix}")
    accepted = plan.accepted
    deferred = [*plan.deferred, *(n.key for n in waiting)]
    reasons = {n.key: n.reason for n in needs if n.key in accepted}
    first, last = accepted[0], accepted[-1]
    digest = hashlib.sha256(repr(sorted(reasons.items())).encode()).hexdigest()[:12]
    tags = {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
        PROJECT_TAG: graph.slug,
        SCENES_TAG: ",".join(accepted),
        ESTIMATE_TAG: f"{plan.accepted_usd:.2f}",
    }
    if deferred:
        tags[DEFERRED_TAG] = ",".join(deferred)
    return dg.RunRequest(
        run_key=f"{graph.slug}:{first}-{last}:{digest}",
        asset_selection=[stage_key(graph, "scene_references"), stage_key(graph, "scene_clip")],
        tags=tags,
    )


def _waiting_for(slug: str, runs: Sequence[dg.DagsterRun], instance: dg.DagsterInstance) -> str:
    """Why the tick waits: the run it waits for, or, when every unfinished run of the project is
    proven dead, those runs and the one command that clears them (a person's say: clearing a run
    whose requests may still be billed is not the schedule's to decide)."""
    health = {run.run_id: assess_run(instance, run) for run in runs}
    waiting = [run for run in runs if health[run.run_id].dead is not True]
    if waiting:
        run = waiting[0]
        return (
            f"{slug}: run {run.run_id} of this project is {run.status.value.lower()}; "
            "waiting for it to finish before requesting more (if its process is gone, terminate "
            "it in the UI: Runs, then the run, then Terminate)"
        )
    dead = "; ".join(
        f"run {run.run_id} ({run.status.value.lower()}): {health[run.run_id].evidence}"
        for run in runs
    )
    return (
        f"{slug}: skipped, because Dagster still lists a run of this project as unfinished whose "
        f"process is gone: {dead}. Clear it with `{CLEAR_COMMAND.format(slug=slug)}` (marks it "
        "failed; its ledger rows stay and the next run resumes requests in flight); the next "
        "tick then requests the project's scenes"
    )


def _split_at_blocked(
    needs: Sequence[SceneNeed], blocked: dict[str, str], order: list[str]
) -> tuple[list[SceneNeed], list[SceneNeed]]:
    """The scenes one run may cover, and those after the first blocked scene inside its range.

    A run covers every scene from its first to its last partition, and a blocked scene inside
    (e.g. one whose last request may have been billed) would be sent again by that run.
    """
    if not needs:
        return [], []
    position = {key: i for i, key in enumerate(order)}
    start = position[needs[0].key]
    stop = min((position[k] for k in blocked if position.get(k, -1) > start), default=len(order))
    runnable = [n for n in needs if position[n.key] < stop]
    return runnable, [n for n in needs if position[n.key] >= stop]


def committed_today(
    ledger: Ledger, instance: dg.DagsterInstance, prices: PriceTable | None = None
) -> DailySpend:
    """Today's use of the per-day budget: the ledger's committed spend, plus, for every unfinished
    scheduled run (it carries ``vidpipe/estimate_usd``), what its estimate exceeds the requests
    that run opened (those are in the ledger already, marked with its run id)."""
    spent = ledger.spend_since(start_of_today_utc(), price_table=prices)
    reserved = 0.0
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=UNFINISHED_RUN_STATUSES))
    for record in records:
        tags = record.dagster_run.tags
        slug, estimate = tags.get(PROJECT_TAG), tags.get(ESTIMATE_TAG)
        if slug is None or estimate is None:
            continue
        opened = ledger.spend_since(
            _naive_utc(record.create_timestamp),
            project_slug=slug,
            price_table=prices,
            run_id=record.dagster_run.run_id,
        )
        reserved += max(0.0, float(estimate) - opened.committed_usd)
    return replace(spent, reserved_usd=round(reserved, 4))


def _naive_utc(moment: datetime) -> datetime:
    """The ledger's clock: naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _log(log: object | None, message: str) -> None:
    if log is not None:
        log.info(message)  # type: ignore[attr-defined]


def build_backfill_schedule(
    graph: ProjectGraph, settings: Settings, scenes_job: dg.JobDefinition
) -> dg.ScheduleDefinition:
    """``<project>_nightly_backfill_schedule`` (a schedule's target must share one partitions
    definition). Cron from ``VIDPIPE_BACKFILL_CRON`` (default 03:00 daily); stopped until turned
    on in the UI, or on by default with ``VIDPIPE_BACKFILL_SCHEDULE=on``. The daily budget is
    shared by all projects (see the module docstring)."""

    @dg.schedule(
        name=f"{graph.prefix}_nightly_backfill_schedule",
        cron_schedule=settings.backfill_cron,
        job=scenes_job,
        default_status=dg.DefaultScheduleStatus.RUNNING
        if settings.backfill_schedule_on
        else dg.DefaultScheduleStatus.STOPPED,
        description=f"Requests {graph.slug}'s scene clips that are missing, failed or stale (an "
        "edited prompt, a new primary clean sheet, an edited keyframe in frames mode; references "
        "mode sends no keyframes, so a keyframe edit there is not stale), in one run per tick, "
        "none while a run of the project is unfinished. Budget: per run (= per tick of this "
        "project) and per day across projects, counting billed and pending spend; what does not "
        "fit waits for a later tick (tag vidpipe/deferred_scenes).",
        tags={PROJECT_TAG: graph.slug},
    )
    def nightly_backfill_schedule(
        context: dg.ScheduleEvaluationContext,
        database: DatabaseResource,
        media: MediaStoreResource,
        vertex: VertexResource,
        budget: BudgetResource,
    ) -> dg.RunRequest | dg.SkipReason:
        return backfill_tick(
            graph,
            database.database(),
            media.store(),
            vertex.backends(),
            budget.budget(),
            context.instance,
            context.log,
        )

    return nightly_backfill_schedule
