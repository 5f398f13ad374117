"""Dagster definitions: one ``dg.Definitions`` per project (``assets.factory``), merged, plus the
resources built from ``settings.Settings``.

Projects are read from the database when definitions load (small queries), so a newly imported
project appears after a code-location reload; docs/architecture.md says how run workers load them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from vidpipe_dagster.assets.factory import build_project_definitions
from vidpipe_dagster.db.project_graphs import ProjectGraph, load_project_graphs
from vidpipe_dagster.resources.budget import BudgetResource
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.resources.models import LocalModelsResource
from vidpipe_dagster.resources.vertex import VertexResource
from vidpipe_dagster.settings import Settings


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
        ),
        "budget": BudgetResource(
            per_run_usd=settings.budget_per_run_usd, per_day_usd=settings.budget_per_day_usd
        ),
    }


def build_definitions(
    graphs: Sequence[ProjectGraph],
    settings: Settings,
    resources: dict[str, Any] | None = None,
) -> dg.Definitions:
    """Each project's definitions, merged, with the resources they share."""
    shared = dg.Definitions(
        resources=resources if resources is not None else default_resources(settings)
    )
    return dg.Definitions.merge(
        shared, *(build_project_definitions(graph, settings) for graph in graphs)
    )


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    return build_definitions(load_project_graphs(settings.database_url), settings)
