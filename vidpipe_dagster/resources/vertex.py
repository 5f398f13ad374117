"""Vertex AI through google-genai (Vertex mode), or the local animatic renderer when not configured.

One resource for the outside system; ``generation.backends`` hands out the clients. Values come from
``settings.Settings`` (``definitions.default_resources``); credentials from Application Default
Credentials, never from configuration.
"""

from __future__ import annotations

import dagster as dg

from vidpipe_dagster.domain.preview import VideoBackend
from vidpipe_dagster.generation.backends import GenerationBackends
from vidpipe_dagster.settings import DEFAULT_IMAGE_MODEL, DEFAULT_LOCATION


class VertexResource(dg.ConfigurableResource):
    """Veo video and Gemini image generation. ``video_backend="auto"`` uses Vertex when a project
    or emulator is configured, else the local animatic preview renderer (labelled as such)."""

    project: str | None = None
    location: str = DEFAULT_LOCATION
    emulator_host: str | None = None
    video_backend: VideoBackend = "auto"
    image_model: str = DEFAULT_IMAGE_MODEL
    model_catalog: str | None = None  # a user's model catalog file; None: the packaged one

    def backends(self) -> GenerationBackends:
        return GenerationBackends(
            project=self.project,
            location=self.location,
            emulator_host=self.emulator_host,
            video_backend=self.video_backend,
            image_model=self.image_model,
            catalog_path=self.model_catalog,
        )
