"""``vidpipe-dagster status``: a fixed number of queries per project, no Dagster, no migration, a
table a person can read, and a quiet end when the reader stops reading."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, text

from tests.conftest import counted_statements, save_png, small_spec
from vidpipe_dagster.cli import main
from vidpipe_dagster.db import queries
from vidpipe_dagster.db.models import (
    Asset,
    AssetCleanReference,
    ClipIdentityScore,
    Scene,
    VideoClip,
)
from vidpipe_dagster.db.session import get_engine, session_scope
from vidpipe_dagster.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def many_scenes(count: int, slug: str = "spring-ad") -> dict[str, Any]:
    """``small_spec`` with ``count`` scenes: close-ups of CHAR_01 and establishing shots in turn."""
    spec = small_spec(slug)
    first, second = spec["scenes"]
    scenes = []
    for index in range(count):
        scene = copy.deepcopy(first if index % 2 == 0 else second)
        scene.update(
            index=index,
            prompt=f"{scene['prompt']} (take {index})",
            start_frame=f"frames/{index}_start.png",
            end_frame=f"frames/{index}_end.png",
        )
        scenes.append(scene)
    spec["scenes"] = scenes
    return spec


def give_project_history(settings: Settings, slug: str = "spring-ad") -> None:
    """Selections made, a primary clean sheet for one asset, and clips done, failed or missing,
    so that every branch of ``status`` reads something."""
    with session_scope(settings.database_url) as session:
        project = queries.project_by_slug(session, slug)
        for scene in project.scenes:
            row = queries.scene_manifest(session, project.id, scene.scene_index)
            picks = queries.current_selection(session, project, scene.scene_index) or []
            if row is not None:
                row.selected_reference_tags = [a.manifest_tag for a in picks]
            if scene.scene_index % 3 == 2:
                continue  # never generated
            failed = scene.scene_index % 3 == 1
            clip = VideoClip(
                scene_id=scene.id,
                status="failed" if failed else "done",
                backend="animatic",
                cost_usd=0.0,
                fingerprint=f"fp-{scene.scene_index}",
                error=f"scene {scene.scene_index}: scene {scene.scene_index}: it broke"
                if failed
                else None,
            )
            session.add(clip)
            if not failed and scene.scene_index % 2 == 0:  # close-ups place CHAR_01: scored
                session.flush()
                session.add(identity_row(clip, scene.scene_index))
        face = session.scalars(
            select(Asset).where(
                Asset.manifest_id == project.manifest_id, Asset.asset_key == "mia_face"
            )
        ).one()
        rel = f"clean_sheets/tier2_{face.id}.png"
        save_png(settings.media_root / rel, (128, 128, 128))
        session.add(
            AssetCleanReference(
                asset_id=face.id, tier="tier2_rembg", clean_image_url=rel, is_primary=True
            )
        )


def identity_row(clip: VideoClip, index: int) -> ClipIdentityScore:
    """What the clip step stores: scene 0 recognised, scene 6 not, scene 12 not scored, ..."""
    kind = (index // 6) % 3
    if kind == 2:
        return ClipIdentityScore(
            video_clip_id=clip.id,
            character_tag="CHAR_01",
            status="not_scored",
            reason="no face found in 8 sampled frames",
            engine="dlib",
            metric="euclidean",
            threshold=0.62,
            frames_sampled=8,
            clip_fingerprint=clip.fingerprint,
        )
    median = 0.31 if kind == 0 else 0.74
    return ClipIdentityScore(
        video_clip_id=clip.id,
        character_tag="CHAR_01",
        status="passed" if kind == 0 else "failed",
        reason="",
        engine="dlib",
        metric="euclidean",
        best_score=median - 0.05,
        median_score=median,
        threshold=0.62,
        passed=kind == 0,
        frames_found=6 if kind == 0 else 0,
        frames_matched=7,
        frames_sampled=8,
        clip_fingerprint=clip.fingerprint,
    )


def test_status_runs_the_same_queries_for_3_or_30_scenes(
    settings: Settings, imported: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    counts = {}
    for count, slug in ((3, "small-ad"), (30, "large-ad")):
        imported(many_scenes(count, slug), folder=slug)
        give_project_history(settings, slug)
        capsys.readouterr()
        with counted_statements(settings.database_url) as statements:
            assert main(["status", slug, "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert len(status["scenes"]) == count
        counts[count] = len(statements)
        # the batched reads still say what the per-scene lookups said
        close_up = status["scenes"][0]
        assert close_up["selection_current"] is True
        assert [
            (r["tag"], r["face_crop"], r["source"]) for r in close_up["selected_references"]
        ] == [
            ("CHAR_01", True, "tier2_rembg"),
            ("CHAR_01", False, "original"),
            ("ENV_01", False, "original"),
        ]
        assert [s["clip"] and s["clip"]["status"] for s in status["scenes"][:3]] == [
            "done",
            "failed",
            None,
        ]
        face = next(a for a in status["assets"] if a["asset_id"] == "mia_face")
        assert [s["tier"] for s in face["clean_sheets"]] == ["tier2_rembg"]
        identities = [s["clip"] and s["clip"]["identity"] for s in status["scenes"]]
        assert [i and [(c["status"], c["median"]) for c in i] for i in identities[:3]] == [
            [("passed", 0.31)],
            [],  # no CHARACTER placed (CHAR_09 is not in the manifest): nothing to recognise
            None,  # never generated
        ]
        assert identities[0][0]["verdict"] == "validated by dlib (distance 0.31 ≤ 0.62)"
        if count == 30:
            assert [identities[i][0]["verdict"] for i in (6, 12)] == [
                "rejected by dlib (distance 0.74 > 0.62)",
                "not scored: no face found in 8 sampled frames",
            ]
    assert counts[3] == counts[30], counts
    assert counts[30] <= 12, counts  # schema check, project, manifest, assets, scenes, sheets...


def test_human_status_shows_state_backend_cost_identity_and_reason(
    settings: Settings, imported: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    imported(many_scenes(3))
    give_project_history(settings)
    capsys.readouterr()
    assert main(["status", "spring-ad"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("spring-ad: Spring ad; 3 scene(s)")
    assert "clips: 1 done, 1 failed, 1 none" in lines[0]
    header = lines[1].split()
    assert header == ["scene", "clip", "backend", "cost", "take", "identity", "references"]
    scene0 = next(line for line in lines if line.strip().startswith("0 "))
    assert "done" in scene0 and "animatic preview (local render, not Veo)" in scene0
    assert "0.00 USD" in scene0 and "CHAR_01 recognised (dlib 0.31 ≤ 0.62)" in scene0
    assert "CHAR_01 face (tier2_rembg), CHAR_01 (original), ENV_01 (original)" in scene0
    assert "scene 1 failed: it broke" in out and "scene 1: scene 1" not in out
    assert "--stage clips --partition 1" in out and "spring_ad/scene_clip" in out
    scene1 = next(line for line in lines if line.strip().startswith("1 "))
    assert "no characters" in scene1  # an establishing shot of ENV_01 and an undeclared tag

    with session_scope(settings.database_url) as session:  # a clip the step has not scored
        session.execute(delete(ClipIdentityScore))
    assert main(["status", "spring-ad"]) == 0
    scene0 = next(line for line in capsys.readouterr().out.splitlines() if " 0 " in line[:4])
    assert "not scored" in scene0 and "recognised" not in scene0  # no score is made up


def test_status_starts_without_dagster(
    settings: Settings, imported: Callable[..., str], tmp_path: Path
) -> None:
    """A fresh interpreter, as a user's shell starts it: Dagster is never imported."""
    imported()
    probe = (
        "import json, sys\n"
        "from vidpipe_dagster.cli import main\n"
        "code = main(['status', 'spring-ad', '--json'])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'alembic'))\n"
        "print(json.dumps({'code': code, 'loaded': loaded}), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=False
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr
    assert json.loads(done.stdout)["project"] == "spring-ad"
    assert not [m for m in report["loaded"] if m.startswith("dagster")], report["loaded"]


def test_status_never_creates_or_migrates_a_database(
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = tmp_path / "nowhere" / "vidpipe.db"
    monkeypatch.setenv("VIDPIPE_DATABASE_URL", f"sqlite:///{missing}")
    assert main(["status", "spring-ad"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no database at") and err.count("\n") == 1, err
    assert not missing.exists() and not missing.parent.exists()

    monkeypatch.delenv("VIDPIPE_DATABASE_URL")
    with get_engine(settings.database_url).begin() as connection:  # an older schema
        connection.execute(text("UPDATE vidpipe_alembic_version SET version_num = '0000'"))
    assert main(["status", "spring-ad"]) == 2
    err = capsys.readouterr().err
    assert "is at schema 0000" in err and "vidpipe-dagster init" in err, err
    with get_engine(settings.database_url).connect() as connection:  # and it stays so
        assert connection.execute(text("SELECT version_num FROM vidpipe_alembic_version")).all()[
            0
        ] == ("0000",)


def test_status_into_a_closed_pipe_ends_quietly(
    settings: Settings, imported: Callable[..., str]
) -> None:
    """``status SLUG | head -1``: the reader is gone before the table is written. A pipe whose
    reading end is closed before the command starts makes every write fail, deterministically."""
    imported(many_scenes(4))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "vidpipe_dagster.cli", "status", "spring-ad"],
            cwd=REPO,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""  # no BrokenPipeError, no traceback
    assert done.returncode == 141


def test_status_json_names_the_scene_rows_it_read(
    settings: Settings, imported: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The batched clip lookup pairs each clip with its own scene."""
    imported(many_scenes(4))
    with session_scope(settings.database_url) as session:
        scene = session.scalars(select(Scene).where(Scene.scene_index == 3)).one()
        session.add(VideoClip(scene_id=scene.id, status="done", backend="vertex", cost_usd=3.2))
    capsys.readouterr()
    assert main(["status", "spring-ad", "--json"]) == 0
    scenes = json.loads(capsys.readouterr().out)["scenes"]
    assert [s["clip"] and s["clip"]["cost_usd"] for s in scenes] == [None, None, None, 3.2]
    assert scenes[3]["clip"]["backend_label"] == "vertex" and scenes[3]["clip"]["preview"] is False
