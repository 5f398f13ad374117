"""One imported project's Dagster graph, compared with a reviewed snapshot.

An accidental change to the graph (an asset key, a dependency, a partition, the tag→scene mapping,
a check, a tag, an owner, a pool, a job or schedule) fails here and shows in review. After an
intended change, regenerate it and review the diff:
``UPDATE_GRAPH_SNAPSHOT=1 .venv/bin/pytest tests/test_graph_snapshot.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from tests.conftest import small_spec
from vidpipe_dagster.definitions import defs
from vidpipe_dagster.settings import Settings

SNAPSHOT = Path(__file__).parent / "snapshots" / "graph_spring_ad.json"


def graph_snapshot(definitions: dg.Definitions) -> dict[str, Any]:
    graph = definitions.resolve_asset_graph()
    assets: dict[str, Any] = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        parts = node.partitions_def
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "partitions": list(parts.get_partition_keys()) if parts else None,
            "code_version": node.code_version,
            "kinds": sorted(node.kinds),
            "tags": {k: v for k, v in sorted(node.tags.items()) if not k.startswith("dagster/")},
            "owners": list(node.owners),
            "pools": sorted(node.pools or []),
            "checks": sorted(c.name for c in node.check_keys),
            "automation": node.automation_condition is not None,
        }
    refs = dg.AssetKey(["spring_ad", "scene_references"])
    clean = dg.AssetKey(["spring_ad", "clean_sheet"])
    mapping = graph.get_partition_mapping(refs, clean)
    tags_def, scenes_def = graph.get(clean).partitions_def, graph.get(refs).partitions_def
    scenes_of_tag = {
        tag: sorted(
            mapping.get_downstream_partitions_for_partitions(
                tags_def.empty_subset().with_partition_keys([tag]), tags_def, scenes_def
            ).get_partition_keys()
        )
        for tag in tags_def.get_partition_keys()
    }
    specs = [graph.get_check_spec(key) for key in graph.asset_check_keys]
    checks = {
        f"{spec.asset_key.to_user_string()}:{spec.name}": {
            "partitioned": spec.partitions_def is not None,
            "blocking": spec.blocking,
        }
        for spec in sorted(specs, key=lambda s: (s.asset_key.to_user_string(), s.name))
    }
    repository = definitions.get_repository_def()
    return {
        "assets": assets,
        "scenes_of_tag": scenes_of_tag,
        "checks": checks,
        "jobs": {
            job.name: {
                "assets": sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys),
                "tags": dict(sorted(job.tags.items())),
            }
            for job in sorted(repository.get_all_jobs(), key=lambda j: j.name)
            if not job.name.startswith("__")
        },
        "schedules": {
            s.name: {"cron": s.cron_schedule, "job": s.job_name, "status": s.default_status.value}
            for s in repository.schedule_defs
        },
        "sensors": {s.name: s.default_status.value for s in repository.sensor_defs},
    }


def test_one_projects_graph_matches_the_snapshot(settings: Settings, imported) -> None:
    imported(small_spec("spring-ad"))
    current = graph_snapshot(defs())
    if os.environ.get("UPDATE_GRAPH_SNAPSHOT"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, (
        "the graph changed; if that was intended, regenerate the snapshot "
        "(UPDATE_GRAPH_SNAPSHOT=1) and review the diff"
    )
