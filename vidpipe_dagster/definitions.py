"""Dagster definitions: per-project assets and checks, resources, automation.

Projects are read from the database when definitions load (two small queries), so a newly imported
project appears after a code-location reload. See DESIGN.md for why this is not state-backed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import dagster as dg

from vidpipe_dagster.assets.factory import build_project_assets
from vidpipe_dagster.automation import build_backfill_schedules
from vidpipe_dagster.db.project_graphs import ProjectGraph, load_project_graphs
from vidpipe_dagster.jobs import build_project_jobs
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.resources.models import LocalModelsResource
from vidpipe_dagster.resources.vertex import VertexResource
from vidpipe_dagster.settings import Settings


def default_resources(settings: Settings) -> dict[str, Any]:
    """Resources for the environment; a database URL from the environment stays an EnvVar."""
    url: Any = (
        dg.EnvVar("VIDPIPE_DATABASE_URL")
        if os.environ.get("VIDPIPE_DATABASE_URL")
        else settings.database_url
    )
    env = os.environ
    return {
        "database": DatabaseResource(url=url),
        "media": MediaStoreResource(root=str(settings.media_root)),
        "models": LocalModelsResource(
            rembg_model=env.get("VIDPIPE_REMBG_MODEL") or "u2net",
            rembg_model_path=env.get("VIDPIPE_REMBG_MODEL_PATH") or None,
            face_model_root=env.get("VIDPIPE_FACE_MODEL_ROOT") or "~/.insightface",
            face_model_pack=env.get("VIDPIPE_FACE_MODEL_PACK") or "buffalo_l",
        ),
        "vertex": VertexResource(
            project=env.get("GOOGLE_CLOUD_PROJECT") or None,
            location=env.get("GOOGLE_CLOUD_LOCATION") or "us-central1",
            emulator_host=env.get("VIDPIPE_VERTEX_EMULATOR_HOST") or None,
            video_backend=env.get("VIDPIPE_VIDEO_BACKEND") or "auto",  # type: ignore[arg-type]
            image_model=env.get("VIDPIPE_IMAGE_MODEL") or "gemini-2.5-flash-image",
        ),
    }


def build_definitions(
    graphs: Sequence[ProjectGraph], resources: dict[str, Any] | None = None
) -> dg.Definitions:
    assets: list[Any] = []
    jobs: list[Any] = []
    for graph in graphs:
        assets.extend(build_project_assets(graph))
        jobs.extend(build_project_jobs(graph))
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=build_backfill_schedules(graphs),
        resources=resources if resources is not None else default_resources(Settings.from_env()),
    )


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    return build_definitions(
        load_project_graphs(settings.database_url), default_resources(settings)
    )
