"""A run killed while it ran: the tick says so and how to clear it; ``runs clear-dead`` clears it.

The killed run is real: ``vidpipe-dagster materialize`` in its own process, its clips in flight on
the emulator (which never finishes them), SIGKILLed. Nothing here waits on the clock: each step
waits for an outcome (the run started, the requests in flight, the process reaped).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import select

from tests.conftest import small_spec
from vidpipe_dagster.cli import main
from vidpipe_dagster.db.models import GenerationLedger
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.definitions import default_resources, defs
from vidpipe_dagster.jobs import PROJECT_TAG
from vidpipe_dagster.run_health import HOST_TAG, assess_run, process_alive, this_host
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.testing.vertex_emulator import VertexEmulator

REPO = Path(__file__).resolve().parents[1]
OUTCOME_DEADLINE_S = 600.0  # only reached when something is broken; each wait ends on its outcome

CHILD = """
from vidpipe_dagster.runner import materialize_project
materialize_project(
    "spring-ad",
    ["clips"],
    asset_config={"scene_clip": {"poll_interval_seconds": 0.2, "requests_per_minute": 0}},
)
"""


def wait_for(what: str, probe: Callable[[], Any], child: subprocess.Popen[bytes]) -> Any:
    """Poll until ``probe`` is truthy; fail (with the child's output) if the child exits first."""
    deadline = time.monotonic() + OUTCOME_DEADLINE_S
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        if child.poll() is not None:
            out = child.stdout.read().decode(errors="replace") if child.stdout else ""
            pytest.fail(f"the run's process exited ({child.returncode}) before {what}:\n{out}")
        time.sleep(0.2)
    pytest.fail(f"never saw {what}")


@pytest.fixture
def emulator() -> Iterator[VertexEmulator]:
    with VertexEmulator(latency_s=24 * 3600.0, video_height=90, video_fps=4) as emu:
        yield emu


def in_flight(settings: Settings) -> list[str]:
    with session_scope(settings.database_url) as session:
        return sorted(
            row.subject or ""
            for row in session.scalars(
                select(GenerationLedger).where(
                    GenerationLedger.state == "in_flight",
                    GenerationLedger.operation_name.is_not(None),
                )
            )
        )


def clip_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(
        instance.get_runs(
            filters=dg.RunsFilter(tags={PROJECT_TAG: "spring-ad", "vidpipe/stage": "clips"})
        )
    )


def tick(settings: Settings, instance: dg.DagsterInstance) -> dg.ScheduleExecutionData:
    schedule = defs().get_schedule_def("spring_ad_nightly_backfill_schedule")
    with dg.build_schedule_context(
        instance=instance, resources=default_resources(settings)
    ) as context:
        return schedule.evaluate_tick(context)


@pytest.mark.slow
def test_a_killed_run_is_named_by_the_tick_and_cleared_by_the_cli(
    settings: Settings,
    write_spec: Callable[..., Path],
    emulator: VertexEmulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VIDPIPE_VERTEX_EMULATOR_HOST", emulator.address)
    settings = settings.replace(vertex_emulator_host=emulator.address)
    assert main(["import", str(write_spec(small_spec()))]) == 0
    assert main(["materialize", "spring-ad", "--stage", "references"]) == 0
    capsys.readouterr()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=REPO,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        with dg.DagsterInstance.get() as instance:
            wait_for("both clips in flight", lambda: in_flight(settings) == ["0", "1"], child)
            [run] = clip_runs(instance)
            assert run.status == dg.DagsterRunStatus.STARTED
            assert run.tags[HOST_TAG] == this_host()

            # alive: the tick waits, and clear-dead leaves it alone
            live = assess_run(instance, run)
            assert live.dead is False and str(child.pid) in live.evidence
            assert main(["runs", "clear-dead", "spring-ad"]) == 1
            assert "left alone, alive" in capsys.readouterr().out
            assert "waiting for it to finish" in (tick(settings, instance).skip_message or "")

            child.send_signal(signal.SIGKILL)
            child.wait()  # reaped: the pid is gone from this host
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout:
            child.stdout.close()

    with dg.DagsterInstance.get() as instance:
        [run] = clip_runs(instance)
        assert run.status == dg.DagsterRunStatus.STARTED  # Dagster never saw it end
        message = tick(settings, instance).skip_message or ""
        assert f"run {run.run_id} (started)" in message
        assert f"process {child.pid} on {this_host()} is gone" in message
        assert "`vidpipe-dagster runs clear-dead spring-ad`" in message

        assert main(["runs", "clear-dead", "spring-ad", "--dry-run"]) == 0
        assert f"run {run.run_id} (started): would mark failed" in capsys.readouterr().out
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED

        assert main(["runs", "clear-dead", "spring-ad"]) == 0
        assert f"run {run.run_id} (started): marked failed" in capsys.readouterr().out
        cleared = instance.get_run_by_id(run.run_id)
        assert cleared.status == dg.DagsterRunStatus.FAILURE
        [failure] = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
        ).records
        assert "Marked failed by `vidpipe-dagster runs clear-dead`" in (
            failure.event_log_entry.dagster_event.message or ""
        )

        # the paid requests stay in flight (resumed by the next run), and the tick goes on
        assert in_flight(settings) == ["0", "1"]
        [request] = tick(settings, instance).run_requests or []
        assert request.tags["vidpipe/scenes"] == "0,1"
        assert request.tags["vidpipe/estimate_usd"] == "0.00"  # both resume, none is paid again
        assert main(["runs", "clear-dead", "spring-ad"]) == 0
        assert "no unfinished run" in capsys.readouterr().out


def test_a_process_is_alive_only_if_it_started_before_it_was_named() -> None:
    """A pid reused by a newer process is not the run's process."""
    now = time.time()
    assert process_alive(os.getpid(), now)
    assert not process_alive(os.getpid(), now - 24 * 3600)  # named a day before we started
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert not process_alive(int(done.stdout), now)  # exited and reaped


def test_a_run_from_another_machine_or_without_a_host_is_never_called_dead(
    settings: Settings, instance: dg.DagsterInstance
) -> None:
    @dg.op
    def noop() -> None:
        pass

    @dg.job
    def some_job() -> None:
        noop()

    status = dg.DagsterRunStatus.STARTED
    elsewhere = instance.create_run_for_job(
        some_job, status=status, tags={HOST_TAG: "render-07", PROJECT_TAG: "spring-ad"}
    )
    health = assess_run(instance, elsewhere)
    assert health.dead is None and "render-07" in health.evidence
    untagged = instance.create_run_for_job(some_job, status=status, tags={PROJECT_TAG: "x"})
    assert assess_run(instance, untagged).dead is None
    here = instance.create_run_for_job(
        some_job, status=status, tags={HOST_TAG: this_host(), PROJECT_TAG: "spring-ad"}
    )
    health = assess_run(instance, here)
    assert health.dead is None and "no process" in health.evidence  # no event names one yet
