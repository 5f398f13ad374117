"""Tier 3 image requests recorded in the generation ledger before they are sent.

Image generation is synchronous (no operation to resume) and Tier 3 deliberately asks again on a
failed face check, so each try gets its own ledger row; reuse of finished work happens one level up
(an existing Tier 3 sheet for the same photo and prompt is never regenerated).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import datetime

from vidpipe_dagster.domain.spend import DailyCap, OverDailyBudget, SpendLedger
from vidpipe_dagster.generation.client import GenerationApiError, ImageClient


class LedgeredImageClient:
    """An ``ImageClient`` that writes a ledger row before each request and settles it after."""

    def __init__(
        self,
        inner: ImageClient,
        ledger: SpendLedger,
        *,
        project_slug: str,
        subject: str,
        price_per_image: float,
        day_budget: tuple[datetime, float] | None = None,
    ) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.ledger = ledger
        self.project_slug = project_slug
        self.subject = subject
        self.price_per_image = price_per_image
        self.day_budget = day_budget

    async def generate_image(
        self, *, model: str, prompt: str, image: bytes, mime_type: str
    ) -> bytes:
        request = f"{model}\n{prompt}\n{hashlib.sha256(image).hexdigest()}\n{uuid.uuid4()}"
        cap = None
        if self.day_budget is not None:
            since, limit = self.day_budget
            cap = DailyCap(since, limit, self.price_per_image)
        try:
            entry = await asyncio.to_thread(
                self.ledger.open_submission,
                hashlib.sha256(request.encode()).hexdigest(),
                kind="image",
                model=model,
                backend=self.backend,
                project_slug=self.project_slug,
                subject=self.subject,
                details={"prompt": prompt[:500], "estimate_usd": self.price_per_image},
                daily_cap=cap,
            )
        except OverDailyBudget as exc:  # not sent, not billed: the caller stops and falls back
            raise GenerationApiError("rejected", str(exc)) from exc
        try:
            data = await self.inner.generate_image(
                model=model, prompt=prompt, image=image, mime_type=mime_type
            )
        except GenerationApiError as exc:
            await asyncio.to_thread(
                self.ledger.mark_failed, entry, billed=exc.billed, error=str(exc)
            )
            raise
        except BaseException as exc:
            await asyncio.to_thread(self.ledger.mark_unknown, entry, f"{type(exc).__name__}: {exc}")
            raise
        await asyncio.to_thread(
            self.ledger.mark_done, entry, cost_usd=self.price_per_image, result_url=""
        )
        return data
