"""Alembic owns the schema: fresh databases migrate to head, and the models match the migrations."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from vidpipe_dagster.db.models import AssetCleanReference, Base
from vidpipe_dagster.db.session import (
    VERSION_TABLE,
    alembic_config,
    current_revision,
    get_engine,
    migrate,
)


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
        diff = compare_metadata(
            MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}),
            Base.metadata,
        )
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


def test_database_from_before_the_version_table_rename_is_adopted(tmp_path: Path) -> None:
    """A schema recorded under the old ``alembic_version`` name upgrades in place."""
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    migrate(url)
    with get_engine(url).begin() as connection:
        connection.execute(text(f"ALTER TABLE {VERSION_TABLE} RENAME TO alembic_version"))
    assert current_revision(url) is None

    migrate(url)  # would fail with "table projects already exists" if it started from scratch

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert current_revision(url) == head


def test_a_foreign_alembic_version_table_is_left_alone(tmp_path: Path) -> None:
    """Dagster's storage in the same database keeps its own version row untouched."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with get_engine(url).begin() as connection:
        connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        connection.execute(text("INSERT INTO alembic_version VALUES ('6df03f4b1efb')"))

    migrate(url)

    with get_engine(url).connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).all() == [
            ("6df03f4b1efb",)
        ]
    assert "projects" in inspect(get_engine(url)).get_table_names()
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert current_revision(url) == head


def test_0002_tags_existing_embeddings_as_insightface_cosines(tmp_path: Path) -> None:
    """Before 0002 insightface was the only engine: its embeddings keep working after upgrade,
    and are never mistaken for another engine's."""
    url = f"sqlite:///{tmp_path / 'before.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0001")
    with get_engine(url).begin() as connection:
        connection.execute(text("INSERT INTO manifests (id, name) VALUES ('m1', 'cast')"))
        for key, embedding in (("hero", b"\x00\x00\x80?"), ("ball", None)):
            connection.execute(
                text(
                    "INSERT INTO assets (id, manifest_id, asset_key, manifest_tag, asset_type, "
                    "is_face_crop, face_embedding) VALUES (:id, 'm1', :key, 'T', 'CHARACTER', 0, "
                    ":embedding)"
                ),
                {"id": key, "key": key, "embedding": embedding},
            )
    command.upgrade(config, "0002")
    assert current_revision(url) == "0002"
    with get_engine(url).connect() as connection:
        tagged = connection.execute(
            text("SELECT asset_key, face_embedding_engine, face_embedding_metric FROM assets")
        ).all()
    assert sorted(tagged) == [("ball", None, None), ("hero", "insightface", "cosine")]
    tables = set(inspect(get_engine(url)).get_table_names())
    assert {"clean_sheet_face_scores", "clip_identity_scores"} <= tables
    command.downgrade(config, "0001")
    assert "clip_identity_scores" not in set(inspect(get_engine(url)).get_table_names())
