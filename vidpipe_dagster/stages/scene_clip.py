"""One generated clip per scene, many scenes concurrently, never paid for twice.

Read the scene (prompt, keyframes, chosen references) → shape its request
(``domain.video_requests``: the conditioning mode and the 8 s forced with references) → check the
budget (``generation.budgets``) → generate through the spend-safe engine (``generation.clips``:
reuse a done request, resume one in flight, submit only what no ledger row covers) → probe the
stored file and record the clip. One scene's failure never hides the others'.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vidpipe_dagster.db import queries
from vidpipe_dagster.db.ledger import Ledger
from vidpipe_dagster.db.models import Project
from vidpipe_dagster.domain.budget import start_of_today_utc
from vidpipe_dagster.domain.media import MediaError, image_mime_type, read_image_bytes
from vidpipe_dagster.domain.preview import PREVIEW_LABEL
from vidpipe_dagster.domain.reference_selection import select_references_for_scene
from vidpipe_dagster.domain.render import Mp4Info, probe_mp4
from vidpipe_dagster.domain.video_requests import (
    ImageInput,
    VideoRequest,
    build_video_request,
    estimate_cost_usd,
    image_input,
    request_rule_problems,
)
from vidpipe_dagster.generation.budgets import plan_clip_spend
from vidpipe_dagster.generation.client import VideoClient
from vidpipe_dagster.generation.clips import (
    ClipJob,
    ClipOutcome,
    Limits,
    estimate_new_spend,
    generate_clips,
    request_ladder,
)
from vidpipe_dagster.stages.context import CheckOutcome, StageContext, StageError

CHECK_VALID_MP4 = "clip_is_valid_mp4_of_expected_duration"
CHECK_REQUEST_LEGAL = "references_and_mode_legal_for_model"
CHECK_ONE_BILLED = "at_most_one_billed_generation_per_clip"
CHECK_COST = "cost_recorded"
Policy = Literal["auto", "frames", "references", "hybrid"]


@dataclass(frozen=True)
class ClipOptions:
    """How to generate (the run config's values; defaults are safe for Vertex's quota)."""

    conditioning_policy: Policy = "auto"
    max_in_flight: int = 4
    requests_per_minute: int = 10
    poll_interval_seconds: float = 10.0
    backoff_base_seconds: float = 1.0
    generate_audio: bool = True
    price_per_second_usd: Mapping[str, float] = field(default_factory=dict)
    retry_ambiguous_submits: bool = False
    regenerate_lost_results: bool = False

    @property
    def prices(self) -> Mapping[str, float] | None:
        return self.price_per_second_usd or None


@dataclass(frozen=True)
class SceneInputs:
    key: str
    scene_id: uuid.UUID
    job: ClipJob | None
    error: str | None = None
    target_duration: int | None = None  # the project's; references may force another

    @property
    def forced_duration(self) -> str | None:
        """Why the clip will not have the project's length (Veo needs 8 s with reference
        images), so the run log explains a longer clip and its higher cost."""
        request = self.job.request if self.job else None
        if request is None or not request.reference_images:
            return None
        if request.duration_seconds == self.target_duration:
            return None
        return (
            f"duration forced to {request.duration_seconds} s: reference images are attached "
            f"(project target {self.target_duration} s)"
        )


@dataclass(frozen=True)
class ClipResult:
    """A scene whose clip is done and recorded (``info``), or failed (``error``)."""

    key: str
    outcome: ClipOutcome | None
    error: str | None = None
    path: Path | None = None
    duration_seconds: float = 0.0
    cost_usd: float = 0.0  # what the clip cost, paid once
    billed_usd: float | None = None  # what the ledger billed for its request
    attempts: int = 0
    problems: tuple[tuple[str, str], ...] = ()  # (check name, problem)

    @property
    def done(self) -> bool:
        return self.error is None and self.outcome is not None


@dataclass(frozen=True)
class ClipRun:
    keys: list[str]
    backend: str
    preview: bool
    results: list[ClipResult]

    @property
    def failed(self) -> dict[str, str]:
        return {r.key: r.error for r in self.results if r.error is not None}

    @property
    def done(self) -> list[ClipResult]:
        return [r for r in self.results if r.done]


def make_clips(
    ctx: StageContext,
    slug: str,
    keys: Sequence[str],
    options: ClipOptions,
    *,
    run_id: str | None = None,
) -> ClipRun:
    client = ctx.backends.video_client()
    ctx.log.info(
        f"{len(keys)} scene(s) with backend {client.backend}"
        + (f" ({PREVIEW_LABEL})" if client.is_preview else "")
    )
    inputs = [scene_inputs(ctx, slug, key, options) for key in keys]
    jobs = [i.job for i in inputs if i.job is not None]
    for item in inputs:
        if note := item.forced_duration:
            ctx.log.info(f"scene {item.key}: {note}")
    ledger = Ledger(ctx.database.sessionmaker())
    plan = plan_clip_spend(jobs, client, ledger, ctx.budget, options.prices)
    ctx.log.info(f"spend: {plan.message}")
    if not plan.fits:
        raise StageError(
            f"over budget, nothing was submitted: {plan.message}. Materialize fewer scenes, or "
            "raise VIDPIPE_BUDGET_PER_RUN_USD / VIDPIPE_BUDGET_PER_DAY_USD.",
            metadata={"estimate_usd": plan.requested_usd, "available_usd": plan.allowance_usd},
        )

    def store(fingerprint: str, data: bytes) -> str:
        rel = f"projects/{slug}/clips/{fingerprint[:24]}.mp4"
        ctx.media.write(rel, data)
        return rel

    outcomes = asyncio.run(
        generate_clips(
            jobs,
            client,
            ledger,
            Limits(
                max_in_flight=options.max_in_flight,
                requests_per_minute=options.requests_per_minute,
                backoff_base=options.backoff_base_seconds,
                retry_ambiguous_submits=options.retry_ambiguous_submits,
                regenerate_lost_results=options.regenerate_lost_results,
            ),
            load_result=ctx.media.load,
            store_result=store,
            price_table=options.prices,
            poll_interval=0.05 if client.is_preview else options.poll_interval_seconds,
            on_event=lambda k, message: ctx.log.info(f"scene {k}: {message}"),
            day_budget=(start_of_today_utc(), ctx.budget.per_day_usd),
            row_details={"run_id": run_id} if run_id else None,
        )
    )
    by_key = {o.key: o for o in outcomes}
    results = [_settle(ctx, ledger, slug, item, by_key.get(item.key), client) for item in inputs]
    return ClipRun(list(keys), client.backend, client.is_preview, results)


def _settle(
    ctx: StageContext,
    ledger: Ledger,
    slug: str,
    item: SceneInputs,
    outcome: ClipOutcome | None,
    client: VideoClient,
) -> ClipResult:
    """Probe the stored file and record the scene's clip, done or failed."""
    if outcome is None:
        error = item.error or "not generated"
        _record_failure(ctx, item, error, client.backend)
        return ClipResult(item.key, None, error)
    if outcome.status != "done" or outcome.result_url is None:
        error = outcome.error or "generation failed"
        _record_failure(ctx, item, error, client.backend, outcome)
        return ClipResult(item.key, outcome, error)
    try:  # the file on disk is what final_cut joins, so probe it, not the bytes
        path = ctx.media.path(outcome.result_url)
        probe = probe_mp4(path)
    except ValueError as exc:  # MediaError included
        error = f"the video returned for scene {item.key} is not a valid mp4: {exc}"
        if not client.is_preview:
            error += (
                " (billed; a rerun reuses it and does not pay again; to pay for a new "
                f"one: vidpipe-dagster regenerate {slug} --scene {item.key})"
            )
        _record_failure(ctx, item, error, client.backend, outcome)
        return ClipResult(item.key, outcome, error, problems=((CHECK_VALID_MP4, error),))
    try:  # one scene's trouble must not cost the others their (paid) materialization
        return _record_success(ctx, ledger, item, outcome, client.backend, path, probe)
    except Exception as exc:
        error = f"recording the clip failed: {type(exc).__name__}: {exc}"
        ctx.log.warning(f"scene {item.key}: {error}")
        return ClipResult(item.key, outcome, error)


def scene_inputs(ctx: StageContext, slug: str, key: str, options: ClipOptions) -> SceneInputs:
    """Read the scene's prompt, keyframes and chosen references and shape its request."""
    index = int(key)
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        scene = queries.scene_of(session, project, index)
        try:
            frames = {
                k.position: _image(ctx, k.image_url, f"scene {index} {k.position} keyframe")
                for k in scene.keyframes
            }
            references = _references(ctx, session, project, index)
        except (MediaError, LookupError) as exc:
            return SceneInputs(key, scene.id, None, str(exc))
        common: dict[str, Any] = {
            "model": project.video_model,
            "prompt": scene.prompt,
            "target_duration": project.target_clip_duration,
            "aspect_ratio": project.aspect_ratio,
            "first_frame": frames.get("start"),
            "last_frame": frames.get("end"),
            "generate_audio": options.generate_audio,
        }
        try:
            request = build_video_request(
                **common, references=references, policy=options.conditioning_policy
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
            ClipJob(key, slug, request, fallback),
            target_duration=project.target_clip_duration,
        )


def _image(ctx: StageContext, rel: str | None, label: str) -> ImageInput:
    if not rel:
        raise MediaError(f"{label}: no image recorded")
    data = read_image_bytes(ctx.media.path(rel), label=label)
    return image_input(data, image_mime_type(data), label)


def _references(
    ctx: StageContext, session: Any, project: Project, index: int
) -> list[tuple[str, ImageInput]]:
    """The persisted selection, each with its primary clean sheet or else its original."""
    if project.manifest is None:
        return []
    scene_manifest = queries.scene_manifest(session, project.id, index)
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
        chosen = queries.chosen_reference(session, asset)
        label = f"reference {chosen.tag} (asset {chosen.asset_key!r}, {chosen.source})"
        refs.append((chosen.tag, _image(ctx, chosen.image_url, label)))
    return refs


def _record_failure(
    ctx: StageContext,
    item: SceneInputs,
    error: str,
    backend: str,
    outcome: ClipOutcome | None = None,
) -> None:
    """A failed scene keeps its previous file (already paid for); only status and error change."""
    with ctx.database.session() as session:
        clip = queries.clip_row(session, item.scene_id)
        clip.status = "failed"
        clip.error = error
        clip.backend = backend
        if outcome is not None:
            clip.remediation_level = outcome.remediation_level
            clip.operation_name = outcome.operation_name
            clip.attempts = outcome.attempts


def _record_success(
    ctx: StageContext,
    ledger: Ledger,
    item: SceneInputs,
    outcome: ClipOutcome,
    backend: str,
    path: Path,
    probe: Mp4Info,
) -> ClipResult:
    """Record a clip whose stored file probed as a valid mp4. A reused clip keeps what it cost
    and how many submissions it took: the run paid nothing, but the clip was paid for once."""
    request = outcome.request
    billed = _billed_cost(ledger, request.fingerprint, backend)
    cost = outcome.cost_usd or (billed or 0.0)
    with ctx.database.session() as session:
        clip = queries.clip_row(session, item.scene_id)
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
    return ClipResult(
        item.key,
        outcome,
        path=path,
        duration_seconds=probe.duration_seconds,
        cost_usd=cost,
        billed_usd=billed,
        attempts=attempts,
        problems=tuple(request_problems(request, probe.duration_seconds)),
    )


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


def request_problems(request: VideoRequest, duration_seconds: float) -> list[tuple[str, str]]:
    """What is wrong with a finished clip against its request and the model's rules."""
    problems = []
    if abs(duration_seconds - request.duration_seconds) > 0.25:
        problems.append(
            (
                CHECK_VALID_MP4,
                f"duration {duration_seconds:.2f} s, requested {request.duration_seconds} s",
            )
        )
    for kind, problem in request_rule_problems(request):  # the model catalog's rules
        problems.append((CHECK_VALID_MP4 if kind == "duration" else CHECK_REQUEST_LEGAL, problem))
    return problems


def run_checks(run: ClipRun) -> list[CheckOutcome]:
    """The cheap checks over this run's scenes (the ledger read-back is ``billed_check``)."""
    problems: dict[str, list[str]] = {CHECK_VALID_MP4: [], CHECK_REQUEST_LEGAL: []}
    for result in run.results:
        for name, problem in result.problems:
            problems[name].append(f"scene {result.key}: {problem}")
    done = run.done
    cost_problems = {
        r.key: problem
        for r in done
        if (problem := cost_problem(r.cost_usd, preview=run.preview, billed_usd=r.billed_usd))
    }
    spent = sum(r.outcome.cost_usd for r in done if r.outcome is not None)
    return [
        CheckOutcome(
            CHECK_VALID_MP4,
            passed=not problems[CHECK_VALID_MP4],
            metadata={
                "problems": problems[CHECK_VALID_MP4],
                "durations": {r.key: r.duration_seconds for r in done},
            },
        ),
        CheckOutcome(
            CHECK_REQUEST_LEGAL,
            passed=not problems[CHECK_REQUEST_LEGAL],
            metadata={"problems": problems[CHECK_REQUEST_LEGAL]},
        ),
        CheckOutcome(
            CHECK_COST,
            passed=not cost_problems,
            metadata={
                "problems": [f"scene {k}: {p}" for k, p in sorted(cost_problems.items())],
                "cost_usd": {r.key: r.cost_usd for r in done},
                "total_cost_usd": round(sum(r.cost_usd for r in done), 4),
                "spent_this_run_usd": round(spent, 4),
            },
        ),
    ]


@dataclass(frozen=True)
class SceneNeed:
    key: str
    reason: str  # missing | failed | stale (inputs changed) | references out of date
    estimate_usd: float


def scenes_needing_clips(
    ctx: StageContext, slug: str, scene_keys: Sequence[str], video_model: str, options: ClipOptions
) -> tuple[list[SceneNeed], dict[str, str]]:
    """Scenes whose clip is missing, failed, or made from inputs that have since changed (a new
    clean sheet, an edited prompt or keyframe): compared by request fingerprint. Also returns the
    scenes that need a person (e.g. a vanished file), which no run can fix."""
    client = ctx.backends.video_client()
    ledger = Ledger(ctx.database.sessionmaker())
    with ctx.database.session() as session:
        clips = queries.clip_states(session, slug)
    needs: list[SceneNeed] = []
    blocked: dict[str, str] = {}
    for key in scene_keys:
        status, fingerprint = clips.get(key, (None, None))
        item = scene_inputs(ctx, slug, key, options)
        if item.job is None:
            if item.error and "scene_references" in item.error:  # selection is out of date
                estimate = (
                    0.0
                    if client.is_preview
                    else estimate_cost_usd(video_model, 8, True, options.prices)
                )
                needs.append(SceneNeed(key, "references out of date", estimate))
            else:
                blocked[key] = item.error or "cannot build the request"
            continue
        ladder = [r.fingerprint for r in request_ladder(item.job)]
        if status == "done" and fingerprint in ladder:
            continue  # made from this request, or from its remediated / frames-fallback form
        if ledger.outcome_unknown(ladder, client.backend):
            blocked[key] = (
                "its last request may have reached Veo and been billed (outcome unknown); "
                "check billing, then materialize it by hand (that submits once more)"
            )
            continue
        reason = {None: "missing", "failed": "failed"}.get(status, "stale (inputs changed)")
        [(_, estimate)] = estimate_new_spend([item.job], client, ledger, options.prices)
        needs.append(SceneNeed(key, reason, estimate))
    return needs, blocked


def billed_check(ctx: StageContext, slug: str, keys: Sequence[str] | None) -> CheckOutcome:
    """Read back: the ledger shows at most one billed generation per done scene clip (over the
    request and its remediated or frames-fallback forms)."""
    with ctx.database.session() as session:
        states = queries.clip_states(session, slug)
    clips = {
        key: fingerprint
        for key, (status, fingerprint) in states.items()
        if status == "done" and fingerprint and (keys is None or key in keys)
    }
    billed = Ledger(ctx.database.sessionmaker()).billed_per_clip(slug, clips)
    over = {f"scene {key}": n for key, n in sorted(billed.items()) if n > 1}
    return CheckOutcome(
        CHECK_ONE_BILLED,
        passed=not over,
        metadata={"billed_per_scene": over or "all <= 1"},
    )
