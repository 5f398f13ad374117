"""``project.owners``: who the UI names as owner of a project's assets, from the spec (default the
project's team); a bad owner is one line naming the field, and changes nothing."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
from sqlalchemy import update

from tests.conftest import SpecWriter, small_spec
from tests.state import snapshot
from vidpipe_dagster.db.models import Project
from vidpipe_dagster.db.project_graphs import (
    graphs_from_json,
    graphs_to_json,
    load_project_graph_report,
    load_project_graphs,
)
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.definitions import build_definitions
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.project_import import SpecError, import_project


def import_spec(settings: Settings, write_spec: SpecWriter, owners: Any = None) -> str:
    spec = small_spec()
    if owners is not None:
        spec["project"]["owners"] = owners
    with session_scope(settings.database_url) as session:
        summary = import_project(session, write_spec(spec), settings.media_root)
    return ", ".join(summary.changed)


def owners_in_ui(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Each of the project's assets and the owners Dagster holds for it."""
    definitions = build_definitions(load_project_graphs(settings.database_url), settings)
    graph = definitions.resolve_asset_graph()
    return {
        key.to_user_string(): tuple(graph.get(key).owners)
        for key in graph.get_all_asset_keys()
        if key.path[0] == "spring_ad"
    }


def test_owners_default_to_the_team_and_follow_the_spec(
    settings: Settings, write_spec: SpecWriter
) -> None:
    import_spec(settings, write_spec)
    shown = owners_in_ui(settings)
    assert "spring_ad/scene_clip" in shown and "spring_ad/keyframes" in shown
    assert set(shown.values()) == {("team:spring_ad",)}, shown

    people = ["ana@studio.example", "team:editorial"]
    assert "owners changed" in import_spec(settings, write_spec, people)
    shown = owners_in_ui(settings)
    assert set(shown.values()) == {tuple(people)}, shown
    [graph] = load_project_graphs(settings.database_url)
    assert graphs_from_json(graphs_to_json(load_project_graph_report(settings.database_url))) == (
        load_project_graph_report(settings.database_url)
    ), "run workers rebuild the same owners"
    assert graph.owners == tuple(people)


@pytest.mark.parametrize(
    ("owners", "reason"),
    [
        (["editorial"], "must be an email address or a team name after 'team:'"),
        (["team:"], "must be an email address or a team name after 'team:'"),
        (["ana@studio.example", "ana@studio.example"], "must not repeat a name"),
        ([], "at least 1 item"),
    ],
)
def test_a_bad_owner_names_the_field_and_changes_nothing(
    settings: Settings, write_spec: SpecWriter, owners: list[str], reason: str
) -> None:
    import_spec(settings, write_spec)
    before = snapshot(settings)
    with pytest.raises(SpecError) as info:
        import_spec(settings, write_spec, owners)
    message = str(info.value)
    assert "project.owners" in message and reason in message, message
    assert snapshot(settings) == before


def test_a_hand_edited_owner_leaves_only_that_project_out(
    settings: Settings, write_spec: SpecWriter
) -> None:
    import_spec(settings, write_spec)
    with session_scope(settings.database_url) as session:
        session.execute(update(Project).values(owners=["nobody"]))
    report = load_project_graph_report(settings.database_url)
    assert report.graphs == ()
    [bad] = report.invalid
    assert "owner(s) ['nobody'] are neither an email address nor 'team:<name>'" in bad.reason
    definitions = build_definitions(report.graphs, settings, invalid=report.invalid)
    assert isinstance(definitions, dg.Definitions)
