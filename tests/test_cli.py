"""The command line: one readable error line, JSON status, import then materialize."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import select

from tests.conftest import SpecWriter, small_spec
from vidpipe_dagster.cli import STAGE_CHOICES, build_parser, main
from vidpipe_dagster.db.models import GenerationLedger
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.runner import STAGE_NAMES, materialize_project
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.testing.vertex_emulator import VertexEmulator


def test_import_error_is_one_line_and_nonzero(
    settings: Settings, write_spec: SpecWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = small_spec()
    spec["scenes"][1]["index"] = 0
    code = main(["import", str(write_spec(spec))])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: invalid project spec") and "Traceback" not in err
    assert err.count("\n") == 1, err


def test_several_field_errors_are_one_line_naming_each_field(
    settings: Settings, write_spec: SpecWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = small_spec()
    del spec["scenes"][0]["prompt"]
    spec["manifest"]["assets"][0]["type"] = "DRAGON"
    assert main(["import", str(write_spec(spec))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "scenes.0.prompt" in err and "manifest.assets.0.type" in err


def test_malformed_yaml_is_one_line(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("project: {slug: a\nscenes: [\n")
    assert main(["import", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "broken.yaml" in err


def test_materialize_tier3_clean_sheets_reaches_the_image_model(
    settings: Settings,
    write_spec: SpecWriter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("VIDPIPE_FACE_MODEL_ROOT", str(tmp_path / "no-face-models"))
    monkeypatch.setenv("VIDPIPE_FACE_ENGINE", "none")  # "not validated" because no engine runs
    assert main(["import", str(write_spec(small_spec()))]) == 0
    with VertexEmulator() as emu:
        monkeypatch.setenv("VIDPIPE_VERTEX_EMULATOR_HOST", emu.address)
        args = ["materialize", "spring-ad", "--stage", "clean-sheets", "--partition", "CHAR_01"]
        assert main([*args, "--tier", "tier3"]) == 0
        assert emu.generate_content_count == 2  # mia and her face crop
        assert main(args) == 0  # tier2 (the default) makes no paid call
        assert emu.generate_content_count == 2
    capsys.readouterr()
    assert main(["status", "spring-ad", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    chars = [a for a in status["assets"] if a["tag"] == "CHAR_01"]
    tier3 = [s for a in chars for s in a["clean_sheets"] if s["tier"] == "tier3_gemini"]
    assert len(tier3) == 2 and all(s["primary"] and s["validated"] is False for s in tier3)
    assert all(s["cost_usd"] == pytest.approx(0.039) for s in tier3)

    # the selection now shows the clean sheets the clip stage will send, not the originals
    assert main(["materialize", "spring-ad", "--stage", "references"]) == 0
    capsys.readouterr()
    assert main(["status", "spring-ad", "--json"]) == 0
    scene0 = json.loads(capsys.readouterr().out)["scenes"][0]
    assert scene0["selection_current"] is True
    sources = [(r["tag"], r["source"]) for r in scene0["selected_references"]]
    assert sources == [
        ("CHAR_01", "tier3_gemini"),
        ("CHAR_01", "tier3_gemini"),
        ("ENV_01", "original"),
    ]
    assert all("clean_sheets/tier3_" in r["image"] for r in scene0["selected_references"][:2])


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
    assert main(["materialize", "spring-ad", "--stage", "references"]) == 0
    assert main(["materialize", "spring-ad", "--stage", "clips"]) == 0
    capsys.readouterr()
    schedule = "spring_ad_nightly_backfill_schedule"
    assert schedule in {s.name for s in defs().schedules or []}

    assert main(["archive", "spring-ad"]) == 0
    assert "archived" in capsys.readouterr().out
    assert not list(defs().resolve_asset_graph().get_all_asset_keys())
    assert schedule not in {s.name for s in defs().schedules or []}
    assert main(["status", "spring-ad", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["archived"] is True
    assert [s["clip"]["status"] for s in status["scenes"]] == ["done", "done"]  # rows stay
    with dg.DagsterInstance.get() as instance:  # and so does the run history
        runs = instance.get_runs(dg.RunsFilter(tags={"vidpipe/project": "spring-ad"}))
        assert len(runs) >= 2

    assert main(["unarchive", "spring-ad"]) == 0
    assert list(defs().resolve_asset_graph().get_all_asset_keys())
    assert main(["archive", "spring-ad"]) == 0
    assert main(["import", str(write_spec(small_spec()))]) == 0  # importing brings it back
    assert "unarchived" in capsys.readouterr().out
    assert list(defs().resolve_asset_graph().get_all_asset_keys())


def test_regenerate_lets_the_next_run_pay_once_more(
    settings: Settings,
    write_spec: SpecWriter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A person's decision: the paid row stays in the ledger, the scene is requested again."""
    assert main(["import", str(write_spec(small_spec()))]) == 0
    fast = {"scene_clip": {"poll_interval_seconds": 0.05, "requests_per_minute": 0}}

    def clips() -> None:
        with dg.DagsterInstance.ephemeral() as instance:
            [report] = materialize_project(
                "spring-ad", ["clips"], instance=instance, settings=settings, asset_config=fast
            )
        assert report.failed == {}

    with VertexEmulator(latency_s=0.05, video_height=90, video_fps=4) as emu:
        monkeypatch.setenv("VIDPIPE_VERTEX_EMULATOR_HOST", emu.address)  # for the CLI
        settings = settings.replace(vertex_emulator_host=emu.address)  # for clips()
        assert main(["materialize", "spring-ad", "--stage", "references"]) == 0
        clips()
        clips()
        assert emu.submit_count == 2  # the rerun reused both clips
        capsys.readouterr()
        assert main(["regenerate", "spring-ad", "--scene", "1", "--reason", "artefacts"]) == 0
        out = capsys.readouterr().out
        assert "1 ledger row(s) no longer reused" in out and "cost 3.20 USD" in out
        clips()
        assert emu.submit_count == 3  # scene 1 only
    with session_scope(settings.database_url) as session:
        states = sorted(session.scalars(select(GenerationLedger.state)))
    assert states == ["done", "done", "result_lost"]
    assert main(["regenerate", "spring-ad", "--scene", "9"]) == 2
    assert "has no scene 9" in capsys.readouterr().err


# -- help, unknown names, failure lines ------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_help_lists_every_command_and_every_option_has_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    commands = _subcommands(parser)
    assert set(commands) == {
        "init",
        "import",
        "materialize",
        "regenerate",
        "choose",
        "archive",
        "unarchive",
        "status",
        "costs",
        "runs",
        "demo",
        "emulator",
    }
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    listing = capsys.readouterr().out
    for name in commands:
        assert f"\n    {name}" in listing, name  # listed with its one-line help
    parsers = dict(commands)
    parsers.update({f"runs {k}": v for k, v in _subcommands(commands["runs"]).items()})
    for name, sub in parsers.items():
        assert sub.description, name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help, f"{name}: {action.dest} has no help"
    assert STAGE_CHOICES == STAGE_NAMES  # the parser's copy, kept free of the Dagster import


def test_unknown_stage_partition_or_scene_names_the_valid_ones(
    settings: Settings, write_spec: SpecWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(write_spec(small_spec()))]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["materialize", "spring-ad", "--stage", "film"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    assert "invalid choice: 'film'" in err and "'clean-sheets', 'references', 'clips'" in err

    assert main(["materialize", "spring-ad", "--stage", "clips", "--partition", "99"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, (out, err)  # nothing ran, nothing "materialized"
    assert "no partition 99" in err and "valid: scenes 0, 1" in err

    assert main(["regenerate", "spring-ad", "--scene", "7"]) == 2
    assert "has no scene 7 (scenes: 0, 1)" in capsys.readouterr().err


def test_a_failed_scene_is_one_line_naming_the_asset_key(
    settings: Settings, write_spec: SpecWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    """Clips before references: each scene fails with its reason said once (not "scene 0:
    scene 0: ..."), the asset key to materialize, and the command that retries; no Dagster
    stack trace on the terminal (the run's log keeps it)."""
    assert main(["import", str(write_spec(small_spec()))]) == 0
    capsys.readouterr()
    assert main(["materialize", "spring-ad", "--stage", "clips"]) == 1
    out, err = capsys.readouterr()
    assert err == "", err
    failures = [line for line in out.splitlines() if "FAILED" in line]
    assert failures == [
        f"spring-ad clips: FAILED spring_ad/scene_clip partition {k}: references were never "
        "selected; materialize spring_ad/scene_references for this scene first"
        for k in ("0", "1")
    ]
    assert "materialized [" not in out
    assert "to retry: vidpipe-dagster materialize spring-ad --stage clips --partition 0 " in out
