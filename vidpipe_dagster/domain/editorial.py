"""The final cut: scene clips joined into one mp4 on disk, by stream copy whenever they allow it.

One Veo model at one resolution returns clips with the same codec, size, frame rate and sound, so
the normal cut is a remux: packets are copied with shifted timestamps (no decode, no re-encode),
the film keeps the clips' exact quality and costs about as much as copying the files. Clips that
differ (an animatic among Veo clips, a 1080p retake among 720p ones) are decoded and encoded once,
at the largest clip's size or a configured larger one, never smaller. Either way the film is
written as it goes to a temporary file beside the target and renamed into place, scene boundaries
are mp4 chapters, and a cut that contains an animatic keeps the preview label in its container
metadata (``domain.preview.CONTAINER_TAG``).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
from av.video.frame import PictureType
from PIL import Image, ImageDraw

from vidpipe_dagster.domain.preview import CONTAINER_TAG
from vidpipe_dagster.domain.render import (
    AspectRatio,
    add_h264_stream,
    drawable,
    even,
    frame_size,
    label_font,
    open_media,
)

CutMode = Literal["stream_copy", "reencode"]

AUDIO_RATE = 48_000  # what a re-encoded cut's sound is resampled to (Veo's own rate)
REENCODE_CRF = 18  # near-transparent H.264 for delivery; the animatic's 26 is for previews
CHAPTER_TIME_BASE = Fraction(1, 1000)
CONTACT_TILE_WIDTH = 320  # px per scene on the contact sheet written to disk
# PyAV's open decodes a clip's first frames to fill in codec details (about 20 ms for a 720p
# clip, far more than copying its packets). Telling that probe to skip every frame leaves only the
# pixel format unknown, which H.264's configuration record (compared as ``extradata``) fixes
# anyway. A remux takes its codec parameters from the first clip, opened in full.
_PACKETS_ONLY = {"skip_frame": "all"}
_PREVIEW_ACCENT = (255, 196, 0)  # the animatic's label colour


@dataclass(frozen=True)
class VideoLayout:
    """What must match for video packets to be copied into one mp4 track."""

    codec: str
    profile: str | None
    width: int
    height: int
    rate: Fraction
    extradata: bytes  # H.264's SPS/PPS (chroma format, bit depth...): one set per mp4 track

    def describe(self) -> str:
        return f"{self.codec} {self.width}x{self.height} {fps_text(self.rate)} fps"


@dataclass(frozen=True)
class AudioLayout:
    """What must match for sound packets to be copied into one mp4 track."""

    codec: str
    sample_rate: int
    layout: str
    extradata: bytes

    def describe(self) -> str:
        return f"{self.codec} {self.layout} {self.sample_rate / 1000:g} kHz"


@dataclass(frozen=True)
class ClipMedia:
    """A scene's clip as the file says it is (headers only: nothing is decoded)."""

    path: Path
    duration: Fraction  # seconds of picture: the scene's length in a stream-copied cut
    video: VideoLayout
    audio: AudioLayout | None
    is_animatic: bool

    @property
    def duration_seconds(self) -> float:
        return float(self.duration)

    def describe(self) -> str:
        sound = self.audio.describe() if self.audio else "no sound"
        return f"{self.video.describe()}, {sound}"


@dataclass(frozen=True)
class CutPlan:
    """How the clips become one film, and the one line that tells a person why."""

    mode: CutMode
    reason: str
    width: int
    height: int
    rate: Fraction
    audio: bool


@dataclass(frozen=True)
class CutResult:
    """The film on disk: where it is, how it was made and where each scene starts."""

    path: Path
    plan: CutPlan
    starts: tuple[float, ...]  # seconds, one per clip
    durations: tuple[float, ...]
    contains_animatic: bool

    @property
    def duration_seconds(self) -> float:
        return round(self.starts[-1] + self.durations[-1], 6) if self.starts else 0.0


def fps_text(rate: Fraction) -> str:
    """24, 12 or 29.97: a frame rate as people write it."""
    return f"{float(rate):.3f}".rstrip("0").rstrip(".")


def inspect_clip(path: Path) -> ClipMedia:
    """Read a clip's layout and length from its headers; ValueError naming the file otherwise.

    Nothing is decoded (see ``_PACKETS_ONLY``): the layout comes from the mp4 header and the
    codec's own configuration record, which is what a stream copy depends on.
    """
    try:
        with av.open(str(path), options=_PACKETS_ONLY) as container:
            if "mp4" not in (container.format.name or ""):
                raise ValueError(f"{path} is not an mp4 file (format {container.format.name})")
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            context = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate:
                raise ValueError(f"{path} has no frame rate")
            if stream.duration and stream.time_base:
                duration = Fraction(stream.duration) * stream.time_base
            elif container.duration:
                duration = Fraction(container.duration, av.time_base)
            else:
                raise ValueError(f"{path} has no duration")
            video = VideoLayout(
                codec=context.name,
                profile=context.profile,
                width=context.width,
                height=context.height,
                rate=Fraction(rate),
                extradata=bytes(context.extradata or b""),
            )
            audio = None
            if container.streams.audio:
                sound = container.streams.audio[0].codec_context
                audio = AudioLayout(
                    codec=sound.name,
                    sample_rate=sound.sample_rate,
                    layout=sound.layout.name,
                    extradata=bytes(sound.extradata or b""),
                )
            tags = container.metadata
            labels = f"{tags.get('title', '')} {tags.get('comment', '')}"
            return ClipMedia(
                path=Path(path),
                duration=duration,
                video=video,
                audio=audio,
                is_animatic=CONTAINER_TAG in labels.lower(),
            )
    except (av.FFmpegError, OSError, IndexError) as exc:  # FFmpegError is a ValueError too
        raise ValueError(f"{path} is not a readable mp4: {exc}") from exc


def plan_cut(
    clips: Sequence[ClipMedia],
    names: Sequence[str] | None = None,
    *,
    aspect_ratio: AspectRatio = "16:9",
    height: int | None = None,
    force_reencode: bool = False,
) -> CutPlan:
    """Stream copy when every clip matches the first; otherwise one re-encode, never smaller.

    ``names`` label the clips in the reason ("scene 3"); ``height`` is a configured short side
    for a re-encode, used only when it is at least the largest clip's (a cut never loses detail).
    """
    if not clips:
        raise ValueError("a cut needs at least one clip")
    names = list(names) if names is not None else [f"clip {i}" for i in range(len(clips))]
    first = clips[0]
    difference = "re-encode requested" if force_reencode else _first_difference(clips, names)
    if difference is None:
        count = f"{len(clips)} clip" + ("s" if len(clips) != 1 else "")
        return CutPlan(
            mode="stream_copy",
            reason=f"stream copy: {count}, {first.describe()}",
            width=first.video.width,
            height=first.video.height,
            rate=first.video.rate,
            audio=first.audio is not None,
        )
    return _reencode_plan(clips, difference, aspect_ratio, height)


def cut_film(
    clips: Sequence[ClipMedia],
    target: Path,
    *,
    titles: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    aspect_ratio: AspectRatio = "16:9",
    height: int | None = None,
    force_reencode: bool = False,
) -> CutResult:
    """Join ``clips`` in order into ``target``, with one chapter per clip (``titles``).

    Written to a temporary file beside ``target`` and renamed into place, so a reader never sees a
    half-written film and a failed cut leaves the previous one untouched. A stream copy the muxer
    refuses (timestamps no player could follow) falls back to a re-encode and says so.
    """
    plan = plan_cut(
        clips, names, aspect_ratio=aspect_ratio, height=height, force_reencode=force_reencode
    )
    titles = list(titles) if titles is not None else [f"Scene {i}" for i in range(len(clips))]
    if len(titles) != len(clips):
        raise ValueError(f"{len(titles)} chapter titles for {len(clips)} clips")
    if plan.mode == "stream_copy":
        try:
            return _write(clips, target, titles, plan)
        except av.FFmpegError as exc:
            why = f"stream copy failed ({exc})"
            return _write(clips, target, titles, _reencode_plan(clips, why, aspect_ratio, height))
    return _write(clips, target, titles, plan)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target`` that replaces it on success and is removed otherwise."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        yield temporary
        if temporary.is_file():
            with temporary.open("rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def contact_sheet(
    tiles: Sequence[tuple[str, Image.Image, bool]],
    *,
    columns: int | None = None,
    tile_width: int = CONTACT_TILE_WIDTH,
) -> Image.Image:
    """One labelled frame per scene in a grid; ``(label, frame, preview)`` per tile.

    Preview tiles get the animatic's amber frame and a "PREVIEW" badge, so a sheet of mixed scenes
    shows at a glance which ones are local renders, not Veo output.
    """
    if not tiles:
        raise ValueError("a contact sheet needs at least one frame")
    columns = columns or min(len(tiles), 4 if len(tiles) <= 12 else 6)
    gap, border = 6, max(2, tile_width // 80)
    first = tiles[0][1]
    picture_h = even(tile_width * first.height / first.width)
    caption_h = max(16, tile_width // 9)
    font = label_font(round(caption_h * 0.7))
    rows = -(-len(tiles) // columns)
    tile_h = picture_h + caption_h
    sheet = Image.new(
        "RGB",
        (columns * tile_width + (columns + 1) * gap, rows * tile_h + (rows + 1) * gap),
        (24, 24, 28),
    )
    draw = ImageDraw.Draw(sheet)
    for index, (label, frame, preview) in enumerate(tiles):
        x = gap + (index % columns) * (tile_width + gap)
        y = gap + (index // columns) * (tile_h + gap)
        picture = frame.convert("RGB")
        picture.thumbnail((tile_width, picture_h), Image.Resampling.BILINEAR)
        offset = (x + (tile_width - picture.width) // 2, y + (picture_h - picture.height) // 2)
        draw.rectangle((x, y, x + tile_width - 1, y + picture_h - 1), fill=(0, 0, 0))
        sheet.paste(picture, offset)
        if preview:
            draw.rectangle(
                (x, y, x + tile_width - 1, y + picture_h - 1), outline=_PREVIEW_ACCENT, width=border
            )
        middle = y + picture_h + caption_h // 2
        caption = drawable(label, font)
        draw.text((x + 4, middle), caption, font=font, fill=(240, 240, 240), anchor="lm")
        if preview:
            badge = drawable("PREVIEW", font)
            draw.text(
                (x + tile_width - 4, middle), badge, font=font, fill=_PREVIEW_ACCENT, anchor="rm"
            )
    return sheet


def _first_difference(clips: Sequence[ClipMedia], names: Sequence[str]) -> str | None:
    """Why the clips cannot share one track, naming the first clip that differs; None if none."""
    base, base_name = clips[0], names[0]
    for clip, name in zip(clips[1:], names[1:], strict=True):
        a, b = base.video, clip.video
        if b.codec != a.codec:
            return f"{name} is {b.codec}, {base_name} {a.codec}"
        if (b.width, b.height) != (a.width, a.height):
            return f"{name} is {b.width}x{b.height}, {base_name} {a.width}x{a.height}"
        if b.rate != a.rate:
            return f"{name} is {fps_text(b.rate)} fps, {base_name} {fps_text(a.rate)} fps"
        if (b.profile, b.extradata) != (a.profile, a.extradata):
            return f"{name}'s {b.codec} encoder settings differ from {base_name}'s"
        if (base.audio is None) != (clip.audio is None):
            return f"{name if clip.audio is None else base_name} has no sound"
        if base.audio is not None and clip.audio is not None and base.audio != clip.audio:
            return (
                f"{name}'s sound is {clip.audio.describe()}, {base_name}'s {base.audio.describe()}"
            )
    return None


def _reencode_plan(
    clips: Sequence[ClipMedia], why: str, aspect_ratio: AspectRatio, height: int | None
) -> CutPlan:
    """One re-encode at the largest clip's short side (or ``height`` when larger) and the highest
    frame rate, in the project's aspect ratio; ``why`` ends the reason."""
    short = max(min(c.video.width, c.video.height) for c in clips)
    note = ""
    if height is not None and height >= short:
        short = height
    elif height is not None:
        note = f" (configured {height}p is below the largest clip's {short}p: kept {short}p)"
    width, out_h = frame_size(aspect_ratio, short)
    rate = max(c.video.rate for c in clips)
    return CutPlan(
        mode="reencode",
        reason=f"re-encoded at {width}x{out_h} {fps_text(rate)} fps: {why}{note}",
        width=width,
        height=out_h,
        rate=rate,
        audio=any(c.audio is not None for c in clips),
    )


def _write(
    clips: Sequence[ClipMedia], target: Path, titles: Sequence[str], plan: CutPlan
) -> CutResult:
    if plan.mode == "stream_copy":
        lengths = [clip.duration for clip in clips]
    else:  # whole frames at the output rate
        lengths = [Fraction(max(1, round(c.duration * plan.rate))) / plan.rate for c in clips]
    starts = [sum(lengths[:i], Fraction(0)) for i in range(len(lengths))]
    animatic = any(clip.is_animatic for clip in clips)
    with atomic_path(target) as temporary, av.open(str(temporary), "w", format="mp4") as out:
        if animatic:  # a cut with previews stays labelled
            out.metadata["title"] = CONTAINER_TAG
            out.metadata["comment"] = f"{CONTAINER_TAG}: contains local renders"
        out.set_chapters(
            [
                {
                    "id": index + 1,
                    "start": round(start / CHAPTER_TIME_BASE),
                    "end": round((start + length) / CHAPTER_TIME_BASE),
                    "time_base": CHAPTER_TIME_BASE,
                    "metadata": {"title": title},
                }
                for index, (start, length, title) in enumerate(
                    zip(starts, lengths, titles, strict=True)
                )
            ]
        )
        if plan.mode == "stream_copy":
            _remux(out, clips, starts)
        else:
            _reencode(out, clips, plan, lengths)
    return CutResult(
        path=target,
        plan=plan,
        starts=tuple(round(float(s), 6) for s in starts),
        durations=tuple(round(float(length), 6) for length in lengths),
        contains_animatic=animatic,
    )


def _remux(
    out: av.container.OutputContainer, clips: Sequence[ClipMedia], starts: Sequence[Fraction]
) -> None:
    """Copy every packet, shifted to its scene's start: no decode, no encode.

    Sound is trimmed to the picture: an AAC clip carries a priming frame before its start and
    often a padded frame after its end. The first clip keeps its priming (the mp4 edit list hides
    it); later clips drop it, because it would overlap the previous scene, and drop frames that
    start after their own picture ends. At each boundary the sound is therefore exact to one AAC
    frame (21 ms at 48 kHz).
    """
    with open_media(clips[0].path) as first:
        video_out = out.add_stream_from_template(first.streams.video[0])
        audio_out = (
            out.add_stream_from_template(first.streams.audio[0]) if first.streams.audio else None
        )
    # Per packet only integer arithmetic: shifts and windows are worked out once per clip.
    audio_floor: tuple[int, Fraction] | None = None  # last sound dts written, and its time base
    for index, (clip, start) in enumerate(zip(clips, starts, strict=True)):
        with av.open(str(clip.path), options=_PACKETS_ONLY) as source:
            video_in = source.streams.video[0]
            video_index = video_in.index
            video_shift = round(start / video_in.time_base) - (video_in.start_time or 0)
            streams = [video_in]
            audio_shift = audio_origin = audio_end = 0
            floor: int | None = None
            if audio_out is not None:
                audio_in = source.streams.audio[0]
                streams.append(audio_in)
                base = audio_in.time_base
                audio_origin = audio_in.start_time or 0
                audio_shift = round(start / base) - audio_origin
                audio_end = audio_origin + math.ceil(clip.duration / base)
                if audio_floor is not None:
                    floor = math.floor(audio_floor[0] * audio_floor[1] / base)
            for packet in source.demux(streams):
                dts = packet.dts
                if dts is None:
                    continue  # the demuxer's end-of-stream marker
                if packet.stream_index == video_index:
                    if packet.pts is not None:
                        packet.pts += video_shift
                    packet.dts = dts + video_shift
                    packet.stream = video_out
                else:
                    pts = dts if packet.pts is None else packet.pts
                    if (index and pts < audio_origin) or pts >= audio_end:
                        continue
                    shifted = dts + audio_shift
                    if floor is not None and shifted <= floor:
                        continue
                    floor = shifted
                    packet.pts = pts + audio_shift
                    packet.dts = shifted
                    packet.stream = audio_out
                out.mux_one(packet)
            if floor is not None:
                audio_floor = (floor, source.streams.audio[0].time_base)


def _reencode(
    out: av.container.OutputContainer,
    clips: Sequence[ClipMedia],
    plan: CutPlan,
    lengths: Sequence[Fraction],
) -> None:
    """Decode each clip once and encode the film at the plan's size and rate, frame by frame.

    Frames already at the output size go to the encoder as decoded (no colour conversion);
    others are scaled, and letterboxed when their shape differs. Sound follows the picture frame
    by frame, resampled to 48 kHz stereo, with silence for a clip that has none, so memory holds
    a few frames, never a clip.
    """
    video = add_h264_stream(out, plan.width, plan.height, plan.rate, crf=REENCODE_CRF)
    sound = _SoundTrack(out) if plan.audio else None
    frame_base = 1 / plan.rate
    pts = 0
    for clip, length in zip(clips, lengths, strict=True):
        wanted = round(length * plan.rate)
        source = _ClipSound(clip.path) if sound is not None and clip.audio else None
        try:
            for frame in _frames_at_rate(clip.path, wanted, plan):
                frame.pts = pts
                frame.time_base = frame_base
                frame.pict_type = PictureType.NONE  # let the encoder choose its own GOP
                out.mux(video.encode(frame))
                pts += 1
                if sound is not None:
                    sound.fill_to(round(pts * frame_base * AUDIO_RATE), source)
        finally:
            if source is not None:
                source.close()
    out.mux(video.encode(None))
    if sound is not None:
        sound.finish()


def _frames_at_rate(path: Path, wanted: int, plan: CutPlan) -> Iterator[av.VideoFrame]:
    """Exactly ``wanted`` frames at the output size, sampled from the clip at the output rate
    (a frame is held or skipped when the clip's own rate differs)."""
    emitted = 0
    current: av.VideoFrame | None = None
    fitted: av.VideoFrame | None = None
    first_time: float | None = None
    with open_media(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            time = frame.time or 0.0
            first_time = time if first_time is None else first_time
            # Emit the previous frame for every output instant before this frame starts.
            while emitted < wanted and emitted / plan.rate < time - first_time - 1e-6:
                if fitted is None:
                    fitted = _fit(current or frame, plan.width, plan.height)
                yield fitted
                emitted += 1
            if emitted >= wanted:
                break
            current, fitted = frame, None
        while emitted < wanted and current is not None:
            if fitted is None:
                fitted = _fit(current, plan.width, plan.height)
            yield fitted
            emitted += 1


def _fit(frame: av.VideoFrame, width: int, height: int) -> av.VideoFrame:
    """The frame at ``width`` x ``height``: as is, scaled, or letterboxed in black."""
    if (frame.width, frame.height) == (width, height):
        return frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")
    scale = min(width / frame.width, height / frame.height)
    fit_w = min(width, even(frame.width * scale))
    fit_h = min(height, even(frame.height * scale))
    if (fit_w, fit_h) == (width, height):
        return frame.reformat(width=width, height=height, format="yuv420p")
    rgb = frame.reformat(width=fit_w, height=fit_h, format="rgb24").to_ndarray()
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = (height - fit_h) // 2, (width - fit_w) // 2
    canvas[top : top + fit_h, left : left + fit_w] = rgb
    return av.VideoFrame.from_ndarray(canvas, format="rgb24")


class _ClipSound:
    """A clip's sound as float32 stereo at 48 kHz, handed out in exact sample counts."""

    def __init__(self, path: Path) -> None:
        self._container = open_media(path)
        self._frames = self._decode()
        self._buffer = np.zeros((2, 0), np.float32)

    def _decode(self) -> Iterator[np.ndarray]:
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
        for frame in self._container.decode(self._container.streams.audio[0]):
            for out in resampler.resample(frame):
                yield out.to_ndarray()
        for out in resampler.resample(None):
            yield out.to_ndarray()

    def take(self, count: int) -> np.ndarray:
        """The next ``count`` samples; silence once the clip's sound has run out."""
        while self._buffer.shape[1] < count:
            chunk = next(self._frames, None)
            if chunk is None:
                pad = count - self._buffer.shape[1]
                self._buffer = np.pad(self._buffer, ((0, 0), (0, pad)))
                break
            self._buffer = np.concatenate([self._buffer, chunk.astype(np.float32)], axis=1)
        taken, self._buffer = self._buffer[:, :count], self._buffer[:, count:]
        return taken

    def close(self) -> None:
        self._container.close()


class _SoundTrack:
    """The cut's AAC track: filled up to a sample count as the picture advances."""

    def __init__(self, out: av.container.OutputContainer) -> None:
        self._out = out
        self._stream = out.add_stream("aac", rate=AUDIO_RATE)
        self._stream.layout = "stereo"
        self._pending = np.zeros((2, 0), np.float32)
        self._queued = 0  # samples handed to ``_pending`` so far
        self._pts = 0

    def fill_to(self, total: int, source: _ClipSound | None) -> None:
        count = total - self._queued
        if count <= 0:
            return
        chunk = source.take(count) if source is not None else np.zeros((2, count), np.float32)
        self._pending = np.concatenate([self._pending, chunk], axis=1)
        self._queued = total
        self._encode(flush=False)

    def finish(self) -> None:
        self._encode(flush=True)

    def _encode(self, *, flush: bool) -> None:
        size = self._stream.codec_context.frame_size or 1024
        while self._pending.shape[1] >= size or (flush and self._pending.shape[1]):
            chunk = self._pending[:, :size]
            if chunk.shape[1] < size:
                chunk = np.pad(chunk, ((0, 0), (0, size - chunk.shape[1])))
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(chunk), format="fltp", layout="stereo"
            )
            frame.sample_rate = AUDIO_RATE
            frame.pts = self._pts
            self._pts += size
            self._pending = self._pending[:, size:]
            self._out.mux(self._stream.encode(frame))
        if flush:
            self._out.mux(self._stream.encode(None))
