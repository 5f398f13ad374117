"""The two deployment configs stay in step where they must: storage, queue, pools, safety."""

from __future__ import annotations

from pathlib import Path

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
