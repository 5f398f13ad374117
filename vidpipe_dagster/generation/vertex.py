"""Veo video and Gemini image generation through google-genai in Vertex mode.

Implements the protocols in ``generation.client``. The SDK's own retries are switched off
(``HttpRetryOptions(attempts=1)``) so that the pipeline alone decides when a paid request is sent
again; every failure surfaces once, classified by ``generation.errors``. ``to_genai_call`` is the
one place a ``domain.video_requests.VideoRequest`` becomes SDK types.
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
import urllib.error
import urllib.request
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from google import genai
from google.genai import types

from vidpipe_dagster.domain.catalog import ModelCatalog, packaged_catalog
from vidpipe_dagster.domain.video_requests import ImageInput, VideoRequest
from vidpipe_dagster.generation.client import GeneratedVideo, GenerationApiError, OperationResult
from vidpipe_dagster.generation.errors import (
    SAFETY_FINISH_REASONS,
    Call,
    classify_api_error,
    support_codes,
)

T = TypeVar("T")

EMULATOR_PROJECT = "vidpipe-emulator"


def make_genai_client(
    *,
    project: str | None = None,
    location: str = "us-central1",
    emulator_host: str | None = None,
    api_key: str | None = None,
    timeout_s: float = 120.0,
) -> genai.Client:
    """A Vertex-mode google-genai client with SDK retries off.

    ``emulator_host`` ("127.0.0.1:8085") points the client at the loopback emulator with a static
    token, because anonymous credentials cannot be refreshed by the SDK. ``api_key`` selects
    Vertex express mode (the SDK forbids combining it with project/location).
    """
    http_options = types.HttpOptions(
        retry_options=types.HttpRetryOptions(attempts=1),
        timeout=int(timeout_s * 1000),
    )
    if emulator_host:
        from google.oauth2.credentials import Credentials

        host = emulator_host.removeprefix("http://").rstrip("/")
        http_options.base_url = f"http://{host}"
        return genai.Client(
            vertexai=True,
            project=project or EMULATOR_PROJECT,
            location=location,
            credentials=Credentials(token="emulator"),
            http_options=http_options,
        )
    if api_key:
        return genai.Client(vertexai=True, api_key=api_key, http_options=http_options)
    return genai.Client(
        vertexai=True, project=project, location=location, http_options=http_options
    )


class VertexVideoClient:
    """Veo through google-genai in Vertex mode: one HTTP request per method call, no retries."""

    backend = "vertex"
    is_preview = False

    def __init__(
        self,
        client: genai.Client,
        *,
        submit_timeout_s: float = 120.0,
        poll_timeout_s: float = 30.0,
        download_timeout_s: float = 300.0,
        catalog: ModelCatalog | None = None,
    ) -> None:
        self._client = client
        self._submit_timeout_s = submit_timeout_s
        self._poll_timeout_s = poll_timeout_s
        self._download_timeout_s = download_timeout_s
        self._catalog = catalog

    async def submit(self, request: VideoRequest) -> str:
        model, source, config = to_genai_call(request, self._catalog)
        operation = await _call(
            self._client.aio.models.generate_videos(model=model, source=source, config=config),
            "submit",
            self._submit_timeout_s,
        )
        if not operation.name:
            raise GenerationApiError(
                "failed", "Veo accepted the request but returned no operation name", billed=True
            )
        return operation.name

    async def poll(self, operation_name: str) -> OperationResult:
        operation = await _call(
            self._client.aio.operations.get(types.GenerateVideosOperation(name=operation_name)),
            "poll",
            self._poll_timeout_s,
        )
        return operation_result(operation_name, operation)

    async def fetch_video(self, result: OperationResult) -> bytes:
        if result.video_bytes:
            return result.video_bytes
        uri = self._video_uri(result)
        if uri.startswith(("http://", "https://")):
            return await _call(
                asyncio.to_thread(_download_http, uri, self._download_timeout_s),
                "fetch",
                self._download_timeout_s + 5,
            )
        return await _call(asyncio.to_thread(_download_gcs, uri), "fetch", self._download_timeout_s)

    async def save_video(self, result: OperationResult, path: Path) -> None:
        """Write the video to ``path``: inline bytes as they came, a URI streamed in chunks (a
        video is never held whole in memory on the way to the media root)."""
        if result.video_bytes:
            await asyncio.to_thread(path.write_bytes, result.video_bytes)
            return
        uri = self._video_uri(result)
        if uri.startswith(("http://", "https://")):
            await _call(
                asyncio.to_thread(_download_http_to, uri, path, self._download_timeout_s),
                "fetch",
                self._download_timeout_s + 5,
            )
            return
        await _call(
            asyncio.to_thread(_download_gcs_to, uri, path), "fetch", self._download_timeout_s
        )

    @staticmethod
    def _video_uri(result: OperationResult) -> str:
        """The URI to download, or why there is nothing to download (classified)."""
        if result.content_filtered:
            reasons = "; ".join(result.rai_filtered_reasons) or "no reason given"
            raise GenerationApiError(
                "content_policy",
                f"the video was filtered: {reasons}",
                support_codes=support_codes(reasons),
            )
        if not result.video_uri:
            raise GenerationApiError(
                "failed", f"operation {result.name} finished without a video", billed=True
            )
        if not result.video_uri.startswith(("http://", "https://", "gs://")):
            raise GenerationApiError(
                "failed", f"cannot download video URI {result.video_uri!r}", billed=True
            )
        return result.video_uri


class VertexImageClient:
    """Gemini image models through ``generate_content`` with the input image as the first part."""

    backend = "vertex"

    def __init__(self, client: genai.Client, *, timeout_s: float = 120.0) -> None:
        self._client = client
        self._timeout_s = timeout_s

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
        images = [(image, mime_type), *extra_images]
        response = await _call(
            self._client.aio.models.generate_content(
                model=model,
                contents=[
                    *(types.Part.from_bytes(data=data, mime_type=mime) for data, mime in images),
                    prompt,
                ],
                config=types.GenerateContentConfig(
                    response_modalities=["IMAGE"], labels=dict(labels) if labels else None
                ),
            ),
            "generate_image",
            self._timeout_s,
        )
        return first_image(response)


def operation_result(name: str, operation: types.GenerateVideosOperation) -> OperationResult:
    """Flatten an SDK operation into our result (first video, filter counts, operation error)."""
    if operation.error:
        error = dict(operation.error)
        return OperationResult(
            name=name,
            done=True,
            error_message=str(error.get("message") or error),
            error_code=_int_or_none(error.get("code")),
        )
    if not operation.done:
        return OperationResult(name=name, done=False)
    response = operation.response or operation.result
    generated = (response.generated_videos or []) if response else []
    videos = [
        GeneratedVideo(v.video.video_bytes, v.video.uri, v.video.mime_type or "video/mp4")
        for v in generated
        if v.video and (v.video.video_bytes or v.video.uri)
    ]
    first = videos[0] if videos else GeneratedVideo()
    return OperationResult(
        name=name,
        done=True,
        video_bytes=first.video_bytes,
        video_uri=first.video_uri,
        mime_type=first.mime_type,
        rai_filtered_count=(response.rai_media_filtered_count or 0) if response else 0,
        rai_filtered_reasons=tuple(response.rai_media_filtered_reasons or ()) if response else (),
        more_videos=tuple(videos[1:]),
    )


def first_image(response: types.GenerateContentResponse) -> bytes:
    """The first inline image of a response; safety blocks and empty answers are content_policy."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        reason = _enum_name(feedback.block_reason)
        detail = feedback.block_reason_message or "the prompt was blocked"
        raise GenerationApiError("content_policy", f"prompt blocked ({reason}): {detail}")
    finish_reasons: list[str] = []
    texts: list[str] = []
    for candidate in response.candidates or []:
        reason = _enum_name(candidate.finish_reason) if candidate.finish_reason else ""
        finish_reasons.append(reason)
        for part in (candidate.content.parts if candidate.content else None) or []:
            inline = part.inline_data
            if inline and inline.data and (inline.mime_type or "").startswith("image/"):
                return inline.data
            if part.text:
                texts.append(part.text)
        if reason in SAFETY_FINISH_REASONS:
            detail = candidate.finish_message or "the image was filtered"
            raise GenerationApiError("content_policy", f"image blocked ({reason}): {detail}")
    said = f"; model said: {' '.join(texts)[:200]}" if texts else ""
    raise GenerationApiError(
        "content_policy",
        f"no image returned (finish reasons: {', '.join(finish_reasons) or 'none'}){said}",
    )


async def _call(awaitable: Awaitable[T], call: Call, timeout_s: float) -> T:
    """Await one SDK request under a hard time bound, classifying every failure."""
    try:
        return await asyncio.wait_for(awaitable, timeout=timeout_s)
    except TimeoutError as exc:
        raise GenerationApiError("transient", f"{call} timed out after {timeout_s:.0f} s") from exc
    except GenerationApiError:
        raise
    except Exception as exc:
        raise classify_api_error(exc, call) from exc


def _enum_name(value: object) -> str:
    return str(getattr(value, "value", value))


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _download_http(url: str, timeout_s: float) -> bytes:
    """Fetch a video URL (signed URLs, the emulator). A 4xx is not retried here; it is billed
    (the video was generated), and the engine keeps the operation to download again later."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise _download_error(url, exc.code) from exc


def _download_http_to(url: str, path: Path, timeout_s: float) -> None:
    """``_download_http`` into a file, 1 MiB at a time."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, path.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except urllib.error.HTTPError as exc:
        raise _download_error(url, exc.code) from exc


def _gcs_blob(uri: str):  # type: ignore[no-untyped-def]
    """gs:// needs google-cloud-storage; the SDK cannot download GCS objects in Vertex mode."""
    try:
        storage = importlib.import_module("google.cloud.storage")
    except ImportError as exc:
        raise GenerationApiError(
            "failed",
            f"the video is at {uri}, and downloading gs:// URIs needs the google-cloud-storage "
            "package (pip install google-cloud-storage); or leave output_gcs_uri unset so Veo "
            "returns the video inline",
            billed=True,
        ) from exc
    bucket, _, blob = uri.removeprefix("gs://").partition("/")
    return storage.Client().bucket(bucket).blob(blob)


def _download_gcs(uri: str) -> bytes:
    blob = _gcs_blob(uri)
    try:
        return blob.download_as_bytes()
    except Exception as exc:
        error = _gcs_error(uri, exc)
        if error is exc:
            raise
        raise error from exc


def _download_gcs_to(uri: str, path: Path) -> None:
    blob = _gcs_blob(uri)
    try:
        blob.download_to_filename(str(path))
    except Exception as exc:
        error = _gcs_error(uri, exc)
        if error is exc:
            raise
        raise error from exc


def _gcs_error(uri: str, exc: Exception) -> Exception:
    code = getattr(exc, "code", None)  # google.api_core errors carry the HTTP status
    if not isinstance(code, int):
        return exc
    return _download_error(uri, code)


def _download_error(uri: str, code: int) -> GenerationApiError:
    """A failed download by HTTP status: 408/429/5xx are transient; anything else is billed (the
    video was generated) and not retried here, and its status (404/410: gone) lets the engine
    decide between downloading again later and regenerating."""
    if code in (408, 429) or code >= 500:
        return GenerationApiError(
            "transient", f"video download failed: HTTP {code}", status_code=code
        )
    return GenerationApiError(
        "failed", f"video download failed: HTTP {code} for {uri}", status_code=code, billed=True
    )


def to_genai_call(
    request: VideoRequest, catalog: ModelCatalog | None = None
) -> tuple[str, types.GenerateVideosSource, types.GenerateVideosConfig]:
    """(model, source, config) for ``client.models.generate_videos`` (the non-deprecated
    ``source=`` form).

    References go only as ``VideoGenerationReferenceImage(reference_type="asset")``
    (``types.ReferenceImage`` is an Imagen editing type). ``generate_audio`` is left unset for
    models without audio, which may reject the parameter. Takes go as ``number_of_videos``
    (``sampleCount``), the seed sent (the user's or the engine's) as ``seed``, and the billing
    labels as ``labels`` (a top-level field of the Vertex request).
    """
    caps = (catalog or packaged_catalog()).find_video_model(request.model)
    config = types.GenerateVideosConfig(
        number_of_videos=request.takes,
        duration_seconds=request.duration_seconds,
        aspect_ratio=request.aspect_ratio,
        resolution=request.resolution,
        seed=request.effective_seed,
        labels=dict(request.labels) or None,
        generate_audio=request.generate_audio if caps is None or caps.audio else None,
    )
    if request.last_frame is not None:
        config.last_frame = _genai_image(request.last_frame)
    if request.reference_images:
        config.reference_images = [
            types.VideoGenerationReferenceImage(image=_genai_image(ref), reference_type="asset")
            for ref in request.reference_images
        ]
    source = types.GenerateVideosSource(
        prompt=request.prompt,
        image=_genai_image(request.first_frame) if request.first_frame is not None else None,
    )
    return request.model, source, config


def _genai_image(image: ImageInput) -> types.Image:
    return types.Image(image_bytes=image.data, mime_type=image.mime_type)
