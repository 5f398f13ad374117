"""Issue 11 in the engine, end to end: the real google-genai client against the loopback emulator
(which follows the same model catalog). Takes, billing labels and seeds, remediation by category,
the audio filter, and resolution-aware costs, read back from the ledger and the wire."""

from __future__ import annotations

import asyncio
import io
import tempfile
from dataclasses import replace
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from vidpipe_dagster.db.ledger import Ledger
from vidpipe_dagster.db.session import migrate
from vidpipe_dagster.domain.catalog import Lifecycle, ModelChoiceError, packaged_catalog
from vidpipe_dagster.domain.render import Mp4Info, probe_mp4
from vidpipe_dagster.domain.video_requests import build_video_request, image_input
from vidpipe_dagster.generation.animatic import AnimaticVideoClient
from vidpipe_dagster.generation.clips import (
    ClipJob,
    ClipOutcome,
    Limits,
    estimate_new_spend,
    generate_clips,
    take_key,
)
from vidpipe_dagster.generation.images import LedgeredImageClient
from vidpipe_dagster.generation.tier3 import generate_tier3_clean_sheet
from vidpipe_dagster.generation.vertex import (
    VertexImageClient,
    VertexVideoClient,
    make_genai_client,
)
from vidpipe_dagster.testing.vertex_emulator import VertexEmulator

MODEL = "veo-3.1-generate-001"
PAID: Any = SimpleNamespace(backend="vertex", is_preview=False)  # what estimates read of a client


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), color).save(buffer, format="PNG")
    return buffer.getvalue()


START = image_input(png((200, 30, 30)), "image/png", "start keyframe")
END = image_input(png((30, 30, 200)), "image/png", "end keyframe")
REF = ("CHAR_01", image_input(png((40, 200, 0)), "image/png", "CHAR_01"))


class Store:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def store(self, key: str, downloaded: Path) -> str:
        url = f"clips/{key[:24]}.mp4"  # the stage cuts keys like this: takes must survive it
        self.files[url] = downloaded.read_bytes()
        downloaded.unlink()
        return url

    def exists(self, url: str) -> bool:
        return url in self.files


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrate(url)
    return Ledger.from_url(url)


def clip_job(key: str = "3", *, prompt: str = "Mia walks into the park", **kwargs: Any) -> ClipJob:
    args: dict[str, Any] = {
        "model": MODEL,
        "prompt": prompt,
        "target_duration": 6,
        "aspect_ratio": "16:9",
        "first_frame": START,
        "last_frame": END,
        "references": [REF],
    }
    args.update(kwargs)
    return ClipJob(key=key, project_slug="spring-ad", request=build_video_request(**args))


def run(
    emu: VertexEmulator, ledger: Ledger, store: Store, jobs: list[ClipJob], **kwargs: Any
) -> list[ClipOutcome]:
    async def main() -> list[ClipOutcome]:
        genai = make_genai_client(emulator_host=emu.address, project="demo")
        try:
            return await generate_clips(
                jobs,
                VertexVideoClient(genai),
                ledger,
                Limits(requests_per_minute=0),
                store_result=store.store,
                result_exists=store.exists,
                poll_interval=0.01,
                **kwargs,
            )
        finally:
            await genai.aio.aclose()

    return asyncio.run(main())


def probe(data: bytes) -> Mp4Info:
    with tempfile.NamedTemporaryFile(suffix=".mp4") as handle:
        handle.write(data)
        handle.flush()
        return probe_mp4(Path(handle.name))


def emulator(**kwargs: Any) -> VertexEmulator:
    return VertexEmulator(video_height=72, video_fps=4, **kwargs)


def test_takes_are_one_request_all_stored_and_never_paid_again(ledger: Ledger) -> None:
    store = Store()
    job = clip_job(references=[], resolution="1080p", takes=3)
    assert estimate_new_spend([job], PAID, ledger) == [("3", pytest.approx(0.40 * 8 * 3))]
    with emulator() as emu:
        [outcome] = run(emu, ledger, store, [job])
        assert outcome.status == "done", outcome.error
        assert emu.submit_count == 1
        body = emu.last_bodies["submit"]
        assert body["parameters"]["sampleCount"] == 3
        assert body["parameters"]["resolution"] == "1080p"
        assert body["parameters"]["durationSeconds"] == 8  # forced at 1080p

        assert len(outcome.take_urls) == 3 == len(set(outcome.take_urls))
        assert all(
            probe(store.files[url]).duration_seconds == pytest.approx(8.0)
            for url in outcome.take_urls
        )
        assert outcome.take_urls[0] == outcome.result_url
        assert outcome.cost_usd == pytest.approx(0.40 * 8 * 3)
        [row] = ledger.entries(job.request.fingerprint)
        assert (row.state, row.resolution, row.takes) == ("done", "1080p", 3)
        assert row.cost_usd == pytest.approx(9.60)
        assert row.details and row.details["take_urls"] == outcome.take_urls

        [again] = run(emu, ledger, store, [job])  # every take reused, nothing sent
        assert again.cached and again.take_urls == outcome.take_urls and emu.submit_count == 1
        assert estimate_new_spend([job], PAID, ledger) == [("3", 0.0)]


def test_filtered_takes_are_not_charged(ledger: Ledger) -> None:
    store = Store()
    job = clip_job(references=[], target_duration=4, takes=3)
    with emulator(filtered_takes=1) as emu:
        [outcome] = run(emu, ledger, store, [job])
    assert outcome.status == "done" and len(outcome.take_urls) == 2
    assert outcome.cost_usd == pytest.approx(0.40 * 4 * 2)  # two delivered, one filtered
    assert any("1 of 3 takes filtered" in note for note in outcome.notes)
    [row] = ledger.entries(job.request.fingerprint)
    assert row.cost_usd == pytest.approx(3.20) and row.takes == 3


def test_every_paid_request_carries_labels_and_records_its_seed(ledger: Ledger) -> None:
    store = Store()
    job = clip_job()
    with emulator() as emu:
        [outcome] = run(emu, ledger, store, [job], row_details={"run_id": "Run-42"})
        body = emu.last_bodies["submit"]
    [row] = ledger.entries(job.request.fingerprint)
    assert body["labels"] == {
        "vidpipe_project": "spring-ad",
        "vidpipe_scene": "3",
        "vidpipe_ledger_row": str(row.id),
        "vidpipe_run": "run-42",
    }
    assert row.labels == body["labels"] and outcome.labels == body["labels"]
    seed = body["parameters"]["seed"]
    assert isinstance(seed, int) and row.details and row.details["seed"] == seed == outcome.seed
    assert row.details["seed_chosen"] is True


def test_a_fixed_seed_is_sent_and_is_part_of_the_request(ledger: Ledger) -> None:
    store = Store()
    job = clip_job(seed=1234)
    with emulator() as emu:
        [outcome] = run(emu, ledger, store, [job])
        assert emu.last_bodies["submit"]["parameters"]["seed"] == 1234
    assert outcome.seed == 1234 and job.request.fingerprint != clip_job().request.fingerprint


@pytest.mark.parametrize(
    ("category", "name"),
    [("child", "Child"), ("celebrity", "Celebrity"), ("third_party", "Third-party content")],
)
def test_categories_no_rewrite_fixes_stop_at_once(ledger: Ledger, category: str, name: str) -> None:
    store = Store()
    job = clip_job(prompt="the kid waves")
    with emulator(category_substrings={"kid": category}) as emu:
        [outcome] = run(emu, ledger, store, [job])
        assert emu.submit_count == 1, "nothing more was sent"
    assert outcome.status == "failed" and outcome.remediation_level == 0
    error = outcome.error or ""
    assert f"blocked by content policy: {name}" in error
    assert "What to change:" in error and "cannot fix" in error
    assert outcome.categories == (category,)
    assert [e.state for e in ledger.entries(job.request.fingerprint)] == ["failed_unbilled"]
    assert outcome.cost_usd == 0


def test_prohibited_at_submit_also_stops_at_once(ledger: Ledger) -> None:
    with emulator(submit_category_substrings={"forbidden": "prohibited"}) as emu:
        [outcome] = run(emu, ledger, Store(), [clip_job(prompt="a forbidden thing")])
        assert emu.submit_attempts == 1 and emu.submit_count == 0
    assert outcome.status == "failed" and "Prohibited content (89371032)" in (outcome.error or "")


def test_categories_a_rewrite_may_fix_escalate_through_the_levels(ledger: Ledger) -> None:
    store = Store()
    job = clip_job(prompt="a fist fight")
    with emulator(category_substrings={"fight": "violence"}) as emu:
        [outcome] = run(emu, ledger, store, [job])
        assert emu.submit_count == 3  # levels 0, 1, 2, each filtered and not charged
    assert outcome.status == "failed" and "remediation level 2 (the last)" in (outcome.error or "")
    assert "Violence (61493863)" in (outcome.error or "")
    assert outcome.categories == ("violence",)


def test_audio_filter_passes_on_a_plain_retry(ledger: Ledger) -> None:
    store = Store()
    job = clip_job(prompt="room tone hum")
    with emulator(audio_filter_substrings=["room tone"], audio_filter_repeats=1) as emu:
        [outcome] = run(emu, ledger, store, [job])
        assert emu.submit_count == 2
    assert outcome.status == "done" and outcome.request.generate_audio is True
    assert outcome.request.fingerprint == job.request.fingerprint
    assert [e.state for e in ledger.entries(job.request.fingerprint)] == [
        "failed_unbilled",
        "done",
    ]
    assert outcome.cost_usd == pytest.approx(3.20)
    assert any("sending the same request once more" in note for note in outcome.notes)


def test_audio_filter_twice_goes_silent_and_a_rerun_reuses_it(ledger: Ledger) -> None:
    store = Store()
    job = clip_job(prompt="room tone hum")
    with emulator(audio_filter_substrings=["room tone"], audio_filter_repeats=10) as emu:
        [outcome] = run(emu, ledger, store, [job])
        assert emu.submit_count == 3
        assert emu.last_bodies["submit"]["parameters"]["generateAudio"] is False
        assert outcome.status == "done" and outcome.request.generate_audio is False
        assert outcome.remediation_level == 0  # the prompt was never rewritten
        assert outcome.cost_usd == pytest.approx(0.20 * 8)  # the silent price
        assert [e.state for e in ledger.entries(job.request.fingerprint)] == ["failed_unbilled"] * 2

        [again] = run(emu, ledger, store, [job])
        assert again.cached and emu.submit_count == 3
    assert estimate_new_spend([job], PAID, ledger) == [("3", 0.0)]


def test_take_keys_survive_a_store_that_cuts_keys() -> None:
    fingerprint = clip_job().request.fingerprint
    keys = [take_key(fingerprint, i) for i in range(4)]
    assert keys[0] == fingerprint
    assert len({key[:24] for key in keys}) == 4


def test_animatic_honours_resolution_and_takes() -> None:
    client = AnimaticVideoClient()

    async def render(request: Any) -> list[bytes]:
        name = await client.submit(request)
        result = await client.poll(name)
        return [await client.fetch_video(result.take(i)) for i in range(len(result.videos))]

    small = asyncio.run(render(clip_job(references=[], target_duration=4).request))
    big = asyncio.run(render(clip_job(references=[], resolution="1080p", takes=2).request))
    assert len(small) == 1 and len(big) == 2
    small_info, big_info = probe(small[0]), probe(big[1])
    assert small_info.is_animatic and big_info.is_animatic  # labelled as always
    assert (small_info.height, big_info.height) == (360, 540)
    assert big_info.duration_seconds == pytest.approx(8.0)


class RecordingImageClient:
    """An ``ImageClient`` that answers a gray square and records what it was sent."""

    backend = "vertex"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def generate_image(self, **kwargs: Any) -> bytes:
        self.calls.append(kwargs)
        return png((128, 128, 128))


def tier3(client: Any, model: str, **kwargs: Any) -> Any:
    return asyncio.run(
        generate_tier3_clean_sheet(
            image_client=client,
            model=model,
            prompt="clean sheet",
            image_bytes=png((10, 20, 30)),
            mime_type="image/png",
            stored_embedding=None,
            face_engine=None,
            **kwargs,
        )
    )


def test_tier3_prices_from_the_catalog_and_bounds_its_inputs() -> None:
    client = RecordingImageClient()
    outcome = tier3(client, "gemini-3-pro-image")
    assert outcome.accepted and outcome.total_cost_usd == pytest.approx(0.134)
    assert "extra_images" not in client.calls[0]  # one input: the call is unchanged

    extras = [(png((i, i, i)), "image/png") for i in range(4)]
    outcome = tier3(client, "gemini-2.5-flash-image", extra_images=extras)
    assert len(client.calls[-1]["extra_images"]) == 2  # 3 inputs at most, the photo included
    assert "2 extra input image(s) not sent: gemini-2.5-flash-image takes at most 3" in (
        outcome.reason
    )
    assert outcome.total_cost_usd == pytest.approx(0.039)


def test_tier3_refuses_an_unpriced_or_retired_image_model_before_paying() -> None:
    client = RecordingImageClient()
    with pytest.raises(ModelChoiceError, match="'imagen-9' is not in the model catalog"):
        tier3(client, "imagen-9")
    catalog = packaged_catalog()
    old = replace(
        catalog.image_models["gemini-2.5-flash-image"],
        lifecycle=Lifecycle("retired", retired_on=date(2026, 1, 1)),
    )
    retired = replace(catalog, image_models={**catalog.image_models, old.id: old})
    with pytest.raises(ModelChoiceError, match="retired on 2026-01-01"):
        tier3(client, "gemini-2.5-flash-image", catalog=retired)
    assert client.calls == []


def test_ledgered_images_carry_labels_and_the_catalog_price(ledger: Ledger) -> None:
    with VertexEmulator() as emu:

        async def main() -> bytes:
            genai = make_genai_client(emulator_host=emu.address, project="demo")
            try:
                images = LedgeredImageClient(
                    VertexImageClient(genai),
                    ledger,
                    project_slug="spring-ad",
                    subject="CHAR_01",
                    run_id="run-7",
                )
                return await images.generate_image(
                    model="gemini-3.1-flash-image",
                    prompt="clean sheet",
                    image=png((1, 2, 3)),
                    mime_type="image/png",
                )
            finally:
                await genai.aio.aclose()

        asyncio.run(main())
        body = emu.last_bodies["generate_content"]
    [line] = ledger.cost_report("spring-ad")
    assert line.cost_usd == pytest.approx(0.067) and line.kind == "image"
    assert (
        body["labels"]
        == line.labels
        == {
            "vidpipe_project": "spring-ad",
            "vidpipe_asset": "char_01",
            "vidpipe_ledger_row": line.ledger_row,
            "vidpipe_run": "run-7",
        }
    )
