"""The emulator's own contract: wire shapes, auth, latency, faults, counters and its CLI."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import date
from typing import Any

import pytest
from PIL import Image

from vidpipe_dagster.domain.catalog import packaged_catalog
from vidpipe_dagster.testing.vertex_emulator import (
    AUDIO_FILTER_REASON,
    VertexEmulator,
    request_fingerprint,
)

MODEL_PATH = "/v1beta1/projects/p/locations/us-central1/publishers/google/models"
AUTH = {"Authorization": "Bearer emulator", "Content-Type": "application/json"}
V31, LITE = "veo-3.1-generate-001", "veo-3.1-lite-generate-001"


def png_b64(color: tuple[int, int, int] = (10, 20, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def call(
    emu: VertexEmulator,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(emu.host, emu.port, timeout=5)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=payload, headers=AUTH if headers is None else headers)
        response = conn.getresponse()
        raw = response.read()
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(raw) if "json" in kind else raw
    finally:
        conn.close()


def submit_body(prompt: str = "a walk", duration: int = 8) -> dict[str, Any]:
    return {
        "instances": [
            {
                "prompt": prompt,
                "referenceImages": [
                    {
                        "image": {"bytesBase64Encoded": png_b64(), "mimeType": "image/png"},
                        "referenceType": "asset",
                    }
                ],
            }
        ],
        "parameters": {"durationSeconds": duration, "aspectRatio": "9:16", "sampleCount": 1},
    }


def poll(emu: VertexEmulator, name: str) -> tuple[int, Any]:
    resource = name.rpartition("/operations/")[0]
    return call(emu, "POST", f"/v1beta1/{resource}:fetchPredictOperation", {"operationName": name})


def test_long_running_operation_shapes_and_latency() -> None:
    with VertexEmulator(latency_s=0.3, video_height=90, video_fps=4) as emu:
        status, created = call(
            emu, "POST", f"{MODEL_PATH}/veo-3.1-generate-001:predictLongRunning", submit_body()
        )
        assert status == 200 and set(created) == {"name"}
        name = created["name"]
        assert "/publishers/google/models/veo-3.1-generate-001/operations/" in name
        status, running = poll(emu, name)
        assert status == 200 and running == {"name": name}, "not done before the latency"
        time.sleep(0.3)
        status, done = poll(emu, name)
        assert done["done"] is True
        response = done["response"]
        assert response["raiMediaFilteredCount"] == 0
        assert response["videos"][0]["mimeType"] == "video/mp4"
        assert base64.b64decode(response["videos"][0]["bytesBase64Encoded"])[4:8] == b"ftyp"
        status, by_get = call(emu, "GET", f"/v1beta1/{name}")
        assert status == 200 and by_get == done
        assert emu.poll_count == 3 and emu.submit_count == 1


def test_requests_without_a_token_are_unauthenticated() -> None:
    with VertexEmulator() as emu:
        status, body = call(
            emu,
            "POST",
            f"{MODEL_PATH}/veo-3.1-generate-001:predictLongRunning",
            submit_body(),
            headers={"Content-Type": "application/json"},
        )
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"


def test_hybrid_is_a_model_capability() -> None:
    body = submit_body()
    body["instances"][0]["image"] = {"bytesBase64Encoded": png_b64(), "mimeType": "image/png"}
    catalog = packaged_catalog()
    hybrid = replace(catalog.video_models[V31], id="veo-hybrid", frames_with_references=True)
    with VertexEmulator(catalog=catalog.with_video_model(hybrid)) as emu:
        status, _ = call(emu, "POST", f"{MODEL_PATH}/veo-hybrid:predictLongRunning", body)
    assert status == 200
    with VertexEmulator() as emu:
        status, error = call(
            emu, "POST", f"{MODEL_PATH}/veo-3.1-generate-001:predictLongRunning", body
        )
    assert status == 400 and error["error"]["status"] == "INVALID_ARGUMENT"
    assert error["error"]["message"] == "First Frame and Reference Images cannot be both set."


def test_fingerprint_counts_only_accepted_submissions() -> None:
    path = f"{MODEL_PATH}/veo-3.1-generate-001:predictLongRunning"
    body = submit_body()
    with VertexEmulator(faults={"submit": ["429"]}) as emu:
        assert call(emu, "POST", path, body)[0] == 429
        assert call(emu, "POST", path, body)[0] == 200
        assert call(emu, "POST", path, body)[0] == 200
        assert call(emu, "POST", path, submit_body(duration=6))[0] == 400
        fingerprint = request_fingerprint(body["instances"][0], body["parameters"])
        assert emu.submissions_by_fingerprint == {fingerprint: 2}
        assert (emu.submit_attempts, emu.submit_count) == (4, 2)
        emu.reset_counts()
        assert emu.submit_attempts == 0 and not emu.submissions_by_fingerprint


def test_seeded_fault_rate_is_repeatable_and_clearable() -> None:
    path = f"{MODEL_PATH}/gemini-2.5-flash-image:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}

    def statuses(seed: int) -> list[int]:
        with VertexEmulator(
            fault_rates={"generate_content": 0.5}, fault_kinds=["429", "500"], seed=seed
        ) as emu:
            result = [call(emu, "POST", path, body)[0] for _ in range(12)]
            emu.clear_faults()
            assert call(emu, "POST", path, body)[0] == 200
            return result

    first = statuses(7)
    assert first == statuses(7)
    assert 200 in first and ({429, 500} & set(first))


def test_emulator_is_thread_safe_under_concurrent_submits() -> None:
    path = f"{MODEL_PATH}/veo-3.1-fast-generate-001:predictLongRunning"
    with VertexEmulator() as emu:
        results: list[int] = []
        lock = threading.Lock()

        def worker(i: int) -> None:
            status, _ = call(emu, "POST", path, submit_body(prompt=f"scene {i % 4}"))
            with lock:
                results.append(status)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert results == [200] * 16
        assert emu.submit_count == 16 and sum(emu.submissions_by_fingerprint.values()) == 16
        assert len(emu.submissions_by_fingerprint) == 4


def test_stop_closes_kept_alive_connections() -> None:
    emu = VertexEmulator().start()
    conn = http.client.HTTPConnection(emu.host, emu.port, timeout=5)
    conn.request("GET", "/v1beta1/projects/p/locations/l/nothing", headers=AUTH)
    assert conn.getresponse().read()
    emu.stop()  # returns although a client still holds a kept-alive connection
    with pytest.raises((OSError, http.client.HTTPException)):  # which the server has closed
        conn.request("GET", "/v1beta1/projects/p/locations/l/nothing", headers=AUTH)
        conn.getresponse().read()
    conn.close()
    with pytest.raises(OSError):
        http.client.HTTPConnection(emu.host, emu.port, timeout=1).request("GET", "/")


def _ignore_stop_signals() -> None:
    """What a parent may pass on: a child inherits ignored signals (seen in CI)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_cli_serves_until_terminated() -> None:
    """It serves, and SIGTERM stops it cleanly even when its parent ignored SIGTERM."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vidpipe_dagster.testing.vertex_emulator",
            "--port",
            "0",
            "--latency",
            "0",
            "--no-auth",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_ignore_stop_signals,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", f"{MODEL_PATH}/veo-0:predictLongRunning", body=b"{}")
        response = conn.getresponse()
        assert response.status == 404 and b"veo-0" in response.read()
        conn.close()
    finally:
        process.terminate()
        code = process.wait(timeout=120)  # an outcome, not a clock: a loaded machine is slow
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert code == 0, "stopped by SIGTERM, cleanly"


def frames_body(**parameters: Any) -> dict[str, Any]:
    """A text-only request with these parameters (no references, so no 8 s rule)."""
    params = {"durationSeconds": 4, "aspectRatio": "16:9", "sampleCount": 1, **parameters}
    return {"instances": [{"prompt": "a walk"}], "parameters": params}


# (model, parameters, status, words of the error) -- the catalog's rules, enforced unbilled
CATALOG_RULES = [
    (V31, {"resolution": "4k", "durationSeconds": 8}, 200, ""),
    (LITE, {"resolution": "4k", "durationSeconds": 8}, 400, "Unsupported resolution 4k"),
    (V31, {"resolution": "1080p", "durationSeconds": 6}, 400, "8 seconds at resolution 1080p"),
    (V31, {"sampleCount": 4}, 200, ""),
    (V31, {"sampleCount": 5}, 400, "sampleCount must be between 1 and 4"),
    (V31, {"seed": 2**32}, 400, "seed must be an integer"),
    (V31, {"generateAudio": False}, 200, ""),
    (V31, {"aspectRatio": "1:1"}, 400, "Unsupported aspect ratio 1:1"),
    ("veo-3.0-generate-001", {}, 404, "veo-3.0-generate-001` was not found"),
    ("veo-3.1-generate-preview", {}, 404, "was not found"),
    ("gemini-omni-1.1-flash", {}, 404, "was not found"),
]


@pytest.mark.parametrize(("model", "parameters", "status", "words"), CATALOG_RULES)
def test_the_emulator_enforces_the_catalog(
    model: str, parameters: dict[str, Any], status: int, words: str
) -> None:
    with VertexEmulator(video_height=72, video_fps=4) as emu:
        code, body = call(
            emu, "POST", f"{MODEL_PATH}/{model}:predictLongRunning", frames_body(**parameters)
        )
        assert code == status, body
        if words:
            assert words in body["error"]["message"]
        assert emu.submit_count == (1 if status == 200 else 0)


def test_a_retirement_is_judged_on_the_emulators_day() -> None:
    path = f"{MODEL_PATH}/veo-3.0-generate-001:predictLongRunning"
    with VertexEmulator(today=date(2026, 6, 29)) as emu:
        assert call(emu, "POST", path, frames_body())[0] == 200


@pytest.mark.parametrize(
    ("labels", "status"),
    [
        ({"vidpipe_project": "spring-ad", "vidpipe_ledger_row": "3f2a-1"}, 200),
        ({"Vidpipe": "x"}, 400),
        ({"key": "Has Space"}, 400),
        ({"k": "v" * 64}, 400),
    ],
)
def test_labels_follow_googles_rules(labels: dict[str, str], status: int) -> None:
    body = {**frames_body(), "labels": labels}
    with VertexEmulator() as emu:
        code, answer = call(emu, "POST", f"{MODEL_PATH}/{V31}:predictLongRunning", body)
    assert code == status, answer
    if status == 400:
        assert "Invalid labels" in answer["error"]["message"]


def wait(emu: VertexEmulator, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = poll(emu, name)
        assert status == 200
        if body.get("done"):
            return body
        time.sleep(0.02)
    raise AssertionError(f"{name} never finished")


def test_sample_count_returns_that_many_videos_and_filtered_takes_are_counted() -> None:
    path = f"{MODEL_PATH}/{V31}:predictLongRunning"
    with VertexEmulator(video_height=72, video_fps=4, filtered_takes=1) as emu:
        _, created = call(emu, "POST", path, frames_body(sampleCount=3))
        response = wait(emu, created["name"])["response"]
        _, single = call(emu, "POST", path, frames_body(sampleCount=1))
        one = wait(emu, single["name"])["response"]
    assert len(response["videos"]) == 2 and response["raiMediaFilteredCount"] == 1
    assert "Support codes: 64151117" in response["raiMediaFilteredReasons"][0]
    assert len(one["videos"]) == 1 and one["raiMediaFilteredCount"] == 0


@pytest.mark.parametrize(
    ("category", "code"),
    [("child", "58061214"), ("celebrity", "29310472"), ("violence", "61493863")],
)
def test_a_test_can_ask_for_a_category(category: str, code: str) -> None:
    path = f"{MODEL_PATH}/{V31}:predictLongRunning"
    with VertexEmulator(category_substrings={"walk": category}) as emu:
        _, created = call(emu, "POST", path, frames_body())
        response = wait(emu, created["name"])["response"]
    assert response["raiMediaFilteredCount"] == 1 and "videos" not in response
    assert f"Support codes: {code}" in response["raiMediaFilteredReasons"][0]
    with pytest.raises(ValueError, match="unknown safety category 'nope'"):
        VertexEmulator().category_code("nope")


def test_the_audio_filter_blocks_without_a_code_then_passes() -> None:
    path = f"{MODEL_PATH}/{V31}:predictLongRunning"
    with VertexEmulator(
        video_height=72, video_fps=4, audio_filter_substrings=["walk"], audio_filter_repeats=1
    ) as emu:
        _, first = call(emu, "POST", path, frames_body(generateAudio=True, seed=1))
        blocked = wait(emu, first["name"])["response"]
        _, second = call(emu, "POST", path, frames_body(generateAudio=True, seed=2))
        passed = wait(emu, second["name"])["response"]
    assert blocked["raiMediaFilteredReasons"] == [AUDIO_FILTER_REASON]
    assert "Support codes" not in AUDIO_FILTER_REASON
    assert len(passed["videos"]) == 1  # the same request (another seed) passes on a retry


def test_image_models_follow_the_catalog() -> None:
    def contents(images: int) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [
            {"inlineData": {"mimeType": "image/png", "data": png_b64()}} for _ in range(images)
        ]
        return {"contents": [{"role": "user", "parts": [*parts, {"text": "clean sheet"}]}]}

    with VertexEmulator() as emu:
        flash = f"{MODEL_PATH}/gemini-2.5-flash-image:generateContent"
        assert call(emu, "POST", flash, contents(3))[0] == 200
        status, error = call(emu, "POST", flash, contents(4))
        assert status == 400 and "at most 3" in error["error"]["message"]
        pro = f"{MODEL_PATH}/gemini-3-pro-image:generateContent"
        assert call(emu, "POST", pro, contents(14))[0] == 200
        unknown = f"{MODEL_PATH}/imagen-4.0-generate-001:generateContent"
        assert call(emu, "POST", unknown, contents(1))[0] == 404
