"""A cached rerun reads every scene's stored identity at once: ``reusable_scene_identities``
gives what scoring scene by scene would reuse, in the same number of queries for one scene or
all, and leaves out a scene whose stored scores are not those of its clip."""

from __future__ import annotations

import dagster as dg
import pytest
from sqlalchemy import delete, select

from tests.assets.test_clip_identity_step import SLUG, import_crew, run
from tests.conftest import SpecWriter, counted_statements, stage_context
from vidpipe_dagster.db.models import ClipIdentityScore, Scene, VideoClip
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.clip_identity import reusable_scene_identities, score_scene_identity


def statements(settings: Settings, call) -> tuple[object, int]:
    with counted_statements(settings.database_url) as seen:
        result = call()
    return result, len(seen)


@pytest.mark.slow
def test_stored_identities_of_a_run_read_at_once_match_scene_by_scene(
    settings: Settings, write_spec: SpecWriter, instance: dg.DagsterInstance
) -> None:
    import_crew(settings, write_spec)
    reports = run(settings, instance, ["references", "clips"])
    assert reports["clips"].succeeded == ["0", "1"]
    ctx = stage_context(settings)

    one, queries_one = statements(settings, lambda: reusable_scene_identities(ctx, SLUG, [0]))
    both, queries_both = statements(settings, lambda: reusable_scene_identities(ctx, SLUG, [0, 1]))
    assert sorted(one) == [0] and sorted(both) == [0, 1]  # type: ignore[call-overload]
    assert queries_one == queries_both, "a fixed number of queries, not one set per scene"
    for index in (0, 1):
        alone = score_scene_identity(ctx, SLUG, index)
        assert alone.cached, "scene by scene reuses the stored scores too"
        batched = both[index]  # type: ignore[index]
        assert batched.characters == alone.characters and batched.cached
        assert batched.clip_fingerprint == alone.clip_fingerprint
        assert (batched.crops, batched.references) == (alone.crops, alone.references)
    assert [c.status for c in both[0].characters] == ["passed"]  # type: ignore[index]
    assert [c.status for c in both[1].characters] == ["failed"]  # type: ignore[index]

    with session_scope(settings.database_url) as session:  # scene 1's scores are gone
        clip_id = session.scalar(select(VideoClip.id).join(Scene).where(Scene.scene_index == 1))
        session.execute(delete(ClipIdentityScore).where(ClipIdentityScore.video_clip_id == clip_id))
    assert sorted(reusable_scene_identities(ctx, SLUG, [0, 1])) == [0], "scored one by one"
