"""The Dagster UI as users drive it: a real webserver and daemon over a temporary VIDPIPE_HOME.

Through the webserver's GraphQL API (what the UI itself calls): list a project's assets and checks,
launch a backfill of every scene partition of the pipeline stages, let the daemon run it, read the
materializations and check results back, then import a second project and reload the code location.
Extending the backfill to a new stage is one more entry in ``STAGES``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from graphql import parse, validate

from tests.conftest import SpecWriter, small_spec
from vidpipe_dagster.cli import main
from vidpipe_dagster.db.project_graphs import graph_name
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.webserver_reload import (
    LOCATION_QUERY,
    RELOAD_MUTATION,
    post_graphql,
    reload_code_location,
)

REPO = Path(__file__).resolve().parents[2]
LOCATION = "vidpipe"
# Deadlines only for a test that is broken: every wait below ends as soon as its outcome shows,
# and these are generous enough for a 2-core machine that other work keeps busy (the daemon looks
# at backfills every 30 s, and each run starts a Python process that loads every project).
STARTUP_TIMEOUT_S = 600.0
BACKFILL_TIMEOUT_S = 900.0
QUERY_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Stage:
    """A stage asset the backfill materializes, and what each partition must show afterwards."""

    asset: str
    metadata: tuple[str, ...]  # metadata labels every materialization carries
    json_values: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # partition → label → value
    # check → partition → status, where it is not SUCCEEDED for every scene
    check_statuses: dict[str, dict[str, str]] = field(default_factory=dict)


STAGES: tuple[Stage, ...] = (
    Stage(
        "scene_references",
        ("selected_reference_tags", "reference_count", "preview"),
        {
            "0": {"selected_reference_tags": ["CHAR_01", "CHAR_01", "ENV_01"]},
            "1": {"selected_reference_tags": ["ENV_01"]},
        },
    ),
    Stage(
        "scene_clip",
        (
            "status",
            "backend",
            "path",
            "duration_seconds",
            "conditioning_mode",
            "cost_usd",
            "identity",
        ),
        # scene 0 places CHAR_01, whose references are flat colours: "not scored", a failed
        # WARN (never a pass); scene 1 places no character
        check_statuses={"characters_recognisable": {"0": "FAILED", "1": "SUCCEEDED"}},
    ),
)


ASSET_NODES_QUERY = """
query VidpipeAssetNodes {
  assetNodes {
    assetKey { path }
    groupName
    isMaterializable
    partitionKeys
    assetChecksOrError {
      __typename
      ... on AssetChecks { checks { name } }
    }
  }
}
"""

LAUNCH_BACKFILL_MUTATION = """
mutation VidpipeLaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

BACKFILL_QUERY = """
query VidpipeBackfill($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      status
      error { message }
      runs(limit: 100) { runId status }
    }
    ... on PythonError { message }
    ... on BackfillNotFoundError { message }
  }
}
"""

MATERIALIZATIONS_QUERY = """
query VidpipeMaterializations($assetKey: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $assetKey) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions) { partition runId }
      definition {
        latestMaterializationByPartition(partitions: $partitions) {
          partition
          runId
          metadataEntries {
            label
            __typename
            ... on JsonMetadataEntry { jsonString }
          }
        }
      }
    }
  }
}
"""

CHECK_EXECUTIONS_QUERY = """
query VidpipeCheckExecutions($assetKey: AssetKeyInput!, $checkName: String!) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: 100) {
    partition
    status
    runId
  }
}
"""

QUERIES = {
    "asset nodes": ASSET_NODES_QUERY,
    "launch backfill": LAUNCH_BACKFILL_MUTATION,
    "backfill": BACKFILL_QUERY,
    "materializations": MATERIALIZATIONS_QUERY,
    "check executions": CHECK_EXECUTIONS_QUERY,
    "reload": RELOAD_MUTATION,
    "code location status": LOCATION_QUERY,
}


def _free_port() -> int:
    """A port nobody listens on right now (bound, read, released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_queries_match_the_installed_graphql_schema(name: str) -> None:
    """Fast guard: a Dagster upgrade that renames a field fails here, not only in the e2e test."""
    from dagster_graphql.schema import create_schema

    errors = validate(create_schema().graphql_schema, parse(QUERIES[name]))
    assert errors == [], [e.message for e in errors]


def test_reload_without_a_webserver_says_what_to_do() -> None:
    result = reload_code_location(f"http://127.0.0.1:{_free_port()}", timeout=1.0)
    assert result.reloaded is False
    assert "Reload" in result.message and "dagster dev" in result.message


@dataclass
class Stub:
    """A stand-in webserver on 127.0.0.1. Reload mutations get the next of ``reloads`` (or, for
    ``HANG``, no answer until the test ends); location status queries the next of ``statuses``."""

    url: str
    reloads: list[Any] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)


HANG = "hang"


@pytest.fixture
def graphql_stub() -> Iterator[Stub]:
    released = threading.Event()
    stub = Stub("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))["query"]
            if "reloadRepositoryLocation" in query:
                stub.asked.append("reload")
                reply = stub.reloads.pop(0)
                if reply == HANG:  # a reload that takes longer than the client waits
                    released.wait()
                    return
            else:
                stub.asked.append("status")
                reply = stub.statuses.pop(0) if len(stub.statuses) > 1 else stub.statuses[0]
            body = json.dumps(reply).encode()
            self.send_response(200 if self.path == "/graphql" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _entry(location: dict[str, Any]) -> dict[str, Any]:
    entry = {"__typename": "WorkspaceLocationEntry", "name": LOCATION}
    return {"data": {"reloadRepositoryLocation": {**entry, "locationOrLoadError": location}}}


LOADED = {"__typename": "RepositoryLocation", "repositories": [{"name": "__repository__"}]}


def _status(load_status: str, updated: float, location: dict[str, Any] | None = None) -> dict:
    entry = {
        "__typename": "WorkspaceLocationEntry",
        "name": LOCATION,
        "loadStatus": load_status,
        "updatedTimestamp": updated,
        "locationOrLoadError": location or LOADED,
    }
    return {"data": {"workspaceLocationEntryOrError": entry}}


def test_reload_reads_each_answer_and_bypasses_proxies(
    graphql_stub: Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub = graphql_stub
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_free_port()}")  # must not be used
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{_free_port()}")
    stub.statuses.append(_status("LOADED", 0.0))
    stub.reloads += [
        _entry(LOADED),
        _entry({"__typename": "PythonError", "message": "Traceback...\nKeyError: 'slug'\n"}),
        {
            "data": {
                "reloadRepositoryLocation": {"__typename": "ReloadNotSupported", "message": "no"}
            }
        },
        {"errors": [{"message": "Cannot query field"}]},
    ]
    assert reload_code_location(stub.url).reloaded
    failed = reload_code_location(stub.url)
    assert not failed.reloaded and "KeyError: 'slug'" in failed.message
    refused = reload_code_location(stub.url)
    assert not refused.reloaded and "refused: no" in refused.message
    broken = reload_code_location(stub.url)
    assert not broken.reloaded and "Cannot query field" in broken.message
    assert stub.asked == ["status", "reload"] * 4  # asked whether it is there, then reloaded


def test_a_reload_slower_than_the_answer_is_followed_to_its_end(graphql_stub: Stub) -> None:
    """The webserver keeps reloading after the client stops waiting for the mutation's answer
    (what a loaded machine does): the location's own status says when it has reloaded."""
    stub = graphql_stub
    stub.reloads.append(HANG)
    stub.statuses += [
        _status("LOADED", 0.0),  # before: loaded long ago
        _status("LOADING", 0.0),  # the reload under way
        _status("LOADED", time.time() + 5.0),  # done after the request was sent
    ]
    result = reload_code_location(stub.url, timeout=1.0, clock=lambda: 0.0, sleep=lambda _s: None)
    assert result.reloaded, result.message
    assert result.message == f"reloaded code location {LOCATION!r} at {stub.url}"
    assert stub.asked == ["status", "reload", "status", "status"]


def test_a_reload_still_running_when_the_command_stops_waiting_says_so(
    graphql_stub: Stub,
) -> None:
    stub = graphql_stub
    stub.reloads.append(HANG)
    stub.statuses += [_status("LOADED", 0.0), _status("LOADING", 0.0)]
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    result = reload_code_location(stub.url, timeout=1.0, clock=lambda: now[0], sleep=sleep)
    assert not result.reloaded
    assert "had not finished" in result.message and "load status LOADING" in result.message
    assert "not reached" not in result.message  # it was reached: the message says what happened


def test_a_reload_that_failed_to_load_while_polled_says_why(graphql_stub: Stub) -> None:
    stub = graphql_stub
    stub.reloads.append(HANG)
    error = {"__typename": "PythonError", "message": "Traceback\nImportError: no module x\n"}
    stub.statuses += [_status("LOADED", 0.0), _status("LOADED", time.time() + 5.0, error)]
    result = reload_code_location(stub.url, timeout=1.0, sleep=lambda _s: None)
    assert not result.reloaded
    assert "failed to load: ImportError: no module x" in result.message


def _tool(name: str) -> str:
    """The console script from the running interpreter's environment (make test uses .venv)."""
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable}")
    return str(path)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} log ({self.log}) ---\n{text[-chars:]}"


def _start(name: str, args: list[str], env: dict[str, str], logs: Path) -> Process:
    """Start in its own process group, so stopping it also stops its code server and run workers."""
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Process(name, popen, log)


def _stop(process: Process, timeout: float = 20.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever of the group is left after ``timeout``."""
    pgid = process.popen.pid  # start_new_session: the group id is the leader's pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.popen.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):  # stragglers: code servers, run workers
        os.killpg(pgid, signal.SIGKILL)
    process.popen.wait(timeout=10)


def _wait_until(
    what: str, probe: Callable[[], Any], timeout: float, processes: list[Process]
) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with the processes' logs if not."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for process in processes:
            if process.popen.poll() is not None:
                pytest.fail(f"{process.name} exited ({process.popen.returncode})\n{process.tail()}")
        last = probe()
        if last:
            return last
        time.sleep(1.0)
    logs = "\n".join(p.tail() for p in processes)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})\n{logs}")


def _server_info(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return json.loads(response.read().decode())
    except (OSError, ValueError):
        return None


@dataclass
class DagsterUI:
    url: str
    processes: list[Process]

    def query(self, document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return post_graphql(self.url, document, variables, timeout=QUERY_TIMEOUT_S)

    def asset_nodes(self, prefix: str) -> dict[str, dict[str, Any]]:
        nodes = self.query(ASSET_NODES_QUERY)["assetNodes"]
        return {
            "/".join(n["assetKey"]["path"]): n for n in nodes if n["assetKey"]["path"][0] == prefix
        }


@pytest.fixture
def dagster_ui(
    settings: Settings, tmp_path: Path, imported: Callable[..., str]
) -> Iterator[DagsterUI]:
    """Webserver + daemon over the test's VIDPIPE_HOME and DAGSTER_HOME, one project imported."""
    imported(small_spec("spring-ad"), folder="first")
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    (dagster_home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster\n  class: QueuedRunCoordinator\n"
        "  config:\n    dequeue_interval_seconds: 1\n",
        encoding="utf-8",
    )
    # Create the instance's SQLite storages once, first: a webserver and a daemon starting together
    # on a fresh DAGSTER_HOME race to stamp its schema ("alembic_version has more than one head").
    with dg.DagsterInstance.from_config(str(dagster_home)):
        pass
    env = {  # offline and isolated: no outside database, media root, Vertex project or emulator
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VIDPIPE_", "GOOGLE_", "PYTEST_"))
    }
    env.update(
        VIDPIPE_HOME=str(settings.home),
        DAGSTER_HOME=str(dagster_home),
        VIDPIPE_VIDEO_BACKEND="animatic",
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    logs = tmp_path / "logs"
    logs.mkdir()
    processes: list[Process] = []
    try:
        processes.append(
            _start(
                "webserver",
                [
                    _tool("dagster-webserver"),
                    *("-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)),
                ],
                env,
                logs,
            )
        )
        processes.append(
            _start("daemon", [_tool("dagster-daemon"), "run", "-w", "workspace.yaml"], env, logs)
        )
        _wait_until("the webserver", lambda: _server_info(url), STARTUP_TIMEOUT_S, processes)
        ui = DagsterUI(url, processes)
        _wait_until(
            "the code location to load",
            lambda: ui.asset_nodes(graph_name("spring-ad")),
            STARTUP_TIMEOUT_S,
            processes,
        )
        yield ui
    finally:
        for process in reversed(processes):
            _stop(process)


def _launch_backfill(ui: DagsterUI, keys: list[list[str]], partitions: list[str]) -> str:
    result = ui.query(
        LAUNCH_BACKFILL_MUTATION,
        {
            "params": {
                "assetSelection": [{"path": key} for key in keys],
                "partitionNames": partitions,
                "title": "e2e: all scenes",
            }
        },
    )["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def _backfill_finished(ui: DagsterUI, backfill_id: str) -> dict[str, Any] | None:
    backfill = ui.query(BACKFILL_QUERY, {"backfillId": backfill_id})["partitionBackfillOrError"]
    assert backfill["__typename"] == "PartitionBackfill", backfill
    done = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
    return backfill if backfill["status"] in done else None


@pytest.mark.slow
@pytest.mark.webserver
@pytest.mark.timeout(2400)
def test_backfill_all_scenes_then_reload(
    dagster_ui: DagsterUI,
    write_spec: SpecWriter,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ui = dagster_ui
    prefix = graph_name("spring-ad")

    # The project's graph, as the UI lists it.
    nodes = ui.asset_nodes(prefix)
    for stage in STAGES:
        assert f"{prefix}/{stage.asset}" in nodes, sorted(nodes)
    assert f"{prefix}/keyframes" in nodes and f"{prefix}/reference_image" in nodes
    first = nodes[f"{prefix}/{STAGES[0].asset}"]
    scenes = first["partitionKeys"]
    assert scenes == ["0", "1"]
    checks = {
        stage.asset: [
            c["name"] for c in nodes[f"{prefix}/{stage.asset}"]["assetChecksOrError"]["checks"]
        ]
        for stage in STAGES
    }
    assert all(checks.values()), checks

    # Backfill every scene of every stage; the daemon submits the runs and finishes the backfill.
    keys = [[prefix, stage.asset] for stage in STAGES]
    backfill_id = _launch_backfill(ui, keys, scenes)
    backfill = _wait_until(
        f"backfill {backfill_id}",
        lambda: _backfill_finished(ui, backfill_id),
        BACKFILL_TIMEOUT_S,
        ui.processes,
    )
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert backfill["runs"] and all(r["status"] == "SUCCESS" for r in backfill["runs"]), backfill
    run_ids = {r["runId"] for r in backfill["runs"]}

    # What each scene shows in the UI: its latest materialization's metadata, and check results.
    for stage in STAGES:
        key = {"path": [prefix, stage.asset]}
        asset = ui.query(MATERIALIZATIONS_QUERY, {"assetKey": key, "partitions": scenes})
        asset = asset["assetOrError"]
        materialized = {
            e["partition"] for e in asset["assetMaterializations"] if e["runId"] in run_ids
        }
        assert sorted(materialized) == scenes, f"{stage.asset}: {sorted(materialized)}"
        latest = asset["definition"]["latestMaterializationByPartition"]
        assert [e["partition"] for e in latest] == scenes
        for event in latest:
            partition = event["partition"]
            assert event["runId"] in run_ids, f"{stage.asset}[{partition}] not from the backfill"
            labels = {entry["label"]: entry for entry in event["metadataEntries"]}
            missing = set(stage.metadata) - set(labels)
            assert not missing, f"{stage.asset}[{partition}] lacks metadata {missing}"
            for label, value in stage.json_values.get(partition, {}).items():
                assert json.loads(labels[label]["jsonString"]) == value, (stage.asset, partition)
        for check in checks[stage.asset]:
            executions = [
                e
                for e in ui.query(CHECK_EXECUTIONS_QUERY, {"assetKey": key, "checkName": check})[
                    "assetCheckExecutions"
                ]
                if e["runId"] in run_ids
            ]
            assert executions, f"{stage.asset}:{check} never ran"
            expected = stage.check_statuses.get(check)
            if expected is None:
                assert {e["status"] for e in executions} == {"SUCCEEDED"}, (stage.asset, check)
            else:
                assert {e["partition"]: e["status"] for e in executions} == expected, check
            # Checks without a partitions_def record no partition (one result per run).
            partitions = {e["partition"] for e in executions} - {None}
            assert not partitions or sorted(partitions) == scenes, (stage.asset, check)

    # `vidpipe-dagster import` while the UI runs: the new project appears without a restart,
    # and `archive` hides it again (the CLI reloads the code location through GraphQL).
    unknown = reload_code_location(ui.url, location="no-such-location")
    assert unknown.reloaded is False and "no-such-location" in unknown.message
    monkeypatch.setenv("VIDPIPE_DAGSTER_WEBSERVER", ui.url)
    second = graph_name("autumn-ad")
    assert not ui.asset_nodes(second)
    assert main(["import", str(write_spec(small_spec("autumn-ad"), folder="second"))]) == 0
    assert "reloaded" in capsys.readouterr().out.lower()
    assert {f"{second}/{stage.asset}" for stage in STAGES} <= set(ui.asset_nodes(second))
    assert main(["archive", "autumn-ad"]) == 0
    assert not ui.asset_nodes(second)
    assert ui.asset_nodes(prefix), "the other project stays"
