"""``<project>/clean_sheet``: a clean reference per manifest asset of one tag (Tier 2 or Tier 3).

The original image and ``Asset.reference_image_url`` are never modified; each result is a new
``AssetCleanReference`` row, made primary in the same transaction that demotes the previous one.
"""

import asyncio
import io
from dataclasses import dataclass, field
from typing import Any, Literal

import dagster as dg
import numpy as np
from PIL import Image
from sqlalchemy import select

from vidpipe_dagster.assets.partitions import ProjectPartitions, stage_key
from vidpipe_dagster.db.ledger import Ledger
from vidpipe_dagster.db.models import Asset, AssetCleanReference, GenerationLedger, Project
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.domain.budget import Budget, plan_within_budget, start_of_today_utc
from vidpipe_dagster.domain.clean_sheets import (
    DEFAULT_TIER3_PRICE_USD,
    TIER3_GEMINI,
    TIER3_MAX_TRIES,
    CleanSheetError,
    Tier3Outcome,
    build_conditioning_prompt,
    generate_tier3_clean_sheet,
    make_tier2_clean_sheet,
)
from vidpipe_dagster.domain.faces import embedding_from_bytes, embedding_to_bytes
from vidpipe_dagster.domain.media import (
    MediaError,
    image_mime_type,
    markdown_gallery,
    read_image_bytes,
    sha256_bytes,
)
from vidpipe_dagster.ledgered_images import LedgeredImageClient
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.resources.models import LocalModelsResource
from vidpipe_dagster.resources.vertex import VertexResource

CHECK_ORIGINAL = "original_reference_untouched"
CHECK_GRAY = "tier2_background_is_neutral_gray"
CHECK_ONE_PRIMARY = "exactly_one_primary_clean_sheet"
CHECK_FACES = "face_identity_validated"
GRAY_TOLERANCE = 12
GRAY_BORDER_MIN_FRACTION = 0.5


class CleanSheetConfig(dg.Config):
    """Run config: which tier to make (Tier 3 falls back to Tier 2, then to the original)."""

    tier: Literal["tier2", "tier3"] = "tier2"
    image_model: str | None = None  # default: the Vertex resource's image model
    price_per_image_usd: float = DEFAULT_TIER3_PRICE_USD


@dataclass(frozen=True)
class AssetInput:
    id: Any
    key: str
    asset_type: str
    name: str | None
    image_url: str
    original_sha256: str | None
    reverse_prompt: str | None
    face_embedding: bytes | None
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
    engine: str = ""
    model: str = ""
    similarity: float | None = None
    validation: str = "not_applicable"
    cost_usd: float = 0.0
    tries: list[dict[str, Any]] = field(default_factory=list)
    prompt: str | None = None
    notes: list[str] = field(default_factory=list)


def build_clean_sheet(graph: ProjectGraph, parts: ProjectPartitions) -> dg.AssetsDefinition:
    key = stage_key(graph, "clean_sheet")
    assert parts.tags is not None

    @dg.asset(
        key=key,
        group_name=graph.prefix,
        partitions_def=parts.tags,
        deps=[stage_key(graph, "reference_image")],
        description=(
            "Clean reference sheets for every asset of a manifest tag: Tier 2 removes the "
            "background onto #808080; Tier 3 asks a Gemini image model and checks the face."
        ),
        code_version="1",
        kinds={"python", "image"},
        tags={"vidpipe/project": graph.slug},
        retry_policy=dg.RetryPolicy(
            max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
        ),
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_ORIGINAL,
                asset=key,
                description="The original reference photo still has the hash taken at import.",
            ),
            dg.AssetCheckSpec(
                CHECK_GRAY,
                asset=key,
                description="Tier 2 sheets: at least half the border is #808080 (±12).",
            ),
            dg.AssetCheckSpec(
                CHECK_ONE_PRIMARY,
                asset=key,
                description="Each asset with a clean sheet has exactly one primary (assets that "
                "keep their original photo have none).",
            ),
            dg.AssetCheckSpec(
                CHECK_FACES,
                asset=key,
                description="Tier 3 characters: face similarity passed; warns when not validated "
                "(no face model), errors when the face did not match (Tier 2 used instead).",
            ),
        ],
    )
    def clean_sheet(
        context: dg.AssetExecutionContext,
        config: CleanSheetConfig,
        database: DatabaseResource,
        media: MediaStoreResource,
        models: LocalModelsResource,
        vertex: VertexResource,
    ) -> dg.MaterializeResult:
        tag = context.partition_key
        inputs = _load_inputs(database, graph.slug, tag)
        remover, remover_note = models.background_remover()
        embedder, face_problem = models.face_embedder()
        context.log.info(f"{tag}: background removal: {remover_note}")
        if face_problem and any(i.asset_type == "CHARACTER" for i in inputs):
            context.log.warning(f"{tag}: face embeddings unavailable: {face_problem}")

        reusable: dict[Any, AssetCleanReference | None] = {}
        if config.tier == "tier3":  # paid sheets that already exist, looked up once per asset
            model = config.image_model or vertex.image_model
            reusable = {
                i.id: _reusable_tier3(graph.slug, database, media, i, model) for i in inputs
            }
            if vertex.vertex_configured:
                context.log.info(
                    f"{tag}: tier 3 budget: "
                    + _enforce_tier3_budget(database, config, inputs, reusable)
                )
        results: list[AssetResult] = []
        for item in inputs:
            result = _read_original(media, item)
            _ensure_face_embedding(database, result, embedder, face_problem)
            if config.tier == "tier3":
                _try_tier3(
                    graph.slug,
                    database,
                    media,
                    vertex,
                    config,
                    result,
                    embedder,
                    face_problem,
                    reusable[item.id],
                )
            if result.tier is None:
                _make_tier2(media, remover, remover_note, result)
            _persist(database, media, result)
            context.log.info(
                f"{tag}/{item.key}: {result.tier or 'original'} ({result.status}); "
                + "; ".join(result.notes)
            )
            results.append(result)

        return dg.MaterializeResult(
            metadata=_metadata(results, remover_note, face_problem, config.tier),
            data_version=dg.DataVersion(
                sha256_bytes(
                    "".join(sha256_bytes(r.clean_png or r.original) for r in results).encode()
                )[:24]
            ),
            check_results=_checks(database, results),
        )

    return clean_sheet


def _load_inputs(database: DatabaseResource, slug: str, tag: str) -> list[AssetInput]:
    with database.session() as session:
        project = session.scalars(select(Project).where(Project.slug == slug)).one()
        rows = session.scalars(
            select(Asset)
            .where(Asset.manifest_id == project.manifest_id, Asset.manifest_tag == tag)
            .order_by(Asset.is_face_crop, Asset.asset_key)
        ).all()
        if not rows:
            raise dg.Failure(
                f"project {slug!r} has no manifest asset tagged {tag!r}", allow_retries=False
            )
        return [
            AssetInput(
                id=a.id,
                key=a.asset_key,
                asset_type=a.asset_type,
                name=a.name,
                image_url=a.reference_image_url or "",
                original_sha256=a.original_sha256,
                reverse_prompt=a.reverse_prompt,
                face_embedding=a.face_embedding,
                is_face_crop=a.is_face_crop,
            )
            for a in rows
        ]


def _read_original(media: MediaStoreResource, item: AssetInput) -> AssetResult:
    label = f"asset {item.key!r} reference image"
    try:
        data = read_image_bytes(media.path(item.image_url), label=label)
    except MediaError as exc:
        raise dg.Failure(
            f"{exc}. Re-import the project spec to restore the file; nothing was written.",
            allow_retries=False,
        ) from exc
    return AssetResult(item, data, original_untouched=sha256_bytes(data) == item.original_sha256)


def _ensure_face_embedding(
    database: DatabaseResource,
    result: AssetResult,
    embedder: Any,
    face_problem: str | None,
) -> None:
    """Characters get a stored face embedding from their original photo, once."""
    item = result.asset
    if item.asset_type != "CHARACTER" or item.face_embedding is not None:
        return
    if embedder is None:
        result.notes.append(f"no face embedding: {face_problem}")
        return
    embedding = embedder.embed_largest_face(result.original)
    if embedding is None:
        result.notes.append("no face found in the original: no face embedding")
        return
    data = embedding_to_bytes(embedding)
    with database.session() as session:
        row = session.get(Asset, item.id)
        if row is not None:
            row.face_embedding = data
    result.asset = AssetInput(**{**item.__dict__, "face_embedding": data})
    result.notes.append("face embedding computed")


def _current_primary(database: DatabaseResource, asset_id: Any) -> AssetCleanReference | None:
    with database.session() as session:
        return session.scalars(
            select(AssetCleanReference).where(
                AssetCleanReference.asset_id == asset_id,
                AssetCleanReference.is_primary.is_(True),
            )
        ).first()


def _try_tier3(
    slug: str,
    database: DatabaseResource,
    media: MediaStoreResource,
    vertex: VertexResource,
    config: CleanSheetConfig,
    result: AssetResult,
    embedder: Any,
    face_problem: str | None,
    primary: AssetCleanReference | None,
) -> None:
    """``primary``: this asset's Tier 3 sheet for the same prompt and model, if one exists."""
    item = result.asset
    model = config.image_model or vertex.image_model
    prompt = build_conditioning_prompt(item.reverse_prompt, item.asset_type, item.name)
    if primary is not None:  # already paid for: reuse it, no API call
        result.tier, result.clean_url, result.status = (
            TIER3_GEMINI,
            primary.clean_image_url,
            "cached",
        )
        result.clean_png = media.read(primary.clean_image_url)
        result.similarity, result.prompt, result.engine, result.model = (
            primary.face_similarity_score,
            prompt,
            "gemini",
            model,
        )
        result.validation = (
            "passed"
            if primary.face_similarity_score is not None
            else _unscored_validation(item, embedder)
        )
        result.notes.append("tier 3 sheet for this prompt and photo exists: reused (no API call)")
        return
    if not vertex.vertex_configured:
        result.notes.append(
            "tier 3 skipped: Vertex is not configured (set GOOGLE_CLOUD_PROJECT or "
            "VIDPIPE_VERTEX_EMULATOR_HOST); fell back to tier 2"
        )
        return
    stored = (
        embedding_from_bytes(item.face_embedding)
        if item.asset_type == "CHARACTER" and item.face_embedding
        else None
    )
    client = LedgeredImageClient(
        vertex.image_client(),
        database.sessionmaker(),
        project_slug=slug,
        subject=item.key,
        price_per_image=config.price_per_image_usd,
        day_budget=(start_of_today_utc(), Budget.from_env().per_day_usd),
    )
    outcome: Tier3Outcome = asyncio.run(
        generate_tier3_clean_sheet(
            image_client=client,
            model=model,
            prompt=prompt,
            image_bytes=result.original,
            mime_type=image_mime_type(result.original),
            stored_embedding=stored,
            embedder=embedder,
            price_per_image=config.price_per_image_usd,
            no_embedder_reason=face_problem or "no face model installed",
            is_character=item.asset_type == "CHARACTER",
            label=f"asset {item.key!r}",
        )
    )
    result.tries = outcome.tries_as_dicts()
    result.cost_usd = outcome.total_cost_usd
    result.prompt = prompt
    result.similarity = outcome.score
    result.validation = outcome.validation
    if outcome.stopped_by == "transient":
        raise dg.Failure(
            f"asset {item.key!r}: tier 3 API kept failing transiently ({outcome.reason}); "
            "Dagster will retry this partition"
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


def _reusable_tier3(
    slug: str,
    database: DatabaseResource,
    media: MediaStoreResource,
    item: AssetInput,
    model: str,
) -> AssetCleanReference | None:
    """The asset's primary Tier 3 sheet when it was made from this prompt and model."""
    prompt = build_conditioning_prompt(item.reverse_prompt, item.asset_type, item.name)
    primary = _current_primary(database, item.id)
    if (
        primary is not None
        and primary.tier == TIER3_GEMINI
        and primary.generation_prompt == prompt
        and _latest_tier3_model(database, slug, item.key) in (model, None)
        and media.path(primary.clean_image_url).is_file()
    ):
        return primary
    return None


def _enforce_tier3_budget(
    database: DatabaseResource,
    config: CleanSheetConfig,
    inputs: list[AssetInput],
    reusable: dict[Any, AssetCleanReference | None],
) -> str:
    """Stop before any paid call when the worst case (every try used) does not fit the budget."""
    worst = TIER3_MAX_TRIES * config.price_per_image_usd
    estimates = [(item.key, worst) for item in inputs if reusable.get(item.id) is None]
    spent = Ledger(database.sessionmaker()).spend_since(start_of_today_utc())
    plan = plan_within_budget(estimates, Budget.from_env(), spent)
    if not plan.fits:
        raise dg.Failure(
            f"tier 3 over budget, nothing was generated: {plan.message} (worst case: "
            f"{TIER3_MAX_TRIES} tries per asset). Use tier2, or raise VIDPIPE_BUDGET_PER_RUN_USD "
            "/ VIDPIPE_BUDGET_PER_DAY_USD.",
            allow_retries=False,
        )
    return plan.message


def _latest_tier3_model(database: DatabaseResource, slug: str, key: str) -> str | None:
    """The model of this asset's newest finished Tier 3 request (None: no ledger record)."""
    with database.session() as session:
        return session.scalars(
            select(GenerationLedger.model)
            .where(
                GenerationLedger.kind == "image",
                GenerationLedger.project_slug == slug,
                GenerationLedger.subject == key,
                GenerationLedger.state == "done",
            )
            .order_by(GenerationLedger.created_at.desc())
            .limit(1)
        ).first()


def _unscored_validation(item: AssetInput, embedder: Any) -> str:
    """Why a reused Tier 3 sheet has no similarity score.

    Characters are ``unavailable`` (never validated) unless their original photo has no face to
    compare with; other asset types are ``not_applicable``.
    """
    if item.asset_type != "CHARACTER":
        return "not_applicable"
    if embedder is not None and item.face_embedding is None:
        return "not_applicable"  # the face model found no face in the original
    return "unavailable"


def _make_tier2(
    media: MediaStoreResource, remover: Any, remover_note: str, result: AssetResult
) -> None:
    item = result.asset
    if item.asset_type == "ENVIRONMENT":  # removing the background would remove the subject
        result.status = "original"
        result.notes.append("environments keep their surroundings: the original is the reference")
        return
    try:
        tier2 = make_tier2_clean_sheet(
            result.original, remover, label=f"asset {item.key!r} ({item.image_url})"
        )
    except CleanSheetError as exc:
        result.status = "original"
        result.notes.append(f"tier 2 failed ({exc}); the original photo stays the reference")
        return
    result.tier, result.clean_png = tier2.tier_label, tier2.png_bytes
    result.engine, result.model = tier2.engine, tier2.model
    result.notes.append(tier2.note)


def _persist(database: DatabaseResource, media: MediaStoreResource, result: AssetResult) -> None:
    """Write the file atomically, then demote the old primary and add the new one in one go."""
    if result.tier is None or result.status == "cached" or result.clean_png is None:
        return
    item = result.asset
    prefix = "tier3" if result.tier == TIER3_GEMINI else "tier2"
    rel = f"clean_sheets/{prefix}_{item.id}.png"
    result.clean_url = rel
    primary = _current_primary(database, item.id)
    target = media.path(rel)
    if (
        primary is not None
        and primary.tier == result.tier
        and primary.clean_image_url == rel
        and target.is_file()
        and target.read_bytes() == result.clean_png
    ):
        result.status = "unchanged"  # same bytes as the current primary: no new row
        return
    media.write(rel, result.clean_png)
    with database.session() as session:
        for old in session.scalars(
            select(AssetCleanReference).where(
                AssetCleanReference.asset_id == item.id,
                AssetCleanReference.is_primary.is_(True),
            )
        ):
            old.is_primary = False
        session.flush()
        session.add(
            AssetCleanReference(
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
        )


def gray_border_fraction(png: bytes) -> float:
    """Share of border pixels within ``GRAY_TOLERANCE`` of #808080 on every channel."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    return float((np.abs(border - 128) <= GRAY_TOLERANCE).all(axis=1).mean())


def _checks(database: DatabaseResource, results: list[AssetResult]) -> list[dg.AssetCheckResult]:
    tampered = [r.asset.key for r in results if not r.original_untouched]
    gray = {
        r.asset.key: round(gray_border_fraction(r.clean_png), 3)
        for r in results
        if r.clean_png is not None and r.tier and r.tier.startswith("tier2")
    }
    not_gray = sorted(k for k, v in gray.items() if v < GRAY_BORDER_MIN_FRACTION)
    with database.session() as session:
        primaries = {
            r.asset.key: len(
                session.scalars(
                    select(AssetCleanReference.id).where(
                        AssetCleanReference.asset_id == r.asset.id,
                        AssetCleanReference.is_primary.is_(True),
                    )
                ).all()
            )
            for r in results
        }
    faces = {r.asset.key: r.validation for r in results if r.tier == TIER3_GEMINI or r.tries}
    failed_faces = sorted(k for k, v in faces.items() if v == "failed")
    unvalidated = sorted(k for k, v in faces.items() if v == "unavailable")
    severity = dg.AssetCheckSeverity.WARN
    if failed_faces:
        faces_ok, severity = False, dg.AssetCheckSeverity.ERROR
        faces_note = (
            f"FAILED: face similarity below threshold for {failed_faces}; "
            "the Tier 2 sheet (or the original) is used instead"
        )
    elif unvalidated:
        faces_ok = False
        faces_note = (
            f"NOT validated (no face model installed) for {unvalidated}: "
            "install an insightface pack (VIDPIPE_FACE_MODEL_ROOT) to validate identity"
        )
    else:
        faces_ok = True
        faces_note = "passed" if faces else "not applicable: no Tier 3 sheet in this run"
    face_check = dg.AssetCheckResult(
        check_name=CHECK_FACES,
        passed=faces_ok,
        severity=severity,
        description=faces_note,
        metadata={"validation": faces},
    )
    with_sheet = {r.asset.key for r in results if r.tier is not None}
    wrong_primaries = sorted(
        key for key, n in primaries.items() if n > 1 or (key in with_sheet and n != 1)
    )
    return [
        dg.AssetCheckResult(
            check_name=CHECK_ORIGINAL,
            passed=not tampered,
            description="originals match their import hash"
            if not tampered
            else f"original photo changed on disk since import: {tampered}",
        ),
        dg.AssetCheckResult(
            check_name=CHECK_GRAY,
            passed=not not_gray,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"gray_border_fraction": gray},
        ),
        dg.AssetCheckResult(
            check_name=CHECK_ONE_PRIMARY,
            passed=not wrong_primaries,
            description="every asset with a clean sheet has exactly one primary"
            if not wrong_primaries
            else f"wrong number of primary clean sheets for {wrong_primaries}",
            metadata={"primaries_per_asset": primaries},
        ),
        face_check,
    ]


def _metadata(
    results: list[AssetResult], remover_note: str, face_problem: str | None, tier: str
) -> dict[str, Any]:
    rows = [
        "| asset | tier | status | engine / model | similarity | tries | cost (USD) |",
        "|---|---|---|---|---|---|---|",
    ]
    pictures: list[tuple[str, bytes]] = []
    for r in results:
        sim = "-" if r.similarity is None else f"{r.similarity:.3f}"
        rows.append(
            f"| {r.asset.key} | {r.tier or 'original (no sheet)'} | {r.status} | "
            f"{r.engine or '-'} / {r.model or '-'} | {sim} ({r.validation}) | {len(r.tries)} | "
            f"{r.cost_usd:.3f} |"
        )
        pictures.append((f"{r.asset.key}: original", r.original))
        if r.clean_png is not None:
            pictures.append((f"{r.asset.key}: {r.tier}", r.clean_png))
    return {
        "requested_tier": tier,
        "tiers": dg.MetadataValue.json({r.asset.key: r.tier for r in results}),
        "summary": dg.MetadataValue.md("\n".join(rows)),
        "before_after": dg.MetadataValue.md(markdown_gallery(pictures)),
        "background_removal": remover_note,
        "face_model": face_problem or "installed",
        "face_validation": dg.MetadataValue.json({r.asset.key: r.validation for r in results}),
        "total_cost_usd": round(sum(r.cost_usd for r in results), 4),
        "tier3_tries": dg.MetadataValue.json({r.asset.key: r.tries for r in results if r.tries}),
        "notes": dg.MetadataValue.json({r.asset.key: r.notes for r in results}),
        "clean_sheet_paths": dg.MetadataValue.json({r.asset.key: r.clean_url for r in results}),
    }
