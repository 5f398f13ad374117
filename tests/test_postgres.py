"""PostgreSQL as the system of record and as Dagster's storage, compared with SQLite (WAL).

The postgres-marked tests need ``VIDPIPE_TEST_POSTGRES_URL`` (``bash .ci/postgres.sh`` starts a
local server and prints it) and are skipped without it; each makes its own database and drops it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select

from tests.conftest import SpecWriter, small_spec
from tests.pg import dagster_pg_env, requires_postgres, temporary_database
from vidpipe_dagster.db.models import (
    Base,
    GenerationLedger,
    Project,
    Scene,
    SceneManifest,
    VideoClip,
)
from vidpipe_dagster.db.session import (
    VERSION_TABLE,
    alembic_config,
    current_revision,
    get_engine,
    migrate,
    session_scope,
)
from vidpipe_dagster.runner import StageReport, materialize_project
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.project_import import import_project

REPO = Path(__file__).resolve().parents[1]
DEPLOY_YAML = REPO / "deploy" / "dagster.yaml"
WRITERS = 8
ROUNDS = 15


@pytest.fixture
def pg_url() -> Iterator[str]:
    with temporary_database() as url:
        yield url


def _settings(tmp_path: Path, url: str) -> Settings:
    settings = Settings(home=tmp_path / "home", database_url=url, media_root=tmp_path / "media")
    settings.ensure_dirs()
    return settings


def _import(settings: Settings, spec_path: Path) -> None:
    with session_scope(settings.database_url) as session:
        import_project(session, spec_path, settings.media_root)


def _many_scenes_spec(count: int) -> dict[str, Any]:
    """The small spec with ``count`` scenes (extra scenes reuse scene 0's frames and placements)."""
    spec = small_spec()
    template = spec["scenes"][0]
    for index in range(len(spec["scenes"]), count):
        spec["scenes"].append({**template, "index": index, "prompt": f"Scene {index}"})
    return spec


@pytest.mark.postgres
@requires_postgres
def test_migrations_apply_cleanly(pg_url: str) -> None:
    migrate(pg_url)
    migrate(pg_url)  # every start runs it: a second run is a no-op
    head = ScriptDirectory.from_config(alembic_config(pg_url)).get_current_head()
    assert current_revision(pg_url) == head
    with get_engine(pg_url).connect() as connection:
        diff = compare_metadata(
            MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}),
            Base.metadata,
        )
    assert diff == [], f"models and migrations differ on PostgreSQL: {diff}"

    from alembic import command

    command.downgrade(alembic_config(pg_url), "base")
    assert not {"projects", "generation_ledger"} & set(
        inspect(get_engine(pg_url)).get_table_names()
    )
    migrate(pg_url)
    assert current_revision(pg_url) == head


@pytest.mark.postgres
@requires_postgres
def test_import_and_materialize_scene_references(
    tmp_path: Path,
    pg_url: str,
    write_spec: SpecWriter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VIDPIPE_DATABASE_URL", raising=False)
    settings = _settings(tmp_path, pg_url)
    migrate(pg_url)
    _import(settings, write_spec(small_spec()))
    _import(settings, write_spec(small_spec()))  # re-import in place works on PostgreSQL too
    with dg.DagsterInstance.ephemeral() as instance:
        [report] = materialize_project(
            "spring-ad", ["references"], instance=instance, settings=settings
        )
    assert report.failed == {}
    assert report.succeeded == ["0", "1"]
    with session_scope(pg_url) as session:
        rows = session.execute(
            select(SceneManifest.scene_index, SceneManifest.selected_reference_tags)
            .join(Project, Project.id == SceneManifest.project_id)
            .where(Project.slug == "spring-ad")
            .order_by(SceneManifest.scene_index)
        ).all()
    assert [(i, tags) for i, tags in rows] == [
        (0, ["CHAR_01", "CHAR_01", "ENV_01"]),
        (1, ["ENV_01"]),
    ]


@pytest.mark.postgres
@requires_postgres
def test_scenes_finishing_together_record_every_clip(
    tmp_path: Path, pg_url: str, write_spec: SpecWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real clip stage on PostgreSQL: 8 scenes rendered concurrently in one step."""
    monkeypatch.delenv("VIDPIPE_DATABASE_URL", raising=False)
    monkeypatch.setenv("VIDPIPE_VIDEO_BACKEND", "animatic")
    settings = _settings(tmp_path, pg_url)
    migrate(pg_url)
    _import(settings, write_spec(_many_scenes_spec(WRITERS)))
    with dg.DagsterInstance.ephemeral() as instance:
        reports = materialize_project(
            "spring-ad", ["references", "clips"], instance=instance, settings=settings
        )
    scenes = [str(i) for i in range(WRITERS)]
    assert [(r.succeeded, r.failed) for r in reports] == [(scenes, {}), (scenes, {})]
    with session_scope(pg_url) as session:
        clips = session.execute(
            select(Scene.scene_index, VideoClip.status, VideoClip.file_url)
            .join(VideoClip, VideoClip.scene_id == Scene.id)
            .order_by(Scene.scene_index)
        ).all()
        ledger = session.scalars(select(GenerationLedger.state)).all()
    assert [(i, status) for i, status, _ in clips] == [(i, "done") for i in range(WRITERS)]
    assert all((settings.media_root / path).is_file() for _, _, path in clips)
    assert sorted(ledger) == ["done"] * WRITERS


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, requires_postgres])]
)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'concurrent.db'}"
        return
    with temporary_database() as url:
        yield url


def test_concurrent_writers_lose_nothing(
    backend_url: str, tmp_path: Path, write_spec: SpecWriter
) -> None:
    """Scenes finishing at the same moment (one thread per scene) each keep their own writes."""
    settings = _settings(tmp_path, backend_url)
    migrate(backend_url)
    _import(settings, write_spec(_many_scenes_spec(WRITERS)))
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def scene_worker(index: int) -> None:
        try:
            start.wait(timeout=30)
            for round_ in range(ROUNDS):
                with session_scope(backend_url) as session:  # what a finishing scene does
                    manifest = session.scalars(
                        select(SceneManifest)
                        .join(Project, Project.id == SceneManifest.project_id)
                        .where(Project.slug == "spring-ad", SceneManifest.scene_index == index)
                    ).one()
                    manifest.selected_reference_tags = [f"S{index}", f"R{round_}"]
                    session.add(
                        GenerationLedger(
                            fingerprint=uuid.uuid4().hex,
                            kind="video",
                            model="veo-3.1-generate-001",
                            backend="animatic",
                            project_slug="spring-ad",
                            subject=f"scene {index}",
                            state="done",
                            cost_usd=0.5,
                        )
                    )
        except BaseException as exc:  # collected: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=scene_worker, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    assert errors == []

    with session_scope(backend_url) as session:
        count = session.scalar(select(func.count()).select_from(GenerationLedger))
        per_scene = dict(
            session.execute(
                select(GenerationLedger.subject, func.count()).group_by(GenerationLedger.subject)
            ).all()
        )
        tags = dict(
            session.execute(
                select(SceneManifest.scene_index, SceneManifest.selected_reference_tags)
            ).all()
        )
    assert count == WRITERS * ROUNDS
    assert per_scene == {f"scene {i}": ROUNDS for i in range(WRITERS)}
    assert tags == {i: [f"S{i}", f"R{ROUNDS - 1}"] for i in range(WRITERS)}


@pytest.mark.postgres
@requires_postgres
def test_deploy_instance_config_loads_and_records_runs(
    tmp_path: Path,
    pg_url: str,
    write_spec: SpecWriter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """deploy/dagster.yaml loads on dagster 1.13 against a real PostgreSQL and keeps run history."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(DEPLOY_YAML, dagster_home / "dagster.yaml")
    pg_env = dagster_pg_env(pg_url)
    for key, value in pg_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.delenv("VIDPIPE_DATABASE_URL", raising=False)

    # The documented way to give the Veo pool its own limit, through the real CLI.
    pool = "veo"  # scene_clip's pool
    cli = subprocess.run(
        [sys.executable, "-m", "dagster", "instance", "concurrency", "set", pool, "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        concurrency = instance.get_concurrency_config()
        queue = concurrency.run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 6
        assert {limit["key"] for limit in queue.tag_concurrency_limits} == {
            "dagster/backfill",
            "vidpipe/project",
        }
        assert concurrency.pool_config.default_pool_limit == 2
        assert instance.event_log_storage.get_concurrency_info(pool).slot_count == 3

        # The project's tables live in their own database (ownership, backups); their Alembic
        # version table is vidpipe_alembic_version, so it never collides with Dagster's.
        with temporary_database("vidpipe_app") as app_url:
            report = _materialize_small_project(tmp_path, app_url, write_spec, instance)
        assert report.succeeded == ["0", "1"]
        key = dg.AssetKey(["spring_ad", "scene_references"])
        assert instance.get_materialized_partitions(key) == {"0", "1"}


def _materialize_small_project(
    tmp_path: Path, url: str, write_spec: SpecWriter, instance: dg.DagsterInstance
) -> StageReport:
    settings = _settings(tmp_path, url)
    migrate(url)
    _import(settings, write_spec(small_spec()))
    [report] = materialize_project(
        "spring-ad", ["references"], instance=instance, settings=settings
    )
    return report


@pytest.mark.postgres
@requires_postgres
def test_dagster_storage_and_project_schema_share_one_database(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both are versioned by Alembic; separate version tables let either migrate first."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(DEPLOY_YAML, dagster_home / "dagster.yaml")
    for key, value in dagster_pg_env(pg_url).items():
        monkeypatch.setenv(key, value)

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:  # Dagster migrates first
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    migrate(pg_url)
    migrate(pg_url)
    head = ScriptDirectory.from_config(alembic_config(pg_url)).get_current_head()
    assert current_revision(pg_url) == head
    tables = set(inspect(get_engine(pg_url)).get_table_names())
    assert {"alembic_version", VERSION_TABLE, "runs", "projects", "generation_ledger"} <= tables
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:  # and still opens
        assert instance.get_runs_count() == 0
