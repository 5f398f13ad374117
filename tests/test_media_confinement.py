"""The media root: nothing is written or read through a symlink below it, by any stage.

A link planted inside the root (``projects/<slug>/inputs -> /elsewhere``) must neither receive
writes (import, clean sheets, clips, the final cut) nor serve reads; each refusal names the link.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from tests.conftest import SpecWriter, small_spec
from tests.state import media_tree
from vidpipe_dagster.db.media import MediaStore
from vidpipe_dagster.db.models import Asset, AssetCleanReference, Scene, VideoClip
from vidpipe_dagster.db.session import session_scope
from vidpipe_dagster.domain.media import MediaError, MediaMissing
from vidpipe_dagster.runner import materialize_project
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.project_import import SpecError, import_project


@pytest.fixture
def store(tmp_path: Path) -> MediaStore:
    root = tmp_path / "media"
    (root / "projects/p").mkdir(parents=True)
    return MediaStore(root)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.png").write_bytes(b"not yours")
    return folder


# -- the store itself ------------------------------------------------------------------------


def test_write_through_a_linked_folder_is_refused(store: MediaStore, outside: Path) -> None:
    (store.root / "projects/p/inputs").symlink_to(outside)
    with pytest.raises(MediaError, match=r"projects/p/inputs is a symlink \(to .*outside\)"):
        store.write("projects/p/inputs/a.png", b"x")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.png"]


def test_a_link_to_a_folder_inside_the_root_is_refused_too(store: MediaStore) -> None:
    (store.root / "projects/q").mkdir()
    (store.root / "projects/p/clips").symlink_to(store.root / "projects/q")
    with pytest.raises(MediaError, match="is a symlink"):
        store.write("projects/p/clips/c.mp4", b"x")
    assert not any((store.root / "projects/q").iterdir())


def test_write_onto_a_linked_file_is_refused(store: MediaStore, outside: Path) -> None:
    (store.root / "projects/p/final_cut.mp4").symlink_to(outside / "secret.png")
    with pytest.raises(MediaError, match=r"final_cut\.mp4 is a symlink"):
        store.write("projects/p/final_cut.mp4", b"x")
    assert (outside / "secret.png").read_bytes() == b"not yours"
    assert (store.root / "projects/p/final_cut.mp4").is_symlink()


def test_reads_never_follow_a_link(store: MediaStore, outside: Path) -> None:
    (store.root / "projects/p/inputs").symlink_to(outside)
    (store.root / "projects/p/file.png").symlink_to(outside / "secret.png")
    for rel in ("projects/p/inputs/secret.png", "projects/p/file.png"):
        with pytest.raises(MediaError, match="is a symlink"):
            store.read(rel)
        with pytest.raises(MediaError, match="is a symlink"):
            store.load(rel)  # a link is not "missing": it must not make a paid file look lost
        with pytest.raises(MediaError, match="is a symlink"):
            store.path(rel)


def test_missing_files_and_bad_paths(store: MediaStore) -> None:
    assert store.load("projects/p/none.mp4") is None
    assert store.load("projects/nope/none.mp4") is None
    with pytest.raises(MediaMissing):
        store.read("projects/p/none.mp4")
    for bad, why in (
        ("../x", "leaves the media root"),
        ("/etc/passwd", "is absolute"),
        ("a\0b", "NUL byte"),
        ("", "empty media path"),
    ):
        with pytest.raises(MediaError, match=why):
            store.path(bad)
        with pytest.raises(MediaError, match=why):
            store.write(bad, b"x")


def test_writes_are_atomic_and_readable(store: MediaStore) -> None:
    path = store.write("clean_sheets/tier2_x.png", b"one")
    store.write("clean_sheets/tier2_x.png", b"two")
    assert path == store.root / "clean_sheets/tier2_x.png"
    assert store.read("clean_sheets/tier2_x.png") == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["tier2_x.png"]  # no temporary left


def test_remove_never_follows_a_link(store: MediaStore, outside: Path) -> None:
    (store.root / "projects/p/inputs").symlink_to(outside)
    with pytest.raises(MediaError, match="is a symlink"):
        store.remove("projects/p/inputs/secret.png")
    assert (outside / "secret.png").exists()
    store.write("projects/p/x.png", b"x")
    assert store.remove("projects/p/x.png") and not store.remove("projects/p/x.png")
    assert not store.remove("projects")  # not empty: kept


def test_prepare_folder_refuses_a_link(store: MediaStore, outside: Path) -> None:
    assert store.prepare_folder("projects/p/clips").is_dir()
    (store.root / "clean_sheets").symlink_to(outside)
    with pytest.raises(MediaError, match="clean_sheets is a symlink"):
        store.prepare_folder("clean_sheets")


# -- every stage -----------------------------------------------------------------------------


def test_import_refuses_a_linked_inputs_folder(
    settings: Settings, write_spec: SpecWriter, outside: Path
) -> None:
    inputs = settings.media_root / "projects/spring-ad/inputs"
    inputs.parent.mkdir(parents=True)
    inputs.symlink_to(outside)
    before = media_tree(settings.media_root)
    with (
        pytest.raises(SpecError, match=r"projects/spring-ad/inputs is a symlink"),
        session_scope(settings.database_url) as session,
    ):
        import_project(session, write_spec(small_spec()), settings.media_root)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.png"]  # nothing written there
    assert media_tree(settings.media_root) == before


def _ball_spec() -> dict:
    return {
        "project": {"slug": "cast", "name": "Cast"},
        "manifest": {
            "name": "cast",
            "assets": [{"id": "ball", "tag": "PROP_01", "type": "PROP", "image": "ball.png"}],
        },
        "scenes": [{"index": 0, "prompt": "a ball"}],
    }


def test_clean_sheets_refuse_a_linked_clean_sheets_folder(
    settings: Settings,
    write_spec: SpecWriter,
    instance: dg.DagsterInstance,
    outside: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("U2NET_HOME", str(outside / "no-weights"))  # the weight-free engine
    path = write_spec(_ball_spec(), images=False)
    ball = np.full((120, 120, 3), (30, 90, 30), np.uint8)
    ball[30:90, 30:90] = (250, 250, 250)
    Image.fromarray(ball).save(path.parent / "ball.png")
    with session_scope(settings.database_url) as session:
        import_project(session, path, settings.media_root)
    (settings.media_root / "clean_sheets").symlink_to(outside)

    [report] = materialize_project(
        "cast", ["clean-sheets"], partitions=["PROP_01"], instance=instance, settings=settings
    )
    assert report.failed.keys() == {"PROP_01"}
    assert "clean_sheets is a symlink" in report.failed["PROP_01"], report.failed
    assert sorted(p.name for p in outside.iterdir()) == ["secret.png"]
    with session_scope(settings.database_url) as session:
        assert not session.scalars(select(AssetCleanReference)).all()
        assert session.scalars(select(Asset.reference_image_url)).one().startswith("projects/")


def test_clips_refuse_a_linked_clips_folder(
    settings: Settings, imported, instance: dg.DagsterInstance, outside: Path
) -> None:
    imported()
    clips = settings.media_root / "projects/spring-ad/clips"
    clips.symlink_to(outside)
    reports = materialize_project(
        "spring-ad", ["references", "clips"], instance=instance, settings=settings
    )
    clip_report = reports[1]
    assert clip_report.failed.keys() == {"0", "1"}, clip_report
    for reason in clip_report.failed.values():
        assert "projects/spring-ad/clips is a symlink" in reason, reason
    assert sorted(p.name for p in outside.iterdir()) == ["secret.png"]
    with session_scope(settings.database_url) as session:
        statuses = session.scalars(
            select(VideoClip.status).join(Scene, VideoClip.scene_id == Scene.id)
        ).all()
        assert statuses == []  # refused before any scene was submitted: nothing recorded


def test_final_cut_refuses_a_linked_output(
    settings: Settings, imported, instance: dg.DagsterInstance
) -> None:
    """The cut's path links to a paid clip inside the root: following it would overwrite it."""
    imported()
    materialize_project("spring-ad", ["references", "clips"], instance=instance, settings=settings)
    with session_scope(settings.database_url) as session:
        clip_url = session.scalars(select(VideoClip.file_url).order_by(VideoClip.file_url)).first()
    assert clip_url
    clip = settings.media_root / clip_url
    clip_bytes = clip.read_bytes()
    cut = settings.media_root / "projects/spring-ad/final_cut.mp4"
    cut.symlink_to(clip)

    [report] = materialize_project("spring-ad", ["final-cut"], instance=instance, settings=settings)
    assert "final_cut.mp4 is a symlink" in report.failed["all"], report
    assert clip.read_bytes() == clip_bytes  # the paid clip is untouched
    assert cut.is_symlink()


def test_final_cut_refuses_a_linked_clip(
    settings: Settings, imported, instance: dg.DagsterInstance, outside: Path
) -> None:
    """A clip file replaced by a link to a file outside is not read into the cut."""
    imported()
    materialize_project("spring-ad", ["references", "clips"], instance=instance, settings=settings)
    with session_scope(settings.database_url) as session:
        clip_url = session.scalars(select(VideoClip.file_url).order_by(VideoClip.file_url)).first()
    clip = settings.media_root / str(clip_url)
    (outside / "clip.mp4").write_bytes(clip.read_bytes())
    clip.unlink()
    clip.symlink_to(outside / "clip.mp4")
    [report] = materialize_project("spring-ad", ["final-cut"], instance=instance, settings=settings)
    assert "is a symlink" in report.failed["all"], report
    assert not (settings.media_root / "projects/spring-ad/final_cut.mp4").exists()
