"""Shared fixtures: an isolated VIDPIPE_HOME with a migrated database, and spec builders."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from PIL import Image
from sqlalchemy import event

from vidpipe_dagster.db.project_graphs import load_project_graphs
from vidpipe_dagster.db.session import get_engine, migrate, session_scope
from vidpipe_dagster.definitions import stage_context
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.project_import import import_project
from vidpipe_dagster.stages.scene_clip import ClipOptions
from vidpipe_dagster.stages.schedule import scenes_needing_clips


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A fresh VIDPIPE_HOME under tmp_path with the schema migrated.

    Built from an explicit environment (a developer's own variables never leak in); tests choose
    backends, models and budgets with ``settings.replace(...)``. The same variables are exported
    for tests that drive the CLI, which reads the environment as a user's shell would.
    """
    environment = {
        "VIDPIPE_HOME": str(tmp_path / "vidpipe_home"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        # never reload a developer's running UI from the tests: nothing listens on port 9
        "VIDPIPE_DAGSTER_WEBSERVER": "http://127.0.0.1:9",
        "VIDPIPE_FACE_MODEL_ROOT": str(tmp_path / "no-face-models"),
        # the set-up's weights (``make models``), wherever pytest is started from
        "VIDPIPE_MODELS_DIR": str(Path(__file__).resolve().parents[1] / ".vidpipe-models"),
    }
    for name in list(os.environ):
        if name.startswith("VIDPIPE_") or name in ("GOOGLE_CLOUD_PROJECT", "DAGSTER_HOME"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "dagster_home").mkdir()
    s = Settings.from_env(environment)
    s.ensure_dirs()
    migrate(s.database_url)
    return s


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def save_png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="PNG")
    return path


def small_spec(slug: str = "spring-ad", *, manifest: bool = True) -> dict[str, Any]:
    """The README's example spec (paths relative to the spec file)."""
    spec: dict[str, Any] = {
        "project": {
            "slug": slug,
            "name": "Spring ad",
            "target_clip_duration": 6,
            "aspect_ratio": "16:9",
            "video_model": "veo-3.1-generate-001",
        },
        "scenes": [
            {
                "index": 0,
                "prompt": "Mia walks into the park",
                "start_frame": "frames/0_start.png",
                "end_frame": "frames/0_end.png",
                "manifest": {
                    "composition": {
                        "shot_type": "close_up",
                        "camera_movement": "static",
                        "focal_point": "CHAR_01",
                    },
                    "placements": [
                        {"asset_tag": "CHAR_01", "role": "subject", "position": "center"},
                        {"asset_tag": "ENV_01", "role": "background", "position": "background"},
                    ],
                },
            },
            {
                "index": 1,
                "prompt": "The park at dusk",
                "start_frame": "frames/1_start.png",
                "end_frame": "frames/1_end.png",
                "manifest": {
                    "composition": {"shot_type": "establishing"},
                    "placements": [
                        {"asset_tag": "ENV_01", "role": "background"},
                        {"asset_tag": "CHAR_09", "role": "subject"},
                    ],
                },
            },
        ],
    }
    if manifest:
        spec["manifest"] = {
            "name": "spring cast",
            "assets": [
                {
                    "id": "mia",
                    "tag": "CHAR_01",
                    "type": "CHARACTER",
                    "name": "Mia",
                    "image": "img/mia.png",
                    "reverse_prompt": "young woman, red coat",
                    "quality_score": 8.0,
                },
                {
                    "id": "mia_face",
                    "tag": "CHAR_01",
                    "type": "CHARACTER",
                    "image": "img/mia_face.png",
                    "face_crop_of": "mia",
                    "quality_score": 8.5,
                },
                {
                    "id": "park",
                    "tag": "ENV_01",
                    "type": "ENVIRONMENT",
                    "image": "img/park.png",
                    "quality_score": 7.0,
                },
            ],
        }
    else:
        for scene in spec["scenes"]:
            scene.pop("manifest")
    return spec


SpecWriter = Callable[..., Path]


@pytest.fixture
def write_spec(tmp_path: Path) -> SpecWriter:
    """Write a spec dict and its images into a folder; returns the YAML path."""

    def write(spec: dict[str, Any], folder: str = "spec", images: bool = True) -> Path:
        root = tmp_path / folder
        root.mkdir(parents=True, exist_ok=True)
        if images:
            colors = iter(
                [
                    (200, 40, 40),
                    (220, 180, 160),
                    (40, 160, 60),
                    (60, 60, 200),
                    (90, 90, 90),
                    (250, 250, 0),
                    (0, 200, 200),
                    (120, 0, 120),
                ]
            )
            paths = [a["image"] for a in (spec.get("manifest") or {}).get("assets", [])]
            for scene in spec["scenes"]:
                paths += [scene.get("start_frame"), scene.get("end_frame")]
            for rel in paths:
                if rel and not (root / rel).exists():
                    save_png(root / rel, next(colors, (10, 10, 10)))
        path = root / "project.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        return path

    return write


@pytest.fixture
def imported(settings: Settings, write_spec: SpecWriter) -> Callable[..., str]:
    """Import a spec into the test database; returns the slug."""

    def do(spec: dict[str, Any] | None = None, folder: str = "spec") -> str:
        spec = spec or small_spec()
        path = write_spec(spec, folder)
        with session_scope(settings.database_url) as session:
            import_project(session, path, settings.media_root)
        return spec["project"]["slug"]

    return do


def scene_needs(settings: Settings, slug: str = "spring-ad") -> tuple[list[Any], dict[str, str]]:
    """What the nightly schedule would see for a project: (scenes needing clips, blocked)."""
    [graph] = [g for g in load_project_graphs(settings.database_url) if g.slug == slug]
    return scenes_needing_clips(
        stage_context(settings), graph.slug, graph.scene_keys, graph.video_model, ClipOptions()
    )


def run_check_status(instance: dg.DagsterInstance, key: dg.AssetKey, name: str) -> str:
    """A per-scene check over the newest run that evaluated it: FAILED if any scene failed it,
    SUCCEEDED if every scene passed (checks are evaluated per partition)."""
    check = dg.AssetCheckKey(key, name)
    history = instance.event_log_storage.get_asset_check_execution_history(check, limit=1000)
    if not history:
        return "MISSING"
    newest_run = history[0].run_id
    statuses = {r.status.value for r in history if r.run_id == newest_run}
    return "FAILED" if "FAILED" in statuses else statuses.pop()


@contextmanager
def counted_statements(url: str) -> Iterator[list[str]]:
    """Every SQL statement sent on ``url``'s engine while the block runs."""
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = get_engine(url)
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)
