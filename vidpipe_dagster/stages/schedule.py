"""What the nightly schedule asks of the clip stage: which scenes need a clip, at what estimate,
and which must wait for a person. Plain Python; ``automation.py`` is its Dagster face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vidpipe_dagster.db import queries
from vidpipe_dagster.domain.budget import expected_cost_usd
from vidpipe_dagster.generation.clips import estimate_new_spend, request_ladder
from vidpipe_dagster.stages.context import StageContext
from vidpipe_dagster.stages.scene_clip import ClipOptions, scene_inputs


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
    ledger = ctx.ledger()
    with ctx.database.session() as session:
        clips = queries.clip_states(session, slug)
    needs: list[SceneNeed] = []
    blocked: dict[str, str] = {}
    for key in scene_keys:
        status, fingerprint = clips.get(key, (None, None))
        item = scene_inputs(ctx, slug, key, options)
        if item.job is None:
            if item.error and "scene_references" in item.error:  # selection is out of date
                estimate = expected_cost_usd(
                    kind="video",
                    model=video_model,
                    backend=client.backend,
                    details=None,
                    price_table=options.prices,
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
