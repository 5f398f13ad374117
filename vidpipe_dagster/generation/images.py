"""Tier 3 image requests recorded in the generation ledger before they are sent.

Image generation is synchronous (no operation to resume) and Tier 3 deliberately asks again on a
failed face check, so each try gets its own ledger row; reuse of finished work happens one level up
(an existing Tier 3 sheet for the same photo and prompt is never regenerated). Each request carries
billing labels (project, asset, ledger row, run) and is priced from the model catalog unless the
caller fixes a price.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from vidpipe_dagster.domain.catalog import ModelCatalog, packaged_catalog
from vidpipe_dagster.domain.spend import (
    AMBIGUOUS_NOTE,
    DailyCap,
    LedgerUnavailable,
    OverDailyBudget,
    SpendLedger,
)
from vidpipe_dagster.domain.video_requests import billing_labels
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
        price_per_image: float | None = None,
        day_budget: tuple[datetime, float] | None = None,
        catalog: ModelCatalog | None = None,
        run_id: str | None = None,
    ) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.ledger = ledger
        self.project_slug = project_slug
        self.subject = subject
        self.price_per_image = price_per_image
        self.day_budget = day_budget
        self.catalog = catalog or packaged_catalog()
        self.run_id = run_id

    def price(self, model: str) -> float:
        """The caller's fixed price, else the catalog's for the model's default output size
        (an unknown or retired model is refused before anything is written or sent)."""
        if self.price_per_image is not None:
            return self.price_per_image
        return self.catalog.image_model(model).price()

    async def generate_image(
        self,
        *,
        model: str,
        prompt: str,
        image: bytes,
        mime_type: str,
        extra_images: Sequence[tuple[bytes, str]] = (),
        labels: Mapping[str, str] | None = None,
    ) -> bytes:
        price = self.price(model)
        inputs = [(image, mime_type), *extra_images]
        hashes = [hashlib.sha256(data).hexdigest() for data, _ in inputs]
        request = f"{model}\n{prompt}\n{' '.join(hashes)}\n{uuid.uuid4()}"
        cap = None
        if self.day_budget is not None:
            since, limit = self.day_budget
            cap = DailyCap(since, limit, price, catalog=self.catalog)
        entry_id = uuid.uuid4()
        sent_labels = {
            **(labels or {}),
            **billing_labels(
                project_slug=self.project_slug,
                subject=self.subject,
                ledger_row=str(entry_id),
                run_id=self.run_id,
                subject_key="vidpipe_asset",
            ),
        }
        try:
            entry = await asyncio.to_thread(
                self.ledger.open_submission,
                hashlib.sha256(request.encode()).hexdigest(),
                kind="image",
                model=model,
                backend=self.backend,
                project_slug=self.project_slug,
                subject=self.subject,
                details={
                    "prompt": prompt[:500],
                    "estimate_usd": price,
                    "input_images": len(hashes),
                    "labels": sent_labels,
                    **({"run_id": self.run_id} if self.run_id else {}),
                },
                daily_cap=cap,
                entry_id=entry_id,
            )
        except OverDailyBudget as exc:  # not sent, not billed: the caller stops and falls back
            raise GenerationApiError("rejected", str(exc)) from exc
        try:
            data = await self.inner.generate_image(
                model=model,
                prompt=prompt,
                image=image,
                mime_type=mime_type,
                labels=sent_labels,
                **({"extra_images": tuple(extra_images)} if extra_images else {}),
            )
        except GenerationApiError as exc:
            if exc.kind == "transient" and not exc.unaccepted:  # sent; no answer came back
                await self._settle(self.ledger.mark_unknown, entry, f"{AMBIGUOUS_NOTE}: {exc}")
            else:
                await self._settle(
                    self.ledger.mark_failed, entry, billed=exc.billed, error=str(exc)
                )
            raise
        except BaseException as exc:
            await self._settle(self.ledger.mark_unknown, entry, f"{type(exc).__name__}: {exc}")
            raise
        await self._settle(self.ledger.mark_done, entry, cost_usd=price, result_url="")
        return data

    async def _settle(self, write: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        """A write after the image was asked for: a database that refuses it must not cost the
        paid image (the ledger keeps it in its journal when it has one)."""
        try:
            await asyncio.to_thread(write, *args, **kwargs)
        except LedgerUnavailable as exc:
            if not exc.journaled:
                raise
