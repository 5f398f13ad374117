"""The nightly backfill schedule: missing, failed and stale scenes, within budget, idempotent."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import delete, select

from tests.conftest import save_png, scene_needs, small_spec
from vidpipe_dagster.assets.factory import build_project_assets
from vidpipe_dagster.automation import committed_today
from vidpipe_dagster.cli import main
from vidpipe_dagster.db.ledger import Ledger
from vidpipe_dagster.db.models import (
    Asset,
    AssetCleanReference,
    GenerationLedger,
    Keyframe,
    Scene,
    VideoClip,
)
from vidpipe_dagster.db.project_graphs import load_project_graphs
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.definitions import default_resources, defs
from vidpipe_dagster.runner import materialize_project
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.testing.vertex_emulator import VertexEmulator

FAST = {"scene_clip": {"poll_interval_seconds": 0.05, "requests_per_minute": 0}}


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A persistent instance: a schedule's context reaches only those (``context.instance``)."""
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def emulator() -> Iterator[VertexEmulator]:
    with VertexEmulator(latency_s=0.05, video_height=90, video_fps=4) as emu:
        yield emu


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The shared settings, pointed at the emulator when a test asks for ``emulator``."""
    if "emulator" in request.fixturenames:
        emu = request.getfixturevalue("emulator")
        return settings.replace(vertex_emulator_host=emu.address)
    return settings


def tick(settings: Settings, instance: dg.DagsterInstance) -> dg.ScheduleExecutionData:
    schedule = defs().get_schedule_def("spring_ad_nightly_backfill_schedule")
    resources = default_resources(settings)
    with dg.build_schedule_context(instance=instance, resources=resources) as context:
        return schedule.evaluate_tick(context)


def evaluate(settings: Settings, instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    return list(tick(settings, instance).run_requests or [])


def skip_message(settings: Settings, instance: dg.DagsterInstance) -> str:
    result = tick(settings, instance)
    assert not result.run_requests, result.run_requests
    assert result.skip_message
    return result.skip_message


def make_clips(settings: Settings, instance: dg.DagsterInstance) -> None:
    materialize_project(
        "spring-ad",
        ["references", "clips"],
        instance=instance,
        settings=settings,
        asset_config=FAST,
    )


@dg.op
def _noop() -> None:
    pass


@dg.job
def _other_job() -> None:
    _noop()


def fake_run(
    instance: dg.DagsterInstance, status: dg.DagsterRunStatus, tags: dict[str, str]
) -> dg.DagsterRun:
    """A run record as the queue would hold it (nothing executes)."""
    return instance.create_run_for_job(_other_job, status=status, tags=tags)


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
    assert "vidpipe/deferred_scenes" not in request.tags  # everything fits
    assert request.run_key == evaluate(settings, instance)[0].run_key  # a repeated tick is harmless

    # execute exactly what the schedule asked for, in one run over the range
    [graph] = load_project_graphs(settings.database_url)
    result = dg.materialize(
        build_project_assets(graph),
        selection=request.asset_selection,
        tags=request.tags,
        instance=instance,
        resources=default_resources(settings),
        run_config={"ops": {"spring_ad__scenes": {"config": FAST["scene_clip"]}}},
    )
    assert result.success
    assert skip_message(settings, instance) == "spring-ad: every scene clip is up to date"

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
    settings = settings.replace(budget_per_run_usd=4.0)
    [request] = evaluate(settings, instance)
    assert request.tags["vidpipe/scenes"] == "0"
    assert request.tags["vidpipe/estimate_usd"] == "3.20"
    assert request.tags["vidpipe/deferred_scenes"] == "1"  # waits for a later tick, whole
    assert request.tags["dagster/asset_partition_range_end"] == "0"


def test_schedule_says_what_did_not_fit_and_why(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    imported()
    settings = settings.replace(budget_per_run_usd=3.0)
    assert skip_message(settings, instance) == (
        "spring-ad: nothing fits: estimate 6.40 USD for scenes [0, 1] > available 3.00 USD "
        "(per-run 3.00, per-day 200.00, spent today 0.00 USD)"
    )


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


def open_video_request(settings: Settings, project: str, **details: object) -> Ledger:
    """A paid clip request another worker has opened and not settled (no cost recorded yet)."""
    ledger = Ledger.from_url(settings.database_url)
    ledger.open_submission(
        f"{project}-pending",
        kind="video",
        model="veo-3.1-generate-001",
        backend="vertex",
        project_slug=project,
        subject="0",
        details={"mode": "references", "duration_seconds": 8, "generate_audio": True, **details},
    )
    return ledger


def test_requests_still_open_count_against_the_day(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another project's clip request, submitted but not billed yet, uses the day's budget."""
    imported()
    settings = settings.replace(budget_per_day_usd=6.0)
    assert evaluate(settings, instance)[0].tags["vidpipe/scenes"] == "0"  # 6 - 0 fits one clip
    open_video_request(settings, "other-ad")
    assert skip_message(settings, instance) == (
        "spring-ad: nothing fits: estimate 6.40 USD for scenes [0, 1] > available 2.80 USD "
        "(per-run 50.00, per-day 6.00, spent today 3.20 USD (0.00 billed, 3.20 pending in 1 "
        "open request(s)))"
    )


def test_another_projects_scheduled_run_reserves_its_estimate_once(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two projects' ticks at the same minute: the second sees the first's requested run before
    that run has opened any request, and does not count it twice once it has."""
    imported()
    settings = settings.replace(budget_per_day_usd=6.0)
    tags = {"vidpipe/project": "other-ad", "vidpipe/estimate_usd": "3.20"}
    run = fake_run(instance, dg.DagsterRunStatus.STARTING, tags)
    message = skip_message(settings, instance)
    assert "available 2.80 USD" in message
    assert (
        "spent today 3.20 USD (0.00 billed, 3.20 reserved by scheduled runs yet to submit)"
        in message
    )

    # A manual run of the same project opens a request: it is not the scheduled run's, so the
    # reservation stands and both count.
    open_video_request(settings, "other-ad", run_id="some-manual-run")
    ledger = Ledger.from_url(settings.database_url)
    spend = committed_today(ledger, instance)
    assert (spend.pending_usd, spend.reserved_usd) == (3.2, 3.2)

    ledger.open_submission(  # the scheduled run opens its own request
        "other-ad-scheduled",
        kind="video",
        model="veo-3.1-generate-001",
        backend="vertex",
        project_slug="other-ad",
        subject="1",
        details={"duration_seconds": 8, "generate_audio": True, "run_id": run.run_id},
    )
    spend = committed_today(ledger, instance)
    assert (spend.pending_usd, spend.reserved_usd, spend.committed_usd) == (6.4, 0.0, 6.4)


@pytest.mark.parametrize(
    "status",
    [
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ],
)
def test_unfinished_run_of_the_project_skips_the_tick(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
    status: dg.DagsterRunStatus,
) -> None:
    """A later tick never launches a second run for the same scenes. (QUEUED, in the same list,
    cannot be faked without a code location: Dagster requires a job origin for queued runs.)"""
    imported()
    run = fake_run(instance, status, {"vidpipe/project": "spring-ad"})
    fake_run(instance, dg.DagsterRunStatus.STARTED, {"vidpipe/project": "other-ad"})
    assert skip_message(settings, instance) == (
        f"spring-ad: run {run.run_id} of this project is {status.value.lower()}; "
        "waiting for it to finish before requesting more (if its process is gone, terminate "
        "it in the UI: Runs, then the run, then Terminate)"
    )


@pytest.mark.parametrize("status", [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE])
def test_finished_run_of_the_project_does_not_skip(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
    status: dg.DagsterRunStatus,
) -> None:
    imported()
    fake_run(instance, status, {"vidpipe/project": "spring-ad", "vidpipe/estimate_usd": "90"})
    [request] = evaluate(settings, instance)
    assert request.tags["vidpipe/scenes"] == "0,1"


def test_failed_scene_is_requested_again(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    imported()
    emulator.rai_filter_substrings = ["park at dusk"]  # scene 1 blocked at every level (unbilled)
    make_clips(settings, instance)
    assert clip_status(settings) == {0: "done", 1: "failed"}
    emulator.rai_filter_substrings = []
    [request] = evaluate(settings, instance)
    assert request.tags["vidpipe/scenes"] == "1"
    assert request.tags["vidpipe/estimate_usd"] == "3.20"


def test_new_primary_clean_sheet_makes_its_scenes_stale(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    """Scene 0 references CHAR_01 (mia, mia_face); scene 1 does not."""
    imported()
    make_clips(settings, instance)
    assert skip_message(settings, instance) == "spring-ad: every scene clip is up to date"
    with session_scope(settings.database_url) as session:
        face = session.scalars(select(Asset).where(Asset.asset_key == "mia_face")).one()
        rel = "clean_sheets/mia_face_primary.png"
        save_png(settings.media_root / rel, (128, 128, 128))
        session.add(
            AssetCleanReference(
                asset_id=face.id, tier="tier2_rembg", clean_image_url=rel, is_primary=True
            )
        )
    [request] = evaluate(settings, instance)
    assert request.tags["vidpipe/scenes"] == "0"


@pytest.mark.parametrize(
    ("manifest", "mode", "stale"),
    [(False, "frames", True), (True, "references", False)],
)
def test_edited_keyframe_is_stale_only_when_keyframes_are_sent(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
    tmp_path: Path,
    manifest: bool,
    mode: str,
    stale: bool,
) -> None:
    """Frames mode sends the keyframes, so an edit is new input. References mode sends none (Veo
    rejects referenceImages with image/lastFrame): the clip did not use it, so it stays current."""
    spec = small_spec(manifest=manifest)
    imported(spec)
    make_clips(settings, instance)
    with session_scope(settings.database_url) as session:
        assert {c.conditioning_mode for c in session.scalars(select(VideoClip))} == {mode}
    before = keyframe_hash(settings, 1)
    save_png(tmp_path / "spec" / spec["scenes"][1]["start_frame"], (255, 0, 255))
    imported(spec)
    assert keyframe_hash(settings, 1) != before  # the edit reached the database
    if stale:
        [request] = evaluate(settings, instance)
        assert request.tags["vidpipe/scenes"] == "1"
    else:
        assert skip_message(settings, instance) == "spring-ad: every scene clip is up to date"


def clip_status(settings: Settings) -> dict[int, str]:
    with session_scope(settings.database_url) as session:
        rows = session.execute(
            select(Scene.scene_index, VideoClip.status).join(
                VideoClip, VideoClip.scene_id == Scene.id
            )
        ).all()
        return {index: status for index, status in rows}


def keyframe_hash(settings: Settings, scene_index: int) -> str:
    with session_scope(settings.database_url) as session:
        return session.scalars(
            select(Keyframe.content_sha256)
            .join(Scene, Scene.id == Keyframe.scene_id)
            .where(Scene.scene_index == scene_index, Keyframe.position == "start")
        ).one()


def test_a_scene_whose_last_submit_may_have_been_billed_is_left_to_a_person(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    """A dropped answer after Veo accepted the request: the nightly tick must not pay again."""
    imported()
    emulator.inject("submit", "drop_after_accept")  # the first scene submitted
    make_clips(settings, instance)
    assert sorted(clip_status(settings).values()) == ["done", "failed"]
    message = skip_message(settings, instance)
    assert "may have reached Veo and been billed" in message and "by hand" in message
    submitted = emulator.submit_count
    assert not evaluate(settings, instance) and emulator.submit_count == submitted


def _three_scene_spec() -> dict:
    spec = small_spec()
    spec["scenes"].append({**spec["scenes"][1], "index": 2, "prompt": "The park at night"})
    return spec


def test_a_run_never_spans_a_scene_that_needs_a_person(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    """Scene 1's last request may have been billed: the run stops before it (range 0-0)."""
    imported(_three_scene_spec())
    emulator.inject("submit", "drop", "drop", "drop")  # keep every scene from finishing
    make_clips(settings, instance)
    with session_scope(settings.database_url) as session:
        for row in session.scalars(select(GenerationLedger)):
            scene_one = row.subject == "1"
            row.state = "unknown" if scene_one else "failed_unbilled"
            row.billed = False
    [request] = evaluate(settings, instance)
    assert request.tags["vidpipe/scenes"] == "0"
    assert request.tags["dagster/asset_partition_range_end"] == "0"
    assert request.tags["vidpipe/deferred_scenes"] == "2"


def test_a_worker_that_died_after_sending_blocks_the_scene_without_a_clip_row(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    """No clip row, a ``submitting`` row an hour old with no operation: may have been billed."""
    imported()
    needs, _ = scene_needs(settings)
    assert [n.key for n in needs] == ["0", "1"]
    make_clips(settings, instance)
    with session_scope(settings.database_url) as session:
        scene0 = session.scalars(select(Scene).where(Scene.scene_index == 0)).one()
        session.execute(delete(VideoClip).where(VideoClip.scene_id == scene0.id))
        row = session.scalars(select(GenerationLedger).where(GenerationLedger.subject == "0")).one()
        row.state, row.operation_name = "submitting", None
        row.updated_at = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
    message = skip_message(settings, instance)
    assert "scene 0: its last request may have reached Veo" in message


def test_regenerate_after_a_download_that_keeps_failing_is_scheduled(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A person gave up on an in-flight clip: the tick requests it (it is not 'unknown')."""
    imported()
    emulator.serve_video_uri = True
    emulator.fail_media(*[403] * 40)  # every download attempt of both scenes
    make_clips(settings, instance)
    assert set(clip_status(settings).values()) == {"failed"}
    assert main(["regenerate", "spring-ad", "--scene", "0"]) == 0
    assert "plus up to 3.20 USD for requests whose video never arrived" in capsys.readouterr().out
    [request] = evaluate(settings, instance)
    assert request.tags["vidpipe/scenes"].startswith("0")
