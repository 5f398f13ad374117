"""Clip identity wired into the pipeline: the clip step scores each scene, the materialization
shows it, ``characters_recognisable`` is checked per scene (WARN, or ERROR and blocking with
``identity_check: block``), ``status`` reads it, the final cut shows the identity matrix, and the
final cut's automation condition waits for blocking checks.

Clips are animatic previews rendered through the real pipeline from keyframes made of real
photos (scikit-image's astronaut, and its camera man as another person); faces are scored by the
real dlib that ``make models``/the dependencies install."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import dagster as dg
import opentimelineio as otio
import pytest
from PIL import Image
from skimage import data as skdata

from tests.conftest import SpecWriter, run_check_status
from vidpipe_dagster.cli import main
from vidpipe_dagster.db.project_graphs import load_project_graphs
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.definitions import build_definitions
from vidpipe_dagster.demo import _keyframe, _launch_pad
from vidpipe_dagster.runner import materialize_project
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.project_import import import_project

SLUG = "crew"
PREFIX = "crew"
CLIP = dg.AssetKey([PREFIX, "scene_clip"])
CUT = dg.AssetKey([PREFIX, "final_cut"])
CHECK = dg.AssetCheckKey(CLIP, "characters_recognisable")
FAST = {"poll_interval_seconds": 0.05, "backoff_base_seconds": 0.01, "requests_per_minute": 0}


def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


def face_crop() -> Image.Image:
    return astronaut().crop((150, 10, 310, 200))


def camera_man() -> Image.Image:
    return Image.fromarray(skdata.camera()).convert("RGB")


def crew_spec(identity_check: str | None) -> dict[str, Any]:
    """Scene 0's keyframes show the astronaut (the manifest's CHAR_01), scene 1's another man."""

    def scene(index: int) -> dict[str, Any]:
        return {
            "index": index,
            "prompt": f"close on the commander, take {index}",
            "start_frame": f"frames/{index}_start.png",
            "end_frame": f"frames/{index}_end.png",
            "manifest": {
                "composition": {"shot_type": "close_up", "focal_point": "CHAR_01"},
                "placements": [
                    {"asset_tag": "CHAR_01", "role": "subject"},
                    {"asset_tag": "ENV_01", "role": "background"},
                ],
            },
        }

    project: dict[str, Any] = {"slug": SLUG, "name": "Crew", "target_clip_duration": 4}
    if identity_check is not None:
        project["identity_check"] = identity_check
    return {
        "project": project,
        "manifest": {
            "name": "crew",
            "assets": [
                {"id": "commander", "tag": "CHAR_01", "type": "CHARACTER", "image": "img/a.png"},
                {
                    "id": "commander_face",
                    "tag": "CHAR_01",
                    "type": "CHARACTER",
                    "image": "img/a_face.png",
                    "face_crop_of": "commander",
                },
                {"id": "pad", "tag": "ENV_01", "type": "ENVIRONMENT", "image": "img/pad.png"},
            ],
        },
        "scenes": [scene(0), scene(1)],
    }


def import_crew(
    settings: Settings,
    write_spec: SpecWriter,
    identity_check: str | None = None,
    *,
    takes: int | None = None,
    scenes: int = 2,
) -> Path:
    """Import the crew project (``takes`` per scene when given, its first ``scenes`` scenes)."""
    spec = crew_spec(identity_check)
    if takes is not None:
        spec["project"]["takes"] = takes
    spec["scenes"] = spec["scenes"][:scenes]
    path = write_spec(spec, folder="crew", images=False)
    pad = _launch_pad()
    images = {
        "img/a.png": astronaut(),
        "img/a_face.png": face_crop(),
        "img/pad.png": pad,
        "frames/0_start.png": _keyframe(pad, face_crop(), 0.5, 0.95),
        "frames/0_end.png": _keyframe(pad, face_crop(), 0.45, 1.0),
        "frames/1_start.png": _keyframe(pad, camera_man(), 0.5, 0.95),
        "frames/1_end.png": _keyframe(pad, camera_man(), 0.45, 1.0),
    }
    for rel, image in images.items():
        (path.parent / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(path.parent / rel)
    with session_scope(settings.database_url) as session:
        import_project(session, path, settings.media_root)
    return path


def run(settings: Settings, instance: dg.DagsterInstance, stages: list[str]) -> dict[str, Any]:
    reports = materialize_project(
        SLUG,
        stages,
        instance=instance,
        settings=settings,
        asset_config={"scene_clip": FAST},
    )
    return {r.stage: r for r in reports}


def clip_metadata(instance: dg.DagsterInstance, scene: str) -> dict[str, Any]:
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=CLIP, asset_partitions=[scene]), limit=1
    ).records[0]
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def check_records(instance: dg.DagsterInstance) -> dict[str, Any]:
    """The newest ``characters_recognisable`` execution record of each scene."""
    history = instance.event_log_storage.get_asset_check_execution_history(CHECK, limit=100)
    newest: dict[str, Any] = {}
    for record in history:  # newest first
        newest.setdefault(record.partition, record)
    return newest


def check_results(instance: dg.DagsterInstance) -> dict[str, Any]:
    """The newest ``characters_recognisable`` evaluation of each scene."""
    return {
        partition: record.event.dagster_event.event_specific_data
        for partition, record in check_records(instance).items()
    }


def status_json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["status", SLUG, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def automation_tick(
    settings: Settings, instance: dg.DagsterInstance, cursor: Any = None
) -> tuple[bool, Any]:
    """One tick of the final cut's automation condition, as the sensor evaluates it: whether it
    requests the cut, and the cursor for the next tick."""
    definitions = build_definitions(load_project_graphs(settings.database_url), settings)
    result = dg.evaluate_automation_conditions(
        defs=definitions,
        instance=instance,
        asset_selection=dg.AssetSelection.assets(CUT),
        cursor=cursor,
    )
    return result.get_num_requested(CUT) == 1, result.cursor


def images_in(markdown: str) -> list[Image.Image]:
    found = re.findall(r"data:image/jpeg;base64,([A-Za-z0-9+/=]+)", markdown)
    return [Image.open(io.BytesIO(base64.b64decode(item))) for item in found]


@pytest.mark.slow
def test_a_clip_of_the_character_passes_and_another_face_warns(
    settings: Settings,
    write_spec: SpecWriter,
    instance: dg.DagsterInstance,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import_crew(settings, write_spec)
    requested, cursor = automation_tick(settings, instance)  # the sensor, running since import
    assert not requested, "no clip yet"
    reports = run(settings, instance, ["references", "clips"])
    assert reports["clips"].succeeded == ["0", "1"] and not reports["clips"].failed

    # the materialization: a table with the verdict, and the face found beside the reference
    shown = clip_metadata(instance, "0")["identity"]
    assert "| character | engine | best | median | frames found / sampled | threshold |" in shown
    assert "| CHAR_01 | dlib (euclidean) |" in shown and "| ≤ 0.62 |" in shown
    assert re.search(r"validated by dlib \(distance 0\.[0-5]\d ≤ 0\.62\)", shown), shown
    crop, reference = images_in(shown)
    assert crop.size[0] <= 96 and reference.size[0] <= 96
    assert "animatic preview" in shown, "a score of a preview says so"
    other = clip_metadata(instance, "1")["identity"]
    assert re.search(r"rejected by dlib \(distance 0\.\d\d > 0\.62\)", other), other

    # the check, per scene: the astronaut passes; the other man fails at WARN (not blocking)
    results = check_results(instance)
    assert results["0"].passed and results["0"].severity == dg.AssetCheckSeverity.WARN
    assert results["0"].description.startswith("CHAR_01 recognised by dlib in ")
    assert not results["1"].passed and results["1"].severity == dg.AssetCheckSeverity.WARN
    assert results["1"].description.startswith("NOT recognised: ['CHAR_01']")
    assert not results["1"].blocking
    assert results["1"].metadata["CHAR_01"].value["status"] == "failed"

    # status: the JSON per character, and the human column
    scenes = status_json(capsys)["scenes"]
    [ok], [bad] = scenes[0]["clip"]["identity"], scenes[1]["clip"]["identity"]
    assert (ok["tag"], ok["status"], ok["engine"], ok["metric"]) == (
        "CHAR_01",
        "passed",
        "dlib",
        "euclidean",
    )
    assert ok["median"] < 0.62 <= bad["median"] and ok["stale"] is False
    assert ok["frames_sampled"] == 8 and ok["frames_found"] >= 5
    assert bad["status"] == "failed" and bad["verdict"].startswith("rejected by dlib")
    assert main(["status", SLUG]) == 0
    table = capsys.readouterr().out
    assert re.search(r"CHAR_01 recognised \(dlib 0\.\d\d ≤ 0\.62\)", table), table
    assert re.search(r"CHAR_01 NOT recognised \(dlib 0\.\d\d > 0\.62\)", table), table

    # not blocking: the final cut's condition fires, and the cut shows the matrix
    assert automation_tick(settings, instance, cursor)[0]
    assert run(settings, instance, ["final-cut"])["final-cut"].succeeded == ["all"]
    record = instance.fetch_materializations(CUT, limit=1).records[0]
    meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    assert meta["identity"].startswith("1 recognised, 1 NOT recognised")
    [matrix] = images_in(meta["identity_matrix"])
    on_disk = Path(meta["identity_matrix_path"])
    assert on_disk == settings.media_root / "projects" / SLUG / "identity_matrix.png"
    with Image.open(on_disk) as png:
        assert png.format == "PNG" and matrix.width == min(png.width, 560), "fits the panel"
    timeline = otio.adapters.read_from_file(meta["timeline"])
    fields = [c.metadata["vidpipe"] for c in timeline.tracks[0].find_clips()]
    assert [sorted(f["identity_scores"]) for f in fields] == [["CHAR_01"], ["CHAR_01"]]
    assert fields[0]["identity_scores"]["CHAR_01"] == pytest.approx(ok["median"], abs=1e-4)
    assert fields[1]["identity"]["CHAR_01"]["status"] == "failed"
    assert fields[1]["identity"]["CHAR_01"]["metric"] == "euclidean"

    # a check-only run (from the UI) reads the stored scores back: same verdicts, no new rows
    definitions = build_definitions(load_project_graphs(settings.database_url), settings)
    job = definitions.resolve_job_def(f"{PREFIX}_scenes_job")
    checks_only = job.get_subset(asset_selection=set(), asset_check_selection={CHECK})
    done = checks_only.execute_in_process(instance=instance, partition_key="1")
    assert done.success and not done.get_asset_materialization_events()
    record = check_records(instance)["1"]
    assert record.run_id == done.run_id
    again = record.event.dagster_event.event_specific_data
    assert not again.passed and again.description == results["1"].description


@pytest.mark.slow
def test_with_identity_check_block_the_failure_is_an_error_and_the_cut_waits(
    settings: Settings, write_spec: SpecWriter, instance: dg.DagsterInstance
) -> None:
    import_crew(settings, write_spec, identity_check="block")
    requested, cursor = automation_tick(settings, instance)
    assert not requested
    reports = run(settings, instance, ["references", "clips"])
    # both clips exist (one may have been paid for): the blocking check fails the step after
    assert reports["clips"].succeeded == ["0", "1"]
    assert reports["clips"].run_ids, "the run failed on the blocking check"
    results = check_results(instance)
    assert results["0"].passed and results["0"].severity == dg.AssetCheckSeverity.ERROR
    assert not results["1"].passed and results["1"].severity == dg.AssetCheckSeverity.ERROR
    assert results["1"].blocking is True
    assert run_check_status(instance, CLIP, "characters_recognisable") == "FAILED"

    requested, cursor = automation_tick(settings, instance, cursor)
    assert not requested, "a scene's blocking check failed: the cut waits"
    cut = run(settings, instance, ["final-cut"])["final-cut"]
    assert list(cut.failed) == ["all"]
    reason = cut.failed["all"]
    assert "identity_check is 'block'" in reason and "scene 1: CHAR_01 NOT recognised" in reason
    assert not (settings.media_root / "projects" / SLUG / "final_cut.mp4").exists()

    # a person accepts the clip (identity_check: warn): the check no longer blocks, the cut is due
    import_crew(settings, write_spec, identity_check="warn")
    requested, cursor = automation_tick(settings, instance, cursor)
    assert requested
    assert run(settings, instance, ["final-cut"])["final-cut"].succeeded == ["all"]


def test_a_clip_that_cannot_be_scored_says_so_and_fails_the_check(
    settings: Settings, write_spec: SpecWriter, instance: dg.DagsterInstance
) -> None:
    import_crew(settings, write_spec)
    settings = settings.replace(face_engine="none")
    reports = run(settings, instance, ["references", "clips"])
    assert reports["clips"].succeeded == ["0", "1"]
    shown = clip_metadata(instance, "0")["identity"]
    assert "| CHAR_01 | none |" in shown and "not scored: no face engine" in shown
    results = check_results(instance)
    for scene in ("0", "1"):
        assert not results[scene].passed, "not scored is never a pass"
        assert results[scene].severity == dg.AssetCheckSeverity.WARN
        assert results[scene].description.startswith("not scored: ['CHAR_01']")
