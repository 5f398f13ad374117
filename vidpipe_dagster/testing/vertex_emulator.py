"""A loopback Vertex AI emulator speaking the REST shapes google-genai 3.4 uses in Vertex mode.

It exists so the real SDK, our error classification and the spend-safety logic can be tested
against the same wire format as production, with rejections, quota errors, dropped connections and
safety filters injected on demand, and without credentials or network. Endpoints (under
``/v1beta1`` or ``/v1``):

- ``POST projects/{p}/locations/{l}/publishers/google/models/{m}:predictLongRunning`` (Veo submit)
- ``POST …/models/{m}:fetchPredictOperation`` with ``{"operationName": …}`` (what
  ``client.aio.operations.get`` calls in Vertex mode); ``GET {operation name}`` is also served
- ``POST …/models/{m}:generateContent`` (Gemini image models)
- ``GET /media/{id}.mp4`` when ``serve_video_uri`` is set (videos returned by URI)

It follows the model catalog (``domain.catalog``; the packaged one unless given another): unknown
and retired models are not found, and it rejects, before any billing, what the catalog says a
model rejects (durations, 8 s with references and at 1080p/4k, resolutions, sampleCount, reference
images, lastFrame, hybrid, audio, image input counts), and billing labels that break Google's
rules. Content-policy blocks carry the support code of the category a test asks for
(``category_substrings``), and the audio filter (``audio_filter_substrings``) blocks without a
code, passing after ``audio_filter_repeats`` tries, as its false positives do.

Run ``python -m vidpipe_dagster.testing.vertex_emulator --port 8085`` and point the client at it
with ``make_genai_client(..., emulator_host="127.0.0.1:8085")``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import io
import json
import logging
import random
import re
import signal
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError

from vidpipe_dagster.domain.catalog import ModelCatalog, VideoModel, packaged_catalog
from vidpipe_dagster.domain.media import png_bytes
from vidpipe_dagster.domain.video_requests import MAX_SEED, label_problems

logger = logging.getLogger(__name__)

Endpoint = Literal["submit", "poll", "generate_content"]
FaultKind = Literal["429", "500", "503", "drop", "drop_after_accept"]
ENDPOINTS: tuple[Endpoint, ...] = ("submit", "poll", "generate_content")
FAULT_KINDS: tuple[FaultKind, ...] = ("429", "500", "503", "drop", "drop_after_accept")

ImageResponder = Callable[[str, bytes | None], bytes]
VideoResponder = Callable[[Mapping[str, Any], Mapping[str, Any]], bytes]

_RESPONSE_TYPE = "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse"
_MODEL_PATH = re.compile(
    r"^/(?P<version>v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/publishers/google/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$"
)
_OPERATION_PATH = re.compile(r"^/(?:v1|v1beta1)/(?P<name>projects/.+/operations/[^/]+)$")
_MEDIA_PATH = re.compile(r"^/media/(?P<id>[0-9a-f]{32})\.mp4$")
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


# What a block said before categories could be asked for (tests still read these codes).
_LEGACY_SUBMIT_CODE = "17301594"  # the catalog files it under Child
_LEGACY_OUTPUT_CODE = "90789179"  # the catalog files it under Sexual
AUDIO_FILTER_REASON = (
    "Veo could not generate this video because its audio might violate our policies. You have "
    "not been charged. Try again, or rephrase the sounds the prompt asks for."
)


def request_fingerprint(instance: Mapping[str, Any], parameters: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of one submitted instance and its parameters, without the
    seed: the emulator has no randomness for a seed to fix, so one request sent with two seeds
    is counted (and rendered) as the same request."""
    params = {k: v for k, v in parameters.items() if k != "seed"}
    blob = json.dumps(
        {"instance": instance, "parameters": params}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class ApiError(Exception):
    """An error answer in Google's JSON error shape."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        status = _STATUS_NAMES.get(self.code, "UNKNOWN")
        return {"error": {"code": self.code, "message": self.message, "status": status}}


class _Drop(Exception):
    """Close the connection without answering (what a proxy reset looks like to the client)."""


@dataclass
class _Operation:
    name: str
    media_id: str
    model: str
    fingerprint: str
    instance: dict[str, Any]
    parameters: dict[str, Any]
    submitted_at: float
    result: dict[str, Any] | None = None


@dataclass
class _FaultPlan:
    scripted: deque[FaultKind] = field(default_factory=deque)
    rate: float = 0.0
    kinds: tuple[FaultKind, ...] = ("429",)


class VertexEmulator:
    """A threaded HTTP server on loopback; use as a context manager or call start()/stop().

    Counters (``submit_attempts``, ``submit_count``, ``submissions_by_fingerprint``,
    ``poll_count``, ``generate_content_count``) let tests prove how many paid requests were made:
    ``submit_count`` counts accepted operations only, as only those would be billed;
    ``labels_received`` lists the billing labels of each accepted submit, in order.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        catalog: ModelCatalog | None = None,
        today: date | None = None,
        faults: Mapping[Endpoint, Iterable[FaultKind]] | None = None,
        fault_rates: Mapping[Endpoint, float] | None = None,
        fault_kinds: Sequence[FaultKind] = ("429",),
        rai_filter_substrings: Sequence[str] = (),
        rai_filter: Callable[[str], bool] | None = None,
        submit_blocked_substrings: Sequence[str] = (),
        operation_error_substrings: Sequence[str] = (),
        blocked_prompt_substrings: Sequence[str] = (),
        image_safety_substrings: Sequence[str] = (),
        category_substrings: Mapping[str, str] | None = None,
        submit_category_substrings: Mapping[str, str] | None = None,
        audio_filter_substrings: Sequence[str] = (),
        audio_filter_repeats: int = 1,
        filtered_takes: int = 0,
        image_responder: ImageResponder | None = None,
        video_responder: VideoResponder | None = None,
        serve_video_uri: bool = False,
        require_auth: bool = True,
        video_height: int = 144,
        video_fps: int = 8,
        seed: int = 0,
    ) -> None:
        self.latency_s = latency_s
        self.catalog = catalog or packaged_catalog()
        self.today = today  # the day lifecycles are judged on (None: the real today)
        self.rai_filter_substrings = list(rai_filter_substrings)
        self.rai_filter = rai_filter  # prompt -> filtered?, e.g. only unremediated prompts
        self.submit_blocked_substrings = list(submit_blocked_substrings)
        self.operation_error_substrings = list(operation_error_substrings)
        self.blocked_prompt_substrings = list(blocked_prompt_substrings)
        self.image_safety_substrings = list(image_safety_substrings)
        # prompt substring -> safety category (catalog key): the generated video is filtered
        # with that category's support code; submit_*: the prompt is refused at submit
        self.category_substrings = dict(category_substrings or {})
        self.submit_category_substrings = dict(submit_category_substrings or {})
        # prompt substrings the audio filter blocks (no support code) while generateAudio is on,
        # for the first ``audio_filter_repeats`` submissions of the same request
        for category in (
            *self.category_substrings.values(),
            *self.submit_category_substrings.values(),
        ):
            self.category_code(category)  # an unknown category fails here, not mid-request
        self.audio_filter_substrings = list(audio_filter_substrings)
        self.audio_filter_repeats = audio_filter_repeats
        self.filtered_takes = filtered_takes  # takes of a multi-take request that are filtered
        self._audio_blocks: Counter[str] = Counter()
        self.image_responder = image_responder
        self.video_responder = video_responder
        self.serve_video_uri = serve_video_uri
        self.require_auth = require_auth
        self.video_height = video_height
        self.video_fps = video_fps

        self._lock = threading.Lock()
        # one seeded stream per endpoint: the faults a submit meets do not depend on how polls
        # of concurrent operations happened to interleave with it
        self._randoms = {e: random.Random(f"{seed}:{e}") for e in ENDPOINTS}
        self._faults: dict[Endpoint, _FaultPlan] = {e: _FaultPlan() for e in ENDPOINTS}
        for endpoint, kinds in (faults or {}).items():
            self.inject(endpoint, *kinds)
        for endpoint, rate in (fault_rates or {}).items():
            self.set_fault_rate(endpoint, rate, kinds=fault_kinds)
        self._operations: dict[str, _Operation] = {}
        self._media: dict[str, str] = {}  # media id -> operation name
        self._media_faults: deque[int] = deque()  # HTTP statuses for the next media downloads
        self._video_cache: dict[str, bytes] = {}
        self.last_bodies: dict[Endpoint, dict[str, Any]] = {}
        self.reset_counts()

        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle -----------------------------------------------------------------------------

    def start(self) -> VertexEmulator:
        if self._server is not None:
            return self
        self._server = _Server((self._host, self._port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"vertex-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> VertexEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (still readable after stop(), for messages)."""
        if self._server is not None:
            self._port = int(self._server.server_address[1])
        elif not self._port:
            raise RuntimeError("the emulator has not been started; call start() first")
        return self._port

    @property
    def address(self) -> str:
        """``host:port``, the form ``make_genai_client(emulator_host=...)`` takes."""
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.address}"

    # Runtime controls ------------------------------------------------------------------------

    def inject(self, endpoint: Endpoint, *kinds: FaultKind) -> None:
        """Queue faults answered, in order, by the next requests to ``endpoint``."""
        _check_endpoint(endpoint)
        for kind in kinds:
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault {kind!r}; choose from {FAULT_KINDS}")
        with self._lock:
            self._faults[endpoint].scripted.extend(kinds)

    def set_fault_rate(
        self, endpoint: Endpoint, rate: float, *, kinds: Sequence[FaultKind] = ("429",)
    ) -> None:
        """Fail a random fraction of requests to ``endpoint`` (seeded, so runs repeat)."""
        _check_endpoint(endpoint)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], got {rate}")
        with self._lock:
            self._faults[endpoint].rate = rate
            self._faults[endpoint].kinds = tuple(kinds) or ("429",)

    def fail_media(self, *codes: int) -> None:
        """Answer the next video downloads (``GET /media/…``) with these HTTP statuses, in order:
        a video that was generated (and billed) but could not be fetched."""
        with self._lock:
            self._media_faults.extend(codes)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = {e: _FaultPlan() for e in ENDPOINTS}
            self._media_faults.clear()

    def reset_counts(self) -> None:
        with self._lock:
            self.submit_attempts = 0
            self.submit_count = 0
            self.submissions_by_fingerprint: Counter[str] = Counter()
            self.labels_received: list[dict[str, str]] = []  # of accepted submits, in order
            self.poll_count = 0
            self.generate_content_count = 0

    def operation_names(self) -> list[str]:
        with self._lock:
            return list(self._operations)

    def operation_fingerprint(self, name: str) -> str:
        with self._lock:
            return self._operations[name].fingerprint

    def complete_all(self) -> None:
        """Make every running operation due now, whatever the latency."""
        with self._lock:
            for operation in self._operations.values():
                operation.submitted_at = min(operation.submitted_at, time.monotonic() - 1e9)

    # Request handling (called from handler threads) ------------------------------------------

    def _dispatch(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        try:
            media = _MEDIA_PATH.match(path)
            if method == "GET" and media:
                return self._serve_media(media["id"])
            if self.require_auth and not headers.get("authorization", "").startswith("Bearer "):
                raise ApiError(
                    401,
                    "Request is missing required authentication credential. Expected OAuth 2 "
                    "access token, login cookie or other valid authentication credential.",
                )
            match = _MODEL_PATH.match(path)
            if method == "POST" and match:
                payload = _parse_json(body)
                handler = {
                    "predictLongRunning": self._submit,
                    "fetchPredictOperation": self._poll_by_body,
                    "generateContent": self._generate_content,
                }.get(match["method"])
                if handler is None:
                    raise ApiError(404, f"Method {match['method']} is not served by the emulator.")
                return _Reply(200, handler(match, payload))
            operation = _OPERATION_PATH.match(path)
            if method == "GET" and operation:
                return _Reply(200, self._poll(operation["name"]))
            raise ApiError(404, f"The requested URL {path} was not found on this server.")
        except ApiError as exc:
            return _Reply(exc.code, exc.body())

    def _submit(self, match: re.Match[str], payload: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.submit_attempts += 1
            self.last_bodies["submit"] = payload
        fault = self._take_fault("submit")
        model = match["model"]
        spec = self.catalog.find_video_model(model)
        if spec is None or spec.lifecycle.retired(self.today):
            raise ApiError(404, _not_found(match, model))
        instances = payload.get("instances")
        if not isinstance(instances, list) or len(instances) != 1:
            raise ApiError(400, "Request must contain exactly one instance.")
        instance = instances[0]
        parameters = payload.get("parameters") or {}
        _validate_video_request(spec, instance, parameters)
        _validate_labels(payload.get("labels"))
        prompt = str(instance.get("prompt") or "").lower()
        code = None
        if any(s.lower() in prompt for s in self.submit_blocked_substrings):
            code = _LEGACY_SUBMIT_CODE
        for substring, category in self.submit_category_substrings.items():
            if substring.lower() in prompt:
                code = self.category_code(category)
        if code is not None:
            raise ApiError(
                400,
                "The prompt could not be submitted. This prompt contains sensitive words that "
                "violate Google's Responsible AI practices. Try rephrasing the prompt. If you "
                f"think this was an error, send feedback. Support codes: {code}",
            )

        fingerprint = request_fingerprint(instance, parameters)
        media_id = uuid.uuid4().hex
        name = (
            f"projects/{match['project']}/locations/{match['location']}"
            f"/publishers/google/models/{model}/operations/{uuid.uuid4()}"
        )
        with self._lock:
            self._operations[name] = _Operation(
                name=name,
                media_id=media_id,
                model=model,
                fingerprint=fingerprint,
                instance=instance,
                parameters=parameters,
                submitted_at=time.monotonic(),
            )
            self._media[media_id] = name
            self.submit_count += 1
            self.submissions_by_fingerprint[fingerprint] += 1
            self.labels_received.append(dict(payload.get("labels") or {}))
        if fault == "drop_after_accept":
            raise _Drop
        return {"name": name}

    def _poll_by_body(self, match: re.Match[str], payload: dict[str, Any]) -> dict[str, Any]:
        name = payload.get("operationName")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "operationName is required.")
        resource = name.rpartition("/operations/")[0]
        expected = (
            f"projects/{match['project']}/locations/{match['location']}"
            f"/publishers/google/models/{match['model']}"
        )
        if resource and resource != expected:
            raise ApiError(400, f"Operation {name} does not belong to {expected}.")
        return self._poll(name)

    def _poll(self, name: str) -> dict[str, Any]:
        with self._lock:
            self.poll_count += 1
            self.last_bodies["poll"] = {"operationName": name}
        self._take_fault("poll")
        with self._lock:
            operation = self._operations.get(name)
        if operation is None:
            raise ApiError(404, f"Operation {name} not found.")
        if time.monotonic() - operation.submitted_at < self.latency_s:
            return {"name": name}
        if operation.result is None:
            result = self._finish(operation)
            with self._lock:
                operation.result = operation.result or result
        return {"name": name, "done": True, **operation.result}

    def category_code(self, category: str) -> str:
        """The support code the emulator reports for a catalog category (its first)."""
        try:
            return self.catalog.categories[category].codes[0]
        except KeyError:
            known = ", ".join(self.catalog.categories)
            raise ValueError(f"unknown safety category {category!r}; known: {known}") from None

    def _policy_code(self, prompt: str) -> str | None:
        """The support code that filters this prompt's video, if any."""
        lowered = prompt.lower()
        code = None
        if any(s.lower() in lowered for s in self.rai_filter_substrings) or (
            self.rai_filter is not None and self.rai_filter(prompt)
        ):
            code = _LEGACY_OUTPUT_CODE
        for substring, category in self.category_substrings.items():
            if substring.lower() in lowered:
                code = self.category_code(category)
        return code

    def _audio_blocked(self, operation: _Operation) -> bool:
        """The audio filter: while generateAudio is on, for the first ``audio_filter_repeats``
        submissions of the same request (a plain retry passes, as false positives do)."""
        lowered = str(operation.instance.get("prompt") or "").lower()
        if operation.parameters.get("generateAudio") is False:
            return False
        if not any(s.lower() in lowered for s in self.audio_filter_substrings):
            return False
        with self._lock:
            self._audio_blocks[operation.fingerprint] += 1
            return self._audio_blocks[operation.fingerprint] <= self.audio_filter_repeats

    def _finish(self, operation: _Operation) -> dict[str, Any]:
        prompt = str(operation.instance.get("prompt") or "")
        lowered = prompt.lower()
        count = int(operation.parameters.get("sampleCount") or 1)
        if any(s.lower() in lowered for s in self.operation_error_substrings):
            return {"error": {"code": 13, "message": "Video generation failed: internal error."}}
        code = self._policy_code(prompt)
        reasons: list[str] = []
        if code is not None:
            reasons = [
                "Veo could not generate videos because the input prompt violates Vertex AI's "
                f"usage guidelines. Try rephrasing the prompt. Support codes: {code}"
            ]
        elif self._audio_blocked(operation):
            reasons = [AUDIO_FILTER_REASON]
        if reasons:
            return {
                "response": {
                    "@type": _RESPONSE_TYPE,
                    "raiMediaFilteredCount": count,
                    "raiMediaFilteredReasons": reasons,
                }
            }
        data = self._video_for(operation)
        filtered = min(max(0, self.filtered_takes), count - 1) if count > 1 else 0
        if self.serve_video_uri:
            video = {"gcsUri": f"{self.base_url}/media/{operation.media_id}.mp4"}
        else:
            video = {"bytesBase64Encoded": base64.b64encode(data).decode("ascii")}
        video["mimeType"] = "video/mp4"
        response: dict[str, Any] = {
            "@type": _RESPONSE_TYPE,
            "raiMediaFilteredCount": filtered,
            "videos": [dict(video) for _ in range(count - filtered)],
        }
        if filtered:
            response["raiMediaFilteredReasons"] = [
                "Some videos were not generated because they violate Vertex AI's usage "
                f"guidelines. Support codes: {self.category_code('video_safety')}"
            ]
        return {"response": response}

    def _video_for(self, operation: _Operation) -> bytes:
        with self._lock:
            cached = self._video_cache.get(operation.fingerprint)
        if cached is not None:
            return cached
        if self.video_responder is not None:
            data = self.video_responder(operation.instance, operation.parameters)
        else:
            data = self._render(operation.model, operation.instance, operation.parameters)
        with self._lock:
            return self._video_cache.setdefault(operation.fingerprint, data)

    def _render(
        self, model: str, instance: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> bytes:
        from vidpipe_dagster.domain.render import render_animatic

        references = [
            (f"ref {i + 1}", _image_bytes(ref.get("image")) or b"")
            for i, ref in enumerate(instance.get("referenceImages") or [])
        ]
        return render_animatic(
            start_frame=_image_bytes(instance.get("image")),
            end_frame=_image_bytes(instance.get("lastFrame")),
            references=[(tag, data) for tag, data in references if data],
            prompt=str(instance.get("prompt") or ""),
            duration_seconds=float(parameters.get("durationSeconds") or self._longest(model)),
            aspect_ratio=parameters.get("aspectRatio") or "16:9",
            fps=self.video_fps,
            height=self.video_height,
        )

    def _longest(self, model: str) -> int:
        """The duration of a request that names none: the model's longest."""
        return max(self.catalog.video_models[model].durations)  # accepted: it is listed

    def _serve_media(self, media_id: str) -> _Reply:
        with self._lock:
            fault = self._media_faults.popleft() if self._media_faults else None
            name = self._media.get(media_id)
            operation = self._operations.get(name) if name else None
        if fault is not None:
            return _Reply(fault, ApiError(fault, "Injected media download fault.").body())
        if operation is None or operation.result is None:
            return _Reply(404, ApiError(404, "No such object.").body())
        return _Reply(200, self._video_for(operation), content_type="video/mp4")

    def _generate_content(self, match: re.Match[str], payload: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.generate_content_count += 1
            self.last_bodies["generate_content"] = payload
        self._take_fault("generate_content")
        model = match["model"]
        spec = self.catalog.image_models.get(model)
        if spec is None or spec.lifecycle.retired(self.today):
            raise ApiError(404, _not_found(match, model))
        _validate_labels(payload.get("labels"))
        prompt, image, inputs = _split_contents(payload.get("contents"))
        if inputs > spec.max_input_images:
            raise ApiError(
                400,
                f"Too many input images: {inputs} were provided, at most "
                f"{spec.max_input_images} are supported for model {model}.",
            )
        usage = {
            "promptTokenCount": 258 + len(prompt) // 4,
            "candidatesTokenCount": 1290,
            "totalTokenCount": 1548 + len(prompt) // 4,
        }
        lowered = prompt.lower()
        if any(s.lower() in lowered for s in self.blocked_prompt_substrings):
            return {
                "promptFeedback": {
                    "blockReason": "PROHIBITED_CONTENT",
                    "blockReasonMessage": "The prompt was blocked due to prohibited content.",
                },
                "usageMetadata": {**usage, "candidatesTokenCount": 0},
                "modelVersion": model,
            }
        if any(s.lower() in lowered for s in self.image_safety_substrings):
            return {
                "candidates": [
                    {
                        "finishReason": "IMAGE_SAFETY",
                        "finishMessage": "Unable to show the generated image. The image was "
                        "filtered out because it violated Google's Generative AI Prohibited "
                        "Use policy.",
                        "index": 0,
                    }
                ],
                "usageMetadata": usage,
                "modelVersion": model,
            }
        responder = self.image_responder or _gray_backdrop
        generated = responder(prompt, image)
        return {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"text": "Here is the image on a neutral gray background."},
                            {
                                "inlineData": {
                                    "mimeType": "image/png",
                                    "data": base64.b64encode(generated).decode("ascii"),
                                }
                            },
                        ],
                    },
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": uuid.uuid4().hex[:22],
        }

    def _take_fault(self, endpoint: Endpoint) -> FaultKind | None:
        """Raise the next scripted or random fault; ``drop_after_accept`` is returned instead."""
        with self._lock:
            plan = self._faults[endpoint]
            if plan.scripted:
                kind: FaultKind | None = plan.scripted.popleft()
            elif plan.rate and self._randoms[endpoint].random() < plan.rate:
                kind = self._randoms[endpoint].choice(plan.kinds)
            else:
                kind = None
        if kind is None:
            return None
        if kind == "drop_after_accept" and endpoint == "submit":
            return kind
        if kind in ("drop", "drop_after_accept"):
            raise _Drop
        code = int(kind)
        if code == 429:
            raise ApiError(
                429,
                "Quota exceeded for aiplatform.googleapis.com/"
                "online_prediction_requests_per_base_model. Please submit a quota increase "
                "request. https://cloud.google.com/vertex-ai/docs/generative-ai/quotas-genai.",
            )
        if code == 503:
            raise ApiError(503, "The service is currently unavailable.")
        raise ApiError(500, "Internal error encountered.")


def _check_endpoint(endpoint: str) -> None:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; choose from {ENDPOINTS}")


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"Invalid JSON payload received. {exc}") from exc
    if not isinstance(payload, dict):
        raise ApiError(400, "Invalid JSON payload received. Expected an object.")
    return payload


def _b64decode(text: str) -> bytes:
    """Standard or URL-safe base64: the SDK sends inlineData URL-safe, image bytes standard."""
    cleaned = text.strip().translate(str.maketrans("-_", "+/"))
    return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)


def _image_bytes(image: Any) -> bytes | None:
    if not isinstance(image, dict) or not image.get("bytesBase64Encoded"):
        return None
    try:
        return _b64decode(str(image["bytesBase64Encoded"]))
    except (binascii.Error, ValueError):
        return None


def _check_image(field_name: str, image: Any) -> None:
    if not isinstance(image, dict):
        raise ApiError(400, f"Invalid value at '{field_name}': an image object is required.")
    if image.get("gcsUri"):
        return
    data = _image_bytes(image)
    if data is None:
        raise ApiError(400, f"Invalid value at '{field_name}.bytes_base64_encoded'.")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ApiError(400, f"Unable to decode the image in '{field_name}'.") from exc
    if not image.get("mimeType"):
        raise ApiError(400, f"'{field_name}.mimeType' is required for inline image bytes.")


def _not_found(match: re.Match[str], model: str) -> str:
    return (
        f"Publisher Model `projects/{match['project']}/locations/{match['location']}"
        f"/publishers/google/models/{model}` was not found or your project does not "
        "have access to it. Please ensure you are using a valid model version."
    )


def _validate_labels(labels: Any) -> None:
    """Google's label rules, as Vertex enforces them on the request's top-level ``labels``."""
    if labels is None:
        return
    if not isinstance(labels, dict):
        raise ApiError(400, "Invalid value at 'labels': a map of strings is required.")
    problems = label_problems({str(k): v for k, v in labels.items()})
    if problems:
        raise ApiError(400, "Invalid labels: " + "; ".join(problems))


def _validate_video_request(spec: VideoModel, instance: Any, parameters: Mapping[str, Any]) -> None:
    """The model rules Veo enforces before any generation (so nothing is billed), as the model
    catalog states them."""
    model = spec.id
    if not isinstance(instance, dict):
        raise ApiError(400, "Invalid value at 'instances[0]': an object is required.")
    has_image = instance.get("image") is not None
    has_last = instance.get("lastFrame") is not None
    references = instance.get("referenceImages") or []
    if not instance.get("prompt") and not has_image:
        raise ApiError(400, "A text prompt or an input image is required.")
    for field_name in ("image", "lastFrame"):
        if instance.get(field_name) is not None:
            _check_image(f"instances[0].{field_name}", instance[field_name])
    duration = parameters.get("durationSeconds")
    if duration is not None and duration not in spec.durations:
        allowed = ", ".join(str(d) for d in spec.durations)
        raise ApiError(
            400,
            f"Unsupported duration {duration} seconds for model {model}. "
            f"Supported durations: {allowed}.",
        )
    aspect = parameters.get("aspectRatio")
    if aspect is not None and aspect not in spec.aspect_ratios:
        allowed = ", ".join(spec.aspect_ratios)
        raise ApiError(400, f"Unsupported aspect ratio {aspect}. Supported: {allowed}.")
    resolution = parameters.get("resolution")
    if resolution is not None and resolution not in spec.resolutions:
        allowed = ", ".join(spec.resolutions)
        raise ApiError(
            400, f"Unsupported resolution {resolution} for model {model}. Supported: {allowed}."
        )
    samples = parameters.get("sampleCount")
    if samples is not None and not 1 <= int(samples) <= spec.max_samples:
        raise ApiError(400, f"sampleCount must be between 1 and {spec.max_samples}, got {samples}.")
    seed = parameters.get("seed")
    if seed is not None and (not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise ApiError(400, f"seed must be an integer between 0 and {MAX_SEED}, got {seed}.")
    audio = parameters.get("generateAudio")
    if audio is True and not spec.audio:
        raise ApiError(400, f"generateAudio is not supported by model {model}.")
    if audio is False and spec.audio and not spec.audio_optional:
        raise ApiError(400, f"Model {model} always generates audio; generateAudio must be true.")
    fixed = resolution and spec.resolution_durations.get(resolution)
    if fixed and duration is not None and duration != fixed:
        raise ApiError(
            400, f"Duration must be {fixed} seconds at resolution {resolution}; got {duration}."
        )
    if has_last and not spec.last_frame:
        raise ApiError(400, f"lastFrame is not supported by model {model}.")
    if has_last and not has_image:
        raise ApiError(400, "lastFrame requires a first frame (image) to be set.")
    if not references:
        return
    if not spec.supports_references:
        raise ApiError(400, f"Reference images are not supported by model {model}.")
    if not isinstance(references, list):
        raise ApiError(400, "Invalid value at 'instances[0].reference_images'.")
    if len(references) > spec.max_reference_images:
        raise ApiError(
            400,
            f"Too many reference images: {len(references)} were provided, "
            f"at most {spec.max_reference_images} are supported for model {model}.",
        )
    if has_image and not spec.frames_with_references:
        raise ApiError(400, "First Frame and Reference Images cannot be both set.")
    if has_last and not spec.frames_with_references:
        raise ApiError(400, "Last Frame and Reference Images cannot be both set.")
    for index, reference in enumerate(references):
        if not isinstance(reference, dict):
            raise ApiError(400, f"Invalid value at 'instances[0].reference_images[{index}]'.")
        ref_type = str(reference.get("referenceType") or "").lower()
        if ref_type not in spec.reference_types:
            allowed = ", ".join(spec.reference_types)
            raise ApiError(
                400,
                f"Reference type '{reference.get('referenceType')}' is not supported for "
                f"model {model}. Supported reference types: {allowed}.",
            )
        _check_image(f"instances[0].reference_images[{index}].image", reference.get("image"))
    required = spec.reference_duration
    if required is not None and (duration or required) != required:
        raise ApiError(
            400,
            f"Duration must be {required} seconds when reference images are "
            f"provided; got {duration}.",
        )


def _split_contents(contents: Any) -> tuple[str, bytes | None, int]:
    """The joined text, the first inline image and the number of inline images of a
    generateContent request."""
    texts: list[str] = []
    image: bytes | None = None
    count = 0
    for content in contents if isinstance(contents, list) else []:
        for part in (content or {}).get("parts") or []:
            if "text" in part:
                texts.append(str(part["text"]))
            inline = part.get("inlineData")
            if isinstance(inline, dict) and inline.get("data"):
                count += 1
                try:
                    data = _b64decode(str(inline["data"]))
                except (binascii.Error, ValueError) as exc:
                    raise ApiError(400, "Invalid inline data in contents.") from exc
                image = image if image is not None else data
    return "\n".join(texts), image, count


def _gray_backdrop(prompt: str, image: bytes | None) -> bytes:
    """Default image answer: the input, shrunk slightly, on #808080 (like a Tier 3 clean sheet)."""
    if image is None:
        return png_bytes(Image.new("RGB", (256, 256), (128, 128, 128)))
    try:
        source = Image.open(io.BytesIO(image))
        source.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ApiError(400, "Unable to process the input image.") from exc
    rgba = source.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (128, 128, 128))
    inner = rgba.resize((max(1, rgba.width * 9 // 10), max(1, rgba.height * 9 // 10)))
    canvas.paste(inner, ((rgba.width - inner.width) // 2, (rgba.height - inner.height) // 2), inner)
    return png_bytes(canvas)


@dataclass
class _Reply:
    status: int
    body: dict[str, Any] | bytes
    content_type: str = "application/json; charset=UTF-8"


class _Server(ThreadingHTTPServer):
    """Tracks open connections so stop() can close keep-alive sockets the client still holds."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # many scenes connect at once; a short backlog costs 1 s SYN retries

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], emulator: VertexEmulator
    ) -> None:
        self.emulator = emulator
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Dropped and reset connections are part of the emulator's job (fault injection, clients
        closing keep-alive sockets): log them instead of printing tracebacks to stderr."""
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "VertexEmulator/1.0"
    timeout = 30
    server: _Server

    def do_GET(self) -> None:
        self._respond("GET")

    def do_POST(self) -> None:
        self._respond("POST")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read counters, not access logs."""

    def _respond(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        path = self.path.split("?", 1)[0]
        try:
            reply = self.server.emulator._dispatch(method, path, headers, body)
        except _Drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        except Exception as exc:  # an emulator bug must look like a 500, not a dropped socket
            reply = _Reply(500, ApiError(500, f"Emulator error: {exc!r}").body())
        payload = (
            reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode("utf-8")
        )
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator in the foreground until interrupted."""
    parser = argparse.ArgumentParser(
        prog="vertex-emulator", description="Loopback Vertex AI emulator (Veo + Gemini image)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8085, help="port to listen on")
    parser.add_argument("--latency", type=float, default=2.0, help="seconds until a video is done")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="fraction of submits/polls")
    parser.add_argument(
        "--fault-kind", action="append", choices=FAULT_KINDS, help="kinds to inject (repeatable)"
    )
    parser.add_argument(
        "--rai-substring",
        action="append",
        default=[],
        help="filter the video of prompts containing this (RAI, unbilled; repeatable)",
    )
    parser.add_argument(
        "--category-substring",
        action="append",
        default=[],
        metavar="TEXT=CATEGORY",
        help="filter videos whose prompt contains TEXT with CATEGORY's support code "
        "(a safety category of the model catalog, e.g. child, violence)",
    )
    parser.add_argument(
        "--audio-substring", action="append", default=[], help="the audio filter blocks these once"
    )
    parser.add_argument(
        "--block-substring", action="append", default=[], help="refuse prompts (video and image)"
    )
    parser.add_argument("--serve-uri", action="store_true", help="return videos by URL")
    parser.add_argument("--no-auth", action="store_true", help="accept requests without a token")
    parser.add_argument("--video-height", type=int, default=360, help="height of the mp4s")
    parser.add_argument("--video-fps", type=int, default=12, help="frame rate of the mp4s")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault injection")
    args = parser.parse_args(argv)
    categories = {}
    for item in args.category_substring:
        text, _, category = item.partition("=")
        if not text or not category:
            parser.error(f"--category-substring {item!r}: write TEXT=CATEGORY, e.g. kid=child")
        categories[text] = category
    kinds = tuple(args.fault_kind or ("429",))
    emulator = VertexEmulator(
        host=args.host,
        port=args.port,
        latency_s=args.latency,
        fault_rates={"submit": args.fault_rate, "poll": args.fault_rate},
        fault_kinds=kinds,
        rai_filter_substrings=args.rai_substring,
        category_substrings=categories,
        audio_filter_substrings=args.audio_substring,
        blocked_prompt_substrings=args.block_substring,
        submit_blocked_substrings=args.block_substring,
        serve_video_uri=args.serve_uri,
        require_auth=not args.no_auth,
        video_height=args.video_height,
        video_fps=args.video_fps,
        seed=args.seed,
    )
    # Stop on SIGTERM and Ctrl-C even when started by a process that ignores them (a child
    # inherits ignored signals, and Python then installs no SIGINT handler of its own).
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    with emulator:
        print(f"Vertex emulator listening on {emulator.base_url} (Ctrl-C to stop)", flush=True)
        print(f"  use emulator_host={emulator.address!r} with make_genai_client", flush=True)
        stopped.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
