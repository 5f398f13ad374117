"""The nightly tick of an up-to-date project decodes no image and runs a fixed number of queries,
and still sees every change the full comparison sees (issues 15 and 17)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import pytest
from PIL import Image
from sqlalchemy import select

from tests.conftest import counted_statements, save_png, scene_needs, small_spec, stage_context
from tests.test_status import many_scenes
from vidpipe_dagster.db import queries
from vidpipe_dagster.db.media import MediaStore
from vidpipe_dagster.db.models import Asset, AssetCleanReference, Scene, VideoClip
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.definitions import default_resources, defs
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.scene_clip import ClipOptions, scene_inputs
from vidpipe_dagster.stages.schedule import current_scenes, scenes_needing_clips, stored_jobs


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A persistent instance: a schedule's context reaches only those (``context.instance``)."""
    with dg.instance_for_test() as inst:
        yield inst


@contextmanager
def counted_decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every image Pillow is asked to open (a decode starts there) while the block runs."""
    opened: list[object] = []
    real_open = Image.open

    def counting_open(*args: Any, **kwargs: Any) -> Image.Image:
        opened.append(args[0] if args else kwargs)
        return real_open(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Image, "open", counting_open)
        yield opened


def select_references(settings: Settings, slug: str = "spring-ad") -> None:
    """What ``scene_references`` persists: the current selection of every scene."""
    with session_scope(settings.database_url) as session:
        project = queries.project_by_slug(session, slug)
        for scene in project.scenes:
            row = queries.scene_manifest(session, project.id, scene.scene_index)
            if row is not None:
                picks = queries.current_selection(session, project, scene.scene_index) or []
                row.selected_reference_tags = [a.manifest_tag for a in picks]


def add_primary_sheet(
    settings: Settings, asset_key: str, color: tuple[int, int, int], slug: str = "spring-ad"
) -> None:
    """A new primary clean sheet, as the clean-sheet stage writes it: the same file name for the
    asset (rewritten in place), the old primary demoted in the same transaction."""
    with session_scope(settings.database_url) as session:
        project = queries.project_by_slug(session, slug)
        asset = session.scalars(
            select(Asset).where(
                Asset.manifest_id == project.manifest_id, Asset.asset_key == asset_key
            )
        ).one()
        rel = f"clean_sheets/tier2_{asset.id}.png"
        path = settings.media_root / rel
        save_png(path.with_suffix(".tmp.png"), color)
        MediaStore(settings.media_root).write(rel, path.with_suffix(".tmp.png").read_bytes())
        path.with_suffix(".tmp.png").unlink()
        for old in session.scalars(
            select(AssetCleanReference).where(
                AssetCleanReference.asset_id == asset.id, AssetCleanReference.is_primary.is_(True)
            )
        ):
            old.is_primary = False
        session.flush()
        session.add(
            AssetCleanReference(
                asset_id=asset.id, tier="tier2_rembg", clean_image_url=rel, is_primary=True
            )
        )


def mark_clips_done(settings: Settings, slug: str = "spring-ad") -> None:
    """Every scene's clip made from the request it would send now (as a finished run leaves it)."""
    ctx = stage_context(settings)
    with session_scope(settings.database_url) as session:
        project = queries.project_by_slug(session, slug)
        scenes = [(s.id, str(s.scene_index)) for s in project.scenes]
    for scene_id, key in scenes:
        job = scene_inputs(ctx, slug, key, ClipOptions()).job
        assert job is not None
        with session_scope(settings.database_url) as session:
            clip = queries.clip_row(session, scene_id)
            clip.status, clip.backend = "done", "animatic"
            clip.fingerprint = job.request.fingerprint


def schedule_of(slug: str) -> dg.ScheduleDefinition:
    """The project's schedule as the code server holds it (definitions load before any tick)."""
    return defs().get_schedule_def(f"{slug.replace('-', '_')}_nightly_backfill_schedule")


def tick(
    settings: Settings, instance: dg.DagsterInstance, schedule: dg.ScheduleDefinition
) -> dg.ScheduleExecutionData:
    with dg.build_schedule_context(
        instance=instance, resources=default_resources(settings)
    ) as context:
        return schedule.evaluate_tick(context)


@pytest.mark.parametrize("manifest", [True, False], ids=["references", "frames"])
@pytest.mark.parametrize("policy", ["auto", "frames"])
def test_stored_hashes_give_the_fingerprints_the_clip_stage_computes(
    settings: Settings, imported: Callable[..., str], manifest: bool, policy: str
) -> None:
    """The tick's cheap request (hashes from the rows) equals the stage's (bytes from the files),
    request and frames fallback alike: a clean sheet, an original and keyframes all appear."""
    imported(small_spec(manifest=manifest))
    if manifest:
        select_references(settings)
        add_primary_sheet(settings, "mia_face", (128, 128, 128))
    ctx = stage_context(settings)
    options = ClipOptions(conditioning_policy=policy)  # type: ignore[arg-type]
    cheap = stored_jobs(ctx, "spring-ad", options)
    assert sorted(cheap) == ["0", "1"]
    for key, job in cheap.items():
        full = scene_inputs(ctx, "spring-ad", key, options).job
        assert job is not None and full is not None
        assert job.request.fingerprint == full.request.fingerprint, key
        assert job.request.conditioning_mode == full.request.conditioning_mode
        fallback = job.fallback.fingerprint if job.fallback else None
        assert fallback == (full.fallback.fingerprint if full.fallback else None)
    if manifest and policy == "auto":
        assert cheap["0"].request.conditioning_mode == "references"  # type: ignore[union-attr]


def test_the_tick_of_an_up_to_date_project_decodes_nothing_and_its_queries_do_not_grow(
    settings: Settings,
    imported: Callable[..., str],
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    statements: dict[int, int] = {}
    for count, slug in ((3, "small-ad"), (24, "large-ad")):
        imported(many_scenes(count, slug), folder=slug)
        select_references(settings, slug)
        add_primary_sheet(settings, "mia", (120, 130, 140), slug)
        mark_clips_done(settings, slug)
        schedule = schedule_of(slug)
        with (
            counted_decodes(monkeypatch) as decodes,
            counted_statements(settings.database_url) as sql,
        ):
            result = tick(settings, instance, schedule)
        assert result.skip_message == f"{slug}: every scene clip is up to date"
        assert decodes == [], decodes
        statements[count] = len(sql)
    assert statements[3] == statements[24], statements
    assert statements[24] <= 8, statements  # project, scenes and clips, keyframes, selections..


def test_a_clean_sheet_rewritten_in_place_makes_exactly_its_scenes_stale(
    settings: Settings, imported: Callable[..., str]
) -> None:
    """The clean-sheet stage reuses the file name: the tick hashes the file, not its name."""
    imported()
    select_references(settings)
    add_primary_sheet(settings, "mia_face", (128, 128, 128))
    mark_clips_done(settings)
    ctx = stage_context(settings)
    assert current_scenes(ctx, "spring-ad", ClipOptions()) == {"0", "1"}
    assert scene_needs(settings) == ([], {})

    add_primary_sheet(settings, "mia_face", (127, 129, 128))  # same path, other bytes
    assert current_scenes(ctx, "spring-ad", ClipOptions()) == {"1"}  # scene 1 has no CHAR_01
    needs, blocked = scene_needs(settings)
    assert [(n.key, n.reason) for n in needs] == [("0", "stale (inputs changed)")]
    assert blocked == {}


def test_scenes_it_cannot_prove_current_take_the_full_path(
    settings: Settings, imported: Callable[..., str], write_spec: Callable[..., Any]
) -> None:
    """A selection made before the manifest changed is reported as before; a clip with no
    fingerprint, or a failed one, is never taken for current."""
    spec = small_spec()
    imported(spec)
    select_references(settings)
    mark_clips_done(settings)
    with session_scope(settings.database_url) as session:
        clip = session.scalars(
            select(VideoClip)
            .join(Scene, Scene.id == VideoClip.scene_id)
            .where(Scene.scene_index == 0)
        ).one()
        clip.status = "failed"
    spec["scenes"][1]["manifest"]["placements"].append({"asset_tag": "CHAR_01", "role": "subject"})
    imported(spec)  # scene 1's selection is now out of date
    ctx = stage_context(settings)
    assert current_scenes(ctx, "spring-ad", ClipOptions()) == set()
    needs, blocked = scene_needs(settings)
    reasons = {n.key: n.reason for n in needs}
    assert reasons == {"0": "failed", "1": "references out of date"}, (reasons, blocked)


def test_the_scenes_a_tick_reads_in_full_are_read_together(
    settings: Settings, imported: Callable[..., str]
) -> None:
    """Scenes not proven current from stored hashes (here: never generated) are read in full,
    all in one read (``scenes_inputs``), not one read per scene: what grows with their number is
    the ledger's answer for each (is an outcome unknown, what would it cost)."""
    statements: dict[int, int] = {}
    for count, slug in ((2, "small-ad"), (12, "large-ad")):
        imported(many_scenes(count, slug), folder=slug)
        select_references(settings, slug)
        keys = [str(i) for i in range(count)]
        with counted_statements(settings.database_url) as sql:
            needs, blocked = scenes_needing_clips(
                stage_context(settings), slug, keys, "veo-3.1-generate-001", ClipOptions()
            )
        assert [n.reason for n in needs] == ["missing"] * count and not blocked
        statements[count] = len(sql)
    assert statements[12] - statements[2] <= 2 * 10, statements
