"""Engine and session helpers, and schema migration through Alembic (no Dagster imports)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Not "alembic_version": Dagster's own storage uses that name, and one database must be able to
# hold both schemas' versions. Databases made before the rename are adopted by ``migrate``.
VERSION_TABLE = "vidpipe_alembic_version"
LEGACY_VERSION_TABLE = "alembic_version"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL plus a busy timeout lets several scenes finish at once without 'database is locked'."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@lru_cache(maxsize=16)
def get_engine(url: str) -> Engine:
    """One engine per URL per process (engines hold the connection pool)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A transaction: commit on success, roll back on any error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Create or upgrade the schema to the newest revision (safe to call on every start)."""
    from alembic import command

    config = alembic_config(url)
    legacy = _legacy_revision(url)
    if legacy is not None:
        command.stamp(config, legacy)
    command.upgrade(config, "head")


def _legacy_revision(url: str) -> str | None:
    """Our revision recorded under the old table name, when the new table does not exist yet.

    A revision that is not ours (Dagster's, in a shared database) is left alone.
    """
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect, text

    engine = get_engine(url)
    tables = set(inspect(engine).get_table_names())
    if VERSION_TABLE in tables or LEGACY_VERSION_TABLE not in tables:
        return None
    with engine.connect() as connection:
        recorded = connection.execute(
            text(f"SELECT version_num FROM {LEGACY_VERSION_TABLE}")
        ).scalars()
        ours = {script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}
        matches = [revision for revision in recorded if revision in ours]
    return matches[0] if matches else None


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


class Database:
    """The system of record by URL: plain sessions for stages and the CLI (no Dagster here)."""

    def __init__(self, url: str) -> None:
        self.url = url

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on error."""
        with session_scope(self.url) as session:
            yield session

    def sessionmaker(self) -> sessionmaker[Session]:
        return session_factory(self.url)
