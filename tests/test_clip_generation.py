"""The spend-safe engine against a scripted in-memory Veo (the real client is tested against the
emulator elsewhere). Virtual time: every sleep advances a clock instantly, so tests take ms."""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import event

from vidpipe_dagster.db.ledger import Ledger
from vidpipe_dagster.db.session import migrate
from vidpipe_dagster.domain.catalog import packaged_catalog
from vidpipe_dagster.domain.video_requests import (
    REMEDIATION_PREFIXES,
    VideoRequest,
    build_video_request,
    image_input,
    remediate,
)
from vidpipe_dagster.generation.client import GenerationApiError, OperationResult
from vidpipe_dagster.generation.clips import (
    ClipJob,
    ClipOutcome,
    Limits,
    estimate_new_spend,
    generate_clips,
    request_ladder,
    settle_jobs,
)
from vidpipe_dagster.generation.vertex import VertexVideoClient, make_genai_client
from vidpipe_dagster.testing.vertex_emulator import VertexEmulator

MODEL = "veo-3.1-generate-001"
START = image_input(b"start", "image/png", "start keyframe")
END = image_input(b"end", "image/png", "end keyframe")
REFS = [
    (f"CHAR_0{i}", image_input(f"ref{i}".encode(), "image/png", f"CHAR_0{i}")) for i in range(3)
]
COMBO_400 = "INVALID_ARGUMENT: First Frame and Reference Images cannot be both set."
CATALOG = packaged_catalog()
HYBRID = CATALOG.with_video_model(replace(CATALOG.video_models[MODEL], frames_with_references=True))
VIOLENCE = "61493863"  # a category remediation may fix (the catalog's Violence)


@dataclass
class Op:
    request: VideoRequest
    polls_left: int
    ending: str  # "video" | "filtered" | "error:<message>"


@dataclass
class FakeVeo:
    """Implements ``VideoClient``. Faults are raised *before* an operation exists, as a 429/503
    would be, unless a test scripts otherwise; ``accepted`` lists what the service would bill."""

    backend: str = "vertex"
    is_preview: bool = False
    polls_to_finish: int = 2
    fault_rate: float = 0.0
    seed: int = 0
    on_submit: Callable[[VideoRequest], None] | None = None
    ending: Callable[[VideoRequest], str] = lambda _request: "video"
    clock: Callable[[], float] = lambda: 0.0
    ops: dict[str, Op] = field(default_factory=dict)
    accepted: list[VideoRequest] = field(default_factory=list)
    submit_calls: int = 0
    poll_calls: int = 0
    fetch_calls: int = 0
    submit_times: list[float] = field(default_factory=list)
    open_now: int = 0
    max_open: int = 0
    fetch_faults: int = 0  # fail this many fetches (transient) before succeeding
    fetch_errors: list[GenerationApiError] = field(default_factory=list)  # raised first, in order
    submit_delay: float = 0.0  # real seconds a submit takes (to force interleavings)
    hold_until_open: int = 0  # operations stay running until this many are open at once...
    total_jobs: int = 0  # ...or every job has been accepted

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _fault(self) -> bool:
        return self.rng.random() < self.fault_rate

    async def submit(self, request: VideoRequest) -> str:
        self.submit_calls += 1
        self.submit_times.append(self.clock())
        await asyncio.sleep(self.submit_delay)
        if self._fault():
            code = self.rng.choice([429, 503])
            raise GenerationApiError("transient", "RESOURCE_EXHAUSTED", status_code=code)
        if self.on_submit is not None:
            self.on_submit(request)
        return self.create(request)

    def create(self, request: VideoRequest) -> str:
        name = f"operations/{len(self.ops) + 1}"
        self.ops[name] = Op(request, self.polls_to_finish, self.ending(request))
        self.accepted.append(request)
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        return name

    async def poll(self, operation_name: str) -> OperationResult:
        self.poll_calls += 1
        await asyncio.sleep(0)
        if self._fault():
            raise self.rng.choice(
                [GenerationApiError("transient", "poll timed out"), ConnectionResetError("reset")]
            )
        op = self.ops.get(operation_name)
        if op is None:
            raise GenerationApiError("not_found", f"{operation_name} not found", status_code=404)
        if op.polls_left > 0:
            op.polls_left -= 1
            return OperationResult(name=operation_name, done=False)
        if self.open_now < self.hold_until_open and len(self.accepted) < self.total_jobs:
            return OperationResult(name=operation_name, done=False)
        self.hold_until_open = 0  # released: from now on operations finish normally
        if op.ending == "filtered":
            self.close(op)
            return OperationResult(
                name=operation_name,
                done=True,
                rai_filtered_count=1,
                rai_filtered_reasons=(f"Violence detected. Support codes: {VIOLENCE}",),
            )
        if op.ending.startswith("error:"):
            self.close(op)
            return OperationResult(name=operation_name, done=True, error_message=op.ending[6:])
        return OperationResult(
            name=operation_name, done=True, video_bytes=b"MP4" + op.request.fingerprint.encode()
        )

    def close(self, op: Op) -> None:
        if op.polls_left >= 0:
            op.polls_left = -1
            self.open_now -= 1

    async def fetch_video(self, result: OperationResult) -> bytes:
        self.fetch_calls += 1
        await asyncio.sleep(0)
        if self.fetch_errors:
            raise self.fetch_errors.pop(0)
        if self.fetch_faults > 0:
            self.fetch_faults -= 1
            raise GenerationApiError("transient", "download 503", status_code=503)
        if self._fault():
            raise GenerationApiError("transient", "download reset")
        self.close(self.ops[result.name])
        assert result.video_bytes is not None
        return result.video_bytes

    @property
    def api_calls(self) -> int:
        return self.submit_calls + self.poll_calls + self.fetch_calls


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class Store:
    """Takes the engine's downloaded file (as the media store does) and keeps its bytes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def store(self, fingerprint: str, downloaded: Path) -> str:
        url = f"clips/{fingerprint}.mp4"
        self.files[url] = downloaded.read_bytes()
        downloaded.unlink()
        return url

    def exists(self, url: str) -> bool:
        return url in self.files


@dataclass
class World:
    ledger: Ledger
    staging: Path
    store: Store = field(default_factory=Store)
    time: VirtualTime = field(default_factory=VirtualTime)
    events: list[tuple[str, str]] = field(default_factory=list)

    def video(self, outcome: ClipOutcome) -> bytes | None:
        """The stored bytes of an outcome's first take."""
        return self.store.files.get(outcome.result_url or "")

    def client(self, **kwargs: Any) -> FakeVeo:
        return FakeVeo(clock=self.time.clock, **kwargs)

    def run(
        self,
        jobs: list[ClipJob],
        client: FakeVeo,
        limits: Limits | None = None,
        poll_interval: float = 5.0,
        **kwargs: Any,
    ) -> list[ClipOutcome]:
        return asyncio.run(
            generate_clips(
                jobs,
                client,
                self.ledger,
                limits or Limits(backoff_base=1.0),
                store_result=self.store.store,
                result_exists=self.store.exists,
                staging_dir=self.staging,
                poll_interval=poll_interval,
                sleep=self.time.sleep,
                clock=self.time.clock,
                on_event=lambda key, message: self.events.append((key, message)),
                rng=random.Random(7),
                **kwargs,
            )
        )


@pytest.fixture
def world(tmp_path: Path) -> World:
    url = f"sqlite:///{tmp_path / 'engine.db'}"
    migrate(url)
    staging = tmp_path / "staging"
    staging.mkdir()
    return World(Ledger.from_url(url), staging)


def job(i: int, *, refs: int = 2, model: str = MODEL, **kwargs: Any) -> ClipJob:
    request = build_video_request(
        model=model,
        prompt=f"scene {i}: Mia walks into the park",
        target_duration=6,
        aspect_ratio="16:9",
        first_frame=START,
        last_frame=END,
        references=REFS[:refs],
        **kwargs,
    )
    return ClipJob(key=str(i), project_slug="spring-ad", request=request)


def states(world: World, request: VideoRequest) -> list[str]:
    return [entry.state for entry in world.ledger.entries(request.fingerprint)]


def test_generates_stores_and_records_cost(world: World) -> None:
    client = world.client()
    jobs = [job(i) for i in range(3)]
    outcomes = world.run(jobs, client)
    assert [o.status for o in outcomes] == ["done"] * 3
    assert [o.key for o in outcomes] == ["0", "1", "2"]
    for o, j in zip(outcomes, jobs, strict=True):
        assert world.video(o) == b"MP4" + j.request.fingerprint.encode()
        assert (o.cached, o.resumed, o.attempts, o.error) == (False, False, 1, None)
        assert o.cost_usd == pytest.approx(3.20)  # 8 s with references, audio, 0.40 USD/s
        assert o.api_calls == 1 + 3 + 1  # submit, 3 polls (2 running + done), fetch
        assert states(world, j.request) == ["done"]
        entry = world.ledger.find_reusable(j.request.fingerprint)
        assert entry is not None and entry.cost_usd == pytest.approx(3.20)
        assert entry.details and entry.details["reference_tags"] == ["CHAR_00", "CHAR_01"]
    assert len(client.accepted) == 3
    assert any("submitted references request" in message for _, message in world.events)


def test_rerun_makes_zero_api_calls(world: World) -> None:
    jobs = [job(i) for i in range(4)]
    first = world.run(jobs, world.client())
    again = world.client()
    second = world.run(jobs, again)
    assert again.api_calls == 0
    assert all(o.cached and o.status == "done" and o.api_calls == 0 for o in second)
    assert [o.result_url for o in second] == [o.result_url for o in first]
    assert all(world.video(o) for o in second)
    assert list(world.staging.iterdir()) == []  # every download was handed to the store
    assert all(o.cost_usd == 0 and o.attempts == 0 for o in second)


def test_identical_requests_in_one_call_pay_once(world: World) -> None:
    client = world.client(submit_delay=0.05)  # the twin looks while the first is submitting
    twin = job(1)
    outcomes = world.run([twin, ClipJob("2", "spring-ad", twin.request)], client)
    assert len(client.accepted) == 1
    assert sorted(o.cached for o in outcomes) == [False, True]
    assert outcomes[0].result_url == outcomes[1].result_url


def test_resume_in_flight_operation_without_submitting(world: World) -> None:
    client = world.client()
    j = job(1)
    # A previous run sent the request, recorded the operation, and died while polling.
    entry_id = world.ledger.open_submission(
        j.request.fingerprint, kind="video", model=MODEL, backend="vertex"
    )
    operation = client.create(j.request)
    world.ledger.record_operation(entry_id, operation)
    client.accepted.clear()

    [outcome] = world.run([j], client)
    assert client.submit_calls == 0
    assert (outcome.status, outcome.resumed, outcome.cached) == ("done", True, False)
    assert outcome.operation_name == operation
    assert outcome.attempts == 0  # no submission by this call
    assert outcome.cost_usd == pytest.approx(3.20)
    assert world.ledger.get(entry_id).state == "done"
    assert world.ledger.billed_count(j.request.fingerprint) == 1


def test_transient_faults_everywhere_still_pay_once_per_clip(world: World) -> None:
    client = world.client(fault_rate=0.3, seed=11)
    jobs = [job(i) for i in range(20)]
    outcomes = world.run(jobs, client, Limits(max_transient_retries=10, max_download_retries=10))
    assert [o.status for o in outcomes] == ["done"] * 20, [o.error for o in outcomes]
    assert len(client.accepted) == 20  # every operation the service created, exactly one each
    assert client.submit_calls > 20  # faults happened and were retried
    for j in jobs:
        assert world.ledger.billed_count(j.request.fingerprint) == 1
        assert states(world, j.request) == ["done"]


def test_content_filter_escalates_remediation_and_keeps_references(world: World) -> None:
    client = world.client(
        ending=lambda r: "filtered" if r.remediation_level == 0 else "video",
    )
    j = job(1)
    [outcome] = world.run([j], client)
    assert outcome.status == "done"
    assert outcome.remediation_level == 1
    assert outcome.request.prompt.startswith(REMEDIATION_PREFIXES[1])
    assert outcome.request.reference_images == j.request.reference_images
    assert outcome.request.reference_tags == ("CHAR_00", "CHAR_01")
    assert outcome.attempts == 1  # the filtered generation is not billed
    assert outcome.support_codes == (VIOLENCE,)
    assert states(world, j.request) == ["failed_unbilled"]
    assert states(world, outcome.request) == ["done"]
    assert world.ledger.billed_count(j.request.fingerprint) == 0


def test_policy_refusal_on_submit_also_escalates(world: World) -> None:
    def refuse_level_0(request: VideoRequest) -> None:
        if request.remediation_level == 0:
            raise GenerationApiError(
                "content_policy", "violates usage guidelines", support_codes=("62263041",)
            )

    [outcome] = world.run([job(1)], world.client(on_submit=refuse_level_0))
    assert (outcome.status, outcome.remediation_level) == ("done", 1)
    assert outcome.support_codes == ("62263041",)


def test_level_two_failure_fails_with_reasons_and_support_codes(world: World) -> None:
    client = world.client(ending=lambda _r: "filtered")
    j = job(1)
    [outcome] = world.run([j], client)
    assert outcome.status == "failed" and outcome.result_url is None
    assert outcome.remediation_level == 2
    assert "remediation level 2 (the last)" in (outcome.error or "")
    assert "Violence detected" in (outcome.error or "")
    assert outcome.support_codes == (VIOLENCE,)
    assert [r.remediation_level for r in client.accepted] == [0, 1, 2]
    assert all(r.reference_tags == ("CHAR_00", "CHAR_01") for r in client.accepted)
    assert (outcome.attempts, outcome.cost_usd) == (0, 0.0)
    assert states(world, outcome.request) == ["failed_unbilled"]


def test_rejected_combination_falls_back_to_frames_without_paying(world: World) -> None:
    hybrid_table = HYBRID

    def veo31_rules(request: VideoRequest) -> None:
        if request.reference_images and request.first_frame is not None:
            raise GenerationApiError("rejected", COMBO_400, status_code=400)

    j = job(1, catalog=hybrid_table)
    assert j.request.conditioning_mode == "hybrid"
    client = world.client(on_submit=veo31_rules)
    [outcome] = world.run([j], client, catalog=hybrid_table)
    assert outcome.status == "done"
    assert outcome.request.conditioning_mode == "frames"
    assert outcome.request.reference_images == ()
    assert outcome.request.first_frame == START and outcome.request.last_frame == END
    assert "fallback" in outcome.request.conditioning_reason
    assert outcome.attempts == 1 and outcome.cost_usd == pytest.approx(3.20)
    assert states(world, j.request) == ["failed_unbilled"]
    assert world.ledger.billed_count(j.request.fingerprint) == 0
    assert any("fell back to frames" in note for note in outcome.notes)


def test_rejected_references_use_the_given_frames_request(world: World) -> None:
    def no_references(request: VideoRequest) -> None:
        if request.reference_images:
            raise GenerationApiError(
                "rejected", f"Reference images are not supported by model {MODEL}.", status_code=400
            )

    j = job(1)
    frames = job(1, policy="frames").request
    assert j.request.conditioning_mode == "references" and frames.duration_seconds == 6
    [outcome] = world.run(
        [ClipJob("1", "spring-ad", j.request, fallback=frames)],
        world.client(on_submit=no_references),
    )
    assert outcome.status == "done" and outcome.request == frames
    assert outcome.cost_usd == pytest.approx(2.40)  # 6 s, as the storyboard asked


def test_other_rejections_fail_without_retry(world: World) -> None:
    def bad(_request: VideoRequest) -> None:
        raise GenerationApiError("rejected", "Unsupported duration 7 seconds", status_code=400)

    client = world.client(on_submit=bad)
    [outcome] = world.run([job(1)], client)
    assert outcome.status == "failed"
    assert "request rejected" in (outcome.error or "") and "Unsupported duration" in (
        outcome.error or ""
    )
    assert client.submit_calls == 1
    assert states(world, outcome.request) == ["failed_unbilled"]


def test_an_operation_ending_in_an_error_is_not_billed_and_the_next_run_sends_it_again(
    world: World,
) -> None:
    """Issue 14: an operation that ends in an error is not billed (nothing was generated), so
    the ledger says so and the next run sends it again, instead of calling it paid."""
    client = world.client(ending=lambda _r: "error:Internal error during generation")
    j = job(1)
    [outcome] = world.run([j], client)
    assert outcome.status == "failed" and "Not billed" in (outcome.error or "")
    assert "the next run sends it again" in (outcome.error or "")
    assert client.submit_calls == 1 and outcome.attempts == 0 and outcome.cost_usd == 0
    assert states(world, j.request) == ["failed_unbilled"]
    assert world.ledger.billed_count(j.request.fingerprint) == 0
    [line] = world.ledger.cost_report("spring-ad")
    assert (line.charge, line.cost_usd, line.at_risk_usd) == ("not charged", 0.0, 0.0)
    assert estimate_new_spend([j], client, world.ledger) == [("1", pytest.approx(3.20))]

    client.ending = lambda _r: "video"
    [second] = world.run([j], client)
    assert second.status == "done" and client.submit_calls == 2
    assert states(world, j.request) == ["failed_unbilled", "done"]


def test_one_broken_job_never_hides_the_others(world: World) -> None:
    def explode(request: VideoRequest) -> None:
        if request.prompt.startswith("scene 2"):
            raise RuntimeError("client bug")

    class BrokenStore(Store):
        def store(self, fingerprint: str, downloaded: Path) -> str:
            if fingerprint == jobs[4].request.fingerprint:
                raise OSError("disk full")
            return super().store(fingerprint, downloaded)

    jobs = [job(i) for i in range(6)]
    world.store = BrokenStore()
    outcomes = world.run(jobs, world.client(on_submit=explode))
    assert [o.status for o in outcomes] == ["done", "done", "failed", "done", "failed", "done"]
    assert outcomes[2].error == "RuntimeError: client bug"
    assert states(world, jobs[2].request) == ["unknown"]  # a client bug: outcome unknowable
    assert "disk full" in (outcomes[4].error or "")
    assert states(world, jobs[4].request) == ["in_flight"]  # a rerun stores it without paying


def test_concurrency_bound_is_respected(world: World) -> None:
    client = world.client(polls_to_finish=3, hold_until_open=3, total_jobs=12)
    limits = Limits(max_in_flight=3, requests_per_minute=0, poll_timeout_s=1e12)
    outcomes = world.run([job(i) for i in range(12)], client, limits)
    assert all(o.status == "done" for o in outcomes)
    assert client.max_open == 3  # reached (operations wait for it), never exceeded


def test_submits_respect_requests_per_minute(world: World) -> None:
    client = world.client(polls_to_finish=0)
    limits = Limits(max_in_flight=10, requests_per_minute=4)
    outcomes = world.run([job(i) for i in range(10)], client, limits)
    assert all(o.status == "done" for o in outcomes)
    times = client.submit_times
    assert len(times) == 10
    assert all(sum(t <= s < t + 60 for s in times) <= 4 for t in times)
    assert times[-1] >= 120  # ten submits at four a minute need at least two more windows


def test_the_first_wave_goes_out_at_once_up_to_the_allowance_and_never_past_it(
    world: World,
) -> None:
    """Issue 15: on a virtual clock that only the limiter moves (polls wait 0 s), 40 jobs with
    32 slots and 10 requests a minute: the first 10 leave together at t = 0, none of the
    others before t = 60, and no 60 s window ever holds more than 10."""
    client = world.client(polls_to_finish=3)
    limits = Limits(max_in_flight=32, requests_per_minute=10)
    outcomes = world.run([job(i) for i in range(40)], client, limits, poll_interval=0.0)
    assert all(o.status == "done" for o in outcomes)
    times = sorted(client.submit_times)
    assert times[:10] == [0.0] * 10  # at once: no pacing inside the allowance
    assert times[10] >= 60.0  # never past it
    assert [sum(t <= s < t + 60 for s in times) for t in times] == [10] * 40
    assert times[-1] == pytest.approx(180.0)  # 40 at 10 a minute: four windows, no more


def test_a_free_preview_is_not_paced(world: World) -> None:
    """Issue 17: quota pacing is for paid APIs; a local preview costs nothing and has none."""
    preview = world.client(backend="animatic", is_preview=True, polls_to_finish=0)
    limits = Limits(max_in_flight=16, requests_per_minute=4)
    outcomes = world.run([job(i) for i in range(12)], preview, limits, poll_interval=0.0)
    assert all(o.status == "done" for o in outcomes)
    assert preview.submit_times == [0.0] * 12
    assert world.time.now == 0.0  # nobody waited for quota


def test_ambiguous_submit_is_not_retried_and_is_recorded(world: World) -> None:
    client = world.client()
    j = job(1)

    def accepted_then_dropped(request: VideoRequest) -> None:
        client.create(request)  # the service created (and will bill) the operation...
        raise TimeoutError("submit timed out")  # ...but the answer never arrived

    client.on_submit = accepted_then_dropped
    [outcome] = world.run([j], client)
    assert outcome.status == "failed"
    assert "may have been accepted and billed" in (outcome.error or "")
    assert client.submit_calls == 1
    assert states(world, j.request) == ["unknown"]

    rerun = world.client()  # the user reruns on purpose: one new submission, recorded beside it
    [second] = world.run([j], rerun)
    assert second.status == "done" and rerun.submit_calls == 1
    assert states(world, j.request) == ["unknown", "done"]


def test_ambiguous_submit_retried_when_allowed(world: World) -> None:
    client = world.client()
    calls = 0

    def drop_first(_request: VideoRequest) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionResetError("connection reset by peer")

    client.on_submit = drop_first
    [outcome] = world.run([job(1)], client, Limits(retry_ambiguous_submits=True))
    assert outcome.status == "done" and client.submit_calls == 2
    assert any("may pay twice" in note for note in outcome.notes)
    entry = world.ledger.find_reusable(outcome.fingerprint)
    assert entry is not None and entry.details and entry.details["ambiguous_attempts"] == 1


def test_connection_refused_is_retried_as_not_sent(world: World) -> None:
    client = world.client()
    refusals = iter([True, True, False])

    def refuse(_request: VideoRequest) -> None:
        if next(refusals):
            raise ConnectionRefusedError("connection refused")

    client.on_submit = refuse
    [outcome] = world.run([job(1)], client)
    assert outcome.status == "done" and client.submit_calls == 3 and len(client.accepted) == 1


def test_submit_gives_up_after_the_retry_budget(world: World) -> None:
    client = world.client(fault_rate=1.0)
    [outcome] = world.run([job(1)], client, Limits(max_transient_retries=2))
    assert outcome.status == "failed" and "gave up after 3 transient errors" in (
        outcome.error or ""
    )
    assert client.submit_calls == 3
    assert states(world, outcome.request) == ["failed_unbilled"]


def test_download_failure_never_resubmits_and_a_rerun_resumes(world: World) -> None:
    client = world.client(fetch_faults=100)
    j = job(1)
    [outcome] = world.run([j], client, Limits(max_download_retries=2))
    assert outcome.status == "failed" and "without paying again" in (outcome.error or "")
    assert client.submit_calls == 1 and client.fetch_calls == 3
    assert states(world, j.request) == ["in_flight"]

    client.fetch_faults = 0  # the same service, later: the operation is still there
    client.submit_calls = 0
    [second] = world.run([j], client)
    assert second.status == "done" and second.resumed and client.submit_calls == 0
    assert world.ledger.billed_count(j.request.fingerprint) == 1


def test_missing_stored_file_is_downloaded_again_from_its_operation(world: World) -> None:
    client = world.client()
    j = job(1)
    [first] = world.run([j], client)
    world.store.files.clear()
    client.submit_calls = 0
    [second] = world.run([j], client)
    assert second.status == "done" and client.submit_calls == 0
    assert second.resumed and not second.cached
    assert second.result_url == first.result_url
    assert world.video(second) == b"MP4" + j.request.fingerprint.encode()
    assert world.ledger.billed_count(j.request.fingerprint) == 1


def test_missing_file_and_expired_operation_waits_for_a_person(world: World) -> None:
    """A wrong media root must not re-buy every clip: nothing is sent, the error says why."""
    j = job(1)
    world.run([j], world.client())
    world.store.files.clear()
    fresh = world.client()  # a new service view: the old operation is unknown (404)
    [outcome] = world.run([j], fresh)
    assert outcome.status == "failed" and fresh.submit_calls == 0
    assert "paid for (3.20 USD)" in (outcome.error or "")
    assert "VIDPIPE_MEDIA_ROOT" in (outcome.error or "") and "regenerate" in (outcome.error or "")
    assert states(world, j.request) == ["done"]


def test_missing_file_and_expired_operation_regenerates_when_allowed(world: World) -> None:
    j = job(1)
    world.run([j], world.client())
    world.store.files.clear()
    fresh = world.client()
    [outcome] = world.run([j], fresh, Limits(regenerate_lost_results=True))
    assert outcome.status == "done" and fresh.submit_calls == 1
    assert any("regenerating" in note for note in outcome.notes)
    assert states(world, j.request) == ["result_lost", "done"]
    assert world.ledger.billed_count(j.request.fingerprint) == 2  # honestly paid twice


def test_lost_in_flight_operation_is_not_submitted_again(world: World) -> None:
    j = job(1)
    entry_id = world.ledger.open_submission(
        j.request.fingerprint, kind="video", model=MODEL, backend="vertex"
    )
    world.ledger.record_operation(entry_id, "operations/expired")
    client = world.client()
    [outcome] = world.run([j], client)
    assert outcome.status == "failed" and client.submit_calls == 0
    error = outcome.error or ""
    assert "operations/expired" in error and "not sent again automatically" in error
    assert "rerun to submit once more" in error
    assert states(world, j.request) == ["unknown"]

    [second] = world.run([j], client)  # the user reruns on purpose: one new submission
    assert second.status == "done" and client.submit_calls == 1
    assert states(world, j.request) == ["unknown", "done"]


def test_lost_in_flight_operation_is_submitted_again_when_allowed(world: World) -> None:
    j = job(1)
    entry_id = world.ledger.open_submission(
        j.request.fingerprint, kind="video", model=MODEL, backend="vertex"
    )
    world.ledger.record_operation(entry_id, "operations/expired")
    client = world.client()
    [outcome] = world.run([j], client, Limits(retry_ambiguous_submits=True))
    assert outcome.status == "done" and client.submit_calls == 1
    assert any("may pay twice" in note for note in outcome.notes)
    assert states(world, j.request) == ["unknown", "done"]


def test_lost_preview_operation_is_rendered_again_for_free(world: World) -> None:
    j = job(1)
    entry_id = world.ledger.open_submission(
        j.request.fingerprint, kind="video", model=MODEL, backend="animatic"
    )
    world.ledger.record_operation(entry_id, "animatic/from-another-process")
    preview = world.client(backend="animatic", is_preview=True)
    [outcome] = world.run([j], preview)
    assert outcome.status == "done" and preview.submit_calls == 1
    assert states(world, j.request) == ["unknown", "done"]


def test_someone_else_submitting_right_now_is_not_duplicated(world: World) -> None:
    j = job(1)
    world.ledger.open_submission(j.request.fingerprint, kind="video", model=MODEL, backend="vertex")
    client = world.client()
    [outcome] = world.run([j], client)
    assert outcome.status == "failed" and "another worker is submitting" in (outcome.error or "")
    assert client.api_calls == 0


def test_unpriced_model_fails_before_any_call(world: World) -> None:
    table = CATALOG.with_video_model(replace(CATALOG.video_models[MODEL], id="veo-custom"))
    custom = job(1, model="veo-custom", catalog=table)
    client = world.client()
    [outcome] = world.run([custom], client)  # the packaged catalog has no price for it
    assert outcome.status == "failed" and "no price for video model 'veo-custom'" in (
        outcome.error or ""
    )
    assert client.api_calls == 0 and world.ledger.entries(custom.request.fingerprint) == []
    [priced] = world.run([custom], client, price_table={"veo-custom": 0.25})
    assert priced.status == "done" and priced.cost_usd == pytest.approx(2.0)


def test_preview_backend_costs_nothing_and_is_never_reused_as_real(world: World) -> None:
    j = job(1)
    preview = world.client(backend="animatic", is_preview=True)
    [free] = world.run([j], preview)
    assert free.status == "done" and free.cost_usd == 0.0
    real = world.client()
    [paid] = world.run([j], real)
    assert not paid.cached and real.submit_calls == 1 and paid.cost_usd == pytest.approx(3.20)


def test_poll_timeout_leaves_the_operation_resumable(world: World) -> None:
    client = world.client(polls_to_finish=1000)
    j = job(1)
    [outcome] = world.run([j], client, Limits(poll_timeout_s=60))
    assert outcome.status == "failed" and "still running" in (outcome.error or "")
    assert states(world, j.request) == ["in_flight"]
    assert client.submit_calls == 1


def test_missing_file_with_transient_trouble_does_not_pay_again(world: World) -> None:
    j = job(1)
    world.run([j], world.client())
    world.store.files.clear()
    flaky = world.client(fault_rate=1.0)  # every poll fails transiently
    [outcome] = world.run([j], flaky, Limits(max_transient_retries=2))
    assert outcome.status == "failed" and "nothing was paid" in (outcome.error or "")
    assert flaky.submit_calls == 0
    assert states(world, j.request) == ["done"]  # still reusable once the service answers


def test_operation_vanishing_after_submit_is_not_resubmitted(world: World) -> None:
    class Amnesiac(FakeVeo):
        async def poll(self, operation_name: str) -> OperationResult:
            raise GenerationApiError("not_found", f"{operation_name} not found", status_code=404)

    client = Amnesiac(clock=world.time.clock)
    j = job(1)
    [outcome] = world.run([j], client)
    assert outcome.status == "failed" and "not sent again" in (outcome.error or "")
    assert client.submit_calls == 1
    assert states(world, j.request) == ["unknown"]


def test_operation_error_about_policy_is_remediated(world: World) -> None:
    policy = "error:The prompt violates Vertex AI's usage guidelines. Support codes: 62263041"
    client = world.client(ending=lambda r: policy if r.remediation_level < 2 else "video")
    [outcome] = world.run([job(1)], client)
    assert (outcome.status, outcome.remediation_level) == ("done", 2)
    assert outcome.support_codes == ("62263041",)
    assert outcome.attempts == 1


def test_rerun_after_remediation_reuses_the_remediated_clip(world: World) -> None:
    j = job(1)
    [first] = world.run([j], world.client(ending=lambda r: "filtered" * (r.remediation_level == 0)))
    assert (first.status, first.remediation_level) == ("done", 1)

    lenient = world.client()  # today level 0 would pass: sending it would pay for a second clip
    [again] = world.run([j], lenient)
    assert lenient.api_calls == 0
    assert (again.status, again.cached, again.remediation_level) == ("done", True, 1)
    assert again.request.fingerprint == first.request.fingerprint
    assert again.result_url == first.result_url and again.cost_usd == 0
    assert states(world, j.request) == ["failed_unbilled"]
    assert estimate_new_spend([j], lenient, world.ledger) == [("1", 0.0)]


def test_rerun_after_frames_fallback_sends_no_rejected_request(world: World) -> None:
    hybrid_table = HYBRID

    def veo31_rules(request: VideoRequest) -> None:
        if request.reference_images and request.first_frame is not None:
            raise GenerationApiError("rejected", COMBO_400, status_code=400)

    j = job(1, catalog=hybrid_table)
    [first] = world.run([j], world.client(on_submit=veo31_rules), catalog=hybrid_table)
    assert first.status == "done" and first.request.conditioning_mode == "frames"

    client = world.client(on_submit=veo31_rules)
    [again] = world.run([j], client, catalog=hybrid_table)
    assert client.api_calls == 0  # not even the unbilled 400
    assert again.cached and again.request.fingerprint == first.request.fingerprint
    assert states(world, j.request) == ["failed_unbilled"]
    assert estimate_new_spend([j], client, world.ledger, catalog=hybrid_table) == [("1", 0.0)]
    assert first.request.fingerprint in {r.fingerprint for r in request_ladder(j, hybrid_table)}


def test_rerun_resumes_a_remediated_request_in_flight(world: World) -> None:
    j = job(1)
    # A previous run: level 0 was filtered, level 1 accepted, then the worker died while polling.
    level_0 = world.ledger.open_submission(
        j.request.fingerprint, kind="video", model=MODEL, backend="vertex"
    )
    world.ledger.mark_failed(level_0, billed=False, error="filtered")
    client = world.client()
    level_1 = remediate(j.request, 1)
    entry_id = world.ledger.open_submission(
        level_1.fingerprint, kind="video", model=MODEL, backend="vertex"
    )
    world.ledger.record_operation(entry_id, client.create(level_1))
    assert estimate_new_spend([j], client, world.ledger) == [("1", 0.0)]

    [outcome] = world.run([j], client)
    assert client.submit_calls == 0
    assert (outcome.status, outcome.resumed, outcome.remediation_level) == ("done", True, 1)
    assert world.ledger.get(entry_id).state == "done"
    assert states(world, j.request) == ["failed_unbilled"]


def test_nothing_settled_is_estimated_at_the_full_price(world: World) -> None:
    j = job(1)
    assert estimate_new_spend([j], world.client(), world.ledger) == [("1", pytest.approx(3.20))]
    # references only; then the silent forms the audio filter may lead to (issue 11)
    ladder = request_ladder(j)
    assert [r.remediation_level for r in ladder if r.generate_audio] == [0, 1, 2]
    assert [r.remediation_level for r in ladder if not r.generate_audio] == [0, 1, 2]
    hybrid_ladder = request_ladder(job(1, catalog=HYBRID), HYBRID)
    assert [
        (r.remediation_level, r.conditioning_mode) for r in hybrid_ladder if r.generate_audio
    ] == [
        (0, "hybrid"),
        (0, "frames"),
        (1, "hybrid"),
        (1, "frames"),
        (2, "hybrid"),
        (2, "frames"),
    ]
    assert len(hybrid_ladder) == 12


@pytest.mark.parametrize(
    "error",
    [
        GenerationApiError(
            "failed", "video download failed: HTTP 403", status_code=403, billed=True
        ),
        GenerationApiError("failed", "gs:// needs the google-cloud-storage package", billed=True),
    ],
)
def test_billed_video_that_fails_to_download_is_downloaded_again_by_a_rerun(
    world: World, error: GenerationApiError
) -> None:
    client = world.client(fetch_errors=[error])
    j = job(1)
    [outcome] = world.run([j], client)
    assert outcome.status == "failed" and "a rerun downloads it again" in (outcome.error or "")
    assert outcome.attempts == 1 and outcome.cost_usd == 0
    assert states(world, j.request) == ["in_flight"]
    assert estimate_new_spend([j], client, world.ledger) == [("1", 0.0)]

    [second] = world.run([j], client)
    assert second.status == "done" and second.resumed and client.submit_calls == 1
    assert states(world, j.request) == ["done"]
    assert world.ledger.billed_count(j.request.fingerprint) == 1


def test_done_without_a_video_or_a_filter_count_is_held_for_a_person(world: World) -> None:
    """Issue 14: "done" with no video and no RAI count is not what the API documents; it may
    have been billed, so it waits for a person like a paid clip whose file is lost: no run sends
    it again (not even by hand) until ``regenerate``, the costs report says "may be billed" and
    the schedule's check leaves it to a person."""

    class NoVideo(FakeVeo):
        async def poll(self, operation_name: str) -> OperationResult:
            self.poll_calls += 1
            return OperationResult(name=operation_name, done=True)

    client = NoVideo(clock=world.time.clock)
    j = job(1)
    [outcome] = world.run([j], client)
    error = outcome.error or ""
    assert outcome.status == "failed" and "no video and no filter count" in error
    assert (
        "may have been billed" in error
        and "vidpipe-dagster regenerate spring-ad --scene 1" in error
    )
    assert client.fetch_calls == 0
    assert states(world, j.request) == ["held"]
    [line] = world.ledger.cost_report("spring-ad")
    assert (line.charge, line.at_risk_usd) == ("may be billed", pytest.approx(3.20))
    assert world.ledger.outcome_unknown([j.request.fingerprint], "vertex")
    assert estimate_new_spend([j], client, world.ledger) == [("1", 0.0)]  # nothing to pay now

    again = world.client()  # a person reruns by hand: still nothing is sent, and it says why
    [second] = world.run([j], again)
    assert second.status == "failed" and "no filter count" in (second.error or "")
    assert again.api_calls == 0

    world.ledger.give_up("spring-ad", "1", [j.request.fingerprint], "checked the bill")
    [third] = world.run([j], again)  # after `regenerate`: paid once more, recorded beside it
    assert third.status == "done" and again.submit_calls == 1
    assert states(world, j.request) == ["failed_billed", "done"]


def test_missing_file_whose_download_fails_for_now_is_not_paid_again(world: World) -> None:
    j = job(1)
    client = world.client()
    world.run([j], client)
    world.store.files.clear()
    client.fetch_errors = [
        GenerationApiError("failed", "gs:// needs the google-cloud-storage package", billed=True)
    ]
    [outcome] = world.run([j], client)
    assert outcome.status == "failed" and "not generated again" in (outcome.error or "")
    assert client.submit_calls == 1
    assert states(world, j.request) == ["done"]  # still reusable once the download works

    [second] = world.run([j], client)
    assert second.status == "done" and second.resumed and client.submit_calls == 1


def test_missing_file_whose_video_is_gone_regenerates(world: World) -> None:
    j = job(1)
    client = world.client()
    world.run([j], client)
    world.store.files.clear()
    client.fetch_errors = [
        GenerationApiError(
            "failed", "video download failed: HTTP 404", status_code=404, billed=True
        )
    ]
    [outcome] = world.run([j], client, Limits(regenerate_lost_results=True))
    assert outcome.status == "done" and client.submit_calls == 2
    assert states(world, j.request) == ["result_lost", "done"]


def run_on_emulator(world: World, emu: VertexEmulator, jobs: list[ClipJob]) -> list[ClipOutcome]:
    """``generate_clips`` with the real google-genai client against the loopback emulator."""

    async def main() -> list[ClipOutcome]:
        genai = make_genai_client(emulator_host=emu.address, project="demo")
        try:
            return await generate_clips(
                jobs,
                VertexVideoClient(genai),
                world.ledger,
                Limits(requests_per_minute=0),
                store_result=world.store.store,
                result_exists=world.store.exists,
                staging_dir=world.staging,
                poll_interval=0.01,
            )
        finally:
            await genai.aio.aclose()

    return asyncio.run(main())


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_video_uri_download_failure_is_fetched_again_without_paying(world: World) -> None:
    request = build_video_request(
        model=MODEL,
        prompt="Mia walks into the park",
        target_duration=6,
        aspect_ratio="16:9",
        first_frame=image_input(png((200, 30, 30)), "image/png", "start keyframe"),
        last_frame=None,
        references=[("CHAR_01", image_input(png((40, 200, 0)), "image/png", "CHAR_01"))],
    )
    j = ClipJob(key="1", project_slug="spring-ad", request=request)
    with VertexEmulator(serve_video_uri=True, video_height=90, video_fps=4) as emu:
        emu.fail_media(404)  # once: generated and billed, but the download failed
        [outcome] = run_on_emulator(world, emu, [j])
        assert outcome.status == "failed" and "HTTP 404" in (outcome.error or "")
        assert states(world, j.request) == ["in_flight"]
        assert emu.submit_count == 1

        [second] = run_on_emulator(world, emu, [j])
        assert second.status == "done" and second.resumed
        assert emu.submit_count == 1  # zero new submissions
        assert states(world, j.request) == ["done"]
        assert world.ledger.billed_count(j.request.fingerprint) == 1


def test_day_budget_is_checked_as_each_request_is_opened(world: World) -> None:
    """Two runs started together: the second finds the first's open requests and stops in time."""
    since = datetime.now(UTC).replace(tzinfo=None)
    client = world.client()
    first = world.run([job(0), job(1)], client, day_budget=(since, 8.0))
    assert [o.status for o in first] == ["done", "done"]  # 6.40 of 8.00
    second = world.run([job(2), job(3)], client, day_budget=(since, 8.0))
    assert [o.status for o in second] == ["failed", "failed"]
    assert all("per-day budget of 8.00 USD" in (o.error or "") for o in second)
    assert len(client.accepted) == 2, "nothing was sent for the second run"
    assert world.ledger.entries(job(2).request.fingerprint) == []
    entry = world.ledger.find_reusable(job(0).request.fingerprint)
    assert entry is not None and entry.details and entry.details["estimate_usd"] == 3.2


def test_day_budget_does_not_apply_to_the_free_preview(world: World) -> None:
    since = datetime.now(UTC).replace(tzinfo=None)
    preview = world.client(backend="animatic", is_preview=True)
    outcomes = world.run([job(0)], preview, day_budget=(since, 0.0))
    assert [o.status for o in outcomes] == ["done"]


def test_a_cached_rerun_looks_the_ledger_up_once_for_all_scenes(world: World) -> None:
    """Issue 17: the budget estimate and the engine share one lookup (``settle_jobs``); a rerun
    of finished scenes then runs one SQL statement in all, not one or more per scene."""
    jobs = [job(i) for i in range(20)]
    world.run(jobs, world.client())
    statements: list[str] = []
    engine = world.ledger.sessions.kw["bind"]

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        again = world.client()
        settled = settle_jobs(jobs, world.ledger, again.backend)
        assert estimate_new_spend(jobs, again, world.ledger, settled=settled) == [
            (j.key, 0.0) for j in jobs
        ]
        outcomes = world.run(jobs, again, settled=settled)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert all(o.cached for o in outcomes) and again.api_calls == 0
    assert len(statements) == 1, statements
