"""The inputs people bring, as data versions Dagster can compare: one content hash per partition.

- ``storyboard`` (per scene): the prompt, the placements and what the project asks of every clip
  (model, aspect ratio, target duration), so an edited prompt or a new model makes exactly the
  affected scenes stale;
- ``keyframes`` (per scene): the start and end keyframe hashes taken at import;
- ``reference_image`` (per manifest tag): each asset's photo hash and what selection reads of it.

Reported to Dagster as observations on import and by the inputs sensor (``automation.py``).
Everything here reads stored hashes, never an image.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from typing import Any

from sqlalchemy import select

from vidpipe_dagster.db.models import Asset, Keyframe, Project, Scene, SceneManifest
from vidpipe_dagster.db.session import Database

Versions = dict[str, dict[str, str]]  # source name -> partition key -> data version

SOURCES = ("storyboard", "keyframes", "reference_image")


def _digest(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def source_versions(database: Database, slugs: list[str] | None = None) -> dict[str, Versions]:
    """Per project slug: each source's data version per partition, from four queries."""
    with database.session() as session:
        query = select(Project).where(Project.archived.is_(False))
        if slugs is not None:
            query = query.where(Project.slug.in_(slugs))
        projects = {p.id: p for p in session.scalars(query)}
        scenes = session.execute(
            select(Scene.id, Scene.project_id, Scene.scene_index, Scene.prompt).where(
                Scene.project_id.in_(list(projects))
            )
        ).all()
        frames: dict[Any, dict[str, str]] = defaultdict(dict)
        for scene_id, position, digest in session.execute(
            select(Keyframe.scene_id, Keyframe.position, Keyframe.content_sha256).where(
                Keyframe.scene_id.in_([row.id for row in scenes])
            )
        ):
            frames[scene_id][position] = digest
        placements = {
            (row.project_id, row.scene_index): row.manifest_json
            for row in session.execute(
                select(
                    SceneManifest.project_id, SceneManifest.scene_index, SceneManifest.manifest_json
                ).where(SceneManifest.project_id.in_(list(projects)))
            )
        }
        manifests = {p.manifest_id for p in projects.values() if p.manifest_id}
        assets: dict[Any, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
        for asset in session.scalars(select(Asset).where(Asset.manifest_id.in_(manifests))):
            assets[asset.manifest_id][asset.manifest_tag].append(
                (
                    asset.asset_key,
                    asset.original_sha256,
                    asset.asset_type,
                    asset.quality_score,
                    asset.is_face_crop,
                    asset.reverse_prompt,
                )
            )
        scenes_of: dict[Any, list[Any]] = defaultdict(list)
        for row in scenes:
            scenes_of[row.project_id].append(row)
        versions: dict[str, Versions] = {}
        for project in projects.values():
            shared = (
                project.video_model,
                project.aspect_ratio,
                project.target_clip_duration,
            )
            per_project: Versions = {name: {} for name in SOURCES}
            versions[project.slug] = per_project
            for row in scenes_of[project.id]:
                key = str(row.scene_index)
                per_project["storyboard"][key] = _digest(
                    [row.prompt, placements.get((project.id, row.scene_index)), shared]
                )
                per_project["keyframes"][key] = _digest(sorted(frames[row.id].items()))
            for tag, rows in assets.get(project.manifest_id, {}).items():
                per_project["reference_image"][tag] = _digest(sorted(rows, key=str))
    return versions
