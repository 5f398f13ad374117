"""Issue 14: an accepted operation's name is never lost when the database falters.

Real faults only: a SQLite file held by another connection's ``BEGIN EXCLUSIVE`` (what a second
writer does), and a PostgreSQL connection ended by ``pg_terminate_backend`` while it waits.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.pg import requires_postgres, temporary_database
from tests.test_clip_generation import FakeVeo, World, job
from vidpipe_dagster.db import ledger as ledger_module
from vidpipe_dagster.db.journal import SUFFIX
from vidpipe_dagster.db.ledger import Ledger, LedgerConflict, LedgerUnavailable
from vidpipe_dagster.db.session import migrate
from vidpipe_dagster.domain.video_requests import VideoRequest
from vidpipe_dagster.generation.clips import Limits


class Holder:
    """Another writer on the same SQLite file: ``BEGIN EXCLUSIVE`` until ``release``."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.held = False

    def take(self) -> None:
        if not self.held:
            self.connection.execute("BEGIN EXCLUSIVE")
            self.held = True

    def release(self) -> None:
        if self.held:
            self.connection.execute("COMMIT")
            self.held = False

    def close(self) -> None:
        self.release()
        self.connection.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "engine.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def world(db_path: Path, tmp_path: Path) -> World:
    staging = tmp_path / "staging"
    staging.mkdir()
    return World(Ledger.from_url(f"sqlite:///{db_path}"), staging)


@pytest.fixture(autouse=True)
def short_lock_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Journal after 1 s of waiting for the lock, not 5 (the tests wait for every attempt)."""
    monkeypatch.setattr(ledger_module, "SENT_WRITE_BUSY_MS", 1000)


@pytest.fixture
def holder(db_path: Path) -> Iterator[Holder]:
    held = Holder(db_path)
    yield held
    held.close()


def journal_of(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + SUFFIX)


def lock_on_first_submit(client: FakeVeo, holder: Holder) -> None:
    """The other writer takes the file just as the API accepts the request (the issue's case)."""

    def on_submit(_request: VideoRequest) -> None:
        holder.take()

    client.on_submit = on_submit


@pytest.mark.slow
def test_names_accepted_while_sqlite_is_locked_are_journaled_and_the_next_run_pays_nothing(
    world: World, holder: Holder, db_path: Path
) -> None:
    """The file stays locked for the whole run: the engine keeps polling and stores the video,
    the operation name and its end go to the journal beside the file, and the next run (once
    the lock is gone) replays them before planning and reuses the clip with no API call."""
    client = world.client()
    lock_on_first_submit(client, holder)
    j = job(1)
    [outcome] = world.run([j], client, Limits(max_ledger_retries=1))

    assert outcome.status == "done", outcome.error
    assert client.submit_calls == 1 and client.poll_calls >= 1  # polled while unrecorded
    assert world.video(outcome) == b"MP4" + j.request.fingerprint.encode()
    assert any("ledger journal only" in note for note in outcome.notes), outcome.notes
    [row] = world.ledger.entries(j.request.fingerprint)  # readers still read under WAL
    assert (row.state, row.operation_name) == ("submitting", None)  # the old loss, kept safe:
    journal = journal_of(db_path).read_text()
    assert "record_operation" in journal and "operations/1" in journal and "mark_done" in journal

    holder.release()
    again = world.client()
    [second] = world.run([j], again)  # a new run: replays first, then plans
    assert second.status == "done" and second.cached and again.api_calls == 0
    [row] = world.ledger.entries(j.request.fingerprint)
    assert (row.state, row.operation_name, row.billed) == ("done", "operations/1", True)
    assert row.result_url == outcome.result_url
    assert world.ledger.billed_count(j.request.fingerprint) == 1
    assert not journal_of(db_path).exists()


@pytest.mark.slow
def test_a_lock_released_during_the_run_is_outlasted_by_the_background_retries(
    world: World, holder: Holder, db_path: Path
) -> None:
    """Locked for a few seconds after the API accepted: the name is journaled at once, retried
    with backoff while the job polls, and lands in the database in the same run; the journal's
    copy replays onto the finished row without undoing anything."""
    client = world.client()

    def on_submit(_request: VideoRequest) -> None:
        holder.take()
        threading.Timer(5.0, holder.release).start()  # the other writer finishes later

    client.on_submit = on_submit
    j = job(1)
    [outcome] = world.run([j], client, Limits(max_ledger_retries=30, backoff_base=1.0))
    assert outcome.status == "done", outcome.error
    assert any("recorded after" in message for _key, message in world.events), world.events
    [row] = world.ledger.entries(j.request.fingerprint)
    assert (row.state, row.operation_name) == ("done", "operations/1")
    world.ledger.replay_journal()
    [after] = world.ledger.entries(j.request.fingerprint)
    assert (after.state, after.operation_name, after.result_url) == (
        "done",
        "operations/1",
        row.result_url,
    )
    assert not journal_of(db_path).exists()


def test_a_journaled_name_is_resumed_not_paid_for_again(
    world: World, holder: Holder, db_path: Path
) -> None:
    """The worker stops right after journaling (nothing else is known): the next worker's
    ``open_submission`` replays first and finds the operation to resume, not a row to pay for."""
    ledger = world.ledger
    fingerprint = uuid.uuid4().hex
    entry_id = open_row(ledger, fingerprint)
    holder.take()
    with pytest.raises(LedgerUnavailable, match="kept in the journal") as refused:
        ledger.record_operation(entry_id, "operations/accepted")
    assert refused.value.journaled
    with pytest.raises(LedgerUnavailable):  # still locked: nothing is opened, nothing is paid
        open_row(ledger, fingerprint)
    holder.release()

    later = Ledger.from_url(f"sqlite:///{db_path}")  # another process, later
    with pytest.raises(LedgerConflict) as conflict:
        open_row(later, fingerprint)
    assert conflict.value.entry.operation_name == "operations/accepted"
    assert later.get(entry_id).state == "in_flight"
    assert not later.outcome_unknown([fingerprint], "vertex")


def open_row(ledger: Ledger, fingerprint: str) -> uuid.UUID:
    return ledger.open_submission(
        fingerprint,
        kind="video",
        model="veo-3.1-generate-001",
        backend="vertex",
        project_slug="spring-ad",
        subject="1",
    )


@requires_postgres
@pytest.mark.postgres
def test_a_postgres_connection_killed_mid_write_keeps_the_name(tmp_path: Path) -> None:
    """The connection recording the name is ended by the server (``pg_terminate_backend``)
    while it waits: the name goes to the journal in the media root and a later ledger replays
    it; a connection killed while idle in the pool is replaced without losing anything."""
    with temporary_database() as url:
        migrate(url)
        ledger = Ledger.from_url(url, journal_dir=tmp_path)
        fingerprint = uuid.uuid4().hex
        entry_id = open_row(ledger, fingerprint)

        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        blocker = None
        try:
            with admin.connect() as idle_killer:  # pooled connections die while idle
                idle_killer.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            blocker = create_engine(url).connect()
            blocker.execute(text("LOCK TABLE generation_ledger IN ACCESS EXCLUSIVE MODE"))
            errors: list[BaseException] = []

            def record() -> None:
                try:
                    ledger.record_operation(entry_id, "operations/pg-accepted")
                except BaseException as exc:
                    errors.append(exc)

            writer = threading.Thread(target=record)
            writer.start()
            blocker_pid = blocker.execute(text("SELECT pg_backend_pid()")).scalar()
            killed = 0
            with admin.connect() as killer:
                while writer.is_alive() and not killed:  # wait for the write to block, then kill
                    killed = len(
                        killer.execute(
                            text(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                                "AND pid <> :blocker"
                            ),
                            {"blocker": blocker_pid},
                        ).all()
                    )
                    time.sleep(0.05)
            writer.join()
            assert killed == 1
            [error] = errors
            assert isinstance(error, LedgerUnavailable) and error.journaled, error
        finally:
            if blocker is not None:
                blocker.rollback()
                blocker.close()
            admin.dispose()

        assert ledger.get(entry_id).operation_name is None  # the database never got it...
        later = Ledger.from_url(url, journal_dir=tmp_path)
        with pytest.raises(LedgerConflict) as conflict:  # ...the next run does, before paying
            open_row(later, fingerprint)
        assert conflict.value.entry.operation_name == "operations/pg-accepted"
        assert later.get(entry_id).state == "in_flight"
        assert later.journal is not None and not later.journal.pending()
