"""The emulator's own contract: wire shapes, auth, latency, faults, counters and its CLI."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from PIL import Image

from vidpipe_dagster.testing.vertex_emulator import VertexEmulator, request_fingerprint

MODEL_PATH = "/v1beta1/projects/p/locations/us-central1/publishers/google/models"
AUTH = {"Authorization": "Bearer emulator", "Content-Type": "application/json"}


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
    from vidpipe_dagster.testing.vertex_emulator import VideoModelSpec

    body = submit_body()
    body["instances"][0]["image"] = {"bytesBase64Encoded": png_b64(), "mimeType": "image/png"}
    models = {"veo-hybrid": VideoModelSpec(frames_with_references=True)}
    with VertexEmulator(video_models=models) as emu:
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


def test_cli_serves_until_terminated() -> None:
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
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
