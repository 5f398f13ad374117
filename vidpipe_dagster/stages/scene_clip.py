"""One generated clip per scene, many scenes concurrently, never paid for twice.

Read the scene (prompt, keyframes, chosen references) → shape its request
(``domain.video_requests``: the conditioning mode and the 8 s forced with references) → check the
budget (``generation.budgets``) → generate through the spend-safe engine (``generation.clips``:
reuse a done request, resume one in flight, submit only what no ledger row covers) → probe the
stored file and record the clip. One scene's failure never hides the others'.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vidpipe_dagster.db import queries
from vidpipe_dagster.db.ledger import Ledger
from vidpipe_dagster.db.models import Project
from vidpipe_dagster.domain.budget import start_of_today_utc
from vidpipe_dagster.domain.media import MediaError, image_mime_type, read_image_bytes
from vidpipe_dagster.domain.preview import PREVIEW_LABEL
from vidpipe_dagster.domain.reference_selection import ChosenReference
from vidpipe_dagster.domain.render import Mp4Info, probe_mp4
from vidpipe_dagster.domain.spend import LedgerUnavailable
from vidpipe_dagster.domain.video_requests import (
    ImageInput,
    VideoRequest,
    build_video_request,
    image_input,
)
from vidpipe_dagster.generation.budgets import plan_clip_spend
from vidpipe_dagster.generation.client import VideoClient
from vidpipe_dagster.generation.clips import (
    ClipJob,
    ClipOutcome,
    Limits,
    generate_clips,
    settle_jobs,
)
from vidpipe_dagster.stages.context import StageContext, StageError

Policy = Literal["auto", "frames", "references", "hybrid"]
# What shapes a clip's request (mode, duration, references, remediation): bump it when the same
# inputs would now give another request (tests/test_code_versions.py fails until you do).
CODE_VERSION = "request-2"


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
    # each reference offered to the request, with the image it sends (sha256 -> reference)
    references: tuple[tuple[str, ChosenReference], ...] = ()

    def sent_references(self, request: VideoRequest) -> list[ChosenReference]:
        """The references the request really sends (duplicates and extras are dropped)."""
        offered = dict(self.references)
        return [
            offered[image.sha256] for image in request.reference_images if image.sha256 in offered
        ]

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
    references: tuple[ChosenReference, ...] = ()  # what the request sent, in order

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


def iter_clips(
    ctx: StageContext,
    slug: str,
    keys: Sequence[str],
    options: ClipOptions,
    *,
    run_id: str | None = None,
) -> Iterator[ClipResult]:
    """Each scene's result as soon as it is settled (recorded in the database), while the other
    scenes are still generating; scenes whose inputs cannot form a request come first. Raises
    ``StageError`` before any paid call when the run does not fit the budget."""
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
    try:  # a clips folder that escapes the media root is found before anything is paid for
        clips_folder = ctx.media.prepare_folder(f"projects/{slug}/clips")
    except MediaError as exc:
        raise StageError(f"{exc}; nothing was submitted") from exc
    ledger = ctx.ledger()
    try:
        replayed = ledger.replay_journal()  # writes a faltering database left behind, first
        for line in replayed:
            ctx.log.warning(f"ledger journal: {line}")
        # one ledger lookup for every scene, shared by the budget and the engine
        settled = settle_jobs(jobs, ledger, client.backend, ctx.catalog)
        plan = plan_clip_spend(
            jobs, client, ledger, ctx.budget, options.prices, ctx.catalog, settled=settled
        )
    except LedgerUnavailable as exc:
        raise StageError(f"{exc}; nothing was submitted, rerun once the database answers") from exc
    ctx.log.info(f"spend: {plan.message}")
    if not plan.fits:
        raise StageError(
            f"over budget, nothing was submitted: {plan.message}. Materialize fewer scenes, or "
            "raise VIDPIPE_BUDGET_PER_RUN_USD / VIDPIPE_BUDGET_PER_DAY_USD.",
            metadata={"estimate_usd": plan.requested_usd, "available_usd": plan.allowance_usd},
        )
    for item in inputs:
        if item.job is None:
            yield _settle(ctx, ledger, slug, item, None, client)
    if not jobs:
        return
    by_key = {item.key: item for item in inputs}
    finished: queue.Queue[ClipResult | BaseException | None] = queue.Queue()

    def store(fingerprint: str, downloaded: Path) -> str:
        rel = f"projects/{slug}/clips/{fingerprint[:24]}.mp4"
        ctx.media.write_from(rel, downloaded)  # staged in the same folder: a rename
        return rel

    def on_done(outcome: ClipOutcome) -> None:
        try:
            result = _settle(ctx, ledger, slug, by_key[outcome.key], outcome, client)
        except Exception as exc:  # the database went away: report the scene, never hang
            result = ClipResult(outcome.key, outcome, f"recording failed: {exc!r}")
        finished.put(result)

    def engine() -> None:
        try:
            asyncio.run(
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
                    store_result=store,
                    result_exists=ctx.media.exists,
                    staging_dir=clips_folder,
                    price_table=options.prices,
                    poll_interval=0.05 if client.is_preview else options.poll_interval_seconds,
                    on_event=lambda k, message: ctx.log.info(f"scene {k}: {message}"),
                    day_budget=(start_of_today_utc(), ctx.budget.per_day_usd),
                    row_details={"run_id": run_id} if run_id else None,
                    catalog=ctx.catalog,
                    on_done=on_done,
                    settled=settled,
                )
            )
        except BaseException as exc:  # handed to the caller's thread below
            finished.put(exc)
        finally:
            finished.put(None)  # the engine is done: every job has settled or failed

    worker = threading.Thread(target=engine, name=f"clips-{slug}", daemon=True)
    worker.start()
    pending = {job.key for job in jobs}
    while (result := finished.get()) is not None:
        if isinstance(result, BaseException):
            raise result
        pending.discard(result.key)
        yield result
    worker.join()
    for key in sorted(pending):  # cannot happen unless the engine lost a job: say so
        yield ClipResult(key, None, "the clip engine ended without an outcome for this scene")


def make_clips(
    ctx: StageContext,
    slug: str,
    keys: Sequence[str],
    options: ClipOptions,
    *,
    run_id: str | None = None,
) -> ClipRun:
    """All scenes' results at once (tests and benches); ``iter_clips`` streams them."""
    backend = ctx.backends.video_client()
    results = list(iter_clips(ctx, slug, keys, options, run_id=run_id))
    order = {key: i for i, key in enumerate(keys)}
    results.sort(key=lambda r: order[r.key])
    return ClipRun(list(keys), backend.backend, backend.is_preview, results)


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
        return ClipResult(item.key, outcome, error)
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
            offered = _references(ctx, session, project, index)
        except (MediaError, LookupError) as exc:
            return SceneInputs(key, scene.id, None, str(exc))
        common = request_arguments(
            ctx, project, scene, frames.get("start"), frames.get("end"), options
        )
        try:
            request = build_video_request(
                **common,
                references=[(tag, image) for tag, image, _ in offered],
                policy=options.conditioning_policy,
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
            references=tuple((image.sha256, chosen) for _, image, chosen in offered),
        )


def request_arguments(
    ctx: StageContext,
    project: Project,
    scene: Any,
    first_frame: ImageInput | None,
    last_frame: ImageInput | None,
    options: ClipOptions,
) -> dict[str, Any]:
    """What ``build_video_request`` takes from a scene besides its references: the one place a
    scene's rows become a request (the schedule shapes its comparison with it too)."""
    return {
        "model": scene.video_model or project.video_model,
        "prompt": scene.prompt,
        "target_duration": project.target_clip_duration,
        "aspect_ratio": project.aspect_ratio,
        "first_frame": first_frame,
        "last_frame": last_frame,
        "generate_audio": options.generate_audio,
        "resolution": project.resolution,
        "takes": project.takes,
        "catalog": ctx.catalog,
    }


def _image(ctx: StageContext, rel: str | None, label: str) -> ImageInput:
    if not rel:
        raise MediaError(f"{label}: no image recorded")
    data = read_image_bytes(ctx.media.path(rel), label=label)
    return image_input(data, image_mime_type(data), label)


def _references(
    ctx: StageContext, session: Any, project: Project, index: int
) -> list[tuple[str, ImageInput, ChosenReference]]:
    """The persisted selection, each with its primary clean sheet or else its original."""
    picks = queries.current_selection(session, project, index)
    if project.manifest is None or picks is None:
        return []
    persisted = queries.scene_manifest(session, project.id, index)
    if persisted is None or persisted.selected_reference_tags is None:
        raise LookupError(
            f"scene {index}: references were never selected; materialize "
            f"{project.slug}/scene_references for this scene first"
        )
    if [a.manifest_tag for a in picks] != persisted.selected_reference_tags:
        raise LookupError(
            f"scene {index}: the manifest changed since references were selected; "
            "materialize scene_references again"
        )
    refs = []
    for asset in picks:
        chosen = queries.chosen_reference(session, asset)
        label = f"reference {chosen.tag} (asset {chosen.asset_key!r}, {chosen.source})"
        refs.append((chosen.tag, _image(ctx, chosen.image_url, label), chosen))
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
        references=tuple(item.sent_references(request)),
    )


def _billed_cost(ledger: Ledger, fingerprint: str, backend: str) -> float | None:
    """What the ledger billed for the request's finished generation; None if it has none."""
    entry = ledger.find_reusable(fingerprint, backend)
    if entry is None or entry.state != "done" or not entry.billed:
        return None
    return entry.cost_usd
