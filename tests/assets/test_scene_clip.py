"""``scene_clip`` and ``final_cut`` in-process, with the real google-genai client on an emulator."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import select

from tests.conftest import run_check_status, scene_needs, small_spec, stage_context
from vidpipe_dagster.db.ledger import Ledger
from vidpipe_dagster.db.media import MediaStore
from vidpipe_dagster.db.models import Asset, GenerationLedger, Scene, VideoClip
from vidpipe_dagster.db.session import session_factory, session_scope
from vidpipe_dagster.domain.render import probe_mp4, render_animatic
from vidpipe_dagster.domain.video_requests import REMEDIATION_PREFIXES
from vidpipe_dagster.generation.vertex import VertexVideoClient, make_genai_client
from vidpipe_dagster.runner import materialize_project
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.clip_checks import cost_problem
from vidpipe_dagster.stages.scene_clip import ClipOptions, scene_inputs
from vidpipe_dagster.testing.vertex_emulator import VertexEmulator

FAST = {"poll_interval_seconds": 0.05, "backoff_base_seconds": 0.01, "requests_per_minute": 0}
CHECKS = (
    "clip_is_valid_mp4_of_expected_duration",
    "references_and_mode_legal_for_model",
    "at_most_one_billed_generation_per_clip",
    "cost_recorded",
)


def clips(settings: Settings, slug: str = "spring-ad") -> dict[int, VideoClip]:
    with session_scope(settings.database_url) as session:
        rows = session.execute(
            select(Scene.scene_index, VideoClip).join(VideoClip, VideoClip.scene_id == Scene.id)
        ).all()
        return {i: c for i, c in rows}


def run(
    settings: Settings,
    instance: dg.DagsterInstance,
    stages: list[str],
    slug: str = "spring-ad",
    partitions: list[str] | None = None,
    **config,
) -> dict:
    reports = materialize_project(
        slug,
        stages,
        partitions=partitions,
        instance=instance,
        settings=settings,
        asset_config={"scene_clip": {**FAST, **config}},
    )
    return {r.stage: r for r in reports}


def clip_metadata(instance: dg.DagsterInstance, slug: str, scene: str) -> dict:
    key = dg.AssetKey([slug.replace("-", "_"), "scene_clip"])
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[scene]), limit=1
    ).records[0]
    return record.asset_materialization.metadata


def final_cut_metadata(instance: dg.DagsterInstance, slug: str = "spring-ad") -> dict[str, Any]:
    key = dg.AssetKey([slug.replace("-", "_"), "final_cut"])
    record = instance.fetch_materializations(key, limit=1).records[0]
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def check_status(instance: dg.DagsterInstance, name: str, slug: str = "spring-ad") -> str:
    """The check over the newest run's scenes: FAILED if any scene's result failed."""
    return run_check_status(instance, dg.AssetKey([slug.replace("-", "_"), "scene_clip"]), name)


def ledger_cost(settings: Settings, fingerprint: str) -> float:
    with session_scope(settings.database_url) as session:
        return session.scalars(
            select(GenerationLedger.cost_usd).where(
                GenerationLedger.fingerprint == fingerprint, GenerationLedger.state == "done"
            )
        ).one()


@pytest.fixture
def emulator() -> Iterator[VertexEmulator]:
    with VertexEmulator(latency_s=0.1, video_height=90, video_fps=4) as emu:
        yield emu


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The shared settings, pointed at the emulator when a test asks for ``emulator``."""
    if "emulator" in request.fixturenames:
        emu = request.getfixturevalue("emulator")
        return settings.replace(vertex_emulator_host=emu.address)
    return settings


def test_animatic_backend_renders_labelled_previews_and_the_final_cut(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    imported()
    reports = run(settings, instance, ["references", "clips", "final-cut"])
    assert reports["clips"].succeeded == ["0", "1"] and not reports["clips"].failed
    assert reports["final-cut"].succeeded == ["all"]
    rows = clips(settings)
    for clip in rows.values():
        assert clip.status == "done" and clip.backend == "animatic" and clip.cost_usd == 0.0
        info = probe_mp4(settings.media_root / clip.file_url)
        assert info.is_animatic and info.duration_seconds == pytest.approx(8.0, abs=0.1)
        assert clip.conditioning_mode == "references" and clip.duration_seconds == 8.0
    meta = clip_metadata(instance, "spring-ad", "0")
    assert "animatic preview" in meta["backend"].value
    assert "data:image/webp;base64" in meta["preview"].value  # an animated preview
    final = settings.media_root / "projects/spring-ad/final_cut.mp4"
    assert probe_mp4(final).duration_seconds == pytest.approx(16.0, abs=0.3)
    assert probe_mp4(final).is_animatic
    cut = final_cut_metadata(instance)
    assert cut["scene_boundaries_seconds"] == {"0": 0.0, "1": pytest.approx(8.0, abs=0.1)}
    assert cut["total_cost_usd"] == 0.0 and cut["contains_previews"] is True
    assert {name: check_status(instance, name) for name in CHECKS} == dict.fromkeys(
        CHECKS, "SUCCEEDED"
    )  # previews cost 0, which is right for them


def test_vertex_references_mode_then_a_rerun_costs_nothing(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    imported()
    reports = run(settings, instance, ["references", "clips"])
    assert reports["clips"].succeeded == ["0", "1"], reports["clips"].failed
    body = emulator.last_bodies["submit"]["instances"][0]
    assert "image" not in body and "lastFrame" not in body  # Veo rejects frames + references
    assert all(r["referenceType"].lower() == "asset" for r in body["referenceImages"])
    rows = clips(settings)
    assert rows[0].reference_tags == ["CHAR_01", "CHAR_01", "ENV_01"]
    assert {c.duration_seconds for c in rows.values()} == {8.0}
    assert rows[0].cost_usd == pytest.approx(8 * 0.40)  # veo-3.1 with audio
    assert set(emulator.submissions_by_fingerprint.values()) == {1}
    submits = emulator.submit_count
    with session_scope(settings.database_url) as session:  # each row names the run that paid
        run_ids = {r.details["run_id"] for r in session.scalars(select(GenerationLedger))}
    clip_runs = instance.get_runs(dg.RunsFilter(run_ids=list(run_ids)))
    assert len(run_ids) == 1 and len(clip_runs) == 1

    again = run(settings, instance, ["clips", "final-cut"])
    assert again["clips"].succeeded == ["0", "1"]
    assert emulator.submit_count == submits  # zero new submissions
    reused = clips(settings)
    assert all(c.cached for c in reused.values())
    for clip in reused.values():  # the rerun keeps what the clip cost and took
        assert clip.cost_usd == pytest.approx(8 * 0.40) and clip.attempts == 1
        assert clip.cost_usd == pytest.approx(ledger_cost(settings, clip.fingerprint))
    meta = clip_metadata(instance, "spring-ad", "1")
    assert meta["status"].value == "cached"
    assert meta["cost_usd"].value == pytest.approx(8 * 0.40)  # what the clip cost, paid once
    assert meta["spent_this_run_usd"].value == 0.0
    assert check_status(instance, "cost_recorded") == "SUCCEEDED"
    cut = final_cut_metadata(instance)
    assert cut["total_cost_usd"] == pytest.approx(2 * 8 * 0.40)
    assert cut["scene_boundaries_seconds"] == {"0": 0.0, "1": pytest.approx(8.0, abs=0.3)}
    assert cut["contains_previews"] is False


def test_project_without_manifest_uses_frames_and_target_duration(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    imported(small_spec("plain", manifest=False))
    reports = run(settings, instance, ["references", "clips"], slug="plain")
    assert reports["clips"].succeeded == ["0", "1"]
    body = emulator.last_bodies["submit"]
    assert "referenceImages" not in body["instances"][0]
    assert "image" in body["instances"][0] and "lastFrame" in body["instances"][0]
    assert body["parameters"]["durationSeconds"] == 6
    for clip in clips(settings, "plain").values():
        assert clip.conditioning_mode == "frames" and clip.duration_seconds == 6.0
        assert clip.reference_tags == []


def test_transient_faults_finish_every_clip_without_paying_twice(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    spec = small_spec()
    for i in range(2, 8):  # eight scenes
        spec["scenes"].append({**spec["scenes"][1], "index": i, "prompt": f"park shot {i}"})
    imported(spec)
    emulator.set_fault_rate("submit", 0.3, kinds=("429", "500"))
    emulator.set_fault_rate("poll", 0.3, kinds=("429", "500", "drop"))
    reports = run(settings, instance, ["references", "clips"], max_in_flight=4)
    assert reports["clips"].succeeded == [str(i) for i in range(8)], reports["clips"].failed
    assert emulator.submit_attempts > emulator.submit_count  # faults really happened
    assert set(emulator.submissions_by_fingerprint.values()) == {1}
    with session_scope(settings.database_url) as session:
        billed = session.scalars(
            select(GenerationLedger.fingerprint).where(GenerationLedger.billed.is_(True))
        ).all()
    assert len(billed) == len(set(billed)) == 8


def test_content_filter_on_level_0_is_remediated_with_references_kept(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    imported()
    emulator.rai_filter = lambda prompt: not prompt.startswith(REMEDIATION_PREFIXES[1])
    reports = run(settings, instance, ["references", "clips"])
    assert reports["clips"].succeeded == ["0", "1"]
    rows = clips(settings)
    assert {c.remediation_level for c in rows.values()} == {1}
    assert rows[0].reference_tags == ["CHAR_01", "CHAR_01", "ENV_01"]
    assert emulator.last_bodies["submit"]["instances"][0]["referenceImages"]
    with session_scope(settings.database_url) as session:
        states = sorted(session.scalars(select(GenerationLedger.state)).all())
    assert states == ["done", "done", "failed_unbilled", "failed_unbilled"]

    # The filter is lifted: level 0 would pass now, but the paid level-1 clips stand.
    emulator.rai_filter = None
    submitted = emulator.submit_count
    assert run(settings, instance, ["clips"])["clips"].succeeded == ["0", "1"]
    assert emulator.submit_count == submitted, "a rerun must not pay for level 0 again"
    assert {c.remediation_level for c in clips(settings).values()} == {1}
    assert check_status(instance, "at_most_one_billed_generation_per_clip") == "SUCCEEDED"
    needs, blocked = scene_needs(settings)
    assert (needs, blocked) == ([], {}), "a remediated clip is not stale"


def test_content_filter_at_every_level_fails_with_reasons(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    imported()
    emulator.rai_filter_substrings = ["park at dusk"]
    reports = run(settings, instance, ["references", "clips"])
    assert reports["clips"].succeeded == ["0"]
    assert "90789179" in reports["clips"].failed["1"]  # the API's support code
    failed = clips(settings)[1]
    assert failed.status == "failed" and "usage guidelines" in (failed.error or "")
    assert failed.remediation_level == 2


def test_vanished_reference_fails_only_its_scene(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    imported()
    run(settings, instance, ["references"])
    with session_scope(settings.database_url) as session:
        face = session.scalars(select(Asset).where(Asset.asset_key == "mia_face")).one()
        (settings.media_root / face.reference_image_url).unlink()
    reports = run(settings, instance, ["clips"])
    assert reports["clips"].succeeded == ["1"]
    assert (
        "mia" in reports["clips"].failed["0"] and "does not exist" in reports["clips"].failed["0"]
    )
    rows = clips(settings)
    assert rows[0].status == "failed" and rows[1].status == "done"
    final = run(settings, instance, ["final-cut"])["final-cut"]
    assert "scene 0 (failed)" in final.failed["all"]


def test_a_run_killed_after_submit_resumes_without_a_new_submission(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    """Submit scene 1 by hand exactly as the engine does, then 'die'; the asset must resume it."""
    imported()
    run(settings, instance, ["references"])
    job = scene_inputs(stage_context(settings), "spring-ad", "1", ClipOptions()).job
    assert job is not None
    ledger = Ledger(session_factory(settings.database_url))
    entry = ledger.open_submission(
        job.request.fingerprint,
        kind="video",
        model=job.request.model,
        backend="vertex",
        project_slug="spring-ad",
        subject="scene 1",
    )
    client = VertexVideoClient(make_genai_client(emulator_host=emulator.address, project="p"))
    operation = asyncio.run(client.submit(job.request))
    ledger.record_operation(entry, operation)  # ... and the worker dies here
    assert emulator.submit_count == 1

    reports = run(settings, instance, ["clips"])
    assert reports["clips"].succeeded == ["0", "1"]
    assert emulator.submit_count == 2  # only scene 0 was submitted
    assert clip_metadata(instance, "spring-ad", "1")["status"].value == "resumed"
    assert ledger.billed_count(job.request.fingerprint) == 1


def test_clip_checks_pass(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    imported()
    run(settings, instance, ["references", "clips"])
    for name in CHECKS:
        assert check_status(instance, name) == "SUCCEEDED", name


def test_status_json_reports_the_clip(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from vidpipe_dagster.cli import main

    imported()
    run(settings, instance, ["references", "clips"])
    run(settings, instance, ["clips"])  # cached: the status still shows what the clip cost
    assert main(["status", "spring-ad", "--json"]) == 0
    clip = json.loads(capsys.readouterr().out)["scenes"][0]["clip"]
    assert clip["cached"] is True
    assert clip["cost_usd"] == pytest.approx(8 * 0.40) and clip["attempts"] == 1
    assert {
        "status",
        "path",
        "duration_seconds",
        "conditioning_mode",
        "remediation_level",
        "cost_usd",
        "backend",
        "cached",
    } <= set(clip)
    assert clip["backend"] == "vertex" and clip["preview"] is False
    assert Path(clip["path"]).is_file()


def test_an_invalid_video_fails_only_its_scene(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    """Scene 1 gets bytes that are not an mp4: scene 0 (good, paid) is still materialized."""

    def junk_for_dusk(instance_: Mapping[str, Any], parameters: Mapping[str, Any]) -> bytes:
        if "park at dusk" in str(instance_.get("prompt")).lower():
            return b"<html>upstream proxy error</html>"
        return render_animatic(
            start_frame=None,
            end_frame=None,
            references=[],
            prompt="p",
            duration_seconds=float(parameters["durationSeconds"]),
            aspect_ratio="16:9",
            fps=4,
            height=90,
        )

    emulator.video_responder = junk_for_dusk
    imported()
    reports = run(settings, instance, ["references", "clips"])
    assert reports["clips"].succeeded == ["0"]
    assert "the video returned for scene 1 is not a valid mp4: " in reports["clips"].failed["1"]
    rows = clips(settings)
    assert rows[0].status == "done" and rows[0].duration_seconds == pytest.approx(8.0, abs=0.3)
    assert rows[1].status == "failed" and rows[1].duration_seconds is None
    assert "is not a valid mp4" in (rows[1].error or "")
    assert clip_metadata(instance, "spring-ad", "0")["status"].value == "generated"
    assert check_status(instance, "clip_is_valid_mp4_of_expected_duration") == "FAILED"


def test_the_valid_mp4_check_probes_the_stored_file(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A clip truncated on its way to disk is not done, whatever the downloaded bytes were."""
    imported()
    run(settings, instance, ["references"])
    write_from = MediaStore.write_from

    def truncating(self: MediaStore, relative: str, source: Path) -> Path:
        if "/clips/" in relative:  # the downloaded file loses two thirds on its way in
            with source.open("r+b") as handle:
                handle.truncate(source.stat().st_size // 3)
        return write_from(self, relative, source)

    monkeypatch.setattr(MediaStore, "write_from", truncating)
    reports = run(settings, instance, ["clips"], partitions=["1"])
    assert "scene 1 is not a valid mp4" in reports["clips"].failed["1"]
    assert clips(settings)[1].status == "failed"


def test_a_billed_clip_recorded_at_zero_fails_the_cost_check(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    imported()
    reports = run(
        settings,
        instance,
        ["references", "clips"],
        price_per_second_usd={"veo-3.1-generate-001": 0.0},
    )
    assert reports["clips"].succeeded == ["0", "1"]
    assert check_status(instance, "cost_recorded") == "FAILED"


@pytest.mark.parametrize(
    ("cost", "preview", "billed", "problem"),
    [
        (3.2, False, 3.2, None),  # Veo clip, recorded as billed
        (0.0, True, 0.0, None),  # animatic preview: free
        (0.0, False, 3.2, "recorded $0.0000"),  # a reuse that forgot the cost
        (0.0, False, 0.0, "recorded $0.0000"),  # a billed backend never costs nothing
        (1.6, False, 3.2, "ledger billed $3.2000"),
        (3.2, False, None, "no billed generation"),
        (0.5, True, 0.0, "preview recorded $0.5000"),
        (None, False, 3.2, "no cost recorded"),
    ],
)
def test_cost_rule(
    cost: float | None, preview: bool, billed: float | None, problem: str | None
) -> None:
    found = cost_problem(cost, preview=preview, billed_usd=billed)
    assert found == problem if problem is None else problem in (found or "")


def test_forced_duration_is_in_the_run_log_naming_each_scene_once(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
) -> None:
    imported()  # target 6 s, and both scenes have references
    run(settings, instance, ["references", "clips"])
    messages = [
        entry.user_message
        for record in instance.get_run_records()
        for entry in instance.all_logs(record.dagster_run.run_id)
        if "duration forced to 8 s" in entry.user_message
    ]
    # one line per reason, naming each scene once (a line per scene is an event per scene)
    named = [k for m in messages for k in m.split(":")[0].split(" ", 1)[1].split(", ")]
    assert sorted(named) == ["0", "1"], messages
    assert all("project target 6 s" in m for m in messages)


@pytest.mark.parametrize("accept_risk", [False, True])
def test_an_ambiguous_submit_is_resent_only_when_the_run_config_accepts_the_risk(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
    accept_risk: bool,
) -> None:
    imported()
    emulator.inject("submit", "drop_after_accept")  # accepted (billed), answer lost
    reports = run(
        settings,
        instance,
        ["references", "clips"],
        partitions=["0"],
        retry_ambiguous_submits=accept_risk,
    )
    if accept_risk:
        assert reports["clips"].succeeded == ["0"] and emulator.submit_count == 2
    else:
        assert "0" in reports["clips"].failed and emulator.submit_count == 1
        assert "unknown" in reports["clips"].failed["0"].lower()


def test_scenes_settled_together_each_check_their_own_materialization(
    settings: Settings, imported, instance: dg.DagsterInstance
) -> None:
    """A cached rerun settles every scene at once and reports their checks in one batch: each
    result still names its own scene's materialization from that run (what Dagster counts as
    the check status of the scene's current data)."""
    imported()
    run(settings, instance, ["references", "clips"])
    reports = run(settings, instance, ["clips"])  # every clip reused: the scenes settle at once
    assert reports["clips"].succeeded == ["0", "1"]
    key = dg.AssetKey(["spring_ad", "scene_clip"])
    [newest_run] = instance.get_runs(limit=1)
    run_id = newest_run.run_id
    for scene in ("0", "1"):
        [newest] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[scene]), limit=1
        ).records
        assert newest.run_id == run_id
        assert clip_metadata(instance, "spring-ad", scene)["status"].value == "cached"
        for name in (*CHECKS, "characters_recognisable"):
            history = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(key, name), limit=100
            )
            [record] = [
                r
                for r in history
                if r.run_id == run_id and r.partition == scene and r.event is not None
            ]
            evaluation = record.event.dagster_event.event_specific_data
            assert evaluation.target_materialization_data.storage_id == newest.storage_id, name
