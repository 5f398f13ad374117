"""Spend limits as a Dagster resource, so the UI shows what a run may spend."""

from __future__ import annotations

import dagster as dg

from vidpipe_dagster.domain.budget import Budget
from vidpipe_dagster.settings import DEFAULT_BUDGET_PER_DAY_USD, DEFAULT_BUDGET_PER_RUN_USD


class BudgetResource(dg.ConfigurableResource):
    """USD per run (one project's run, or one schedule tick) and per day across all projects."""

    per_run_usd: float = DEFAULT_BUDGET_PER_RUN_USD
    per_day_usd: float = DEFAULT_BUDGET_PER_DAY_USD

    def budget(self) -> Budget:
        return Budget(per_run_usd=self.per_run_usd, per_day_usd=self.per_day_usd)
