"""``vidpipe-dagster choose``: a person picks another take without paying, Dagster shows the new
take (a cached run, a new data version), a later run keeps it, and every refusal is one line
that changes nothing."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from PIL import Image
from sqlalchemy import func, select

from tests.conftest import SpecWriter, small_spec
from vidpipe_dagster.cli import main
from vidpipe_dagster.db.models import GenerationLedger, Scene, VideoClip
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.settings import Settings

SLUG = "spring-ad"
CLIP = dg.AssetKey(["spring_ad", "scene_clip"])


@pytest.fixture
def two_takes(
    settings: Settings,
    write_spec: SpecWriter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """spring-ad asking for 2 takes, scene 0's clip made (animatic), scene 1's not."""
    monkeypatch.setenv("VIDPIPE_FACE_ENGINE", "none")  # choosing is about files, not faces
    spec = small_spec()
    spec["project"]["takes"] = 2
    assert main(["import", str(write_spec(spec))]) == 0
    assert main(["materialize", SLUG, "--stage", "references"]) == 0
    assert main(["materialize", SLUG, "--stage", "clips", "--partition", "0"]) == 0
    capsys.readouterr()
    return settings


def latest(scene: str) -> tuple[str, dict[str, Any]]:
    """The newest materialization of the scene's clip: its data version and metadata."""
    with dg.DagsterInstance.get() as instance:
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=CLIP, asset_partitions=[scene]), limit=1
        ).records[0]
    event = record.asset_materialization
    assert event is not None
    metadata = {k: v.value for k, v in event.metadata.items()}
    return event.tags["dagster/data_version"], metadata


def clip_state(settings: Settings) -> list[tuple[Any, ...]]:
    with session_scope(settings.database_url) as session:
        rows = session.execute(
            select(
                Scene.scene_index,
                VideoClip.status,
                VideoClip.file_url,
                VideoClip.chosen_take,
                VideoClip.take_choice,
                VideoClip.updated_at,
            )
            .join(VideoClip, VideoClip.scene_id == Scene.id)
            .order_by(Scene.scene_index)
        )
        return [tuple(row) for row in rows]


def ledger_rows(settings: Settings) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(GenerationLedger)) or 0


def status_clip(capsys: pytest.CaptureFixture[str], scene: int = 0) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["status", SLUG, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["scenes"][scene]["clip"]


def test_choose_switches_the_take_without_paying_and_dagster_shows_it(
    two_takes: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = two_takes
    before = status_clip(capsys)
    assert (before["takes"], before["chosen_take"]) == (2, 1)
    assert before["take_choice"].startswith("take 1 of 2: first take (no face engine")
    version, metadata = latest("0")
    assert metadata["chosen_take"] == 1 and metadata["path"] == before["path"].split("media/")[1]
    frames = re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", metadata["takes"])
    assert len(frames) == 2, "a thumbnail per take"
    assert all(Image.open(io.BytesIO(base64.b64decode(f))).height == 96 for f in frames)
    assert "| 1 |" in metadata["takes"] and "**chosen**" in metadata["takes"]
    rows = ledger_rows(settings)

    assert main(["choose", SLUG, "--scene", "0", "--take", "2", "--by", "ana"]) == 0
    out = capsys.readouterr().out
    assert "take 2 of 2: chosen by a person (ana, " in out and "nothing paid" in out
    assert f"{SLUG} clips: materialized [0]" in out

    after = status_clip(capsys)
    assert after["chosen_take"] == 2 and after["path"] == after["take_paths"][1] != before["path"]
    assert re.fullmatch(r"take 2 of 2: chosen by a person \(ana, .+ UTC\)", after["take_choice"])
    assert ledger_rows(settings) == rows, "no request was opened"
    new_version, metadata = latest("0")
    assert new_version == f"{version}-take2", "a new data version: the final cut is stale"
    assert metadata["status"] == "cached" and metadata["chosen_take"] == 2
    assert metadata["take_choice"] == after["take_choice"]
    assert metadata["path"] == after["path"].split("media/")[1]
    capsys.readouterr()
    assert main(["status", SLUG]) == 0
    table = capsys.readouterr().out
    assert "2 of 2 (by a person)" in table and "scene 0: take 2 of 2: chosen by a person" in table

    # a later run of the same request keeps the person's choice
    assert main(["materialize", SLUG, "--stage", "clips", "--partition", "0"]) == 0
    kept = status_clip(capsys)
    assert (kept["chosen_take"], kept["take_choice"]) == (2, after["take_choice"])
    assert latest("0")[0] == new_version and ledger_rows(settings) == rows

    # and choosing take 1 again is a person's choice too, with its own data version
    assert main(["choose", SLUG, "--scene", "0", "--take", "1"]) == 0
    assert status_clip(capsys)["path"] == before["path"]
    assert latest("0")[0] == version and ledger_rows(settings) == rows


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["choose", "nope", "--scene", "0", "--take", "1"], "no project 'nope' (known: spring-ad)"),
        (["choose", SLUG, "--scene", "7", "--take", "1"], "has no scene 7 (scenes: 0, 1)"),
        (["choose", SLUG, "--scene", "0", "--take", "3"], "no take 3: its clip has 2 take(s) "),
        (["choose", SLUG, "--scene", "0", "--take", "0"], "(valid: 1, 2)"),
        (["choose", SLUG, "--scene", "1", "--take", "1"], "has no finished clip (never"),
        (["choose", SLUG, "--scene", "0", "--take", "2"], "take 2 of scene 0 is missing on disk"),
    ],
    ids=["slug", "scene", "take-high", "take-zero", "no-clip", "file-missing"],
)
def test_choose_refuses_in_one_line_and_changes_nothing(
    two_takes: Settings, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    settings = two_takes
    if "missing on disk" in message:
        take = Path(status_clip(capsys)["take_paths"][1])
        take.rename(take.with_suffix(".away"))
    state, rows = clip_state(settings), ledger_rows(settings)
    with dg.DagsterInstance.get() as instance:
        runs = len(instance.get_runs())
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert clip_state(settings) == state and ledger_rows(settings) == rows
    with dg.DagsterInstance.get() as instance:
        assert len(instance.get_runs()) == runs, "no run either"


def test_the_cut_after_choose_is_another_cut_with_the_chosen_take(
    two_takes: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another take is another film: the final cut's data version changes and its timeline
    names the take each scene uses."""
    import opentimelineio as otio

    cut = dg.AssetKey(["spring_ad", "final_cut"])

    def cut_version_and_takes() -> tuple[str, list[Any]]:
        assert main(["materialize", SLUG, "--stage", "final-cut"]) == 0
        with dg.DagsterInstance.get() as instance:
            record = instance.fetch_materializations(cut, limit=1).records[0]
        event = record.asset_materialization
        assert event is not None
        timeline = otio.adapters.read_from_file(str(event.metadata["timeline"].value))
        takes = [c.metadata["vidpipe"]["take"] for c in timeline.tracks[0].find_clips()]
        return event.tags["dagster/data_version"], takes

    assert main(["materialize", SLUG, "--stage", "clips", "--partition", "1"]) == 0
    before, takes = cut_version_and_takes()
    assert takes == [1, 1]
    assert main(["choose", SLUG, "--scene", "0", "--take", "2"]) == 0
    after, takes = cut_version_and_takes()
    assert takes == [2, 1] and after != before
    capsys.readouterr()
