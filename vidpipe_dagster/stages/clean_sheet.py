"""Clean sheets for every asset of one manifest tag: Tier 2 (background onto #808080) or Tier 3
(a Gemini image model, validated by face), each stored as a new primary ``AssetCleanReference``.

The original image and ``Asset.reference_image_url`` are never modified; a new sheet becomes
primary in the same transaction that demotes the previous one. Rules: ``domain.clean_sheets``;
the paid Tier 3 loop: ``generation.tier3``; spend limits: ``generation.budgets``.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from PIL import Image

from vidpipe_dagster.db import queries
from vidpipe_dagster.db.models import AssetCleanReference
from vidpipe_dagster.domain.budget import start_of_today_utc
from vidpipe_dagster.domain.catalog import ModelChoiceError
from vidpipe_dagster.domain.clean_sheets import (
    TIER3_GEMINI,
    BackgroundModelError,
    BackgroundRemover,
    CleanSheetError,
    NothingToSeparate,
    Validation,
    build_conditioning_prompt,
    make_tier2_clean_sheet,
)
from vidpipe_dagster.domain.identity import FaceEmbedding, FaceEngine, FaceScore
from vidpipe_dagster.domain.media import MediaError, image_mime_type, read_image, sha256_bytes
from vidpipe_dagster.generation.budgets import plan_tier3_spend
from vidpipe_dagster.generation.images import LedgeredImageClient
from vidpipe_dagster.generation.tier3 import MAY_BE_BILLED, generate_tier3_clean_sheet
from vidpipe_dagster.stages.context import CheckOutcome, StageContext, StageError

# What makes a sheet (compositing, tiers, prompt, validation): bump it when the same photo would now
# give another sheet (tests/test_code_versions.py fails until you do).
CODE_VERSION = "sheet-2"
CHECK_ORIGINAL = "original_reference_untouched"
CHECK_GRAY = "tier2_background_is_neutral_gray"
CHECK_ONE_PRIMARY = "exactly_one_primary_clean_sheet"
CHECK_FACES = "face_identity_validated"
GRAY_TOLERANCE = 12
GRAY_BORDER_MIN_FRACTION = 0.5


@dataclass(frozen=True)
class CleanSheetOptions:
    """Which tier to make (Tier 3 falls back to Tier 2, then to the original)."""

    tier: Literal["tier2", "tier3"] = "tier2"
    image_model: str | None = None  # default: the backends' image model
    price_per_image_usd: float | None = None  # default: the model catalog's price


@dataclass(frozen=True)
class AssetInput:
    id: uuid.UUID
    key: str
    asset_type: str
    name: str | None
    image_url: str
    original_sha256: str | None
    reverse_prompt: str | None
    face_embedding: FaceEmbedding | None  # with the engine that made it
    is_face_crop: bool


@dataclass
class AssetResult:
    asset: AssetInput
    original: bytes
    original_untouched: bool
    tier: str | None = None  # None: fell back to the original
    clean_png: bytes | None = None
    clean_url: str | None = None
    status: str = "new"  # new | unchanged | cached | original
    engine: str = ""  # what made the sheet: rembg, grabcut or gemini
    model: str = ""
    similarity: float | None = None  # on ``face_score``'s engine scale (similarity or distance)
    face_score: FaceScore | None = None
    try_number: int | None = None  # the Tier 3 try whose image was accepted
    validation: Validation = "not_applicable"
    cost_usd: float = 0.0
    tries: list[dict[str, Any]] = field(default_factory=list)
    prompt: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CleanSheetRun:
    tag: str
    requested_tier: str
    results: list[AssetResult]
    remover_note: str
    face_problem: str | None
    face_engine_note: str = ""  # which face engine ran and why (or why none)

    @property
    def data_version(self) -> str:
        digests = "".join(sha256_bytes(r.clean_png or r.original) for r in self.results)
        return sha256_bytes(digests.encode())[:24]


def make_clean_sheets(
    ctx: StageContext,
    slug: str,
    tag: str,
    options: CleanSheetOptions,
    *,
    run_id: str | None = None,
) -> CleanSheetRun:
    inputs = _load_inputs(ctx, slug, tag)
    try:  # a refused folder (a symlink in the media root) fails now, before anything is paid for
        ctx.media.prepare_folder("clean_sheets")
    except MediaError as exc:
        raise StageError(f"{exc}; nothing was generated") from exc
    remover, remover_note = ctx.models.background_remover()
    if any(i.asset_type != "ENVIRONMENT" for i in inputs):
        _load_remover(remover)  # a model that cannot load fails now: nothing written, no retry
    faces = ctx.models.face_engine()
    engine, face_problem = faces.engine, faces.problem
    ctx.log.info(f"{tag}: background removal: {remover_note}")
    if any(i.asset_type == "CHARACTER" for i in inputs):
        if face_problem:
            ctx.log.warning(f"{tag}: faces NOT validated: {face_problem}")
        else:
            ctx.log.info(f"{tag}: face engine: {faces.note}")
    model = options.image_model or ctx.backends.image_model
    reusable: dict[uuid.UUID, AssetCleanReference | None] = {}
    if options.tier == "tier3":  # paid sheets that already exist, looked up once per asset
        reusable = {i.id: _reusable_tier3(ctx, slug, i, model) for i in inputs}
        if ctx.backends.vertex_configured:
            wanted = [i.key for i in inputs if reusable[i.id] is None]
            price = options.price_per_image_usd
            if price is None:
                try:
                    price = ctx.catalog.image_model(model).price()
                except ModelChoiceError as exc:
                    raise StageError(f"tier 3 image model: {exc}") from exc
            plan = plan_tier3_spend(ctx.ledger(), ctx.budget, wanted, price)
            if not plan.fits:
                raise StageError(
                    f"tier 3 over budget, nothing was generated: {plan.message} (worst case: "
                    "3 tries per asset). Use tier2, or raise VIDPIPE_BUDGET_PER_RUN_USD "
                    "/ VIDPIPE_BUDGET_PER_DAY_USD."
                )
            ctx.log.info(f"{tag}: tier 3 budget: {plan.message}")
    results = []
    for item in inputs:
        result = _read_original(ctx, item)
        _ensure_face_embedding(ctx, result, engine, face_problem)
        if options.tier == "tier3":
            _try_tier3(
                ctx, slug, model, options, result, engine, face_problem, reusable[item.id], run_id
            )
        if result.tier is None:
            _make_tier2(remover, result)
        try:
            _persist(ctx, result)
        except MediaError as exc:  # permanent: a retry would meet the same link
            raise StageError(f"{tag}/{item.key}: cannot store the clean sheet: {exc}") from exc
        ctx.log.info(
            f"{tag}/{item.key}: {result.tier or 'original'} ({result.status}); "
            + "; ".join(result.notes)
        )
        results.append(result)
    return CleanSheetRun(tag, options.tier, results, remover_note, face_problem, faces.note)


def _load_remover(remover: BackgroundRemover) -> None:
    """A background model that cannot load is a configuration error: no Dagster retry."""
    try:
        remover.load()
    except BackgroundModelError as exc:
        raise StageError(
            f"{exc}. Nothing was written (VIDPIPE_REMBG_MODEL_PATH / VIDPIPE_REMBG_MODEL).",
            retry=False,
        ) from exc


def _load_inputs(ctx: StageContext, slug: str, tag: str) -> list[AssetInput]:
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        rows = queries.assets_of_tag(session, project, tag)
        if not rows:
            raise StageError(f"project {slug!r} has no manifest asset tagged {tag!r}")
        return [
            AssetInput(
                id=a.id,
                key=a.asset_key,
                asset_type=a.asset_type,
                name=a.name,
                image_url=a.reference_image_url or "",
                original_sha256=a.original_sha256,
                reverse_prompt=a.reverse_prompt,
                face_embedding=queries.stored_face_embedding(a),
                is_face_crop=a.is_face_crop,
            )
            for a in rows
        ]


def _read_original(ctx: StageContext, item: AssetInput) -> AssetResult:
    label = f"asset {item.key!r} reference image"
    try:  # the photo proven at import (same hash) is not decoded here: Tier 2 decodes it once
        image = read_image(
            ctx.media.path(item.image_url), label=label, known_sha256=item.original_sha256
        )
    except MediaError as exc:
        raise StageError(
            f"{exc}. Re-import the project spec to restore the file; nothing was written."
        ) from exc
    return AssetResult(item, image.data, original_untouched=image.sha256 == item.original_sha256)


def _ensure_face_embedding(
    ctx: StageContext,
    result: AssetResult,
    engine: FaceEngine | None,
    face_problem: str | None,
) -> None:
    """Characters get a face embedding from their original photo, made by the engine in use.

    An embedding made by another engine (e.g. insightface before its pack was removed) is
    recomputed: scores of different engines are never compared.
    """
    item = result.asset
    if item.asset_type != "CHARACTER":
        return
    if engine is None:
        if item.face_embedding is None:
            result.notes.append(f"no face embedding: {face_problem}")
        return
    stored = item.face_embedding
    if stored is not None and (stored.engine, stored.metric) == (engine.name, engine.metric):
        return
    embedding = engine.embed_face(result.original)
    if embedding is None:
        result.notes.append(f"no face found in the original by {engine.name}: no face embedding")
        if stored is not None:  # the other engine's embedding cannot be used by this one
            result.asset = replace(item, face_embedding=None)
        return
    with ctx.database.session() as session:
        queries.set_face_embedding(session, item.id, embedding)
    result.asset = replace(item, face_embedding=embedding)
    was = f" (replacing a {stored.engine} one)" if stored is not None else ""
    result.notes.append(f"face embedding computed by {engine.name}{was}")


def _reusable_tier3(
    ctx: StageContext, slug: str, item: AssetInput, model: str
) -> AssetCleanReference | None:
    """The asset's primary Tier 3 sheet when it was made from this prompt and model."""
    prompt = build_conditioning_prompt(item.reverse_prompt, item.asset_type, item.name)
    with ctx.database.session() as session:
        primary = queries.primary_clean_sheet(session, item.id)
        previous_model = queries.latest_image_model(session, slug, item.key)
    if (
        primary is not None
        and primary.tier == TIER3_GEMINI
        and primary.generation_prompt == prompt
        and previous_model in (model, None)
        and ctx.media.path(primary.clean_image_url).is_file()
    ):
        return primary
    return None


def _try_tier3(
    ctx: StageContext,
    slug: str,
    model: str,
    options: CleanSheetOptions,
    result: AssetResult,
    engine: FaceEngine | None,
    face_problem: str | None,
    primary: AssetCleanReference | None,
    run_id: str | None = None,
) -> None:
    """``primary``: this asset's Tier 3 sheet for the same prompt and model, if one exists."""
    item = result.asset
    prompt = build_conditioning_prompt(item.reverse_prompt, item.asset_type, item.name)
    result.prompt = prompt
    if primary is not None:  # already paid for: reuse it, no API call
        result.tier, result.clean_url, result.status = (
            TIER3_GEMINI,
            primary.clean_image_url,
            "cached",
        )
        result.clean_png = ctx.media.read(primary.clean_image_url)
        result.similarity, result.engine, result.model = (
            primary.face_similarity_score,
            "gemini",
            model,
        )
        with ctx.database.session() as session:
            result.face_score = queries.clean_sheet_face_scores(session, [primary.id]).get(
                primary.id
            )
        result.validation = (
            "passed"
            if primary.face_similarity_score is not None
            else _unscored_validation(item, engine)
        )
        result.notes.append("tier 3 sheet for this prompt and photo exists: reused (no API call)")
        return
    if not ctx.backends.vertex_configured:
        result.notes.append(
            "tier 3 skipped: Vertex is not configured (set GOOGLE_CLOUD_PROJECT or "
            "VIDPIPE_VERTEX_EMULATOR_HOST); fell back to tier 2"
        )
        return
    stored = item.face_embedding if item.asset_type == "CHARACTER" else None
    client = LedgeredImageClient(
        ctx.backends.image_client(),
        ctx.ledger(),
        project_slug=slug,
        subject=item.key,
        price_per_image=options.price_per_image_usd,
        day_budget=(start_of_today_utc(), ctx.budget.per_day_usd),
        catalog=ctx.catalog,
        run_id=run_id,
    )
    outcome = asyncio.run(
        generate_tier3_clean_sheet(
            image_client=client,
            model=model,
            prompt=prompt,
            image_bytes=result.original,
            mime_type=image_mime_type(result.original),
            stored_embedding=stored,
            face_engine=engine,
            price_per_image=options.price_per_image_usd,
            catalog=ctx.catalog,
            no_engine_reason=face_problem or "no face engine installed",
            is_character=item.asset_type == "CHARACTER",
            label=f"asset {item.key!r}",
        )
    )
    result.tries = outcome.tries_as_dicts()
    result.cost_usd = outcome.total_cost_usd
    result.similarity = outcome.score
    result.face_score = outcome.face_score
    result.validation = outcome.validation
    accepted_try = [t.number for t in outcome.tries if t.outcome == "accepted"]
    result.try_number = accepted_try[0] if accepted_try else None
    if outcome.stopped_by == MAY_BE_BILLED:
        raise StageError(
            f"asset {item.key!r}: tier 3 image request got no answer after it was sent "
            f"({outcome.reason}). It may have been billed (vidpipe-dagster costs {slug} lists "
            "it as unknown); nothing was resent. Materialize this partition again to send a "
            "new request, or use tier 2.",
            retry=False,
        )
    if outcome.stopped_by == "transient":
        raise StageError(
            f"asset {item.key!r}: tier 3 API kept failing transiently ({outcome.reason}); "
            "Dagster will retry this partition",
            retry=True,
        )
    if outcome.accepted and outcome.image_png:
        result.tier, result.clean_png, result.engine, result.model = (
            TIER3_GEMINI,
            outcome.image_png,
            "gemini",
            model,
        )
        result.notes.append(f"tier 3: {outcome.reason}")
    else:
        result.notes.append(f"tier 3 not accepted ({outcome.reason}); fell back to tier 2")


def _unscored_validation(item: AssetInput, engine: FaceEngine | None) -> Validation:
    """Why a reused Tier 3 sheet has no similarity score.

    Characters are ``unavailable`` (never validated) unless their original photo has no face to
    compare with; other asset types are ``not_applicable``.
    """
    if item.asset_type != "CHARACTER":
        return "not_applicable"
    if engine is not None and item.face_embedding is None:
        return "not_applicable"  # the face engine found no face in the original
    return "unavailable"


def _make_tier2(remover: BackgroundRemover, result: AssetResult) -> None:
    item = result.asset
    if item.asset_type == "ENVIRONMENT":  # removing the background would remove the subject
        result.status = "original"
        result.notes.append("environments keep their surroundings: the original is the reference")
        return
    try:
        tier2 = make_tier2_clean_sheet(
            result.original, remover, label=f"asset {item.key!r} ({item.image_url})"
        )
    except NothingToSeparate as exc:
        result.status = "original"
        result.notes.append(
            f"tier 2 skipped ({exc}): no engine ran; the original photo stays the reference"
        )
        return
    except BackgroundModelError as exc:  # normally caught up front by ``_load_remover``
        raise StageError(f"{exc}. Nothing more was written.", retry=False) from exc
    except CleanSheetError as exc:
        result.status = "original"
        result.notes.append(f"tier 2 failed ({exc}); the original photo stays the reference")
        return
    result.tier, result.clean_png = tier2.tier_label, tier2.png_bytes
    result.engine, result.model = tier2.engine, tier2.model
    result.notes.append(tier2.note)


def _persist(ctx: StageContext, result: AssetResult) -> None:
    """Write the file atomically, then demote the old primary and add the new one in one go."""
    if result.tier is None or result.status == "cached" or result.clean_png is None:
        return
    item = result.asset
    prefix = "tier3" if result.tier == TIER3_GEMINI else "tier2"
    rel = f"clean_sheets/{prefix}_{item.id}.png"
    result.clean_url = rel
    target = ctx.media.path(rel)
    with ctx.database.session() as session:
        primary = queries.primary_clean_sheet(session, item.id)
    if (
        primary is not None
        and primary.tier == result.tier
        and primary.clean_image_url == rel
        and target.is_file()
        and _same_sheet(target.read_bytes(), result.clean_png)
    ):
        result.status = "unchanged"  # same picture as the current primary: no new row
        return
    ctx.media.write(rel, result.clean_png)
    with ctx.database.session() as session:
        for old in session.query(AssetCleanReference).filter(
            AssetCleanReference.asset_id == item.id, AssetCleanReference.is_primary.is_(True)
        ):
            old.is_primary = False
        session.flush()
        sheet = AssetCleanReference(
            asset_id=item.id,
            tier=result.tier,
            clean_image_url=rel,
            generation_prompt=result.prompt,
            face_similarity_score=result.similarity if result.tier == TIER3_GEMINI else None,
            quality_score=None,
            is_primary=True,
            # what this sheet cost: a Tier 2 fallback is free even after paid Tier 3 tries
            # (those stay in the ledger and in the run's metadata)
            generation_cost=result.cost_usd if result.tier == TIER3_GEMINI else 0.0,
        )
        session.add(sheet)
        if result.tier == TIER3_GEMINI and result.face_score is not None:
            session.flush()  # the sheet's id, for its face score row
            queries.record_clean_sheet_face_score(
                session, sheet.id, result.face_score, result.try_number
            )


def _same_sheet(stored: bytes, made: bytes) -> bool:
    """Same bytes, or the same pixels written at another PNG compression level (sheets made
    before ``CLEAN_SHEET_PNG_LEVEL``): keeping the stored file keeps its hash, so the clips
    that sent it stay current and nothing is paid for again."""
    if stored == made:
        return True
    try:
        old, new = (Image.open(io.BytesIO(data)) for data in (stored, made))
        return old.size == new.size and old.mode == new.mode and old.tobytes() == new.tobytes()
    except (OSError, ValueError):
        return False


def gray_border_fraction(png: bytes) -> float:
    """Share of border pixels within ``GRAY_TOLERANCE`` of #808080 on every channel."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    return float((np.abs(border - 128) <= GRAY_TOLERANCE).all(axis=1).mean())


def run_checks(run: CleanSheetRun) -> list[CheckOutcome]:
    """The cheap checks, on this run's results (the read-back one is ``primary_sheet_check``)."""
    results = run.results
    tampered = [r.asset.key for r in results if not r.original_untouched]
    gray = {
        r.asset.key: round(gray_border_fraction(r.clean_png), 3)
        for r in results
        if r.clean_png is not None and r.tier and r.tier.startswith("tier2")
    }
    not_gray = sorted(k for k, v in gray.items() if v < GRAY_BORDER_MIN_FRACTION)
    return [
        CheckOutcome(
            CHECK_ORIGINAL,
            passed=not tampered,
            description="originals match their import hash"
            if not tampered
            else f"original photo changed on disk since import: {tampered}",
        ),
        CheckOutcome(
            CHECK_GRAY,
            passed=not not_gray,
            severity="warn",
            metadata={"gray_border_fraction": gray},
        ),
        _face_check(results, run.face_problem),
    ]


def _face_check(results: list[AssetResult], face_problem: str | None) -> CheckOutcome:
    faces = {r.asset.key: r.validation for r in results if r.tier == TIER3_GEMINI or r.tries}
    scores = {
        r.asset.key: r.face_score.describe()
        for r in results
        if r.asset.key in faces and r.face_score is not None
    }
    metadata: dict[str, Any] = {"validation": faces, "scores": scores}
    failed_faces = sorted(k for k, v in faces.items() if v == "failed")
    unvalidated = sorted(k for k, v in faces.items() if v == "unavailable")
    if failed_faces:
        best = "; ".join(f"{k}: best {scores[k]}" for k in failed_faces if k in scores)
        return CheckOutcome(
            CHECK_FACES,
            passed=False,
            severity="error",
            description=f"FAILED: face below the engine's threshold for {failed_faces}"
            + (f" ({best})" if best else "")
            + "; the Tier 2 sheet (or the original) is used instead",
            metadata=metadata,
        )
    if unvalidated:
        why = face_problem or "the stored face embedding is from another engine"
        return CheckOutcome(
            CHECK_FACES,
            passed=False,
            severity="warn",
            description=f"NOT validated for {unvalidated}: {why}. Set VIDPIPE_FACE_ENGINE "
            "(auto, dlib, insightface) and install its models to validate identity",
            metadata=metadata,
        )
    passed = "; ".join(f"{k} {v}" for k, v in scores.items())
    return CheckOutcome(
        CHECK_FACES,
        passed=True,
        severity="warn",
        description=(passed or "passed")
        if faces
        else "not applicable: no Tier 3 sheet in this run",
        metadata=metadata,
    )


def read_back_checks(ctx: StageContext, slug: str, tag: str) -> list[CheckOutcome]:
    """All four checks of one tag from what is stored (a person ran them alone from the UI)."""
    results: list[AssetResult] = []
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        for asset in queries.assets_of_tag(session, project, tag):
            item = AssetInput(
                asset.id,
                asset.asset_key,
                asset.asset_type,
                asset.name,
                asset.reference_image_url or "",
                asset.original_sha256,
                asset.reverse_prompt,
                asset.face_embedding,
                asset.is_face_crop,
            )
            original = ctx.media.load(item.image_url) or b""
            result = AssetResult(item, original, sha256_bytes(original) == item.original_sha256)
            primary = queries.primary_clean_sheet(session, asset.id)
            if primary is not None:
                result.tier, result.clean_url = primary.tier, primary.clean_image_url
                result.clean_png = ctx.media.load(primary.clean_image_url)
                result.similarity = primary.face_similarity_score
                if primary.tier == TIER3_GEMINI:
                    result.tries = [{"stored": True}]
                    result.validation = (
                        "passed" if primary.face_similarity_score is not None else "unavailable"
                    )
            results.append(result)
    run = CleanSheetRun(tag, "read back", results, "", None)
    return [*run_checks(run), primary_sheet_check(ctx, slug, [tag])]


def primary_sheet_check(ctx: StageContext, slug: str, tags: list[str] | None) -> CheckOutcome:
    """Read back: every asset of these tags (all, when None) has at most one primary clean sheet,
    and it is its newest one (a re-import with a new photo demotes them all until the next run)."""
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        assets = list(project.manifest.assets) if project.manifest else []
        if tags is not None:
            assets = [a for a in assets if a.manifest_tag in tags]
        per_asset: dict[str, int] = {}
        wrong: list[str] = []
        for asset in assets:
            # the newest last; a primary last among sheets made in the same second
            sheets = sorted(asset.clean_references, key=lambda c: (c.created_at, c.is_primary))
            primaries = [c for c in sheets if c.is_primary]
            per_asset[asset.asset_key] = len(primaries)
            if len(primaries) > 1 or (primaries and primaries[0] is not sheets[-1]):
                wrong.append(asset.asset_key)
    return CheckOutcome(
        CHECK_ONE_PRIMARY,
        passed=not wrong,
        description="every asset with a clean sheet has exactly one primary, its newest"
        if not wrong
        else f"wrong primary clean sheets for {sorted(wrong)}",
        metadata={"primaries_per_asset": per_asset},
    )
