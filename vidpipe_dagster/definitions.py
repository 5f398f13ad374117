"""Dagster definitions: one ``dg.Definitions`` per project (``assets.factory``), merged, plus the
resources built from ``settings.Settings``.

Projects are read from the database when definitions load (small queries), so a newly imported
project appears after a code-location reload; docs/architecture.md says how run workers load them.
A project whose rows cannot form a graph is left out (one bad row must not fail the whole code
location), logged as a warning, and shown as an asset in the group ``invalid_projects``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg

from vidpipe_dagster.assets.factory import build_project_definitions
from vidpipe_dagster.assets.invalid_projects import build_invalid_projects_report
from vidpipe_dagster.db.project_graphs import (
    InvalidProject,
    ProjectGraph,
    graphs_from_json,
    graphs_to_json,
    load_project_graph_report,
)
from vidpipe_dagster.resources.budget import BudgetResource
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.resources.models import LocalModelsResource
from vidpipe_dagster.resources.vertex import VertexResource
from vidpipe_dagster.sensors import build_final_cut_automation, build_inputs_sensor
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.context import StageContext


def default_resources(settings: Settings) -> dict[str, Any]:
    """Resources for these settings; a database URL from the environment stays an EnvVar (it may
    hold a password, which the UI must not show)."""
    url: Any = (
        dg.EnvVar("VIDPIPE_DATABASE_URL")
        if settings.database_url_from_env
        else settings.database_url
    )
    return {
        "database": DatabaseResource(url=url),
        "media": MediaStoreResource(root=str(settings.media_root)),
        "models": LocalModelsResource(
            rembg_model=settings.rembg_model,
            rembg_model_path=settings.rembg_model_path,
            models_dir=str(settings.models_dir) if settings.models_dir else None,
            face_engine=settings.face_engine,
            face_model_root=settings.face_model_root,
            face_model_pack=settings.face_model_pack,
        ),
        "vertex": VertexResource(
            project=settings.google_cloud_project,
            location=settings.google_cloud_location,
            emulator_host=settings.vertex_emulator_host,
            video_backend=settings.video_backend,
            image_model=settings.image_model,
            model_catalog=str(settings.model_catalog_path) if settings.model_catalog_path else None,
        ),
        "budget": BudgetResource(
            per_run_usd=settings.budget_per_run_usd, per_day_usd=settings.budget_per_day_usd
        ),
    }


def stage_context(settings: Settings) -> StageContext:
    """The plain objects a stage works with, built as the assets build them from these
    settings' resources (for the CLI, tools and tests that call a stage without Dagster)."""
    resources = default_resources(settings)
    return StageContext(
        database=resources["database"].database(),
        media=resources["media"].store(),
        backends=resources["vertex"].backends(),
        models=resources["models"].models(),
        budget=resources["budget"].budget(),
    )


log = logging.getLogger(__name__)


@contextlib.contextmanager
def long_lived_objects() -> Iterator[None]:
    """Build objects that live as long as the process without the cyclic garbage collector, then
    leave them out of its later passes (``gc.freeze``).

    Definitions are a few hundred thousand objects that stay until the process ends (a code
    server, a run worker). While they are built, each full collection walks all built so far, and
    afterwards every collection of Dagster's resolution walks them again: a third of a
    500-project load's time, and the part that grew faster than the project count
    (docs/architecture.md, "Loading"). The price is that cycles left over from building (about
    10 MB for 500 projects) are kept with the definitions instead of being collected.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def build_definitions(
    graphs: Sequence[ProjectGraph],
    settings: Settings,
    resources: dict[str, Any] | None = None,
    invalid: Sequence[InvalidProject] = (),
) -> dg.Definitions:
    """Each project's definitions, merged, with the resources they share. A project that cannot
    be built joins ``invalid``; those are logged and reported as assets, never raised."""
    resources = resources if resources is not None else default_resources(settings)
    parts = []
    left_out = list(invalid)
    with long_lived_objects():
        for graph in graphs:
            try:
                parts.append(build_project_definitions(graph, settings, resources))
            except Exception as exc:  # any one project's failure stays its own
                reason = " ".join(str(exc).split()) or type(exc).__name__
                left_out.append(
                    InvalidProject(graph.slug, f"its definitions fail to build: {reason}")
                )
    for bad in left_out:
        log.warning("vidpipe: %s", bad.describe())
    if left_out:
        parts.append(build_invalid_projects_report(left_out))
    shared = dg.Definitions(
        resources=resources,
        sensors=[build_inputs_sensor(graphs), build_final_cut_automation()],
    )
    return dg.Definitions.merge(shared, *parts)


GRAPHS_KEY = "vidpipe/project_graphs"


@dg.definitions
def defs() -> dg.Definitions:
    """The code location. The code server reads the projects from the database; a run worker
    rebuilds the same graph from the copy Dagster hands it (reconstruction metadata), so a
    project imported meanwhile cannot change the graph under a running run, and workers do not
    query the database to load (docs/architecture.md, "Loading")."""
    settings = Settings.from_env()
    stored = _reconstruction_metadata(GRAPHS_KEY)
    report = (
        graphs_from_json(stored)
        if stored is not None
        else load_project_graph_report(settings.database_url)
    )
    definitions = build_definitions(report.graphs, settings, invalid=report.invalid)
    return definitions.with_reconstruction_metadata({GRAPHS_KEY: graphs_to_json(report)})


def _reconstruction_metadata(key: str) -> str | None:
    """What the code server stored under ``key`` when this process rebuilds its definitions
    (a run worker), else None. Dagster 1.13 exposes the writing side publicly
    (``Definitions.with_reconstruction_metadata``) but not the reading one, so this one function
    reads it through ``DefinitionsLoadContext``; should that move, the loader reads the database."""
    try:
        from dagster._core.definitions.definitions_load_context import (
            DefinitionsLoadContext,
            DefinitionsLoadType,
        )
    except ImportError:  # pragma: no cover - a Dagster without it: read the database
        return None
    context = DefinitionsLoadContext.get()
    if context.load_type != DefinitionsLoadType.RECONSTRUCTION:
        return None
    value = context.reconstruction_metadata.get(key)
    return value if isinstance(value, str) else None
