"""The spend state machine: what a ledger row of a paid request can be, and the rules between.

One row per paid API request, written *before* the request is sent (``db.ledger`` stores them;
``generation`` drives them). States:

- ``submitting``: row written, request about to be (or being) sent; no operation name yet.
- ``in_flight``: the API accepted the request; ``operation_name`` can be polled and resumed.
- ``done``: video stored at ``result_url``; billed.
- ``failed_unbilled`` / ``failed_billed``: the request ended without a video.
- ``unknown``: a submission whose outcome cannot be known (the process stopped, or the connection
  dropped, after sending and before the operation name came back). It may have been billed.
- ``result_lost``: was ``done`` and billed, but the stored video is gone and cannot be downloaded
  again; a new submission replaces it only when a person says so.
- ``held``: the operation finished "done" with no video and no filter count, which the API does
  not document. It may have been billed, so it stays live (nothing is sent again for it) until a
  person decides (``vidpipe-dagster regenerate``), like a paid clip whose file is lost.

A ``done`` fingerprint is reused, an ``in_flight`` one resumed, a ``held`` one waits, so nothing is
paid for twice; ``unknown`` is never resent without a person (or ``retry_ambiguous_submits``).

A write after a paid request was sent (its operation name, its end) must outlive a faltering
database: the ledger raises ``LedgerUnavailable`` after keeping the write in an append-only journal
(``db.ledger``), which the next run replays before it plans anything.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from vidpipe_dagster.domain.budget import DailySpend
from vidpipe_dagster.domain.catalog import ModelCatalog
from vidpipe_dagster.domain.video_requests import PriceTable

LedgerState = Literal[
    "submitting",
    "in_flight",
    "done",
    "failed_unbilled",
    "failed_billed",
    "unknown",
    "result_lost",
    "held",
]
# rows that stand for their request: a new one is not opened beside them
LIVE_STATES: tuple[LedgerState, ...] = ("submitting", "in_flight", "done", "held")
# rows whose money a person must settle before the request is sent again
WAITING_STATES: tuple[LedgerState, ...] = ("unknown", "held")
GIVEN_UP_NOTE = "given up by a person"  # error prefix of rows a person retired (``regenerate``)
AMBIGUOUS_NOTE = (
    "outcome unknown: the request may have reached the API, but no operation name was recorded "
    "(the worker stopped or the connection dropped after sending); it may have been billed"
)
HELD_NOTE = (
    "finished without a video and without a filter count (not what the API documents); it may "
    "have been billed, so it is not sent again until a person decides"
)


@dataclass(frozen=True)
class LedgerEntry:
    """A detached snapshot of one ledger row (safe to pass between threads and coroutines)."""

    id: uuid.UUID
    fingerprint: str
    kind: str
    model: str
    backend: str
    project_slug: str | None
    subject: str | None
    state: str
    operation_name: str | None
    billed: bool
    cost_usd: float
    result_url: str | None
    details: dict[str, Any] | None
    error: str | None
    created_at: datetime | None
    updated_at: datetime | None
    resolution: str | None = None  # video requests: the resolution asked for
    takes: int = 1  # videos asked for by this one request (each billed)

    @property
    def labels(self) -> dict[str, str]:
        """The billing labels the request was sent with (``details["labels"]``)."""
        return dict((self.details or {}).get("labels") or {})


@dataclass(frozen=True)
class DailyCap:
    """The per-day budget, checked atomically when a paid request's row is opened.

    Pre-run estimates cannot see runs that start at the same moment; this check can, because it
    counts committed spend and writes the new row in one locked transaction.
    """

    since: datetime
    limit_usd: float
    estimate_usd: float  # what the request about to be sent is expected to cost
    price_table: PriceTable | None = None
    catalog: ModelCatalog | None = None  # prices of open requests (default: the packaged one)


class OverDailyBudget(RuntimeError):
    """Opening this request would take today's committed spend over the per-day budget."""


class LedgerUnavailable(RuntimeError):
    """The database refused a ledger call (locked, connection dropped). ``journaled``: the write
    is safe in the journal, which the next run replays; otherwise nothing was kept."""

    def __init__(self, message: str, *, journaled: bool = False) -> None:
        super().__init__(message)
        self.journaled = journaled


class LedgerConflict(RuntimeError):
    """A new paid request would duplicate ``entry``: it is done, in flight, or being submitted."""

    def __init__(self, entry: LedgerEntry, message: str) -> None:
        super().__init__(message)
        self.entry = entry


class SpendLedger(Protocol):
    """What the generators need from the ledger (``db.ledger.Ledger`` is the implementation).

    Every call is one short blocking transaction; async callers run it in a thread.
    """

    def find_reusable(self, fingerprint: str, backend: str | None = None) -> LedgerEntry | None:
        """The newest ``done`` row (reuse), else the newest open row with an operation name."""
        ...

    def find_reusable_many(
        self, fingerprints: Sequence[str], backend: str | None = None
    ) -> dict[str, LedgerEntry]:
        """``find_reusable`` for many fingerprints in one query (those with no row are absent)."""
        ...

    def replay_journal(self) -> list[str]:
        """Apply the writes a faltering database left in the journal; what was applied."""
        ...

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
        """Write the ``submitting`` row; raises ``LedgerConflict`` or ``OverDailyBudget``.
        ``entry_id`` lets the caller name the row up front (its billing labels carry it)."""
        ...

    def record_operation(self, entry_id: uuid.UUID, operation_name: str) -> None: ...

    def note(self, entry_id: uuid.UUID, message: str) -> None: ...

    def add_details(self, entry_id: uuid.UUID, **values: Any) -> None: ...

    def mark_done(
        self,
        entry_id: uuid.UUID,
        *,
        cost_usd: float,
        result_url: str,
        details: Mapping[str, Any] | None = None,
    ) -> None: ...

    def update_result(
        self, entry_id: uuid.UUID, result_url: str, details: Mapping[str, Any] | None = None
    ) -> None: ...

    def mark_failed(self, entry_id: uuid.UUID, *, billed: bool, error: str) -> None: ...

    def mark_unknown(self, entry_id: uuid.UUID, error: str = AMBIGUOUS_NOTE) -> None: ...

    def mark_result_lost(self, entry_id: uuid.UUID, error: str) -> None: ...

    def mark_held(self, entry_id: uuid.UUID, error: str = HELD_NOTE) -> None: ...

    def outcome_unknown(self, fingerprints: Sequence[str], backend: str) -> bool: ...

    def spend_since(
        self,
        since: datetime,
        *,
        project_slug: str | None = None,
        price_table: PriceTable | None = None,
        run_id: str | None = None,
    ) -> DailySpend:
        """What the requests opened since ``since`` committed (billed, pending), in USD."""
        ...
