"""Per-partition results from one step that handles several partitions (a single-run backfill).

Dagster skips a step's in-run downstream steps unless the step emits its output, and an output in
a range run creates an (empty) materialization for every partition. So: a single partition gets
one ``MaterializeResult`` with its metadata; a fully successful range gets a summary result first
and then each partition's own materialization, which becomes the latest one the UI shows; a range
with failures emits only the successful partitions, and downstream steps in the run are skipped.
"""

import warnings
from collections.abc import Iterator, Sequence

import dagster as dg

DATA_VERSION_TAG = "dagster/data_version"  # where Dagster reads a materialization's data version

# Single-run backfills are a deliberate choice (one process submits all scenes concurrently), and
# dagster 1.13 warns once per asset per project on every definitions load: 2 x 50 lines for 50
# projects in the webserver's log. Only this one beta parameter is silenced.
warnings.filterwarnings(
    "ignore", message=r"Parameter `backfill_policy` of function `asset`", category=dg.BetaWarning
)


def per_partition_results(
    materializations: Sequence[dg.AssetMaterialization], *, all_succeeded: bool
) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization]:
    if all_succeeded and len(materializations) == 1:
        only = materializations[0]
        version = (only.tags or {}).get(DATA_VERSION_TAG)
        yield dg.MaterializeResult(
            metadata=dict(only.metadata),
            data_version=dg.DataVersion(version) if version else None,
        )
        return
    if all_succeeded:
        # Dagster compares the step's output version with the asset's newest materialization
        # (the last partition's, emitted below) and warns on a mismatch; the summary is superseded
        # for every partition anyway, so it carries that version.
        last = (materializations[-1].tags or {}).get(DATA_VERSION_TAG) if materializations else None
        yield dg.MaterializeResult(
            metadata={
                "partitions_in_run": dg.MetadataValue.json([m.partition for m in materializations]),
                "details": "each partition's own materialization follows this summary",
            },
            data_version=dg.DataVersion(last) if last else None,
        )
    yield from materializations
