"""Where things live: one place that reads the environment, so every entry point agrees."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Paths and URLs resolved from the environment (``VIDPIPE_HOME``, ``VIDPIPE_DATABASE_URL``)."""

    home: Path
    database_url: str
    media_root: Path

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("VIDPIPE_HOME", ".vidpipe")).expanduser().resolve()
        url = os.environ.get("VIDPIPE_DATABASE_URL") or f"sqlite:///{home / 'vidpipe.db'}"
        media = Path(os.environ.get("VIDPIPE_MEDIA_ROOT", home / "media")).expanduser().resolve()
        return cls(home=home, database_url=url, media_root=media)

    def ensure_dirs(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.media_root.mkdir(parents=True, exist_ok=True)
