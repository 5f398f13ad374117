"""One materialization per scene, with the provenance Dagster reads to decide staleness.

A range of scenes runs in one step (the clip engine submits them together), and a step's output
would materialize every partition at once with one borrowed data version. So scene steps yield no
output: they emit each scene's ``AssetMaterialization`` as it finishes, tagged the way Dagster tags
the materializations it makes itself (code version, data version, and per input the data version
and the event it was read at), so that ``staleStatus`` in the UI is the truth per scene. These tag
names are what Dagster's data-version provenance reads (docs/architecture.md, "Staleness").
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg

DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
USER_PROVIDED_TAG = "dagster/data_version_is_user_provided"
INPUT_VERSION_PREFIX = "dagster/input_data_version"
INPUT_POINTER_PREFIX = "dagster/input_event_pointer"

Inputs = Mapping[dg.AssetKey, Sequence[str]]  # dependency -> its partitions this scene read
InputsOf = Callable[[str], Inputs]  # scene key -> its inputs


def observation(key: dg.AssetKey, partition: str, data_version: str) -> dg.AssetObservation:
    """A source's version for one partition (what an observable source reports)."""
    return dg.AssetObservation(
        asset_key=key, partition=partition, tags={DATA_VERSION_TAG: data_version}
    )


class InputVersions:
    """The newest event of every input partition a range of scenes read, fetched once per step
    (two queries per input asset) instead of once per scene and input: per scene those lookups
    were most of a cached rerun's own time (about 7 ms each on SQLite, five per scene).

    Build it just before the stage reads its inputs, after any upstream stage of the same step
    has materialized: the versions are then those the scenes read.
    """

    def __init__(
        self,
        instance: dg.DagsterInstance,
        scenes: Sequence[str],
        inputs_of: InputsOf,
        sources: set[dg.AssetKey],
    ) -> None:
        self._inputs = {scene: inputs_of(scene) for scene in scenes}
        wanted: dict[dg.AssetKey, set[str]] = {}
        for scene_inputs in self._inputs.values():
            for dep, partitions in scene_inputs.items():
                wanted.setdefault(dep, set()).update(partitions)
        self._latest = {
            dep: _latest_by_partition(instance, dep, partitions, dep in sources)
            for dep, partitions in wanted.items()
            if partitions
        }

    def tags(self, scene: str) -> dict[str, str]:
        """Per input, the data version and storage id of the newest event among the partitions
        this scene read (the cursor after which a change to any of them makes the scene stale)."""
        tags: dict[str, str] = {}
        for dep, partitions in self._inputs[scene].items():
            version, pointer = "none", None
            if partitions:
                latest = self._latest.get(dep, {})
                found = [latest[p] for p in partitions if p in latest]
                version, pointer = (
                    max(found, key=lambda item: item[1]) if found else ("unknown", None)
                )
            name = dep.to_user_string()
            tags[f"{INPUT_VERSION_PREFIX}/{name}"] = version
            # "NULL": read before that input had any event (Dagster's own marker for it)
            tags[f"{INPUT_POINTER_PREFIX}/{name}"] = str(pointer) if pointer is not None else "NULL"
        return tags


def materialization(
    key: dg.AssetKey,
    partition: str,
    *,
    data_version: str,
    code_version: str,
    input_tags: Mapping[str, str],
    metadata: Mapping[str, Any],
) -> dg.AssetMaterialization:
    """A scene's materialization carrying its own versions and those of the inputs it used
    (``InputVersions.tags``)."""
    tags = {
        CODE_VERSION_TAG: code_version,
        DATA_VERSION_TAG: data_version,
        USER_PROVIDED_TAG: "true",
        **input_tags,
    }
    return dg.AssetMaterialization(asset_key=key, partition=partition, metadata=metadata, tags=tags)


def _latest_by_partition(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: set[str], source: bool
) -> dict[str, tuple[str, int]]:
    """Each partition's newest event of ``key`` (an observation for a source): its data version
    and storage id, in two queries (the ids, then their data-version tags, which Dagster indexes
    for exactly this lookup)."""
    kind = (
        dg.DagsterEventType.ASSET_OBSERVATION
        if source
        else dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    storage = instance.event_log_storage
    ids = storage.get_latest_storage_id_by_partition(key, kind, partitions)
    if not ids:
        return {}
    versions = storage.get_latest_tags_by_partition(
        key, kind, [DATA_VERSION_TAG], list(ids), before_cursor=max(ids.values()) + 1
    )
    return {
        partition: (versions.get(partition, {}).get(DATA_VERSION_TAG, "unknown"), storage_id)
        for partition, storage_id in ids.items()
    }
