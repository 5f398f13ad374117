"""The generation ledger: one row per paid API request, written before the request is sent.

The states and the rules between them are ``domain.spend``; this module stores them. Every method
is one short transaction on its own session, so coroutines (through threads) and processes can
finish generations at the same moment on SQLite (WAL, busy timeout) and PostgreSQL. Opening a
submission is serialized per fingerprint (``BEGIN IMMEDIATE`` on SQLite, a transaction advisory
lock on PostgreSQL), so two workers cannot both decide to pay for the same request.

The ambiguous case, and the rule chosen: Veo has no idempotency key and no way to list operations by
request, so a ``submitting`` row without an operation name cannot be checked with the backend. If
it is older than ``stale_after_s`` (no live worker keeps a submission open that long: the submit
timeout and retries are shorter and each retry refreshes ``updated_at``), ``open_submission`` marks
it ``unknown`` with a note and opens a new row that lists it under ``details["after_ambiguous"]``.
So a rerun resubmits, once, and the possible double charge is recorded rather than hidden. A
younger row means another worker is submitting right now, and ``open_submission`` refuses.

When the database falters (SQLite locked by another writer past the busy timeout, a PostgreSQL
connection dropped), every call raises ``LedgerUnavailable``. The writes made after a request was
sent (``JOURNALED``: its operation name, its end) are first appended to the fallback journal
(``db.journal``: beside the SQLite file, or in ``journal_dir`` for a server database), so what the
API accepted is never lost; ``replay_journal`` applies them later, each only where the row has not
moved past it. Such a write waits for SQLite's lock only ``SENT_WRITE_BUSY_MS`` before journaling,
so what the API answered is on disk within seconds whatever holds the lock.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from vidpipe_dagster.db.journal import JournalRecord, LedgerJournal
from vidpipe_dagster.db.models import GenerationLedger
from vidpipe_dagster.db.session import session_factory
from vidpipe_dagster.domain.budget import DailySpend, expected_cost_usd
from vidpipe_dagster.domain.catalog import ModelCatalog, packaged_catalog
from vidpipe_dagster.domain.preview import PREVIEW_BACKEND
from vidpipe_dagster.domain.spend import (
    AMBIGUOUS_NOTE,
    GIVEN_UP_NOTE,
    HELD_NOTE,
    LIVE_STATES,
    WAITING_STATES,
    DailyCap,
    LedgerConflict,
    LedgerEntry,
    LedgerState,
    LedgerUnavailable,
    OverDailyBudget,
)
from vidpipe_dagster.domain.video_requests import PriceTable

__all__ = [
    "AMBIGUOUS_NOTE",
    "GIVEN_UP_NOTE",
    "HELD_NOTE",
    "CostLine",
    "DailyCap",
    "Ledger",
    "LedgerConflict",
    "LedgerEntry",
    "LedgerJournal",
    "LedgerUnavailable",
    "OverDailyBudget",
]

# A write after a request was sent waits this long for SQLite's lock, then is journaled (and
# the engine retries it in the background): the journal has it within seconds whatever holds the
# lock. Long enough that this process's own writers (up to 32 in flight, each an fsync) do not
# push a write into the journal on a loaded machine.
SENT_WRITE_BUSY_MS = 5000
_CHUNK = 500  # fingerprints per IN list

# A journaled write is replayed only onto a row still in one of these states: a later write that
# reached the database (a failure, a person's ``regenerate``) is never undone by an older one.
_REPLAY_FROM: dict[str, frozenset[str]] = {
    "record_operation": frozenset({"submitting", "unknown"}),
    "mark_done": frozenset({"submitting", "in_flight", "unknown", "held"}),
    "mark_failed": frozenset({"submitting", "in_flight", "unknown"}),
    "mark_unknown": frozenset({"submitting", "in_flight"}),
    "mark_held": frozenset({"submitting", "in_flight", "unknown"}),
    "mark_result_lost": frozenset({"done"}),
    "update_result": frozenset({"done"}),
}
JOURNALED = frozenset(_REPLAY_FROM)


def _entry(row: GenerationLedger) -> LedgerEntry:
    return LedgerEntry(
        id=row.id,
        fingerprint=row.fingerprint,
        kind=row.kind,
        model=row.model,
        backend=row.backend,
        project_slug=row.project_slug,
        subject=row.subject,
        state=row.state,
        operation_name=row.operation_name,
        billed=bool(row.billed),
        cost_usd=float(row.cost_usd or 0.0),
        result_url=row.result_url,
        details=dict(row.details) if row.details else None,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        resolution=row.resolution,
        takes=int(row.takes or 1),
    )


DAILY_BUDGET_LOCK = "vidpipe:daily-budget"  # PostgreSQL advisory lock name for budget checks


def _age_s(moment: datetime | None, now: datetime) -> float:
    return (now - (moment or now)).total_seconds()


def _utcnow() -> datetime:
    """Naive UTC, written by us on every change so that ages compare on one clock."""
    return datetime.now(UTC).replace(tzinfo=None)


def _lock_key(fingerprint: str) -> int:
    return int.from_bytes(hashlib.sha256(fingerprint.encode()).digest()[:8], "big", signed=True)


def _unavailable(exc: BaseException) -> bool:
    """A database that cannot answer now (locked, gone, connection dropped), as opposed to a
    mistake in the statement: only the former is worth journaling and retrying."""
    if isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return f"{type(orig).__name__}: {first}"


def default_journal(
    sessions: sessionmaker[Session], journal_dir: str | Path | None = None
) -> LedgerJournal | None:
    """Beside a SQLite file; for a server database in ``journal_dir`` (the media root: the one
    folder every worker shares); none for an in-memory database or without a folder."""
    bind = sessions.kw.get("bind")
    url = getattr(bind, "url", None)
    if url is None:
        return None
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return None
        return LedgerJournal.beside_sqlite(Path(database).resolve())
    if journal_dir is None:
        return None
    return LedgerJournal.in_folder(Path(journal_dir), url.render_as_string(hide_password=True))


class Ledger:
    """Ledger operations over a session factory; see the module docstring for the states."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        stale_after_s: float = 900.0,
        catalog: ModelCatalog | None = None,
        journal: LedgerJournal | Literal["auto"] | None = "auto",
        journal_dir: str | Path | None = None,
    ) -> None:
        self.sessions = sessions
        self.stale_after_s = stale_after_s
        self.catalog = catalog or packaged_catalog()  # prices open requests for budgets
        self.journal = default_journal(sessions, journal_dir) if journal == "auto" else journal

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        stale_after_s: float = 900.0,
        catalog: ModelCatalog | None = None,
        journal_dir: str | Path | None = None,
    ) -> Ledger:
        return cls(
            session_factory(url),
            stale_after_s=stale_after_s,
            catalog=catalog,
            journal_dir=journal_dir,
        )

    @contextmanager
    def _guard(
        self, op: str | None = None, entry_id: Any = None, args: Mapping[str, Any] | None = None
    ) -> Iterator[None]:
        """Turn a faltering database into ``LedgerUnavailable``, journaling ``op`` first."""
        try:
            yield
        except sa_exc.SQLAlchemyError as exc:
            if not _unavailable(exc):
                raise
            journaled = False
            if op is not None and self.journal is not None:
                try:
                    self.journal.append(op, entry_id, args or {})
                    journaled = True
                except OSError:
                    pass
            kept = (
                f"; kept in the journal {self.journal.path} for the next run to replay"
                if journaled and self.journal is not None
                else ""
            )
            raise LedgerUnavailable(
                f"the ledger database is unavailable ({_reason(exc)}){kept}", journaled=journaled
            ) from exc

    @contextmanager
    def _write(
        self, lock_fingerprint: str | None = None, *, busy_timeout_ms: int | None = None
    ) -> Iterator[Session]:
        """A write transaction that takes SQLite's write lock up front (no upgrade deadlocks) and,
        on PostgreSQL, an advisory lock on ``lock_fingerprint`` when given. ``busy_timeout_ms``
        bounds SQLite's wait for the lock in this transaction only."""
        session = self.sessions()
        try:
            connection = session.connection()
            dialect = connection.dialect.name
            if dialect == "sqlite" and busy_timeout_ms is not None:
                # Only BEGIN IMMEDIATE waits for the lock (once held, nothing in the transaction
                # waits), so the usual timeout is back before the transaction goes on: the
                # connection is this session's only until it commits, then another thread's.
                raw = connection.connection.dbapi_connection
                previous = int(raw.execute("PRAGMA busy_timeout").fetchone()[0])
                raw.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
                try:
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                finally:
                    try:
                        raw.execute(f"PRAGMA busy_timeout={previous}")
                    except Exception:  # never pool a connection left with this wait
                        session.invalidate()
                        raise
            elif dialect == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif dialect == "postgresql" and lock_fingerprint is not None:
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(lock_fingerprint)}
                )
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def _journaled_write(
        self,
        op: str,
        entry_id: uuid.UUID,
        args: Mapping[str, Any],
        apply: Callable[[GenerationLedger], None],
    ) -> None:
        """One write made after a request was sent: the database within ``SENT_WRITE_BUSY_MS``
        (SQLite), else the journal."""
        busy_ms = SENT_WRITE_BUSY_MS
        with self._guard(op, entry_id, args), self._write(busy_timeout_ms=busy_ms) as s:
            apply(self._row(s, entry_id))

    def replay_journal(self) -> list[str]:
        """Apply the writes a faltering database left in the journal, in the order they were
        made, each only onto a row that has not moved past it (``_REPLAY_FROM``), in one
        transaction; returns what was applied or skipped. Raises ``LedgerUnavailable`` (and
        keeps the journal) while the database still refuses."""
        if self.journal is None or not self.journal.pending():
            return []
        with self.journal.claim() as (records, unreadable):
            said = [f"unreadable journal line kept for a person: {line}" for line in unreadable]
            if records:
                with self._guard(), self._write() as session:
                    said += _replay(session, records)
        return said

    def _replay_if_pending(self) -> None:
        if self.journal is not None and self.journal.pending():
            self.replay_journal()

    def _row(self, session: Session, entry_id: uuid.UUID) -> GenerationLedger:
        row = session.get(GenerationLedger, entry_id, with_for_update=True)
        if row is None:
            raise KeyError(f"no ledger row {entry_id}")
        return row

    def get(self, entry_id: uuid.UUID) -> LedgerEntry:
        with self.sessions() as session:
            row = session.get(GenerationLedger, entry_id)
            if row is None:
                raise KeyError(f"no ledger row {entry_id}")
            return _entry(row)

    def entries(self, fingerprint: str, backend: str | None = None) -> list[LedgerEntry]:
        """Every row of a fingerprint, oldest first (for audits and tests)."""
        query = select(GenerationLedger).where(GenerationLedger.fingerprint == fingerprint)
        if backend is not None:
            query = query.where(GenerationLedger.backend == backend)
        with self.sessions() as session:
            rows = session.scalars(query.order_by(GenerationLedger.created_at)).all()
            return [_entry(row) for row in rows]

    def find_reusable(self, fingerprint: str, backend: str | None = None) -> LedgerEntry | None:
        """The newest ``done`` row (reuse), else the newest row with an operation name that is
        still ``in_flight``/``submitting`` (resume); ``None`` means a new request is needed.

        Pass ``backend``: a preview render must never stand in for a paid Vertex clip.
        """
        query = select(GenerationLedger).where(
            GenerationLedger.fingerprint == fingerprint,
            GenerationLedger.state.in_(LIVE_STATES),
        )
        if backend is not None:
            query = query.where(GenerationLedger.backend == backend)
        with self._guard(), self.sessions() as session:
            rows = session.scalars(query.order_by(GenerationLedger.created_at.desc())).all()
            done = next((r for r in rows if r.state == "done"), None)
            if done is not None:
                return _entry(done)
            running = next((r for r in rows if r.operation_name), None)
            return _entry(running) if running is not None else None

    def find_reusable_many(
        self, fingerprints: Sequence[str], backend: str | None = None
    ) -> dict[str, LedgerEntry]:
        """``find_reusable`` for every fingerprint at once: one query per 500 fingerprints
        (after replaying the journal), so a run looks its scenes up once, not once each."""
        self._replay_if_pending()
        wanted = list(dict.fromkeys(fingerprints))
        found: dict[str, LedgerEntry] = {}
        with self._guard(), self.sessions() as session:
            for start in range(0, len(wanted), _CHUNK):
                query = select(GenerationLedger).where(
                    GenerationLedger.fingerprint.in_(wanted[start : start + _CHUNK]),
                    GenerationLedger.state.in_(LIVE_STATES),
                )
                if backend is not None:
                    query = query.where(GenerationLedger.backend == backend)
                rows = session.scalars(query.order_by(GenerationLedger.created_at.desc())).all()
                done: dict[str, GenerationLedger] = {}
                running: dict[str, GenerationLedger] = {}
                for row in rows:  # newest first
                    if row.state == "done":
                        done.setdefault(row.fingerprint, row)
                    elif row.operation_name:
                        running.setdefault(row.fingerprint, row)
                for fingerprint in {*done, *running}:
                    found[fingerprint] = _entry(done.get(fingerprint) or running[fingerprint])
        return found

    def open_submission(
        self,
        fingerprint: str,
        *,
        kind: str,
        model: str,
        backend: str,
        project_slug: str | None = None,
        subject: str | None = None,
        details: Mapping[str, Any] | None = None,
        daily_cap: DailyCap | None = None,
        resolution: str | None = None,
        takes: int = 1,
        entry_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """Write the ``submitting`` row that must exist before a paid request is sent.

        Raises ``LedgerConflict`` if the fingerprint is done, in flight, or being submitted by a
        live worker; marks stale ambiguous rows ``unknown`` (see the module docstring). With
        ``daily_cap``, raises ``OverDailyBudget`` (and writes nothing) when the request would
        take today's committed spend over the limit; the estimate is stored on the row.
        ``resolution`` and ``takes`` (video) are what its price depends on; ``entry_id`` names
        the row up front, so that the billing labels sent with the request can carry it.
        """
        self._replay_if_pending()  # a journaled operation name must count before paying again
        now = _utcnow()
        with self._guard(), self._write(lock_fingerprint=fingerprint) as session:
            rows = session.scalars(
                select(GenerationLedger).where(
                    GenerationLedger.fingerprint == fingerprint,
                    GenerationLedger.backend == backend,
                    GenerationLedger.state.in_(LIVE_STATES),
                )
            ).all()
            ambiguous: list[str] = []
            for row in rows:
                if row.state == "done" or row.operation_name:
                    raise LedgerConflict(
                        _entry(row), f"request already {row.state} (ledger row {row.id})"
                    )
                age = _age_s(row.updated_at or row.created_at, now)
                if age < self.stale_after_s:
                    raise LedgerConflict(
                        _entry(row),
                        f"another worker is submitting this request (ledger row {row.id}, "
                        f"{age:.0f} s ago); retry after it finishes or after "
                        f"{self.stale_after_s:.0f} s",
                    )
                row.state = "unknown"
                row.error = AMBIGUOUS_NOTE
                row.updated_at = now
                ambiguous.append(str(row.id))
            if daily_cap is not None:  # after the duplicate check: a reusable clip is never "over"
                self._hold_within(session, daily_cap)
                details = {**(details or {}), "estimate_usd": daily_cap.estimate_usd}
            merged = dict(details or {})
            if ambiguous:
                merged["after_ambiguous"] = ambiguous
            entry_id = entry_id or uuid.uuid4()
            session.add(
                GenerationLedger(
                    id=entry_id,
                    resolution=resolution,
                    takes=max(1, int(takes)),
                    fingerprint=fingerprint,
                    kind=kind,
                    model=model,
                    backend=backend,
                    project_slug=project_slug,
                    subject=subject,
                    state="submitting",
                    billed=False,
                    cost_usd=0.0,
                    details=merged or None,
                    created_at=now,
                    updated_at=now,
                )
            )
        return entry_id

    def record_operation(self, entry_id: uuid.UUID, operation_name: str) -> None:
        """``in_flight`` the moment the API returns an operation name (it is now resumable).
        Journaled when the database refuses within ``SENT_WRITE_BUSY_MS``."""

        def apply(row: GenerationLedger) -> None:
            if row.state == "done":
                return
            row.state = "in_flight"
            row.operation_name = operation_name
            row.error = None
            row.updated_at = _utcnow()

        self._journaled_write(
            "record_operation",
            entry_id,
            {"operation_name": operation_name},
            apply,
        )

    def note(self, entry_id: uuid.UUID, message: str) -> None:
        """Record a transient problem; refreshing ``updated_at`` shows the submission is live."""
        with self._guard(), self._write() as session:
            row = self._row(session, entry_id)
            row.error = message
            row.updated_at = _utcnow()

    def add_details(self, entry_id: uuid.UUID, **values: Any) -> None:
        with self._guard(), self._write() as session:
            row = self._row(session, entry_id)
            row.details = {**(row.details or {}), **values}
            row.updated_at = _utcnow()

    def mark_done(
        self,
        entry_id: uuid.UUID,
        *,
        cost_usd: float,
        result_url: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """The video is stored; the request was billed. Idempotent for concurrent finishers.
        ``details`` are merged into the row's (e.g. every take's stored file)."""
        args = {"cost_usd": cost_usd, "result_url": result_url, "details": dict(details or {})}
        self._journaled_write("mark_done", entry_id, args, lambda row: _done(row, args))

    def update_result(
        self, entry_id: uuid.UUID, result_url: str, details: Mapping[str, Any] | None = None
    ) -> None:
        """A ``done`` row's video was downloaded again and stored at a new place."""
        args = {"result_url": result_url, "details": dict(details or {})}
        self._journaled_write("update_result", entry_id, args, lambda row: _new_result(row, args))

    def mark_failed(self, entry_id: uuid.UUID, *, billed: bool, error: str) -> None:
        """``failed_billed`` or ``failed_unbilled``; a row already ``done`` is left alone."""
        args = {"billed": billed, "error": error}
        self._journaled_write("mark_failed", entry_id, args, lambda row: _failed(row, args))

    def mark_unknown(self, entry_id: uuid.UUID, error: str = AMBIGUOUS_NOTE) -> None:
        """The request may or may not have been accepted (and billed); nothing can tell."""
        args = {"error": error}
        self._journaled_write(
            "mark_unknown", entry_id, args, lambda row: _final(row, "unknown", error, None)
        )

    def mark_held(self, entry_id: uuid.UUID, error: str = HELD_NOTE) -> None:
        """The operation ended without a video and without a filter count: it may have been
        billed, so the row stays live (nothing is sent again) until a person decides."""
        args = {"error": error}
        self._journaled_write(
            "mark_held", entry_id, args, lambda row: _final(row, "held", error, None)
        )

    def mark_result_lost(self, entry_id: uuid.UUID, error: str) -> None:
        """A billed ``done`` row whose video is gone for good; it stops being reused."""
        args = {"error": error}
        self._journaled_write("mark_result_lost", entry_id, args, lambda row: _lost(row, args))

    def outcome_unknown(self, fingerprints: Sequence[str], backend: str) -> bool:
        """Whether the newest row of these requests may have been billed without an answer:
        ``unknown`` or ``held``, or ``submitting`` with no operation name for longer than a live
        worker takes (the rule ``open_submission`` uses). Schedules must leave such work to a
        person. The journal is replayed first: a recorded operation name is not unknown."""
        self._replay_if_pending()
        with self._guard(), self.sessions() as session:
            newest = session.scalars(
                select(GenerationLedger)
                .where(
                    GenerationLedger.fingerprint.in_(list(fingerprints)),
                    GenerationLedger.backend == backend,
                )
                .order_by(GenerationLedger.created_at.desc())
                .limit(1)
            ).first()
            if newest is None:
                return False
            if newest.state in WAITING_STATES:
                return True
            stale = _age_s(newest.updated_at or newest.created_at, _utcnow()) >= self.stale_after_s
            return newest.state == "submitting" and not newest.operation_name and stale

    def give_up(
        self, project_slug: str, subject: str, fingerprints: Sequence[str], reason: str
    ) -> list[LedgerEntry]:
        """A person's decision to stop reusing or resuming a clip's requests (a billed video that
        is broken, an operation whose download keeps failing), so the next run submits once more
        and pays again. Covers the subject's video rows and any row of ``fingerprints`` (a clip
        reused from another project is the same request). ``done`` rows become ``result_lost``,
        open ones ``failed_billed`` (assumed paid); nothing is deleted. Returns the rows as they
        were."""
        self._replay_if_pending()
        with self._guard(), self._write() as session:
            rows = session.scalars(
                select(GenerationLedger).where(
                    GenerationLedger.kind == "video",
                    GenerationLedger.state.in_(LIVE_STATES),
                    (
                        (GenerationLedger.project_slug == project_slug)
                        & (GenerationLedger.subject == subject)
                    )
                    | GenerationLedger.fingerprint.in_(list(fingerprints)),
                )
            ).all()
            before = [_entry(row) for row in rows]
            for row in rows:
                row.state = "result_lost" if row.state == "done" else "failed_billed"
                row.billed = True
                row.error = f"{GIVEN_UP_NOTE}: {reason}"
                row.updated_at = _utcnow()
        return before

    def billed_per_clip(self, project_slug: str, clips: Mapping[str, str]) -> dict[str, int]:
        """Per scene key: how many billed requests (not given up) made its clip, whose final
        request fingerprint ``clips`` gives, counted over that request's whole ladder
        (``details["ladder"]``: the remediated and frames-fallback forms of one job)."""
        if not clips:
            return {}
        with self.sessions() as session:
            rows = session.execute(
                select(GenerationLedger.fingerprint, GenerationLedger.details).where(
                    GenerationLedger.kind == "video",
                    GenerationLedger.billed.is_(True),
                    func.coalesce(GenerationLedger.error, "").not_like(f"{GIVEN_UP_NOTE}%"),
                    (GenerationLedger.project_slug == project_slug)
                    | GenerationLedger.fingerprint.in_(list(clips.values())),
                )
            ).all()
        ladder_of = {fp: (d or {}).get("ladder") for fp, d in rows if (d or {}).get("ladder")}
        counts: dict[str, int] = {}
        for key, fingerprint in clips.items():
            ladder = ladder_of.get(fingerprint)
            counts[key] = sum(
                1
                for fp, details in rows
                if (ladder is not None and (details or {}).get("ladder") == ladder)
                or (ladder is None and fp == fingerprint)
            )
        return counts

    def cost_report(self, project_slug: str) -> list[CostLine]:
        """Every request of a project, oldest first, with its labels and what it cost, so a
        studio can match its cloud bill line by line (the labels carry the ledger row id)."""
        self._replay_if_pending()
        with self._guard(), self.sessions() as session:
            rows = session.scalars(
                select(GenerationLedger)
                .where(GenerationLedger.project_slug == project_slug)
                .order_by(GenerationLedger.created_at, GenerationLedger.id)
            ).all()
            entries = [_entry(row) for row in rows]
            settled: dict[tuple[str, str], float] = {}
            lines = []
            for entry in entries:
                expected = self._expected_cost(session, entry, None, settled)
                lines.append(_cost_line(entry, expected))
        return lines

    def billed_count(
        self, fingerprint: str, backend: str | None = None, *, include_given_up: bool = True
    ) -> int:
        """How many requests for this fingerprint were (or may have been treated as) billed;
        without the ones a person gave up on (``give_up``) unless ``include_given_up``."""
        query = select(func.count()).where(
            GenerationLedger.fingerprint == fingerprint, GenerationLedger.billed.is_(True)
        )
        if not include_given_up:
            query = query.where(
                func.coalesce(GenerationLedger.error, "").not_like(f"{GIVEN_UP_NOTE}%")
            )
        if backend is not None:
            query = query.where(GenerationLedger.backend == backend)
        with self.sessions() as session:
            return int(session.scalar(query) or 0)

    def spend_since(
        self,
        since: datetime,
        *,
        project_slug: str | None = None,
        price_table: PriceTable | None = None,
        run_id: str | None = None,
    ) -> DailySpend:
        """What the requests opened since ``since`` committed (all projects, or one), in USD.

        A request counts from the moment its row is opened (``created_at``), before it is sent:
        ``done`` and ``result_lost`` rows at their recorded cost; ``failed_billed`` rows at their
        expected cost (no cost is recorded on failure); ``submitting``, ``in_flight`` and
        ``unknown`` rows at their expected cost, as pending (they will, or may, bill);
        ``failed_unbilled`` rows not at all. Expected costs: ``domain.budget.expected_cost_usd``.
        Later touches (a re-download, a lost result, a resumed poll) move no spend to another day.
        With ``run_id``, only rows a run recorded as its own (``details["run_id"]``).
        """
        with self._guard(), self.sessions() as session:
            return self._spend_in(session, since, project_slug, price_table, run_id)

    def _hold_within(self, session: Session, cap: DailyCap) -> None:
        """Serialise budget checks (SQLite: the write lock already held; PostgreSQL: one advisory
        lock for the budget) and refuse what does not fit."""
        if session.connection().dialect.name == "postgresql":
            session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(DAILY_BUDGET_LOCK)}
            )
        spent = self._spend_in(session, cap.since, None, cap.price_table, catalog=cap.catalog)
        if spent.committed_usd + cap.estimate_usd > cap.limit_usd + 1e-9:
            raise OverDailyBudget(
                f"this request (about {cap.estimate_usd:.2f} USD) would take today's spend over "
                f"the per-day budget of {cap.limit_usd:.2f} USD (committed so far: "
                f"{spent.describe()}); nothing was sent"
            )

    def _spend_in(
        self,
        session: Session,
        since: datetime,
        project_slug: str | None,
        price_table: PriceTable | None,
        run_id: str | None = None,
        *,
        catalog: ModelCatalog | None = None,
    ) -> DailySpend:
        catalog = catalog or self.catalog
        query = select(GenerationLedger).where(
            GenerationLedger.created_at >= since, GenerationLedger.state != "failed_unbilled"
        )
        if project_slug is not None:
            query = query.where(GenerationLedger.project_slug == project_slug)
        entries = [_entry(row) for row in session.scalars(query)]
        if run_id is not None:
            entries = [e for e in entries if (e.details or {}).get("run_id") == run_id]
        billed = pending = 0.0
        open_requests = 0
        settled: dict[tuple[str, str], float] = {}
        for entry in entries:
            if entry.state in ("done", "result_lost"):
                billed += entry.cost_usd
                continue
            cost = entry.cost_usd or self._expected_cost(
                session, entry, price_table, settled, catalog
            )
            if entry.billed or entry.state == "failed_billed":
                billed += cost
            else:
                pending += cost
                open_requests += 1
        return DailySpend(round(billed, 4), round(pending, 4), open_requests)

    def _expected_cost(
        self,
        session: Session,
        entry: LedgerEntry,
        price_table: PriceTable | None,
        settled: dict[tuple[str, str], float],
        catalog: ModelCatalog | None = None,
    ) -> float:
        """``expected_cost_usd`` of a row; for kinds without a price list (images), the most a
        settled request of the same kind and model cost (memoized in ``settled``)."""
        key = (entry.kind, entry.model)
        if entry.kind != "video" and key not in settled:
            settled[key] = float(
                session.scalar(
                    select(func.coalesce(func.max(GenerationLedger.cost_usd), 0.0)).where(
                        GenerationLedger.kind == entry.kind,
                        GenerationLedger.model == entry.model,
                        GenerationLedger.billed.is_(True),
                    )
                )
                or 0.0
            )
        return expected_cost_usd(
            kind=entry.kind,
            model=entry.model,
            backend=entry.backend,
            details=entry.details,
            price_table=price_table,
            fallback_usd=settled.get(key, 0.0),
            resolution=entry.resolution,
            takes=entry.takes,
            catalog=catalog or self.catalog,
        )


def _done(row: GenerationLedger, args: Mapping[str, Any]) -> None:
    row.state = "done"
    row.billed = True
    row.cost_usd = float(args["cost_usd"])
    row.result_url = str(args["result_url"])
    if args.get("details"):
        row.details = {**(row.details or {}), **args["details"]}
    row.error = None
    row.updated_at = _utcnow()


def _new_result(row: GenerationLedger, args: Mapping[str, Any]) -> None:
    row.result_url = str(args["result_url"])
    if args.get("details"):
        row.details = {**(row.details or {}), **args["details"]}
    row.updated_at = _utcnow()


def _final(row: GenerationLedger, state: LedgerState, error: str, billed: bool | None) -> None:
    """An end other than ``done``; a row already ``done`` is left alone."""
    if row.state == "done":
        return
    row.state = state
    row.error = error
    if billed is not None:
        row.billed = billed
    row.updated_at = _utcnow()


def _failed(row: GenerationLedger, args: Mapping[str, Any]) -> None:
    billed = bool(args["billed"])
    _final(row, "failed_billed" if billed else "failed_unbilled", str(args["error"]), billed)


def _lost(row: GenerationLedger, args: Mapping[str, Any]) -> None:
    row.state = "result_lost"
    row.error = str(args["error"])
    row.updated_at = _utcnow()


def _replay(session: Session, records: Sequence[JournalRecord]) -> list[str]:
    """Apply journal records onto their rows (see ``Ledger.replay_journal``)."""
    ids: dict[str, uuid.UUID] = {}
    said: list[str] = []
    for record in records:
        try:
            ids[record.entry_id] = uuid.UUID(record.entry_id)
        except ValueError:
            said.append(f"skipped {record.describe()}: not a ledger row id")
    rows = {
        row.id: row
        for row in session.scalars(
            select(GenerationLedger)
            .where(GenerationLedger.id.in_(list(set(ids.values()))))
            .with_for_update()
        )
    }
    for record in records:
        row = rows.get(ids.get(record.entry_id))  # type: ignore[arg-type]
        allowed = _REPLAY_FROM.get(record.op)
        if row is None or allowed is None:
            said.append(f"skipped {record.describe()}: no such row or write")
            continue
        args = record.args
        if record.op == "record_operation" and not row.operation_name:
            row.operation_name = str(args["operation_name"])
            row.updated_at = _utcnow()
            if row.state in allowed:
                row.state = "in_flight"
                row.error = "operation name recovered from the journal"
            said.append(f"replayed {record.describe()}")
            continue
        if row.state not in allowed:
            continue  # the row moved on: an older write must not undo a newer one
        if record.op == "mark_done":
            _done(row, args)
        elif record.op == "update_result":
            _new_result(row, args)
        elif record.op == "mark_failed":
            _failed(row, args)
        elif record.op == "mark_unknown":
            _final(row, "unknown", str(args["error"]), None)
        elif record.op == "mark_held":
            _final(row, "held", str(args["error"]), None)
        elif record.op == "mark_result_lost":
            _lost(row, args)
        said.append(f"replayed {record.describe()}")
    return said


Charge = Literal["billed", "not charged", "pending", "may be billed", "free preview"]


@dataclass(frozen=True)
class CostLine:
    """One ledger request as a line of a cost report (``Ledger.cost_report``)."""

    ledger_row: str
    created_at: datetime | None
    kind: str
    subject: str | None
    model: str
    backend: str
    state: str
    charge: Charge
    cost_usd: float  # charged (recorded, or the list price of a billed failure)
    at_risk_usd: float  # pending or uncertain: what it is expected to cost if billed
    resolution: str | None
    takes: int
    duration_seconds: float | None
    generate_audio: bool | None
    seed: int | None
    operation_name: str | None
    run_id: str | None
    labels: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ledger_row": self.ledger_row,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "kind": self.kind,
            "subject": self.subject,
            "model": self.model,
            "backend": self.backend,
            "state": self.state,
            "charge": self.charge,
            "cost_usd": self.cost_usd,
            "at_risk_usd": self.at_risk_usd,
            "resolution": self.resolution,
            "takes": self.takes,
            "duration_seconds": self.duration_seconds,
            "generate_audio": self.generate_audio,
            "seed": self.seed,
            "operation_name": self.operation_name,
            "run_id": self.run_id,
            "labels": dict(self.labels),
            "error": self.error,
        }


def _cost_line(entry: LedgerEntry, expected_usd: float) -> CostLine:
    """What one row cost: recorded for done rows, the list price for a billed failure, nothing
    for a filtered or refused request, and the expected price at risk for open or unknown ones."""
    details = entry.details or {}
    charge: Charge
    cost = at_risk = 0.0
    if entry.backend == PREVIEW_BACKEND:
        charge = "free preview"
    elif entry.state in ("done", "result_lost"):
        charge, cost = "billed", entry.cost_usd
    elif entry.state == "failed_billed" or entry.billed:
        charge, cost = "billed", entry.cost_usd or expected_usd
    elif entry.state == "failed_unbilled":
        charge = "not charged"
    elif entry.state in WAITING_STATES:
        charge, at_risk = "may be billed", expected_usd
    else:
        charge, at_risk = "pending", expected_usd
    duration = details.get("duration_seconds")
    audio = details.get("generate_audio")
    seed = details.get("seed")
    return CostLine(
        ledger_row=str(entry.id),
        created_at=entry.created_at,
        kind=entry.kind,
        subject=entry.subject,
        model=entry.model,
        backend=entry.backend,
        state=entry.state,
        charge=charge,
        cost_usd=round(cost, 4),
        at_risk_usd=round(at_risk, 4),
        resolution=entry.resolution,
        takes=entry.takes,
        duration_seconds=float(duration) if isinstance(duration, int | float) else None,
        generate_audio=audio if isinstance(audio, bool) else None,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        operation_name=entry.operation_name,
        run_id=details.get("run_id"),
        labels=entry.labels,
        error=entry.error,
    )
