"""Materialize ``scene_references`` in-process and read the rows and checks back."""

from __future__ import annotations

import dagster as dg
from sqlalchemy import select

from tests.conftest import save_png, small_spec
from vidpipe_dagster.db.models import Asset, AssetCleanReference, Project, SceneManifest
from vidpipe_dagster.db.queries import primary_clean_sheet
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.runner import materialize_project
from vidpipe_dagster.settings import Settings


def _rows(settings: Settings, slug: str) -> dict[int, list[str] | None]:
    with session_scope(settings.database_url) as session:
        project = session.scalars(select(Project).where(Project.slug == slug)).one()
        return {
            sm.scene_index: sm.selected_reference_tags
            for sm in session.scalars(
                select(SceneManifest).where(SceneManifest.project_id == project.id)
            )
        }


def test_selection_is_persisted_with_checks_and_preview(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
) -> None:
    slug = imported()
    [report] = materialize_project(slug, ["references"], instance=instance, settings=settings)
    assert report.succeeded == ["0", "1"] and not report.failed
    assert _rows(settings, slug) == {0: ["CHAR_01", "CHAR_01", "ENV_01"], 1: ["ENV_01"]}

    key = dg.AssetKey(["spring_ad", "scene_references"])
    event = instance.get_latest_materialization_event(key)
    assert event is not None
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=["0"]), limit=1
    ).records[0]
    metadata = record.asset_materialization.metadata
    assert metadata["selected_reference_tags"].value == ["CHAR_01", "CHAR_01", "ENV_01"]
    assert "data:image/jpeg;base64," in metadata["preview"].value
    assert "CHAR_01 (face crop, original)" in metadata["preview"].value
    scene1 = (
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=["1"]), limit=1
        )
        .records[0]
        .asset_materialization.metadata
    )
    assert scene1["skipped_undeclared_tags"].value == ["CHAR_09"]

    for check in (
        "at_most_three_references",
        "selected_tags_are_in_manifest",
        "persisted_tags_match_selection",
    ):
        evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(key, check)]
        )[dg.AssetCheckKey(key, check)]
        assert evaluation.status.value == "SUCCEEDED", check


def test_project_without_manifest_selects_nothing(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
) -> None:
    slug = imported(small_spec("plain", manifest=False))
    [report] = materialize_project(slug, ["references"], instance=instance, settings=settings)
    assert report.succeeded == ["0", "1"]
    record = instance.fetch_materializations(
        dg.AssetKey(["plain", "scene_references"]), limit=1
    ).records[0]
    assert record.asset_materialization.metadata["reference_count"].value == 0
    assert "no manifest" in record.asset_materialization.metadata["reason"].value
    assert _rows(settings, slug) == {}


def test_a_range_run_logs_no_data_version_warnings(
    settings: Settings, imported, instance: dg.DagsterInstance
) -> None:
    slug = imported()
    materialize_project(slug, ["references"], instance=instance, settings=settings)
    [run] = instance.get_runs()
    messages = [entry.user_message for entry in instance.all_logs(run.run_id)]
    assert messages and not [m for m in messages if "Data version mismatch" in m]


def test_selection_uses_the_primary_clean_sheet(
    settings: Settings, imported, instance: dg.DagsterInstance
) -> None:
    """The face crop shows its primary sheet (not the demoted one); the others stay original."""
    slug = imported()
    with session_scope(settings.database_url) as session:
        face = session.scalars(select(Asset).where(Asset.asset_key == "mia_face")).one()
        for name, primary in (("old", False), ("new", True)):
            rel = f"clean_sheets/{name}.png"
            save_png(settings.media_root / rel, (128, 128, 128))
            session.add(
                AssetCleanReference(
                    asset_id=face.id, tier="tier2_rembg", clean_image_url=rel, is_primary=primary
                )
            )
    materialize_project(slug, ["references"], instance=instance, settings=settings)
    key = dg.AssetKey(["spring_ad", "scene_references"])
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=["0"]), limit=1
    ).records[0]
    preview = record.asset_materialization.metadata["preview"].value
    assert "CHAR_01 (face crop, tier2 rembg)" in preview
    assert "CHAR_01 (full body, original)" in preview and "ENV_01 (full body, original)" in preview
    with session_scope(settings.database_url) as session:
        face = session.scalars(select(Asset).where(Asset.asset_key == "mia_face")).one()
        primary = primary_clean_sheet(session, face.id)
        assert primary is not None and primary.clean_image_url == "clean_sheets/new.png"
