"""Screenshots of the Dagster UI over the demo projects, for the README (``make screenshots``).

Builds its own Dagster home and project database (``.vidpipe/screenshots``, made again on every
run; ``--reuse`` keeps a complete one) with ``vidpipe-dagster demo`` on the local animatic backend,
so the pictures show what this code does for a new user, and the user's own ``$VIDPIPE_HOME`` is
never edited. Then it starts ``dagster-webserver`` on 127.0.0.1 over that home, edits one scene's
prompt in a copy of the demo spec and imports it (which reloads the webserver), checks over
GraphQL that Dagster now shows exactly that scene partition stale, and drives Debian's headless
Chromium (``apt-get install chromium``; no browser download) through the DevTools protocol. Each
page is loaded until its data shows; tabs are clicked, badges hovered and collapsed markdown
previews ("[Show Markdown]") opened, each step waiting on what it makes appear, never on a fixed
sleep. Rows and tabs are found by their label, not their position, so more metadata does not
break a page. Chromium and the webserver are stopped by their process groups whatever happens.
"""

from __future__ import annotations

import argparse
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
from typing import Any, Literal, TypeVar

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from vidpipe_dagster.webserver_reload import post_graphql

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "screenshots"
HOME = REPO / ".vidpipe" / "screenshots"
MARKER = ".made-by-tools-screenshots"
WIDTH, HEIGHT = 1600, 1000
MAX_PNG_BYTES = 400_000
SLUG, PREFIX = "launch-day", "launch_day"
STALE_SCENE = 2
"""The scene whose prompt the script edits, so that Dagster shows exactly it stale."""
CHECK_SCENE = "4"
"""The scene whose check result is opened: one character recognised, one that cannot be scored."""
GROUP = f"/locations/vidpipe/asset-groups/{PREFIX}"
SHOW_MARKDOWN = "[Show Markdown]"
# the graph's "customize nodes" choice, saved in the browser as the UI saves it: owners shown too
GRAPH_FACETS = [
    "unsynced-tag",
    "owner",
    "checks",
    "latest-event",
    "status",
    "kind-tag",
    "automation",
    "partitions",
]
T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    """One thing a person does on the page before the picture is taken."""

    kind: Literal["click", "hover", "expand"]
    """``click`` or ``hover`` an element by its label, or ``expand`` a metadata row's markdown."""
    target: str
    """The element's label (a prefix is enough: "Unsynced" for "Unsynced (1)"), or the row key."""
    shows: str | None = None
    """Text the page shows once the step took effect (``expand`` waits on the dialog's images)."""


@dataclass(frozen=True)
class Page:
    path: str
    ready: str
    """Text the page shows once its data has arrived."""
    steps: tuple[Step, ...] = ()
    height: int = HEIGHT
    """Viewport height: a shorter page moves an opened dialog up, off the rows in ``visible``."""
    visible: tuple[str, ...] = ()
    """Metadata rows the picture is also about: a warning names any the dialog hides."""


SCENE_CLIP = f"/assets/{PREFIX}/scene_clip"
CHECK = f"{SCENE_CLIP}?view=checks&checkDetail=characters_recognisable"
PAGES = {
    # "Owner" is a node row once the facets below are saved: the graph with its data and owners
    "asset_graph.png": Page(f"{GROUP}/lineage", ready="Owner"),
    "scene_clip_stale_partition.png": Page(
        f"{SCENE_CLIP}?view=partitions&partition={STALE_SCENE}",
        ready="conditioning_mode",
        steps=(Step("hover", "Unsynced", shows="since last materialization"),),
    ),
    "scene_clip_materialization.png": Page(
        f"{SCENE_CLIP}?partition=3&view=events",
        ready="conditioning_mode",
        steps=(Step("expand", "preview"),),
        visible=("references",),
    ),
    "scene_clip_identity.png": Page(
        f"{SCENE_CLIP}?partition=3&view=events",
        ready="conditioning_mode",
        steps=(Step("expand", "identity"),),
    ),
    "scene_clip_check_partitions.png": Page(
        CHECK,
        ready="Latest execution",
        steps=(
            Step("click", "Partitions", shows="Passed ("),
            Step("click", CHECK_SCENE, shows="historical executions"),
        ),
    ),
    "scene_clip_check_history.png": Page(
        CHECK,
        ready="Latest execution",
        steps=(Step("click", "Execution history", shows="Description"),),
    ),
    "clean_sheet_materialization.png": Page(
        f"/assets/{PREFIX}/clean_sheet?partition=CHAR_01&view=events",
        ready="before_after",
        steps=(Step("expand", "before_after"),),
    ),
    "scene_references_materialization.png": Page(
        f"/assets/{PREFIX}/scene_references?partition=3&view=events",
        ready="selected_reference_tags",
        steps=(Step("expand", "preview"),),
        height=720,
        visible=("references",),
    ),
    "final_cut_contact_sheet.png": Page(
        f"/assets/{PREFIX}/final_cut?view=events",
        ready="cut_mode",
        steps=(Step("expand", "preview"),),
    ),
    "final_cut_identity_matrix.png": Page(
        f"/assets/{PREFIX}/final_cut?view=events",
        ready="cut_mode",
        steps=(Step("expand", "identity_matrix"),),
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


# the centre of the last visible element whose text is LABEL (else starts with it): the innermost
# tab bar comes last (a check's "Partitions" after the asset's); null while there is none
_FIND_JS = """((label) => {
  const shown = [...document.querySelectorAll("a, button, span, div, [role=tab]")].filter(
    (e) => e.offsetParent);
  const text = (e) => (e.innerText || "").trim();
  let found = shown.filter((e) => text(e) === label);
  if (!found.length) found = shown.filter(
    (e) => text(e).startsWith(label) && text(e).length < label.length + 12);
  if (!found.length) return null;
  const r = found[found.length - 1].getBoundingClientRect();
  return [r.x + r.width / 2, r.y + r.height / 2];
})(%s)"""

# the metadata rows named in KEYS that the open dialog covers or the viewport cuts off
_HIDDEN_JS = """((keys) => {
  const dialog = document.querySelector("[role=dialog]");
  const box = dialog ? dialog.getBoundingClientRect() : null;
  return keys.filter((key) => {
    const tr = [...document.querySelectorAll("tr")].find(
      (t) => t.cells.length > 1 && t.cells[0].innerText.trim() === key);
    if (!tr) return true;
    const r = tr.getBoundingClientRect();
    const uncovered = r.bottom - Math.max(r.y, box ? box.bottom : 0);
    const clear = !box || r.bottom <= box.top || uncovered >= 0.6 * r.height;
    return !(clear && r.bottom <= window.innerHeight);
  });
})(%s)"""

_STALENESS_QUERY = """
query Staleness($assetKey: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode { staleStatusByPartition(partitions: $partitions) }
  }
}"""


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


def _pointer(tools: DevTools, url: str, step: Step) -> None:
    """Move the mouse onto the element labelled ``step.target`` (and click it), as a person would:
    hover cards open on real pointer events only."""
    script = _FIND_JS % json.dumps(step.target)
    where = _until(f"{step.target!r} on {url}", lambda: tools.evaluate(script), timeout=60)
    x, y = where
    tools.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
    if step.kind == "click":
        for kind in ("mousePressed", "mouseReleased"):
            tools.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
    if step.shows:
        what = f"{step.shows!r} after {step.kind} on {step.target!r} at {url}"
        _until(what, lambda: _text_shown(tools, step.shows or ""), timeout=60)


def _shoot(tools: DevTools, base: str, page: Page, target: Path) -> None:
    url = base + page.path
    tools.call(
        "Emulation.setDeviceMetricsOverride",
        width=WIDTH,
        height=page.height,
        deviceScaleFactor=1,
        mobile=False,
    )
    navigated = tools.call("Page.navigate", url=url)
    if navigated.get("errorText"):
        raise ScreenshotError(f"{url}: {navigated['errorText']}")
    _until(f"{page.ready!r} on {url}", lambda: _text_shown(tools, page.ready), timeout=90)
    tools.settle()
    for step in page.steps:
        if step.kind == "expand":
            _expand(tools, url, step.target)
        else:
            _pointer(tools, url, step)
        tools.settle(quiet=1.0)
    hidden = tools.evaluate(_HIDDEN_JS % json.dumps(list(page.visible))) if page.visible else []
    if hidden:
        print(
            f"warning: {target.name}: the row(s) {', '.join(hidden)} are hidden (behind the "
            f"dialog or below the page); change this page's height in PAGES",
            file=sys.stderr,
        )
    png = tools.call("Page.captureScreenshot", format="png")["data"]
    partial = target.with_name(target.name + ".part")
    partial.write_bytes(base64.b64decode(png))
    _optimise(partial)
    partial.replace(target)


def _optimise(path: Path) -> None:
    """Recompress a PNG with Pillow; one still over ``MAX_PNG_BYTES`` gets a 256-colour palette."""
    from PIL import Image

    with Image.open(path) as shot:
        image = shot.convert("RGB")
    image.save(path, format="PNG", optimize=True)
    if path.stat().st_size > MAX_PNG_BYTES:
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
            path, format="PNG", optimize=True
        )


def _clean_env(home: Path) -> dict[str, str]:
    """The environment for the demo, the import and the webserver: this home, the packaged model
    catalog and the local animatic backend whatever the caller's shell says (no paid request, no
    other database, no other UI reloaded); only where the model weights are cached is kept."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("VIDPIPE_", "GOOGLE_", "DAGSTER_")) or name == "VIDPIPE_MODELS_DIR"
    }
    env.update(
        VIDPIPE_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        VIDPIPE_VIDEO_BACKEND="animatic",
    )
    return env


def _cli(env: dict[str, str], *args: str) -> None:
    command = [str(Path(sys.executable).parent / "vidpipe-dagster"), *args]
    completed = subprocess.run(command, cwd=REPO, env=env, check=False)
    if completed.returncode != 0:
        raise ScreenshotError(f"`vidpipe-dagster {' '.join(args)}` exited {completed.returncode}")


def _prepare_home(home: Path, reuse: bool) -> None:
    """A home that only this script writes: made again (demo included) unless ``reuse`` finds the
    demo complete there. A folder without the script's marker is never deleted."""
    done = (home / "media" / "projects" / SLUG / "final_cut.mp4").exists()
    if home.exists() and not (home / MARKER).exists():
        raise SystemExit(
            f"screenshots: {home} exists but was not made by this script; move it away "
            "(this script deletes and rebuilds its home on every run)"
        )
    if reuse and done:
        return
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / MARKER).write_text("made by tools/screenshots.py; deleted and rebuilt by it\n")
    _cli(_clean_env(home), "demo")


def _edit_one_prompt(home: Path, env: dict[str, str], copy_dir: Path) -> list[str]:
    """Import a copy of the demo spec whose scene ``STALE_SCENE`` has another prompt; returns the
    project's scene keys."""
    import yaml

    shutil.copytree(home / "demo_inputs", copy_dir)
    spec_path = copy_dir / f"{SLUG}.yaml"
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    (scene,) = [s for s in spec["scenes"] if s["index"] == STALE_SCENE]
    scene["prompt"] += " (prompt edited by tools/screenshots.py)"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    _cli(env, "import", str(spec_path))
    return [str(s["index"]) for s in spec["scenes"]]


def _check_staleness(base: str, scenes: list[str]) -> None:
    """Dagster must show exactly the edited scene stale, in clips and references alike: the
    picture of it stale is only honest if the other partitions are fresh."""
    for asset in ("scene_clip", "scene_references"):
        data = post_graphql(
            base,
            _STALENESS_QUERY,
            {"assetKey": {"path": [PREFIX, asset]}, "partitions": scenes},
            timeout=300,
        )
        statuses = data["assetNodeOrError"]["staleStatusByPartition"]
        stale = [scene for scene, status in zip(scenes, statuses, strict=True) if status == "STALE"]
        if stale != [str(STALE_SCENE)]:
            raise ScreenshotError(
                f"{PREFIX}/{asset}: Dagster shows scenes {stale or 'none'} stale after scene "
                f"{STALE_SCENE}'s prompt was edited (statuses: {statuses}); expected exactly "
                f"[{STALE_SCENE}]"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reuse",
        action="store_true",
        help=f"keep {HOME.relative_to(REPO)} when its demo is complete (skips the demo)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(PAGES),
        metavar="PNG",
        help="take only this picture (repeatable); default: all of them",
    )
    args = parser.parse_args(argv)
    pages = {name: page for name, page in PAGES.items() if not args.only or name in args.only}
    _chromium_binary()  # fail before the demo and the webserver if there is no browser
    # a plain `kill` should still stop the webserver and Chromium (the finally blocks run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        _prepare_home(HOME, args.reuse)
        for old in HOME.glob("failed-*.png"):  # from an earlier run that stopped
            old.unlink()
        with (
            tempfile.TemporaryDirectory(prefix="vidpipe-shots-", ignore_cleanup_errors=True) as tmp,
            _webserver(_clean_env(HOME), Path(tmp)) as base,
        ):
            env = {**_clean_env(HOME), "VIDPIPE_DAGSTER_WEBSERVER": base}
            scenes = _edit_one_prompt(HOME, env, Path(tmp) / "edited_spec")  # and reloads
            _check_staleness(base, scenes)
            # the community sign-up dialog would cover every page: mark it seen, as its Skip does
            post_graphql(base, "mutation { setNuxSeen }")
            with (
                _chromium(Path(tmp)) as page_socket,
                connect(page_socket, max_size=None, proxy=None, open_timeout=30) as connection,
            ):
                tools = DevTools(connection)
                _save_settings(tools, base)
                for name, page in pages.items():
                    try:
                        _shoot(tools, base, page, OUT / name)
                    except ScreenshotError as exc:  # what the page showed, to see why
                        seen = HOME / f"failed-{name}"
                        png = tools.call("Page.captureScreenshot", format="png")["data"]
                        seen.write_bytes(base64.b64decode(png))
                        raise ScreenshotError(f"{exc} (the page then: {seen})") from None
                    size = (OUT / name).stat().st_size
                    print(f"wrote {(OUT / name).relative_to(REPO)} ({size // 1000} kB)")
    except ScreenshotError as exc:
        raise SystemExit(f"screenshots: {exc}") from None
    return 0


def _save_settings(tools: DevTools, base: str) -> None:
    """Save the graph's node facets in the browser, as its "customize nodes" dialog does."""
    tools.call("Page.navigate", url=f"{base}/server_info")
    _until("the UI's origin", lambda: tools.evaluate("document.readyState") == "complete", 60)
    facets = json.dumps(json.dumps(GRAPH_FACETS))
    tools.evaluate(f"localStorage.setItem('asset-node-facets', {facets})")


if __name__ == "__main__":
    sys.exit(main())
