"""Vertex AI through google-genai (Vertex mode), or the local animatic renderer when not configured.

One resource for the outside system; it hands out clients that implement the protocols in
``domain.generation_client``. Credentials come from Application Default Credentials (never config).
``VIDPIPE_VERTEX_EMULATOR_HOST=host:port`` points everything at a local emulator.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import dagster as dg

from vidpipe_dagster.domain.generation_client import ImageClient, VideoClient

VideoBackend = Literal["auto", "vertex", "animatic"]


class VertexResource(dg.ConfigurableResource):
    """Veo video and Gemini image generation. ``video_backend="auto"`` uses Vertex when a project
    or emulator is configured, else the local animatic preview renderer (labelled as such)."""

    project: str | None = None
    location: str = "us-central1"
    emulator_host: str | None = None
    video_backend: VideoBackend = "auto"
    image_model: str = "gemini-2.5-flash-image"

    @property
    def effective_emulator_host(self) -> str | None:
        return self.emulator_host or os.environ.get("VIDPIPE_VERTEX_EMULATOR_HOST") or None

    @property
    def effective_project(self) -> str | None:
        return self.project or os.environ.get("GOOGLE_CLOUD_PROJECT") or None

    @property
    def vertex_configured(self) -> bool:
        return bool(self.effective_emulator_host or self.effective_project)

    def resolved_video_backend(self) -> Literal["vertex", "animatic"]:
        if self.video_backend == "auto":
            return "vertex" if self.vertex_configured else "animatic"
        return self.video_backend

    def genai_client(self) -> Any:
        """A google-genai client; make one per asset execution, since its async HTTP pool is bound
        to the event loop that first uses it."""
        from vidpipe_dagster.backends import make_genai_client

        if not self.vertex_configured:
            raise RuntimeError(
                "Vertex is not configured: set GOOGLE_CLOUD_PROJECT (with Application Default "
                "Credentials) or VIDPIPE_VERTEX_EMULATOR_HOST=host:port for the local emulator"
            )
        emulator = self.effective_emulator_host
        project = self.effective_project or ("emulator" if emulator else None)
        return make_genai_client(project=project, location=self.location, emulator_host=emulator)

    def video_client(self) -> VideoClient:
        from vidpipe_dagster.backends import AnimaticVideoClient, VertexVideoClient

        if self.resolved_video_backend() == "animatic":
            return AnimaticVideoClient()
        return VertexVideoClient(self.genai_client())

    def image_client(self) -> ImageClient:
        from vidpipe_dagster.backends import VertexImageClient

        return VertexImageClient(self.genai_client())
