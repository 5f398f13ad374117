"""A rerun whose clips are all done reads its scenes in a fixed number of queries, decodes no
keyframe its import already proved, and writes no clip row that did not change (issue 17)."""

from __future__ import annotations

import collections
import queue
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import event

from vidpipe_dagster.db.session import get_engine
from vidpipe_dagster.domain import media, previews
from vidpipe_dagster.domain.media import MediaError, read_image, sha256_bytes
from vidpipe_dagster.domain.render import render_animatic
from vidpipe_dagster.runner import materialize_project
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.scene_clip import ClipResult, settled_batch
from vidpipe_dagster.testing.vertex_emulator import VertexEmulator

FAST = {"poll_interval_seconds": 0.05, "backoff_base_seconds": 0.01, "requests_per_minute": 0}
STAGE = "vidpipe_dagster/stages/scene_clip.py"


@pytest.fixture
def emulator() -> Iterator[VertexEmulator]:
    with VertexEmulator(latency_s=0.05, video_height=90, video_fps=4) as emu:
        yield emu


def _clips(settings: Settings, instance: dg.DagsterInstance, partitions: list[str]) -> None:
    [report] = materialize_project(
        "spring-ad",
        ["clips"],
        partitions=partitions,
        instance=instance,
        settings=settings,
        asset_config={"scene_clip": FAST},
    )
    assert sorted(report.succeeded) == sorted(partitions) and not report.failed


class _Statements:
    """SQL sent to the project database from the clip stage's own code (not the engine's, not
    the identity scoring's), and every write to ``video_clips``."""

    def __init__(self, url: str) -> None:
        self.stage: list[str] = []
        self.clip_writes: list[str] = []
        self._engine = get_engine(url)
        event.listen(self._engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn, _cursor, statement: str, *_args) -> None:
        frames = traceback.extract_stack()
        innermost = next(
            (
                f.filename
                for f in reversed(frames)
                if "/vidpipe_dagster/" in f.filename and "/vidpipe_dagster/db/" not in f.filename
            ),
            "",
        )
        if innermost.endswith(STAGE):
            self.stage.append(statement)
        if statement.lstrip().upper().startswith(("UPDATE VIDEO_CLIPS", "INSERT INTO VIDEO_CLIPS")):
            self.clip_writes.append(statement)

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._seen)


def test_a_cached_rerun_reads_in_fixed_queries_decodes_no_keyframe_and_writes_nothing(
    settings: Settings,
    imported,
    instance: dg.DagsterInstance,
    emulator: VertexEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings.replace(vertex_emulator_host=emulator.address)
    imported()
    materialize_project("spring-ad", ["references"], instance=instance, settings=settings)
    _clips(settings, instance, ["0", "1"])
    _clips(settings, instance, ["0", "1"])  # the first rerun marks the clips reused (cached)
    submits = emulator.submit_count

    decoded: list[str] = []
    real_decode = media.decode_image

    def counting_decode(data: bytes, *, label: str = "image") -> Image.Image:
        decoded.append(label)
        return real_decode(data, label=label)

    monkeypatch.setattr(media, "decode_image", counting_decode)
    event_reads = _count_our_event_log_reads(instance, monkeypatch)
    counts, reads = {}, {}
    for scenes in (["0"], ["0", "1"]):
        statements = _Statements(settings.database_url)
        decoded.clear()
        event_reads.clear()
        try:
            _clips(settings, instance, scenes)
        finally:
            statements.close()
        counts[len(scenes)] = len(statements.stage)
        reads[len(scenes)] = collections.Counter(event_reads)
        assert statements.clip_writes == [], "an unchanged clip row was written again"
        assert not [label for label in decoded if "keyframe" in label], decoded
    # project, scenes with clips, keyframes, manifest, its assets, selections, primary sheets,
    # done and billed ledger rows: a fixed number, whatever the scene count
    assert counts[2] == counts[1] <= 10, counts
    # the inputs' versions: read once per run, not once per scene and input
    assert reads[2]["provenance"] == reads[1]["provenance"] > 0, reads
    assert emulator.submit_count == submits  # nothing paid


def _count_our_event_log_reads(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Reads of Dagster's event log made by this project's code (Dagster's own are not ours),
    named by the module that made them."""
    reads: list[str] = []
    storage = instance.event_log_storage
    for owner, name in (
        (instance, "fetch_materializations"),
        (instance, "fetch_observations"),
        (storage, "get_latest_storage_id_by_partition"),
        (storage, "get_latest_tags_by_partition"),
    ):
        real = getattr(owner, name)

        def counting(*args, _real=real, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if "/vidpipe_dagster/" in caller:
                reads.append(Path(caller).stem)
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counting)
    return reads


def test_read_image_trusts_only_the_hash_it_was_given(tmp_path: Path) -> None:
    image = tmp_path / "frame.png"
    Image.new("RGB", (32, 18), (200, 40, 40)).save(image)
    digest = sha256_bytes(image.read_bytes())
    vouched = read_image(image, label="start keyframe", known_sha256=digest)
    assert (vouched.decoded, vouched.mime_type, vouched.sha256) == (False, "image/png", digest)
    assert read_image(image, label="start keyframe", known_sha256="0" * 64).decoded
    image.write_bytes(image.read_bytes()[:-30])  # truncated after import: its hash changed
    with pytest.raises(MediaError, match="start keyframe"):
        read_image(image, label="start keyframe", known_sha256=digest)


def _animatic(color: tuple[int, int, int]) -> bytes:
    return render_animatic(
        start_frame=media.png_bytes(Image.new("RGB", (64, 36), color)),
        end_frame=None,
        references=[],
        prompt="p",
        duration_seconds=2,
        aspect_ratio="16:9",
        fps=4,
        height=36,
    )


def test_a_clips_preview_frames_are_decoded_once_per_version_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(_animatic((10, 120, 200)))
    first = previews.sample_frames(clip, n=4, height=18)
    decodes: list[Path] = []
    real = previews._decode_frames

    def counting(mp4, n, height):
        decodes.append(mp4)
        return real(mp4, n, height)

    monkeypatch.setattr(previews, "_decode_frames", counting)
    again = previews.sample_frames(clip, n=4, height=18)
    assert decodes == [] and [f.tobytes() for f in again] == [f.tobytes() for f in first]
    # regenerated: another file, so its frames are taken again
    media.write_atomic(clip, _animatic((250, 250, 0)))
    changed = previews.sample_frames(clip, n=4, height=18)
    assert decodes == [clip]
    assert [f.tobytes() for f in changed] != [f.tobytes() for f in first]


def test_a_sheet_saved_at_another_compression_level_is_the_same_sheet() -> None:
    """A Tier 2 rerun must not replace a sheet made before ``CLEAN_SHEET_PNG_LEVEL`` with the
    same picture in other bytes: its hash is in every clip's fingerprint that sent it."""
    from vidpipe_dagster.domain.clean_sheets import CLEAN_SHEET_PNG_LEVEL
    from vidpipe_dagster.stages.clean_sheet import _same_sheet

    picture = Image.fromarray(
        (np.arange(64 * 48 * 3, dtype=np.uint32) * 2654435761 % 251)
        .astype(np.uint8)
        .reshape(48, 64, 3)
    )
    old = media.png_bytes(picture)  # Pillow's default level, as sheets were written before
    new = media.png_bytes(picture, compress_level=CLEAN_SHEET_PNG_LEVEL)
    assert old != new and _same_sheet(old, new)
    other = picture.copy()
    other.putpixel((3, 3), (0, 0, 0))
    assert not _same_sheet(old, media.png_bytes(other, compress_level=CLEAN_SHEET_PNG_LEVEL))


def test_scenes_already_settled_are_taken_together_and_none_is_waited_for() -> None:
    """The clip stage reports scenes that settled together in one batch (one lookup of their
    checks' targets), never more than ``most``, and never waits to fill a batch."""
    finished: queue.Queue = queue.Queue()
    for key in "01234":
        finished.put(ClipResult(key, None, "x"))
    batch, ended, error = settled_batch(finished, most=3)
    assert [r.key for r in batch] == ["0", "1", "2"] and not ended and error is None
    batch, ended, error = settled_batch(finished, most=3)  # what is there, not waiting for more
    assert [r.key for r in batch] == ["3", "4"] and not ended and error is None
    finished.put(ClipResult("5", None, "x"))
    finished.put(None)  # the engine ended
    batch, ended, error = settled_batch(finished, most=3)
    assert [r.key for r in batch] == ["5"] and ended and error is None
    failure = RuntimeError("the database went away")
    finished.put(ClipResult("6", None, "x"))
    finished.put(failure)
    batch, ended, error = settled_batch(finished, most=3)  # the settled scene is kept
    assert [r.key for r in batch] == ["6"] and ended and error is failure
