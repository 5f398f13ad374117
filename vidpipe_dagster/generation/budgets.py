"""Budget enforcement before paid work: what a run would newly spend against what is left today.

The rules (per run, per day, accept a prefix) are ``domain.budget``; this module feeds them the
estimates from the same price catalog the requests use and today's committed spend from the ledger.
Each paid request is checked again, atomically, when its ledger row is opened (``DailyCap``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vidpipe_dagster.domain.budget import Budget, BudgetPlan, plan_within_budget, start_of_today_utc
from vidpipe_dagster.domain.catalog import ModelCatalog
from vidpipe_dagster.domain.clean_sheets import TIER3_MAX_TRIES
from vidpipe_dagster.domain.spend import SpendLedger
from vidpipe_dagster.domain.video_requests import PriceTable
from vidpipe_dagster.generation.client import VideoClient
from vidpipe_dagster.generation.clips import ClipJob, Settled, estimate_new_spend


def plan_clip_spend(
    jobs: Sequence[ClipJob],
    client: VideoClient,
    ledger: SpendLedger,
    budget: Budget,
    price_table: PriceTable | None = None,
    catalog: ModelCatalog | None = None,
    *,
    settled: Mapping[str, Settled | None] | None = None,
) -> BudgetPlan:
    """Whether these clips fit: previews and reusable clips cost nothing, the rest the catalog's
    list price (resolution, audio, duration, every take). ``settled`` (``settle_jobs``, which
    replays the ledger's journal first) is the lookup the engine will start from."""
    estimates = estimate_new_spend(jobs, client, ledger, price_table, catalog, settled=settled)
    spent = ledger.spend_since(start_of_today_utc(), price_table=price_table)
    return plan_within_budget(estimates, budget, spent)


def plan_tier3_spend(
    ledger: SpendLedger, budget: Budget, asset_keys: Sequence[str], price_per_image_usd: float
) -> BudgetPlan:
    """Tier 3's worst case: every try of every asset that has no reusable sheet is paid."""
    worst = TIER3_MAX_TRIES * price_per_image_usd
    estimates = [(key, worst) for key in asset_keys]
    return plan_within_budget(estimates, budget, ledger.spend_since(start_of_today_utc()))
