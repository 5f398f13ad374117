"""The nightly backfill schedule: missing, failed and stale scenes, within budget, idempotent."""

from __future__ import annotations

import dagster as dg
import pytest

from tests.conftest import small_spec
from vidpipe_dagster.assets.factory import build_project_assets
from vidpipe_dagster.db.project_graphs import load_project_graphs
from vidpipe_dagster.definitions import default_resources, defs
from vidpipe_dagster.runner import materialize_project
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.testing.vertex_emulator import VertexEmulator

FAST = {"scene_clip": {"poll_interval_seconds": 0.05, "requests_per_minute": 0}}


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch):
    with VertexEmulator(latency_s=0.05, video_height=90, video_fps=4) as emu:
        monkeypatch.setenv("VIDPIPE_VERTEX_EMULATOR_HOST", emu.address)
        yield emu


def evaluate(settings: Settings, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    schedule = defs().get_schedule_def("spring_ad_nightly_backfill_schedule")
    resources = default_resources(settings)
    with dg.build_schedule_context(instance=instance, resources=resources) as context:
        result = schedule.evaluate_tick(context)
    return list(result.run_requests or [])


def test_schedule_requests_then_skips_then_sees_stale_inputs(
    settings: Settings,
    imported,
    write_spec,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    spec = small_spec()
    imported(spec)
    [request] = evaluate(settings, instance)
    assert request.tags["dagster/asset_partition_range_start"] == "0"
    assert request.tags["dagster/asset_partition_range_end"] == "1"
    assert request.tags["vidpipe/estimate_usd"] == "6.40"  # two referenced 8 s clips
    assert request.run_key == evaluate(settings, instance)[0].run_key  # a repeated tick is harmless

    # execute exactly what the schedule asked for, in one run over the range
    [graph] = load_project_graphs(settings.database_url)
    result = dg.materialize(
        build_project_assets(graph),
        selection=request.asset_selection,
        tags=request.tags,
        instance=instance,
        resources=default_resources(settings),
        run_config={"ops": {"spring_ad__scene_clip": {"config": FAST["scene_clip"]}}},
    )
    assert result.success
    assert evaluate(settings, instance) == []  # everything up to date

    spec["scenes"][1]["prompt"] = "The park at night"  # an edited prompt makes scene 1 stale
    imported(spec)
    [request] = evaluate(settings, instance)
    assert request.tags["vidpipe/scenes"] == "1"


def test_schedule_defers_what_does_not_fit_the_budget(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    imported()
    monkeypatch.setenv("VIDPIPE_BUDGET_PER_RUN_USD", "4")
    [request] = evaluate(settings, instance)
    assert request.tags["vidpipe/scenes"] == "0"
    assert request.tags["dagster/asset_partition_range_end"] == "0"


def test_manual_run_over_budget_stops_before_any_paid_call(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    imported()
    [refs, clips] = materialize_project(
        "spring-ad",
        ["references", "clips"],
        instance=instance,
        settings=settings,
        asset_config={"scene_clip": {**FAST["scene_clip"], "budget_per_run_usd": 5.0}},
    )
    assert refs.succeeded == ["0", "1"]
    error = clips.failed["0"]
    assert "over budget, nothing was submitted" in error
    assert "estimated 6.40 USD" in error and "5.00 USD per run" in error
    assert emulator.submit_attempts == 0
