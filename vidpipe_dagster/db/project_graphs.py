"""What the Dagster graph needs to know about each project, read in two small queries.

Definitions load in every run worker, so this must stay cheap: no media reads, no per-scene queries.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from vidpipe_dagster.db.models import Asset, Project, Scene, SceneManifest
from vidpipe_dagster.db.session import get_engine, session_factory


def graph_name(slug: str) -> str:
    """Dagster group names allow only ``[A-Za-z0-9_]``: ``spring-ad`` becomes ``spring_ad``."""
    return slug.replace("-", "_")


@dataclass(frozen=True)
class ProjectGraph:
    """A project's shape: scene partitions, manifest tags, and the tags each scene uses."""

    slug: str
    name: str
    video_model: str
    has_manifest: bool
    scene_keys: tuple[str, ...]
    tags: tuple[str, ...]
    scene_tags: tuple[tuple[str, tuple[str, ...]], ...]  # (scene key, manifest tags placed in it)

    @property
    def prefix(self) -> str:
        return graph_name(self.slug)

    @property
    def owners(self) -> tuple[str, ...]:
        """Who to ask about the project's assets in the UI: the project's own team by default."""
        return (f"team:{self.prefix}",)

    def tags_of_scene(self, scene_key: str) -> tuple[str, ...]:
        return dict(self.scene_tags).get(scene_key, ())

    def scenes_of_tag(self) -> dict[str, list[str]]:
        mapping: dict[str, list[str]] = {tag: [] for tag in self.tags}
        for scene_key, tags in self.scene_tags:
            for tag in tags:
                mapping[tag].append(scene_key)
        return mapping


def _scene_key(index: int) -> str:
    return str(index)


def load_project_graphs(database_url: str, *, include_archived: bool = False) -> list[ProjectGraph]:
    """All (active) projects; an uninitialised database simply has none."""
    if not inspect(get_engine(database_url)).has_table("projects"):
        return []
    with session_factory(database_url)() as session:
        return read_project_graphs(session, include_archived=include_archived)


def read_project_graphs(session: Session, *, include_archived: bool = False) -> list[ProjectGraph]:
    """Every project's graph from four queries, grouped in one pass (linear in the rows)."""
    query = select(Project).order_by(Project.slug)
    if not include_archived:
        query = query.where(Project.archived.is_(False))
    projects = session.scalars(query).all()
    scenes_of: dict[Any, list[int]] = defaultdict(list)
    for project_id, index in session.execute(select(Scene.project_id, Scene.scene_index)):
        scenes_of[project_id].append(index)
    tags_of: dict[Any, set[str]] = defaultdict(set)
    for manifest_id, tag in session.execute(select(Asset.manifest_id, Asset.manifest_tag)):
        tags_of[manifest_id].add(tag)
    placements_of: dict[Any, list[tuple[int, Any]]] = defaultdict(list)
    for project_id, index, manifest_json in session.execute(
        select(SceneManifest.project_id, SceneManifest.scene_index, SceneManifest.manifest_json)
    ):
        placements_of[project_id].append((index, manifest_json))

    graphs = []
    for project in projects:
        indexes = sorted(scenes_of.get(project.id, []))
        known_indexes = set(indexes)
        tags = sorted(tags_of.get(project.manifest_id, set())) if project.manifest_id else []
        scene_tags = []
        for index, manifest_json in sorted(placements_of.get(project.id, []), key=lambda r: r[0]):
            if index not in known_indexes:
                continue
            placed = [p.get("asset_tag") for p in (manifest_json or {}).get("placements", [])]
            known = tuple(sorted({t for t in placed if t in tags}))
            if known:
                scene_tags.append((_scene_key(index), known))
        graphs.append(
            ProjectGraph(
                slug=project.slug,
                name=project.name,
                video_model=project.video_model,
                has_manifest=project.manifest_id is not None,
                scene_keys=tuple(_scene_key(i) for i in indexes),
                tags=tuple(tags),
                scene_tags=tuple(scene_tags),
            )
        )
    return graphs
