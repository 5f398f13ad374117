"""The demo projects: offline, deterministic, and covering what the selection rules distinguish."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import get_args

import pytest
import yaml
from sqlalchemy import select

from vidpipe_dagster.cli import main
from vidpipe_dagster.db.models import Asset, AssetCleanReference, VideoClip
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.demo import DEMO_SLUGS, write_demo_projects
from vidpipe_dagster.domain.reference_selection import select_references_for_scene
from vidpipe_dagster.domain.render import probe_mp4
from vidpipe_dagster.domain.schemas import ShotType
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.project_import import import_project


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_demo_inputs_are_deterministic(tmp_path: Path) -> None:
    write_demo_projects(tmp_path / "a")
    write_demo_projects(tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_demo_covers_every_shot_type_a_face_crop_and_an_undeclared_tag(
    settings: Settings, tmp_path: Path
) -> None:
    specs = write_demo_projects(tmp_path / "demo")
    launch = yaml.safe_load(specs[0].read_text())
    legacy = yaml.safe_load(specs[1].read_text())
    assert (launch["project"]["slug"], legacy["project"]["slug"]) == DEMO_SLUGS
    assert "manifest" not in legacy  # the project that must behave exactly as before

    shots = {s["manifest"]["composition"]["shot_type"] for s in launch["scenes"]}
    assert shots == set(get_args(ShotType))
    assets = launch["manifest"]["assets"]
    assert any(a.get("face_crop_of") for a in assets)
    assert {"CHARACTER", "PROP", "ENVIRONMENT"} <= {a["type"] for a in assets}
    declared = {a["tag"] for a in assets}
    placed = {p["asset_tag"] for s in launch["scenes"] for p in s["manifest"]["placements"]}
    assert placed - declared  # at least one placement names a tag the manifest lacks

    with session_scope(settings.database_url) as session:
        for spec in specs:
            import_project(session, spec, settings.media_root)
        rows = list(session.query(Asset))
        chosen = {
            s["index"]: [a.asset_key for a in select_references_for_scene(s["manifest"], rows)]
            for s in launch["scenes"]
        }
    assert all(1 <= len(keys) <= 3 for keys in chosen.values()), chosen
    close_ups = [
        s["index"]
        for s in launch["scenes"]
        if "close_up" in s["manifest"]["composition"]["shot_type"]
    ]
    assert all("astronaut_face" in chosen[i] for i in close_ups), chosen


@pytest.mark.slow
def test_demo_command_materializes_every_stage(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `make demo` runs: Tier 2 clean sheets, references, animatic clips, both final cuts."""
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "launch-day clean-sheets: materialized [CHAR_01, CHAR_02, ENV_01, ENV_02, PROP_01" in out
    assert "launch-day clips: materialized [0, 1, 2, 3, 4, 5, 6, 7]" in out
    assert "legacy-teaser clips: materialized [0, 1]" in out and "FAILED" not in out
    with session_scope(settings.database_url) as session:
        tiers = set(session.scalars(select(AssetCleanReference.tier)))
        clips = session.scalars(select(VideoClip)).all()
    assert tiers and all(t.startswith("tier2") for t in tiers)
    assert len(clips) == 10 and {c.backend for c in clips} == {"animatic"}
    for slug in DEMO_SLUGS:
        cut = settings.media_root / "projects" / slug / "final_cut.mp4"
        assert probe_mp4(cut).is_animatic, "the preview label survives the concatenation"
    assert main(["status", "launch-day", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert all(s["clip"]["status"] == "done" for s in status["scenes"])
    # every clip was scored in the clip step: the astronaut is recognised where her face shows
    identity = {s["index"]: s["clip"]["identity"] for s in status["scenes"]}
    assert [c["status"] for c in identity[3]] == ["passed"], identity[3]
    assert identity[5] == [], "the rover and an undeclared tag: no character to recognise"
    matrix = settings.media_root / "projects" / "launch-day" / "identity_matrix.png"
    assert matrix.is_file(), "the final cut writes the README's identity matrix"
