"""Spend budgets: how much of the requested work may start now, estimated before any paid call.

Two limits apply together:
- per run: one run's estimate. A project's nightly schedule launches at most one run per tick (and
  none while an earlier run of the project is unfinished), so for the schedule "per project"
  means per run, i.e. per tick for that project; two ticks, or a tick and a manual run, each get
  their own per-run allowance.
- per day, across all projects: what is already committed today counts against it (``DailySpend``:
  billed, plus the expected cost of requests still pending or of uncertain outcome, plus the
  estimates of scheduled runs that have not submitted yet).

Work is accepted in scene order and stops at the first scene that does not fit, so an accepted set
is always a prefix of the request: what is left waits for the next tick, whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vidpipe_dagster.domain.catalog import ModelCatalog, ModelChoiceError, packaged_catalog
from vidpipe_dagster.domain.preview import PREVIEW_BACKEND
from vidpipe_dagster.domain.video_requests import (
    DEFAULT_RESOLUTION,
    PriceTable,
    estimate_cost_usd,
)

DEFAULT_PER_RUN_USD = 50.0
DEFAULT_PER_DAY_USD = 200.0


@dataclass(frozen=True)
class Budget:
    """Spend limits in USD (settings: ``VIDPIPE_BUDGET_PER_RUN_USD``, ``_PER_DAY_USD``)."""

    per_run_usd: float = DEFAULT_PER_RUN_USD
    per_day_usd: float = DEFAULT_PER_DAY_USD


@dataclass(frozen=True)
class DailySpend:
    """Today's use of the per-day budget. ``billed_usd``: requests settled as billed;
    ``pending_usd``: expected cost of ``pending_requests`` requests still submitting or in flight,
    or of unknown outcome (they may bill); ``reserved_usd``: estimates of requested runs that have
    not opened those requests yet."""

    billed_usd: float = 0.0
    pending_usd: float = 0.0
    pending_requests: int = 0
    reserved_usd: float = 0.0

    @property
    def committed_usd(self) -> float:
        return round(self.billed_usd + self.pending_usd + self.reserved_usd, 4)

    def describe(self) -> str:
        """``"9.60 USD"``, with its parts when anything is not billed yet."""
        parts = []
        if self.pending_usd or self.pending_requests:
            parts.append(
                f"{self.pending_usd:.2f} pending in {self.pending_requests} open request(s)"
            )
        if self.reserved_usd:
            parts.append(f"{self.reserved_usd:.2f} reserved by scheduled runs yet to submit")
        if not parts:
            return f"{self.committed_usd:.2f} USD"
        return f"{self.committed_usd:.2f} USD ({self.billed_usd:.2f} billed, {', '.join(parts)})"


@dataclass(frozen=True)
class BudgetPlan:
    accepted: tuple[str, ...]
    deferred: tuple[str, ...]
    accepted_usd: float
    requested_usd: float
    allowance_usd: float
    message: str
    budget: Budget = field(default_factory=Budget)
    spent: DailySpend = field(default_factory=DailySpend)

    @property
    def fits(self) -> bool:
        return not self.deferred

    @property
    def nothing_fits_message(self) -> str:
        """Why nothing may start: the estimate, what is available, and the limits behind it."""
        return (
            f"nothing fits: estimate {self.requested_usd:.2f} USD for scenes "
            f"[{', '.join(self.deferred)}] > available {self.allowance_usd:.2f} USD (per-run "
            f"{self.budget.per_run_usd:.2f}, per-day {self.budget.per_day_usd:.2f}, spent today "
            f"{self.spent.describe()})"
        )


def plan_within_budget(
    estimates: Sequence[tuple[str, float]],
    budget: Budget,
    spent_today: float | DailySpend,
) -> BudgetPlan:
    """Accept ``(key, estimated USD)`` items in order while their sum stays within both limits.

    ``spent_today`` is what counts against the per-day limit (a plain number is taken as billed).
    """
    spent = spent_today if isinstance(spent_today, DailySpend) else DailySpend(spent_today)
    allowance = max(0.0, min(budget.per_run_usd, budget.per_day_usd - spent.committed_usd))
    accepted: list[str] = []
    total = 0.0
    stop = len(estimates)
    for i, (key, cost) in enumerate(estimates):
        if total + cost > allowance + 1e-9:
            stop = i
            break
        accepted.append(key)
        total += cost
    deferred = tuple(key for key, _ in estimates[stop:])
    requested = sum(cost for _, cost in estimates)
    message = (
        f"estimated {requested:.2f} USD for {len(estimates)} scene(s); budget: "
        f"{budget.per_run_usd:.2f} USD per run, {budget.per_day_usd:.2f} USD per day with "
        f"{spent.describe()} already spent or committed today, so {allowance:.2f} USD is available"
    )
    if deferred:
        message += f"; deferred: scene(s) {', '.join(deferred)}"
    return BudgetPlan(
        tuple(accepted),
        deferred,
        round(total, 4),
        round(requested, 4),
        allowance,
        message,
        budget,
        spent,
    )


def expected_cost_usd(
    *,
    kind: str,
    model: str,
    backend: str,
    details: Mapping[str, Any] | None,
    price_table: PriceTable | None = None,
    fallback_usd: float = 0.0,
    resolution: str | None = None,
    takes: int | None = None,
    catalog: ModelCatalog | None = None,
) -> float:
    """What a paid request whose cost is not recorded yet is expected to cost, for budgets.

    In order: the estimate recorded when it was opened (``details["estimate_usd"]``); 0 for a local
    preview backend; for a video, the catalog's list price of its recorded resolution, audio,
    duration and takes (unrecorded: the model's longest clip with audio; an unpriced model at the
    catalog's highest per-second price); otherwise ``fallback_usd`` (the ledger passes the most a
    settled request of the same kind and model cost).
    """
    info = details or {}
    recorded = info.get("estimate_usd")
    if isinstance(recorded, int | float) and not isinstance(recorded, bool):
        return float(recorded)
    if backend == PREVIEW_BACKEND:
        return 0.0
    if kind != "video":
        return fallback_usd
    table = catalog or packaged_catalog()
    entry = table.find_video_model(model)
    longest = (
        max(entry.durations)
        if entry
        else max((max(m.durations) for m in table.video_models.values()), default=0)
    )
    duration = float(info.get("duration_seconds") or longest)
    audio = info.get("generate_audio", True) is not False
    count = max(1, int(takes or info.get("takes") or 1))
    resolution = resolution or info.get("resolution") or DEFAULT_RESOLUTION
    try:
        return estimate_cost_usd(
            model, duration, audio, price_table, resolution=resolution, takes=count, catalog=table
        )
    except ModelChoiceError:
        overrides = (p[0] if isinstance(p, tuple) else p for p in (price_table or {}).values())
        highest = max([table.highest_video_price_per_second(resolution), *map(float, overrides)])
        return round(highest * duration * count, 4)


def start_of_today_utc() -> datetime:
    """The per-day budget's day: midnight UTC, naive (the ledger stores naive UTC)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)
