"""The command line: one readable error line, JSON status, import then materialize."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SpecWriter, small_spec
from vidpipe_dagster.cli import main
from vidpipe_dagster.settings import Settings


def test_import_error_is_one_line_and_nonzero(
    settings: Settings, write_spec: SpecWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = small_spec()
    spec["scenes"][1]["index"] = 0
    code = main(["import", str(write_spec(spec))])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: invalid project spec") and "Traceback" not in err


def test_unknown_project(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "nope", "--json"]) == 2
    assert "no project 'nope'" in capsys.readouterr().err
    assert main(["materialize", "nope"]) == 2
    assert "run `vidpipe-dagster import`" in capsys.readouterr().err


def test_import_materialize_status(
    settings: Settings, write_spec: SpecWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(write_spec(small_spec()))]) == 0
    assert "created: 2 scenes, 3 assets" in capsys.readouterr().out
    assert main(["materialize", "spring-ad", "--stage", "references"]) == 0
    assert "references: materialized [0, 1]" in capsys.readouterr().out
    assert main(["status", "spring-ad", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["project"] == "spring-ad"
    scene0 = status["scenes"][0]
    assert scene0["index"] == 0
    assert scene0["selected_reference_tags"] == ["CHAR_01", "CHAR_01", "ENV_01"]
    assert [(r["tag"], r["face_crop"]) for r in scene0["selected_references"]] == [
        ("CHAR_01", True),
        ("CHAR_01", False),
        ("ENV_01", False),
    ]
    assert all(
        r["image"].startswith(str(settings.media_root)) for r in scene0["selected_references"]
    )
    assert {a["tag"] for a in status["assets"]} == {"CHAR_01", "ENV_01"}
    assert all(a["clean_sheets"] == [] for a in status["assets"])


def test_emulator_command_passes_its_options_through(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["emulator", "--help"])
    assert info.value.code == 0
    assert "--latency" in capsys.readouterr().out


def test_archive_hides_the_project_and_keeps_its_rows(
    settings: Settings,
    write_spec: SpecWriter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vidpipe_dagster.definitions import defs

    monkeypatch.setenv("VIDPIPE_DAGSTER_WEBSERVER", "http://127.0.0.1:9")  # nothing listens there
    assert main(["import", str(write_spec(small_spec()))]) == 0
    assert "Reload" in capsys.readouterr().out  # no webserver: the one manual step is printed
    assert main(["archive", "spring-ad"]) == 0
    assert "archived" in capsys.readouterr().out
    assert not list(defs().resolve_asset_graph().get_all_asset_keys())
    assert main(["status", "spring-ad", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["archived"] is True
    assert main(["unarchive", "spring-ad"]) == 0
    assert list(defs().resolve_asset_graph().get_all_asset_keys())
