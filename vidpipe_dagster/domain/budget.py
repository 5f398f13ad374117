"""Spend budgets: how much of the requested work may start now, estimated before any paid call.

Two limits apply together: per project per run (or per schedule tick) and per day across all
projects (what the ledger says was already billed today counts against it). Work is accepted in
scene order and stops at the first scene that does not fit, so an accepted set is always a prefix
of the request: what is left waits for the next tick, whole.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_PER_RUN_USD = 50.0
DEFAULT_PER_DAY_USD = 200.0


@dataclass(frozen=True)
class Budget:
    per_run_usd: float = DEFAULT_PER_RUN_USD
    per_day_usd: float = DEFAULT_PER_DAY_USD

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Budget:
        """``VIDPIPE_BUDGET_PER_RUN_USD`` and ``VIDPIPE_BUDGET_PER_DAY_USD`` (defaults 50 / 200)."""
        env = os.environ if environ is None else environ
        return cls(
            per_run_usd=float(env.get("VIDPIPE_BUDGET_PER_RUN_USD") or DEFAULT_PER_RUN_USD),
            per_day_usd=float(env.get("VIDPIPE_BUDGET_PER_DAY_USD") or DEFAULT_PER_DAY_USD),
        )


@dataclass(frozen=True)
class BudgetPlan:
    accepted: tuple[str, ...]
    deferred: tuple[str, ...]
    accepted_usd: float
    requested_usd: float
    allowance_usd: float
    message: str

    @property
    def fits(self) -> bool:
        return not self.deferred


def plan_within_budget(
    estimates: Sequence[tuple[str, float]], budget: Budget, spent_today_usd: float
) -> BudgetPlan:
    """Accept ``(key, estimated USD)`` items in order while their sum stays within both limits."""
    allowance = max(0.0, min(budget.per_run_usd, budget.per_day_usd - spent_today_usd))
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
        f"{spent_today_usd:.2f} USD already spent today, so {allowance:.2f} USD is available"
    )
    if deferred:
        message += f"; deferred: scene(s) {', '.join(deferred)}"
    return BudgetPlan(
        tuple(accepted), deferred, round(total, 4), round(requested, 4), allowance, message
    )
