"""Takes through the clip stage: one request for N takes, every take stored and recorded, the
take whose character is recognised best chosen by the real dlib engine (each take scored once),
the first take without an engine, the choice kept on a rerun (a person's above all), and the
budget counting every take.

The animatic renders the same picture for every take, so the ranking test uses a double of it
whose takes show different people (scikit-image's astronaut, its camera man, nobody): the
choice then has something real to rank."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import func, select

from tests.assets.test_clip_identity_step import camera_man, crew_spec, face_crop, import_crew
from tests.conftest import SpecWriter, small_spec, stage_context
from tests.test_schedule_cost import select_references
from vidpipe_dagster.db import queries
from vidpipe_dagster.db.models import ClipIdentityScore, GenerationLedger, VideoClip
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.demo import _keyframe, _launch_pad
from vidpipe_dagster.domain.media import png_bytes
from vidpipe_dagster.domain.render import render_animatic
from vidpipe_dagster.domain.takes import scored_fingerprint
from vidpipe_dagster.generation.animatic import AnimaticVideoClient
from vidpipe_dagster.generation.backends import GenerationBackends
from vidpipe_dagster.generation.client import GeneratedVideo, OperationResult, VideoClient
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages import clip_identity
from vidpipe_dagster.stages.context import StageContext, StageError
from vidpipe_dagster.stages.project_import import import_project
from vidpipe_dagster.stages.scene_clip import ClipOptions, iter_clips, make_clips
from vidpipe_dagster.stages.schedule import scenes_needing_clips
from vidpipe_dagster.stages.status import project_status
from vidpipe_dagster.stages.takes import TakeChoiceError, choose_take
from vidpipe_dagster.testing.vertex_emulator import VertexEmulator

SLUG = "crew"
FAST = ClipOptions(poll_interval_seconds=0.05, backoff_base_seconds=0.01, requests_per_minute=0)


def import_takes(settings: Settings, write_spec: SpecWriter, takes: int) -> None:
    """The crew project (CHAR_01 is the astronaut) with one scene, asking for ``takes``."""
    import_crew(settings, write_spec, takes=takes, scenes=1)
    select_references(settings, SLUG)


def render_of(actor: Image.Image | None) -> bytes:
    """An 8 s animatic whose keyframes show ``actor`` (None: the empty launch pad)."""
    pad = _launch_pad()
    start, end = _keyframe(pad, actor, 0.5, 0.95), _keyframe(pad, actor, 0.45, 1.0)
    return render_animatic(
        start_frame=png_bytes(start),
        end_frame=png_bytes(end),
        references=[],
        prompt="a take",
        duration_seconds=8,
        aspect_ratio="16:9",
        fps=4,
        height=360,
    )


class DistinctTakes(AnimaticVideoClient):
    """The local renderer, except that take i of a request is ``videos[i]``."""

    def __init__(self, videos: list[bytes]) -> None:
        super().__init__(fps=4)
        self.videos = videos

    async def poll(self, operation_name: str) -> OperationResult:
        result = await super().poll(operation_name)
        if not result.done:
            return result
        first, *more = self.videos
        return OperationResult(
            name=operation_name,
            done=True,
            video_bytes=first,
            more_videos=tuple(GeneratedVideo(video_bytes=v) for v in more),
        )


@dataclasses.dataclass(frozen=True)
class Backends(GenerationBackends):
    """The settings' backends with a given video client (the animatic's name and label)."""

    client: Any = None

    def video_client(self) -> VideoClient:
        return self.client


def with_client(ctx: StageContext, client: VideoClient) -> StageContext:
    return dataclasses.replace(ctx, backends=Backends(video_backend="animatic", client=client))


@pytest.fixture
def scorings(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every clip file scored for identity while the test runs."""
    scored: list[Path] = []
    real = clip_identity.score_clip_identity

    def counting(mp4: Any, *args: Any, **kwargs: Any) -> Any:
        scored.append(Path(mp4))
        return real(mp4, *args, **kwargs)

    monkeypatch.setattr(clip_identity, "score_clip_identity", counting)
    return scored


def clip_of(settings: Settings, scene: int = 0) -> VideoClip:
    with session_scope(settings.database_url) as session:
        project = queries.project_by_slug(session, SLUG)
        clip = queries.scene_of(session, project, scene).clip
        assert clip is not None
        session.expunge(clip)
        return clip


def ledger_rows(settings: Settings) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(GenerationLedger)) or 0


def test_three_takes_are_stored_and_the_one_showing_the_character_is_chosen(
    settings: Settings, write_spec: SpecWriter, scorings: list[Path]
) -> None:
    import_takes(settings, write_spec, takes=3)
    client = DistinctTakes([render_of(camera_man()), render_of(face_crop()), render_of(None)])
    ctx = with_client(stage_context(settings), client)

    [result] = make_clips(ctx, SLUG, ["0"], FAST).results
    assert result.done, result.error
    assert len(result.take_urls) == 3 and len(set(result.take_urls)) == 3
    for url, video in zip(result.take_urls, client.videos, strict=True):
        assert (settings.media_root / url).read_bytes() == video, "every take stored as returned"
    assert result.chosen_take == 2 and result.file_url == result.take_urls[1]
    assert result.take_choice is not None
    match = re.fullmatch(
        r"take 2 of 3: best identity \(1 of 1 recognised vs 0, 0; "
        r"median (0\.\d\d) vs (0\.\d\d), no face; dlib euclidean\)",
        result.take_choice,
    )
    assert match, result.take_choice
    assert float(match[1]) <= 0.62 < float(match[2]), "the astronaut passes, the other man not"
    assert len(scorings) == 3, "each take scored once"
    statuses = [[c.status for c in s.characters] for s in result.take_scores]
    assert statuses == [["failed"], ["passed"], ["not_scored"]]

    clip = clip_of(settings)
    assert (clip.take_urls, clip.chosen_take, clip.take_choice) == (
        list(result.take_urls),
        2,
        result.take_choice,
    )
    assert clip.file_url == result.take_urls[1] and result.path == settings.media_root / (
        clip.file_url or ""
    )
    # the chosen take's scores are the clip's: the clip step's own scoring reuses them
    identity = clip_identity.score_scene_identity(ctx, SLUG, 0)
    assert identity.cached and len(scorings) == 3
    [character] = identity.characters
    assert character.status == "passed" and character.median == pytest.approx(
        float(match[1]), abs=0.005
    )
    with session_scope(settings.database_url) as session:
        [row] = session.scalars(select(ClipIdentityScore)).all()
        assert row.clip_fingerprint == scored_fingerprint(clip.fingerprint, 2)
        status = project_status(session, SLUG, settings.media_root)
    shown = status["scenes"][0]["clip"]
    assert (shown["takes"], shown["chosen_take"], shown["take_choice"]) == (
        3,
        2,
        result.take_choice,
    )
    assert shown["path"] == str((settings.media_root / result.take_urls[1]).resolve())
    assert shown["identity"][0]["stale"] is False

    # a rerun of the same request reuses the clip and keeps its choice without scoring again
    rows = ledger_rows(settings)
    [again] = make_clips(ctx, SLUG, ["0"], FAST).results
    assert again.outcome is not None and again.outcome.cached
    assert (again.chosen_take, again.take_choice) == (2, result.take_choice)
    assert len(scorings) == 3 and ledger_rows(settings) == rows

    # a person picks take 3 (nobody in it): a rerun keeps it, and its identity is scored anew
    choice = choose_take(ctx, SLUG, 0, 3, who="ana", when="2026-12-03 04:12 UTC")
    assert choice.reason == "take 3 of 3: chosen by a person (ana, 2026-12-03 04:12 UTC)"
    assert (choice.previous_take, choice.previous_reason) == (2, result.take_choice)
    [kept] = make_clips(ctx, SLUG, ["0"], FAST).results
    assert (kept.chosen_take, kept.take_choice, kept.file_url) == (
        3,
        choice.reason,
        result.take_urls[2],
    )
    assert ledger_rows(settings) == rows
    rescored = clip_identity.score_scene_identity(ctx, SLUG, 0)
    assert not rescored.cached and rescored.characters[0].status == "not_scored"
    assert scorings[-1] == settings.media_root / result.take_urls[2]


def test_without_a_face_engine_the_first_take_is_used_and_nothing_is_scored(
    settings: Settings, write_spec: SpecWriter, scorings: list[Path]
) -> None:
    import_takes(settings, write_spec, takes=2)
    ctx = stage_context(settings.replace(face_engine="none"))
    [result] = make_clips(ctx, SLUG, ["0"], FAST).results
    assert result.done, result.error
    assert all((settings.media_root / url).is_file() for url in result.take_urls)
    assert len(set(result.take_urls)) == 2
    assert result.chosen_take == 1 and result.file_url == result.take_urls[0]
    assert result.take_choice is not None
    assert result.take_choice.startswith("take 1 of 2: first take (no face engine"), (
        result.take_choice
    )
    assert scorings == []
    clip = clip_of(settings)
    assert (clip.chosen_take, clip.take_choice) == (1, result.take_choice)


def test_one_take_changes_nothing(
    settings: Settings, imported: Callable[..., str], scorings: list[Path]
) -> None:
    slug = imported(small_spec(manifest=False))
    ctx = stage_context(settings.replace(face_engine="none"))
    [result] = make_clips(ctx, slug, ["0"], FAST).results[:1]
    assert result.done and result.take_urls == (result.file_url,) and result.chosen_take == 1
    assert result.data_version == result.outcome.request.fingerprint[:24]  # type: ignore[union-attr]
    assert scorings == []


def test_choosing_is_refused_when_the_run_would_pay_for_a_new_clip(
    settings: Settings, write_spec: SpecWriter
) -> None:
    """The scene's inputs changed since its clip was made: showing the choice would generate a
    new clip, so nothing is chosen."""
    import_takes(settings, write_spec, takes=2)
    ctx = stage_context(settings.replace(face_engine="none"))
    make_clips(ctx, SLUG, ["0"], FAST)
    before = clip_of(settings)
    spec = crew_spec(None)
    spec["project"]["takes"] = 2
    spec["scenes"] = spec["scenes"][:1]
    spec["scenes"][0]["prompt"] = "an edited prompt"
    path = write_spec(spec, folder="crew", images=False)
    with session_scope(settings.database_url) as session:
        import_project(session, path, settings.media_root)
    with pytest.raises(TakeChoiceError, match="inputs changed since its clip was made"):
        choose_take(ctx, SLUG, 0, 2)
    after = clip_of(settings)
    assert (after.chosen_take, after.file_url, after.take_choice) == (
        before.chosen_take,
        before.file_url,
        before.take_choice,
    )


def test_budgets_and_estimates_count_every_take(settings: Settings, write_spec: SpecWriter) -> None:
    """On Vertex (never reached here) a scene's estimate is its price times its takes, in the
    run's budget check and in the nightly schedule's estimates, references current or not."""
    vertex = settings.replace(vertex_emulator_host="127.0.0.1:9")
    estimates = {}
    for takes in (1, 3):
        import_takes(settings, write_spec, takes=takes)
        ctx = stage_context(vertex)
        needs, blocked = scenes_needing_clips(ctx, SLUG, ["0"], "veo-3.1-generate-001", FAST)
        assert not blocked and [n.reason for n in needs] == ["missing"]
        estimates[takes] = needs[0].estimate_usd
        with session_scope(settings.database_url) as session:  # the selection is out of date
            project = queries.project_by_slug(session, SLUG)
            queries.scene_manifest(session, project.id, 0).selected_reference_tags = ["ENV_01"]  # type: ignore[union-attr]
        needs, _ = scenes_needing_clips(ctx, SLUG, ["0"], "veo-3.1-generate-001", FAST)
        assert [n.reason for n in needs] == ["references out of date"]
        assert needs[0].estimate_usd == pytest.approx(estimates[takes])
        select_references(settings, SLUG)
    assert estimates[1] == pytest.approx(0.40 * 8)  # 720p with audio, 8 s with references
    assert estimates[3] == pytest.approx(3 * estimates[1])

    budget = dataclasses.replace(ctx.budget, per_run_usd=2 * estimates[1])
    with pytest.raises(StageError, match="over budget, nothing was submitted") as info:
        list(iter_clips(dataclasses.replace(ctx, budget=budget), SLUG, ["0"], FAST))
    assert info.value.metadata["estimate_usd"] == pytest.approx(estimates[3])
    assert ledger_rows(settings) == 0


def test_on_the_vertex_emulator_one_request_pays_for_every_take_and_choosing_calls_nothing(
    settings: Settings, write_spec: SpecWriter
) -> None:
    """Through google-genai and the emulator (which honours sampleCount): one submit for three
    takes, billed per take; the takes are the same video, so they tie and the first is kept,
    saying so; a person's pick is then shown by a run that sends nothing."""
    import_takes(settings, write_spec, takes=3)
    video = render_of(face_crop())
    with VertexEmulator(video_responder=lambda instance, parameters: video) as emu:
        ctx = stage_context(settings.replace(vertex_emulator_host=emu.address))
        [result] = make_clips(ctx, SLUG, ["0"], FAST).results
        assert result.done, result.error
        assert emu.submit_count == 1 and len(set(result.take_urls)) == 3
        assert all((settings.media_root / url).read_bytes() == video for url in result.take_urls)
        assert result.chosen_take == 1
        assert re.fullmatch(
            r"take 1 of 3: best identity \(median 0\.\d\d, tied with take 2, 3; dlib euclidean\)",
            result.take_choice or "",
        ), result.take_choice
        with session_scope(settings.database_url) as session:
            [row] = session.scalars(select(GenerationLedger)).all()
            assert (row.takes, row.billed) == (3, True)
            assert row.cost_usd == pytest.approx(3 * 0.40 * 8) == result.cost_usd
        calls = (emu.submit_attempts, emu.poll_count)

        choose_take(ctx, SLUG, 0, 3, who="ana")
        [shown] = make_clips(ctx, SLUG, ["0"], FAST).results
        assert shown.outcome is not None and shown.outcome.cached
        assert shown.outcome.api_calls == 0 and (emu.submit_attempts, emu.poll_count) == calls
        assert (shown.chosen_take, shown.file_url) == (3, result.take_urls[2])
        assert shown.cost_usd == result.cost_usd and ledger_rows(settings) == 1


def test_a_take_that_is_not_a_playable_clip_cannot_be_chosen(
    settings: Settings, write_spec: SpecWriter
) -> None:
    import_takes(settings, write_spec, takes=2)
    ctx = stage_context(settings.replace(face_engine="none"))
    [result] = make_clips(ctx, SLUG, ["0"], FAST).results
    (settings.media_root / result.take_urls[1]).write_bytes(b"not an mp4")
    with pytest.raises(TakeChoiceError, match="take 2 of scene 0 is not a readable mp4"):
        choose_take(ctx, SLUG, 0, 2)
    assert clip_of(settings).chosen_take == 1
