"""Project import: every rejection leaves the database unchanged; re-import updates in place."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from tests.conftest import SpecWriter, save_png, small_spec
from tests.state import snapshot
from vidpipe_dagster.db.models import Asset, AssetCleanReference, Project, SceneManifest
from vidpipe_dagster.db.session import Database, get_engine, session_scope
from vidpipe_dagster.settings import Settings
from vidpipe_dagster.stages.project_import import SpecError, import_project, import_spec


def run_import(settings: Settings, path: Path) -> None:
    with session_scope(settings.database_url) as session:
        import_project(session, path, settings.media_root)


def project_count(settings: Settings) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(Project)) or 0


def expect_rejected(settings: Settings, path: Path, *fragments: str) -> str:
    before = snapshot(settings)
    with pytest.raises(SpecError) as info:
        run_import(settings, path)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert project_count(settings) == 0
    assert snapshot(settings) == before  # not a row, not a file, not a folder
    return message


def test_import_creates_rows_and_copies_media(settings: Settings, write_spec: SpecWriter) -> None:
    run_import(settings, write_spec(small_spec()))
    with session_scope(settings.database_url) as session:
        project = session.scalars(select(Project)).one()
        assert project.slug == "spring-ad" and project.target_clip_duration == 6
        assets = {a.asset_key: a for a in project.manifest.assets}
        assert (
            assets["mia_face"].is_face_crop
            and assets["mia_face"].source_asset_id == assets["mia"].id
        )
        stored = settings.media_root / assets["mia"].reference_image_url
        assert stored.is_file() and assets["mia"].original_sha256
        assert [s.scene_index for s in project.scenes] == [0, 1]
        assert [k.position for k in project.scenes[0].keyframes] == ["end", "start"]
        sm = session.scalars(select(SceneManifest).where(SceneManifest.scene_index == 1)).one()
        # undeclared tags are kept in the scene manifest
        assert {p["asset_tag"] for p in sm.manifest_json["placements"]} == {"ENV_01", "CHAR_09"}


def test_missing_image(settings: Settings, write_spec: SpecWriter) -> None:
    spec = small_spec()
    path = write_spec(spec)
    (path.parent / "img/park.png").unlink()
    expect_rejected(settings, path, "manifest asset 'park' image", "does not exist")


def test_not_an_image(settings: Settings, write_spec: SpecWriter) -> None:
    path = write_spec(small_spec())
    (path.parent / "frames/0_end.png").write_bytes(b"this is not a png")
    expect_rejected(settings, path, "scene 0 end_frame", "not a decodable image")


def test_truncated_image(settings: Settings, write_spec: SpecWriter) -> None:
    path = write_spec(small_spec())
    target = path.parent / "img/mia.png"
    save_png(target, (1, 2, 3), size=(256, 256))
    target.write_bytes(target.read_bytes()[:200])
    expect_rejected(settings, path, "manifest asset 'mia' image", "not a decodable image")


def test_unreadable_image(settings: Settings, write_spec: SpecWriter) -> None:
    path = write_spec(small_spec())
    target = path.parent / "img/mia.png"
    target.unlink()
    target.mkdir()  # a directory where a file should be: unreadable as an image
    expect_rejected(settings, path, "manifest asset 'mia' image", "not a file")


def test_path_with_dotdot(settings: Settings, write_spec: SpecWriter, tmp_path: Path) -> None:
    spec = small_spec()
    spec["manifest"]["assets"][2]["image"] = "../outside.png"
    save_png(tmp_path / "outside.png", (5, 5, 5))
    expect_rejected(settings, write_spec(spec), "leaves the folder")


def test_absolute_path(settings: Settings, write_spec: SpecWriter, tmp_path: Path) -> None:
    spec = small_spec()
    spec["scenes"][0]["start_frame"] = str(save_png(tmp_path / "abs.png", (5, 5, 5)))
    expect_rejected(settings, write_spec(spec), "is absolute")


def test_symlink_out(settings: Settings, write_spec: SpecWriter, tmp_path: Path) -> None:
    path = write_spec(small_spec())
    outside = save_png(tmp_path / "secret.png", (9, 9, 9))
    link = path.parent / "img/park.png"
    link.unlink()
    os.symlink(outside, link)
    expect_rejected(settings, path, "leaves the folder")


def test_duplicate_scene_indexes(settings: Settings, write_spec: SpecWriter) -> None:
    spec = small_spec()
    spec["scenes"][1]["index"] = 0
    expect_rejected(settings, write_spec(spec), "duplicate scene index(es): 0")


def test_face_crop_of_unknown_asset(settings: Settings, write_spec: SpecWriter) -> None:
    spec = small_spec()
    spec["manifest"]["assets"][1]["face_crop_of"] = "nobody"
    expect_rejected(settings, write_spec(spec), "face_crop_of 'nobody' names no asset")


def test_invalid_enum_value(settings: Settings, write_spec: SpecWriter) -> None:
    spec = small_spec()
    spec["manifest"]["assets"][2]["type"] = "PLANET"
    spec["scenes"][0]["manifest"]["placements"][0]["role"] = "hero"
    message = expect_rejected(settings, write_spec(spec), "manifest.assets.2.type")
    assert "scenes.0.manifest.placements.0.role" in message


def test_malformed_yaml(settings: Settings, write_spec: SpecWriter) -> None:
    path = write_spec(small_spec())
    path.write_text("project: {slug: [unclosed\n", encoding="utf-8")
    expect_rejected(settings, path, "is not valid YAML")


def test_schema_error_names_the_field(settings: Settings, write_spec: SpecWriter) -> None:
    spec = small_spec()
    del spec["scenes"][0]["prompt"]
    spec["project"]["slug"] = "Bad Slug"
    message = expect_rejected(settings, write_spec(spec), "scenes.0.prompt", "project.slug")
    assert "Field required" in message


def test_reimport_keeps_derived_rows_for_unchanged_inputs(
    settings: Settings, write_spec: SpecWriter
) -> None:
    path = write_spec(small_spec())
    run_import(settings, path)
    with session_scope(settings.database_url) as session:
        mia = session.scalars(select(Asset).where(Asset.asset_key == "mia")).one()
        park = session.scalars(select(Asset).where(Asset.asset_key == "park")).one()
        mia.face_embedding = b"\x00" * 16
        for asset in (mia, park):
            session.add(
                AssetCleanReference(
                    asset_id=asset.id, tier="tier2_rembg", clean_image_url="x.png", is_primary=True
                )
            )
        sm = session.scalars(select(SceneManifest).where(SceneManifest.scene_index == 0)).one()
        sm.selected_reference_tags = ["CHAR_01", "ENV_01"]
        mia_id = mia.id

    save_png(path.parent / "img/park.png", (1, 99, 1))  # only the park photo changes
    run_import(settings, path)
    with session_scope(settings.database_url) as session:
        mia = session.get(Asset, mia_id)
        assert mia is not None and mia.face_embedding == b"\x00" * 16
        assert [c.is_primary for c in mia.clean_references] == [True]
        park = session.scalars(select(Asset).where(Asset.asset_key == "park")).one()
        assert [c.is_primary for c in park.clean_references] == [False]  # stale, kept for history
        sm = session.scalars(select(SceneManifest).where(SceneManifest.scene_index == 0)).one()
        assert sm.selected_reference_tags == ["CHAR_01", "ENV_01"]
        assert session.scalar(select(func.count()).select_from(Project)) == 1


def test_reimport_with_changed_placements_clears_selection(
    settings: Settings, write_spec: SpecWriter
) -> None:
    spec = small_spec()
    path = write_spec(spec)
    run_import(settings, path)
    with session_scope(settings.database_url) as session:
        sm = session.scalars(select(SceneManifest).where(SceneManifest.scene_index == 0)).one()
        sm.selected_reference_tags = ["CHAR_01"]
    spec["scenes"][0]["manifest"]["composition"]["shot_type"] = "wide_shot"
    run_import(settings, write_spec(spec))
    with session_scope(settings.database_url) as session:
        sm = session.scalars(select(SceneManifest).where(SceneManifest.scene_index == 0)).one()
        assert sm.selected_reference_tags is None
        assert sm.manifest_json["composition"]["shot_type"] == "wide_shot"


def test_reimport_without_the_source_of_a_face_crop(
    settings: Settings, write_spec: SpecWriter
) -> None:
    """The face crop stays (now standalone); its old source is removed, not a foreign-key error."""
    spec = small_spec()
    run_import(settings, write_spec(spec))
    spec["manifest"]["assets"] = [a for a in spec["manifest"]["assets"] if a["id"] != "mia"]
    del spec["manifest"]["assets"][0]["face_crop_of"]
    run_import(settings, write_spec(spec))
    with session_scope(settings.database_url) as session:
        assets = {a.asset_key: a for a in session.scalars(select(Asset))}
        assert sorted(assets) == ["mia_face", "park"]
        assert assets["mia_face"].source_asset_id is None
        assert not assets["mia_face"].is_face_crop


@pytest.mark.parametrize("trial", range(10))  # deletion order follows random ids: try a few
def test_reimport_without_a_face_crop_and_its_source(
    settings: Settings, write_spec: SpecWriter, trial: int
) -> None:
    spec = small_spec()
    run_import(settings, write_spec(spec))
    spec["manifest"]["assets"] = [
        a for a in spec["manifest"]["assets"] if a["id"] not in ("mia", "mia_face")
    ]
    for scene in spec["scenes"]:
        scene["manifest"]["placements"] = [
            p for p in scene["manifest"]["placements"] if p["asset_tag"] != "CHAR_01"
        ]
    run_import(settings, write_spec(spec))
    with session_scope(settings.database_url) as session:
        assert sorted(session.scalars(select(Asset.asset_key))) == ["park"]


def test_failed_reimport_changes_nothing(settings: Settings, write_spec: SpecWriter) -> None:
    spec = small_spec()
    run_import(settings, write_spec(spec))
    spec["project"]["name"] = "Renamed"
    spec["scenes"][1]["start_frame"] = "frames/missing.png"
    with pytest.raises(SpecError, match=r"missing\.png"):
        run_import(settings, write_spec(spec, images=False))
    with session_scope(settings.database_url) as session:
        assert session.scalars(select(Project.name)).one() == "Spring ad"


def test_project_without_manifest(settings: Settings, write_spec: SpecWriter) -> None:
    run_import(settings, write_spec(small_spec(manifest=False)))
    with session_scope(settings.database_url) as session:
        project = session.scalars(select(Project)).one()
        assert project.manifest is None
        assert session.scalar(select(func.count()).select_from(SceneManifest)) == 0


# -- input that used to escape as a traceback, or was accepted when it should not be ----------


def test_slug_with_a_trailing_newline(settings: Settings, write_spec: SpecWriter) -> None:
    spec = small_spec()
    spec["project"]["slug"] = "spring-ad\n"
    expect_rejected(settings, write_spec(spec), "project.slug", "'spring-ad\\n'")


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", "mia\n"), ("tag", "CHAR_01\n"), ("tag", "CHAR 01")],
)
def test_ids_and_tags_match_their_whole_pattern(
    settings: Settings, write_spec: SpecWriter, field: str, value: str
) -> None:
    spec = small_spec()
    spec["manifest"]["assets"][2][field] = value
    expect_rejected(settings, write_spec(spec), f"manifest.assets.2.{field}", repr(value))


def test_unknown_video_model_is_rejected_with_the_known_ones(
    settings: Settings, write_spec: SpecWriter
) -> None:
    spec = small_spec()
    spec["project"]["video_model"] = "veo-9-ultra"
    message = expect_rejected(
        settings, write_spec(spec), "project.video_model", "unknown video model 'veo-9-ultra'"
    )
    assert "veo-3.1-generate-001" in message  # the known models are listed


def test_face_crop_of_another_face_crop(settings: Settings, write_spec: SpecWriter) -> None:
    spec = small_spec()
    spec["manifest"]["assets"].append(
        {
            "id": "mia_eye",
            "tag": "CHAR_01",
            "type": "CHARACTER",
            "image": "img/mia_eye.png",
            "face_crop_of": "mia_face",
        }
    )
    expect_rejected(
        settings,
        write_spec(spec),
        "asset 'mia_eye': face_crop_of 'mia_face' is itself a face crop (of 'mia')",
    )


def test_a_cycle_of_face_crops(settings: Settings, write_spec: SpecWriter) -> None:
    spec = small_spec()
    spec["manifest"]["assets"][0]["face_crop_of"] = "mia_face"  # mia <-> mia_face
    expect_rejected(settings, write_spec(spec), "face_crop_of", "is itself a face crop")


def test_a_duplicate_key_is_rejected_naming_the_line(
    settings: Settings, write_spec: SpecWriter
) -> None:
    path = write_spec(small_spec())
    lines = path.read_text(encoding="utf-8").splitlines()
    at = lines.index("  name: Spring ad")
    lines.insert(at + 1, "  name: Autumn ad")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expect_rejected(settings, path, f"line {at + 2}", "key 'name' is given twice")


def test_a_duplicate_key_deep_in_a_scene(settings: Settings, write_spec: SpecWriter) -> None:
    path = write_spec(small_spec())
    text = path.read_text(encoding="utf-8")
    text = text.replace("role: subject", "role: subject\n      role: background", 1)
    path.write_text(text, encoding="utf-8")
    expect_rejected(settings, path, "key 'role' is given twice")


def test_merge_keys_may_still_be_overridden(settings: Settings, tmp_path: Path) -> None:
    """``<<: *base`` then an explicit key is YAML's way to override, not a duplicate."""
    path = tmp_path / "merge.yaml"
    path.write_text(
        "project: {slug: merge-ad, name: Merge}\n"
        "scenes:\n"
        "  - index: 0\n"
        "    prompt: a\n"
        "    manifest:\n"
        "      composition: &comp {shot_type: close_up, camera_movement: pan}\n"
        "  - index: 1\n"
        "    prompt: b\n"
        "    manifest:\n"
        "      composition:\n"
        "        <<: *comp\n"
        "        shot_type: wide_shot\n",
        encoding="utf-8",
    )
    run_import(settings, path)
    with session_scope(settings.database_url) as session:
        sm = session.scalars(select(SceneManifest).where(SceneManifest.scene_index == 1)).one()
        assert sm.manifest_json["composition"] == {
            "shot_type": "wide_shot",
            "camera_movement": "pan",
        }


def test_deeply_nested_yaml(settings: Settings, write_spec: SpecWriter) -> None:
    path = write_spec(small_spec())
    with path.open("a", encoding="utf-8") as handle:
        handle.write("extra: " + "[" * 20000 + "]" * 20000 + "\n")
    expect_rejected(settings, path, "project.yaml nests too deeply")


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_image(settings: Settings, write_spec: SpecWriter) -> None:
    path = write_spec(small_spec())
    (path.parent / "img/park.png").write_bytes(_png_claiming(100_000, 100_000))
    expect_rejected(
        settings, path, "manifest asset 'park' image", "img/park.png", "too large to decode safely"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [("", "is empty"), ("   ", "is empty"), ("frames/a\0b.png", "NUL byte")],
)
def test_bad_frame_paths_name_the_field(
    settings: Settings, write_spec: SpecWriter, value: str, message: str
) -> None:
    spec = small_spec()
    path = write_spec(spec)
    spec["scenes"][1]["start_frame"] = value
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    expect_rejected(settings, path, "scenes.1.start_frame", message)


def test_nul_byte_in_an_asset_image_path(settings: Settings, write_spec: SpecWriter) -> None:
    spec = small_spec()
    path = write_spec(spec)
    spec["manifest"]["assets"][0]["image"] = "img/mia\0.png"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    expect_rejected(settings, path, "manifest.assets.0.image", "NUL byte")


@pytest.mark.parametrize("index", [2**70, 2**31])
def test_scene_index_beyond_the_database_integer(
    settings: Settings, write_spec: SpecWriter, index: int
) -> None:
    spec = small_spec()
    spec["scenes"][1]["index"] = index
    expect_rejected(settings, write_spec(spec), "scenes.1.index", "less than or equal to")


def test_a_directory_instead_of_the_yaml_file(settings: Settings, write_spec: SpecWriter) -> None:
    path = write_spec(small_spec())
    message = expect_rejected(settings, path.parent, "is a directory", "give the project's YAML")
    assert "project.yaml" in message and "does not exist" not in message


# -- all or nothing on disk ------------------------------------------------------------------


@pytest.fixture
def scenes_refused(settings: Settings) -> Iterator[None]:
    """The database refuses new scene rows (a real SQLite error, raised at flush)."""
    with get_engine(settings.database_url).begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER refuse_scenes BEFORE INSERT ON scenes "
            "BEGIN SELECT RAISE(ABORT, 'scene rows refused'); END"
        )
    yield
    with get_engine(settings.database_url).begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER refuse_scenes")


def test_a_failed_database_step_removes_the_copied_files(
    settings: Settings, write_spec: SpecWriter, scenes_refused: None
) -> None:
    before = snapshot(settings)
    with pytest.raises(Exception, match="scene rows refused"):
        run_import(settings, write_spec(small_spec()))
    assert snapshot(settings) == before


def test_a_failed_reimport_keeps_the_files_of_the_first(
    settings: Settings, write_spec: SpecWriter
) -> None:
    spec = small_spec()
    run_import(settings, write_spec(spec))
    save_png(write_spec(spec).parent / "img/park.png", (3, 99, 3))  # one new file to copy
    with get_engine(settings.database_url).begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER refuse_assets BEFORE UPDATE ON assets "
            "BEGIN SELECT RAISE(ABORT, 'asset rows refused'); END"
        )
    before = snapshot(settings)
    with pytest.raises(Exception, match="asset rows refused"):
        run_import(settings, write_spec(spec, images=False))
    assert snapshot(settings) == before  # the new copy is gone, the first import's files stay


def test_a_failed_commit_removes_the_copied_files(
    settings: Settings, write_spec: SpecWriter
) -> None:
    def refuse(session: Session) -> None:
        raise RuntimeError("commit refused")

    before = snapshot(settings)
    event.listen(Session, "before_commit", refuse)
    try:
        with pytest.raises(RuntimeError, match="commit refused"):
            import_spec(
                Database(settings.database_url), write_spec(small_spec()), settings.media_root
            )
    finally:
        event.remove(Session, "before_commit", refuse)
    assert snapshot(settings) == before
    summary = import_spec(
        Database(settings.database_url), write_spec(small_spec()), settings.media_root
    )
    assert summary.created and project_count(settings) == 1
