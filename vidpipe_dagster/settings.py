"""The one reader of the environment: every ``VIDPIPE_*`` (and Vertex) variable, validated once.

Entry points (the CLI, ``definitions.py``, benches) call ``Settings.from_env()``; everything else
receives plain values from it (resources are built from it, tests construct it directly). A bad
value fails here, before any run starts, with one line naming the variable and what it accepts.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast, get_args

from vidpipe_dagster.domain.budget import DEFAULT_PER_DAY_USD as DEFAULT_BUDGET_PER_DAY_USD
from vidpipe_dagster.domain.budget import DEFAULT_PER_RUN_USD as DEFAULT_BUDGET_PER_RUN_USD
from vidpipe_dagster.domain.catalog import CatalogError, ModelCatalog, catalog_at, packaged_catalog
from vidpipe_dagster.domain.clean_sheets import DEFAULT_REMBG_MODEL
from vidpipe_dagster.domain.faces import DEFAULT_FACE_MODEL_PACK, DEFAULT_FACE_MODEL_ROOT
from vidpipe_dagster.domain.identity import FACE_ENGINE_CHOICES, FaceEngineChoice
from vidpipe_dagster.domain.preview import VideoBackend

DEFAULT_HOME = ".vidpipe"
DEFAULT_BACKFILL_CRON = "0 3 * * *"
DEFAULT_WEBSERVER = "http://127.0.0.1:3000"
DEFAULT_IMAGE_MODEL = "gemini-2.5-flash-image"
DEFAULT_LOCATION = "us-central1"
# where ``make models`` (``python -m vidpipe_dagster.fetch_models``) caches downloaded weights
DEFAULT_MODELS_DIR = ".vidpipe-models"


class SettingsError(ValueError):
    """An environment variable has a value we cannot use; the message names it and the fix."""


@dataclass(frozen=True)
class Settings:
    """Paths, URLs, budgets and model choices, resolved from the environment (see README)."""

    home: Path
    database_url: str
    media_root: Path
    # the URL came from VIDPIPE_DATABASE_URL (it may hold a password: resources use an EnvVar)
    database_url_from_env: bool = False
    dagster_home: Path | None = None
    budget_per_run_usd: float = DEFAULT_BUDGET_PER_RUN_USD
    budget_per_day_usd: float = DEFAULT_BUDGET_PER_DAY_USD
    video_backend: VideoBackend = "auto"
    google_cloud_project: str | None = None
    google_cloud_location: str = DEFAULT_LOCATION
    vertex_emulator_host: str | None = None
    image_model: str = DEFAULT_IMAGE_MODEL
    rembg_model: str = DEFAULT_REMBG_MODEL
    rembg_model_path: str | None = None
    face_model_root: str = DEFAULT_FACE_MODEL_ROOT
    face_model_pack: str = DEFAULT_FACE_MODEL_PACK
    face_engine: FaceEngineChoice = "auto"
    # the set-up's weights cache; None: look nowhere but rembg's own home
    models_dir: Path | None = None
    backfill_cron: str = DEFAULT_BACKFILL_CRON
    backfill_schedule_on: bool = False
    webserver_url: str = DEFAULT_WEBSERVER
    model_catalog_path: Path | None = None  # a user's model catalog instead of the packaged one

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every variable; raises ``SettingsError`` naming the bad one."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value and value.strip() else None

        home = _directory("VIDPIPE_HOME", get("VIDPIPE_HOME") or DEFAULT_HOME)
        url = get("VIDPIPE_DATABASE_URL")
        if url is not None:
            _check_database_url(url)
        media = _directory("VIDPIPE_MEDIA_ROOT", get("VIDPIPE_MEDIA_ROOT") or str(home / "media"))
        dagster_home = get("DAGSTER_HOME")
        backend = get("VIDPIPE_VIDEO_BACKEND") or "auto"
        if backend not in get_args(VideoBackend):
            raise SettingsError(
                f"VIDPIPE_VIDEO_BACKEND={backend!r} is not a backend; use one of "
                f"{', '.join(get_args(VideoBackend))}"
            )
        schedule = (get("VIDPIPE_BACKFILL_SCHEDULE") or "off").lower()
        if schedule not in ("1", "on", "true", "0", "off", "false"):
            raise SettingsError(
                f"VIDPIPE_BACKFILL_SCHEDULE={schedule!r}: use on or off (or true/false, 1/0)"
            )
        catalog_path = get("VIDPIPE_MODEL_CATALOG")
        if catalog_path is not None:
            _read_model_catalog(catalog_path)  # a bad file stops here, with one line
        face_engine = (get("VIDPIPE_FACE_ENGINE") or "auto").lower()
        if face_engine not in FACE_ENGINE_CHOICES:
            raise SettingsError(
                f"VIDPIPE_FACE_ENGINE={face_engine!r} is not a face engine; use one of "
                f"{', '.join(FACE_ENGINE_CHOICES)}"
            )
        cron = get("VIDPIPE_BACKFILL_CRON") or DEFAULT_BACKFILL_CRON
        if len(cron.split()) != 5:
            raise SettingsError(
                f"VIDPIPE_BACKFILL_CRON={cron!r} is not a cron expression of five fields, "
                f"e.g. {DEFAULT_BACKFILL_CRON!r}"
            )
        return cls(
            home=home,
            database_url=url or f"sqlite:///{home / 'vidpipe.db'}",
            media_root=media,
            database_url_from_env=url is not None,
            dagster_home=_directory("DAGSTER_HOME", dagster_home) if dagster_home else None,
            budget_per_run_usd=_usd(env, "VIDPIPE_BUDGET_PER_RUN_USD", DEFAULT_BUDGET_PER_RUN_USD),
            budget_per_day_usd=_usd(env, "VIDPIPE_BUDGET_PER_DAY_USD", DEFAULT_BUDGET_PER_DAY_USD),
            video_backend=cast(VideoBackend, backend),
            google_cloud_project=get("GOOGLE_CLOUD_PROJECT"),
            google_cloud_location=get("GOOGLE_CLOUD_LOCATION") or DEFAULT_LOCATION,
            vertex_emulator_host=get("VIDPIPE_VERTEX_EMULATOR_HOST"),
            image_model=get("VIDPIPE_IMAGE_MODEL") or DEFAULT_IMAGE_MODEL,
            rembg_model=get("VIDPIPE_REMBG_MODEL") or DEFAULT_REMBG_MODEL,
            rembg_model_path=get("VIDPIPE_REMBG_MODEL_PATH"),
            face_model_root=get("VIDPIPE_FACE_MODEL_ROOT") or DEFAULT_FACE_MODEL_ROOT,
            face_model_pack=get("VIDPIPE_FACE_MODEL_PACK") or DEFAULT_FACE_MODEL_PACK,
            face_engine=cast(FaceEngineChoice, face_engine),
            models_dir=_directory(
                "VIDPIPE_MODELS_DIR", get("VIDPIPE_MODELS_DIR") or DEFAULT_MODELS_DIR
            ),
            backfill_cron=cron,
            backfill_schedule_on=schedule in ("1", "on", "true"),
            webserver_url=(get("VIDPIPE_DAGSTER_WEBSERVER") or DEFAULT_WEBSERVER).rstrip("/"),
            model_catalog_path=Path(catalog_path).expanduser().resolve() if catalog_path else None,
        )

    def replace(self, **changes: object) -> Settings:
        """A copy with some values changed (tests choose backends and budgets this way)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def model_catalog(self) -> ModelCatalog:
        """Every model rule and price: the user's file (``VIDPIPE_MODEL_CATALOG``) or the
        packaged one. A file that became unreadable since start-up fails here, naming it."""
        if self.model_catalog_path is None:
            return packaged_catalog()
        return _read_model_catalog(str(self.model_catalog_path))

    @property
    def vertex_configured(self) -> bool:
        return bool(self.vertex_emulator_host or self.google_cloud_project)

    def ensure_dirs(self) -> None:
        folders = (("VIDPIPE_HOME", self.home), ("VIDPIPE_MEDIA_ROOT", self.media_root))
        for variable, path in folders:
            if path.exists() and not path.is_dir():
                raise SettingsError(f"{variable}={path} is a file; point it at a folder")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SettingsError(
                    f"{variable}={path}: cannot create the folder ({exc.strerror or exc}); "
                    "point it at a folder you can write to"
                ) from None


def _directory(variable: str, value: str) -> Path:
    if "\0" in value:
        raise SettingsError(f"{variable} contains a NUL byte; give a folder path")
    path = Path(value).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise SettingsError(f"{variable}={path} is a file; point it at a folder")
    return path


def _read_model_catalog(value: str) -> ModelCatalog:
    """The user's catalog file, validated whole; parsed once per file version."""
    try:
        return catalog_at(value)
    except OSError as exc:
        raise SettingsError(
            f"VIDPIPE_MODEL_CATALOG={value}: cannot read it ({exc.strerror or exc}); point it at "
            "a model catalog YAML file, or unset it for the packaged catalog"
        ) from None
    except CatalogError as exc:
        raise SettingsError(
            f"VIDPIPE_MODEL_CATALOG={value}: {' '.join(str(exc).split())}"
        ) from None


def _usd(env: Mapping[str, str], variable: str, default: float) -> float:
    raw = (env.get(variable) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(
            f"{variable}={raw!r} is not a number; give US dollars, e.g. {variable}={default:g}"
        ) from None
    if not value >= 0 or value == float("inf"):
        raise SettingsError(f"{variable}={raw!r}: give a finite amount of US dollars, 0 or more")
    return value


def _check_database_url(url: str) -> None:
    """Parse with SQLAlchemy's own rules, so a typo fails here and not inside the first run."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise SettingsError(
            "VIDPIPE_DATABASE_URL is not a database URL; use sqlite:///PATH or "
            "postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise SettingsError(
            f"VIDPIPE_DATABASE_URL uses {parsed.get_backend_name()!r}; use sqlite:///PATH or "
            "postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DATABASE"
        )
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg2":
        raise SettingsError(
            "VIDPIPE_DATABASE_URL: write postgresql+psycopg2://… (the installed driver); "
            f"{parsed.drivername}:// is not installed"
        )
