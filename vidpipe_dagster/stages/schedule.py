"""What the nightly schedule asks of the clip stage: which scenes need a clip, at what estimate,
and which must wait for a person. Plain Python; ``automation.py`` is its Dagster face.

A tick runs every night for every project, and most scenes are up to date, so it first proves
that cheaply: the request each scene would send now is rebuilt from stored hashes (the keyframes'
``content_sha256``, the originals' ``original_sha256``, and each primary clean sheet's file hashed
once, without decoding it), in a fixed number of queries per project. The request fingerprint
identifies images by content hash only, so this is the same fingerprint the clip stage computes
(a test holds them equal). Only the scenes it cannot prove current take the full path: their
images are read and decoded as the run will, and the ledger is asked what they would cost.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vidpipe_dagster.db import queries
from vidpipe_dagster.db.media import MediaStore
from vidpipe_dagster.domain.budget import expected_cost_usd
from vidpipe_dagster.domain.media import MediaError
from vidpipe_dagster.domain.video_requests import ImageInput, VideoRequest, build_video_request
from vidpipe_dagster.generation.clips import ClipJob, estimate_new_spend, request_ladder
from vidpipe_dagster.stages.context import StageContext
from vidpipe_dagster.stages.scene_clip import ClipOptions, request_arguments, scenes_inputs


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
    scenes that need a person (e.g. a vanished file), which no run can fix.

    Scenes proven current from stored hashes (``current_scenes``) cost no image read and no query
    of their own; the others are read in full, as the run that would make them reads them."""
    current = current_scenes(ctx, slug, options)
    remaining = [key for key in scene_keys if key not in current]
    if not remaining:
        return [], {}
    client = ctx.backends.video_client()
    ledger = ctx.ledger()
    with ctx.database.session() as session:
        clips = queries.clip_states(session, slug)
    needs: list[SceneNeed] = []
    blocked: dict[str, str] = {}
    shape: tuple[str, int] | None = None  # the project's resolution and takes, read once
    for item in scenes_inputs(ctx, slug, remaining, options):  # one read for all of them
        key = item.key
        status, fingerprint = clips.get(key, (None, None))
        if item.job is None:
            if item.error and "scene_references" in item.error:  # selection is out of date
                if shape is None:
                    with ctx.database.session() as session:
                        project = queries.project_by_slug(session, slug)
                        shape = (project.resolution, project.takes)
                estimate = expected_cost_usd(
                    kind="video",
                    model=video_model,
                    backend=client.backend,
                    details=None,
                    price_table=options.prices,
                    resolution=shape[0],
                    takes=shape[1],  # every take is billed
                    catalog=ctx.catalog,
                )
                needs.append(SceneNeed(key, "references out of date", estimate))
            else:
                blocked[key] = item.error or "cannot build the request"
            continue
        ladder = [r.fingerprint for r in request_ladder(item.job, ctx.catalog)]
        if status == "done" and fingerprint in ladder:
            continue  # made from this request, or from its remediated / frames-fallback form
        if ledger.outcome_unknown(ladder, client.backend):
            blocked[key] = (
                "its last request may have reached Veo and been billed (outcome unknown); "
                "check billing, then materialize it by hand (that submits once more)"
            )
            continue
        reason = {None: "missing", "failed": "failed"}.get(status, "stale (inputs changed)")
        [(_, estimate)] = estimate_new_spend(
            [item.job], client, ledger, options.prices, ctx.catalog
        )
        needs.append(SceneNeed(key, reason, estimate))
    return needs, blocked


def current_scenes(ctx: StageContext, slug: str, options: ClipOptions) -> set[str]:
    """The scenes whose done clip was made from the request they would send now (or one of its
    remediated / frames-fallback forms), judged from stored hashes alone."""
    jobs, made_from = _read_stored(ctx, slug, options, done_only=True)
    return {
        key
        for key, job in jobs.items()
        if job is not None
        and made_from[key] in {r.fingerprint for r in request_ladder(job, ctx.catalog)}
    }


def stored_jobs(ctx: StageContext, slug: str, options: ClipOptions) -> dict[str, ClipJob | None]:
    """Each scene's clip job as ``scene_clip.scene_inputs`` would shape it, built from stored
    hashes instead of image bytes: for fingerprints only, never to be sent (the images carry no
    data). None for a scene whose request needs more than the rows say (no hash recorded, no
    selection yet, a selection out of date, an unreadable clean sheet): the full path says why."""
    return _read_stored(ctx, slug, options, done_only=False)[0]


def _read_stored(
    ctx: StageContext, slug: str, options: ClipOptions, *, done_only: bool
) -> tuple[dict[str, ClipJob | None], dict[str, str | None]]:
    """The jobs of ``stored_jobs`` and each scene's clip fingerprint, in a fixed number of
    queries for the whole project; ``done_only`` keeps the scenes with a done clip."""
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        rows = queries.scenes_with_clips(session, project.id)
        if done_only:
            rows = [(s, c) for s, c in rows if c is not None and c.status == "done"]
        if not rows:
            return {}, {}
        frames = queries.keyframes_of_project(session, project.id)
        selections = queries.current_selections(session, project, [s.scene_index for s, _ in rows])
        primaries = queries.primary_clean_sheets(session, project.manifest_id)
        jobs: dict[str, ClipJob | None] = {}
        made_from: dict[str, str | None] = {}
        for scene, clip in rows:
            key = str(scene.scene_index)
            made_from[key] = clip.fingerprint if clip is not None else None
            references = _stored_references(
                ctx.media, project, selections[scene.scene_index], primaries
            )
            positions = frames.get(scene.scene_index, {})
            keyframes = {
                p: _stored_image(f.content_sha256, f.image_url) for p, f in positions.items()
            }
            if references is None or any(image is None for image in keyframes.values()):
                jobs[key] = None
                continue
            common = request_arguments(
                ctx, project, scene, keyframes.get("start"), keyframes.get("end"), options
            )
            jobs[key] = _job(key, slug, common, references, options)
    return jobs, made_from


def _job(
    key: str,
    slug: str,
    common: dict[str, Any],
    references: list[tuple[str, ImageInput]],
    options: ClipOptions,
) -> ClipJob | None:
    """``scene_inputs``' request and frames fallback, from the same values."""
    try:
        request: VideoRequest = build_video_request(
            **common, references=references, policy=options.conditioning_policy
        )
        fallback = (
            build_video_request(**common, references=(), policy="frames")
            if request.conditioning_mode != "frames"
            else None
        )
    except ValueError:  # the full path reports it
        return None
    return ClipJob(key, slug, request, fallback)


def _stored_image(sha256: str | None, url: str | None) -> ImageInput | None:
    """An image known by its stored content hash (no bytes: used for fingerprints only)."""
    if not sha256 or not url:
        return None
    return ImageInput(data=b"", mime_type="", sha256=sha256, label=url)


def _stored_references(
    media: MediaStore,
    project: Any,
    selection: tuple[list[Any] | None, Any],
    primaries: dict[Any, Any],
) -> list[tuple[str, ImageInput]] | None:
    """The persisted selection's images, as ``scene_clip`` picks them (primary clean sheet, else
    the original); None when the rows alone cannot say (the full path explains)."""
    picks, row = selection
    if project.manifest is None or picks is None:
        return []
    if row is None or row.selected_reference_tags is None:
        return None  # never selected: the full path reports "references out of date"
    if [a.manifest_tag for a in picks] != row.selected_reference_tags:
        return None
    references = []
    for asset in picks:
        clean = primaries.get(asset.id)
        if clean is not None:
            image = _stored_image(file_sha256(media, clean.clean_image_url), clean.clean_image_url)
        else:
            image = _stored_image(asset.original_sha256, asset.reference_image_url)
        if image is None:
            return None
        references.append((asset.manifest_tag, image))
    return references


# Clean sheets are rewritten in place (``clean_sheets/tier2_<asset>.png``) and their rows store no
# hash, so the file is hashed (never decoded); keyed by what an atomic rewrite always changes.
_HASHES: dict[tuple[str, int, int, int], str] = {}
_HASHES_LOCK = threading.Lock()


def file_sha256(media: MediaStore, rel: str | None) -> str | None:
    """The content hash of a stored file, computed once per version of the file; None when it
    cannot be read (the full path then says what is wrong with it)."""
    if not rel:
        return None
    try:
        path = media.path(rel)
        stat = path.stat()
    except (MediaError, OSError):
        return None
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _HASHES_LOCK:
        known = _HASHES.get(key)
    if known is not None:
        return known
    try:
        digest = hashlib.sha256(media.read(rel)).hexdigest()
    except (MediaError, OSError):
        return None
    with _HASHES_LOCK:
        if len(_HASHES) > 100_000:  # a long-lived code server: keep it bounded
            _HASHES.clear()
        _HASHES[key] = digest
    return digest
