"""The real google-genai client against the loopback Vertex emulator, through our backends."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from types import SimpleNamespace
from typing import Any, TypeVar

import av
import pytest
from google.genai import types
from PIL import Image

from vidpipe_dagster.domain.render import probe_mp4
from vidpipe_dagster.domain.video_requests import (
    ImageInput,
    VideoRequest,
    build_video_request,
    image_input,
)
from vidpipe_dagster.generation.animatic import AnimaticVideoClient
from vidpipe_dagster.generation.client import GenerationApiError, OperationResult
from vidpipe_dagster.generation.errors import classify_api_error
from vidpipe_dagster.generation.vertex import (
    VertexImageClient,
    VertexVideoClient,
    make_genai_client,
    to_genai_call,
)
from vidpipe_dagster.testing.vertex_emulator import VertexEmulator

T = TypeVar("T")
MODEL = "veo-3.1-generate-001"  # the preview id was retired on 2026-10-22
IMAGE_MODEL = "gemini-2.5-flash-image"


def png(color: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def image(color: tuple[int, int, int], label: str) -> ImageInput:
    return image_input(png(color), "image/png", label)


def video_request(
    *,
    prompt: str = "Mia walks into the park",
    model: str = MODEL,
    duration: int = 8,
    first: bool = False,
    last: bool = False,
    references: int = 0,
) -> VideoRequest:
    refs = tuple(image((40 * i, 200, 0), f"CHAR_0{i}") for i in range(1, references + 1))
    mode = "references" if references and not (first or last) else "frames"
    if references and (first or last):
        mode = "hybrid"
    return VideoRequest(
        model=model,
        prompt=prompt,
        conditioning_mode=mode,
        conditioning_reason="test",
        duration_seconds=duration,
        aspect_ratio="16:9",
        first_frame=image((200, 30, 30), "start keyframe") if first else None,
        last_frame=image((30, 30, 200), "end keyframe") if last else None,
        reference_images=refs,
        reference_tags=tuple(ref.label for ref in refs),
    )


@pytest.fixture
def emulator() -> Iterator[VertexEmulator]:
    with VertexEmulator(latency_s=0.2, video_height=90, video_fps=4) as emu:
        yield emu


def with_client(emu: VertexEmulator, body: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``body(genai_client)`` on a fresh event loop and close the client afterwards."""

    async def main() -> T:
        client = make_genai_client(
            project="demo", location="us-central1", emulator_host=emu.address
        )
        try:
            return await body(client)
        finally:
            await client.aio.aclose()

    return asyncio.run(main())


async def wait_done(videos: Any, name: str, timeout_s: float = 10.0) -> OperationResult:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = await videos.poll(name)
        if result.done:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} not done within {timeout_s} s")


def test_submit_poll_fetch_with_references(emulator: VertexEmulator) -> None:
    async def body(client: Any) -> tuple[str, OperationResult, bytes]:
        videos = VertexVideoClient(client)
        name = await videos.submit(video_request(references=3))
        first = await videos.poll(name)
        assert not first.done, "the operation is not done before the latency has passed"
        result = await wait_done(videos, name)
        return name, result, await videos.fetch_video(result)

    name, result, data = with_client(emulator, body)
    assert name.startswith(f"projects/demo/locations/us-central1/publishers/google/models/{MODEL}/")
    assert videos_sent(emulator)["referenceImages"][0]["referenceType"].lower() == "asset"
    assert "image" not in videos_sent(emulator) and "lastFrame" not in videos_sent(emulator)
    assert emulator.last_bodies["submit"]["parameters"]["durationSeconds"] == 8
    assert result.video_bytes == data and not result.content_filtered
    assert probe_mp4(data).duration_seconds == pytest.approx(8.0)


def test_submit_poll_fetch_with_first_and_last_frame(emulator: VertexEmulator) -> None:
    async def body(client: Any) -> bytes:
        videos = VertexVideoClient(client)
        name = await videos.submit(video_request(duration=6, first=True, last=True))
        return await videos.fetch_video(await wait_done(videos, name))

    data = with_client(emulator, body)
    sent = videos_sent(emulator)
    assert sent["image"]["mimeType"] == "image/png" and "bytesBase64Encoded" in sent["lastFrame"]
    assert "referenceImages" not in sent
    info = probe_mp4(data)
    assert info.duration_seconds == pytest.approx(6.0) and info.width / info.height == 16 / 9


def videos_sent(emu: VertexEmulator) -> dict[str, Any]:
    return emu.last_bodies["submit"]["instances"][0]


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        ({"references": 2, "first": True}, "First Frame and Reference Images cannot be both set"),
        ({"references": 1, "first": True, "last": True}, "cannot be both set"),
        ({"references": 4}, "Too many reference images"),
        ({"references": 2, "duration": 6}, "Duration must be 8 seconds"),
        ({"model": "veo-9-imaginary"}, "was not found"),
    ],
    ids=["refs+first-frame", "refs+last-frame", "four-refs", "refs-6s", "unknown-model"],
)
def test_model_rules_are_rejected_unbilled(
    emulator: VertexEmulator, request_kwargs: dict[str, Any], message: str
) -> None:
    async def body(client: Any) -> GenerationApiError:
        with pytest.raises(GenerationApiError) as caught:
            await VertexVideoClient(client).submit(video_request(**request_kwargs))
        return caught.value

    error = with_client(emulator, body)
    assert error.kind == "rejected" and not error.billed and not error.retryable
    assert message in error.message
    assert emulator.submit_count == 0 and emulator.submit_attempts == 1


def test_reference_type_other_than_asset_is_rejected(emulator: VertexEmulator) -> None:
    async def body(client: Any) -> GenerationApiError:
        ref = types.VideoGenerationReferenceImage(
            image=types.Image(image_bytes=png((1, 2, 3)), mime_type="image/png"),
            reference_type="style",
        )
        try:
            await client.aio.models.generate_videos(
                model=MODEL,
                source=types.GenerateVideosSource(prompt="style ref"),
                config=types.GenerateVideosConfig(duration_seconds=8, reference_images=[ref]),
            )
        except Exception as exc:
            return classify_api_error(exc, "submit")
        raise AssertionError("the emulator accepted a style reference")

    error = with_client(emulator, body)
    assert error.kind == "rejected" and error.status_code == 400
    assert "Supported reference types: asset" in error.message


def test_quota_burst_is_transient_and_the_sdk_does_not_retry(emulator: VertexEmulator) -> None:
    emulator.inject("submit", "429", "429", "503")

    async def body(client: Any) -> list[str]:
        videos = VertexVideoClient(client)
        kinds = []
        for _ in range(3):
            with pytest.raises(GenerationApiError) as caught:
                await videos.submit(video_request())
            kinds.append(caught.value.kind)
            assert caught.value.status_code in (429, 503)
        await videos.submit(video_request())
        return kinds

    assert with_client(emulator, body) == ["transient"] * 3
    assert emulator.submit_attempts == 4, "one HTTP request per submit: SDK retries are off"
    assert emulator.submit_count == 1


def test_dropped_connections_and_poll_errors_are_transient(emulator: VertexEmulator) -> None:
    emulator.inject("submit", "drop")
    emulator.inject("poll", "drop", "500")

    async def body(client: Any) -> list[GenerationApiError]:
        videos = VertexVideoClient(client)
        errors = []
        with pytest.raises(GenerationApiError) as caught:
            await videos.submit(video_request())
        errors.append(caught.value)
        name = await videos.submit(video_request())
        for _ in range(2):
            with pytest.raises(GenerationApiError) as caught:
                await videos.poll(name)
            errors.append(caught.value)
        await wait_done(videos, name)
        return errors

    errors = with_client(emulator, body)
    assert [e.kind for e in errors] == ["transient"] * 3
    assert "may have reached the service" in errors[0].message
    assert errors[2].status_code == 500


def test_drop_after_accept_is_transient_but_the_operation_exists(emulator: VertexEmulator) -> None:
    emulator.inject("submit", "drop_after_accept")

    async def body(client: Any) -> str:
        with pytest.raises(GenerationApiError) as caught:
            await VertexVideoClient(client).submit(video_request())
        return caught.value.kind

    assert with_client(emulator, body) == "transient"
    assert emulator.submit_count == 1 and len(emulator.operation_names()) == 1


def test_rai_filtered_result_is_content_filtered_with_reasons() -> None:
    with VertexEmulator(rai_filter_substrings=["forbidden"], video_height=90) as emu:

        async def body(client: Any) -> tuple[OperationResult, GenerationApiError]:
            videos = VertexVideoClient(client)
            name = await videos.submit(video_request(prompt="a FORBIDDEN scene"))
            result = await wait_done(videos, name)
            with pytest.raises(GenerationApiError) as caught:
                await videos.fetch_video(result)
            return result, caught.value

        result, error = with_client(emu, body)
    assert result.content_filtered and result.rai_filtered_count == 1
    assert "usage guidelines" in result.rai_filtered_reasons[0]
    assert error.kind == "content_policy" and error.support_codes == ("90789179",)


def test_prompt_refused_at_submit_is_content_policy() -> None:
    with VertexEmulator(submit_blocked_substrings=["graphic"]) as emu:

        async def body(client: Any) -> GenerationApiError:
            with pytest.raises(GenerationApiError) as caught:
                await VertexVideoClient(client).submit(video_request(prompt="graphic fight"))
            return caught.value

        error = with_client(emu, body)
    assert error.kind == "content_policy" and not error.billed
    assert error.support_codes == ("17301594",) and error.status_code == 400
    assert emu.submit_count == 0


def test_operation_error_is_reported_on_the_result() -> None:
    with VertexEmulator(operation_error_substrings=["explode"], video_height=90) as emu:

        async def body(client: Any) -> OperationResult:
            videos = VertexVideoClient(client)
            return await wait_done(videos, await videos.submit(video_request(prompt="explode")))

        result = with_client(emu, body)
    assert result.done and result.error_code == 13 and "internal error" in str(result.error_message)


def test_resume_polls_an_existing_operation_from_a_new_client(emulator: VertexEmulator) -> None:
    async def submit(client: Any) -> str:
        return await VertexVideoClient(client).submit(video_request(references=1))

    name = with_client(emulator, submit)

    async def resume(client: Any) -> bytes:
        videos = VertexVideoClient(client)
        return await videos.fetch_video(await wait_done(videos, name))

    assert probe_mp4(with_client(emulator, resume)).duration_seconds == pytest.approx(8.0)
    assert emulator.submit_count == 1


def test_unknown_operation_is_not_found(emulator: VertexEmulator) -> None:
    missing = f"projects/demo/locations/us-central1/publishers/google/models/{MODEL}/operations/x"

    async def body(client: Any) -> str:
        with pytest.raises(GenerationApiError) as caught:
            await VertexVideoClient(client).poll(missing)
        return caught.value.kind

    assert with_client(emulator, body) == "not_found"


def test_same_request_counts_against_its_fingerprint(emulator: VertexEmulator) -> None:
    async def body(client: Any) -> list[str]:
        videos = VertexVideoClient(client)
        return [await videos.submit(video_request(references=2)) for _ in range(2)]

    names = with_client(emulator, body)
    fingerprint = emulator.operation_fingerprint(names[0])
    assert fingerprint == emulator.operation_fingerprint(names[1])
    assert emulator.submissions_by_fingerprint == {fingerprint: 2}


def test_video_by_uri_is_downloaded_and_gcs_needs_storage() -> None:
    with VertexEmulator(serve_video_uri=True, video_height=90) as emu:

        async def body(client: Any) -> tuple[OperationResult, bytes, GenerationApiError]:
            videos = VertexVideoClient(client)
            result = await wait_done(videos, await videos.submit(video_request(duration=4)))
            data = await videos.fetch_video(result)
            gcs = OperationResult(name="op", done=True, video_uri="gs://bucket/video.mp4")
            with pytest.raises(GenerationApiError) as caught:
                await videos.fetch_video(gcs)
            return result, data, caught.value

        result, data, error = with_client(emu, body)
    assert result.video_bytes is None and str(result.video_uri).startswith(emu.base_url)
    assert probe_mp4(data).duration_seconds == pytest.approx(4.0)
    assert error.kind == "failed" and "google-cloud-storage" in error.message


def test_generate_image_returns_the_inline_image(emulator: VertexEmulator) -> None:
    async def body(client: Any) -> bytes:
        return await VertexImageClient(client).generate_image(
            model=IMAGE_MODEL, prompt="clean sheet", image=png((200, 0, 0)), mime_type="image/png"
        )

    result = Image.open(io.BytesIO(with_client(emulator, body)))
    assert result.size == (96, 64)
    assert result.convert("RGB").getpixel((0, 0)) == (128, 128, 128)
    assert result.convert("RGB").getpixel((48, 32)) == (200, 0, 0)
    sent = emulator.last_bodies["generate_content"]
    assert sent["generationConfig"]["responseModalities"] == ["IMAGE"]
    assert [next(iter(p)) for p in sent["contents"][0]["parts"]] == ["inlineData", "text"]
    assert emulator.generate_content_count == 1


def test_generate_image_uses_the_scripted_responder() -> None:
    seen: list[tuple[str, int]] = []

    def responder(prompt: str, image_bytes: bytes | None) -> bytes:
        seen.append((prompt, len(image_bytes or b"")))
        return png((1, 2, 3), (8, 8))

    with VertexEmulator(image_responder=responder) as emu:

        async def body(client: Any) -> bytes:
            return await VertexImageClient(client).generate_image(
                model=IMAGE_MODEL, prompt="idealize", image=png((9, 9, 9)), mime_type="image/png"
            )

        data = with_client(emu, body)
    assert Image.open(io.BytesIO(data)).size == (8, 8)
    assert seen == [("idealize", len(png((9, 9, 9))))]


@pytest.mark.parametrize("prompt", ["please do BLOCKME", "unsafe-image please"])
def test_blocked_image_generation_is_content_policy(prompt: str) -> None:
    with VertexEmulator(
        blocked_prompt_substrings=["blockme"], image_safety_substrings=["unsafe-image"]
    ) as emu:

        async def body(client: Any) -> GenerationApiError:
            with pytest.raises(GenerationApiError) as caught:
                await VertexImageClient(client).generate_image(
                    model=IMAGE_MODEL, prompt=prompt, image=png((5, 5, 5)), mime_type="image/png"
                )
            return caught.value

        error = with_client(emu, body)
    assert error.kind == "content_policy" and not error.billed
    assert ("PROHIBITED_CONTENT" if "BLOCKME" in prompt else "IMAGE_SAFETY") in error.message


def test_slow_answers_time_out_as_transient() -> None:
    def slow(prompt: str, image_bytes: bytes | None) -> bytes:
        time.sleep(0.6)
        return png((0, 0, 0))

    with VertexEmulator(image_responder=slow) as emu:

        async def body(client: Any) -> GenerationApiError:
            with pytest.raises(GenerationApiError) as caught:
                await VertexImageClient(client, timeout_s=0.2).generate_image(
                    model=IMAGE_MODEL, prompt="x", image=png((1, 1, 1)), mime_type="image/png"
                )
            return caught.value

        assert with_client(emu, body).kind == "transient"


def test_unknown_image_model_is_rejected(emulator: VertexEmulator) -> None:
    async def body(client: Any) -> GenerationApiError:
        with pytest.raises(GenerationApiError) as caught:
            await VertexImageClient(client).generate_image(
                model="imagen-0", prompt="x", image=png((1, 1, 1)), mime_type="image/png"
            )
        return caught.value

    error = with_client(emulator, body)
    assert error.kind == "rejected" and error.status_code == 404


def test_animatic_client_end_to_end() -> None:
    async def main() -> tuple[str, OperationResult, OperationResult, bytes, GenerationApiError]:
        videos = AnimaticVideoClient(render_latency_s=0.1, fps=6, height=180)
        name = await videos.submit(video_request(references=2))
        pending = await videos.poll(name)
        await asyncio.sleep(0.12)
        done = await videos.poll(name)
        data = await videos.fetch_video(done)
        with pytest.raises(GenerationApiError) as caught:
            await videos.poll("animatic/unknown/1")
        return name, pending, done, data, caught.value

    name, pending, done, data, error = asyncio.run(main())
    request = video_request(references=2)
    assert AnimaticVideoClient.is_preview and AnimaticVideoClient.backend == "animatic"
    assert name.startswith(f"animatic/{request.fingerprint}/")
    assert asyncio.run(AnimaticVideoClient().poll(name)).done, "shared by instances in a process"
    assert not pending.done and done.done and done.video_bytes == data
    info = probe_mp4(data)
    assert info.is_animatic and info.duration_seconds == pytest.approx(8.0)
    assert (info.width, info.height) == (320, 180)
    assert error.kind == "not_found"


def test_client_without_emulator_targets_vertex_with_retries_off() -> None:
    client = make_genai_client(project="p", location="europe-west4")
    options = client._api_client.get_read_only_http_options()
    assert client.vertexai
    assert options["base_url"] == "https://europe-west4-aiplatform.googleapis.com/"
    assert options["api_version"] == "v1beta1"
    assert options["retry_options"]["attempts"] == 1


def test_failed_video_uri_download_is_classified_by_status() -> None:
    with VertexEmulator(serve_video_uri=True, video_height=90) as emu:
        emu.fail_media(404, 503)

        async def body(client: Any) -> tuple[list[GenerationApiError], bytes]:
            videos = VertexVideoClient(client)
            result = await wait_done(videos, await videos.submit(video_request(duration=4)))
            errors = []
            for _ in range(2):
                with pytest.raises(GenerationApiError) as caught:
                    await videos.fetch_video(result)
                errors.append(caught.value)
            return errors, await videos.fetch_video(result)  # the same URI, once it answers

        (gone, busy), data = with_client(emu, body)
    assert (gone.kind, gone.status_code, gone.billed) == ("failed", 404, True)
    assert (busy.kind, busy.status_code) == ("transient", 503)
    assert probe_mp4(data).duration_seconds == pytest.approx(4.0)


def test_gcs_download_errors_are_classified_by_status(monkeypatch: pytest.MonkeyPatch) -> None:
    class NotFound(Exception):
        code = 404

    class Unavailable(Exception):
        code = 503

    answers: list[Exception | bytes] = [
        NotFound("No such object"),
        Unavailable("try later"),
        b"mp4",
    ]

    class Blob:
        def download_as_bytes(self) -> bytes:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    class Client:
        def bucket(self, name: str) -> Any:
            assert name == "bucket"
            return SimpleNamespace(blob=lambda path: Blob())

    monkeypatch.setitem(sys.modules, "google.cloud.storage", SimpleNamespace(Client=Client))
    result = OperationResult(name="op", done=True, video_uri="gs://bucket/clips/video.mp4")
    videos = VertexVideoClient(make_genai_client(emulator_host="127.0.0.1:1"))

    async def body() -> tuple[list[GenerationApiError], bytes]:
        errors = []
        for _ in range(2):
            with pytest.raises(GenerationApiError) as caught:
                await videos.fetch_video(result)
            errors.append(caught.value)
        return errors, await videos.fetch_video(result)

    (gone, busy), data = asyncio.run(body())
    assert (gone.kind, gone.status_code, gone.billed) == ("failed", 404, True)
    assert "gs://bucket/clips/video.mp4" in gone.message
    assert (busy.kind, busy.status_code) == ("transient", 503)
    assert data == b"mp4"


def test_animatic_in_references_mode_still_moves_from_start_to_end_keyframe() -> None:
    """Veo gets no keyframes with references; the preview still shows the storyboard's motion."""
    red, blue = image((220, 30, 30), "start keyframe"), image((30, 30, 220), "end keyframe")
    request = build_video_request(
        model=MODEL,
        prompt="Mia walks into the park",
        target_duration=6,
        aspect_ratio="16:9",
        first_frame=red,
        last_frame=blue,
        references=[("CHAR_01", image((40, 200, 0), "CHAR_01"))],
    )
    assert request.conditioning_mode == "references" and request.first_frame is None
    assert request.storyboard_frames == (red, blue)
    assert "storyboard" not in str(to_genai_call(request))  # never sent to Veo

    async def main() -> bytes:
        videos = AnimaticVideoClient(fps=4, height=180)
        done = await videos.poll(await videos.submit(request))
        return await videos.fetch_video(done)

    with av.open(io.BytesIO(asyncio.run(main()))) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    first, last = frames[0][90, 160].astype(int), frames[-1][90, 160].astype(int)
    assert first[0] > 150 and first[2] < 90, f"starts on the start keyframe: {first}"
    assert last[2] > 150 and last[0] < 90, f"ends on the end keyframe: {last}"
