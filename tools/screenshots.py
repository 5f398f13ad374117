"""Screenshots of the Dagster UI over the demo projects, for the README (``make screenshots``).

Starts ``dagster-webserver`` on 127.0.0.1 over ``$VIDPIPE_HOME`` (running the demo first if it has
not been run), then drives Debian's headless Chromium (``apt-get install chromium``; no browser
download) through the DevTools protocol: each page is loaded until its data shows, and on the
materialization pages the collapsed markdown preview ("[Show Markdown]") is opened, so the PNG shows
the thumbnails in Dagster's dialog. Chromium and the webserver are stopped by their process groups
whatever happens.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from vidpipe_dagster.webserver_reload import post_graphql

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "screenshots"
WIDTH, HEIGHT = 1600, 1000
GROUP = "/locations/vidpipe/asset-groups/launch_day"
SHOW_MARKDOWN = "[Show Markdown]"
T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    path: str
    ready: str
    """Text the page shows once its data has arrived."""
    expand: str | None = None
    """Metadata key whose collapsed markdown is opened before the PNG is taken."""


PAGES = {
    "asset_graph.png": Page(f"{GROUP}/lineage", ready="final_cut"),
    "scene_clip_materialization.png": Page(
        "/assets/launch_day/scene_clip?partition=3&view=events",
        ready="conditioning_mode",
        expand="preview",
    ),
    "clean_sheet_materialization.png": Page(
        "/assets/launch_day/clean_sheet?partition=CHAR_01&view=events",
        ready="before_after",
        expand="before_after",
    ),
    "scene_references_materialization.png": Page(
        "/assets/launch_day/scene_references?partition=3&view=events",
        ready="selected_reference_tags",
        expand="preview",
    ),
    "scene_references_checks.png": Page(
        "/assets/launch_day/scene_references?view=checks", ready="at_most_three_references"
    ),
}

# everything this script talks to is on 127.0.0.1: never through a proxy from the environment
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# one string that changes while the page is still rendering, fetching images or animating
_SETTLE_JS = """[
  document.readyState,
  document.fonts.status,
  document.body ? document.body.innerHTML.length : 0,
  [...document.images].filter((i) => !i.complete).length,
  document.getAnimations().filter((a) => a.playState === "running").length,
].join(" ")"""

# clicks "[Show Markdown]" in the metadata row named KEY; says what it found
_EXPAND_JS = """((key, label) => {
  const rows = [...document.querySelectorAll("tr")].filter(
    (tr) => tr.cells.length > 1 && tr.cells[0].innerText.trim() === key);
  for (const tr of rows) {
    const link = [...tr.querySelectorAll("a")].find((a) => a.textContent.trim() === label);
    if (link) { link.click(); return "clicked"; }
  }
  return rows.length ? "row without link" : "no row";
})(%s, %s)"""

# the images of the open dialog titled KEY: how many, and how many have decoded
_DIALOG_JS = """((key) => {
  const dialog = [...document.querySelectorAll("[role=dialog]")].find(
    (d) => d.innerText.trim().startsWith(key));
  if (!dialog) return null;
  const images = [...dialog.querySelectorAll("img")];
  const loaded = images.filter((i) => i.complete && i.naturalWidth > 0);
  return {images: images.length, loaded: loaded.length};
})(%s)"""


class ScreenshotError(Exception):
    """A step did not happen within its time limit, or a process died; the message says which."""


def _until(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ScreenshotError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return ("\n--- last lines of " + str(log) + " ---\n" + "\n".join(text)) if text else ""


def _alive(process: subprocess.Popen[bytes], name: str, log: Path) -> None:
    if process.poll() is not None:
        raise ScreenshotError(f"{name} exited with code {process.returncode}{_tail(log)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group started with ``start_new_session``; SIGKILL after 20 s."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _answers(url: str) -> bool:
    try:
        with _LOCAL.open(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _webserver(env: dict[str, str], logs: Path) -> Iterator[str]:
    """``dagster-webserver`` on a free loopback port; yields its base URL."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = logs / "webserver.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster-webserver"),
                *("-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)),
            ],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def up() -> bool:
            _alive(server, "dagster-webserver", log)
            return _answers(f"{base}/server_info")

        try:
            _until(f"dagster-webserver at {base}", up, timeout=180, every=0.5)
        except ScreenshotError as exc:
            raise ScreenshotError(f"{exc}{_tail(log)}") from None
        yield base
    finally:
        _stop(server)


def _chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("Chromium is not installed: run `apt-get install chromium` (Debian package)")


@contextlib.contextmanager
def _chromium(logs: Path) -> Iterator[str]:
    """Headless Chromium, DevTools on a port it picks itself; yields its page's websocket URL."""
    profile = logs / "chromium-profile"
    log = logs / "chromium.log"
    with log.open("wb") as sink:
        browser = subprocess.Popen(
            [
                _chromium_binary(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-proxy-server",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={WIDTH},{HEIGHT}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def port() -> str | None:
            _alive(browser, "Chromium", log)
            with contextlib.suppress(OSError, IndexError):
                return (profile / "DevToolsActivePort").read_text().splitlines()[0]
            return None

        try:
            found = _until("Chromium's DevTools port", port, timeout=60)
        except ScreenshotError as exc:
            raise ScreenshotError(f"{exc}{_tail(log)}") from None

        def page() -> str | None:
            _alive(browser, "Chromium", log)
            try:
                with _LOCAL.open(f"http://127.0.0.1:{found}/json/list", timeout=5) as response:
                    targets = json.load(response)
            except (OSError, ValueError):
                return None
            return next((t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"), None)

        yield _until("Chromium's page target", page, timeout=30)
    finally:
        _stop(browser)


class DevTools:
    """Just enough of the Chrome DevTools protocol: one command at a time on one page."""

    def __init__(self, connection: ClientConnection) -> None:
        self._ws = connection
        self._last_id = 0

    def call(self, method: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        self._last_id += 1
        self._ws.send(json.dumps({"id": self._last_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:  # events and late answers are skipped: no domain is enabled
            try:
                message = json.loads(self._ws.recv(timeout=max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                raise ScreenshotError(
                    f"Chromium did not answer {method} within {timeout:.0f} s"
                ) from None
            except ConnectionClosed as exc:
                raise ScreenshotError(f"Chromium closed the DevTools connection: {exc}") from None
            if message.get("id") == self._last_id:
                if "error" in message:
                    raise ScreenshotError(f"Chromium refused {method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            detail = result["exceptionDetails"].get("exception", {}).get("description")
            raise ScreenshotError(f"script failed in the page: {detail or result}")
        return result["result"].get("value")

    def settle(self, quiet: float = 1.5, timeout: float = 20.0) -> None:
        """Wait until the page has not changed for ``quiet`` seconds (or give up after timeout)."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            state = self.evaluate(_SETTLE_JS)
            if state != last or not state.startswith("complete loaded"):
                last, since = state, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.25)


def _text_shown(tools: DevTools, text: str) -> bool:
    return bool(tools.evaluate(f"document.body && document.body.innerText.includes({text!r})"))


def _expand(tools: DevTools, url: str, key: str) -> None:
    script = _EXPAND_JS % (json.dumps(key), json.dumps(SHOW_MARKDOWN))
    outcome = ""

    def clicked() -> bool:
        nonlocal outcome
        outcome = tools.evaluate(script)
        return outcome == "clicked"

    try:
        _until(f"{SHOW_MARKDOWN} in the metadata row {key!r}", clicked, timeout=60, every=0.5)
    except ScreenshotError as exc:
        raise ScreenshotError(f"{url}: {exc} (last seen: {outcome})") from None
    dialog_js = _DIALOG_JS % json.dumps(key)
    shown = _until(f"the {key!r} dialog at {url}", lambda: tools.evaluate(dialog_js), timeout=30)

    def loaded() -> dict[str, int] | None:
        nonlocal shown
        shown = tools.evaluate(dialog_js) or {"images": 0, "loaded": 0}
        return shown if shown["images"] and shown["loaded"] == shown["images"] else None

    try:
        _until("its images", loaded, timeout=30)
    except ScreenshotError:
        raise ScreenshotError(
            f"{url}: the {key!r} dialog opened but shows {shown['loaded']} of "
            f"{shown['images']} images (no preview in the materialization's markdown?)"
        ) from None


def _shoot(tools: DevTools, base: str, page: Page, target: Path) -> None:
    url = base + page.path
    navigated = tools.call("Page.navigate", url=url)
    if navigated.get("errorText"):
        raise ScreenshotError(f"{url}: {navigated['errorText']}")
    _until(f"{page.ready!r} on {url}", lambda: _text_shown(tools, page.ready), timeout=90)
    tools.settle()
    if page.expand:
        _expand(tools, url, page.expand)
        tools.settle(quiet=1.0)
    png = tools.call("Page.captureScreenshot", format="png")["data"]
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(base64.b64decode(png))
    partial.replace(target)


def main() -> int:
    _chromium_binary()  # fail before the demo and the webserver if there is no browser
    # a plain `kill` should still stop the webserver and Chromium (the finally blocks run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    home = Path(os.environ.get("VIDPIPE_HOME", REPO / ".vidpipe")).resolve()
    env = {
        **os.environ,
        "VIDPIPE_HOME": str(home),
        "DAGSTER_HOME": os.environ.get("DAGSTER_HOME", str(home / "dagster")),
    }
    if not (home / "media" / "projects" / "launch-day" / "final_cut.mp4").exists():
        demo = Path(sys.executable).parent / "vidpipe-dagster"
        subprocess.run([str(demo), "demo"], env=env, check=True)
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="vidpipe-shots-", ignore_cleanup_errors=True) as tmp,
            _webserver(env, Path(tmp)) as base,
            _chromium(Path(tmp)) as page_socket,
            connect(page_socket, max_size=None, proxy=None, open_timeout=30) as connection,
        ):
            # the community sign-up dialog would cover every page: mark it seen, as its Skip does
            post_graphql(base, "mutation { setNuxSeen }")
            tools = DevTools(connection)
            tools.call(
                "Emulation.setDeviceMetricsOverride",
                width=WIDTH,
                height=HEIGHT,
                deviceScaleFactor=1,
                mobile=False,
            )
            for name, page in PAGES.items():
                _shoot(tools, base, page, OUT / name)
                print(f"wrote {(OUT / name).relative_to(REPO)}")
    except ScreenshotError as exc:
        raise SystemExit(f"screenshots: {exc}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
