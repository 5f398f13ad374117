"""Dagster's own staleness is the project's, per scene, read over GraphQL from a real code server.

An edited prompt, a new clean sheet and a new model each mark exactly the affected scene partitions
stale, and the nightly schedule requests exactly those scenes: the UI and the schedule agree.
"""

from __future__ import annotations

import copy
from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql.test.utils import define_out_of_process_workspace, execute_dagster_graphql

from tests.conftest import SpecWriter, save_png, scene_needs, small_spec
from vidpipe_dagster.cli import main
from vidpipe_dagster.runner import ensure_dagster_home, materialize_project
from vidpipe_dagster.settings import Settings

REPO = Path(__file__).resolve().parents[2]
STALENESS = """
query Staleness($assetKey: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode { staleStatusByPartition(partitions: $partitions) }
  }
}
"""

pytestmark = pytest.mark.slow


def stale_scenes(workspace, slug: str, asset: str, scenes: list[str]) -> set[str]:
    """The scenes the UI shows stale now (a new request context each time, as the UI makes)."""
    result = execute_dagster_graphql(
        workspace.create_request_context(),
        STALENESS,
        {"assetKey": {"path": [slug.replace("-", "_"), asset]}, "partitions": scenes},
    )
    statuses = result.data["assetNodeOrError"]["staleStatusByPartition"]
    assert "MISSING" not in statuses, statuses
    return {scene for scene, status in zip(scenes, statuses, strict=True) if status == "STALE"}


def test_the_ui_marks_exactly_the_affected_scenes_stale(
    settings: Settings, write_spec: SpecWriter, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(REPO)
    spec = small_spec()
    assert main(["import", str(write_spec(spec))]) == 0
    ensure_dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        materialize_project(
            "spring-ad",
            ["clean-sheets", "references", "clips"],
            settings=settings,
            instance=instance,
        )
        with define_out_of_process_workspace("workspace.yaml", None, instance) as context:
            scenes = ["0", "1"]
            assert stale_scenes(context, "spring-ad", "scene_clip", scenes) == set()
            assert scene_needs(settings)[0] == []

            edited = copy.deepcopy(spec)  # an edited prompt: scene 1 only
            edited["scenes"][1]["prompt"] = "The park at night"
            assert main(["import", str(write_spec(edited))]) == 0
            assert stale_scenes(context, "spring-ad", "scene_clip", scenes) == {"1"}
            assert {need.key for need in scene_needs(settings)[0]} == {"1"}
            materialize_project(
                "spring-ad",
                ["references", "clips"],
                partitions=["1"],
                settings=settings,
                instance=instance,
            )
            assert stale_scenes(context, "spring-ad", "scene_clip", scenes) == set()

            # a new photo of CHAR_01 (and so a new clean sheet): scene 0 places it, 1 does not
            save_png(tmp_path / "spec/img/mia.png", (10, 200, 90))
            assert main(["import", str(write_spec(edited))]) == 0
            assert stale_scenes(context, "spring-ad", "scene_clip", scenes) == {"0"}
            assert {need.key for need in scene_needs(settings)[0]} == {"0"}
            materialize_project(
                "spring-ad",
                ["clean-sheets"],
                partitions=["CHAR_01"],
                settings=settings,
                instance=instance,
            )
            assert stale_scenes(context, "spring-ad", "scene_clip", scenes) == {"0"}
            materialize_project(
                "spring-ad",
                ["references", "clips"],
                partitions=["0"],
                settings=settings,
                instance=instance,
            )
            assert stale_scenes(context, "spring-ad", "scene_clip", scenes) == set()

            model = copy.deepcopy(edited)  # another model: every scene
            model["project"]["video_model"] = "veo-3.1-fast-generate-001"
            assert main(["import", str(write_spec(model))]) == 0
            assert stale_scenes(context, "spring-ad", "scene_clip", scenes) == {"0", "1"}
            assert {need.key for need in scene_needs(settings)[0]} == {"0", "1"}
