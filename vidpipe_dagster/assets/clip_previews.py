"""How a scene clip's identity and takes look in the UI: markdown tables with small faces and
frames, so a director sees at a glance who is recognised and which take is used."""

import dagster as dg

from vidpipe_dagster.assets import metadata as md
from vidpipe_dagster.domain.preview import PREVIEW_LABEL
from vidpipe_dagster.domain.previews import sample_frames
from vidpipe_dagster.domain.takes import TakeScore
from vidpipe_dagster.stages import scene_clip as stage
from vidpipe_dagster.stages.clip_identity import SceneIdentity, identity_images, verdict
from vidpipe_dagster.stages.context import StageContext

THUMB = 96  # px: the identity faces, small enough to sit side by side in a table cell


def identity_markdown(
    ctx: StageContext, identity: SceneIdentity, preview: bool
) -> dg.MarkdownMetadataValue:
    """The scene's identity: one row per placed character (engine, best and median score, frames,
    threshold, verdict), then the best-matching face from the clip beside its reference."""
    if identity.problem is not None:
        return dg.MetadataValue.md(f"**not scored**: {identity.problem}")
    if not identity.characters:
        return dg.MetadataValue.md(f"_not applicable: {identity.note}_")
    rows = [
        "| character | engine | best | median | frames found / sampled | threshold | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in identity.characters:
        engine = f"{c.engine} ({c.metric})" if c.engine else "none"
        threshold = "-"
        if c.threshold is not None:
            threshold = f"{'≥' if c.metric == 'cosine' else '≤'} {c.threshold:.2f}"
        rows.append(
            f"| {c.tag} | {engine} | {_score(c.best)} | {_score(c.median)} | "
            f"{c.frames_found}/{c.frames_sampled} | {threshold} | {verdict(c)} |"
        )
    faces = ["", "| character | best-matching face in the clip | reference |", "|---|---|---|"]
    shown = False
    for tag, (crop, reference) in identity_images(ctx, identity).items():
        if crop is None and reference is None:
            continue
        shown = True
        faces.append(
            f"| {tag} | {_thumb(crop, f'{tag} in the clip', 'no face matched')} | "
            f"{_thumb(reference, f'{tag} reference', 'no reference image')} |"
        )
    notes = []
    if preview:
        notes.append(f"Scored on the {PREVIEW_LABEL}: it shows the keyframes, not a Veo clip.")
    if identity.cached:
        notes.append("Stored scores reused: same clip, same face engine.")
    if identity.engine_note:
        notes.append(f"Face engine: {identity.engine_note}.")
    text = "\n".join(rows + (faces if shown else []))
    if notes:
        text += "\n\n" + " ".join(f"_{n}_" for n in notes)
    return dg.MetadataValue.md(text)


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _thumb(data: bytes | None, alt: str, missing: str) -> str:
    if data is None:
        return f"_{missing}_"
    try:
        return md.thumbnail(data, alt, size=THUMB)
    except ValueError:  # an unreadable image on disk: say so in its cell
        return f"_{alt}: unreadable_"


def takes_markdown(ctx: StageContext, result: stage.ClipResult) -> dg.MarkdownMetadataValue:
    """One row per take: its middle frame, its characters' scores when this run scored them,
    and which one the scene uses (the reason under the table)."""
    scores = {score.take: score for score in result.take_scores}
    rows = ["| take | frame | identity | used |", "|---|---|---|---|"]
    for number, url in enumerate(result.take_urls, start=1):
        try:
            [frame] = sample_frames(ctx.media.path(url), n=1, height=THUMB)
            shown = md.thumbnail(frame, f"take {number}", size=None)
        except ValueError as exc:  # MediaError included: say so in its cell
            shown = f"_unreadable: {' '.join(str(exc).split())[:80]}_"
        used = "**chosen**" if number == result.chosen_take else ""
        rows.append(f"| {number} | {shown} | {_take_scores(scores.get(number))} | {used} |")
    note = "" if scores else "\n\n_Takes not scored again by this run: the choice was kept._"
    return dg.MetadataValue.md("\n".join(rows) + f"\n\n{result.take_choice or ''}" + note)


def _take_scores(score: TakeScore | None) -> str:
    if score is None:
        return "-"
    if score.problem is not None:
        return f"not scored: {score.problem[:80]}"
    if not score.characters:
        return "-"
    return ", ".join(
        f"{c.tag} {_score(c.median)} ({'recognised' if c.status == 'passed' else c.status})"
        for c in score.characters
    )
