"""The two deployment configs stay in step where they must: storage, queue, pools, safety."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def test_kubernetes_config_keeps_the_single_machine_storage_queue_and_pools() -> None:
    single, k8s = _load("dagster.yaml"), _load("dagster.k8s.yaml")
    assert single["run_launcher"]["class"] == "DefaultRunLauncher"
    assert (k8s["run_launcher"]["module"], k8s["run_launcher"]["class"]) == (
        "dagster_k8s",
        "K8sRunLauncher",
    )
    for section in ("storage", "run_coordinator", "run_retries", "telemetry", "retention"):
        assert k8s.get(section) == single[section], section
    # the Veo quota does not grow with the cluster: the pools stay; only run counts may grow
    assert k8s["concurrency"]["pools"] == single["concurrency"]["pools"]
    assert (
        k8s["run_monitoring"]["max_resume_run_attempts"] == 0
    )  # a resumed paid step could pay twice


def test_the_veo_pool_and_queue_limits_are_set() -> None:
    concurrency = _load("dagster.yaml")["concurrency"]
    assert concurrency["pools"]["granularity"] == "op"
    assert concurrency["pools"]["default_limit"] >= 1
    assert {limit["key"] for limit in concurrency["runs"]["tag_concurrency_limits"]} == {
        "dagster/backfill",
        "vidpipe/project",
    }


def test_runs_from_the_asset_graph_get_their_project_tag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UI's Materialize button runs the implicit asset job with no tag of ours: the deploy's
    run coordinator tags it before it is queued, so the per-project limit applies to it."""
    import dagster as dg

    coordinator = _load("dagster.yaml")["run_coordinator"]
    assert coordinator["module"] == "vidpipe_dagster.run_coordinator"
    queued: list[dg.DagsterRun] = []
    monkeypatch.setattr(  # Dagster's queueing itself needs a code server's origin; stop there
        dg.QueuedRunCoordinator,
        "submit_run",
        lambda self, context: queued.append(context.dagster_run),
    )
    with dg.instance_for_test(
        overrides={"run_coordinator": coordinator}, temp_dir=str(tmp_path)
    ) as instance:
        keys = [dg.AssetKey(["launch_day", "scene_clip"]), dg.AssetKey(["launch_day", "final_cut"])]
        run = instance.create_run_for_job(job_def=_asset_job(keys), asset_selection=frozenset(keys))
        assert "vidpipe/project" not in run.tags
        instance.run_coordinator.submit_run(dg.SubmitRunContext(run, workspace=None))  # type: ignore[arg-type]
        assert queued[0].tags["vidpipe/project"] == "launch-day"  # what the queue sees
        stored = instance.get_run_by_id(run.run_id)
        assert stored is not None and stored.tags["vidpipe/project"] == "launch-day"
    limit = next(
        limit
        for limit in _load("dagster.yaml")["concurrency"]["runs"]["tag_concurrency_limits"]
        if limit["key"] == "vidpipe/project"
    )
    assert limit["limit"] == 2 and limit["value"] == {"applyLimitPerUniqueValue": True}


def _asset_job(keys: list) -> object:
    import dagster as dg

    @dg.asset(key=keys[0])
    def clip() -> None: ...

    @dg.asset(key=keys[1], deps=[keys[0]])
    def cut() -> None: ...

    return dg.Definitions(assets=[clip, cut]).get_implicit_global_asset_job_def()
