"""Settings: the one reader of the environment, validated once; errors name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vidpipe_dagster.domain.budget import Budget
from vidpipe_dagster.domain.catalog import PACKAGED_CATALOG, packaged_catalog
from vidpipe_dagster.settings import Settings, SettingsError


def test_budget_from_env() -> None:
    settings = Settings.from_env({"VIDPIPE_BUDGET_PER_RUN_USD": "12.5"})
    budget = Budget(settings.budget_per_run_usd, settings.budget_per_day_usd)
    assert budget == Budget(per_run_usd=12.5, per_day_usd=200.0)


def test_defaults_from_an_empty_environment(tmp_path: Path) -> None:
    settings = Settings.from_env({"VIDPIPE_HOME": str(tmp_path)})
    assert settings.home == tmp_path.resolve()
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'vidpipe.db'}"
    assert settings.media_root == tmp_path.resolve() / "media"
    assert not settings.database_url_from_env and not settings.vertex_configured
    assert settings.video_backend == "auto" and not settings.backfill_schedule_on


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        (
            "VIDPIPE_BUDGET_PER_RUN_USD",
            "fifty",
            "VIDPIPE_BUDGET_PER_RUN_USD='fifty' is not a number",
        ),
        ("VIDPIPE_BUDGET_PER_DAY_USD", "-3", "VIDPIPE_BUDGET_PER_DAY_USD='-3'"),
        ("VIDPIPE_BUDGET_PER_DAY_USD", "nan", "VIDPIPE_BUDGET_PER_DAY_USD='nan'"),
        ("VIDPIPE_VIDEO_BACKEND", "veo", "VIDPIPE_VIDEO_BACKEND='veo' is not a backend"),
        ("VIDPIPE_DATABASE_URL", "not a url", "VIDPIPE_DATABASE_URL is not a database URL"),
        ("VIDPIPE_DATABASE_URL", "mysql://u@h/d", "VIDPIPE_DATABASE_URL uses 'mysql'"),
        ("VIDPIPE_BACKFILL_SCHEDULE", "maybe", "VIDPIPE_BACKFILL_SCHEDULE='maybe'"),
        ("VIDPIPE_BACKFILL_CRON", "daily", "VIDPIPE_BACKFILL_CRON='daily'"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str, named: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({variable: value})
    assert named in str(error.value)
    assert "\n" not in str(error.value)


def test_a_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    with pytest.raises(SettingsError, match=r"VIDPIPE_HOME=.* is a file; point it at a folder"):
        Settings.from_env({"VIDPIPE_HOME": str(home)})


def test_a_database_url_from_the_environment_is_marked_secret() -> None:
    settings = Settings.from_env({"VIDPIPE_DATABASE_URL": "postgresql+psycopg2://u:p@h:5432/d"})
    assert settings.database_url_from_env
    assert settings.database_url.startswith("postgresql+psycopg2://")


def test_model_catalog_defaults_to_the_packaged_one() -> None:
    settings = Settings.from_env({})
    assert settings.model_catalog_path is None
    assert settings.model_catalog() is packaged_catalog()


def test_a_users_model_catalog_is_validated_at_start(tmp_path: Path) -> None:
    packaged = Path(__file__).parents[1] / "vidpipe_dagster" / "domain" / PACKAGED_CATALOG
    data = yaml.safe_load(packaged.read_text(encoding="utf-8"))
    data["video_models"]["veo-3.1-fast-generate-001"]["price_per_second"]["720p"]["audio"] = 0.15
    mine = tmp_path / "catalog.yaml"
    mine.write_text(yaml.safe_dump(data), encoding="utf-8")
    settings = Settings.from_env({"VIDPIPE_MODEL_CATALOG": str(mine)})
    assert settings.model_catalog_path == mine.resolve()
    fast = settings.model_catalog().video_models["veo-3.1-fast-generate-001"]
    assert fast.price_for("720p", True) == 0.15

    data["video_models"]["veo-3.1-fast-generate-001"]["max_samples"] = 0
    mine.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"VIDPIPE_MODEL_CATALOG": str(mine)})
    message = str(error.value)
    assert message.startswith(f"VIDPIPE_MODEL_CATALOG={mine}: model catalog")
    assert "video_models.veo-3.1-fast-generate-001.max_samples" in message and "\n" not in message
    with pytest.raises(SettingsError, match="cannot read it"):
        Settings.from_env({"VIDPIPE_MODEL_CATALOG": str(tmp_path / "missing.yaml")})


def test_face_engine_and_models_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    default = Settings.from_env({})
    assert default.face_engine == "auto"
    assert default.models_dir == tmp_path.resolve() / ".vidpipe-models", "beside .vidpipe/"
    assert default.rembg_model == "u2netp", "the model the set-up fetches"
    chosen = Settings.from_env({"VIDPIPE_FACE_ENGINE": "DLIB", "VIDPIPE_MODELS_DIR": "w"})
    assert (chosen.face_engine, chosen.models_dir) == ("dlib", tmp_path.resolve() / "w")


def test_an_unknown_face_engine_names_the_variable() -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"VIDPIPE_FACE_ENGINE": "arcface"})
    assert str(error.value) == (
        "VIDPIPE_FACE_ENGINE='arcface' is not a face engine; use one of auto, insightface, "
        "dlib, none"
    )
