"""Project spec fields of issue 11: resolution, takes and a per-scene model, checked against the
model catalog at import (one line naming the field and the catalog's reason; nothing changes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from tests.conftest import SpecWriter, small_spec
from vidpipe_dagster.db.models import Project, Scene
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.domain.catalog import load_catalog
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.project_import import SpecError, import_project

CATALOG_FILE = Path(__file__).parents[1] / "vidpipe_dagster" / "domain" / "model_catalog.yaml"


def spec_with(project: dict[str, Any] | None = None, scene: dict[str, Any] | None = None) -> dict:
    spec = small_spec()
    spec["project"].update(project or {})
    spec["scenes"][1].update(scene or {})
    return spec


def do_import(settings: Settings, path: Path, **kwargs: Any) -> str:
    with session_scope(settings.database_url) as session:
        return import_project(session, path, settings.media_root, **kwargs).describe()


def test_defaults_are_720p_one_take_and_the_projects_model(
    settings: Settings, write_spec: SpecWriter
) -> None:
    do_import(settings, write_spec(small_spec()))
    with session_scope(settings.database_url) as session:
        project = session.scalars(select(Project)).one()
        assert (project.resolution, project.takes) == ("720p", 1)
        assert [s.video_model for s in project.scenes] == [None, None]


def test_fields_are_stored_and_a_change_is_reported(
    settings: Settings, write_spec: SpecWriter
) -> None:
    spec = spec_with(
        {"resolution": "1080p", "takes": 3}, {"video_model": "veo-3.1-fast-generate-001"}
    )
    do_import(settings, write_spec(spec))
    with session_scope(settings.database_url) as session:
        project = session.scalars(select(Project)).one()
        assert (project.resolution, project.takes) == ("1080p", 3)
        assert [s.video_model for s in project.scenes] == [None, "veo-3.1-fast-generate-001"]
    spec["project"]["takes"] = 2
    spec["scenes"][1]["video_model"] = None
    summary = do_import(settings, write_spec(spec))
    assert "takes changed" in summary and "scene 1 video_model changed" in summary


REJECTIONS = [
    (
        {"video_model": "veo-2.0-generate-001"},
        None,
        "project.video_model: veo-2.0-generate-001 is retired on 2026-06-30 "
        "(use veo-3.1-generate-001)",
    ),
    (
        {"video_model": "veo-9"},
        None,
        "project.video_model: unknown video model 'veo-9'; known models:",
    ),
    (
        {"video_model": "gemini-omni-1.1-flash"},
        None,
        "project.video_model: video model 'gemini-omni-1.1-flash': Gemini Omni video models",
    ),
    (
        {"video_model": "veo-3.1-lite-generate-001", "resolution": "4k"},
        None,
        "project.resolution: veo-3.1-lite-generate-001 does not offer resolution 4k "
        "(it offers 720p, 1080p)",
    ),
    (
        {"resolution": "8k"},
        None,
        "project.resolution: veo-3.1-generate-001 does not offer resolution 8k",
    ),
    (
        {"takes": 5},
        None,
        "project.takes: veo-3.1-generate-001 makes 1 to 4 takes per request, not 5",
    ),
    ({"takes": 0}, None, "project.takes: Input should be greater than or equal to 1"),
    (
        None,
        {"video_model": "veo-3.1-fast-generate-preview"},
        "scenes.1.video_model (scene 1): veo-3.1-fast-generate-preview is retired on 2026-10-22",
    ),
    (
        {"resolution": "4k"},
        {"video_model": "veo-3.1-lite-generate-001"},
        "scenes.1.video_model (with project.resolution) (scene 1): veo-3.1-lite-generate-001 "
        "does not offer resolution 4k",
    ),
]


@pytest.mark.parametrize(("project", "scene", "message"), REJECTIONS)
def test_bad_model_choices_are_rejected_with_the_catalogs_reason(
    settings: Settings,
    write_spec: SpecWriter,
    project: dict[str, Any] | None,
    scene: dict[str, Any] | None,
    message: str,
) -> None:
    with pytest.raises(SpecError) as info:
        do_import(settings, write_spec(spec_with(project, scene)))
    assert message in str(info.value)
    assert str(info.value).count("\n") == 1, "one line under the heading"
    with session_scope(settings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(Project)) == 0
        assert session.scalar(select(func.count()).select_from(Scene)) == 0
    media = settings.media_root / "projects"
    assert not media.exists() or not any(media.rglob("*.png")), "nothing copied"


def test_a_users_catalog_decides_what_imports(
    settings: Settings, write_spec: SpecWriter, tmp_path: Path
) -> None:
    data = yaml.safe_load(CATALOG_FILE.read_text(encoding="utf-8"))
    data["video_models"]["veo-3.1-generate-001"]["max_samples"] = 2
    mine = tmp_path / "catalog.yaml"
    mine.write_text(yaml.safe_dump(data), encoding="utf-8")
    path = write_spec(spec_with({"takes": 3}))
    with pytest.raises(SpecError, match="makes 1 to 2 takes per request, not 3"):
        do_import(settings, path, catalog=load_catalog(mine))
    do_import(settings, path)  # the packaged catalog allows 4
