"""What the Dagster graph needs to know about each project, read in two small queries.

Definitions load in every run worker, so this must stay cheap: no media reads, no per-scene queries.
A project whose rows cannot form a valid graph (a slug or tag an older import let through, a
hand-edited row) is left out and reported (``InvalidProject``) instead of failing every project.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from vidpipe_dagster.db.models import Asset, Project, Scene, SceneManifest
from vidpipe_dagster.db.session import get_engine, session_factory
from vidpipe_dagster.domain.schemas import (
    MAX_SCENE_INDEX,
    is_valid_owner,
    is_valid_slug,
    is_valid_tag,
)


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
    # "block": characters_recognisable is an ERROR, blocking check, so final_cut waits for it
    identity_check: str = "warn"
    # the spec's owners; empty: the project's own team (``owners``)
    spec_owners: tuple[str, ...] = ()

    @property
    def prefix(self) -> str:
        return graph_name(self.slug)

    @property
    def identity_blocking(self) -> bool:
        """Whether a scene clip whose characters are not recognised holds back the final cut."""
        return self.identity_check == "block"

    @property
    def owners(self) -> tuple[str, ...]:
        """Who to ask about the project's assets in the UI: the spec's owners, else the
        project's own team."""
        return self.spec_owners or (f"team:{self.prefix}",)

    def tags_of_scene(self, scene_key: str) -> tuple[str, ...]:
        return dict(self.scene_tags).get(scene_key, ())

    def scenes_of_tag(self) -> dict[str, list[str]]:
        mapping: dict[str, list[str]] = {tag: [] for tag in self.tags}
        for scene_key, tags in self.scene_tags:
            for tag in tags:
                mapping[tag].append(scene_key)
        return mapping


@dataclass(frozen=True)
class InvalidProject:
    """A project left out of the graph, with the reason and what a person does about it."""

    slug: str
    reason: str

    @property
    def fix(self) -> str:
        return (
            "fix the spec and import it again (a corrected slug is a new project), or hide this "
            f"one: vidpipe-dagster archive {shell_word(self.slug)}"
        )

    def describe(self) -> str:
        return f"project {self.slug!r} is left out of the Dagster graph: {self.reason}; {self.fix}"


@dataclass(frozen=True)
class ProjectGraphs:
    """Every project that forms a valid graph, and the ones left out (with their reasons)."""

    graphs: tuple[ProjectGraph, ...]
    invalid: tuple[InvalidProject, ...] = ()


def graphs_to_json(report: ProjectGraphs) -> str:
    """The graphs as text, for Dagster's reconstruction metadata (what run workers rebuild)."""
    return json.dumps(
        {
            "graphs": [dataclasses.asdict(graph) for graph in report.graphs],
            "invalid": [dataclasses.asdict(bad) for bad in report.invalid],
        },
        sort_keys=True,
    )


def graphs_from_json(text: str) -> ProjectGraphs:
    data = json.loads(text)
    return ProjectGraphs(
        tuple(ProjectGraph(**_tuples(graph)) for graph in data["graphs"]),
        tuple(InvalidProject(**bad) for bad in data["invalid"]),
    )


def _tuples(value: Any) -> Any:
    """JSON arrays back to the tuples the frozen dataclasses hold (deeply)."""
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    return value


def shell_word(text: str) -> str:
    """``text`` quoted for a POSIX shell on one line (bash's ``$'…'`` when it holds control
    characters, e.g. the trailing newline an older import let into a slug)."""
    if text.isprintable():
        return shlex.quote(text)
    named = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", "'": "\\'"}
    out = []
    for ch in text:
        if ch in named:
            out.append(named[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\U{ord(ch):08x}" if ord(ch) > 0xFFFF else f"\\u{ord(ch):04x}")
    return "$'" + "".join(out) + "'"


def _scene_key(index: int) -> str:
    return str(index)


def load_project_graphs(database_url: str, *, include_archived: bool = False) -> list[ProjectGraph]:
    """All (active) projects that form a valid graph; an uninitialised database has none."""
    return list(load_project_graph_report(database_url, include_archived=include_archived).graphs)


def load_project_graph_report(
    database_url: str, *, include_archived: bool = False
) -> ProjectGraphs:
    """The valid graphs and the projects left out, from the database at ``database_url``."""
    if not inspect(get_engine(database_url)).has_table("projects"):
        return ProjectGraphs(())
    with session_factory(database_url)() as session:
        return read_project_graph_report(session, include_archived=include_archived)


def read_project_graphs(session: Session, *, include_archived: bool = False) -> list[ProjectGraph]:
    return list(read_project_graph_report(session, include_archived=include_archived).graphs)


def graph_problems(graph: ProjectGraph) -> list[str]:
    """Why these rows cannot become Dagster definitions (slug → group and asset key prefix,
    tags and scene indexes → partition keys); empty when they can."""
    problems = []
    if not is_valid_slug(graph.slug):
        problems.append(
            f"slug {graph.slug!r} is not 1-63 lowercase letters, digits or '-' (a Dagster group "
            "and asset key need exactly that)"
        )
    bad_tags = [t for t in graph.tags if not is_valid_tag(t)]
    if bad_tags:
        problems.append(f"manifest tag(s) {bad_tags!r} are not 1-40 letters, digits or '_'")
    bad_scenes = [k for k in graph.scene_keys if not 0 <= int(k) <= MAX_SCENE_INDEX]
    if bad_scenes:
        problems.append(f"scene index(es) {', '.join(bad_scenes)} outside 0..{MAX_SCENE_INDEX}")
    if graph.identity_check not in ("warn", "block"):
        problems.append(f"identity_check {graph.identity_check!r} is neither 'warn' nor 'block'")
    bad_owners = [o for o in graph.spec_owners if not is_valid_owner(o)]
    if bad_owners:
        problems.append(f"owner(s) {bad_owners!r} are neither an email address nor 'team:<name>'")
    return problems


def _owners(stored: Any) -> tuple[str, ...]:
    """The stored owners as a tuple; a value that is not a list of strings is kept as its text so
    ``graph_problems`` names it (the project is left out, never the code location)."""
    if stored is None:
        return ()
    if isinstance(stored, list) and all(isinstance(o, str) for o in stored):
        return tuple(stored)
    return (repr(stored),)


def _placed_tags(manifest_json: Any, index: int) -> list[Any]:
    if manifest_json is None:
        return []
    placements = manifest_json.get("placements", []) if isinstance(manifest_json, Mapping) else None
    if not isinstance(placements, Sequence) or isinstance(placements, str | bytes):
        raise ValueError(f"scene {index}'s stored manifest has no list of placements")
    if not all(isinstance(p, Mapping) for p in placements):
        raise ValueError(f"scene {index}'s stored placements are not all mappings")
    return [p.get("asset_tag") for p in placements]


def read_project_graph_report(session: Session, *, include_archived: bool = False) -> ProjectGraphs:
    """Four queries for all projects, grouped in one pass (linear in the rows); each project is
    checked on its own, so one bad row leaves out only its own project."""
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

    graphs: list[ProjectGraph] = []
    invalid: list[InvalidProject] = []
    for project in projects:
        indexes = sorted(scenes_of.get(project.id, []))
        known_indexes = set(indexes)
        tags = sorted(tags_of.get(project.manifest_id, set())) if project.manifest_id else []
        scene_tags = []
        try:
            for index, manifest_json in sorted(
                placements_of.get(project.id, []), key=lambda r: r[0]
            ):
                if index not in known_indexes:
                    continue
                known = tuple(sorted({t for t in _placed_tags(manifest_json, index) if t in tags}))
                if known:
                    scene_tags.append((_scene_key(index), known))
        except ValueError as exc:
            invalid.append(InvalidProject(project.slug, str(exc)))
            continue
        graph = ProjectGraph(
            slug=project.slug,
            name=project.name,
            video_model=project.video_model,
            has_manifest=project.manifest_id is not None,
            scene_keys=tuple(_scene_key(i) for i in indexes),
            tags=tuple(tags),
            scene_tags=tuple(scene_tags),
            identity_check=project.identity_check,
            spec_owners=_owners(project.owners),
        )
        if problems := graph_problems(graph):
            invalid.append(InvalidProject(project.slug, "; ".join(problems)))
        else:
            graphs.append(graph)
    return ProjectGraphs(tuple(graphs), tuple(invalid))
