"""Budget planning: both limits, in scene order, the rest deferred whole."""

from __future__ import annotations

import pytest

from vidpipe_dagster.domain.budget import (
    Budget,
    DailySpend,
    expected_cost_usd,
    plan_within_budget,
)

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


def test_committed_spend_counts_against_the_day() -> None:
    """Pending and reserved spend use the day like billed spend, and the message says so."""
    spent = DailySpend(billed_usd=3.0, pending_usd=3.2, pending_requests=1, reserved_usd=1.0)
    assert spent.committed_usd == 7.2
    plan = plan_within_budget(CLIPS, Budget(50, 14), spent)
    assert plan.accepted == ("0", "1", "2") and plan.deferred == ("3",)
    assert plan.allowance_usd == pytest.approx(6.8)
    assert (
        "7.20 USD (3.00 billed, 3.20 pending in 1 open request(s), 1.00 reserved by scheduled "
        "runs yet to submit) already spent or committed today" in plan.message
    )
    assert DailySpend(2.5).describe() == "2.50 USD"
    assert plan_within_budget(CLIPS, Budget(50, 14), 7.2).allowance_usd == plan.allowance_usd


def test_nothing_fits_says_what_and_against_which_limits() -> None:
    plan = plan_within_budget(CLIPS, Budget(50, 10), DailySpend(billed_usd=8.0))
    assert plan.accepted == () and plan.requested_usd - plan.accepted_usd == 9.6
    assert plan.nothing_fits_message == (
        "nothing fits: estimate 9.60 USD for scenes [0, 1, 2, 3] > available 2.00 USD "
        "(per-run 50.00, per-day 10.00, spent today 8.00 USD)"
    )


VEO = "veo-3.1-generate-001"


@pytest.mark.parametrize(
    ("kind", "model", "backend", "details", "expected"),
    [
        ("video", VEO, "vertex", {"estimate_usd": 1.25, "duration_seconds": 8}, 1.25),  # recorded
        ("video", VEO, "animatic", {"duration_seconds": 8}, 0.0),  # a local preview never bills
        ("video", VEO, "vertex", {"duration_seconds": 6, "generate_audio": True}, 2.4),
        ("video", VEO, "vertex", {"duration_seconds": 4, "generate_audio": False}, 0.8),
        ("video", VEO, "vertex", None, 3.2),  # unrecorded: the longest clip, with audio
        ("video", "veo-unpriced", "vertex", {"duration_seconds": 8}, 4.0),  # highest known price
        ("image", "gemini-image", "vertex", {"prompt": "p"}, 0.05),  # the caller's fallback
        ("image", "gemini-image", "vertex", {"estimate_usd": 0.039}, 0.039),
    ],
)
def test_expected_cost_of_an_open_request(
    kind: str, model: str, backend: str, details: dict | None, expected: float
) -> None:
    cost = expected_cost_usd(
        kind=kind, model=model, backend=backend, details=details, fallback_usd=0.05
    )
    assert cost == pytest.approx(expected)


def test_expected_cost_uses_the_run_price_table() -> None:
    cost = expected_cost_usd(
        kind="video",
        model=VEO,
        backend="vertex",
        details={"duration_seconds": 8, "generate_audio": True},
        price_table={VEO: 0.1},
    )
    assert cost == pytest.approx(0.8)
