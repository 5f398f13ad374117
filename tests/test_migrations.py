"""Alembic owns the schema: fresh databases migrate to head, and the models match the migrations."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from vidpipe_dagster.db.models import AssetCleanReference, Base
from vidpipe_dagster.db.session import alembic_config, current_revision, get_engine, migrate


def test_fresh_database_migrates_to_head_idempotently(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    migrate(url)
    migrate(url)  # a second start is a no-op
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert current_revision(url) == head
    tables = set(inspect(get_engine(url)).get_table_names())
    assert {"projects", "assets", "asset_clean_references", "generation_ledger"} <= tables


def test_models_match_migrations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'compare.db'}"
    migrate(url)
    with get_engine(url).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], f"models and migrations differ; add a migration: {diff}"


def test_clean_reference_has_exactly_the_plan_columns() -> None:
    assert [c.name for c in AssetCleanReference.__table__.columns] == [
        "id",
        "asset_id",
        "tier",
        "clean_image_url",
        "generation_prompt",
        "face_similarity_score",
        "quality_score",
        "is_primary",
        "generation_cost",
        "created_at",
    ]
