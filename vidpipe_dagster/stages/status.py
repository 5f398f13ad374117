"""``vidpipe-dagster status``: one JSON object with a project's references, sheets and clips.

Reads the whole project in a fixed number of queries (``db.queries``' project-wide lookups), so a
500-scene project costs what a 2-scene one does; no Dagster and no media reads. A clip's identity
is what the clip step stored (``stages.clip_identity``), read in one query for the project; no
score is shown that was not measured, and a score of an older clip says it is stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from vidpipe_dagster.db import queries
from vidpipe_dagster.db.models import ClipIdentityScore
from vidpipe_dagster.db.project_graphs import graph_name
from vidpipe_dagster.domain.preview import backend_label, is_preview_backend
from vidpipe_dagster.domain.reference_selection import ChosenReference
from vidpipe_dagster.domain.takes import is_person_choice, scored_fingerprint
from vidpipe_dagster.stages.clip_identity import identity_details

# The assets a reason may tell a person to materialize (named by key: ``<prefix>/<asset>``).
STAGE_ASSETS = ("clean_sheet", "scene_references", "scene_clip", "final_cut")


class StatusError(LookupError):
    pass


def _abs(media_root: Path, rel: str | None) -> str | None:
    return str((media_root / rel).resolve()) if rel else None


def _reference(chosen: ChosenReference, media_root: Path) -> dict[str, Any]:
    """The image the clip stage sends: the primary clean sheet, else the original photo."""
    return {
        "tag": chosen.tag,
        "asset_id": chosen.asset_key,
        "face_crop": chosen.face_crop,
        "image": _abs(media_root, chosen.image_url),
        "source": chosen.source,
    }


def project_status(session: Session, slug: str, media_root: Path) -> dict[str, Any]:
    try:
        project = queries.project_by_slug(session, slug)
    except queries.NotFound as exc:
        raise StatusError(str(exc)) from exc
    assets = list(project.manifest.assets) if project.manifest else []
    sheets = queries.clean_sheets_of_manifest(session, project.manifest_id)
    primaries = queries.primary_clean_sheets(session, project.manifest_id)
    rows = queries.scenes_with_clips(session, project.id)
    selections = queries.current_selections(session, project, [s.scene_index for s, _ in rows])
    identities: dict[Any, list[ClipIdentityScore]] = {}
    for _, row in queries.project_clip_identities(session, project.id):
        identities.setdefault(row.video_clip_id, []).append(row)
    characters = {a.manifest_tag for a in assets if a.asset_type == "CHARACTER"}
    scenes = []
    for scene, clip in rows:
        picks, sm = selections[scene.scene_index]
        persisted = sm.selected_reference_tags if sm else None
        selected = []
        current = None  # None: nothing selected yet
        if sm and persisted is not None:
            current = [a.manifest_tag for a in picks or []] == persisted
            if current:
                selected = [
                    _reference(queries.reference_of(a, primaries.get(a.id)), media_root)
                    for a in picks or []
                ]
        scenes.append(
            {
                "index": scene.scene_index,
                "prompt": scene.prompt,
                "selected_reference_tags": persisted,
                # False: the manifest changed since the selection; materialize references again
                "selection_current": current,
                "selected_references": selected,
                "clip": _clip(
                    clip,
                    media_root,
                    slug,
                    str(scene.scene_index),
                    identities.get(clip.id, []) if clip is not None else [],
                    places_characters=_places_any(sm, characters),
                ),
            }
        )
    return {
        "project": project.slug,
        "name": project.name,
        "asset_prefix": graph_name(project.slug),
        "archived": project.archived,
        "video_model": project.video_model,
        "has_manifest": project.manifest is not None,
        "scenes": scenes,
        "assets": [
            {
                "tag": a.manifest_tag,
                "asset_id": a.asset_key,
                "type": a.asset_type,
                "face_crop": bool(a.is_face_crop),
                "image": _abs(media_root, a.reference_image_url),
                "has_face_embedding": a.face_embedding is not None,
                "clean_sheets": [
                    {
                        "tier": c.tier,
                        "primary": c.is_primary,
                        "path": _abs(media_root, c.clean_image_url),
                        "similarity": c.face_similarity_score,
                        # Tier 3 only: None means validation does not apply (Tier 2 keeps the face)
                        "validated": (c.face_similarity_score is not None)
                        if c.tier == "tier3_gemini"
                        else None,
                        "cost_usd": c.generation_cost,
                        "created_at": c.created_at.isoformat() if c.created_at else None,
                    }
                    for c in sheets.get(a.id, [])
                ],
            }
            for a in assets
        ],
    }


def _clip(
    clip: Any,
    media_root: Path,
    slug: str,
    scene_key: str,
    identity_rows: list[ClipIdentityScore],
    *,
    places_characters: bool = True,
) -> dict[str, Any] | None:
    if clip is None:
        return None
    identity: list[dict[str, Any]] | None = None  # not scored
    if identity_rows:
        identity = _identity(clip, identity_rows)
    elif not places_characters:
        identity = []  # nothing to recognise: no CHARACTER is placed in the scene
    return {
        "status": clip.status,
        "path": _abs(media_root, clip.file_url),
        "duration_seconds": clip.duration_seconds,
        "conditioning_mode": clip.conditioning_mode,
        "conditioning_reason": clip.conditioning_reason,
        "remediation_level": clip.remediation_level,
        "reference_tags": clip.reference_tags,
        "cost_usd": clip.cost_usd,
        "backend": clip.backend,
        "backend_label": backend_label(clip.backend) if clip.backend else None,
        "preview": is_preview_backend(clip.backend),
        "cached": clip.cached,
        "attempts": clip.attempts,
        # takes: how many the request returned, which one the scene uses (1-based) and why
        **_takes(clip, media_root),
        # each placed character's identity in the clip; None: not scored (no score is made up)
        "identity": identity,
        "error": failure_reason(clip.error, scene_key, slug) if clip.error else None,
    }


def _takes(clip: Any, media_root: Path) -> dict[str, Any]:
    """A clip made before takes were recorded has one take: its file."""
    urls = list(clip.take_urls or ([clip.file_url] if clip.file_url else []))
    chosen = clip.chosen_take or (1 if urls else None)
    return {
        "takes": len(urls),
        "chosen_take": chosen,
        "take_choice": clip.take_choice,
        "take_paths": [_abs(media_root, url) for url in urls],
    }


def take_cell(clip: dict[str, Any]) -> str:
    """The human table's take column: "2 of 3" (a person's pick is marked), or "-"."""
    if not clip.get("takes"):
        return "-"
    mark = " (by a person)" if is_person_choice(clip.get("take_choice")) else ""
    return f"{clip['chosen_take']} of {clip['takes']}{mark}"


def _places_any(scene_manifest: Any, characters: set[str]) -> bool:
    """Whether the scene's placements name a CHARACTER of the manifest (read from rows already
    loaded: no query)."""
    placements = ((scene_manifest.manifest_json or {}) if scene_manifest else {}).get(
        "placements", []
    )
    return any(isinstance(p, dict) and p.get("asset_tag") in characters for p in placements)


def _identity(clip: Any, rows: list[ClipIdentityScore]) -> list[dict[str, Any]]:
    """The stored scores, one per placed character; ``stale`` when they were computed from
    another clip than the one stored now (the clip step scores every clip it makes)."""
    entries = []
    for row in rows:
        character = queries.identity_of_row(row)
        entries.append(
            {
                "tag": row.character_tag,
                **identity_details(character),  # status: passed | failed | not_scored
                "stale": row.clip_fingerprint
                != scored_fingerprint(clip.fingerprint, clip.chosen_take),
            }
        )
    return entries


def identity_cell(identity: list[dict[str, Any]] | None) -> str:
    """The human ``status`` table's identity column: per character, recognised or not with the
    median score against the engine's bar, or not scored and why."""
    if identity is None:
        return "not scored"
    cells = []
    for entry in identity:
        if entry["status"] == "not_scored":
            cell = f"{entry['tag']} {entry['verdict']}"
        else:
            word = "recognised" if entry["status"] == "passed" else "NOT recognised"
            sign = (
                ("≥" if entry["status"] == "passed" else "<")
                if entry["metric"] == "cosine"
                else ("≤" if entry["status"] == "passed" else ">")
            )
            cell = (
                f"{entry['tag']} {word} ({entry['engine']} {entry['median']:.2f} {sign} "
                f"{entry['threshold']:.2f})"
            )
        cells.append(cell + (" (stale)" if entry["stale"] else ""))
    return ", ".join(cells) or "no characters"


def failure_reason(error: str, scene_key: str | None, slug: str) -> str:
    """An error as one reason a person reads beside its scene: on one line, without the
    ``scene k:`` prefixes that each layer above the stage adds again, and naming the assets to
    materialize by key (``spring_ad/scene_references``, what the UI shows), not by slug."""
    text = " ".join(error.split())
    if scene_key is not None:
        prefix = f"scene {scene_key}: "
        while text.startswith(prefix):
            text = text[len(prefix) :]
    for asset in STAGE_ASSETS:
        text = text.replace(f"{slug}/{asset}", f"{graph_name(slug)}/{asset}")
    return text
