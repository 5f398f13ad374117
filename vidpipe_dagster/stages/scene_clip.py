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

from sqlalchemy import update

from vidpipe_dagster.db import queries
from vidpipe_dagster.db.ledger import Ledger
from vidpipe_dagster.db.models import (
    Asset,
    AssetCleanReference,
    Keyframe,
    Project,
    Scene,
    SceneManifest,
    VideoClip,
)
from vidpipe_dagster.domain.budget import start_of_today_utc
from vidpipe_dagster.domain.clip_identity import ClipIdentity
from vidpipe_dagster.domain.media import (
    CheckedImage,
    MediaError,
    read_image,
)
from vidpipe_dagster.domain.preview import PREVIEW_LABEL
from vidpipe_dagster.domain.reference_selection import ChosenReference
from vidpipe_dagster.domain.render import Mp4Info, probe_mp4
from vidpipe_dagster.domain.spend import LedgerUnavailable
from vidpipe_dagster.domain.takes import TakeScore, choose_take, first_take, only_take
from vidpipe_dagster.domain.video_requests import (
    ImageInput,
    VideoRequest,
    build_video_request,
)
from vidpipe_dagster.generation.budgets import plan_clip_spend
from vidpipe_dagster.generation.client import VideoClient
from vidpipe_dagster.generation.clips import (
    ClipJob,
    ClipOutcome,
    Limits,
    Settled,
    generate_clips,
    settle_jobs,
)
from vidpipe_dagster.stages.clip_identity import save_take_identity, score_takes
from vidpipe_dagster.stages.context import StageContext, StageError

Policy = Literal["auto", "frames", "references", "hybrid"]
# What shapes a clip's request (mode, duration, references, remediation): bump it when the same
# inputs would now give another request (tests/test_code_versions.py fails until you do).
CODE_VERSION = "request-2"
REUSED = "reused finished clip"  # how the engine reports a reused clip (one summary line)


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


# The clip row's columns ``_record_success``/``_record_failure`` write.
RECORDED = (
    "status",
    "backend",
    "file_url",
    "duration_seconds",
    "conditioning_mode",
    "conditioning_reason",
    "remediation_level",
    "operation_name",
    "fingerprint",
    "reference_tags",
    "cost_usd",
    "attempts",
    "take_urls",
    "chosen_take",
    "take_choice",
    "cached",
    "error",
)


@dataclass(frozen=True)
class StoredClip:
    """A scene's clip row as read once for the whole run: recording a scene compares against
    it and writes only what changed (a cached rerun writes nothing), by id, without a re-read."""

    id: uuid.UUID
    values: Mapping[str, Any]  # RECORDED column -> value

    @classmethod
    def of(cls, clip: VideoClip | None) -> StoredClip | None:
        return None if clip is None else cls(clip.id, {c: getattr(clip, c) for c in RECORDED})


@dataclass(frozen=True)
class SceneInputs:
    key: str
    scene_id: uuid.UUID
    job: ClipJob | None
    error: str | None = None
    target_duration: int | None = None  # the project's; references may force another
    # each reference offered to the request, with the image it sends (sha256 -> reference)
    references: tuple[tuple[str, ChosenReference], ...] = ()
    stored: StoredClip | None = None  # the scene's clip row as the run found it (None: no row)

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
    file_url: str | None = None  # the chosen take's stored file (what every reader uses)
    take_urls: tuple[str, ...] = ()  # every take's stored file, in the API's order
    chosen_take: int = 1  # 1-based
    take_choice: str | None = None  # why that take, one line
    take_scores: tuple[TakeScore, ...] = ()  # each take's identity, when scored by this run
    # billed requests over the clip's request ladder, when known without asking the ledger
    # again (read for the whole run before it, for a scene this run sent nothing for)
    billed_requests: int | None = None

    @property
    def done(self) -> bool:
        return self.error is None and self.outcome is not None

    @property
    def data_version(self) -> str:
        """What Dagster versions the clip by: its request, and its take when not the first (a
        person choosing another take gives a new version, so the final cut becomes stale)."""
        assert self.outcome is not None
        version = self.outcome.request.fingerprint[:24]
        return version if self.chosen_take <= 1 else f"{version}-take{self.chosen_take}"


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


BATCH = 100  # scenes reported together at most (a cached rerun settles all of them at once)
SettledItem = ClipResult | BaseException | None  # a scene, the engine's error, or its end


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
    for batch in iter_clip_batches(ctx, slug, keys, options, run_id=run_id):
        yield from batch


def iter_clip_batches(
    ctx: StageContext,
    slug: str,
    keys: Sequence[str],
    options: ClipOptions,
    *,
    run_id: str | None = None,
    most: int = BATCH,
) -> Iterator[list[ClipResult]]:
    """``iter_clips`` by batch: each batch holds the scenes already settled when the caller asks
    for the next (at most ``most``), so scenes that finished together are reported together (one
    lookup for their checks' targets instead of one per scene). Never waits to fill a batch."""
    client = ctx.backends.video_client()
    ctx.log.info(
        f"{len(keys)} scene(s) with backend {client.backend}"
        + (f" ({PREVIEW_LABEL})" if client.is_preview else "")
    )
    inputs = scenes_inputs(ctx, slug, keys, options)
    jobs = [i.job for i in inputs if i.job is not None]
    _log_forced_durations(ctx, inputs)
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
    unformed = [
        _settle(ctx, ledger, slug, item, None, client) for item in inputs if item.job is None
    ]
    for start in range(0, len(unformed), most):
        yield unformed[start : start + most]
    if not jobs:
        return
    known = _known_billing(ledger, slug, settled)
    by_key = {item.key: item for item in inputs}
    finished: queue.Queue[SettledItem] = queue.Queue()

    def store(fingerprint: str, downloaded: Path) -> str:
        rel = f"projects/{slug}/clips/{fingerprint[:24]}.mp4"
        ctx.media.write_from(rel, downloaded)  # staged in the same folder: a rename
        return rel

    def on_done(outcome: ClipOutcome) -> None:
        try:
            result = _settle(ctx, ledger, slug, by_key[outcome.key], outcome, client, known)
        except Exception as exc:  # the database went away: report the scene, never hang
            result = ClipResult(outcome.key, outcome, f"recording failed: {exc!r}")
        finished.put(result)

    reused: list[str] = []

    def log_event(key: str, message: str) -> None:
        """The engine's news per scene, except reuse: a log line is an event in Dagster's log
        (about 10-20 ms each on SQLite), so the reused scenes share one line at the end (each
        scene's materialization names its file and says ``cached``)."""
        if message.startswith(REUSED):
            reused.append(key)
        else:
            ctx.log.info(f"scene {key}: {message}")

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
                    on_event=log_event,
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
    ended = False
    while not ended:
        batch, ended, error = settled_batch(finished, most)
        pending.difference_update(result.key for result in batch)
        if batch:
            yield batch
        if error is not None:
            raise error
    worker.join()
    if reused:
        ctx.log.info(
            f"{len(reused)} scene(s) reused their finished clips (no API call): "
            + ", ".join(sorted(reused, key=lambda k: (len(k), k)))
        )
    lost = "the clip engine ended without an outcome for this scene"
    if pending:  # cannot happen unless the engine lost a job: say so
        yield [ClipResult(key, None, lost) for key in sorted(pending)]


def settled_batch(
    finished: queue.Queue[SettledItem], most: int
) -> tuple[list[ClipResult], bool, BaseException | None]:
    """Wait for the next settled scene, then take every other one already settled (at most
    ``most`` in all). Returns them, whether the engine has ended, and its error if it raised."""
    batch: list[ClipResult] = []
    item = finished.get()
    while item is not None and not isinstance(item, BaseException):
        batch.append(item)
        if len(batch) >= most:
            return batch, False, None
        try:
            item = finished.get_nowait()
        except queue.Empty:
            return batch, False, None
    return batch, True, item


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
    known: KnownBilling | None = None,
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
        return _record_success(ctx, ledger, item, outcome, client.backend, path, probe, known)
    except Exception as exc:
        error = f"recording the clip failed: {type(exc).__name__}: {exc}"
        ctx.log.warning(f"scene {item.key}: {error}")
        return ClipResult(item.key, outcome, error)


def scene_inputs(ctx: StageContext, slug: str, key: str, options: ClipOptions) -> SceneInputs:
    """One scene's inputs (``scenes_inputs`` for one key)."""
    return scenes_inputs(ctx, slug, [key], options)[0]


def scenes_inputs(
    ctx: StageContext, slug: str, keys: Sequence[str], options: ClipOptions
) -> list[SceneInputs]:
    """Read the scenes' prompts, keyframes and chosen references and shape their requests.

    A fixed number of queries for the whole run (project, scenes with their clip rows,
    keyframes, selections, primary clean sheets), and each image read once: a keyframe whose
    bytes still hash to the ``content_sha256`` recorded when it was imported (and decoded) is
    not decoded again; a reference shared by many scenes is read once."""
    images = _Images(ctx)
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        indexes = [int(key) for key in keys]
        rows = {
            scene.scene_index: (scene, clip)
            for scene, clip in queries.scenes_with_clips(session, project.id, indexes)
        }
        for index in indexes:
            if index not in rows:  # raises NotFound naming the project's scenes
                queries.scene_of(session, project, index)
        frames = queries.keyframes_of_project(session, project.id, indexes)
        selections = queries.current_selections(session, project, indexes)
        primaries = queries.primary_clean_sheets(session, project.manifest_id)
        return [
            _scene_inputs(
                ctx,
                project,
                key,
                *rows[int(key)],
                frames.get(int(key), {}),
                selections[int(key)],
                primaries,
                images,
                options,
            )
            for key in keys
        ]


def _scene_inputs(
    ctx: StageContext,
    project: Project,
    key: str,
    scene: Scene,
    clip: VideoClip | None,
    keyframes: Mapping[str, Keyframe],
    selection: tuple[list[Asset] | None, SceneManifest | None],
    primaries: Mapping[uuid.UUID, AssetCleanReference],
    images: _Images,
    options: ClipOptions,
) -> SceneInputs:
    index = scene.scene_index
    stored = StoredClip.of(clip)
    try:
        frames = {
            k.position: images.get(
                k.image_url, f"scene {index} {k.position} keyframe", k.content_sha256 or None
            )
            for k in keyframes.values()
        }
        offered = _references(project, index, selection, primaries, images)
    except (MediaError, LookupError) as exc:
        return SceneInputs(key, scene.id, None, str(exc), stored=stored)
    common = request_arguments(ctx, project, scene, frames.get("start"), frames.get("end"), options)
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
        return SceneInputs(key, scene.id, None, f"cannot shape the request: {exc}", stored=stored)
    return SceneInputs(
        key,
        scene.id,
        ClipJob(key, project.slug, request, fallback),
        target_duration=project.target_clip_duration,
        references=tuple((image.sha256, chosen) for _, image, chosen in offered),
        stored=stored,
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


class _Images:
    """Each image file read (and, unless its recorded hash vouches for it, decoded) once per
    run: the same few references appear in many scenes."""

    def __init__(self, ctx: StageContext) -> None:
        self._ctx = ctx
        self._seen: dict[tuple[str, str, str | None], CheckedImage | MediaError] = {}

    def get(self, rel: str | None, label: str, known_sha256: str | None = None) -> ImageInput:
        if not rel:
            raise MediaError(f"{label}: no image recorded")
        found = self._seen.get((rel, label, known_sha256))
        if found is None:
            try:
                path = self._ctx.media.path(rel)
                found = read_image(path, label=label, known_sha256=known_sha256)
            except MediaError as exc:
                found = exc
            self._seen[(rel, label, known_sha256)] = found
        if isinstance(found, MediaError):
            raise found
        return ImageInput(found.data, found.mime_type, found.sha256, label)


def _references(
    project: Project,
    index: int,
    selection: tuple[list[Asset] | None, SceneManifest | None],
    primaries: Mapping[uuid.UUID, AssetCleanReference],
    images: _Images,
) -> list[tuple[str, ImageInput, ChosenReference]]:
    """The persisted selection, each with its primary clean sheet or else its original."""
    picks, persisted = selection
    if project.manifest is None or picks is None:
        return []
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
        clean = primaries.get(asset.id)
        chosen = queries.reference_of(asset, clean)
        label = f"reference {chosen.tag} (asset {chosen.asset_key!r}, {chosen.source})"
        # an original is vouched for by the hash recorded when it was imported; a clean sheet
        # has no recorded hash (its row keeps its ten columns) and is decoded once per run
        known = asset.original_sha256 if clean is None else None
        refs.append((chosen.tag, images.get(chosen.image_url, label, known or None), chosen))
    return refs


def _log_forced_durations(ctx: StageContext, inputs: Sequence[SceneInputs]) -> None:
    """One log line per distinct reason, naming its scenes: a line per scene is an event per
    scene in Dagster's event log (about 10 ms each on SQLite)."""
    scenes_of: dict[str, list[str]] = {}
    for item in inputs:
        if note := item.forced_duration:
            scenes_of.setdefault(note, []).append(item.key)
    for note, keys in scenes_of.items():
        ctx.log.info(f"scene{'s' if len(keys) > 1 else ''} {', '.join(keys)}: {note}")


@dataclass(frozen=True)
class KnownBilling:
    """What the ledger said before the engine ran, for the rung each scene's clip will be reused
    from: the cost of its ``done`` row (the run's one lookup, ``settle_jobs``) and its billed
    requests over the ladder (one more query). Valid for a scene whose outcome is that rung and
    that sent nothing this run (a reused clip); any other scene asks the ledger after it settles."""

    fingerprints: Mapping[str, str]  # scene key -> the fingerprint of its finished rung
    billed_requests: Mapping[str, int]  # scene key -> count
    billed_usd: Mapping[str, float | None]  # fingerprint -> cost (None: not billed)

    def applies(self, key: str, outcome: ClipOutcome) -> bool:
        return outcome.api_calls == 0 and self.fingerprints.get(key) == outcome.request.fingerprint


def _known_billing(
    ledger: Ledger, slug: str, settled: Mapping[str, Settled | None]
) -> KnownBilling:
    done = {k: s for k, s in settled.items() if s is not None and s.entry.state == "done"}
    fingerprints = {key: s.request.fingerprint for key, s in done.items()}
    return KnownBilling(
        fingerprints,
        ledger.billed_per_clip(slug, fingerprints),
        {
            s.request.fingerprint: (s.entry.cost_usd if s.entry.billed else None)
            for s in done.values()
        },
    )


def _write_clip(ctx: StageContext, item: SceneInputs, values: Mapping[str, Any]) -> None:
    """Write what changed since the run read the row (nothing for a cached rerun), by id."""
    stored = item.stored
    if stored is not None:
        changed = {c: v for c, v in values.items() if stored.values.get(c) != v}
        if changed:
            with ctx.database.session() as session:
                session.execute(update(VideoClip).where(VideoClip.id == stored.id).values(changed))
        return
    with ctx.database.session() as session:
        clip = queries.clip_row(session, item.scene_id)
        for column, value in values.items():
            setattr(clip, column, value)


def _record_failure(
    ctx: StageContext,
    item: SceneInputs,
    error: str,
    backend: str,
    outcome: ClipOutcome | None = None,
) -> None:
    """A failed scene keeps its previous file (already paid for); only status and error change."""
    values: dict[str, Any] = {"status": "failed", "error": error, "backend": backend}
    if outcome is not None:
        values["remediation_level"] = outcome.remediation_level
        values["operation_name"] = outcome.operation_name
        values["attempts"] = outcome.attempts
    _write_clip(ctx, item, values)


def _record_success(
    ctx: StageContext,
    ledger: Ledger,
    item: SceneInputs,
    outcome: ClipOutcome,
    backend: str,
    path: Path,
    probe: Mp4Info,
    known: KnownBilling | None = None,
) -> ClipResult:
    """Record a clip whose stored file probed as a valid mp4. A reused clip keeps what it cost
    and how many submissions it took: the run paid nothing, but the clip was paid for once."""
    request = outcome.request
    take = _choose_take(ctx, item, outcome)
    if take.url != outcome.result_url:  # the chosen take is the clip every reader uses
        path = ctx.media.path(take.url)
        probe = probe_mp4(path)
    if known is not None and known.applies(item.key, outcome):
        billed = known.billed_usd.get(request.fingerprint)
        billed_requests: int | None = known.billed_requests.get(item.key)
    else:
        billed = _billed_cost(ledger, request.fingerprint, backend)
        billed_requests = None
    cost = outcome.cost_usd or (billed or 0.0)
    attempts = outcome.attempts
    if not attempts:  # reused or resumed: the submissions were made by an earlier run
        before = item.stored.values if item.stored is not None else {}
        same = before.get("fingerprint") == request.fingerprint and before.get("status") == "done"
        attempts = (before.get("attempts") if same else 0) or ledger.billed_count(
            request.fingerprint, backend
        )
    _write_clip(
        ctx,
        item,
        {
            "status": "done",
            "backend": backend,
            "file_url": take.url,
            "take_urls": list(take.urls),
            "chosen_take": take.take,
            "take_choice": take.reason,
            "duration_seconds": probe.duration_seconds,
            "conditioning_mode": request.conditioning_mode,
            "conditioning_reason": request.conditioning_reason,
            "remediation_level": outcome.remediation_level,
            "operation_name": outcome.operation_name,
            "fingerprint": request.fingerprint,
            "reference_tags": list(request.reference_tags),
            "cost_usd": cost,
            "attempts": attempts,
            "cached": outcome.cached,
            "error": None,
        },
    )
    if take.identity is not None and item.job is not None:
        try:  # the chosen take's scores are the clip's: the clip step reuses them
            save_take_identity(ctx, item.job.project_slug, int(item.key), take.take, take.identity)
        except Exception as exc:  # a local convenience beside a paid clip: it is scored later
            ctx.log.warning(f"scene {item.key}: the chosen take's scores were not stored: {exc}")
    return ClipResult(
        item.key,
        outcome,
        path=path,
        duration_seconds=probe.duration_seconds,
        cost_usd=cost,
        billed_usd=billed,
        attempts=attempts,
        references=tuple(item.sent_references(request)),
        file_url=take.url,
        take_urls=take.urls,
        chosen_take=take.take,
        take_choice=take.reason,
        take_scores=take.scores,
        billed_requests=billed_requests,
    )


@dataclass(frozen=True)
class _Take:
    """The take a scene's clip uses, every take's file, and why that one."""

    take: int  # 1-based
    urls: tuple[str, ...]
    reason: str
    scores: tuple[TakeScore, ...] = ()  # each take's identity, when scored now
    identity: ClipIdentity | None = None  # the chosen take's, to store as the clip's

    @property
    def url(self) -> str:
        return self.urls[self.take - 1]


def _choose_take(ctx: StageContext, item: SceneInputs, outcome: ClipOutcome) -> _Take:
    """One take: nothing to choose. Several: the stored choice while the clip is the same
    generation (same request, operation and files: a person's pick is never overridden), else
    the take whose characters score best (``domain.takes``), each take scored once. Scoring is
    a local convenience: if it fails, the first take is used and the reason says why."""
    urls = tuple(outcome.take_urls) or ((outcome.result_url,) if outcome.result_url else ())
    if len(urls) <= 1:
        return _Take(1, urls, only_take().reason)
    row = item.stored.values if item.stored is not None else {}  # as the run read it (no row: {})
    reason, chosen = row.get("take_choice"), row.get("chosen_take")
    same = (
        row.get("fingerprint") == outcome.request.fingerprint
        and row.get("operation_name") == outcome.operation_name
        and list(row.get("take_urls") or []) == list(urls)
    )
    if reason and same and chosen is not None and 1 <= chosen <= len(urls):
        ctx.log.info(f"scene {item.key}: keeping {reason}")
        return _Take(chosen, urls, reason)
    try:
        slug = item.job.project_slug if item.job is not None else ""
        scored = score_takes(ctx, slug, int(item.key), urls, len(outcome.request.reference_images))
    except Exception as exc:  # never fail a paid clip because scoring did not work
        problem = " ".join(str(exc).split()) or type(exc).__name__
        choice = first_take(len(urls), f"scoring the takes failed: {problem}")
        ctx.log.warning(f"scene {item.key}: {choice.reason}")
        return _Take(1, urls, choice.reason)
    choice = choose_take(
        scored.scores,
        engine=scored.engine,
        metric=scored.metric,
        engine_problem=scored.engine_problem,
    )
    ctx.log.info(f"scene {item.key}: {choice.reason}")
    return _Take(
        choice.take, urls, choice.reason, scored.scores, scored.identities.get(choice.take)
    )


def _billed_cost(ledger: Ledger, fingerprint: str, backend: str) -> float | None:
    """What the ledger billed for the request's finished generation; None if it has none."""
    entry = ledger.find_reusable(fingerprint, backend)
    if entry is None or entry.state != "done" or not entry.billed:
        return None
    return entry.cost_usd
