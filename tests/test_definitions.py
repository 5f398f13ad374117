"""The per-project graph: loads for several projects, validates, and has exact lineage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg

from tests.conftest import small_spec
from vidpipe_dagster.db.project_graphs import load_project_graphs
from vidpipe_dagster.definitions import build_definitions, defs
from vidpipe_dagster.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def _two_scene_lineage_spec(slug: str) -> dict:
    spec = small_spec(slug)
    spec["scenes"].append(
        {
            "index": 2,
            "prompt": "Empty street",
            "start_frame": "frames/0_start.png",
            "manifest": {
                "composition": {"shot_type": "wide_shot"},
                "placements": [{"asset_tag": "ENV_01", "role": "background"}],
            },
        }
    )
    return spec


def test_definitions_load_for_several_projects(settings: Settings, imported) -> None:
    imported(_two_scene_lineage_spec("spring-ad"), folder="a")
    imported(small_spec("autumn-ad"), folder="b")
    imported(small_spec("no-cast", manifest=False), folder="c")
    definitions = defs()
    dg.Definitions.validate_loadable(definitions)
    graph = definitions.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    for prefix in ("spring_ad", "autumn_ad"):
        assert {
            f"{prefix}/scene_references",
            f"{prefix}/reference_image",
            f"{prefix}/keyframes",
        } <= keys
    assert "no_cast/scene_references" in keys and "no_cast/reference_image" not in keys
    node = graph.get(dg.AssetKey(["spring_ad", "scene_references"]))
    assert node.group_name == "spring_ad"
    assert node.partitions_def.get_partition_keys() == ["0", "1", "2"]
    no_cast = graph.get(dg.AssetKey(["no_cast", "scene_references"]))
    assert {k.path[-1] for k in no_cast.parent_keys} == {"storyboard"}  # no clean sheets


def test_lineage_is_exact_per_scene(settings: Settings, imported) -> None:
    imported(_two_scene_lineage_spec("spring-ad"))
    [graph_spec] = load_project_graphs(settings.database_url)
    # scene 0 places CHAR_01 and ENV_01; scene 1 ENV_01 (+ undeclared CHAR_09); scene 2 ENV_01
    assert dict(graph_spec.scene_tags) == {
        "0": ("CHAR_01", "ENV_01"),
        "1": ("ENV_01",),
        "2": ("ENV_01",),
    }
    asset_graph = build_definitions([graph_spec], settings).resolve_asset_graph()
    refs = dg.AssetKey(["spring_ad", "scene_references"])
    clean = dg.AssetKey(["spring_ad", "clean_sheet"])
    mapping = asset_graph.get_partition_mapping(refs, clean)
    scenes_def = asset_graph.get(refs).partitions_def
    tags_def = dg.StaticPartitionsDefinition(["CHAR_01", "ENV_01"])

    def downstream_of(tag: str) -> set[str]:
        subset = tags_def.empty_subset().with_partition_keys([tag])
        result = mapping.get_downstream_partitions_for_partitions(subset, tags_def, scenes_def)
        return set(result.get_partition_keys())

    assert downstream_of("CHAR_01") == {"0"}  # a new CHAR_01 sheet stales scene 0 only
    assert downstream_of("ENV_01") == {"0", "1", "2"}


def test_empty_database_loads_no_projects(settings: Settings) -> None:
    definitions = defs()
    assert not list(definitions.resolve_asset_graph().get_all_asset_keys())


def test_dagster_cli_validates_workspace(settings: Settings, imported) -> None:
    imported()
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Validation successful" in proc.stderr + proc.stdout


def test_project_jobs_tag_their_runs_with_project_and_scene(
    settings: Settings, imported, instance: dg.DagsterInstance
) -> None:
    imported(small_spec("spring-ad"), folder="a")
    imported(small_spec("no-cast", manifest=False), folder="b")
    definitions = defs()
    names = {job.name for job in definitions.resolve_all_job_defs()}
    assert {"spring_ad_scenes_job", "spring_ad_clean_sheets_job", "no_cast_scenes_job"} <= names
    assert "no_cast_clean_sheets_job" not in names

    job = definitions.resolve_job_def("spring_ad_scenes_job")
    result = job.execute_in_process(instance=instance, partition_key="1")
    assert result.success
    tags = instance.get_run_by_id(result.run_id).tags
    assert tags["vidpipe/project"] == "spring-ad" and tags["dagster/partition"] == "1"
    materialized = instance.get_materialized_partitions(dg.AssetKey(["spring_ad", "scene_clip"]))
    assert materialized == {"1"}
