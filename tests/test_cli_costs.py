"""`vidpipe-dagster costs SLUG`: every paid request with its billing labels and cost, as the
emulator received them, so a studio can reconcile its cloud bill line by line."""

from __future__ import annotations

import csv
import io
import json

import dagster as dg
import pytest

from tests.conftest import SpecWriter, small_spec
from vidpipe_dagster.cli import main
from vidpipe_dagster.runner import materialize_project
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.testing.vertex_emulator import VertexEmulator


def test_costs_lists_every_request_with_the_labels_sent(
    settings: Settings,
    write_spec: SpecWriter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["import", str(write_spec(small_spec()))]) == 0
    fast = {"scene_clip": {"poll_interval_seconds": 0.05, "requests_per_minute": 0}}
    # scene 1 is filtered at every remediation level (violence: a rewrite may fix it), unbilled
    with VertexEmulator(
        latency_s=0.05,
        video_height=90,
        video_fps=4,
        category_substrings={"park at dusk": "violence"},
    ) as emu:
        monkeypatch.setenv("VIDPIPE_VERTEX_EMULATOR_HOST", emu.address)
        settings = settings.replace(vertex_emulator_host=emu.address)
        assert main(["materialize", "spring-ad", "--stage", "references"]) == 0
        with dg.DagsterInstance.ephemeral() as instance:
            [report] = materialize_project(
                "spring-ad", ["clips"], instance=instance, settings=settings, asset_config=fast
            )
        assert sorted(report.failed) == ["1"] and emu.submit_count == 4
        sent = emu.labels_received
    capsys.readouterr()

    assert main(["costs", "spring-ad", "--json"]) == 0
    costs = json.loads(capsys.readouterr().out)
    requests = costs["requests"]
    assert len(requests) == 4 == len(sent)
    by_row = sorted(sent, key=lambda labels: labels["vidpipe_ledger_row"])
    # what the bill shows, row by row (scenes submit concurrently: compare by ledger row)
    assert sorted((r["labels"] for r in requests), key=lambda x: x["vidpipe_ledger_row"]) == by_row
    for request in requests:
        labels = request["labels"]
        assert labels["vidpipe_ledger_row"] == request["ledger_row"]
        assert labels["vidpipe_project"] == "spring-ad"
        assert labels["vidpipe_scene"] == request["subject"]
        assert labels["vidpipe_run"] == request["run_id"].lower()
        assert request["resolution"] == "720p" and request["takes"] == 1
        assert isinstance(request["seed"], int)
    charges = sorted((r["subject"], r["charge"], r["cost_usd"]) for r in requests)
    assert charges == [
        ("0", "billed", 3.2),
        ("1", "not charged", 0.0),
        ("1", "not charged", 0.0),
        ("1", "not charged", 0.0),
    ]
    assert costs["billed_usd"] == 3.2 and costs["at_risk_usd"] == 0.0

    assert main(["costs", "spring-ad", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 4
    assert {r["label:vidpipe_ledger_row"] for r in rows} == {r["ledger_row"] for r in requests}
    assert sorted(float(r["cost_usd"]) for r in rows) == [0.0, 0.0, 0.0, 3.2]

    assert main(["costs", "spring-ad"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert len(text) == 5 and text[-1] == "spring-ad: 4 request(s), 3.20 USD billed"
    assert all("vidpipe_ledger_row=" in line for line in text[:4])

    assert main(["costs", "nope"]) == 2
    assert "no project 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # one format at a time
        main(["costs", "spring-ad", "--json", "--csv"])
    assert refused.value.code == 2
