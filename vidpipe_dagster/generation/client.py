"""The one interface every generation backend implements (Vertex, the animatic preview renderer).

Every failure reaches the engine as a ``GenerationApiError`` of one ``ErrorKind`` (classified once,
in ``generation.errors``), so the spend-safety logic can decide, without knowing the backend,
whether a failure was billed, may be retried, or needs prompt remediation.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from vidpipe_dagster.domain.video_requests import VideoRequest

ErrorKind = Literal[
    "transient",  # 429 RESOURCE_EXHAUSTED, 5xx, timeouts, dropped connections: back off, same job
    "rejected",  # 4xx before generation (bad argument, unsupported combination): not billed
    "content_policy",  # prompt or output blocked by safety filters: not billed, remediate
    "not_found",  # the operation name is unknown to the service
    "failed",  # generation ran and failed: treat as billed, do not resubmit silently
]


class GenerationApiError(Exception):
    """A classified API failure. ``billed`` says whether the provider charges for it;
    ``not_sent`` that the request provably never reached the service (the connection was refused,
    the name did not resolve, or TLS failed before a byte of the request was written), so sending
    it again cannot pay twice."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status_code: int | None = None,
        support_codes: tuple[str, ...] = (),
        billed: bool = False,
        not_sent: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.status_code = status_code
        self.support_codes = support_codes
        self.billed = billed
        self.not_sent = not_sent

    @property
    def unaccepted(self) -> bool:
        """A transient failure that proves nothing was accepted: the service answered (429,
        5xx) or the request never left (``not_sent``). Only these are resent automatically."""
        return self.kind == "transient" and (self.status_code is not None or self.not_sent)

    @property
    def retryable(self) -> bool:
        return self.kind == "transient"

    def __str__(self) -> str:
        code = f" (HTTP {self.status_code})" if self.status_code else ""
        support = f"; support codes: {', '.join(self.support_codes)}" if self.support_codes else ""
        return f"{self.kind}{code}: {self.message}{support}"


@dataclass(frozen=True)
class GeneratedVideo:
    """One video of a finished operation: inline bytes or a URI to download."""

    video_bytes: bytes | None = None
    video_uri: str | None = None
    mime_type: str = "video/mp4"

    @property
    def present(self) -> bool:
        return bool(self.video_bytes or self.video_uri)


@dataclass(frozen=True)
class OperationResult:
    """The state of a long-running video operation as last polled.

    ``video_bytes`` / ``video_uri`` are the first video; a request for several takes
    (``sampleCount``) returns the others in ``more_videos``, in the API's order. Filtered takes
    are missing from both and counted in ``rai_filtered_count``.
    """

    name: str
    done: bool
    video_bytes: bytes | None = None
    video_uri: str | None = None
    mime_type: str = "video/mp4"
    rai_filtered_count: int = 0
    rai_filtered_reasons: tuple[str, ...] = field(default_factory=tuple)
    error_message: str | None = None
    error_code: int | None = None
    more_videos: tuple[GeneratedVideo, ...] = ()

    @property
    def videos(self) -> tuple[GeneratedVideo, ...]:
        """Every video the operation returned (one per take that passed the filters)."""
        first = GeneratedVideo(self.video_bytes, self.video_uri, self.mime_type)
        return tuple(v for v in (first, *self.more_videos) if v.present)

    def take(self, index: int) -> OperationResult:
        """This result with take ``index`` as its (only) video, for ``VideoClient.fetch_video``."""
        video = self.videos[index]
        return dataclasses.replace(
            self,
            video_bytes=video.video_bytes,
            video_uri=video.video_uri,
            mime_type=video.mime_type,
            more_videos=(),
        )

    @property
    def content_filtered(self) -> bool:
        return self.done and self.rai_filtered_count > 0 and not self.videos


class VideoClient(Protocol):
    """Submit, poll and fetch Veo-style long-running video generations."""

    backend: str  # "vertex" | "animatic"
    is_preview: bool  # True for local renderers: results must be labelled as previews

    async def submit(self, request: VideoRequest) -> str:
        """Start a generation; returns the operation name. Raises GenerationApiError."""
        ...

    async def poll(self, operation_name: str) -> OperationResult:
        """One status read of a running operation. Raises GenerationApiError."""
        ...

    async def fetch_video(self, result: OperationResult) -> bytes:
        """The mp4 bytes of a finished operation's first video (inline bytes or a download);
        the engine passes ``result.take(i)`` for the other takes. Retry-safe. A client may also
        offer ``save_video(result, path)``, which writes it to a file without holding it
        (``save_video`` below uses it when present)."""
        ...


async def save_video(client: VideoClient, result: OperationResult, path: Path) -> None:
    """Write ``result``'s video to ``path``: streamed by a client that offers ``save_video``
    (a download is never held whole in memory), else from its ``fetch_video`` bytes."""
    saver = getattr(client, "save_video", None)
    if saver is not None:
        await saver(result, path)
        return
    data = await client.fetch_video(result)
    await asyncio.to_thread(path.write_bytes, data)


class ImageClient(Protocol):
    """Ask an image model for a new image conditioned on an input image (Tier 3 clean sheets)."""

    backend: str

    async def generate_image(
        self,
        *,
        model: str,
        prompt: str,
        image: bytes,
        mime_type: str,
        extra_images: Sequence[tuple[bytes, str]] = (),
        labels: Mapping[str, str] | None = None,
    ) -> bytes:
        """Returns the generated image bytes. Raises GenerationApiError (content_policy, ...).
        ``extra_images`` are further (bytes, mime type) inputs; ``labels`` are billing labels.
        Callers pass them only when they have any, so simple clients may leave them out."""
        ...
