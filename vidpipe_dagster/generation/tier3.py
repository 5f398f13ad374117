"""Tier 3 clean sheets: ask an image model for an idealised reference, validated by face.

Up to three tries, each a paid request (``generation.images`` ledgers each one); a character with
a stored face embedding is accepted only when the face still matches, on the face engine's own
scale and thresholds (``domain.identity``: insightface similarity 0.6/0.6/0.5, dlib distance
0.6/0.6/relaxed). Transient errors are retried inside a try with full-jitter backoff and do not
use a try up; content policy, rejections and failures stop. The image model is the caller's
choice; its price and input limit come from the model catalog.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vidpipe_dagster.domain.catalog import ModelCatalog, ModelChoiceError, packaged_catalog
from vidpipe_dagster.domain.clean_sheets import (
    TIER3_MAX_TRIES,
    Tier3Outcome,
    Tier3Try,
    TryOutcome,
    Validation,
    normalize_generated_image,
    threshold_for_try,
)
from vidpipe_dagster.domain.identity import (
    EngineMismatch,
    FaceEmbedding,
    FaceEngine,
    FaceScore,
    better,
    compare,
)
from vidpipe_dagster.domain.media import MediaError, decode_image
from vidpipe_dagster.generation.client import GenerationApiError, ImageClient

Sleep = Callable[[float], Awaitable[Any]]


@dataclass(frozen=True)
class _Call:
    """One try's request after transient retries: the bytes or the error that ended it."""

    data: bytes | None
    error: GenerationApiError | None
    transient_retries: int
    billed_failures: int  # failed calls the provider still charged for


async def _generate_with_backoff(
    image_client: ImageClient,
    *,
    model: str,
    prompt: str,
    image: bytes,
    mime_type: str,
    retries: int,
    base_s: float,
    max_s: float,
    sleep: Sleep,
    rng: random.Random,
    extra_images: Sequence[tuple[bytes, str]] = (),
) -> _Call:
    """Call once, retrying transient errors with full-jitter exponential backoff.

    The client does not retry (``generation.vertex`` turns SDK retries off), so this is the one
    place it happens for Tier 3, and it does not use up a validation try.
    """
    billed = 0
    for attempt in range(retries + 1):
        try:
            extra = {"extra_images": tuple(extra_images)} if extra_images else {}
            data = await image_client.generate_image(
                model=model, prompt=prompt, image=image, mime_type=mime_type, **extra
            )
            return _Call(data, None, attempt, billed)
        except GenerationApiError as exc:
            billed += int(exc.billed and exc.kind != "content_policy")
            # only a failure that proves nothing was accepted is resent: a timeout or reset
            # after sending may have been billed, and resending it needs a person's say
            if not exc.unaccepted or attempt == retries:
                return _Call(None, exc, attempt, billed)
            await sleep(rng.uniform(0.0, min(max_s, base_s * 2**attempt)))
    raise AssertionError("unreachable")


MAY_BE_BILLED: TryOutcome = "may_be_billed"  # sent, no answer: never resent without a person's say


async def generate_tier3_clean_sheet(
    *,
    image_client: ImageClient,
    model: str,
    prompt: str,
    image_bytes: bytes,
    mime_type: str,
    stored_embedding: FaceEmbedding | None,
    face_engine: FaceEngine | None,
    price_per_image: float | None = None,
    max_tries: int = TIER3_MAX_TRIES,
    no_engine_reason: str = "no face engine installed",
    is_character: bool = False,
    label: str = "reference image",
    transient_retries: int = 3,
    backoff_base_s: float = 2.0,
    backoff_max_s: float = 30.0,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    catalog: ModelCatalog | None = None,
    extra_images: Sequence[tuple[bytes, str]] = (),
) -> Tier3Outcome:
    """Up to ``max_tries`` generations, validated against ``stored_embedding`` when given.

    Validation applies when the caller passes a stored embedding (characters that have one),
    made by ``face_engine``; each try is held to that engine's threshold for the try. A
    character without a face engine is ``unavailable`` (not validated), never
    ``not_applicable``: its embedding is missing only because there was no engine to compute it.
    Errors: content_policy stops (same prompt is not resent, cost 0); rejected / failed /
    not_found stop; transient errors that prove nothing was accepted (429, 5xx, never sent) are
    retried with backoff inside a try and stop only when the retries run out
    (``stopped_by="transient"``, so a caller can let Dagster retry later); a timeout or reset
    after sending stops at once (``stopped_by=MAY_BE_BILLED``: a person decides to resend).
    A generated file that is not an image uses up its try (it was paid for).
    Catalog: ``price_per_image`` defaults to the model's price at its default size; a retired
    model is refused before paying; ``extra_images`` (further inputs after the reference image)
    are cut to the model's input limit, and the outcome's reason says what was not sent.
    """
    decode_image(image_bytes, label=label)  # never pay to condition on a broken input
    price_per_image, extra_images, input_note = _catalog_terms(
        catalog or packaged_catalog(), model, price_per_image, extra_images
    )
    rng = rng or random.Random()
    if face_engine is None and (stored_embedding is not None or is_character):
        validation: Validation = "unavailable"
        skip_reason = f"not validated: {no_engine_reason}"
    elif stored_embedding is None:
        validation = "not_applicable"
        skip_reason = "validation not applicable (no stored face embedding)"
    else:
        validation, skip_reason = "not_run", ""
    tries: list[Tier3Try] = []
    best: FaceScore | None = None

    def finish(
        accepted: bool,
        reason: str,
        *,
        image_png: bytes | None = None,
        score: FaceScore | None = None,
        final: Validation | None = None,
        stopped_by: str | None = None,
    ) -> Tier3Outcome:
        face_score = score if accepted else best
        return Tier3Outcome(
            accepted=accepted,
            image_png=image_png,
            score=None if face_score is None else face_score.value,
            validation=final or validation,
            tries=tuple(tries),
            total_cost_usd=round(sum(t.cost_usd for t in tries), 6),
            prompt=prompt,
            model=model,
            reason=reason + input_note,
            stopped_by=stopped_by,
            face_score=face_score,
        )

    for number in range(1, max_tries + 1):
        call = await _generate_with_backoff(
            image_client,
            model=model,
            prompt=prompt,
            image=image_bytes,
            mime_type=mime_type,
            retries=transient_retries,
            base_s=backoff_base_s,
            max_s=backoff_max_s,
            sleep=sleep,
            rng=rng,
            extra_images=extra_images,
        )
        retried = call.transient_retries
        cost = price_per_image * call.billed_failures
        if call.error is not None or call.data is None:
            exc = call.error or GenerationApiError("failed", "no image bytes returned")
            what = "blocked by content policy" if exc.kind == "content_policy" else exc.kind
            reason = f"{exc} (after {retried} transient retries)" if retried else str(exc)
            stopped_by: TryOutcome = exc.kind
            if exc.kind == "transient" and not exc.unaccepted:
                stopped_by = what = MAY_BE_BILLED
                reason += (
                    "; no answer after the request was sent, so it may have been billed and "
                    "is not resent automatically"
                )
            tries.append(Tier3Try(number, None, None, cost, stopped_by, reason, retried))
            return finish(False, f"try {number} {what}: {reason}", stopped_by=stopped_by)
        data = call.data
        cost += price_per_image
        try:
            png = normalize_generated_image(data, label=f"tier 3 image (try {number})")
        except MediaError as exc:
            tries.append(Tier3Try(number, None, None, cost, "invalid_image", str(exc), retried))
            continue
        if face_engine is None or stored_embedding is None:
            tries.append(
                Tier3Try(number, None, None, cost, "accepted_unvalidated", skip_reason, retried)
            )
            return finish(True, skip_reason, image_png=png)
        embedding = await asyncio.to_thread(face_engine.embed_face, png)
        threshold = threshold_for_try(number, face_engine.name)
        engine_fields = {"engine": face_engine.name, "metric": face_engine.metric}
        if embedding is None:
            # no face where one must be: the worst score on this engine's scale
            worst = 0.0 if face_engine.metric == "cosine" else float("inf")
            score = FaceScore(face_engine.name, face_engine.metric, worst, threshold, False)
            outcome, why = "no_face", "no face found in the generated image"
        else:
            try:
                score = compare(stored_embedding, embedding, threshold)
            except EngineMismatch as exc:  # stored by another engine: cannot compare
                reason = f"not validated: {exc}"
                tries.append(
                    Tier3Try(number, None, None, cost, "accepted_unvalidated", reason, retried)
                )
                return finish(True, reason, image_png=png, final="unavailable")
            outcome, why = "below_threshold", score.describe()
        value = None if embedding is None else score.value
        if embedding is not None and (
            best is None or better(score.metric, score.value, best.value)
        ):
            best = score
        validation = "failed"
        if score.passed:
            reason = f"{score.describe()} on try {number}"
            tries.append(
                Tier3Try(
                    number, value, threshold, cost, "accepted", reason, retried, **engine_fields
                )
            )
            return finish(True, reason, image_png=png, score=score, final="passed")
        tries.append(
            Tier3Try(number, value, threshold, cost, outcome, why, retried, **engine_fields)
        )
    best_text = "no face found" if best is None else best.comparison()
    return finish(False, f"no acceptable image in {max_tries} tries (best: {best_text})")


def _catalog_terms(
    catalog: ModelCatalog,
    model: str,
    price_per_image: float | None,
    extra_images: Sequence[tuple[bytes, str]],
) -> tuple[float, tuple[tuple[bytes, str], ...], str]:
    """(price per image, the extra inputs the model takes, a note on what was cut) from the
    catalog; a model it does not list needs a price from the caller."""
    entry = catalog.image_models.get(model)
    if entry is None:
        if price_per_image is None:
            known = ", ".join(sorted(catalog.image_models))
            raise ModelChoiceError(
                f"image model {model!r} is not in the model catalog ({catalog.source}); known: "
                f"{known}. Add it to a catalog file (VIDPIPE_MODEL_CATALOG) or pass its price"
            )
        return price_per_image, tuple(extra_images), ""
    catalog.image_model(model)  # a retired model is refused before any request
    price = entry.price() if price_per_image is None else price_per_image
    room = max(0, entry.max_input_images - 1)  # the reference image itself is one input
    kept = tuple(extra_images[:room])
    dropped = len(extra_images) - len(kept)
    note = (
        f" ({dropped} extra input image(s) not sent: {model} takes at most "
        f"{entry.max_input_images})"
        if dropped
        else ""
    )
    return price, kept, note
