"""Screenshots of the Dagster UI over the demo projects, for the README (``make screenshots``).

Starts ``dagster-webserver`` on 127.0.0.1 over ``$VIDPIPE_HOME`` (running the demo first if it has
not been run), then takes PNGs with Debian's headless Chromium (``apt-get install chromium``; no
browser download). Stops the webserver by its process group at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from vidpipe_dagster.webserver_reload import post_graphql

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "screenshots"
GROUP = "/locations/vidpipe/asset-groups/launch_day"
PAGES = {
    "asset_graph.png": f"{GROUP}/lineage",
    "scene_clip_materialization.png": "/assets/launch_day/scene_clip?partition=3&view=events",
    "clean_sheet_materialization.png": (
        "/assets/launch_day/clean_sheet?partition=CHAR_01&view=events"
    ),
    "scene_references_checks.png": "/assets/launch_day/scene_references?view=checks",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("Chromium is not installed: run `apt-get install chromium` (Debian package)")


def _wait(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"webserver did not answer at {url} within {timeout:.0f} s")


def main() -> int:
    browser = _chromium()
    home = Path(os.environ.get("VIDPIPE_HOME", REPO / ".vidpipe")).resolve()
    env = {
        **os.environ,
        "VIDPIPE_HOME": str(home),
        "DAGSTER_HOME": os.environ.get("DAGSTER_HOME", str(home / "dagster")),
    }
    bin_dir = Path(sys.executable).parent
    if not (home / "media" / "projects" / "launch-day" / "final_cut.mp4").exists():
        subprocess.run([str(bin_dir / "vidpipe-dagster"), "demo"], env=env, check=True)
    port = _free_port()
    server = subprocess.Popen(
        [
            str(bin_dir / "dagster-webserver"),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/server_info")
        # the community sign-up dialog would cover every page: mark it seen, as its Skip does
        post_graphql(base, "mutation { setNuxSeen }")
        OUT.mkdir(parents=True, exist_ok=True)
        for name, path in PAGES.items():
            target = OUT / name
            subprocess.run(
                [
                    browser,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                    f"--user-data-dir={OUT / '.chromium'}",
                    "--window-size=1600,1000",
                    "--virtual-time-budget=20000",
                    f"--screenshot={target}",
                    base + path,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=180,
            )
            print(f"wrote {target.relative_to(REPO)}")
        shutil.rmtree(OUT / ".chromium", ignore_errors=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
