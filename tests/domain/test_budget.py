"""Budget planning: both limits, in scene order, the rest deferred whole."""

from __future__ import annotations

import pytest

from vidpipe_dagster.domain.budget import Budget, plan_within_budget

CLIPS = [("0", 3.2), ("1", 3.2), ("2", 0.0), ("3", 3.2)]


@pytest.mark.parametrize(
    ("budget", "spent", "accepted", "deferred"),
    [
        (Budget(50, 200), 0.0, ("0", "1", "2", "3"), ()),
        (Budget(7, 200), 0.0, ("0", "1", "2"), ("3",)),  # per-run limit
        (Budget(50, 10), 3.0, ("0", "1", "2"), ("3",)),  # per-day limit minus today's spend
        (Budget(3, 200), 0.0, (), ("0", "1", "2", "3")),  # first does not fit: nothing starts
        (Budget(50, 100), 150.0, (), ("0", "1", "2", "3")),  # already over the day
    ],
)
def test_plan(budget: Budget, spent: float, accepted: tuple, deferred: tuple) -> None:
    plan = plan_within_budget(CLIPS, budget, spent)
    assert plan.accepted == accepted and plan.deferred == deferred
    assert plan.fits == (not deferred)
    assert plan.accepted_usd <= plan.allowance_usd + 1e-9
    assert f"{sum(c for _, c in CLIPS):.2f} USD" in plan.message


def test_budget_from_env() -> None:
    budget = Budget.from_env({"VIDPIPE_BUDGET_PER_RUN_USD": "12.5"})
    assert budget == Budget(per_run_usd=12.5, per_day_usd=200.0)
