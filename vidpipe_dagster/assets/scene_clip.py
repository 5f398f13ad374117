"""What ``<project>/scene_clip`` shows in Dagster: each scene's clip as soon as that scene is done
(while the others are still generating), with a moving preview, how recognisable its characters
are, and its checks, per scene. The work is ``stages.scene_clip`` (the 8 s forced with
references: ``domain.video_requests``; never paying twice: ``generation.clips``) and
``stages.clip_identity`` (local, free scoring against the references)."""

from collections.abc import Iterator
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from vidpipe_dagster.assets import metadata as md
from vidpipe_dagster.assets.clip_previews import identity_markdown, takes_markdown
from vidpipe_dagster.assets.provenance import InputsOf, InputVersions, materialization
from vidpipe_dagster.domain.preview import PREVIEW_LABEL
from vidpipe_dagster.domain.previews import animated_webp, sample_frames
from vidpipe_dagster.domain.takes import scored_fingerprint
from vidpipe_dagster.stages import clip_checks
from vidpipe_dagster.stages import scene_clip as stage
from vidpipe_dagster.stages.clip_identity import (
    SceneIdentity,
    reusable_scene_identities,
)
from vidpipe_dagster.stages.context import CheckOutcome, StageContext

CODE_VERSION = stage.CODE_VERSION
CHECK_DESCRIPTIONS = {
    clip_checks.CHECK_VALID_MP4: "The stored file is an mp4 whose duration is the requested one "
    "(8 s with references, the project target otherwise); a failed scene fails it.",
    clip_checks.CHECK_REQUEST_LEGAL: "At most 3 references and a conditioning mode the model "
    "accepts.",
    clip_checks.CHECK_ONE_BILLED: "The ledger shows at most one billed generation per scene clip "
    "(over the request and its remediated or frames-fallback forms).",
    clip_checks.CHECK_COST: "Every finished clip records what it cost, reused or not: a Veo "
    "(billed) clip more than 0 and exactly what the ledger billed for its request, an animatic "
    "preview 0.",
    clip_checks.CHECK_RECOGNISABLE: "Every CHARACTER placed in the scene is recognised in frames "
    "sampled across the clip: its median face score meets the face engine's clip threshold "
    "against its reference (face crop first). A character that cannot be scored (no face engine, "
    "no reference face, no face found) fails it too, saying why. WARN by default; ERROR and "
    "blocking (the final cut waits) when the project sets identity_check: block.",
}


class SceneClipConfig(dg.Config):
    """Run config for clip generation (defaults are safe for Vertex's per-model quota)."""

    conditioning_policy: Literal["auto", "frames", "references", "hybrid"] = Field(
        default="auto",
        description="How each scene is conditioned. auto: its reference images when it has "
        "any and the model takes them (with its keyframes where the model allows both), else "
        "its keyframes; frames, references or hybrid ask for one mode.",
    )
    max_in_flight: int = Field(
        default=4, description="Clip requests in flight at once in this run (one per scene)."
    )
    requests_per_minute: int = Field(
        default=10,
        description="Paid submissions per minute (Vertex's per-model quota); free previews are "
        "not paced.",
    )
    poll_interval_seconds: float = Field(
        default=10.0, description="Seconds between polls of a running operation."
    )
    backoff_base_seconds: float = Field(
        default=1.0,
        description="Base of the full-jitter exponential backoff after a transient error.",
    )
    generate_audio: bool = Field(
        default=True, description="Ask for audio (priced higher where the catalog says so)."
    )
    price_per_second_usd: dict[str, float] = Field(
        default={},
        description="Model id to USD per second, overriding the catalog's price for estimates "
        "and budgets in this run.",
    )
    budget_per_run_usd: float | None = Field(
        default=None,
        description="Stop submitting once this run's spend would pass this many USD (default: "
        "VIDPIPE_BUDGET_PER_RUN_USD).",
    )
    budget_per_day_usd: float | None = Field(
        default=None,
        description="The same for the day's spend across runs (default: "
        "VIDPIPE_BUDGET_PER_DAY_USD).",
    )
    # Accept a risk of paying twice: resend a submit whose outcome is unknown (Veo has no
    # idempotency key), and buy again a paid clip whose video is gone for good. Off by default.
    retry_ambiguous_submits: bool = Field(
        default=False,
        description="Resend a submission whose outcome is unknown (it may have been billed: "
        "you may pay twice). Off by default; a person's decision.",
    )
    regenerate_lost_results: bool = Field(
        default=False,
        description="Buy again a paid clip whose video is gone for good (you pay twice). Off by "
        "default; a person's decision.",
    )

    def options(self) -> stage.ClipOptions:
        values = self.model_dump()
        values.pop("budget_per_run_usd")
        values.pop("budget_per_day_usd")
        return stage.ClipOptions(**values)


def events(
    context: dg.AssetExecutionContext,
    ctx: StageContext,
    slug: str,
    key: dg.AssetKey,
    config: SceneClipConfig,
    inputs_of: InputsOf,
    sources: set[dg.AssetKey],
    identity_blocking: bool = False,
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """Each scene's clip, identity and checks as it settles (scenes that settle together, as a
    cached rerun's do, report together); failed scenes fail the step at the end (and so does a
    blocking identity check at ERROR, after every scene is materialized)."""
    keys = list(context.partition_keys)
    client = ctx.backends.video_client()
    preview = client.is_preview
    failed: dict[str, str] = {}
    done: list[str] = []
    known: dict[int, SceneIdentity] | None = None
    # the inputs' versions as the stage is about to read them (an upstream stage of this step,
    # scene_references, has materialized by now), for every scene in one read
    versions = InputVersions(context.instance, keys, inputs_of, sources)
    batches = stage.iter_clip_batches(ctx, slug, keys, config.options(), run_id=context.run.run_id)
    for batch in md.stage_errors_as_failures(batches):
        outcomes: dict[str, list[CheckOutcome]] = {}
        for result in batch:
            facts = clip_checks.facts_of_result(ctx, slug, result, preview)
            outcomes[result.key] = clip_checks.checks_for(facts)
            if not (result.done and result.outcome is not None):
                failed[result.key] = result.error or "failed"
                context.log.error(f"scene {result.key}: {failed[result.key]}")
                continue
            if known is None:  # every scene's stored scores in one read, not per scene
                known = reusable_scene_identities(ctx, slug, [int(k) for k in keys])
            identity, recognisable = clip_checks.identity_outcome(
                ctx,
                slug,
                result.key,
                blocking=identity_blocking,
                known=known,
                fingerprint=scored_fingerprint(
                    result.outcome.request.fingerprint, result.chosen_take
                ),
            )
            outcomes[result.key].append(recognisable)
            metadata = _metadata(context, result, client.backend, preview)
            metadata["identity"] = identity_markdown(ctx, identity, preview)
            if len(result.take_urls) > 1:  # one request, several takes: each shown, the choice
                metadata["chosen_take"] = result.chosen_take
                metadata["take_choice"] = result.take_choice or ""
                metadata["takes"] = takes_markdown(ctx, result)
            yield materialization(
                key,
                result.key,
                data_version=result.data_version,
                code_version=CODE_VERSION,
                input_tags=versions.tags(result.key),
                metadata=metadata,
            )
            done.append(result.key)
        yield from md.evaluations(context, key, outcomes)
    if failed:
        lines = "; ".join(f"scene {k}: {v}" for k, v in sorted(failed.items()))
        raise dg.Failure(
            description=f"{len(failed)} of {len(keys)} scene(s) failed ({lines}); "
            f"materialized: {sorted(done) or 'none'}",
            metadata={"failed": dg.MetadataValue.json(failed), "done": sorted(done)},
            allow_retries=False,
        )


def read_back(
    context: dg.AssetExecutionContext,
    ctx: StageContext,
    slug: str,
    key: dg.AssetKey,
    identity_blocking: bool = False,
) -> Iterator[dg.AssetCheckEvaluation]:
    """The checks alone (a person ran them from the UI): the stored file, row and ledger, and
    the clip's identity when that check is selected (stored scores, or scored now)."""
    with_identity = dg.AssetCheckKey(key, clip_checks.CHECK_RECOGNISABLE) in (
        context.selected_asset_check_keys
    )
    found = clip_checks.read_back(
        ctx,
        slug,
        context.partition_keys,
        identity_blocking=identity_blocking if with_identity else None,
    )
    yield from md.evaluations(context, key, found)


def _metadata(
    context: dg.AssetExecutionContext, result: stage.ClipResult, backend: str, preview: bool
) -> dict[str, Any]:
    outcome = result.outcome
    assert outcome is not None and result.path is not None
    request = outcome.request
    label = f"**{PREVIEW_LABEL}**\n\n" if preview else ""
    try:  # a preview is a convenience: a clip that probed fine is not failed for it
        moving = animated_webp(sample_frames(result.path, n=8, height=90))
        shown = label + md.inline_image(moving, "image/webp", f"scene {result.key}")
    except ValueError as exc:
        context.log.warning(f"scene {result.key}: no preview: {exc}")
        shown = f"{label}no preview: {exc}"
    metadata: dict[str, Any] = {
        "status": "cached" if outcome.cached else ("resumed" if outcome.resumed else "generated"),
        "backend": PREVIEW_LABEL if preview else backend,
        "model": request.model,
        "preview": dg.MetadataValue.md(shown),
        "path": result.file_url or outcome.result_url or "",
        "duration_seconds": result.duration_seconds,
        "conditioning_mode": request.conditioning_mode,
        "conditioning_reason": request.conditioning_reason,
        "references": md.references_table(list(result.references)),
        "remediation_level": outcome.remediation_level,
        "cost_usd": result.cost_usd,  # what the clip cost, paid once
        "spent_this_run_usd": outcome.cost_usd,  # 0 when reused
        "fingerprint": request.fingerprint,
    }
    if not preview:  # calls to a paid API and its operation; a local render has neither
        metadata["paid_api_calls"] = outcome.api_calls
        metadata["submissions"] = outcome.attempts
        metadata["attempts"] = result.attempts
        metadata["operation_name"] = outcome.operation_name or ""
    return metadata
