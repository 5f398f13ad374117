"""Benchmark: N scenes through the spend-safe engine against the Vertex emulator (issue 15.2).

The emulator runs in its own process with a fixed latency L per video; it renders one 720p clip
of noise (megabytes, like a real one) once and serves it, by URL, for every scene (the client
downloads it as it downloads the real API's signed URLs), so the emulator's rendering does not
compete with the measured client. Each measurement runs in a fresh client process over its own
SQLite ledger (WAL, as deployed) and media root, storing through ``MediaStore.write_from`` (the
engine streams a download to a staging file and the store renames it in).

Printed, in one run, against limits:
- N scenes at each in-flight limit C (default 8 and 32): wall time against the ideal
  ceil(N / C) x L (limit 1.10 x);
- the speed-up over sequential (C = 1), measured on ``--sequential-scenes`` scenes and scaled per
  scene to N (sequential time is linear in N; its own ratio to N x L is printed), limit 0.9 x C;
- peak RSS of the client process (``VmHWM`` of its own address space, read in the process before
  it exits: ``ru_maxrss`` of a child would include the parent's peak), limit 200 MB, and at the
  largest C also for ``--small-scenes`` scenes: flat in N if the ratio stays under 1.15.
- when the last submission of the first wave left (seconds after the start).

Run: ``.venv/bin/python bench/clips.py [--scenes 128 --latency 4 --in-flight 8 32]``.
Exit status 1 when a limit is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import peak_rss_mb

from vidpipe_dagster.db.ledger import Ledger
from vidpipe_dagster.db.media import MediaStore
from vidpipe_dagster.db.session import migrate, session_factory
from vidpipe_dagster.domain.video_requests import build_video_request
from vidpipe_dagster.generation.clips import ClipJob, Limits, generate_clips
from vidpipe_dagster.generation.vertex import VertexVideoClient, make_genai_client

RATIO_LIMIT = 1.10
SPEEDUP_FACTOR = 0.9
RSS_LIMIT_MB = 200.0
RSS_FLAT_LIMIT = 1.15


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, emulator: subprocess.Popen[bytes]) -> None:
    """Until the emulator accepts connections (or has exited: then say so)."""
    while emulator.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the emulator exited with status {emulator.returncode}")


class _SubmitClock:
    """Wraps the client to record when each submission left (seconds after ``start``)."""

    def __init__(self, client: VertexVideoClient) -> None:
        self._client = client
        self.backend = client.backend
        self.is_preview = client.is_preview
        self.start = time.perf_counter()
        self.sent: list[float] = []

    async def submit(self, request):  # type: ignore[no-untyped-def]
        self.sent.append(time.perf_counter() - self.start)
        return await self._client.submit(request)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._client, name)


def _run(
    scenes: int, in_flight: int, host: str, workdir: Path, tag: str, poll: float
) -> dict[str, float]:
    url = f"sqlite:///{workdir / f'{tag}.db'}"
    migrate(url)
    ledger = Ledger(session_factory(url))
    media = MediaStore(workdir / tag)
    folder = media.prepare_folder("clips")
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

    def store(key: str, downloaded: Path) -> str:
        relative = f"clips/{key[:24]}.mp4"
        media.write_from(relative, downloaded)
        return relative

    client = _SubmitClock(VertexVideoClient(make_genai_client(project="bench", emulator_host=host)))
    start = client.start = time.perf_counter()
    outcomes = asyncio.run(
        generate_clips(
            jobs,
            client,  # type: ignore[arg-type]
            ledger,
            Limits(max_in_flight=in_flight, requests_per_minute=0),
            store_result=store,
            result_exists=media.exists,
            staging_dir=folder,
            poll_interval=poll,
        )
    )
    elapsed = time.perf_counter() - start
    failed = [o for o in outcomes if o.status != "done"]
    if failed:
        raise RuntimeError(f"{len(failed)} scene(s) failed: {failed[0].error}")
    stored = sum(1 for _ in folder.glob("*.mp4"))
    if stored != scenes:
        raise RuntimeError(f"{stored} clips stored for {scenes} scenes")
    first_wave = sorted(client.sent)[: min(in_flight, scenes)]
    return {"wall": elapsed, "rss_mb": peak_rss_mb(), "first_wave_s": first_wave[-1]}


def _measure(
    scenes: int, in_flight: int, host: str, work: Path, label: str, poll: float
) -> dict[str, float]:
    """One ``_run`` in a fresh client process, so its peak RSS is its own."""
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
            "--poll-interval",
            str(poll),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{label} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _serve(port: int, latency: float, height: int) -> int:
    """The emulator with the real API's timing but not its cost: one 4 s clip is rendered once
    (before the port opens) and served for every scene, so rendering never competes with the
    measured client for the CPU; the emulator still validates, times and serves each request."""
    import io

    import numpy as np
    from PIL import Image

    from vidpipe_dagster.domain.render import render_animatic
    from vidpipe_dagster.testing.vertex_emulator import VertexEmulator

    noise = np.random.default_rng(0)

    def frame() -> bytes:
        out = io.BytesIO()
        pixels = noise.integers(0, 256, (height, height * 16 // 9, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(out, format="PNG")
        return out.getvalue()

    clip = render_animatic(
        start_frame=frame(),
        end_frame=frame(),
        references=[],
        prompt="bench clip",
        duration_seconds=4.0,
        aspect_ratio="16:9",
        fps=24,
        height=height,
    )
    print(len(clip), flush=True)
    emulator = VertexEmulator(
        port=port,
        latency_s=latency,
        serve_video_uri=True,
        video_responder=lambda _instance, _parameters: clip,
    )
    with emulator:
        threading.Event().wait()
    return 0


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", type=int, default=128)
    parser.add_argument("--latency", type=float, default=4.0, help="seconds per video (L)")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--sequential-scenes", type=int, default=16)
    parser.add_argument("--small-scenes", type=int, default=32, help="second N for flat RSS")
    parser.add_argument("--poll-interval", type=float, default=0.2)
    parser.add_argument("--video-height", type=int, default=720)
    parser.add_argument("--emulator-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: host of a running emulator
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    parser.add_argument("--label", default="run", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # one measurement in its own process
        [in_flight] = args.in_flight
        result = _run(
            args.scenes, in_flight, args.worker, Path(args.work_dir), args.label, args.poll_interval
        )
        print(json.dumps(result))
        return 0

    if args.emulator_port:  # internal: the emulator, serving one clip rendered once
        return _serve(args.emulator_port, args.latency, args.video_height)

    port = _free_port()
    emulator = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--emulator-port",
            str(port),
            "--latency",
            str(args.latency),
            "--video-height",
            str(args.video_height),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    missed = False
    n, latency, poll = args.scenes, args.latency, args.poll_interval
    try:
        assert emulator.stdout is not None
        clip_bytes = int(emulator.stdout.readline() or 0)  # once the clip is rendered
        _wait_for(port, emulator)
        host = f"127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            print(
                f"N={n} scenes, latency L={latency:.2f} s, poll every {poll:.2f} s, each video "
                f"{clip_bytes / 1e6:.2f} MB ({args.video_height}p mp4, downloaded by URL)"
            )
            seq_n = args.sequential_scenes
            seq = _measure(seq_n, 1, host, work, "sequential", poll)
            per_scene = seq["wall"] / seq_n
            print(
                f"sequential (C=1, N={seq_n}): wall {seq['wall']:.2f} s, ideal N*L "
                f"{seq_n * latency:.2f} s, ratio {seq['wall'] / (seq_n * latency):.3f}, "
                f"{per_scene:.3f} s a scene -> {per_scene * n:.1f} s for N={n}; "
                f"peak RSS {seq['rss_mb']:.0f} MB"
            )
            largest = max(args.in_flight)
            peaks: dict[int, float] = {}
            for c in args.in_flight:
                run = _measure(n, c, host, work, f"c{c}", poll)
                ideal = math.ceil(n / c) * latency
                ratio = run["wall"] / ideal
                speedup = per_scene * n / run["wall"]
                peaks[c] = run["rss_mb"]
                ok = (
                    ratio <= RATIO_LIMIT
                    and speedup >= SPEEDUP_FACTOR * c
                    and run["rss_mb"] <= RSS_LIMIT_MB
                )
                missed |= not ok
                print(
                    f"C={c:>2}: wall {run['wall']:.2f} s, ideal ceil(N/C)*L {ideal:.2f} s, "
                    f"ratio {ratio:.3f} (limit {RATIO_LIMIT:.2f}); speed-up over sequential "
                    f"{speedup:.1f}x (limit {SPEEDUP_FACTOR * c:.1f}x); peak RSS "
                    f"{run['rss_mb']:.0f} MB (limit {RSS_LIMIT_MB:.0f}); first wave of {c} out "
                    f"by {run['first_wave_s']:.2f} s: {_verdict(ok)}"
                )
            small = _measure(args.small_scenes, largest, host, work, "small", poll)
            flat = peaks[largest] / small["rss_mb"]
            missed |= flat > RSS_FLAT_LIMIT
            print(
                f"peak RSS at C={largest}: N={args.small_scenes} {small['rss_mb']:.0f} MB, "
                f"N={n} {peaks[largest]:.0f} MB, ratio {flat:.2f} (flat: limit "
                f"{RSS_FLAT_LIMIT:.2f}): {_verdict(flat <= RSS_FLAT_LIMIT)}"
            )
    finally:
        os.killpg(emulator.pid, 15)
        emulator.wait()
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
