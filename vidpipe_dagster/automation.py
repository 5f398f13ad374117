"""Schedules: a daily backfill of the missing, failed or stale scene clips, within budget."""

import hashlib
import os
from collections.abc import Sequence

import dagster as dg

from vidpipe_dagster.assets.partitions import stage_key
from vidpipe_dagster.assets.scene_clip import (
    SceneClipConfig,
    budget_for,
    scenes_needing_clips,
    start_of_today_utc,
)
from vidpipe_dagster.db.ledger import Ledger
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.domain.budget import plan_within_budget
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.resources.vertex import VertexResource

DEFAULT_BACKFILL_CRON = "0 3 * * *"


def backfill_requests(
    graphs: Sequence[ProjectGraph],
    database: DatabaseResource,
    media: MediaStoreResource,
    vertex: VertexResource,
    log: object | None = None,
) -> list[dg.RunRequest]:
    """One partition-range run per project, covering the scenes that need work and fit the budget.

    Scenes are taken in order until the budget runs out; done scenes inside the range are reused
    at no cost. The run key is derived from what is requested, so a repeated tick is harmless.
    """
    config = SceneClipConfig()
    client = vertex.video_client()
    ledger = Ledger(database.sessionmaker())
    spent = ledger.spent_since(start_of_today_utc())
    requests = []
    for graph in graphs:
        needs, blocked = scenes_needing_clips(graph, database, media, client, config)
        for key, why in blocked.items():
            _log(log, f"{graph.slug} scene {key} needs attention, not scheduled: {why}")
        if not needs:
            _log(log, f"{graph.slug}: every scene clip is up to date")
            continue
        plan = plan_within_budget(
            [(n.key, n.estimate_usd) for n in needs], budget_for(config), spent
        )
        _log(log, f"{graph.slug}: {plan.message}")
        if not plan.accepted:
            continue
        spent += plan.accepted_usd
        reasons = {n.key: n.reason for n in needs if n.key in plan.accepted}
        first, last = plan.accepted[0], plan.accepted[-1]
        digest = hashlib.sha256(repr(sorted(reasons.items())).encode()).hexdigest()[:12]
        requests.append(
            dg.RunRequest(
                run_key=f"{graph.slug}:{first}-{last}:{digest}",
                asset_selection=[
                    stage_key(graph, "scene_references"),
                    stage_key(graph, "scene_clip"),
                ],
                tags={
                    "dagster/asset_partition_range_start": first,
                    "dagster/asset_partition_range_end": last,
                    "vidpipe/project": graph.slug,
                    "vidpipe/scenes": ",".join(plan.accepted),
                    "vidpipe/estimate_usd": f"{plan.accepted_usd:.2f}",
                },
            )
        )
    return requests


def _log(log: object | None, message: str) -> None:
    if log is not None:
        log.info(message)  # type: ignore[attr-defined]


def build_backfill_schedules(graphs: Sequence[ProjectGraph]) -> list[dg.ScheduleDefinition]:
    """One ``<project>_nightly_backfill_schedule`` per project (a schedule's target must share one
    partitions definition). Cron from ``VIDPIPE_BACKFILL_CRON`` (default 03:00 daily); stopped
    until turned on in the UI, or on by default with ``VIDPIPE_BACKFILL_SCHEDULE=on``. The daily
    budget is shared: each tick counts what the ledger says was billed today."""
    running = os.environ.get("VIDPIPE_BACKFILL_SCHEDULE", "").lower() in ("1", "on", "true")
    cron = os.environ.get("VIDPIPE_BACKFILL_CRON") or DEFAULT_BACKFILL_CRON
    return [_schedule_for(graph, cron, running) for graph in graphs]


def _schedule_for(graph: ProjectGraph, cron: str, running: bool) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{graph.prefix}_nightly_backfill_schedule",
        cron_schedule=cron,
        target=dg.AssetSelection.assets(
            stage_key(graph, "scene_references"), stage_key(graph, "scene_clip")
        ),
        default_status=dg.DefaultScheduleStatus.RUNNING
        if running
        else dg.DefaultScheduleStatus.STOPPED,
        description=f"Requests {graph.slug}'s scene clips that are missing, failed or stale, "
        "within the per-run and per-day budgets; what does not fit waits for the next tick.",
        tags={"vidpipe/project": graph.slug},
    )
    def nightly_backfill_schedule(
        context: dg.ScheduleEvaluationContext,
        database: DatabaseResource,
        media: MediaStoreResource,
        vertex: VertexResource,
    ) -> dg.SkipReason | list[dg.RunRequest]:
        requests = backfill_requests([graph], database, media, vertex, context.log)
        return requests or dg.SkipReason(f"{graph.slug}: clips up to date, or nothing fits budget")

    return nightly_backfill_schedule
