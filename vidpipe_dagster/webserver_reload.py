"""Ask a running Dagster webserver to reload the code location, so imported projects appear.

Definitions are read from the database when the code location loads; a project imported while
``dagster dev`` runs is invisible until a reload. This sends the webserver's own GraphQL mutation
(``reloadRepositoryLocation``, as ``dagster_graphql.DagsterGraphQLClient`` does) with the standard
library only and a short timeout, so ``import`` never hangs when no webserver runs.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
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
    url: str, location: str = DEFAULT_LOCATION, timeout: float = 3.0
) -> ReloadResult:
    """Reload ``location`` at ``url``. Never raises: the message says what happened, what to do."""
    url = url.rstrip("/")
    manual = MANUAL_STEP.format(location=location)
    try:
        data = post_graphql(
            url, RELOAD_MUTATION, {"repositoryLocationName": location}, timeout=timeout
        )
    except GraphQLError as exc:
        return ReloadResult(False, f"reload failed ({exc}); {manual}")
    except (OSError, ValueError) as exc:  # refused, timed out, bad URL
        reason = getattr(exc, "reason", exc)
        return ReloadResult(
            False,
            f"The Dagster UI was not reached at {url} ({reason}). If it is running, {manual}; "
            f"if it runs at another address, set {URL_ENV}.",
        )
    result = data.get("reloadRepositoryLocation") or {}
    kind = result.get("__typename")
    if kind == "WorkspaceLocationEntry":
        loaded = result.get("locationOrLoadError") or {}
        if loaded.get("__typename") == "RepositoryLocation":
            return ReloadResult(True, f"reloaded code location {location!r} at {url}")
        error = (loaded.get("message") or "unknown error").strip().splitlines()
        return ReloadResult(
            False,
            f"code location {location!r} reloaded but failed to load: "
            f"{error[-1] if error else 'unknown error'}; fix it, then {manual}",
        )
    message = result.get("message") or f"unexpected answer {kind!r}"
    return ReloadResult(False, f"reload of {location!r} at {url} refused: {message}; {manual}")
