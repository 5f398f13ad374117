"""Benchmark: N scenes through the spend-safe engine against the Vertex emulator.

The emulator runs in its own process (so its rendering does not count against the client), with a
fixed latency L per video. With an in-flight limit K the ideal wall time is ceil(N / K) x L; the
benchmark prints measured / ideal for K = 8 and for a sequential baseline (K = 1), plus the peak
RSS of each, measured in its own client process.
Run: ``.venv/bin/python bench/clips.py [--scenes 32 --latency 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vidpipe_dagster.db.ledger import Ledger
from vidpipe_dagster.db.session import migrate, session_factory
from vidpipe_dagster.domain.video_requests import build_video_request
from vidpipe_dagster.generation.clips import ClipJob, Limits, generate_clips
from vidpipe_dagster.generation.vertex import VertexVideoClient, make_genai_client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"emulator did not start on port {port}")


def _run(scenes: int, in_flight: int, host: str, workdir: Path, tag: str) -> float:
    url = f"sqlite:///{workdir / f'{tag}.db'}"
    migrate(url)
    ledger = Ledger(session_factory(url))
    store_dir = workdir / tag
    store_dir.mkdir()
    jobs = [
        ClipJob(
            key=str(i),
            project_slug="bench",
            request=build_video_request(
                model="veo-3.1-fast-generate-001",
                prompt=f"{tag} scene {i}: a lighthouse at dawn",
                target_duration=4,
                aspect_ratio="16:9",
            ),
        )
        for i in range(scenes)
    ]

    def store(fingerprint: str, data: bytes) -> str:
        path = store_dir / f"{fingerprint[:24]}.mp4"
        path.write_bytes(data)
        return str(path)

    def load(url: str) -> bytes | None:
        path = Path(url)
        return path.read_bytes() if path.is_file() else None

    client = VertexVideoClient(make_genai_client(project="bench", emulator_host=host))
    start = time.perf_counter()
    outcomes = asyncio.run(
        generate_clips(
            jobs,
            client,
            ledger,
            Limits(max_in_flight=in_flight, requests_per_minute=0),
            load_result=load,
            store_result=store,
            poll_interval=0.05,
        )
    )
    elapsed = time.perf_counter() - start
    failed = [o for o in outcomes if o.status != "done"]
    if failed:
        raise RuntimeError(f"{len(failed)} scene(s) failed: {failed[0].error}")
    return elapsed


def _measure(scenes: int, in_flight: int, host: str, work: Path, label: str) -> tuple[float, float]:
    """Wall time and peak RSS of one ``_run`` in a fresh client process."""
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            host,
            "--work-dir",
            str(work),
            "--label",
            label,
            "--scenes",
            str(scenes),
            "--in-flight",
            str(in_flight),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{label} run failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(result["wall"]), float(result["rss_mb"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", type=int, default=32)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per video (L)")
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: host of a running emulator
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    parser.add_argument("--label", default="run", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # one measurement in its own process, so its peak RSS is its own
        wall = _run(args.scenes, args.in_flight, args.worker, Path(args.work_dir), args.label)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"wall": wall, "rss_mb": rss_mb}))
        return 0

    port = _free_port()
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vidpipe_dagster.testing.vertex_emulator",
            "--port",
            str(port),
            "--latency",
            str(args.latency),
            "--video-height",
            "90",
            "--video-fps",
            "4",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for(port)
        host = f"127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            ideal = math.ceil(args.scenes / args.in_flight) * args.latency
            wall, rss_mb = _measure(args.scenes, args.in_flight, host, work, "concurrent")
            print(
                f"scenes N={args.scenes}, latency L={args.latency:.2f} s, "
                f"in-flight K={args.in_flight}"
            )
            print(
                f"concurrent: wall {wall:.2f} s, ideal ceil(N/K)*L {ideal:.2f} s, "
                f"ratio {wall / ideal:.3f} (goal <= 1.15)"
            )
            print(f"peak RSS of the client process: {rss_mb:.0f} MB (goal <= 400 MB)")
            if not args.skip_sequential:
                seq_ideal = args.scenes * args.latency
                seq, seq_rss = _measure(args.scenes, 1, host, work, "sequential")
                print(
                    f"sequential baseline (K=1): wall {seq:.2f} s, ideal N*L {seq_ideal:.2f} s, "
                    f"ratio {seq / seq_ideal:.3f}, peak RSS {seq_rss:.0f} MB"
                )
                print(f"speed-up of K={args.in_flight} over sequential: {seq / wall:.2f}x")
    finally:
        os.killpg(emulator.pid, 15)
        emulator.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
