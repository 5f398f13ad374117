"""``vidpipe-dagster status``: one JSON object with a project's references, sheets and clips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from vidpipe_dagster.db import queries
from vidpipe_dagster.domain.preview import is_preview_backend
from vidpipe_dagster.domain.reference_selection import ChosenReference


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
    scene_manifests = queries.scene_manifests(session, project.id)
    scenes = []
    for scene in project.scenes:
        sm = scene_manifests.get(scene.scene_index)
        persisted = sm.selected_reference_tags if sm else None
        selected = []
        current = None  # None: nothing selected yet
        if sm and persisted is not None:
            picks = queries.current_selection(session, project, scene.scene_index) or []
            current = [a.manifest_tag for a in picks] == persisted
            if current:
                selected = [
                    _reference(queries.chosen_reference(session, a), media_root) for a in picks
                ]
        scenes.append(
            {
                "index": scene.scene_index,
                "prompt": scene.prompt,
                "selected_reference_tags": persisted,
                # False: the manifest changed since the selection; materialize references again
                "selection_current": current,
                "selected_references": selected,
                "clip": _clip(scene.clip, media_root),
            }
        )
    return {
        "project": project.slug,
        "name": project.name,
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
                    for c in a.clean_references
                ],
            }
            for a in assets
        ],
    }


def _clip(clip: Any, media_root: Path) -> dict[str, Any] | None:
    if clip is None:
        return None
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
        "preview": is_preview_backend(clip.backend),
        "cached": clip.cached,
        "attempts": clip.attempts,
        "error": clip.error,
    }
