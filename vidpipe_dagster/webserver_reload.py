"""Ask a running Dagster webserver to reload the code location, so imported projects appear.

Definitions are read from the database when the code location loads; a project imported while
``dagster dev`` runs is invisible until a reload. This sends the webserver's own GraphQL mutation
(``reloadRepositoryLocation``, as ``dagster_graphql.DagsterGraphQLClient`` does) with the standard
library only.

The mutation answers only once the location has reloaded (a new code server has loaded every
project's definitions), which on a loaded machine takes far longer than a round trip. So the
webserver is first asked a small question with a short timeout (is it there, does it know the
location: ``import`` never hangs when no webserver runs), then the reload is given as long as a
reload takes, and if even that runs out, the location's own load status says what happened. The
message always matches the outcome: reloaded, failed to load (with the error), still loading, or
not reached.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

URL_ENV = "VIDPIPE_DAGSTER_WEBSERVER"  # read by settings.Settings
DEFAULT_LOCATION = "vidpipe"  # location_name in workspace.yaml

RELOAD_MUTATION = """
mutation VidpipeReloadCodeLocation($repositoryLocationName: String!) {
  reloadRepositoryLocation(repositoryLocationName: $repositoryLocationName) {
    __typename
    ... on WorkspaceLocationEntry {
      name
      locationOrLoadError {
        __typename
        ... on RepositoryLocation { repositories { name } }
        ... on PythonError { message }
      }
    }
    ... on ReloadNotSupported { message }
    ... on RepositoryLocationNotFound { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}
"""

LOCATION_QUERY = """
query VidpipeCodeLocationStatus($name: String!) {
  workspaceLocationEntryOrError(name: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      name
      loadStatus
      updatedTimestamp
      locationOrLoadError {
        __typename
        ... on RepositoryLocation { repositories { name } }
        ... on PythonError { message }
      }
    }
    ... on PythonError { message }
  }
}
"""

PROBE_TIMEOUT_S = 30.0  # a small query: an answer within this means the webserver is there
RELOAD_TIMEOUT_S = 600.0  # a reload loads every project in a new code server: minutes under load
POLL_INTERVAL_S = 2.0

MANUAL_STEP = (
    "in the Dagster UI open Deployment → Code locations and click Reload on {location!r} "
    "(or restart `dagster dev`)"
)


class GraphQLError(RuntimeError):
    """The webserver answered, but not with a usable GraphQL result."""


@dataclass(frozen=True)
class ReloadResult:
    """``reloaded`` is True only when the location reloaded and its definitions loaded."""

    reloaded: bool
    message: str


def _opener(url: str) -> urllib.request.OpenerDirector:
    """A local UI is reached directly: an HTTP(S)_PROXY meant for the internet must not see it."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in {"127.0.0.1", "localhost", "::1"}:
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def post_graphql(
    url: str, query: str, variables: dict[str, Any] | None = None, *, timeout: float = 10.0
) -> dict[str, Any]:
    """POST one GraphQL request to ``{url}/graphql`` and return its ``data``.

    Raises ``OSError`` (``urllib.error.URLError``, timeouts) when the server cannot be reached and
    ``GraphQLError`` when it answers with errors.
    """
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{url.rstrip('/')}/graphql",
        data=body,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with _opener(url).open(request, timeout=timeout) as response:
            payload = json.loads(response.read().decode() or "{}")
    except urllib.error.HTTPError as exc:  # a server answered: not "unreachable"
        detail = exc.read().decode(errors="replace")[:300]
        raise GraphQLError(f"HTTP {exc.code} from {url}/graphql: {detail}") from exc
    except json.JSONDecodeError as exc:
        raise GraphQLError(f"{url}/graphql did not answer with JSON (is it a Dagster UI?)") from exc
    if payload.get("errors"):
        messages = "; ".join(str(e.get("message", e)) for e in payload["errors"])
        raise GraphQLError(f"GraphQL error from {url}: {messages}")
    return payload.get("data") or {}


def reload_code_location(
    url: str,
    location: str = DEFAULT_LOCATION,
    timeout: float = RELOAD_TIMEOUT_S,
    *,
    probe_timeout: float = PROBE_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReloadResult:
    """Reload ``location`` at ``url`` and wait (up to ``timeout`` seconds) until it has reloaded.
    Never raises: the message says what happened and, unless it reloaded, what to do."""
    url = url.rstrip("/")
    manual = MANUAL_STEP.format(location=location)
    deadline = clock() + timeout
    try:  # is anyone there, and does it know the location?
        before = _location_entry(url, location, min(probe_timeout, timeout))
    except GraphQLError as exc:
        return ReloadResult(False, f"reload failed ({exc}); {manual}")
    except (OSError, ValueError) as exc:  # refused, timed out, bad URL
        return _not_reached(url, exc, manual)
    if before is None:
        return ReloadResult(
            False, f"the Dagster UI at {url} has no code location {location!r}; {manual}"
        )
    sent_at = time.time()
    try:
        data = post_graphql(
            url,
            RELOAD_MUTATION,
            {"repositoryLocationName": location},
            timeout=max(deadline - clock(), 1.0),
        )
    except GraphQLError as exc:
        return ReloadResult(False, f"reload failed ({exc}); {manual}")
    except (TimeoutError, urllib.error.URLError) as exc:
        if isinstance(exc, urllib.error.URLError) and not _is_timeout(exc):
            return _not_reached(url, exc, manual)
        # the request reached the webserver, which keeps reloading: ask the location itself
        return _await_reload(url, location, sent_at, deadline, manual, clock, sleep)
    except (OSError, ValueError) as exc:
        return _not_reached(url, exc, manual)
    return _reload_answer(url, location, data.get("reloadRepositoryLocation") or {}, manual)


def _reload_answer(url: str, location: str, result: dict[str, Any], manual: str) -> ReloadResult:
    kind = result.get("__typename")
    if kind == "WorkspaceLocationEntry":
        return _loaded_or_error(url, location, result.get("locationOrLoadError") or {}, manual)
    message = result.get("message") or f"unexpected answer {kind!r}"
    return ReloadResult(False, f"reload of {location!r} at {url} refused: {message}; {manual}")


def _loaded_or_error(url: str, location: str, loaded: dict[str, Any], manual: str) -> ReloadResult:
    if loaded.get("__typename") == "RepositoryLocation":
        return ReloadResult(True, f"reloaded code location {location!r} at {url}")
    error = (loaded.get("message") or "unknown error").strip().splitlines()
    return ReloadResult(
        False,
        f"code location {location!r} reloaded but failed to load: "
        f"{error[-1] if error else 'unknown error'}; fix it, then {manual}",
    )


def _await_reload(
    url: str,
    location: str,
    sent_at: float,
    deadline: float,
    manual: str,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> ReloadResult:
    """The reload answer did not come in time: poll the location until it shows a load that
    finished after the request was sent, or the deadline passes."""
    last = "no answer"
    while True:
        try:
            entry = _location_entry(url, location, PROBE_TIMEOUT_S)
        except (GraphQLError, OSError, ValueError) as exc:
            entry, last = None, f"status query failed: {getattr(exc, 'reason', exc)}"
        if entry is not None:
            status = entry.get("loadStatus")
            last = f"load status {status}"
            finished = float(entry.get("updatedTimestamp") or 0.0) >= sent_at - 1.0
            if status == "LOADED" and finished:
                return _loaded_or_error(
                    url, location, entry.get("locationOrLoadError") or {}, manual
                )
        if clock() >= deadline:
            return ReloadResult(
                False,
                f"asked {url} to reload code location {location!r}, but it had not finished "
                f"when this command stopped waiting ({last}); it may still finish: look at "
                f"Deployment → Code locations, and if it shows no new load, {manual}",
            )
        sleep(POLL_INTERVAL_S)


def _location_entry(url: str, location: str, timeout: float) -> dict[str, Any] | None:
    """The location's workspace entry (load status, time, load error), None if unknown."""
    data = post_graphql(url, LOCATION_QUERY, {"name": location}, timeout=timeout)
    entry = data.get("workspaceLocationEntryOrError")
    if entry is None:
        return None
    if entry.get("__typename") != "WorkspaceLocationEntry":
        raise GraphQLError(entry.get("message") or f"unexpected answer {entry.get('__typename')!r}")
    return entry


def _is_timeout(exc: urllib.error.URLError) -> bool:
    return isinstance(exc.reason, TimeoutError)


def _not_reached(url: str, exc: BaseException, manual: str) -> ReloadResult:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
        reason = "no answer in time"
    return ReloadResult(
        False,
        f"The Dagster UI was not reached at {url} ({reason}). If it is running, {manual}; "
        f"if it runs at another address, set {URL_ENV}.",
    )
