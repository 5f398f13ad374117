"""Which generators to use: Vertex (google-genai), the local emulator, or the animatic preview.

``video_backend="auto"`` uses Vertex when a project or an emulator is configured, else the local
animatic renderer (labelled as a preview everywhere; ``domain.preview``). Credentials come from
Application Default Credentials, never from configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from vidpipe_dagster.domain.catalog import ModelCatalog, catalog_at
from vidpipe_dagster.domain.preview import VideoBackend
from vidpipe_dagster.generation.client import ImageClient, VideoClient


class VertexNotConfigured(RuntimeError):
    """A paid backend was asked for, but there is no project or emulator to send requests to."""


@dataclass(frozen=True)
class GenerationBackends:
    project: str | None = None
    location: str = "us-central1"
    emulator_host: str | None = None
    video_backend: VideoBackend = "auto"
    image_model: str = "gemini-2.5-flash-image"
    catalog_path: str | None = None  # a user's model catalog; None: the packaged one

    def catalog(self) -> ModelCatalog:
        """Every model rule and price the requests, estimates and checks read."""
        return catalog_at(self.catalog_path)

    @property
    def vertex_configured(self) -> bool:
        return bool(self.emulator_host or self.project)

    def resolved_video_backend(self) -> Literal["vertex", "animatic"]:
        if self.video_backend == "auto":
            return "vertex" if self.vertex_configured else "animatic"
        return self.video_backend

    def genai_client(self) -> Any:
        """A google-genai client; make one per asset execution, since its async HTTP pool is bound
        to the event loop that first uses it."""
        from vidpipe_dagster.generation.vertex import make_genai_client

        if not self.vertex_configured:
            raise VertexNotConfigured(
                "Vertex is not configured: set GOOGLE_CLOUD_PROJECT (with Application Default "
                "Credentials) or VIDPIPE_VERTEX_EMULATOR_HOST=host:port for the local emulator"
            )
        project = self.project or ("emulator" if self.emulator_host else None)
        return make_genai_client(
            project=project, location=self.location, emulator_host=self.emulator_host
        )

    def video_client(self) -> VideoClient:
        if self.resolved_video_backend() == "animatic":
            from vidpipe_dagster.generation.animatic import AnimaticVideoClient

            return AnimaticVideoClient()
        from vidpipe_dagster.generation.vertex import VertexVideoClient

        return VertexVideoClient(self.genai_client())

    def image_client(self) -> ImageClient:
        from vidpipe_dagster.generation.vertex import VertexImageClient

        return VertexImageClient(self.genai_client())
