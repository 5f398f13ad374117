"""The scene clip's checks, one scene at a time: from a run's own results as each scene settles,
or read back from the database and the stored file when a person runs a check alone.

Both paths build the same ``ClipFacts`` and ask the same rules, so a check means the same thing
whichever way it ran. A scene whose clip failed gets a failed ``clip_is_valid`` result with the
reason: a failed scene never shows a green check from its own run.

``characters_recognisable`` (``stages.clip_identity``) is scored the same way on both paths too:
stored scores are reused while the clip and the face engine are unchanged, else the clip is
scored (local, free). WARN by default; ERROR, and blocking, when the project says
``identity_check: block``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vidpipe_dagster.db import queries
from vidpipe_dagster.domain.catalog import ModelChoiceError
from vidpipe_dagster.domain.preview import is_preview_backend
from vidpipe_dagster.domain.render import probe_mp4
from vidpipe_dagster.domain.video_requests import (
    expected_duration,
    mode_problems,
    request_rule_problems,
)
from vidpipe_dagster.stages.clip_identity import (
    CHECK_RECOGNISABLE,
    SceneIdentity,
    identity_check,
    score_scene_identity_or_say_why,
)
from vidpipe_dagster.stages.context import CheckOutcome, StageContext
from vidpipe_dagster.stages.scene_clip import ClipResult

CHECK_VALID_MP4 = "clip_is_valid_mp4_of_expected_duration"
CHECK_REQUEST_LEGAL = "references_and_mode_legal_for_model"
CHECK_ONE_BILLED = "at_most_one_billed_generation_per_clip"
CHECK_COST = "cost_recorded"
CHECKS = (CHECK_VALID_MP4, CHECK_REQUEST_LEGAL, CHECK_ONE_BILLED, CHECK_COST, CHECK_RECOGNISABLE)


@dataclass(frozen=True)
class ClipFacts:
    """What the checks look at for one scene's clip."""

    key: str
    error: str | None  # the scene failed (or its file is not a valid mp4): why
    model: str
    mode: str | None
    reference_count: int
    # where the request breaks its model's catalog rules: ("duration" | "legal", problem)
    rule_problems: tuple[tuple[str, str], ...]
    requested_seconds: int | None
    probed_seconds: float | None
    preview: bool
    cost_usd: float | None
    billed_usd: float | None  # what the ledger billed for the clip's request
    billed_requests: int  # billed requests over the clip's request ladder


def facts_of_result(ctx: StageContext, slug: str, result: ClipResult, preview: bool) -> ClipFacts:
    """A settled scene's facts. How often its clip was billed comes with the result when the
    run read it for all its scenes at once (a reused clip), else from the ledger (one query)."""
    request = result.outcome.request if result.outcome is not None else None
    billed_requests = 0
    if result.done and result.billed_requests is not None:
        billed_requests = result.billed_requests
    elif result.done and request is not None:
        ledger = ctx.ledger()
        clip = {result.key: request.fingerprint}
        billed_requests = ledger.billed_per_clip(slug, clip).get(result.key, 0)
    return ClipFacts(
        key=result.key,
        error=result.error,
        model=request.model if request else "",
        mode=request.conditioning_mode if request else None,
        reference_count=len(request.reference_images) if request else 0,
        rule_problems=tuple(request_rule_problems(request, ctx.catalog)) if request else (),
        requested_seconds=request.duration_seconds if request else None,
        probed_seconds=result.duration_seconds if result.done else None,
        preview=preview,
        cost_usd=result.cost_usd if result.done else None,
        billed_usd=result.billed_usd,
        billed_requests=billed_requests,
    )


def checks_for(facts: ClipFacts) -> list[CheckOutcome]:
    """The four checks of one scene; a failed scene gets only a failed validity check."""
    if facts.error is not None:
        return [CheckOutcome(CHECK_VALID_MP4, passed=False, description=facts.error[:1000])]
    duration_problems = [problem for kind, problem in facts.rule_problems if kind == "duration"]
    probed, requested = facts.probed_seconds, facts.requested_seconds
    if probed is not None and requested is not None and abs(probed - requested) > 0.25:
        duration_problems.insert(0, f"duration {probed:.2f} s, requested {requested} s")
    legal = [problem for kind, problem in facts.rule_problems if kind == "legal"]
    cost = cost_problem(facts.cost_usd, preview=facts.preview, billed_usd=facts.billed_usd)
    return [
        CheckOutcome(
            CHECK_VALID_MP4,
            passed=not duration_problems,
            description="; ".join(duration_problems) or None,
            metadata={"duration_seconds": facts.probed_seconds},
        ),
        CheckOutcome(
            CHECK_REQUEST_LEGAL,
            passed=not legal,
            description="; ".join(legal) or None,
            metadata={"mode": facts.mode or "", "references": facts.reference_count},
        ),
        CheckOutcome(
            CHECK_ONE_BILLED,
            passed=facts.billed_requests <= 1,
            description=None
            if facts.billed_requests <= 1
            else f"{facts.billed_requests} billed generations for one clip",
            metadata={"billed_requests": facts.billed_requests},
        ),
        CheckOutcome(
            CHECK_COST,
            passed=cost is None,
            description=cost,
            metadata={"cost_usd": facts.cost_usd if facts.cost_usd is not None else 0.0},
        ),
    ]


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


def identity_outcome(
    ctx: StageContext, slug: str, key: str, *, blocking: bool
) -> tuple[SceneIdentity, CheckOutcome]:
    """A done scene's clip identity (stored scores reused, else scored now) and its
    ``characters_recognisable`` result; scoring that fails is "not scored", never a pass."""
    identity = score_scene_identity_or_say_why(ctx, slug, int(key))
    return identity, identity_check(identity, blocking=blocking)


def read_back(
    ctx: StageContext,
    slug: str,
    keys: Sequence[str],
    *,
    identity_blocking: bool | None = None,
) -> dict[str, list[CheckOutcome]]:
    """Each scene's checks from what is stored now: the clip row, its file, the ledger; and,
    unless ``identity_blocking`` is None (not asked for), each done clip's identity."""
    ledger = ctx.ledger()
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        rows = dict(queries.clips_in_scene_order(session, project.id))
        model, target = project.video_model, project.target_clip_duration
        resolution = project.resolution
    catalog = ctx.catalog
    fingerprints = {
        str(i): clip.fingerprint
        for i, clip in rows.items()
        if clip is not None and clip.status == "done" and clip.fingerprint
    }
    billed = ledger.billed_per_clip(slug, fingerprints)
    outcomes: dict[str, list[CheckOutcome]] = {}
    for key in keys:
        clip = rows.get(int(key))
        if clip is None or clip.status != "done" or not clip.file_url:
            reason = (clip.error if clip is not None else None) or "no clip generated yet"
            outcomes[key] = checks_for(_failed(key, reason))
            continue
        probed, error = _probe(ctx, clip.file_url)
        refs = len(clip.reference_tags or [])
        try:
            requested: int | None = expected_duration(
                model, target, with_references=refs > 0, resolution=resolution, catalog=catalog
            )
        except ModelChoiceError:
            requested = None
        entry = ledger.find_reusable(clip.fingerprint, clip.backend) if clip.fingerprint else None
        outcomes[key] = checks_for(
            ClipFacts(
                key=key,
                error=error,
                model=model,
                mode=clip.conditioning_mode,
                reference_count=refs,
                rule_problems=tuple(
                    ("legal", problem)
                    for problem in mode_problems(model, clip.conditioning_mode, refs, catalog)
                ),
                requested_seconds=requested,
                probed_seconds=probed,
                preview=is_preview_backend(clip.backend),
                cost_usd=clip.cost_usd,
                billed_usd=entry.cost_usd
                if entry is not None and entry.state == "done" and entry.billed
                else None,
                billed_requests=billed.get(key, 0),
            )
        )
        if identity_blocking is not None and error is None:
            outcomes[key].append(identity_outcome(ctx, slug, key, blocking=identity_blocking)[1])
    return outcomes


def _probe(ctx: StageContext, relative: str) -> tuple[float | None, str | None]:
    try:
        path: Path = ctx.media.path(relative)
        return probe_mp4(path).duration_seconds, None
    except ValueError as exc:  # MediaError included
        return None, f"the stored clip is not a valid mp4: {exc}"


def _failed(key: str, reason: str) -> ClipFacts:
    return ClipFacts(key, reason, "", None, 0, (), None, None, False, None, None, 0)
