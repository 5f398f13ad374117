"""What every stage receives, and the two results every stage can give besides its own.

A stage is a plain-Python use case (read → rules and generators → persist → a typed result). It
never imports Dagster: ``assets/`` builds a ``StageContext`` from its resources, calls the stage,
and turns its ``StageError`` and ``CheckOutcome`` values into Dagster's failures and check results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from vidpipe_dagster.db.ledger import Ledger
from vidpipe_dagster.db.media import MediaStore
from vidpipe_dagster.db.session import Database
from vidpipe_dagster.domain.budget import Budget
from vidpipe_dagster.domain.catalog import ModelCatalog
from vidpipe_dagster.domain.local_models import LocalModels
from vidpipe_dagster.generation.backends import GenerationBackends


class Log(Protocol):
    def info(self, msg: str) -> None: ...

    def warning(self, msg: str) -> None: ...


class _Silent:
    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        pass


@dataclass(frozen=True)
class StageContext:
    database: Database
    media: MediaStore
    backends: GenerationBackends = field(default_factory=GenerationBackends)
    models: LocalModels = field(default_factory=LocalModels)
    budget: Budget = field(default_factory=Budget)
    log: Log = field(default_factory=_Silent)

    @property
    def catalog(self) -> ModelCatalog:
        """Every model rule and price: the one the requests, estimates and checks all read."""
        return self.backends.catalog()

    def ledger(self) -> Ledger:
        """The generation ledger, pricing open requests from the same catalog. Its fallback
        journal is beside a SQLite file, else in the media root (the folder workers share)."""
        return Ledger(
            self.database.sessionmaker(), catalog=self.catalog, journal_dir=self.media.root
        )


class StageError(Exception):
    """A stage could not finish. ``retry``: whether running it again later may help (a transient
    API failure), as opposed to a person having to change something (the message says what)."""

    def __init__(
        self, message: str, *, retry: bool = False, metadata: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.retry = retry
        self.metadata = metadata or {}


@dataclass(frozen=True)
class CheckOutcome:
    """One asset check's result, in plain values (``assets/metadata.py`` renders it)."""

    name: str
    passed: bool
    description: str | None = None
    severity: Literal["error", "warn"] = "error"
    metadata: dict[str, Any] = field(default_factory=dict)
