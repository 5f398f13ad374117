"""``tools/screenshots.py`` without a browser: the README shows exactly its pictures, and the demo
it photographs can neither spend money nor touch a folder it did not make."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shots() -> ModuleType:
    spec = importlib.util.spec_from_file_location("screenshots", REPO / "tools" / "screenshots.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def readme() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


def test_the_readme_shows_every_picture_taken_and_each_exists(shots: ModuleType) -> None:
    shown = set(re.findall(r"!\[[^\]]*\]\(docs/screenshots/([^)]+)\)", readme()))
    # identity_matrix.png is the demo's own picture (tools/identity_matrix.py), not a screenshot
    assert shown == set(shots.PAGES) | {"identity_matrix.png"}
    on_disk = {p.name for p in (REPO / "docs" / "screenshots").glob("*.png")}
    assert shown == on_disk, "a picture the README does not show, or one it shows that is gone"


def test_each_picture_is_captioned_on_the_next_line() -> None:
    lines = readme().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("![") and "docs/screenshots/" in line:
            caption = lines[i + 1]
            assert caption.startswith("*") and caption.endswith("*"), line


def test_the_demo_it_photographs_is_local_and_its_own(
    shots: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "GOOGLE_CLOUD_PROJECT": "a-real-project",
        "VIDPIPE_VERTEX_EMULATOR_HOST": "127.0.0.1:8085",
        "VIDPIPE_VIDEO_BACKEND": "vertex",
        "VIDPIPE_DATABASE_URL": "postgresql+psycopg2://studio/db",
        "VIDPIPE_DAGSTER_WEBSERVER": "http://127.0.0.1:3000",
        "DAGSTER_HOME": "/somewhere/else",
        "VIDPIPE_MODELS_DIR": "/cache/models",
    }.items():
        monkeypatch.setenv(name, value)
    env = shots._clean_env(tmp_path)
    assert env["VIDPIPE_VIDEO_BACKEND"] == "animatic"
    assert env["VIDPIPE_HOME"] == str(tmp_path)
    assert env["DAGSTER_HOME"] == str(tmp_path / "dagster")
    assert env["VIDPIPE_MODELS_DIR"] == "/cache/models", "the cached weights are still found"
    for gone in ("GOOGLE_CLOUD_PROJECT", "VIDPIPE_VERTEX_EMULATOR_HOST", "VIDPIPE_DATABASE_URL"):
        assert gone not in env
    assert "VIDPIPE_DAGSTER_WEBSERVER" not in env, "a developer's own UI is never reloaded"


def test_a_folder_it_did_not_make_is_never_deleted(shots: ModuleType, tmp_path: Path) -> None:
    home = tmp_path / "screenshots"
    home.mkdir()
    (home / "vidpipe.db").write_text("someone's data")
    with pytest.raises(SystemExit, match="was not made by this script"):
        shots._prepare_home(home, reuse=False)
    assert (home / "vidpipe.db").read_text() == "someone's data"
