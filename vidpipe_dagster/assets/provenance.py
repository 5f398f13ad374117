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


def materialization(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    partition: str,
    *,
    data_version: str,
    code_version: str,
    inputs: Inputs,
    sources: set[dg.AssetKey],
    metadata: Mapping[str, Any],
) -> dg.AssetMaterialization:
    """A scene's materialization carrying its own versions and those of the inputs it used.

    ``sources`` are the observed (external) inputs; the others are materialized assets.
    """
    tags = {
        CODE_VERSION_TAG: code_version,
        DATA_VERSION_TAG: data_version,
        USER_PROVIDED_TAG: "true",
    }
    for dep, partitions in inputs.items():
        version, pointer = _latest(instance, dep, partitions, dep in sources)
        name = dep.to_user_string()
        tags[f"{INPUT_VERSION_PREFIX}/{name}"] = version
        # "NULL": read before that input had any event (Dagster's own marker for it)
        tags[f"{INPUT_POINTER_PREFIX}/{name}"] = str(pointer) if pointer is not None else "NULL"
    return dg.AssetMaterialization(asset_key=key, partition=partition, metadata=metadata, tags=tags)


def _latest(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Sequence[str], source: bool
) -> tuple[str, int | None]:
    """The newest event among ``partitions`` of ``key``: its data version and storage id (the
    cursor after which a change to any of them makes this scene stale)."""
    if not partitions:
        return "none", None
    records_filter = dg.AssetRecordsFilter(asset_key=key, asset_partitions=list(partitions))
    fetch = instance.fetch_observations if source else instance.fetch_materializations
    records = fetch(records_filter, limit=1).records
    if not records:
        return "unknown", None
    record = records[0]
    event = record.asset_observation if source else record.asset_materialization
    return (event.tags or {}).get(
        DATA_VERSION_TAG, "unknown"
    ) if event else "unknown", record.storage_id
