"""``<project>/scene_clip``: one generated clip per scene, many scenes concurrently in one run.

A backfill runs as a single run (``BackfillPolicy.single_run``): the scenes are submitted and
polled together by the spend-safe engine, bounded by in-flight and requests-per-minute limits.
Each finished scene is materialized on its own; failed scenes fail the run with their reasons and
never hide the others.
"""

import asyncio
import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from sqlalchemy import select

from vidpipe_dagster.assets.partitions import ProjectPartitions, stage_key
from vidpipe_dagster.assets.per_partition import DATA_VERSION_TAG, per_partition_results
from vidpipe_dagster.clip_generation import (
    ClipJob,
    ClipOutcome,
    Limits,
    estimate_new_spend,
    generate_clips,
    request_ladder,
)
from vidpipe_dagster.db.ledger import Ledger
from vidpipe_dagster.db.models import Project, Scene, SceneManifest, VideoClip
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.domain.budget import Budget, plan_within_budget, start_of_today_utc
from vidpipe_dagster.domain.media import MediaError, image_mime_type, read_image_bytes
from vidpipe_dagster.domain.reference_selection import (
    chosen_reference,
    select_references_for_scene,
)
from vidpipe_dagster.domain.render import Mp4Info, probe_mp4, thumbnail_strip
from vidpipe_dagster.domain.video_requests import (
    MODEL_CAPABILITIES,
    ImageInput,
    VideoRequest,
    build_video_request,
    estimate_cost_usd,
    image_input,
)
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.resources.vertex import VertexResource

CHECK_VALID_MP4 = "clip_is_valid_mp4_of_expected_duration"
CHECK_REQUEST_LEGAL = "references_and_mode_legal_for_model"
CHECK_ONE_BILLED = "at_most_one_billed_generation_per_clip"
CHECK_COST = "cost_recorded"
PREVIEW_LABEL = "animatic preview (local render, not Veo)"


class SceneClipConfig(dg.Config):
    """Run config for clip generation (defaults are safe for Vertex's per-model quota)."""

    conditioning_policy: Literal["auto", "frames", "references", "hybrid"] = "auto"
    max_in_flight: int = 4
    requests_per_minute: int = 10
    poll_interval_seconds: float = 10.0
    backoff_base_seconds: float = 1.0  # transient errors: full-jitter exponential backoff
    generate_audio: bool = True
    price_per_second_usd: dict[str, float] = {}  # model -> USD per second, overrides defaults
    budget_per_run_usd: float | None = None  # default: VIDPIPE_BUDGET_PER_RUN_USD or 50
    budget_per_day_usd: float | None = None  # default: VIDPIPE_BUDGET_PER_DAY_USD or 200
    # Accept a risk of paying twice: resend a submit whose outcome is unknown (Veo has no
    # idempotency key), and buy again a paid clip whose video is gone for good. Off by default.
    retry_ambiguous_submits: bool = False
    regenerate_lost_results: bool = False


@dataclass(frozen=True)
class SceneInputs:
    key: str
    scene_id: Any
    job: ClipJob | None
    error: str | None = None
    target_duration: int | None = None  # the project's; references may force another


def build_scene_clip(graph: ProjectGraph, parts: ProjectPartitions) -> dg.AssetsDefinition:
    key = stage_key(graph, "scene_clip")

    @dg.asset(
        key=key,
        group_name=graph.prefix,
        partitions_def=parts.scenes,
        deps=[stage_key(graph, "scene_references"), stage_key(graph, "keyframes")],
        description=(
            "One clip per scene from Veo 3.1 (or the local animatic preview when Vertex is not "
            "configured), with up to 3 reference images; every paid request is ledgered first."
        ),
        code_version="1",
        kinds={"python", "video"},
        tags={"vidpipe/project": graph.slug},
        pool="veo",
        output_required=False,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_VALID_MP4,
                asset=key,
                description="The stored file is an mp4 whose duration is the requested one "
                "(8 s with references, the project target otherwise).",
            ),
            dg.AssetCheckSpec(
                CHECK_REQUEST_LEGAL,
                asset=key,
                description="At most 3 references and a conditioning mode the model accepts.",
            ),
            dg.AssetCheckSpec(
                CHECK_ONE_BILLED,
                asset=key,
                description="The ledger shows at most one billed generation per scene clip "
                "(over the request and its remediated or frames-fallback forms).",
            ),
            dg.AssetCheckSpec(
                CHECK_COST,
                asset=key,
                description="Every finished clip records what it cost, reused or not: a Veo "
                "(billed) clip more than 0 and exactly what the ledger billed for its request, an "
                "animatic preview 0.",
            ),
        ],
    )
    def scene_clip(
        context: dg.AssetExecutionContext,
        config: SceneClipConfig,
        database: DatabaseResource,
        media: MediaStoreResource,
        vertex: VertexResource,
    ):
        keys = list(context.partition_keys)
        client = vertex.video_client()
        backend = client.backend
        context.log.info(
            f"{len(keys)} scene(s) with backend {backend}"
            + (f" ({PREVIEW_LABEL})" if client.is_preview else "")
        )
        inputs = [_scene_inputs(database, media, graph, k, config) for k in keys]
        jobs = [i.job for i in inputs if i.job is not None]
        for item in inputs:
            if item.job is not None and (note := _forced_duration(item.job.request, item)):
                context.log.info(f"scene {item.key}: {note}")
        ledger = Ledger(database.sessionmaker())
        slug = graph.slug

        def store(fingerprint: str, data: bytes) -> str:
            rel = f"projects/{slug}/clips/{fingerprint[:24]}.mp4"
            media.write(rel, data)
            return rel

        def load(url: str) -> bytes | None:
            try:
                path = media.path(url)
            except MediaError:
                return None
            return path.read_bytes() if path.is_file() else None

        _enforce_budget(context, config, jobs, client, ledger)
        outcomes: list[ClipOutcome] = asyncio.run(
            generate_clips(
                jobs,
                client,
                ledger,
                Limits(
                    max_in_flight=config.max_in_flight,
                    requests_per_minute=config.requests_per_minute,
                    backoff_base=config.backoff_base_seconds,
                    retry_ambiguous_submits=config.retry_ambiguous_submits,
                    regenerate_lost_results=config.regenerate_lost_results,
                ),
                load_result=load,
                store_result=store,
                price_table=config.price_per_second_usd or None,
                poll_interval=0.05 if client.is_preview else config.poll_interval_seconds,
                on_event=lambda k, message: context.log.info(f"scene {k}: {message}"),
                day_budget=(start_of_today_utc(), budget_for(config).per_day_usd),
                row_details={"run_id": context.run_id},
            )
        )
        by_key = {o.key: o for o in outcomes}
        failed: dict[str, str] = {}
        checks: dict[str, list[str]] = {name: [] for name in (CHECK_VALID_MP4, CHECK_REQUEST_LEGAL)}
        infos: dict[str, dict[str, Any]] = {}
        materializations = []
        for item in inputs:
            outcome = by_key.get(item.key)
            if outcome is None:
                failed[item.key] = item.error or "not generated"
                _record_failure(database, item, failed[item.key], backend)
                continue
            if outcome.status != "done" or outcome.result_url is None:
                failed[item.key] = outcome.error or "generation failed"
                _record_failure(database, item, failed[item.key], backend, outcome)
                continue
            try:  # the file on disk is what final_cut joins, so probe it, not the bytes
                path = media.path(outcome.result_url)
                probe = probe_mp4(path)
            except ValueError as exc:  # MediaError included
                failed[item.key] = (
                    f"the video returned for scene {item.key} is not a valid mp4: {exc}"
                )
                if not client.is_preview:
                    failed[item.key] += (
                        " (billed; a rerun reuses it and does not pay again; to pay for a new "
                        f"one: vidpipe-dagster regenerate {graph.slug} --scene {item.key})"
                    )
                checks[CHECK_VALID_MP4].append(f"scene {item.key}: {failed[item.key]}")
                _record_failure(database, item, failed[item.key], backend, outcome)
                continue
            try:  # one scene's trouble must not cost the others their (paid) materialization
                info = _record_success(
                    database, ledger, item, outcome, backend, client.is_preview, probe
                )
                metadata = _metadata(context, outcome, info, path, backend, client.is_preview)
            except Exception as exc:
                failed[item.key] = f"recording the clip failed: {type(exc).__name__}: {exc}"
                context.log.exception(f"scene {item.key}: {failed[item.key]}")
                continue
            infos[item.key] = info
            for problem in _problems(outcome.request, info):
                checks[problem[0]].append(f"scene {item.key}: {problem[1]}")
            materializations.append(
                dg.AssetMaterialization(
                    asset_key=context.asset_key,
                    partition=item.key,
                    metadata=metadata,
                    tags={DATA_VERSION_TAG: outcome.request.fingerprint[:24]},
                )
            )
        yield from per_partition_results(materializations, all_succeeded=not failed)

        # per scene over every request it may have been made from (remediation levels, the
        # frames fallback): paying for two of them is paying twice for one clip
        billed = {
            f"scene {item.key}": sum(
                ledger.billed_count(request.fingerprint, include_given_up=False)
                for request in request_ladder(item.job)
            )
            for item in inputs
            if item.job is not None and getattr(by_key.get(item.key), "status", None) == "done"
        }
        over_billed = {scene: n for scene, n in billed.items() if n > 1}
        yield dg.AssetCheckResult(
            check_name=CHECK_VALID_MP4,
            passed=not checks[CHECK_VALID_MP4],
            metadata={
                "problems": dg.MetadataValue.json(checks[CHECK_VALID_MP4]),
                "durations": dg.MetadataValue.json(
                    {k: v["duration_seconds"] for k, v in infos.items()}
                ),
            },
        )
        yield dg.AssetCheckResult(
            check_name=CHECK_REQUEST_LEGAL,
            passed=not checks[CHECK_REQUEST_LEGAL],
            metadata={"problems": dg.MetadataValue.json(checks[CHECK_REQUEST_LEGAL])},
        )
        yield dg.AssetCheckResult(
            check_name=CHECK_ONE_BILLED,
            passed=not over_billed,
            metadata={"billed_per_scene": dg.MetadataValue.json(over_billed or "all <= 1")},
        )
        cost_problems = {
            k: problem
            for k, v in infos.items()
            if (
                problem := cost_problem(
                    v["cost_usd"], preview=v["preview"], billed_usd=v["billed_usd"]
                )
            )
        }
        yield dg.AssetCheckResult(
            check_name=CHECK_COST,
            passed=not cost_problems,
            metadata={
                "problems": dg.MetadataValue.json(
                    [f"scene {k}: {p}" for k, p in sorted(cost_problems.items())]
                ),
                "cost_usd": dg.MetadataValue.json({k: v["cost_usd"] for k, v in infos.items()}),
                "total_cost_usd": round(sum(v["cost_usd"] or 0 for v in infos.values()), 4),
                "spent_this_run_usd": round(sum(v["spent_usd"] for v in infos.values()), 4),
            },
        )
        if failed:
            lines = "; ".join(f"scene {k}: {v}" for k, v in sorted(failed.items()))
            done = sorted(infos)
            raise dg.Failure(
                description=f"{len(failed)} of {len(keys)} scene(s) failed ({lines}); "
                f"materialized: {done or 'none'}",
                metadata={"failed": dg.MetadataValue.json(failed), "done": done},
                allow_retries=False,
            )

    return scene_clip


def budget_for(config: SceneClipConfig) -> Budget:
    defaults = Budget.from_env()
    return Budget(
        per_run_usd=config.budget_per_run_usd
        if config.budget_per_run_usd is not None
        else defaults.per_run_usd,
        per_day_usd=config.budget_per_day_usd
        if config.budget_per_day_usd is not None
        else defaults.per_day_usd,
    )


def _enforce_budget(
    context: dg.AssetExecutionContext,
    config: SceneClipConfig,
    jobs: list[ClipJob],
    client: Any,
    ledger: Ledger,
) -> None:
    """Stop before any paid call when the estimate does not fit the budget."""
    estimates = estimate_new_spend(jobs, client, ledger, config.price_per_second_usd or None)
    plan = plan_within_budget(
        estimates,
        budget_for(config),
        ledger.spend_since(start_of_today_utc(), price_table=config.price_per_second_usd or None),
    )
    context.log.info(f"spend: {plan.message}")
    if not plan.fits:
        raise dg.Failure(
            f"over budget, nothing was submitted: {plan.message}. Materialize fewer scenes, or "
            "raise VIDPIPE_BUDGET_PER_RUN_USD / VIDPIPE_BUDGET_PER_DAY_USD (or the run config's "
            "budget_per_run_usd / budget_per_day_usd).",
            metadata={"estimate_usd": plan.requested_usd, "available_usd": plan.allowance_usd},
            allow_retries=False,
        )


def _scene_inputs(
    database: DatabaseResource,
    media: MediaStoreResource,
    graph: ProjectGraph,
    key: str,
    config: SceneClipConfig,
) -> SceneInputs:
    """Read the scene's prompt, keyframes and chosen references and shape its request."""
    index = int(key)
    with database.session() as session:
        project = session.scalars(select(Project).where(Project.slug == graph.slug)).one()
        scene = session.scalars(
            select(Scene).where(Scene.project_id == project.id, Scene.scene_index == index)
        ).one()
        try:
            frames = {
                k.position: _image(media, k.image_url, f"scene {index} {k.position} keyframe")
                for k in scene.keyframes
            }
            references = _references(session, media, project, index)
        except (MediaError, LookupError) as exc:
            return SceneInputs(key, scene.id, None, str(exc))
        common = {
            "model": project.video_model,
            "prompt": scene.prompt,
            "target_duration": project.target_clip_duration,
            "aspect_ratio": project.aspect_ratio,
            "first_frame": frames.get("start"),
            "last_frame": frames.get("end"),
            "generate_audio": config.generate_audio,
        }
        try:
            request = build_video_request(
                **common, references=references, policy=config.conditioning_policy
            )
            fallback = (
                build_video_request(**common, references=(), policy="frames")
                if request.conditioning_mode != "frames"
                else None
            )
        except ValueError as exc:
            return SceneInputs(key, scene.id, None, f"cannot shape the request: {exc}")
        return SceneInputs(
            key,
            scene.id,
            ClipJob(key, graph.slug, request, fallback),
            target_duration=project.target_clip_duration,
        )


def _forced_duration(request: VideoRequest, item: SceneInputs) -> str | None:
    """Why the clip will not have the project's length, when references force it (Veo needs 8 s
    with reference images), so the run log explains a longer clip and its higher cost."""
    if not request.reference_images or request.duration_seconds == item.target_duration:
        return None
    return (
        f"duration forced to {request.duration_seconds} s: reference images are attached "
        f"(project target {item.target_duration} s)"
    )


def _image(media: MediaStoreResource, rel: str | None, label: str) -> ImageInput:
    if not rel:
        raise MediaError(f"{label}: no image recorded")
    data = read_image_bytes(media.path(rel), label=label)
    return image_input(data, image_mime_type(data), label)


def _references(
    session: Any, media: MediaStoreResource, project: Project, index: int
) -> list[tuple[str, ImageInput]]:
    """The persisted selection, each with its primary clean sheet or else its original."""
    if project.manifest is None:
        return []
    scene_manifest = session.scalars(
        select(SceneManifest).where(
            SceneManifest.project_id == project.id, SceneManifest.scene_index == index
        )
    ).one_or_none()
    if scene_manifest is None:
        return []
    if scene_manifest.selected_reference_tags is None:
        raise LookupError(
            f"scene {index}: references were never selected; materialize "
            f"{project.slug}/scene_references for this scene first"
        )
    picks = select_references_for_scene(scene_manifest.manifest_json, project.manifest.assets)
    if [a.manifest_tag for a in picks] != scene_manifest.selected_reference_tags:
        raise LookupError(
            f"scene {index}: the manifest changed since references were selected; "
            "materialize scene_references again"
        )
    refs = []
    for asset in picks:
        chosen = chosen_reference(session, asset)
        label = f"reference {chosen.tag} (asset {chosen.asset_key!r}, {chosen.source})"
        refs.append((chosen.tag, _image(media, chosen.image_url, label)))
    return refs


def _clip_row(session: Any, scene_id: Any) -> VideoClip:
    clip = session.scalars(select(VideoClip).where(VideoClip.scene_id == scene_id)).one_or_none()
    if clip is None:
        clip = VideoClip(scene_id=scene_id)
        session.add(clip)
    return clip


def _record_failure(
    database: DatabaseResource,
    item: SceneInputs,
    error: str,
    backend: str,
    outcome: ClipOutcome | None = None,
) -> None:
    """A failed scene keeps its previous file (already paid for); only status and error change."""
    with database.session() as session:
        clip = _clip_row(session, item.scene_id)
        clip.status = "failed"
        clip.error = error
        clip.backend = backend
        if outcome is not None:
            clip.remediation_level = outcome.remediation_level
            clip.operation_name = outcome.operation_name
            clip.attempts = outcome.attempts


def _record_success(
    database: DatabaseResource,
    ledger: Ledger,
    item: SceneInputs,
    outcome: ClipOutcome,
    backend: str,
    preview: bool,
    probe: Mp4Info,
) -> dict[str, Any]:
    """Record a clip whose stored file probed as a valid mp4. A reused clip keeps what it cost
    and how many submissions it took: the run paid nothing, but the clip was paid for once."""
    request = outcome.request
    billed = _billed_cost(ledger, request.fingerprint, backend)
    cost = outcome.cost_usd or (billed or 0.0)
    with database.session() as session:
        clip = _clip_row(session, item.scene_id)
        attempts = outcome.attempts
        if not attempts:  # reused or resumed: the submissions were made by an earlier run
            same = clip.fingerprint == request.fingerprint and clip.status == "done"
            attempts = (clip.attempts if same else 0) or ledger.billed_count(
                request.fingerprint, backend
            )
        clip.status = "done"
        clip.backend = backend
        clip.file_url = outcome.result_url
        clip.duration_seconds = probe.duration_seconds
        clip.conditioning_mode = request.conditioning_mode
        clip.conditioning_reason = request.conditioning_reason
        clip.remediation_level = outcome.remediation_level
        clip.operation_name = outcome.operation_name
        clip.fingerprint = request.fingerprint
        clip.reference_tags = list(request.reference_tags)
        clip.cost_usd = cost
        clip.attempts = attempts
        clip.cached = outcome.cached
        clip.error = None
    return {
        "duration_seconds": probe.duration_seconds,
        "cost_usd": cost,
        "spent_usd": outcome.cost_usd,
        "billed_usd": billed,
        "attempts": attempts,
        "path": outcome.result_url,
        "preview": preview,
    }


def _billed_cost(ledger: Ledger, fingerprint: str, backend: str) -> float | None:
    """What the ledger billed for the request's finished generation; None if it has none."""
    entry = ledger.find_reusable(fingerprint, backend)
    if entry is None or entry.state != "done" or not entry.billed:
        return None
    return entry.cost_usd


def cost_problem(cost_usd: float | None, *, preview: bool, billed_usd: float | None) -> str | None:
    """What is wrong with a finished clip's recorded cost, or None. A preview is free; a billed
    clip cost more than 0, and exactly what the ledger billed (reports and budgets add these)."""
    if cost_usd is None:
        return "no cost recorded"
    if preview:
        return None if cost_usd == 0 else f"animatic preview recorded ${cost_usd:.4f}, not $0"
    if cost_usd <= 0:
        return f"billed clip recorded ${cost_usd:.4f}"
    if billed_usd is None:
        return f"${cost_usd:.4f} recorded, but the ledger has no billed generation for it"
    if abs(cost_usd - billed_usd) > 1e-6:
        return f"${cost_usd:.4f} recorded, but the ledger billed ${billed_usd:.4f}"
    return None


def _problems(request: VideoRequest, info: dict[str, Any]) -> list[tuple[str, str]]:
    problems = []
    if abs(info["duration_seconds"] - request.duration_seconds) > 0.25:
        problems.append(
            (
                CHECK_VALID_MP4,
                f"duration {info['duration_seconds']:.2f} s, "
                f"requested {request.duration_seconds} s",
            )
        )
    if request.reference_images and request.duration_seconds != 8:
        problems.append((CHECK_VALID_MP4, "references attached but duration is not 8 s"))
    caps = MODEL_CAPABILITIES.get(request.model)
    if len(request.reference_images) > 3:
        problems.append((CHECK_REQUEST_LEGAL, f"{len(request.reference_images)} references"))
    if caps is not None:
        if request.reference_images and not caps.supports_references:
            problems.append((CHECK_REQUEST_LEGAL, f"{request.model} takes no references"))
        if request.conditioning_mode == "hybrid" and not caps.supports_hybrid:
            problems.append((CHECK_REQUEST_LEGAL, f"{request.model} rejects hybrid requests"))
    return problems


def _metadata(
    context: dg.AssetExecutionContext,
    outcome: ClipOutcome,
    info: dict[str, Any],
    path: Path,
    backend: str,
    preview: bool,
) -> dict[str, Any]:
    request = outcome.request
    label = f"**{PREVIEW_LABEL}**\n\n" if preview else ""
    try:  # thumbnails are a convenience: a clip that probed fine is not failed for them
        strip = thumbnail_strip(path, n=4)
        buffer = io.BytesIO()
        strip.convert("RGB").save(buffer, format="JPEG", quality=75)
        uri = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        shown = f"{label}![thumbnails]({uri})"
    except ValueError as exc:
        context.log.warning(f"scene {outcome.key}: no thumbnails: {exc}")
        shown = f"{label}no thumbnails: {exc}"
    return {
        "status": "cached" if outcome.cached else ("resumed" if outcome.resumed else "generated"),
        "backend": PREVIEW_LABEL if preview else backend,
        "preview": dg.MetadataValue.md(shown),
        "path": info["path"] or "",
        "duration_seconds": info["duration_seconds"],
        "conditioning_mode": request.conditioning_mode,
        "conditioning_reason": request.conditioning_reason,
        "references": dg.MetadataValue.json(list(request.reference_tags)),
        "remediation_level": outcome.remediation_level,
        "cost_usd": info["cost_usd"],  # what the clip cost, paid once
        "spent_this_run_usd": outcome.cost_usd,  # 0 when reused
        "api_calls": outcome.api_calls,
        "submissions": outcome.attempts,
        "attempts": info["attempts"],
        "fingerprint": request.fingerprint,
        "operation_name": outcome.operation_name or "",
    }


@dataclass(frozen=True)
class SceneNeed:
    key: str
    reason: str  # missing | failed | stale (inputs changed) | references out of date
    estimate_usd: float


def scenes_needing_clips(
    graph: ProjectGraph,
    database: DatabaseResource,
    media: MediaStoreResource,
    client: Any,
    config: SceneClipConfig,
) -> tuple[list[SceneNeed], dict[str, str]]:
    """Scenes whose clip is missing, failed, or made from inputs that have since changed (a new
    clean sheet, an edited prompt or keyframe): compared by request fingerprint. Also returns the
    scenes that need a person (e.g. a vanished file), which no run can fix."""
    ledger = Ledger(database.sessionmaker())
    with database.session() as session:
        rows = session.execute(
            select(Scene.scene_index, VideoClip.status, VideoClip.fingerprint)
            .join(Project, Project.id == Scene.project_id)
            .outerjoin(VideoClip, VideoClip.scene_id == Scene.id)
            .where(Project.slug == graph.slug)
        ).all()
    clips = {str(i): (status, fingerprint) for i, status, fingerprint in rows}
    needs: list[SceneNeed] = []
    blocked: dict[str, str] = {}
    prices = config.price_per_second_usd or None
    for key in graph.scene_keys:
        status, fingerprint = clips.get(key, (None, None))
        item = _scene_inputs(database, media, graph, key, config)
        if item.job is None:
            if item.error and "scene_references" in item.error:  # selection is out of date
                model = graph.video_model
                estimate = 0.0 if client.is_preview else estimate_cost_usd(model, 8, True, prices)
                needs.append(SceneNeed(key, "references out of date", estimate))
            else:
                blocked[key] = item.error or "cannot build the request"
            continue
        if status == "done" and fingerprint in {r.fingerprint for r in request_ladder(item.job)}:
            continue  # made from this request, or from its remediated / frames-fallback form
        if ledger.outcome_unknown(
            [r.fingerprint for r in request_ladder(item.job)], client.backend
        ):
            blocked[key] = (
                "its last request may have reached Veo and been billed (outcome unknown); "
                "check billing, then materialize it by hand (that submits once more)"
            )
            continue
        reason = {None: "missing", "failed": "failed"}.get(status, "stale (inputs changed)")
        [(_, estimate)] = estimate_new_spend([item.job], client, ledger, prices)
        needs.append(SceneNeed(key, reason, estimate))
    return needs, blocked
