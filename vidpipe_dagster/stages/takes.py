"""A person picks another take of a scene's clip (``vidpipe-dagster choose``), paying nothing.

Every take of a multi-take request is already stored, so choosing one only changes which file
the scene uses: the clip row's ``chosen_take``, ``file_url`` and ``take_choice`` ("chosen by a
person"). The caller then materializes the scene's clip partition, which reuses the finished
request (no API call), keeps the person's choice (``stages.scene_clip``), scores the chosen
take's identity and gives the clip a new data version, so the final cut becomes stale.

Everything that could make that run pay or fail is checked before anything is written: the
project, scene and take exist, the clip is done, every take's file is on disk, and the scene's
current request is still the one its clip was made from, finished in the ledger on the same
backend (else the run would generate, and on Vertex pay for, a new clip).
"""

from __future__ import annotations

from dataclasses import dataclass

from vidpipe_dagster.db import queries
from vidpipe_dagster.domain.media import MediaError
from vidpipe_dagster.domain.render import probe_mp4
from vidpipe_dagster.domain.takes import person_choice
from vidpipe_dagster.generation.clips import request_ladder
from vidpipe_dagster.stages.context import StageContext
from vidpipe_dagster.stages.scene_clip import ClipOptions, scene_inputs


class TakeChoiceError(ValueError):
    """The choice cannot be made; the message (one line) says why and what to do. Nothing was
    changed."""


@dataclass(frozen=True)
class PersonChoice:
    slug: str
    scene_index: int
    take: int  # 1-based
    count: int
    previous_take: int
    previous_reason: str | None
    reason: str
    file_url: str


def choose_take(
    ctx: StageContext,
    slug: str,
    scene_index: int,
    take: int,
    *,
    who: str | None = None,
    when: str | None = None,
    options: ClipOptions | None = None,
) -> PersonChoice:
    """Make ``take`` (1-based) the scene's clip, recording that a person chose it. Raises
    ``TakeChoiceError`` (nothing changed) when it cannot be done without paying or failing."""
    materialize = f"vidpipe-dagster materialize {slug} --stage clips --partition {scene_index}"
    with ctx.database.session() as session:
        try:
            project = queries.project_by_slug(session, slug)
            scene = queries.scene_of(session, project, scene_index)
        except queries.NotFound as exc:
            raise TakeChoiceError(str(exc)) from exc
        clip = queries.clip_of_scene(session, scene.id)
        if clip is None or clip.status != "done" or not clip.file_url:
            state = "never generated" if clip is None else clip.status
            raise TakeChoiceError(
                f"scene {scene_index} of {slug!r} has no finished clip ({state}); make it "
                f"first: {materialize}"
            )
        urls = list(clip.take_urls or [clip.file_url])
        previous, previous_reason = clip.chosen_take or 1, clip.take_choice
        fingerprint, backend = clip.fingerprint, clip.backend
    if not 1 <= take <= len(urls):
        valid = ", ".join(str(i) for i in range(1, len(urls) + 1))
        raise TakeChoiceError(
            f"scene {scene_index} of {slug!r} has no take {take}: its clip has "
            f"{len(urls)} take(s) (valid: {valid})"
        )
    for number, url in enumerate(urls, start=1):
        try:
            path = ctx.media.path(url)
        except MediaError as exc:
            raise TakeChoiceError(f"take {number} of scene {scene_index}: {exc}") from exc
        if not path.is_file():
            raise TakeChoiceError(
                f"take {number} of scene {scene_index} is missing on disk ({path}); the run "
                "that shows the new choice would have to fetch it again: check "
                f"VIDPIPE_MEDIA_ROOT, or run {materialize} first"
            )
    try:  # the take every reader will use must be a playable clip
        probe_mp4(ctx.media.path(urls[take - 1]))
    except ValueError as exc:
        raise TakeChoiceError(
            f"take {take} of scene {scene_index} is not a readable mp4 ({exc}); choose another"
        ) from exc
    _still_reusable(ctx, slug, scene_index, fingerprint, backend, options or ClipOptions())
    reason = person_choice(take, len(urls), who, when)
    with ctx.database.session() as session:
        clip = queries.clip_of_scene(session, scene.id)
        if clip is None or clip.fingerprint != fingerprint or clip.status != "done":
            raise TakeChoiceError(
                f"scene {scene_index}'s clip changed while choosing; run the command again"
            )
        clip.take_urls = urls
        clip.chosen_take = take
        clip.file_url = urls[take - 1]
        clip.take_choice = reason
    return PersonChoice(
        slug, scene_index, take, len(urls), previous, previous_reason, reason, urls[take - 1]
    )


def _still_reusable(
    ctx: StageContext,
    slug: str,
    scene_index: int,
    fingerprint: str | None,
    backend: str | None,
    options: ClipOptions,
) -> None:
    """The scene's clip run would reuse this very clip (no request, no new takes)."""
    run_backend = ctx.backends.resolved_video_backend()
    if backend != run_backend:
        raise TakeChoiceError(
            f"scene {scene_index}'s clip was made by the {backend} backend and clips now run "
            f"on {run_backend}: that run would generate a new clip (VIDPIPE_VIDEO_BACKEND)"
        )
    item = scene_inputs(ctx, slug, str(scene_index), options)
    if item.job is None:
        raise TakeChoiceError(f"scene {scene_index}: {item.error}")
    ladder = {request.fingerprint for request in request_ladder(item.job, ctx.catalog)}
    entry = ctx.ledger().find_reusable(fingerprint, backend) if fingerprint else None
    if fingerprint not in ladder:
        raise TakeChoiceError(
            f"scene {scene_index}'s inputs changed since its clip was made: materializing it "
            "now would generate a new clip (and on Vertex pay for it); run vidpipe-dagster "
            f"materialize {slug} --stage clips --partition {scene_index} first, then choose "
            "among its takes"
        )
    if entry is None or entry.state != "done":
        raise TakeChoiceError(
            f"scene {scene_index}'s request is no longer reused (regeneration was asked for): "
            "the next clips run generates a new clip; choose among its takes afterwards"
        )
