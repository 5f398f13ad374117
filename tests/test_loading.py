"""Loading: a run worker rebuilds the graph the code server saw, without asking the database."""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.definitions_load_context import (  # the reader Dagster hides
    DefinitionsLoadContext,
    DefinitionsLoadType,
)
from dagster._core.definitions.repository_definition import RepositoryLoadData

from tests.conftest import counted_statements, small_spec
from vidpipe_dagster.db.project_graphs import (
    graphs_from_json,
    graphs_to_json,
    load_project_graph_report,
)
from vidpipe_dagster.definitions import GRAPHS_KEY, defs
from vidpipe_dagster.settings import Settings


def _keys(definitions: dg.Definitions) -> set[str]:
    return {k.to_user_string() for k in definitions.resolve_asset_graph().get_all_asset_keys()}


def test_graphs_survive_their_text_form(settings: Settings, imported) -> None:
    imported(small_spec("spring-ad"), folder="a")
    imported(small_spec("no-cast", manifest=False), folder="b")
    report = load_project_graph_report(settings.database_url)
    assert graphs_from_json(graphs_to_json(report)) == report


def test_a_run_worker_rebuilds_the_code_servers_graph_without_the_database(
    settings: Settings, imported
) -> None:
    imported(small_spec("spring-ad"), folder="a")
    served = defs()  # what the code server loads (INITIALIZATION)
    # what the code server hands a run worker: the definitions' reconstruction metadata
    metadata = dict(served.metadata or {})
    assert GRAPHS_KEY in metadata

    imported(small_spec("autumn-ad"), folder="b")  # imported after the code server loaded
    with counted_statements(settings.database_url) as statements:
        worker = DefinitionsLoadContext(
            load_type=DefinitionsLoadType.RECONSTRUCTION,
            repository_load_data=RepositoryLoadData(reconstruction_metadata=metadata),
        )
        with DefinitionsLoadContext.scoped(worker):
            rebuilt = defs()
    assert statements == []  # the worker asked the database nothing
    assert _keys(rebuilt) == _keys(served)  # the graph the run was launched against
    assert not any(key.startswith("autumn_ad/") for key in _keys(rebuilt))
    assert any(key.startswith("autumn_ad/") for key in _keys(defs()))  # a reload sees it
