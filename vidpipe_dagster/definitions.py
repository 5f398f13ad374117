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
from vidpipe_dagster.db.project_graphs import ProjectGraph, load_project_graphs
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.settings import Settings


def default_resources(settings: Settings) -> dict[str, Any]:
    """Resources for the environment; a database URL from the environment stays an EnvVar."""
    url: Any = (
        dg.EnvVar("VIDPIPE_DATABASE_URL")
        if os.environ.get("VIDPIPE_DATABASE_URL")
        else settings.database_url
    )
    return {
        "database": DatabaseResource(url=url),
        "media": MediaStoreResource(root=str(settings.media_root)),
    }


def build_definitions(
    graphs: Sequence[ProjectGraph], resources: dict[str, Any] | None = None
) -> dg.Definitions:
    assets: list[Any] = []
    for graph in graphs:
        assets.extend(build_project_assets(graph))
    return dg.Definitions(
        assets=assets,
        resources=resources if resources is not None else default_resources(Settings.from_env()),
    )


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    return build_definitions(
        load_project_graphs(settings.database_url), default_resources(settings)
    )
