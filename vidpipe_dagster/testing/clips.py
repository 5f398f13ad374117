"""Veo-like mp4 files for tests and benches: H.264 (libx264's veryfast preset, as a generic
encoder leaves it) with an optional AAC tone, and pixels that move, written with PyAV."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def veo_like_clip(
    path: Path,
    seconds: float,
    size: tuple[int, int] = (320, 180),
    fps: int = 24,
    *,
    audio: bool = True,
    shade: int = 0,
    x264: dict[str, str] | None = None,
) -> Path:
    """Write an H.264 clip (and a 440 Hz AAC stereo tone at 48 kHz) to ``path``; returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        video.options = x264 or {"preset": "veryfast"}
        sound = container.add_stream("aac", rate=48_000) if audio else None
        if sound is not None:
            sound.layout = "stereo"
        ramp = np.linspace(0, 255, size[0], dtype=np.float32)
        for index in range(round(seconds * fps)):
            row = ((ramp + index * 9 + shade) % 256).astype(np.uint8)
            array = np.repeat(
                np.stack([row, row[::-1], np.full_like(row, shade)], -1)[None], size[1], 0
            )
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            total = round(seconds * 48_000)
            for start in range(0, total, 1024):
                t = (np.arange(start, start + 1024) / 48_000).astype(np.float32)
                tone = (np.sin(2 * np.pi * 440 * t) * 0.2).astype(np.float32)
                frame = av.AudioFrame.from_ndarray(
                    np.stack([tone, tone]), format="fltp", layout="stereo"
                )
                frame.sample_rate = 48_000
                frame.pts = start
                container.mux(sound.encode(frame))
            container.mux(sound.encode(None))
    return path
