"""The versions a scene's materialization says it read, fetched once for a range of scenes, and
Dagster's SQLite event log kept open while a step reports."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from vidpipe_dagster.assets import event_log
from vidpipe_dagster.assets.provenance import (
    INPUT_POINTER_PREFIX,
    INPUT_VERSION_PREFIX,
    InputVersions,
    observation,
)

KEYFRAMES = dg.AssetKey(["p", "keyframes"])  # an observed source, per scene
CLEAN = dg.AssetKey(["p", "clean_sheet"])  # materialized, per tag


def _materialize(instance: dg.DagsterInstance, partition: str, version: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(CLEAN, partition=partition, tags={"dagster/data_version": version})
    )


def _newest(instance: dg.DagsterInstance, key: dg.AssetKey, partitions: list[str], source: bool):
    """What a scene read, looked up on its own: the newest event among its partitions."""
    fetch = instance.fetch_observations if source else instance.fetch_materializations
    records = fetch(dg.AssetRecordsFilter(asset_key=key, asset_partitions=partitions), limit=1)
    return records.records[0] if records.records else None


def test_one_read_for_all_scenes_gives_each_scene_the_newest_event_it_read(
    instance: dg.DagsterInstance,
) -> None:
    for scene, version in (("0", "k0"), ("1", "k1"), ("0", "k0-edited")):
        instance.report_runless_asset_event(observation(KEYFRAMES, scene, version))
    for tag, version in (("CHAR_01", "c1"), ("CHAR_02", "c2"), ("CHAR_01", "c1-redone")):
        _materialize(instance, tag, version)
    inputs = {
        "0": {KEYFRAMES: ["0"], CLEAN: ["CHAR_01", "CHAR_02"]},
        "1": {KEYFRAMES: ["1"], CLEAN: ["CHAR_02", "CHAR_09"]},  # CHAR_09 never materialized
        "2": {KEYFRAMES: ["2"], CLEAN: []},  # never observed; no tags at all
    }
    versions = InputVersions(instance, list(inputs), inputs.__getitem__, sources={KEYFRAMES})

    for scene, scene_inputs in inputs.items():
        tags = versions.tags(scene)
        for dep, partitions in scene_inputs.items():
            name = dep.to_user_string()
            record = _newest(instance, dep, list(partitions), dep == KEYFRAMES)
            if not partitions:
                expected = ("none", "NULL")
            elif record is None:
                expected = ("unknown", "NULL")
            else:
                event = record.asset_observation or record.asset_materialization
                expected = (event.tags["dagster/data_version"], str(record.storage_id))
            found = (tags[f"{INPUT_VERSION_PREFIX}/{name}"], tags[f"{INPUT_POINTER_PREFIX}/{name}"])
            assert found == expected, (scene, name)
    assert versions.tags("0")[f"{INPUT_VERSION_PREFIX}/p/clean_sheet"] == "c1-redone"
    assert versions.tags("0")[f"{INPUT_VERSION_PREFIX}/p/keyframes"] == "k0-edited"


@pytest.fixture
def sqlite_instance(tmp_path: Path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        yield instance


def test_the_event_log_stays_open_only_for_the_block_and_only_on_files_dagster_made(
    sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    key = dg.AssetKey(["p", "scene_clip"])
    sqlite_instance.report_runless_asset_event(dg.AssetMaterialization(key, partition="0"))
    index = Path(sqlite_instance.event_log_storage.path_for_shard(event_log.INDEX_SHARD))
    wal = index.with_name(index.name + "-wal")
    assert index.is_file() and not wal.exists()  # Dagster's last connection removed its log

    with event_log.kept_open(sqlite_instance, "no-such-run") as held:
        assert held == 1  # the index; a run file that does not exist is not created
        sqlite_instance.report_runless_asset_event(dg.AssetMaterialization(key, partition="1"))
        assert wal.exists()  # kept between events: no checkpoint and new log per event
        before = sqlite_instance.fetch_materializations(key, limit=10).records
    assert not Path(sqlite_instance.event_log_storage.path_for_shard("no-such-run")).exists()
    assert not wal.exists()  # released: Dagster's storage is as it was
    assert [r.partition_key for r in before] == ["1", "0"]
    with sqlite3.connect(index) as connection:  # and readable by anyone
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_other_event_storages_are_left_alone(instance: dg.DagsterInstance) -> None:
    with event_log.kept_open(instance, "any-run") as held:
        assert held == 0
