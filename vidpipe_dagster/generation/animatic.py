"""The local preview backend: a labelled animatic instead of a paid Veo call.

It implements ``generation.client.VideoClient`` so the whole pipeline (ledger, probe, final cut,
UI previews) runs offline on real mp4 files; ``domain.preview`` says how it is labelled.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import OrderedDict
from typing import ClassVar

from vidpipe_dagster.domain.preview import PREVIEW_BACKEND
from vidpipe_dagster.domain.render import render_animatic
from vidpipe_dagster.domain.video_requests import (
    DEFAULT_RESOLUTION,
    RESOLUTION_LINES,
    VideoRequest,
)
from vidpipe_dagster.generation.client import GeneratedVideo, GenerationApiError, OperationResult


class AnimaticVideoClient:
    """Local preview backend: renders a labelled animatic instead of calling Veo.

    Results are shared by all instances in this process (a resource may hand out a new client per
    call), but not across processes: there, poll answers ``not_found`` and the caller renders
    again, which costs nothing. The newest ``MAX_KEPT`` results are kept.

    Resolution scales the preview: ``height`` lines at 720p, proportionally more at 1080p and 4k
    (at most ``max_height``). A request for several takes returns that many videos, each the same
    labelled render (a preview has nothing to vary between takes).
    """

    backend = PREVIEW_BACKEND
    is_preview = True
    MAX_KEPT = 256

    _store: ClassVar[OrderedDict[str, tuple[bytes, int, float]]] = OrderedDict()
    _store_lock: ClassVar[threading.Lock] = threading.Lock()
    _counter: ClassVar[itertools.count[int]] = itertools.count(1)

    def __init__(
        self,
        render_latency_s: float = 0.0,
        *,
        fps: int = 12,
        height: int = 360,
        max_height: int = 1080,
    ) -> None:
        self.render_latency_s = render_latency_s
        self.fps = fps
        self.height = height
        self.max_height = max_height

    def height_for(self, resolution: str) -> int:
        """Preview lines for a requested resolution (even, as H.264 needs)."""
        base = RESOLUTION_LINES[DEFAULT_RESOLUTION]
        lines = RESOLUTION_LINES.get(resolution, base)
        height = min(self.max_height, round(self.height * lines / base))
        return max(2, height - height % 2)

    async def submit(self, request: VideoRequest) -> str:
        tags = list(request.reference_tags)
        references = [
            (tags[i] if i < len(tags) else ref.label, ref.data)
            for i, ref in enumerate(request.reference_images)
        ]
        # frames mode sends the keyframes; references mode keeps them only for previews
        storyboard = request.storyboard_frames
        start = request.first_frame or (storyboard[0] if storyboard else None)
        end = request.last_frame or (storyboard[1] if len(storyboard) > 1 else None)
        if request.aspect_ratio not in ("16:9", "9:16"):
            raise GenerationApiError("rejected", f"unsupported aspect ratio {request.aspect_ratio}")
        if request.resolution not in RESOLUTION_LINES:
            raise GenerationApiError("rejected", f"unsupported resolution {request.resolution}")
        try:
            data = await asyncio.to_thread(
                render_animatic,
                start_frame=start.data if start else None,
                end_frame=end.data if end else None,
                references=references,
                prompt=request.prompt,
                duration_seconds=request.duration_seconds,
                aspect_ratio="9:16" if request.aspect_ratio == "9:16" else "16:9",
                fps=self.fps,
                height=self.height_for(request.resolution),
            )
        except ValueError as exc:
            raise GenerationApiError("rejected", f"animatic render refused: {exc}") from exc
        with self._store_lock:
            name = f"animatic/{request.fingerprint}/{next(self._counter)}"
            takes = max(1, request.takes)
            self._store[name] = (data, takes, time.monotonic() + self.render_latency_s)
            while len(self._store) > self.MAX_KEPT:
                self._store.popitem(last=False)
        return name

    async def poll(self, operation_name: str) -> OperationResult:
        with self._store_lock:
            entry = self._store.get(operation_name)
        if entry is None:
            raise GenerationApiError(
                "not_found", f"animatic operation {operation_name} is not in this process"
            )
        data, takes, ready_at = entry
        if time.monotonic() < ready_at:
            return OperationResult(name=operation_name, done=False)
        return OperationResult(
            name=operation_name,
            done=True,
            video_bytes=data,
            more_videos=tuple(GeneratedVideo(video_bytes=data) for _ in range(takes - 1)),
        )

    async def fetch_video(self, result: OperationResult) -> bytes:
        if result.video_bytes:
            return result.video_bytes
        with self._store_lock:
            entry = self._store.get(result.name)
        if entry is None:
            raise GenerationApiError("not_found", f"no animatic for operation {result.name}")
        return entry[0]
