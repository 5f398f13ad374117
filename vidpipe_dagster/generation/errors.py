"""API failures, classified once: what kind each is, its support codes, what a message means.

The engine (``generation.clips``) and the Tier 3 loop decide retries, remediation and billing from
``GenerationApiError.kind`` alone; every rule that reads an API's words lives here.
"""

from __future__ import annotations

import importlib
import re
import socket
import urllib.error
from typing import Literal

from vidpipe_dagster.generation.client import ErrorKind, GenerationApiError

Call = Literal["submit", "poll", "fetch", "generate_image"]

_SUPPORT_CODES = re.compile(r"support codes?:\s*([0-9][0-9,\s]*)", re.IGNORECASE)
_POLICY_WORDS = re.compile(
    r"usage guidelines|responsible ai|\bsafety\b|prohibited|sensitive words|violat|blocked|"
    r"\brai\b|content polic",
    re.IGNORECASE,
)
_REFERENCE_WORDS = re.compile(r"reference ?images?|referenceimages", re.IGNORECASE)
_COMBINATION_WORDS = re.compile(
    r"first frame|last ?frame|cannot be both|together|not supported by model|are not supported",
    re.IGNORECASE,
)
# Gemini finish reasons that mean the image was withheld by a filter (not billed, remediable).
SAFETY_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "IMAGE_SAFETY",
        "PROHIBITED_CONTENT",
        "IMAGE_PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
    }
)


def support_codes(message: str) -> tuple[str, ...]:
    """The numeric support codes an RAI message lists ("Support codes: 58061214, 17301594")."""
    codes: list[str] = []
    for match in _SUPPORT_CODES.finditer(message):
        codes.extend(code for code in re.split(r"[,\s]+", match.group(1)) if code)
    return tuple(codes)


def merge_codes(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))


def is_policy_message(message: str) -> bool:
    """Whether an API message says a safety or usage filter blocked the request or its output."""
    return bool(_POLICY_WORDS.search(message))


def rejects_reference_combination(message: str) -> bool:
    """A 400 about reference images with keyframes, or references refused by this model."""
    return bool(_REFERENCE_WORDS.search(message) and _COMBINATION_WORDS.search(message))


def _transport_error_types() -> tuple[type[BaseException], ...]:
    """Connection-level exception classes of whichever HTTP stacks are installed."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError, urllib.error.URLError]
    for module_name, attribute in (
        ("httpx", "TransportError"),
        ("httpx2", "TransportError"),
        ("aiohttp", "ClientError"),
        ("google.auth.exceptions", "TransportError"),
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cls = getattr(module, attribute, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


TRANSPORT_ERRORS = _transport_error_types()


def _not_sent_error_types() -> tuple[type[BaseException], ...]:
    """Failures raised before any byte of the request was written: the TCP connect (refused,
    unreachable), the name lookup, the TLS handshake (httpcore maps ``ssl.SSLError`` during
    ``start_tls`` to ``ConnectError``), waiting for a pooled connection, and the credentials
    refresh that precedes the request. A read or write error, a timeout waiting for the answer,
    or a reset are *not* here: the service may have received the whole request by then."""
    found: list[type[BaseException]] = [ConnectionRefusedError, socket.gaierror]
    for module_name, attributes in (
        ("httpx2", ("ConnectError", "ConnectTimeout", "PoolTimeout", "UnsupportedProtocol")),
        ("httpx", ("ConnectError", "ConnectTimeout", "PoolTimeout", "UnsupportedProtocol")),
        ("aiohttp", ("ClientConnectorError",)),  # refused, DNS, TLS certificate or handshake
        ("google.auth.exceptions", ("TransportError",)),  # token refresh: before the request
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for attribute in attributes:
            cls = getattr(module, attribute, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found.append(cls)
    return tuple(found)


NOT_SENT_ERRORS = _not_sent_error_types()


def never_sent(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was explicitly raised from (``raise … from``, as
    httpx and httpcore wrap their transports' errors), proves the request never left. Implicit
    context is not followed: an error raised while handling another says nothing about it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, NOT_SENT_ERRORS):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


def classify_api_error(exc: BaseException, call: Call) -> GenerationApiError:
    """Map an SDK or transport failure to our error kinds (see ``ErrorKind``)."""
    import pydantic
    from google.auth import exceptions as google_auth_exceptions
    from google.genai import errors as genai_errors

    if isinstance(exc, GenerationApiError):
        return exc
    if isinstance(exc, genai_errors.APIError):
        code = int(exc.code or 0)
        message = exc.message or str(exc)
        support = support_codes(message)
        kind: ErrorKind
        if code in (408, 429) or code >= 500:
            kind = "transient"
        elif code == 404 and call == "poll":
            kind = "not_found"
        elif is_policy_message(message) or (support and code == 400):
            kind = "content_policy"
        else:
            kind = "rejected"
        status = f"{exc.status}: " if exc.status else ""
        return GenerationApiError(
            kind, f"{status}{message}", status_code=code or None, support_codes=support
        )
    if never_sent(exc):
        detail = str(exc) or type(exc).__name__
        return GenerationApiError(
            "transient",
            f"{type(exc).__name__}: {detail} (before the request was written: nothing was sent)",
            not_sent=True,
        )
    if isinstance(exc, TRANSPORT_ERRORS):
        detail = str(exc) or type(exc).__name__
        if call == "submit":
            detail += " (the request may have reached the service; check before paying again)"
        return GenerationApiError("transient", f"{type(exc).__name__}: {detail}")
    if isinstance(exc, google_auth_exceptions.GoogleAuthError):
        return GenerationApiError("rejected", f"Google credentials failed: {exc}")
    if isinstance(exc, ValueError | TypeError | pydantic.ValidationError):
        return GenerationApiError("rejected", f"request refused before sending: {exc}")
    raise exc
