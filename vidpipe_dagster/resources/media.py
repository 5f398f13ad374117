"""The media store as a Dagster resource (``db.media.MediaStore`` does the work)."""

from __future__ import annotations

import dagster as dg

from vidpipe_dagster.db.media import MediaStore


class MediaStoreResource(dg.ConfigurableResource):
    """Files under ``root`` (``$VIDPIPE_HOME/media`` by default)."""

    root: str

    def store(self) -> MediaStore:
        return MediaStore(self.root)
