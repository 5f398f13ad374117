"""The generation ledger: state transitions and concurrent writers on a real database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event

from vidpipe_dagster.db import ledger as ledger_module
from vidpipe_dagster.db.ledger import DailyCap, Ledger, LedgerConflict, OverDailyBudget
from vidpipe_dagster.db.models import GenerationLedger
from vidpipe_dagster.db.session import get_engine, migrate

POSTGRES_URL = os.environ.get("VIDPIPE_TEST_POSTGRES_URL")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not POSTGRES_URL, reason="VIDPIPE_TEST_POSTGRES_URL not set"),
            ],
        ),
    ]
)
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite" else POSTGRES_URL
    assert url
    migrate(url)
    yield Ledger.from_url(url)


def fp() -> str:
    """A fresh fingerprint, so tests never see each other's rows on a shared server."""
    return uuid.uuid4().hex


def open_row(ledger: Ledger, fingerprint: str, backend: str = "vertex") -> uuid.UUID:
    return ledger.open_submission(
        fingerprint,
        kind="video",
        model="veo-3.1-generate-001",
        backend=backend,
        project_slug="spring-ad",
        subject="3",
        details={"mode": "references"},
    )


def test_lifecycle_submitting_in_flight_done(ledger: Ledger) -> None:
    f = fp()
    entry_id = open_row(ledger, f)
    row = ledger.get(entry_id)
    assert (row.state, row.operation_name, row.billed) == ("submitting", None, False)
    assert (row.project_slug, row.subject, row.details) == (
        "spring-ad",
        "3",
        {"mode": "references"},
    )
    assert ledger.find_reusable(f) is None  # no operation name: nothing to resume

    ledger.record_operation(entry_id, "projects/p/operations/1")
    resumable = ledger.find_reusable(f)
    assert resumable is not None
    assert (resumable.id, resumable.state, resumable.operation_name) == (
        entry_id,
        "in_flight",
        "projects/p/operations/1",
    )
    assert ledger.billed_count(f) == 0

    ledger.mark_done(entry_id, cost_usd=3.2, result_url="clips/a.mp4")
    done = ledger.find_reusable(f)
    assert done is not None
    assert (done.state, done.billed, done.cost_usd, done.result_url) == (
        "done",
        True,
        3.2,
        "clips/a.mp4",
    )
    assert ledger.billed_count(f) == 1


@pytest.mark.parametrize(
    ("billed", "state", "count"), [(False, "failed_unbilled", 0), (True, "failed_billed", 1)]
)
def test_failures_are_not_reused_and_billing_is_recorded(
    ledger: Ledger, billed: bool, state: str, count: int
) -> None:
    f = fp()
    entry_id = open_row(ledger, f)
    ledger.record_operation(entry_id, "op")
    ledger.mark_failed(entry_id, billed=billed, error="boom")
    row = ledger.get(entry_id)
    assert (row.state, row.billed, row.error) == (state, billed, "boom")
    assert ledger.find_reusable(f) is None
    assert ledger.billed_count(f) == count
    open_row(ledger, f)  # a failed request does not block a new one


def test_done_is_final_for_failure_marks(ledger: Ledger) -> None:
    f = fp()
    entry_id = open_row(ledger, f)
    ledger.record_operation(entry_id, "op")
    ledger.mark_done(entry_id, cost_usd=1.0, result_url="u")
    ledger.mark_failed(entry_id, billed=False, error="late poller")
    ledger.mark_unknown(entry_id)
    ledger.record_operation(entry_id, "other")
    row = ledger.get(entry_id)
    assert (row.state, row.operation_name, row.billed) == ("done", "op", True)


def test_reuse_prefers_done_and_never_crosses_backends(ledger: Ledger) -> None:
    f = fp()
    preview = open_row(ledger, f, backend="animatic")
    ledger.record_operation(preview, "animatic/1")
    ledger.mark_done(preview, cost_usd=0.0, result_url="preview.mp4")
    assert ledger.find_reusable(f, backend="vertex") is None  # a preview never stands in
    real = open_row(ledger, f, backend="vertex")  # and does not block the real request
    ledger.record_operation(real, "op/2")
    found = ledger.find_reusable(f, backend="vertex")
    assert found is not None and found.id == real
    reused = ledger.find_reusable(f, backend="animatic")
    assert reused is not None and reused.state == "done"
    assert ledger.billed_count(f, backend="vertex") == 0
    assert ledger.billed_count(f, backend="animatic") == 1


def test_open_refuses_to_pay_twice(ledger: Ledger) -> None:
    f = fp()
    entry_id = open_row(ledger, f)
    with pytest.raises(LedgerConflict, match="another worker is submitting") as young:
        open_row(ledger, f)
    assert young.value.entry.id == entry_id
    ledger.record_operation(entry_id, "op")
    with pytest.raises(LedgerConflict, match="already in_flight"):
        open_row(ledger, f)
    ledger.mark_done(entry_id, cost_usd=3.2, result_url="u")
    with pytest.raises(LedgerConflict, match="already done"):
        open_row(ledger, f)


def test_stale_ambiguous_submission_is_marked_unknown_and_resubmitted_once(
    ledger: Ledger,
) -> None:
    f = fp()
    crashed = open_row(ledger, f)  # the process died before the API answered
    impatient = Ledger(ledger.sessions, stale_after_s=0.0)
    second = open_row(impatient, f)
    old = ledger.get(crashed)
    assert old.state == "unknown" and "may have been billed" in (old.error or "")
    new = ledger.get(second)
    assert new.state == "submitting"
    assert new.details == {"mode": "references", "after_ambiguous": [str(crashed)]}
    assert [e.id for e in ledger.entries(f)] == [crashed, second]


def test_a_noted_retry_keeps_a_slow_submission_live(ledger: Ledger) -> None:
    f = fp()
    entry_id = open_row(ledger, f)
    with ledger.sessions.begin() as session:  # pretend the row was written an hour ago
        row = session.get(GenerationLedger, entry_id)
        assert row is not None and row.updated_at is not None
        row.updated_at = row.updated_at - timedelta(hours=1)
    strict = Ledger(ledger.sessions, stale_after_s=600.0)
    strict.note(entry_id, "transient submit error 1: 429")
    with pytest.raises(LedgerConflict):
        open_row(strict, f)
    assert strict.get(entry_id).error == "transient submit error 1: 429"


def test_result_lost_stops_reuse_but_keeps_the_charge(ledger: Ledger) -> None:
    f = fp()
    first = open_row(ledger, f)
    ledger.record_operation(first, "op/1")
    ledger.mark_done(first, cost_usd=3.2, result_url="gone.mp4")
    ledger.mark_result_lost(first, "file deleted")
    assert ledger.find_reusable(f) is None
    second = open_row(ledger, f)
    ledger.record_operation(second, "op/2")
    ledger.mark_done(second, cost_usd=3.2, result_url="new.mp4")
    assert ledger.billed_count(f) == 2
    assert ledger.get(first).state == "result_lost"


def test_concurrent_openers_get_exactly_one_row(ledger: Ledger) -> None:
    f = fp()

    def race(_: int) -> uuid.UUID | None:
        try:
            return open_row(ledger, f)
        except LedgerConflict:
            return None

    with ThreadPoolExecutor(12) as pool:
        winners = [r for r in pool.map(race, range(12)) if r is not None]
    assert len(winners) == 1
    assert len(ledger.entries(f)) == 1


def test_many_generations_finishing_at_once(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write lands in the database. Writes after sending normally give up on SQLite's lock
    after SENT_WRITE_BUSY_MS and go to the journal (tests/test_ledger_faults.py); here they may
    wait as long as a loaded machine needs, so the test is about concurrency, not the clock."""
    monkeypatch.setattr(ledger_module, "SENT_WRITE_BUSY_MS", 600_000)
    fingerprints = [fp() for _ in range(40)]
    ids = [open_row(ledger, f) for f in fingerprints]

    def finish(args: tuple[int, uuid.UUID]) -> None:
        n, entry_id = args
        ledger.record_operation(entry_id, f"op/{n}")
        ledger.mark_done(entry_id, cost_usd=3.2, result_url=f"clips/{n}.mp4")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(finish, enumerate(ids)))
    for n, f in enumerate(fingerprints):
        entry = ledger.find_reusable(f)
        assert entry is not None and entry.result_url == f"clips/{n}.mp4"
        assert ledger.billed_count(f) == 1


def test_unknown_row_id_is_an_error(ledger: Ledger) -> None:
    with pytest.raises(KeyError):
        ledger.mark_done(uuid.uuid4(), cost_usd=0.0, result_url="u")


def open_request(
    ledger: Ledger,
    project: str,
    *,
    kind: str = "video",
    model: str = "veo-3.1-generate-001",
    backend: str = "vertex",
    **details: object,
) -> uuid.UUID:
    return ledger.open_submission(
        fp(),
        kind=kind,
        model=model,
        backend=backend,
        project_slug=project,
        subject="0",
        details=details or None,
    )


def test_spend_counts_billed_and_what_is_still_open(ledger: Ledger) -> None:
    """The daily budget's use: billed rows at their cost, rows that may still bill at their
    expected cost, counted from when they were opened; unbilled failures count nothing."""
    project, image_model = f"spend-{fp()[:8]}", f"image-{fp()[:8]}"
    clip = {"duration_seconds": 8, "generate_audio": True}

    yesterday = open_request(ledger, project, **clip)  # opened before the day began
    with ledger.sessions.begin() as session:
        row = session.get(GenerationLedger, yesterday)
        assert row is not None
        row.created_at = row.created_at - timedelta(days=1)
    since = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=5)
    ledger.record_operation(yesterday, "op/y")
    ledger.mark_done(yesterday, cost_usd=3.2, result_url="y.mp4")  # settles today: not today's

    done = open_request(ledger, project, **clip)
    ledger.mark_done(done, cost_usd=3.2, result_url="d.mp4")  # billed 3.20
    ledger.update_result(done, "again.mp4")  # a re-download is no new spend
    ledger.mark_failed(open_request(ledger, project, **clip), billed=True, error="x")  # +3.20
    ledger.mark_failed(open_request(ledger, project, **clip), billed=False, error="x")  # 0
    image = open_request(ledger, project, kind="image", model=image_model)
    ledger.mark_done(image, cost_usd=0.039, result_url="")  # billed 0.039

    open_request(ledger, project, estimate_usd=1.5, **clip)  # pending at its estimate: 1.50
    in_flight = open_request(ledger, project, duration_seconds=4, generate_audio=False)
    ledger.record_operation(in_flight, "op/f")  # pending: 4 s without audio, 0.80
    ledger.mark_unknown(open_request(ledger, project, mode="references"))  # 8 s, audio: 3.20
    open_request(ledger, project, backend="animatic", **clip)  # a local preview: 0
    open_request(ledger, project, kind="image", model=image_model)  # as a settled one: 0.039
    open_request(ledger, project, model="veo-9-unpriced", **clip)  # highest known price: 4.00
    other = open_request(ledger, f"{project}-other", **clip)
    ledger.mark_done(other, cost_usd=1.0, result_url="o.mp4")

    spend = ledger.spend_since(since, project_slug=project)
    assert (spend.billed_usd, spend.pending_usd, spend.pending_requests) == (6.439, 9.539, 6)
    assert spend.committed_usd == 15.978
    everyone = ledger.spend_since(since).committed_usd  # all projects, as the budget checks
    with ledger.sessions() as session:
        exact = session.get_bind().dialect.name == "sqlite"  # a shared server has other rows
    assert everyone == 16.978 if exact else everyone >= 16.978


def test_spend_of_a_project_since_a_moment(ledger: Ledger) -> None:
    """What a scheduled run has opened so far (its reservation's used part)."""
    project = f"spend-{fp()[:8]}"
    open_request(ledger, project, duration_seconds=8, generate_audio=True)
    since = datetime.now(UTC).replace(tzinfo=None)
    assert ledger.spend_since(since, project_slug=project).committed_usd == 0.0
    open_request(ledger, project, duration_seconds=8, generate_audio=True)
    assert ledger.spend_since(since, project_slug=project).pending_usd == 3.2


def test_daily_cap_admits_only_what_fits_when_runs_open_requests_together(ledger: Ledger) -> None:
    """Sixteen writers race for a 10 USD day at 3.20 USD a request: exactly three get through."""
    since = datetime.now(UTC).replace(tzinfo=None)  # this test's rows only (shared PG db)
    cap = DailyCap(since=since, limit_usd=10.0, estimate_usd=3.2)
    project = f"race-{uuid.uuid4().hex[:8]}"

    def try_open(_: int) -> str:
        try:
            ledger.open_submission(
                fp(),
                kind="video",
                model="veo-3.1-generate-001",
                backend="vertex",
                project_slug=project,
                daily_cap=cap,
            )
            return "opened"
        except OverDailyBudget as exc:
            assert "per-day budget of 10.00 USD" in str(exc) and "nothing was sent" in str(exc)
            return "refused"

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(try_open, range(16)))
    assert results.count("opened") == 3 and results.count("refused") == 13
    spend = ledger.spend_since(since, project_slug=project)
    assert spend.pending_requests == 3 and spend.pending_usd == pytest.approx(9.6)


def test_daily_cap_counts_what_was_billed_earlier_today(ledger: Ledger) -> None:
    since = datetime.now(UTC).replace(tzinfo=None)  # this test's rows only (shared PG db)
    first = ledger.open_submission(
        fp(),
        kind="video",
        model="veo-3.1-generate-001",
        backend="vertex",
        daily_cap=DailyCap(since, 5.0, 3.2),
    )
    ledger.record_operation(first, "operations/1")
    ledger.mark_done(first, cost_usd=3.2, result_url="clips/1.mp4")
    with pytest.raises(OverDailyBudget, match=r"committed so far: 3\.20 USD"):
        ledger.open_submission(
            fp(),
            kind="video",
            model="veo-3.1-generate-001",
            backend="vertex",
            daily_cap=DailyCap(since, 5.0, 3.2),
        )
    assert ledger.get(first).details["estimate_usd"] == pytest.approx(3.2)


def test_a_finished_request_is_a_conflict_not_over_budget(ledger: Ledger) -> None:
    """Another worker finished it meanwhile: reuse it (free), even with the day full."""
    since = datetime.now(UTC).replace(tzinfo=None)  # this test's rows only (shared PG db)
    fingerprint = fp()
    entry = ledger.open_submission(
        fingerprint, kind="video", model="veo-3.1-generate-001", backend="vertex"
    )
    ledger.record_operation(entry, "operations/1")
    ledger.mark_done(entry, cost_usd=3.2, result_url="clips/1.mp4")
    with pytest.raises(LedgerConflict):
        ledger.open_submission(
            fingerprint,
            kind="video",
            model="veo-3.1-generate-001",
            backend="vertex",
            daily_cap=DailyCap(since, 3.2, 3.2),
        )


def test_give_up_retires_done_and_open_rows_and_leaves_the_billed_count_honest(
    ledger: Ledger,
) -> None:
    project, done_fp, open_fp = f"p-{uuid.uuid4().hex[:8]}", fp(), fp()
    done = ledger.open_submission(
        done_fp,
        kind="video",
        model="veo-3.1-generate-001",
        backend="vertex",
        project_slug="other-project",
        subject="4",  # reused here by fingerprint
    )
    ledger.record_operation(done, "operations/done")
    ledger.mark_done(done, cost_usd=3.2, result_url="clips/d.mp4")
    stuck = ledger.open_submission(
        open_fp,
        kind="video",
        model="veo-3.1-generate-001",
        backend="vertex",
        project_slug=project,
        subject="0",
    )
    ledger.record_operation(stuck, "operations/stuck")
    image = ledger.open_submission(
        fp(),
        kind="image",
        model="gemini-2.5-flash-image",
        backend="vertex",
        project_slug=project,
        subject="0",  # an asset whose key is "0": not a scene
    )
    before = ledger.give_up(project, "0", [done_fp], "broken video")
    assert sorted(e.state for e in before) == ["done", "in_flight"]
    assert ledger.get(done).state == "result_lost" and ledger.get(stuck).state == "failed_billed"
    assert ledger.get(image).state == "submitting"
    assert ledger.find_reusable(done_fp) is None and ledger.find_reusable(open_fp) is None
    assert ledger.billed_count(done_fp) == 1
    assert ledger.billed_count(done_fp, include_given_up=False) == 0


def test_resolution_and_takes_price_open_requests(ledger: Ledger) -> None:
    """Costs are resolution-aware end to end: an open 4k request of three takes is expected to
    cost 0.60 x 8 x 3, a 1080p fast one 0.12 x 8."""
    project = f"res-{fp()[:8]}"
    since = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=5)
    four_k = ledger.open_submission(
        fp(),
        kind="video",
        model="veo-3.1-generate-001",
        backend="vertex",
        project_slug=project,
        details={"duration_seconds": 8, "generate_audio": True},
        resolution="4k",
        takes=3,
    )
    ledger.open_submission(
        fp(),
        kind="video",
        model="veo-3.1-fast-generate-001",
        backend="vertex",
        project_slug=project,
        details={"duration_seconds": 8, "generate_audio": True},
        resolution="1080p",
    )
    row = ledger.get(four_k)
    assert (row.resolution, row.takes) == ("4k", 3)
    spend = ledger.spend_since(since, project_slug=project)
    assert spend.pending_usd == pytest.approx(0.60 * 8 * 3 + 0.12 * 8)


def test_cost_report_lists_every_request_with_labels_and_cost(ledger: Ledger) -> None:
    project = f"costs-{fp()[:8]}"
    labels = {"vidpipe_project": project, "vidpipe_scene": "0"}

    def row(**details: object) -> uuid.UUID:
        return ledger.open_submission(
            fp(),
            kind="video",
            model="veo-3.1-generate-001",
            backend="vertex",
            project_slug=project,
            subject="0",
            details={"duration_seconds": 8, "generate_audio": True, "labels": labels, **details},
            resolution="720p",
        )

    done = row(seed=7, run_id="r1")
    ledger.record_operation(done, "op/1")
    ledger.mark_done(done, cost_usd=3.2, result_url="a.mp4")
    ledger.mark_failed(row(), billed=False, error="filtered [Sexual (90789179); not charged]")
    ledger.mark_failed(row(), billed=True, error="generation failed")
    ledger.mark_unknown(row())
    row()  # still submitting

    lines = ledger.cost_report(project)
    assert [line.charge for line in lines] == [
        "billed",
        "not charged",
        "billed",
        "may be billed",
        "pending",
    ]
    assert [line.cost_usd for line in lines] == [3.2, 0.0, 3.2, 0.0, 0.0]
    assert [line.at_risk_usd for line in lines] == [0.0, 0.0, 0.0, 3.2, 3.2]
    first = lines[0].as_dict()
    assert first["labels"] == labels and first["seed"] == 7 and first["run_id"] == "r1"
    assert first["ledger_row"] == str(done) and first["resolution"] == "720p"
    assert first["operation_name"] == "op/1" and first["duration_seconds"] == 8.0
    assert ledger.cost_report(f"{project}-none") == []


def test_a_post_send_write_sets_its_lock_wait_back_while_the_connection_is_its_own(
    tmp_path: Path,
) -> None:
    """SQLAlchemy hands a session's connection back to the pool when it commits. A write after
    sending shortens SQLite's lock wait for itself and must set it back before that, never
    after: by then another thread may be using the connection (16 writers hung on it for
    minutes, their transactions crossed)."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrate(url)
    ledger = Ledger.from_url(url)
    engine = get_engine(url)
    engine.dispose()  # every connection from here on is traced from its first statement
    log: list[tuple[str, int]] = []

    def traced(dbapi_connection, _record) -> None:
        key = id(dbapi_connection)
        dbapi_connection.set_trace_callback(lambda sql: log.append((sql, key)))

    event.listen(engine, "connect", traced)
    event.listen(engine, "checkout", lambda c, _r, _p: log.append(("checkout", id(c))))
    event.listen(engine, "checkin", lambda c, _r: log.append(("checkin", id(c))))
    try:
        entry = open_row(ledger, fp())
        ledger.record_operation(entry, "op/1")  # a write made after the request was sent
        ledger.mark_done(entry, cost_usd=3.2, result_url="clips/1.mp4")
    finally:
        event.remove(engine, "connect", traced)
    held: dict[int, bool] = {}
    waits = 0
    for what, connection in log:
        if what in ("checkout", "checkin"):
            held[connection] = what == "checkout"
        elif what.upper().startswith("PRAGMA BUSY_TIMEOUT") and connection in held:
            waits += 1
            assert held[connection], f"{what!r} ran on a connection back in the pool"
    assert waits >= 4  # read, shortened, set back: for each of the two writes after sending
