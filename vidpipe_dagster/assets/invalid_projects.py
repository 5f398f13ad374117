"""One small asset per project left out of the graph, so the UI says which and why.

Dagster has no notion of "this part of the code location failed": an exception while loading
fails every project. Instead ``definitions.py`` leaves a project with bad rows out and adds one
unpartitioned asset for it in the group ``invalid_projects``: its description (visible in the
asset graph and catalog without running anything) gives the reason and the fix, and
materializing it fails with the same one line.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import dagster as dg

from vidpipe_dagster.db.project_graphs import InvalidProject

INVALID_GROUP = "invalid_projects"


def invalid_project_key(slug: str) -> dg.AssetKey:
    """A valid, stable asset key for any slug (the slug itself may be what is wrong)."""
    readable = re.sub(r"[^A-Za-z0-9_]+", "_", slug).strip("_")[:40] or "project"
    digest = hashlib.sha256(slug.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return dg.AssetKey([INVALID_GROUP, f"{readable}_{digest}"])


def _report_asset(bad: InvalidProject) -> dg.AssetsDefinition:
    @dg.asset(
        key=invalid_project_key(bad.slug),
        group_name=INVALID_GROUP,
        description=f"NOT LOADED: {bad.describe()}",
        metadata={"project": repr(bad.slug), "reason": bad.reason, "fix": bad.fix},
        kinds={"python"},
    )
    def _not_loaded() -> None:
        raise dg.Failure(description=bad.describe(), allow_retries=False)

    return _not_loaded


def build_invalid_projects_report(invalid: Sequence[InvalidProject]) -> dg.Definitions:
    return dg.Definitions(assets=[_report_asset(bad) for bad in invalid])
