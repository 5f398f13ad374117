"""One project whose rows cannot form a graph is left out and reported; the others still load."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import small_spec
from vidpipe_dagster.assets.invalid_projects import INVALID_GROUP, invalid_project_key
from vidpipe_dagster.db.project_graphs import (
    ProjectGraph,
    load_project_graph_report,
    load_project_graphs,
    shell_word,
)
from vidpipe_dagster.db.session import get_engine
from vidpipe_dagster.definitions import build_definitions, defs
from vidpipe_dagster.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def sql(settings: Settings, statement: str) -> None:
    """Change rows behind the application's back, as an older import or a hand edit did."""
    with get_engine(settings.database_url).begin() as connection:
        connection.exec_driver_sql(statement)


@pytest.fixture
def two_projects(settings: Settings, imported) -> None:
    imported(small_spec("spring-ad"), folder="a")
    imported(small_spec("autumn-ad"), folder="b")


def asset_keys(definitions: dg.Definitions) -> set[str]:
    return {k.to_user_string() for k in definitions.resolve_asset_graph().get_all_asset_keys()}


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        (
            "UPDATE projects SET slug = 'autumn-ad' || char(10) WHERE slug = 'autumn-ad'",
            "slug 'autumn-ad\\n' is not 1-63 lowercase letters",
        ),
        (
            "UPDATE assets SET manifest_tag = 'ENV 01' WHERE manifest_tag = 'ENV_01' AND "
            "manifest_id = (SELECT manifest_id FROM projects WHERE slug = 'autumn-ad')",
            "manifest tag(s) ['ENV 01'] are not 1-40 letters",
        ),
        (
            'UPDATE scene_manifests SET manifest_json = \'{"placements": "CHAR_01"}\' '
            "WHERE project_id = (SELECT id FROM projects WHERE slug = 'autumn-ad')",
            "stored manifest has no list of placements",
        ),
    ],
    ids=["slug-with-newline", "tag-with-space", "placements-not-a-list"],
)
def test_a_bad_row_leaves_out_only_its_project(
    settings: Settings,
    two_projects: None,
    statement: str,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sql(settings, statement)
    with caplog.at_level(logging.WARNING):
        definitions = defs()
    dg.Definitions.validate_loadable(definitions)
    keys = asset_keys(definitions)
    assert "spring_ad/scene_clip" in keys and "spring_ad/final_cut" in keys
    assert not any(k.startswith("autumn_ad/") for k in keys)

    report = load_project_graph_report(settings.database_url)
    [bad] = report.invalid
    assert reason in bad.reason, bad.reason
    assert [g.slug for g in load_project_graphs(settings.database_url)] == ["spring-ad"]

    # the code server's log says it, once per load, with the reason and the fix
    [warning] = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert reason in warning and "vidpipe-dagster archive" in warning

    # the UI shows it: an asset in the group invalid_projects, described with the reason
    node = definitions.resolve_asset_graph().get(invalid_project_key(bad.slug))
    assert node.group_name == INVALID_GROUP
    assert reason in (node.description or "")
    [asset] = [
        a
        for a in definitions.assets or []
        if isinstance(a, dg.AssetsDefinition) and invalid_project_key(bad.slug) in a.keys
    ]
    result = dg.materialize([asset], raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert reason in str(failure.step_failure_data.user_failure_data.description)


def test_a_project_whose_definitions_fail_to_build_is_left_out(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    good = ProjectGraph("good", "Good", "veo-3.1-generate-001", False, ("0",), (), ())
    # a placement of a tag the project does not have: the partition mapping cannot be built
    broken = ProjectGraph(
        "broken", "Broken", "veo-3.1-generate-001", True, ("0",), ("A",), (("0", ("B",)),)
    )
    with caplog.at_level(logging.WARNING):
        definitions = build_definitions([good, broken], settings)
    keys = asset_keys(definitions)
    assert "good/scene_clip" in keys and not any(k.startswith("broken/") for k in keys)
    assert invalid_project_key("broken").to_user_string() in keys
    assert any("'broken' is left out" in r.getMessage() for r in caplog.records)


def test_report_keys_are_valid_and_distinct_for_any_slug() -> None:
    slugs = ["a\n", "a\r", "A B", "", "ü" * 80, "../x"]
    keys = {invalid_project_key(s) for s in slugs}
    assert len(keys) == len(slugs)
    for slug in slugs:
        dg.Definitions(assets=[dg.AssetSpec(invalid_project_key(slug))])  # a valid key


def test_shell_word_gives_a_pasteable_argument() -> None:
    assert shell_word("spring-ad") == "spring-ad"
    assert shell_word("autumn-ad\n") == "$'autumn-ad\\n'"
    assert shell_word("it's") == "'it'\"'\"'s'"


def test_dagster_definitions_validate_passes_and_names_the_project(
    settings: Settings, two_projects: None
) -> None:
    sql(settings, "UPDATE projects SET slug = 'autumn-ad' || char(10) WHERE slug = 'autumn-ad'")
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-2000:]
    assert "Validation successful" in output
    assert "project 'autumn-ad\\n' is left out of the Dagster graph" in output
    assert "vidpipe-dagster archive $'autumn-ad\\n'" in output
