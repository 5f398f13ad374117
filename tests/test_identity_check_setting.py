"""``project.identity_check``: warn (default) or block, from the spec to the project's graph and
its ``characters_recognisable`` check spec; a bad value is one line naming the field."""

from __future__ import annotations

import dagster as dg
import pytest
from sqlalchemy import select, update

from tests.conftest import SpecWriter, small_spec
from tests.state import snapshot
from vidpipe_dagster.db.models import Project
from vidpipe_dagster.db.project_graphs import load_project_graph_report, load_project_graphs
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.definitions import build_definitions
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.project_import import SpecError, import_project

CHECK = dg.AssetCheckKey(dg.AssetKey(["spring_ad", "scene_clip"]), "characters_recognisable")


def import_spec(settings: Settings, write_spec: SpecWriter, identity_check: str | None) -> str:
    spec = small_spec()
    if identity_check is not None:
        spec["project"]["identity_check"] = identity_check
    with session_scope(settings.database_url) as session:
        summary = import_project(session, write_spec(spec), settings.media_root)
    return ", ".join(summary.changed)


def check_spec(settings: Settings) -> dg.AssetCheckSpec:
    definitions = build_definitions(load_project_graphs(settings.database_url), settings)
    [spec] = [
        s
        for a in definitions.resolve_asset_graph().assets_defs
        for s in a.check_specs
        if s.key == CHECK
    ]
    return spec


def test_default_is_warn_and_block_makes_the_check_blocking(
    settings: Settings, write_spec: SpecWriter
) -> None:
    import_spec(settings, write_spec, None)
    [graph] = load_project_graphs(settings.database_url)
    assert graph.identity_check == "warn" and not graph.identity_blocking
    assert check_spec(settings).blocking is False
    assert check_spec(settings).partitions_def is not None, "evaluated per scene"

    summary = import_spec(settings, write_spec, "block")
    assert "identity_check changed" in summary
    [graph] = load_project_graphs(settings.database_url)
    assert graph.identity_blocking
    assert check_spec(settings).blocking is True
    with session_scope(settings.database_url) as session:
        assert session.scalars(select(Project.identity_check)).one() == "block"


def test_a_bad_value_names_the_field_and_changes_nothing(
    settings: Settings, write_spec: SpecWriter
) -> None:
    before = snapshot(settings)
    with pytest.raises(SpecError) as info:
        import_spec(settings, write_spec, "strict")
    message = str(info.value)
    assert "project.identity_check" in message and "'warn' or 'block'" in message, message
    assert snapshot(settings) == before


def test_a_hand_edited_value_leaves_the_project_out_saying_why(
    settings: Settings, write_spec: SpecWriter
) -> None:
    import_spec(settings, write_spec, None)
    with session_scope(settings.database_url) as session:
        session.execute(update(Project).values(identity_check="BLOCK"))
    report = load_project_graph_report(settings.database_url)
    assert report.graphs == ()
    [bad] = report.invalid
    assert "identity_check 'BLOCK' is neither 'warn' nor 'block'" in bad.reason
