"""Spend-safe, concurrent clip generation: the engine behind ``scene_clip`` (no Dagster here).

Every paid request goes through the ledger (``domain.spend``): a row is written before sending,
the operation name the moment the API answers, so a rerun reuses finished clips with no API call
and resumes running operations instead of paying again. What is retried, and what is not (the
README's spend-safety table says the same per failure):

- submit, when the service answered with a transient status (429/408/5xx: the request was not
  accepted), or the request provably never left (connection refused, DNS or TLS failure before
  a byte was written: ``GenerationApiError.not_sent``): back off with full jitter and send again.
- submit, when the outcome is unknowable (a timeout or reset after the request was written):
  Veo has no idempotency key, so a retry could pay twice. By default the row is marked
  ``unknown`` and the job fails saying so; a rerun then submits once more and the ledger keeps
  both rows. Set ``Limits.retry_ambiguous_submits`` to accept that risk automatically. So is a
  submit the service accepted without returning an operation name (nothing to follow).
- poll and download: retried on their own budgets and never cause a resubmission; if they give up
  the row stays ``in_flight`` and a rerun resumes it for free. So does a download that fails
  outright (an HTTP 4xx on the video URI, gs:// without google-cloud-storage): the video was paid
  for, and a rerun polls the operation and downloads it again.
- an accepted operation the service no longer knows (404 on poll): as ambiguous as a lost submit
  answer, so the same rule; marked ``unknown``, the job fails, and only a rerun (or
  ``retry_ambiguous_submits``, or a free preview backend) submits again.
- an operation that ends in an error: not billed (Vertex charges for generated video, and it
  generated none), recorded ``failed_unbilled``; the job fails and the next run sends it again.
- an operation "done" with no video and no filter count: the API documents no such answer, so it
  may have been billed. The row becomes ``held`` (live: nothing is sent again for it) and the job
  fails naming the command a person runs once they have checked (``regenerate``), as for a paid
  clip whose file is lost.
- content policy: unbilled. The support codes map to categories through the model catalog
  (``domain.catalog``): a category a prompt rewrite cannot fix (child, celebrity, third-party
  content, prohibited) fails the job at once with the category and what to change; the audio
  filter (no code, a reason about audio) gets the same request once more, then a silent one where
  the model allows it; anything else is escalated through remediation levels 0 -> 1 -> 2 with the
  references kept, and level 2 failing fails the job with the API's reasons and support codes.
- a 400 about reference images combined with keyframes: unbilled; fall back to frames mode once.
- any other rejection: unbilled, the job fails, no silent resubmission.

A ledger write made after a request was sent (its operation name, its end) must never be lost: if
the database refuses it (SQLite locked by another writer, a PostgreSQL connection dropped), the
ledger keeps it in its journal and the engine retries it in the background with backoff while it
goes on polling; the next run replays the journal before it plans anything (``settle_jobs``).

Takes: a request for N takes (``sampleCount``) is one paid request; every video it returns is
downloaded and stored (``take_key`` names each) and listed on the outcome and the ledger row
(``details["take_urls"]``), and the row's cost counts the takes delivered (filtered takes are not
charged). Every paid request carries billing labels (project, scene, ledger row, run) and the
seed it was sent with, both recorded on its ledger row. Videos go from the API to a staging file
and from there into the store (``store_result`` takes the file): none is held in memory longer
than its download, and an outcome keeps only the stored files' URLs.

Remediation and fallback are deterministic, so each job has a fixed ladder of possible requests
(``request_ladder``). A run starts from the rung the ledger has done (or in flight), not from level
0: level 0 may pass today, and sending it would pay again for a clip the job already has. The
ledger is asked once for every rung of every job (``settle_jobs``), and the budget estimate and
the engine share that answer.

The rate limiter counts submits only, and only to paid backends (a local preview is not paced):
Veo's per-minute quota is on generation requests to the model, while operation polls are reads
on the operations endpoint with their own, larger quota; their rate is bounded by
``poll_interval`` and ``max_in_flight`` instead. The limiter is taken just before the request's
row is opened, so a request waiting for quota has no row ageing towards "stale".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NoReturn, ParamSpec, TypeVar

from vidpipe_dagster.domain.catalog import FilterVerdict, ModelCatalog, packaged_catalog
from vidpipe_dagster.domain.spend import (
    AMBIGUOUS_NOTE,
    DailyCap,
    LedgerConflict,
    LedgerEntry,
    LedgerUnavailable,
    OverDailyBudget,
    SpendLedger,
)
from vidpipe_dagster.domain.video_requests import (
    MAX_REMEDIATION_LEVEL,
    MAX_SEED,
    PriceTable,
    VideoRequest,
    billing_labels,
    remediate,
    request_cost_usd,
    without_audio,
    without_references,
)
from vidpipe_dagster.generation.client import (
    GenerationApiError,
    OperationResult,
    VideoClient,
    save_video,
)
from vidpipe_dagster.generation.errors import (
    is_policy_message,
    merge_codes,
    rejects_reference_combination,
    support_codes,
)

P = ParamSpec("P")
T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
EventSink = Callable[[str, str], None]
StoreResult = Callable[[str, Path], str]  # (take key, downloaded file) -> URL; takes the file

# Exceptions a client did not classify (test doubles, raw sockets): a transport failure.
_TRANSPORT_ERRORS = (TimeoutError, ConnectionError, OSError)


@dataclass(frozen=True)
class Limits:
    """Concurrency, quota and retry budgets for one ``generate_clips`` call."""

    max_in_flight: int = 4  # operations submitted and not yet downloaded, at once
    requests_per_minute: int = 10  # paid submits per sliding 60 s window (0 = unlimited)
    max_transient_retries: int = 6  # per submit and per poll streak
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_download_retries: int = 4  # separate budget: a download never causes a resubmission
    poll_timeout_s: float = 1800.0  # then give up waiting; the operation stays resumable
    retry_ambiguous_submits: bool = False  # see the module docstring
    regenerate_lost_results: bool = False  # buy a paid clip again when its video is gone for good
    max_ledger_retries: int = 8  # a refused ledger write: retries (backoff) before journal only


@dataclass(frozen=True)
class ClipJob:
    """One scene's clip. ``fallback`` is the frames-mode request to use if the API rejects the
    references in ``request`` (build it with ``policy="frames"``); without it a hybrid request
    falls back by dropping its references, and a references-only request fails."""

    key: str  # the scene partition key
    project_slug: str
    request: VideoRequest
    fallback: VideoRequest | None = None


@dataclass(frozen=True)
class Settled:
    """The rung of a job's ladder a previous run finished (else one it has in flight or held),
    with its ledger row as it was read: where a run starts instead of paying again."""

    request: VideoRequest
    fell_back: bool  # the rung is the frames fallback
    entry: LedgerEntry


@dataclass
class ClipOutcome:
    """What happened to one job. ``attempts`` counts billed submissions made by this call;
    ``cost_usd`` is what this call recorded as spent (0 when the clip was reused);
    ``billed_usd`` what the ledger holds as billed for the request the clip came from (also
    for a reused clip), ``None`` when no billed row stands behind it."""

    key: str
    status: Literal["done", "failed"]
    request: VideoRequest  # the final request used (after remediation or fallback)
    cached: bool = False
    resumed: bool = False
    attempts: int = 0
    api_calls: int = 0
    remediation_level: int = 0
    cost_usd: float = 0.0
    billed_usd: float | None = None
    operation_name: str | None = None
    error: str | None = None
    support_codes: tuple[str, ...] = ()
    result_url: str | None = None  # the first take's stored file
    notes: list[str] = field(default_factory=list)
    take_urls: list[str] = field(default_factory=list)  # every take's stored file, in API order
    categories: tuple[str, ...] = ()  # content-policy categories met on the way (catalog keys)
    seed: int | None = None  # the seed the finished request was sent with, when recorded
    labels: dict[str, str] = field(default_factory=dict)  # its billing labels
    unrecorded: list[str] = field(default_factory=list)  # writes neither database nor journal

    @property
    def fingerprint(self) -> str:
        return self.request.fingerprint


class _JobFailed(Exception):
    def __init__(self, message: str, support_codes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.support_codes = support_codes


class _ContentPolicy(_JobFailed):
    """Blocked by safety filters (unbilled): what ``verdict`` says decides what happens next."""

    def __init__(self, message: str, verdict: FilterVerdict) -> None:
        super().__init__(message, verdict.codes)
        self.verdict = verdict


class _ReferencesRejected(_JobFailed):
    """The API refused the references in this combination (unbilled): fall back to frames."""


class _OperationLost(Exception):
    """The service no longer knows the operation (expired, or a preview from another process)."""


class _Ticket:
    """A reservation of one send in the limiter's window, stamped when the request leaves."""

    def __init__(self, limiter: _SlidingWindowLimiter) -> None:
        self._limiter = limiter
        self._open = True

    def sent(self) -> None:
        if self._open:
            self._open = False
            self._limiter._resolve(sent=True)

    def cancel(self) -> None:
        """Nothing was sent with it after all (the row could not be opened)."""
        if self._open:
            self._open = False
            self._limiter._resolve(sent=False)


class _Slot:
    """One of ``max_in_flight`` places for an operation at the API, released as soon as its
    videos are downloaded (storing and recording them need no place at the API)."""

    def __init__(self, places: asyncio.Semaphore) -> None:
        self._places = places
        self._held = False

    async def __aenter__(self) -> _Slot:
        await self._places.acquire()
        self._held = True
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._places.release()


class _SlidingWindowLimiter:
    """At most ``per_minute`` sends in any 60 s window of ``clock`` time; the first
    ``per_minute`` go at once (no pacing inside a window).

    A send is reserved (``acquire``) before its ledger row is opened and stamped when the
    request actually leaves (``_Ticket.sent``); reservations not yet stamped count as sends
    in every window, so however long a row takes to open, no window ever holds more."""

    def __init__(self, per_minute: int, clock: Callable[[], float], sleep: Sleep) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._stamps: deque[float] = deque()
        self._reserved = 0
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()

    async def acquire(self) -> _Ticket | None:
        """A reservation, or ``None`` when there is no limit."""
        if self._per_minute <= 0:
            return None
        async with self._lock:
            while True:
                now = self._clock()
                while self._stamps and now - self._stamps[0] >= 60.0:
                    self._stamps.popleft()
                if len(self._stamps) + self._reserved < self._per_minute:
                    self._reserved += 1
                    return _Ticket(self)
                if self._reserved:  # one is about to leave (or be given back): wait for it
                    await self._changed.wait()
                else:
                    await self._sleep(max(60.0 - (now - self._stamps[0]), 0.001))

    def _resolve(self, *, sent: bool) -> None:
        self._reserved -= 1
        if sent:
            self._stamps.append(self._clock())
        self._changed.set()
        self._changed = asyncio.Event()


async def generate_clips(
    jobs: Sequence[ClipJob],
    client: VideoClient,
    ledger: SpendLedger,
    limits: Limits | None = None,
    *,
    store_result: StoreResult,
    result_exists: Callable[[str], bool],
    staging_dir: Path | None = None,
    price_table: PriceTable | None = None,
    poll_interval: float = 10.0,
    sleep: Sleep = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_event: EventSink | None = None,
    rng: random.Random | None = None,
    day_budget: tuple[datetime, float] | None = None,
    row_details: dict[str, Any] | None = None,
    catalog: ModelCatalog | None = None,
    seed_rng: random.Random | None = None,
    on_done: Callable[[ClipOutcome], None] | None = None,
    settled: Mapping[str, Settled | None] | None = None,
) -> list[ClipOutcome]:
    """Generate every job's clip concurrently; one outcome per job, in job order.

    ``store_result(key, path)`` moves a downloaded video (a file in ``staging_dir``, default the
    system's temporary folder: put it on the store's disk so the move is a rename) into the store
    and returns its URL; ``result_exists(url)`` says whether a stored video is still there. Both
    are plain functions run in a worker thread. Inject ``sleep`` and ``clock`` together (tests
    use virtual time). A job's failure, whatever it is, lands on its own outcome and never
    cancels or hides the others. ``day_budget`` (start of the day, USD limit) is checked
    atomically as each paid request is opened, so runs started together cannot overspend the
    day between them (``Ledger.open_submission``). ``row_details`` go on every ledger row this
    call opens (e.g. the Dagster run id, which the billing labels also carry). ``catalog``
    prices requests and maps support codes (default: the packaged one); ``seed_rng`` picks the
    seed of a request whose user fixed none. ``on_done(outcome)`` runs in a worker thread as
    each job finishes, so a caller can record and report a scene while the others are still
    generating. ``settled`` is ``settle_jobs``' answer for these jobs when the caller already
    asked (for its budget estimate); otherwise it is asked here, once for all jobs.
    """
    catalog = catalog or packaged_catalog()
    if settled is None:
        settled = await asyncio.to_thread(settle_jobs, jobs, ledger, client.backend, catalog)
    engine = _Engine(
        client=client,
        ledger=ledger,
        limits=limits or Limits(),
        store_result=store_result,
        result_exists=result_exists,
        staging_dir=Path(staging_dir or tempfile.gettempdir()),
        price_table=price_table,
        poll_interval=poll_interval,
        sleep=sleep,
        clock=clock,
        on_event=on_event,
        rng=rng or random.Random(),
        day_budget=day_budget,
        row_details=row_details or {},
        catalog=catalog,
        seed_rng=seed_rng or random.SystemRandom(),
        settled=settled,
    )

    async def run(job: ClipJob) -> ClipOutcome:
        outcome = await engine.run(job)
        if on_done is not None:
            await asyncio.to_thread(on_done, outcome)
        return outcome

    results = await asyncio.gather(*(run(job) for job in jobs), return_exceptions=True)
    outcomes: list[ClipOutcome] = []
    for job, result in zip(jobs, results, strict=True):
        if isinstance(result, ClipOutcome):
            outcomes.append(result)
        elif isinstance(result, Exception):
            outcomes.append(_failed(job, f"{type(result).__name__}: {result}"))
        else:  # CancelledError and other BaseExceptions must not be swallowed
            raise result
    return outcomes


def _failed(job: ClipJob, error: str) -> ClipOutcome:
    return ClipOutcome(
        key=job.key,
        status="failed",
        request=job.request,
        remediation_level=job.request.remediation_level,
        error=error,
    )


class _Engine:
    def __init__(
        self,
        *,
        client: VideoClient,
        ledger: SpendLedger,
        limits: Limits,
        store_result: StoreResult,
        result_exists: Callable[[str], bool],
        staging_dir: Path,
        price_table: PriceTable | None,
        poll_interval: float,
        sleep: Sleep,
        clock: Callable[[], float],
        on_event: EventSink | None,
        rng: random.Random,
        day_budget: tuple[datetime, float] | None,
        row_details: dict[str, Any],
        catalog: ModelCatalog,
        seed_rng: random.Random,
        settled: Mapping[str, Settled | None],
    ) -> None:
        if limits.max_in_flight < 1:
            raise ValueError("Limits.max_in_flight must be at least 1")
        self.client = client
        self.ledger = ledger
        self.limits = limits
        self.store_result = store_result
        self.result_exists = result_exists
        self.staging_dir = staging_dir
        self.price_table = price_table
        self.poll_interval = poll_interval
        self.sleep = sleep
        self.on_event = on_event
        self.rng = rng
        self.day_budget = day_budget
        self.row_details = row_details
        self.catalog = catalog
        self.seed_rng = seed_rng
        self.settled = settled
        self.slots = asyncio.Semaphore(limits.max_in_flight)
        # quota pacing is for paid APIs: a local preview costs nothing and has no quota
        per_minute = 0 if client.is_preview else limits.requests_per_minute
        self.limiter = _SlidingWindowLimiter(per_minute, clock, sleep)
        self.fingerprint_locks: dict[str, asyncio.Lock] = {}
        self.writes: dict[Any, asyncio.Future[None]] = {}  # per ledger row: its last write
        self.pending: dict[int, list[asyncio.Future[None]]] = {}  # per outcome: its writes

    # -- plumbing ---------------------------------------------------------------------------

    def daily_cap(self, estimate_usd: float) -> DailyCap | None:
        """The per-day check for a paid request (previews cost nothing and are not checked)."""
        if self.day_budget is None or self.client.is_preview:
            return None
        since, limit = self.day_budget
        return DailyCap(since, limit, estimate_usd, self.price_table, self.catalog)

    def emit(self, outcome: ClipOutcome, message: str) -> None:
        if self.on_event is None:
            return
        with contextlib.suppress(Exception):  # progress reporting must never break a paid job
            self.on_event(outcome.key, message)

    async def db(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Ledger calls are short blocking transactions: run them off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def settle(
        self,
        outcome: ClipOutcome,
        entry_id: Any,
        what: str,
        fn: Callable[..., None],
        *args: Any,
        background: bool = False,
        **kwargs: Any,
    ) -> None:
        """A ledger write made after the request may have been sent: it must not be lost.
        Writes to one row run in order; with ``background`` the job goes on (polling) while
        this one is retried. The job's outcome waits for all of them (``run``)."""
        previous = self.writes.get(entry_id)
        task = asyncio.ensure_future(
            self._durable(previous, outcome, what, fn, (entry_id, *args), kwargs)
        )
        self.writes[entry_id] = task
        self.pending.setdefault(id(outcome), []).append(task)
        if not background:
            await task

    async def _durable(
        self,
        previous: asyncio.Future[None] | None,
        outcome: ClipOutcome,
        what: str,
        fn: Callable[..., None],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """Retry a refused write with backoff; the ledger journals it on the first refusal, so
        giving up leaves it for the next run's replay. Never raises."""
        if previous is not None:
            await previous
        failures = 0
        journaled = False
        while True:
            try:
                await self.db(fn, *args, **kwargs)
            except LedgerUnavailable as exc:
                journaled = journaled or exc.journaled
                failures += 1
                if failures == 1:
                    self.emit(outcome, f"ledger: recording {what} failed ({exc}); retrying")
                if failures > self.limits.max_ledger_retries:
                    if journaled:
                        outcome.notes.append(
                            f"{what} is recorded in the ledger journal only (the database still "
                            f"refuses: {exc}); the next run replays it before planning"
                        )
                        self.emit(outcome, outcome.notes[-1])
                    else:
                        outcome.unrecorded.append(f"{what}: {exc}")
                    return
                await self.sleep(self.backoff(failures))
            except Exception as exc:  # not the database's availability: say it, never hide it
                outcome.unrecorded.append(f"{what}: {type(exc).__name__}: {exc}")
                return
            else:
                if failures:
                    self.emit(outcome, f"ledger: {what} recorded after {failures} refusal(s)")
                return

    async def quietly(self, fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        """A ledger write that only informs (a note, a counter): its loss costs nothing."""
        with contextlib.suppress(LedgerUnavailable):
            await self.db(fn, *args, **kwargs)

    def backoff(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^(failures-1))]."""
        ceiling = min(self.limits.backoff_max, self.limits.backoff_base * 2 ** (failures - 1))
        return self.rng.uniform(0.0, ceiling)

    def lock(self, fingerprint: str) -> asyncio.Lock:
        """Jobs with identical requests in one call run one after the other: the second reuses."""
        return self.fingerprint_locks.setdefault(fingerprint, asyncio.Lock())

    def cost(self, request: VideoRequest, takes: int | None = None) -> float:
        """List price of ``request`` (every take, or ``takes`` delivered); previews are free and
        an unpriceable model fails before any spend."""
        if self.client.is_preview:
            return 0.0
        return request_cost_usd(request, self.price_table, self.catalog, takes=takes)

    async def filtered(
        self, outcome: ClipOutcome, entry_id: Any, message: str, codes: tuple[str, ...]
    ) -> _ContentPolicy:
        """A filtered operation, recorded as not charged; the signal remediation acts on."""
        signal = self.policy(message, codes)
        await self.settle(
            outcome,
            entry_id,
            "the filtered operation",
            self.ledger.mark_failed,
            billed=False,
            error=str(signal),
        )
        return signal

    def policy(self, message: str, codes: tuple[str, ...]) -> _ContentPolicy:
        """A content-policy signal, its codes mapped to categories by the catalog."""
        verdict = self.catalog.classify_filter(message, codes)
        return _ContentPolicy(f"{message} [{verdict.describe()}; not charged]", verdict)

    def staging_file(self) -> Path:
        """A fresh file name for one download attempt (a timed-out attempt's thread may still
        be writing its own)."""
        return self.staging_dir / f".clip-{uuid.uuid4().hex}.part"

    # -- a job ------------------------------------------------------------------------------

    async def run(self, job: ClipJob) -> ClipOutcome:
        outcome = _failed(job, "not started")
        try:
            await self.drive(job, outcome)
            outcome.status = "done"
            outcome.error = None
        except _JobFailed as exc:
            outcome.status = "failed"
            outcome.error = str(exc)
            outcome.support_codes = merge_codes(outcome.support_codes, exc.support_codes)
            self.emit(outcome, f"failed: {exc}")
        except Exception as exc:
            outcome.status = "failed"
            outcome.error = f"{type(exc).__name__}: {exc}"
            self.emit(outcome, f"failed: {outcome.error}")
        for write in self.pending.pop(id(outcome), []):  # the ledger has it, or the journal
            await write
        if outcome.unrecorded:
            operation = f" (operation {outcome.operation_name})" if outcome.operation_name else ""
            outcome.status = "failed"
            outcome.error = (
                f"the ledger could not record what the API answered{operation}, and there is "
                f"no journal to keep it: {'; '.join(outcome.unrecorded)}. It may have been "
                "billed: write the operation name down before rerunning"
                + (f" (the job had: {outcome.error})" if outcome.error else "")
            )
            self.emit(outcome, outcome.error)
        return outcome

    async def drive(self, job: ClipJob, outcome: ClipOutcome) -> None:
        """Remediation and fallback around single generations of successive requests, starting
        from the rung of the ladder a previous run settled on (so a rerun pays nothing again)."""
        request, fell_back = job.request, False
        known: LedgerEntry | None = None  # the shared lookup's row for ``request`` (none: new)
        settled = self.settled.get(job.key)
        if settled is not None:
            request, fell_back, known = settled.request, settled.fell_back, settled.entry
        if settled is not None and request.fingerprint != job.request.fingerprint:
            where = f"remediation level {request.remediation_level}"
            where += ", frames mode (fallback)" if fell_back else ""
            where += (
                ", no audio" if job.request.generate_audio and not request.generate_audio else ""
            )
            outcome.notes.append(f"continuing where a previous run settled: {where}")
            self.emit(outcome, outcome.notes[-1])
        retried_unchanged: set[str] = set()
        while True:
            outcome.request = request
            outcome.remediation_level = request.remediation_level
            try:
                await self.generate(job, request, outcome, known)
                return
            except _ContentPolicy as exc:
                request = self.after_policy(exc, request, outcome, retried_unchanged)
            except _ReferencesRejected as exc:
                fallback = None if fell_back else _frames_fallback(job, request, str(exc))
                if fallback is None:
                    raise _JobFailed(f"reference images rejected: {exc}") from exc
                fell_back = True
                request = fallback
                outcome.notes.append(f"fell back to frames mode: {exc}")
                self.emit(outcome, f"references rejected ({exc}); falling back to frames mode")
            known = None  # a new rung: no row of it was live when the run began

    def after_policy(
        self,
        exc: _ContentPolicy,
        request: VideoRequest,
        outcome: ClipOutcome,
        retried_unchanged: set[str],
    ) -> VideoRequest:
        """The next request after a content-policy block (unbilled), by category: stop at once
        for what no rewrite fixes; for the audio filter, the same request once more and then a
        silent one; otherwise the next remediation level (failing after the last)."""
        verdict = exc.verdict
        outcome.support_codes = merge_codes(outcome.support_codes, exc.support_codes)
        outcome.categories = merge_codes(
            outcome.categories, tuple(c.key for c in verdict.categories)
        )
        level = request.remediation_level
        if verdict.unfixable:
            names = ", ".join(c.name for c in verdict.unfixable)
            raise _JobFailed(
                f"blocked by content policy: {verdict.describe()}. A prompt rewrite cannot fix "
                f"{names}, so nothing more was sent. What to change: {verdict.advice()} "
                f"(API said: {exc})",
                outcome.support_codes,
            ) from exc
        if verdict.audio_only:
            if request.fingerprint not in retried_unchanged:
                retried_unchanged.add(request.fingerprint)
                outcome.notes.append(
                    f"audio filter at level {level} (not charged; its false positives pass on a "
                    f"retry): sending the same request once more ({exc})"
                )
                self.emit(outcome, outcome.notes[-1])
                return request
            caps = self.catalog.find_video_model(request.model)
            if request.generate_audio and caps is not None and caps.audio_optional:
                outcome.notes.append(
                    f"audio filter again at level {level} (not charged): sending it without audio"
                )
                self.emit(outcome, outcome.notes[-1])
                return without_audio(request, "the audio filter blocked it twice")
        if level >= MAX_REMEDIATION_LEVEL:
            raise _JobFailed(
                f"blocked by content policy at remediation level {level} (the last); {exc}",
                outcome.support_codes,
            ) from exc
        self.emit(outcome, f"content policy at level {level} ({exc}); now level {level + 1}")
        return remediate(request, level + 1)

    async def generate(
        self, job: ClipJob, request: VideoRequest, outcome: ClipOutcome, known: LedgerEntry | None
    ) -> None:
        """One request: reuse, resume, or submit, under the ledger. ``known`` is the row the
        shared lookup found for it (``None``: none was live, so go straight to opening a row,
        which checks again atomically); later passes look the ledger up afresh."""
        fingerprint = request.fingerprint
        cost = self.cost(request)  # every take; an unpriceable model fails before any spend
        async with self.lock(fingerprint):
            entry = known
            for attempt in range(3):
                if attempt:
                    entry = await self.db(
                        self.ledger.find_reusable, fingerprint, self.client.backend
                    )
                if entry is not None and entry.state == "done":
                    if await self.reuse(entry, request, outcome):
                        return
                elif entry is not None and entry.state == "held":
                    outcome.operation_name = entry.operation_name
                    raise _JobFailed(_held_message(job, entry.operation_name, entry.id))
                elif entry is not None and entry.operation_name:
                    async with _Slot(self.slots) as slot:
                        try:
                            _remember_sent(outcome, entry)
                            await self.finish(
                                job,
                                request,
                                entry.id,
                                entry.operation_name,
                                outcome,
                                cost=cost,
                                resumed=True,
                                slot=slot,
                            )
                            return
                        except _OperationLost as exc:
                            await self.lost(entry.id, entry.operation_name, exc, outcome)
                async with _Slot(self.slots) as slot:
                    ticket = await self.limiter.acquire()
                    entry_id = uuid.uuid4()
                    sent = request.for_submission(
                        seed=self.seed_rng.randint(0, MAX_SEED),
                        labels=billing_labels(
                            project_slug=job.project_slug,
                            subject=job.key,
                            ledger_row=str(entry_id),
                            run_id=self.row_details.get("run_id"),
                        ),
                    )
                    opened = False
                    try:
                        opened = await self.open_row(job, request, sent, entry_id, cost, outcome)
                    finally:
                        if ticket is not None and not opened:
                            ticket.cancel()  # nothing leaves with this reservation
                    if not opened:
                        continue  # finished or accepted meanwhile: reuse or resume it
                    outcome.seed, outcome.labels = sent.effective_seed, dict(sent.labels)
                    operation = await self.submit(sent, entry_id, outcome, ticket=ticket)
                    outcome.operation_name = operation
                    await self.settle(
                        outcome,
                        entry_id,
                        f"operation {operation}",
                        self.ledger.record_operation,
                        operation,
                        background=True,  # poll meanwhile: the write may wait for the database
                    )
                    self.emit(
                        outcome, f"submitted {request.conditioning_mode} request: {operation}"
                    )
                    try:
                        await self.finish(
                            job,
                            request,
                            entry_id,
                            operation,
                            outcome,
                            cost=cost,
                            resumed=False,
                            slot=slot,
                        )
                        return
                    except _OperationLost as exc:
                        await self.lost(entry_id, operation, exc, outcome)
            raise _JobFailed("the ledger kept changing under this request; try again")

    async def open_row(
        self,
        job: ClipJob,
        request: VideoRequest,
        sent: VideoRequest,
        entry_id: uuid.UUID,
        cost: float,
        outcome: ClipOutcome,
    ) -> bool:
        """Write the row that must exist before sending; ``False`` when the request turned out
        finished or accepted meanwhile. Nothing has been sent, so a refusing database is simply
        retried (and the job fails, unpaid, if it keeps refusing)."""
        failures = 0
        while True:
            try:
                await self.db(
                    self.ledger.open_submission,
                    request.fingerprint,
                    kind="video",
                    model=request.model,
                    backend=self.client.backend,
                    project_slug=job.project_slug,
                    subject=job.key,
                    details={
                        **_details(request),
                        **self.row_details,
                        "estimate_usd": cost,
                        # every rung of one job's ladder is one clip: the read-back check
                        # counts billed rows per ladder (Ledger.billed_per_clip)
                        "ladder": job.request.fingerprint,
                        "seed": sent.effective_seed,
                        "seed_chosen": request.seed is None,
                        "labels": dict(sent.labels),
                    },
                    daily_cap=self.daily_cap(cost),
                    resolution=request.resolution,
                    takes=request.takes,
                    entry_id=entry_id,
                )
                return True
            except OverDailyBudget as exc:
                raise _JobFailed(str(exc)) from exc
            except LedgerConflict as exc:
                if exc.entry.id == entry_id:
                    return True  # ours: committed although the connection dropped on the answer
                if exc.entry.state == "submitting" and not exc.entry.operation_name:
                    raise _JobFailed(str(exc)) from exc
                return False
            except LedgerUnavailable as exc:
                failures += 1
                if failures > self.limits.max_ledger_retries:
                    raise _JobFailed(
                        f"the ledger database keeps refusing ({exc}); nothing was sent"
                    ) from exc
                delay = self.backoff(failures)
                self.emit(outcome, f"ledger: {exc}; nothing sent yet, retry in {delay:.1f} s")
                await self.sleep(delay)

    async def reuse(self, entry: LedgerEntry, request: VideoRequest, outcome: ClipOutcome) -> bool:
        """A done row: every stored take still there (zero API calls, nothing read), else
        download them again through its operation. A video gone for good is bought again only
        for a free preview or with ``Limits.regenerate_lost_results``; otherwise the job fails
        and a person decides (``vidpipe-dagster regenerate``). A download that could work later
        fails the job too."""
        urls = _take_urls(entry)
        present = await asyncio.to_thread(lambda: [self.result_exists(url) for url in urls])
        outcome.operation_name = entry.operation_name
        _remember_sent(outcome, entry)
        if urls and all(present):
            _record_takes(outcome, urls)
            outcome.cached = True
            outcome.billed_usd = entry.cost_usd if entry.billed else None
            self.emit(outcome, f"reused finished clip {urls[0]} (no API call)")
            return True
        missing = [url for url, there in zip(urls, present, strict=True) if not there]
        why = f"stored video {(missing or [entry.result_url])[0]!r} is missing"
        if entry.operation_name:
            try:
                result = await self.poll(entry.operation_name, entry.id, outcome, first_wait=False)
                if result.videos:
                    urls = await self.store_takes(request, result, entry.id, outcome)
                    await self.settle(
                        outcome,
                        entry.id,
                        "the downloaded clip",
                        self.ledger.update_result,
                        urls[0],
                        {"take_urls": urls},
                    )
                    _record_takes(outcome, urls)
                    outcome.resumed = True
                    outcome.billed_usd = entry.cost_usd if entry.billed else None
                    outcome.notes.append(f"{why}; downloaded again from {entry.operation_name}")
                    self.emit(outcome, outcome.notes[-1])
                    return True
                why += "; its operation has no video any more"
            except GenerationApiError as exc:
                if not _video_gone(exc):
                    raise _JobFailed(
                        f"{why}, and downloading it again from {entry.operation_name} failed: "
                        f"{exc}; it was paid for, so it is not generated again: fix the download "
                        "and rerun",
                        exc.support_codes,
                    ) from exc
                why += f"; downloading again failed: {exc}"
            except (_OperationLost, _ContentPolicy) as exc:
                why += f"; downloading again failed: {exc}"  # gone for good
            except _JobFailed as exc:  # transient trouble: paying again would be wrong
                raise _JobFailed(
                    f"{why}, and downloading it again from {entry.operation_name} failed for now "
                    f"({exc}); nothing was paid, rerun later"
                ) from exc
        if not (self.client.is_preview or self.limits.regenerate_lost_results):
            raise _JobFailed(
                f"{why}; it was paid for ({entry.cost_usd:.2f} USD), so it is not bought again "
                "without a person deciding: check VIDPIPE_MEDIA_ROOT (a wrong media root would "
                "re-buy every clip), then `vidpipe-dagster regenerate SLUG --scene N` to pay for "
                "a new one"
            )
        await self.settle(outcome, entry.id, "the lost result", self.ledger.mark_result_lost, why)
        outcome.notes.append(f"regenerating: {why}")
        self.emit(outcome, outcome.notes[-1])
        return False

    async def store_takes(
        self,
        request: VideoRequest,
        result: OperationResult,
        entry_id: Any,
        outcome: ClipOutcome,
        slot: _Slot | None = None,
    ) -> list[str]:
        """Download every take to a staging file (on disk, never held), release ``slot`` (the
        API's part is over, so the next request may leave while these are stored), then hand
        each file to the store (``take_key`` names each). Their URLs, in order."""
        paths: list[Path] = []
        try:
            for index in range(len(result.videos)):
                paths.append(await self.download(result.take(index), entry_id, outcome))
            if slot is not None:
                slot.release()
            urls: list[str] = []
            for index, path in enumerate(paths):
                key = take_key(request.fingerprint, index)
                urls.append(await asyncio.to_thread(self.store_result, key, path))
            return urls
        finally:
            for path in paths:
                path.unlink(missing_ok=True)  # the store moved it; if it failed, clean up

    async def submit(
        self, request: VideoRequest, entry_id: Any, outcome: ClipOutcome, *, ticket: _Ticket | None
    ) -> str:
        """Send the request, retrying only failures that prove it was not accepted. ``ticket``
        is the quota reserved for the first send (each resend reserves its own)."""
        failures = 0
        while True:
            if failures:
                ticket = await self.limiter.acquire()
            outcome.api_calls += 1
            try:
                if ticket is not None:
                    ticket.sent()  # stamped as it leaves
                return await self.client.submit(request)
            except GenerationApiError as exc:
                if exc.unaccepted:
                    error: BaseException = exc  # answered (429/5xx) or never sent
                elif exc.kind == "transient":
                    await self.ambiguous(exc, entry_id, failures, outcome)
                    failures += 1
                    await self.sleep(self.backoff(failures))
                    continue
                else:
                    await self.refused(exc, request, entry_id, outcome)
            except (ConnectionRefusedError, socket.gaierror) as exc:
                error = exc  # never reached the service
            except _TRANSPORT_ERRORS as exc:
                await self.ambiguous(exc, entry_id, failures, outcome)
                failures += 1
                await self.sleep(self.backoff(failures))
                continue
            except Exception as exc:
                await self.settle(
                    outcome,
                    entry_id,
                    "an ambiguous submit",
                    self.ledger.mark_unknown,
                    f"{AMBIGUOUS_NOTE}: {exc!r}",
                )
                raise
            failures += 1
            if failures > self.limits.max_transient_retries:
                message = f"submit gave up after {failures} transient errors; last: {error}"
                await self.settle(
                    outcome,
                    entry_id,
                    "the unsent request",
                    self.ledger.mark_failed,
                    billed=False,
                    error=message,
                )
                raise _JobFailed(message)
            delay = self.backoff(failures)
            await self.quietly(
                self.ledger.note, entry_id, f"transient submit error {failures}: {error}"
            )
            self.emit(outcome, f"submit: {error}; retry {failures} in {delay:.1f} s")
            await self.sleep(delay)

    async def ambiguous(
        self, exc: BaseException, entry_id: Any, failures: int, outcome: ClipOutcome
    ) -> None:
        """The request may have been accepted: retry only if allowed, and record it either way."""
        detail = f"{type(exc).__name__}: {exc}" if not isinstance(exc, GenerationApiError) else exc
        if self.limits.retry_ambiguous_submits and failures < self.limits.max_transient_retries:
            await self.quietly(self.ledger.add_details, entry_id, ambiguous_attempts=failures + 1)
            await self.quietly(self.ledger.note, entry_id, f"ambiguous submit, retrying: {detail}")
            outcome.notes.append(f"submit outcome unknown ({detail}); sent again (may pay twice)")
            self.emit(outcome, outcome.notes[-1])
            return
        await self.settle(
            outcome,
            entry_id,
            "an ambiguous submit",
            self.ledger.mark_unknown,
            f"{AMBIGUOUS_NOTE}: {detail}",
        )
        raise _JobFailed(
            f"submit outcome unknown ({detail}): the request may have been accepted and billed, "
            "and Veo offers no way to check; not sent again automatically. Rerunning submits "
            "once more (the ledger records both)."
        )

    async def lost(
        self, entry_id: Any, operation: str, exc: _OperationLost, outcome: ClipOutcome
    ) -> None:
        """The service forgot an accepted operation: it may have run and been billed, and its
        video cannot be fetched. Like an ambiguous submit, it is sent again only when that costs
        nothing (a preview) or ``retry_ambiguous_submits`` accepts the risk; else the job fails."""
        await self.settle(
            outcome,
            entry_id,
            f"lost operation {operation}",
            self.ledger.mark_unknown,
            f"operation {operation} lost: {exc}",
        )
        if self.client.is_preview or self.limits.retry_ambiguous_submits:
            risk = "" if self.client.is_preview else " (may pay twice)"
            outcome.notes.append(f"operation {operation} lost ({exc}); submitting again{risk}")
            self.emit(outcome, outcome.notes[-1])
            return
        raise _JobFailed(
            f"operation {operation} is no longer known to the service ({exc}): it may have run "
            "and been billed, and its video cannot be fetched; not sent again automatically. "
            "Check the project's Vertex AI billing, then rerun to submit once more (the ledger "
            "records both), or set retry_ambiguous_submits to allow this automatically."
        ) from exc

    async def refused(
        self, exc: GenerationApiError, request: VideoRequest, entry_id: Any, outcome: ClipOutcome
    ) -> NoReturn:
        """A definitive answer to a submit: record it on the row and raise the matching signal."""
        if exc.kind == "content_policy":
            signal = self.policy(exc.message, exc.support_codes)
            await self.settle(
                outcome,
                entry_id,
                "a refused request",
                self.ledger.mark_failed,
                billed=False,
                error=str(signal),
            )
            raise signal
        if exc.kind == "failed" and exc.billed:
            # accepted (it may bill) but nothing came back to follow: as ambiguous as a timeout
            await self.settle(
                outcome,
                entry_id,
                "an ambiguous submit",
                self.ledger.mark_unknown,
                f"{AMBIGUOUS_NOTE}: {exc}",
            )
            raise _JobFailed(
                f"the service accepted the request but gave nothing to follow ({exc}): it may "
                "have been billed; not sent again automatically. Rerunning submits once more "
                "(the ledger records both).",
                exc.support_codes,
            )
        await self.settle(
            outcome,
            entry_id,
            "a refused request",
            self.ledger.mark_failed,
            billed=False,
            error=str(exc),
        )
        if exc.kind == "failed":
            raise _JobFailed(f"generation failed: {exc}", exc.support_codes)
        if request.reference_images and rejects_reference_combination(exc.message):
            raise _ReferencesRejected(exc.message, exc.support_codes)
        raise _JobFailed(f"request rejected: {exc}", exc.support_codes)

    async def finish(
        self,
        job: ClipJob,
        request: VideoRequest,
        entry_id: Any,
        operation: str,
        outcome: ClipOutcome,
        *,
        cost: float,
        resumed: bool,
        slot: _Slot | None = None,
    ) -> None:
        """Poll an accepted operation to the end, download and store every take, and close the
        ledger row: at the price of the takes delivered (filtered takes are not charged); not
        billed for an operation that ended in an error; ``held`` for a done operation with
        neither a video nor a filter count."""
        outcome.operation_name = operation
        outcome.resumed = resumed
        if resumed:
            self.emit(outcome, f"resuming operation {operation} (no new request)")
        result = await self.poll(operation, entry_id, outcome, first_wait=not resumed)
        if result.error_message:
            message = f"operation {operation} failed: {result.error_message}"
            codes = support_codes(result.error_message)
            if is_policy_message(result.error_message):
                raise await self.filtered(outcome, entry_id, message, codes)
            await self.settle(
                outcome,
                entry_id,
                "the failed operation",
                self.ledger.mark_failed,
                billed=False,
                error=f"{message} (not billed: an operation that ends in an error is not charged)",
            )
            raise _JobFailed(
                f"{message}. Not billed (Vertex charges for generated video, and an operation "
                "that ends in an error generated none), so the next run sends it again",
                codes,
            )
        reasons = "; ".join(result.rai_filtered_reasons) or "no reason given"
        if result.content_filtered:
            raise await self.filtered(
                outcome,
                entry_id,
                f"video filtered by safety checks: {reasons}",
                support_codes(reasons),
            )
        if not result.videos:  # done, no video, nothing filtered: not what the API documents
            await self.settle(
                outcome,
                entry_id,
                "the operation without a video",
                self.ledger.mark_held,
                f"operation {operation} finished without a video and without a filter count "
                "(not what the API documents); it may have been billed, so it is not sent again "
                "until a person decides",
            )
            raise _JobFailed(_held_message(job, operation, entry_id))
        if result.rai_filtered_count:
            outcome.notes.append(
                f"{result.rai_filtered_count} of {request.takes} takes filtered by safety checks "
                f"(not charged): {reasons}"
            )
            self.emit(outcome, outcome.notes[-1])
        try:
            urls = await self.store_takes(request, result, entry_id, outcome, slot)
        except GenerationApiError as exc:
            if exc.kind == "content_policy":
                raise await self.filtered(
                    outcome, entry_id, exc.message, exc.support_codes
                ) from exc
            outcome.attempts += 0 if resumed else 1
            # The video exists and was paid for: keep the row in flight so that a rerun polls
            # the operation and downloads it again instead of submitting a new request.
            await self.quietly(self.ledger.note, entry_id, f"download failed: {exc}")
            raise _JobFailed(
                f"operation {operation} finished and was billed, but its video could not be "
                f"downloaded: {exc}; it stays in flight and a rerun downloads it again without "
                "paying again (if it never will: `vidpipe-dagster regenerate SLUG --scene N` "
                "lets the next run pay for a new one)",
                exc.support_codes,
            ) from exc
        billed = cost if len(urls) == request.takes else self.cost(request, takes=len(urls))
        await self.settle(
            outcome,
            entry_id,
            "the finished clip",
            self.ledger.mark_done,
            cost_usd=billed,
            result_url=urls[0],
            details={"take_urls": urls},
        )
        _record_takes(outcome, urls)
        outcome.cost_usd += billed
        outcome.billed_usd = billed
        outcome.attempts += 0 if resumed else 1
        takes = f" ({len(urls)} takes)" if len(urls) > 1 else ""
        self.emit(outcome, f"done: {request.duration_seconds} s clip{takes} stored at {urls[0]}")

    async def poll(
        self, operation: str, entry_id: Any, outcome: ClipOutcome, *, first_wait: bool
    ) -> OperationResult:
        """Poll until done. Transient errors back off and poll again; never a resubmission."""
        waited = 0.0
        failures = 0
        if first_wait:
            await self.sleep(self.poll_interval)
            waited += self.poll_interval
        while True:
            outcome.api_calls += 1
            try:
                result = await self.client.poll(operation)
            except GenerationApiError as exc:
                if exc.kind == "not_found":
                    raise _OperationLost(str(exc)) from exc
                if exc.kind == "content_policy":
                    raise await self.filtered(
                        outcome, entry_id, exc.message, exc.support_codes
                    ) from exc
                if exc.kind != "transient":  # e.g. credentials: the operation itself may be fine
                    await self.quietly(self.ledger.note, entry_id, f"poll failed: {exc}")
                    raise _JobFailed(
                        f"polling {operation} failed: {exc}; it stays in flight and a rerun "
                        "resumes it without paying again"
                    ) from exc
                error: BaseException = exc
            except _TRANSPORT_ERRORS as exc:
                error = exc
            else:
                failures = 0
                if result.done:
                    return result
                if waited >= self.limits.poll_timeout_s:
                    message = f"operation {operation} still running after {waited:.0f} s"
                    await self.quietly(self.ledger.note, entry_id, message)
                    raise _JobFailed(f"{message}; a rerun resumes it without paying again")
                await self.sleep(self.poll_interval)
                waited += self.poll_interval
                continue
            failures += 1
            if failures > self.limits.max_transient_retries:
                await self.quietly(self.ledger.note, entry_id, f"poll gave up: {error}")
                raise _JobFailed(
                    f"polling {operation} gave up after {failures} errors ({error}); it stays in "
                    "flight and a rerun resumes it without paying again"
                )
            delay = self.backoff(failures)
            self.emit(outcome, f"poll: {error}; retry {failures} in {delay:.1f} s")
            await self.sleep(delay)
            waited += delay

    async def download(self, result: OperationResult, entry_id: Any, outcome: ClipOutcome) -> Path:
        """Fetch the video into a staging file on its own retry budget; giving up leaves the row
        resumable."""
        failures = 0
        while True:
            outcome.api_calls += 1
            path = self.staging_file()
            try:
                await save_video(self.client, result, path)
                return path
            except GenerationApiError as exc:
                path.unlink(missing_ok=True)
                if exc.kind != "transient":
                    raise
                error: BaseException = exc
            except _TRANSPORT_ERRORS as exc:
                path.unlink(missing_ok=True)
                error = exc
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            failures += 1
            if failures > self.limits.max_download_retries:
                await self.quietly(self.ledger.note, entry_id, f"download gave up: {error}")
                raise _JobFailed(
                    f"downloading {result.name} gave up after {failures} errors ({error}); the "
                    "generation is kept in flight and a rerun downloads it without paying again"
                )
            delay = self.backoff(failures)
            self.emit(outcome, f"download: {error}; retry {failures} in {delay:.1f} s")
            await self.sleep(delay)


def _held_message(job: ClipJob, operation: str | None, entry_id: Any) -> str:
    return (
        f"operation {operation} finished but returned no video and no filter count, which the "
        "API does not document: it may have been billed, so it is not sent again. Check the "
        f"project's Vertex AI billing for it (ledger row and billing label vidpipe_ledger_row "
        f"{entry_id}), then `vidpipe-dagster regenerate {job.project_slug} --scene {job.key}` "
        "lets the next run pay for a new one"
    )


def _video_gone(exc: GenerationApiError) -> bool:
    """A download failure that no later attempt can fix: the object or operation is gone."""
    return exc.kind in ("content_policy", "not_found") or exc.status_code in (404, 410)


def take_key(fingerprint: str, index: int) -> str:
    """The key a take is stored under: the request's fingerprint for the first take, a hash
    derived from it for the others (distinct under any prefix a store may cut it to)."""
    if index == 0:
        return fingerprint
    return hashlib.sha256(f"{fingerprint}:take{index + 1}".encode()).hexdigest()


def _take_urls(entry: LedgerEntry) -> list[str]:
    """Every stored take of a done row (rows from before takes list only ``result_url``)."""
    urls = (entry.details or {}).get("take_urls")
    if isinstance(urls, list) and urls:
        return [str(url) for url in urls]
    return [entry.result_url] if entry.result_url else []


def _record_takes(outcome: ClipOutcome, urls: Sequence[str]) -> None:
    outcome.take_urls = list(urls)
    outcome.result_url = urls[0]


def _remember_sent(outcome: ClipOutcome, entry: LedgerEntry) -> None:
    """The seed and labels a reused or resumed request was sent with, from its ledger row."""
    details = entry.details or {}
    seed = details.get("seed")
    outcome.seed = seed if isinstance(seed, int) else None
    outcome.labels = entry.labels


def _frames_fallback(job: ClipJob, request: VideoRequest, why: str) -> VideoRequest | None:
    """The frames-mode request to send when the API rejects ``request``'s references."""
    fallback = job.fallback
    if fallback is None or fallback.reference_images:
        if request.first_frame is None:
            return None  # references-only: without keyframes there is no honest fallback
        fallback = without_references(request, why)
    if fallback.remediation_level != request.remediation_level:
        fallback = remediate(fallback, request.remediation_level)
    if fallback.generate_audio and not request.generate_audio:
        fallback = without_audio(fallback, "as the request it replaces")
    return fallback


def _ladder(job: ClipJob, catalog: ModelCatalog | None = None) -> list[tuple[VideoRequest, bool]]:
    """Every request ``drive`` can reach for ``job``, with whether it is the frames fallback:
    each remediation level from the job's own, as asked and (if it has references) in frames
    mode, then the silent forms the audio filter leads to (where the model may go silent).
    Fingerprints ignore reason texts, so the ladder is deterministic."""
    rungs: dict[str, tuple[VideoRequest, bool]] = {}
    caps = (catalog or packaged_catalog()).find_video_model(job.request.model)
    silent = job.request.generate_audio and caps is not None and caps.audio_optional
    for audio in (True, False) if silent else (True,):
        for level in range(job.request.remediation_level, MAX_REMEDIATION_LEVEL + 1):
            request = remediate(job.request, level)
            if not audio:
                request = without_audio(request, "the audio filter blocked it twice")
            rungs.setdefault(request.fingerprint, (request, False))
            if request.reference_images:
                fallback = _frames_fallback(job, request, "references rejected on an earlier run")
                if fallback is not None:
                    rungs.setdefault(fallback.fingerprint, (fallback, True))
    return list(rungs.values())


def request_ladder(job: ClipJob, catalog: ModelCatalog | None = None) -> list[VideoRequest]:
    """The requests a finished clip of ``job`` may have been made from (remediated, the frames
    fallback, or silent after the audio filter): compare a stored clip's fingerprint against
    all of them, not only ``job.request``, before calling it stale."""
    return [request for request, _ in _ladder(job, catalog)]


def settle_jobs(
    jobs: Sequence[ClipJob],
    ledger: SpendLedger,
    backend: str,
    catalog: ModelCatalog | None = None,
) -> dict[str, Settled | None]:
    """Per job key, the rung a previous run finished (the newest ``done``), else one still in
    flight or held: a run starts there instead of from level 0, which may pass now and be paid
    for again. One ledger query for every rung of every job (after the ledger replays its
    journal), shared by the budget estimate and the engine."""
    ladders = {job.key: _ladder(job, catalog) for job in jobs}
    fingerprints = [rung.fingerprint for rungs in ladders.values() for rung, _ in rungs]
    found = ledger.find_reusable_many(fingerprints, backend) if fingerprints else {}
    settled: dict[str, Settled | None] = {}
    for job in jobs:
        candidates = [
            Settled(rung, fell_back, found[rung.fingerprint])
            for rung, fell_back in ladders[job.key]
            if rung.fingerprint in found
        ]
        done = [c for c in candidates if c.entry.state == "done"]
        pool = done or candidates
        settled[job.key] = (
            max(pool, key=lambda c: c.entry.created_at or datetime.min) if pool else None
        )
    return settled


def _details(request: VideoRequest) -> dict[str, Any]:
    """What a person auditing spend wants to see on the ledger row."""
    return {
        "mode": request.conditioning_mode,
        "reason": request.conditioning_reason,
        "duration_seconds": request.duration_seconds,
        "remediation_level": request.remediation_level,
        "reference_tags": list(request.reference_tags),
        "generate_audio": request.generate_audio,
        "resolution": request.resolution,
        "takes": request.takes,
    }


def estimate_new_spend(
    jobs: Sequence[ClipJob],
    client: VideoClient,
    ledger: SpendLedger,
    price_table: PriceTable | None = None,
    catalog: ModelCatalog | None = None,
    *,
    settled: Mapping[str, Settled | None] | None = None,
) -> list[tuple[str, float]]:
    """What ``generate_clips`` would newly pay per job: 0 for previews and for jobs the ledger has
    a request of (any rung of ``request_ladder``) done, in flight or held, reused, resumed or
    waiting; else the catalog's price of the clip at its resolution, duration and audio, for
    every take. Pass ``settled`` (``settle_jobs``) to share the lookup with the engine."""
    if client.is_preview:
        return [(job.key, 0.0) for job in jobs]
    if settled is None:
        settled = settle_jobs(jobs, ledger, client.backend, catalog)
    return [
        (
            job.key,
            0.0
            if settled.get(job.key) is not None
            else request_cost_usd(job.request, price_table, catalog),
        )
        for job in jobs
    ]
