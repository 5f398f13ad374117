"""Issue 14: a submit that provably never left is retried; one that may have arrived is not.

Real sockets through google-genai: a port nobody listens on (connection refused before a byte
was written) and a server that reads the whole request and then resets the connection.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vidpipe_dagster.db.ledger import Ledger
from vidpipe_dagster.db.session import migrate
from vidpipe_dagster.domain.video_requests import build_video_request
from vidpipe_dagster.generation.client import GenerationApiError
from vidpipe_dagster.generation.clips import ClipJob, ClipOutcome, Limits, generate_clips
from vidpipe_dagster.generation.vertex import VertexVideoClient, make_genai_client

REQUEST = build_video_request(
    model="veo-3.1-fast-generate-001",
    prompt="a lighthouse at dawn",
    target_duration=4,
    aspect_ratio="16:9",
)


def refused_host() -> str:
    """A loopback port that was just free: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


class ResettingServer:
    """Reads each HTTP request to its last body byte, then resets the connection (RST)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.bodies: list[bytes] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(body) < length:
                    body += conn.recv(65536)
                self.bodies.append(body)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def resetting() -> Iterator[ResettingServer]:
    server = ResettingServer()
    yield server
    server.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrate(url)
    return Ledger.from_url(url)


def client_for(host: str) -> VertexVideoClient:
    return VertexVideoClient(make_genai_client(project="p", emulator_host=host))


def submit_error(host: str) -> GenerationApiError:
    with pytest.raises(GenerationApiError) as caught:
        asyncio.run(client_for(host).submit(REQUEST))
    return caught.value


def run_engine(host: str, ledger: Ledger, tmp_path: Path) -> ClipOutcome:
    [outcome] = asyncio.run(
        generate_clips(
            [ClipJob("1", "spring-ad", REQUEST)],
            client_for(host),
            ledger,
            Limits(requests_per_minute=0, max_transient_retries=2, backoff_base=0.01),
            store_result=lambda _key, _path: pytest.fail("nothing can have been generated"),
            result_exists=lambda _url: False,
            staging_dir=tmp_path,
        )
    )
    return outcome


def test_a_refused_connection_is_classified_as_never_sent() -> None:
    error = submit_error(refused_host())
    assert (error.kind, error.not_sent, error.unaccepted) == ("transient", True, True)
    assert "nothing was sent" in str(error)


def test_a_reset_after_the_body_was_read_may_have_been_accepted(
    resetting: ResettingServer,
) -> None:
    error = submit_error(resetting.host)
    assert len(resetting.bodies) == 1 and b"lighthouse" in resetting.bodies[0]
    assert (error.kind, error.not_sent, error.unaccepted) == ("transient", False, False)
    assert "may have reached the service" in str(error)


def test_the_engine_retries_a_refused_submit_and_records_it_unbilled(
    ledger: Ledger, tmp_path: Path
) -> None:
    """Sent three times (the budget), never reached anyone: ``failed_unbilled``, no person
    needed, and the next run sends it again."""
    outcome = run_engine(refused_host(), ledger, tmp_path)
    assert outcome.status == "failed"
    assert "submit gave up after 3 transient errors" in (outcome.error or "")
    assert outcome.api_calls == 3
    [row] = ledger.entries(REQUEST.fingerprint)
    assert (row.state, row.billed) == ("failed_unbilled", False)
    assert not ledger.outcome_unknown([REQUEST.fingerprint], "vertex")


def test_the_engine_never_resends_a_submit_reset_after_sending(
    ledger: Ledger, resetting: ResettingServer, tmp_path: Path
) -> None:
    """The body arrived and the answer never came: ``unknown`` (it may have been billed), one
    request on the wire, and the schedule leaves it to a person."""
    outcome = run_engine(resetting.host, ledger, tmp_path)
    assert outcome.status == "failed" and "may have been accepted and billed" in (
        outcome.error or ""
    )
    assert len(resetting.bodies) == 1
    [row] = ledger.entries(REQUEST.fingerprint)
    assert row.state == "unknown" and "may have been billed" in (row.error or "")
    assert ledger.outcome_unknown([REQUEST.fingerprint], "vertex")
