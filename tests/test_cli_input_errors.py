"""Bad input and a bad environment, through the command line: exit 2, one line that names the
field, file or variable (never an exception class), and nothing changed on disk or in the database.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import SpecWriter, small_spec
from tests.state import snapshot
from tests.test_project_import import _png_claiming
from vidpipe_dagster.cli import main
from vidpipe_dagster.settings import Settings


def expect_one_line_error(
    settings: Settings, capsys: pytest.CaptureFixture[str], argv: list[str], *named: str
) -> str:
    before = snapshot(settings)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and not re.match(r"error: \w*(Error|Exception)\b", err), err
    for fragment in named:
        assert fragment in err, err
    assert snapshot(settings) == before
    return err


def _spec(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    spec = small_spec()
    change(spec)
    return spec


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value

    return change


SPEC_CASES = {
    "slug with a trailing newline": (_set("project.slug", "spring-ad\n"), ["project.slug"]),
    "unknown video model": (
        _set("project.video_model", "veo-4"),
        ["project.video_model", "unknown video model 'veo-4'", "veo-3.1-generate-001"],
    ),
    "face crop of a face crop": (
        lambda s: s["manifest"]["assets"].append(
            {"id": "eye", "tag": "CHAR_01", "type": "CHARACTER", "image": "img/e.png"}
            | {"face_crop_of": "mia_face"}
        ),
        ["face_crop_of 'mia_face' is itself a face crop"],
    ),
    "cycle of face crops": (
        _set("manifest.assets.0.face_crop_of", "mia_face"),
        ["asset 'mia': face_crop_of 'mia_face' is itself a face crop"],
    ),
    "empty start_frame": (_set("scenes.0.start_frame", ""), ["scenes.0.start_frame", "empty"]),
    "scene index beyond 64-bit": (_set("scenes.1.index", 2**70), ["scenes.1.index"]),
}


@pytest.mark.parametrize("case", SPEC_CASES, ids=list(SPEC_CASES))
def test_bad_spec_values(
    settings: Settings, write_spec: SpecWriter, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    change, named = SPEC_CASES[case]
    path = write_spec(_spec(change))
    expect_one_line_error(settings, capsys, ["import", str(path)], *named)


def test_nul_byte_in_a_path(
    settings: Settings, write_spec: SpecWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = small_spec()
    path = write_spec(spec)
    spec["scenes"][0]["end_frame"] = "frames/0\0end.png"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    expect_one_line_error(settings, capsys, ["import", str(path)], "scenes.0.end_frame", "NUL")


def test_duplicate_key(
    settings: Settings, write_spec: SpecWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec(small_spec())
    path.write_text(
        path.read_text().replace("  name: Spring ad\n", "  name: Spring ad\n  name: Again\n")
    )
    expect_one_line_error(
        settings, capsys, ["import", str(path)], "project.yaml line 4", "'name' is given twice"
    )


def test_deeply_nested_yaml(
    settings: Settings, write_spec: SpecWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec(small_spec())
    path.write_text(path.read_text() + "x: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n")
    expect_one_line_error(settings, capsys, ["import", str(path)], "project.yaml nests too deeply")


def test_decompression_bomb(
    settings: Settings, write_spec: SpecWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec(small_spec())
    (path.parent / "frames/1_end.png").write_bytes(_png_claiming(100_000, 100_000))
    expect_one_line_error(
        settings, capsys, ["import", str(path)], "scene 1 end_frame", "frames/1_end.png", "large"
    )


def test_import_of_a_directory(
    settings: Settings, write_spec: SpecWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec(small_spec())
    err = expect_one_line_error(
        settings, capsys, ["import", str(path.parent)], "is a directory", "project.yaml"
    )
    assert "does not exist" not in err


def test_a_symlink_in_the_media_root(
    settings: Settings,
    write_spec: SpecWriter,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    (tmp_path / "elsewhere").mkdir()
    (settings.media_root / "projects/spring-ad").mkdir(parents=True)
    (settings.media_root / "projects/spring-ad/inputs").symlink_to(tmp_path / "elsewhere")
    expect_one_line_error(
        settings,
        capsys,
        ["import", str(write_spec(small_spec()))],
        "projects/spring-ad/inputs is a symlink",
    )
    assert not any((tmp_path / "elsewhere").iterdir())


# -- the environment -------------------------------------------------------------------------


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_postgresql(
    settings: Settings,
    write_spec: SpecWriter,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = _closed_port()
    monkeypatch.setenv("VIDPIPE_DATABASE_URL", f"postgresql+psycopg2://u:secret@127.0.0.1:{port}/d")
    for argv in (["status", "spring-ad"], ["import", str(write_spec(small_spec()))]):
        err = expect_one_line_error(
            settings, capsys, argv, f"VIDPIPE_DATABASE_URL: cannot connect to 127.0.0.1:{port}"
        )
        assert "secret" not in err and "OperationalError" not in err


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("VIDPIPE_DATABASE_URL", "not a url", "VIDPIPE_DATABASE_URL is not a database URL"),
        ("VIDPIPE_DATABASE_URL", "postgresql+psycopg2://u@h:port/d", "VIDPIPE_DATABASE_URL"),
        ("VIDPIPE_DATABASE_URL", "postgresql://u@h/d", "postgresql+psycopg2://"),
        ("VIDPIPE_VIDEO_BACKEND", "veo", "use one of auto, vertex, animatic"),
        ("VIDPIPE_BUDGET_PER_RUN_USD", "fifty", "VIDPIPE_BUDGET_PER_RUN_USD='fifty'"),
        ("VIDPIPE_BACKFILL_CRON", "nightly", "VIDPIPE_BACKFILL_CRON"),
    ],
)
def test_a_bad_variable_is_named_with_what_it_accepts(
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    named: str,
) -> None:
    monkeypatch.setenv(variable, value)
    expect_one_line_error(settings, capsys, ["materialize", "spring-ad", "--stage", "clips"], named)


def test_a_home_that_is_a_file_or_cannot_be_made(
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    monkeypatch.setenv("VIDPIPE_HOME", str(a_file))
    expect_one_line_error(settings, capsys, ["init"], "VIDPIPE_HOME=", "is a file")
    monkeypatch.setenv("VIDPIPE_HOME", str(a_file / "home"))  # a folder below a file
    expect_one_line_error(settings, capsys, ["init"], "VIDPIPE_HOME=", "cannot create the folder")
    monkeypatch.setenv("VIDPIPE_HOME", str(tmp_path / "fine"))
    monkeypatch.setenv("VIDPIPE_MEDIA_ROOT", str(a_file))
    expect_one_line_error(settings, capsys, ["init"], "VIDPIPE_MEDIA_ROOT=", "is a file")


def test_a_database_file_that_is_not_sqlite(
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not a database" * 100)
    monkeypatch.setenv("VIDPIPE_DATABASE_URL", f"sqlite:///{bogus}")
    expect_one_line_error(
        settings, capsys, ["status", "spring-ad"], "VIDPIPE_DATABASE_URL", "not a SQLite database"
    )
