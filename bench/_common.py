"""What the benches share: a checkout of an earlier revision, a measurement in a fresh
interpreter against a checkout, interleaved timing, and the photographic fixture (a cast of five
manifest assets with a primary clean sheet).

Imported by the bench scripts beside it (their folder is first on ``sys.path``); nothing here
imports ``vidpipe_dagster`` at module level, so a child measuring an earlier checkout loads that
checkout's package, not this one's.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHOTS = ("close_up", "wide_shot", "medium_shot", "establishing", "two_shot")
CAST = (  # asset id, tag, type, face crop of
    ("hero", "CHAR_01", "CHARACTER", None),
    ("hero_face", "CHAR_01", "CHARACTER", "hero"),
    ("sidekick", "CHAR_02", "CHARACTER", None),
    ("city", "ENV_01", "ENVIRONMENT", None),
    ("bike", "PROP_01", "PROP", None),
)


def export(revision: str, folder: Path) -> Path | None:
    """``revision`` of this repository unpacked in ``folder`` (None, said why, when git cannot)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", revision], capture_output=True, check=False
    )
    if archive.returncode != 0:
        print(f"(no 'before': git archive {revision} failed: {archive.stderr.decode()[:200]})")
        return None
    folder.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def child(script: str, tree: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run ``script`` with ``args`` in a fresh interpreter whose ``vidpipe_dagster`` is the one in
    ``tree``; its last line of output is the JSON it measured."""
    done = subprocess.run(
        [sys.executable, str(Path(script).resolve()), *args],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} against {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ``ru_maxrss``: Linux carries a parent's
    peak over fork and exec into the child's ``ru_maxrss``."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(rounds: int, *fns: Callable[[], object]) -> list[list[float]]:
    """Each function's time in every round, the functions interleaved round by round so that
    load from other processes on a shared machine falls on all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for index, fn in enumerate(fns):
            started = time.perf_counter()
            fn()
            times[index].append(time.perf_counter() - started)
    return times


def paired_ratio(ours: list[float], bare: list[float]) -> float:
    """Median over rounds of ours / bare in the same round (robust to a busy neighbour)."""
    return statistics.median(o / b for o, b in zip(ours, bare, strict=True))


def photo(size: tuple[int, int], shift: int) -> bytes:
    """A photographic PNG (decodes like a real keyframe, unlike a flat color): scikit-image's
    astronaut, shifted and tinted by ``shift`` so that every frame differs."""
    import numpy as np
    import skimage.data
    from PIL import Image

    base = Image.fromarray(skimage.data.astronaut()).resize(size)
    pixels = np.roll(np.asarray(base), shift * 7, axis=1)
    pixels = (pixels.astype(np.int16) + shift) % 256
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, "PNG", compress_level=1)
    return out.getvalue()


def stored_photo(media: Any, folder: str, size: tuple[int, int], shift: int) -> tuple[str, str]:
    """``photo`` written to the media store under ``folder`` as an import names it: (path, hash)."""
    data = photo(size, shift)
    digest = hashlib.sha256(data).hexdigest()
    rel = f"{folder}/{digest[:20]}.png"
    media.write(rel, data)
    return rel, digest


def add_cast(
    session: Any, media: Any, name: str, originals: list[tuple[str, str]], sheet: bytes
) -> tuple[Any, dict[str, Any]]:
    """A manifest of ``CAST`` (``originals``: each asset's photo, path and hash) whose hero has a
    primary Tier 2 clean sheet (``sheet``), as an import and a clean-sheet run leave them.
    Returns the manifest and its assets by id."""
    from vidpipe_dagster.db.models import Asset, AssetCleanReference, Manifest

    manifest = Manifest(name=name)
    session.add(manifest)
    session.flush()
    assets: dict[str, Any] = {}
    for (key, tag, kind, crop_of), (rel, digest) in zip(CAST, originals, strict=True):
        asset = Asset(
            manifest_id=manifest.id,
            asset_key=key,
            manifest_tag=tag,
            asset_type=kind,
            reference_image_url=rel,
            original_sha256=digest,
            quality_score=7.0,
            is_face_crop=crop_of is not None,
            source_asset_id=assets[crop_of].id if crop_of else None,
        )
        session.add(asset)
        session.flush()
        assets[key] = asset
    hero = assets["hero"]
    sheet_rel = f"clean_sheets/tier2_{hero.id}.png"
    media.write(sheet_rel, sheet)
    session.add(
        AssetCleanReference(
            asset_id=hero.id, tier="tier2_rembg", clean_image_url=sheet_rel, is_primary=True
        )
    )
    return manifest, assets


def add_scene(
    session: Any,
    project: Any,
    index: int,
    keyframes: tuple[tuple[str, str], tuple[str, str]],
    placements: dict[str, Any],
    assets: dict[str, Any],
) -> Any:
    """A scene with its start and end keyframes (path, hash) and its manifest ``placements``,
    its references selected as the references stage selects them. Returns the scene."""
    from vidpipe_dagster.db.models import Keyframe, Scene, SceneManifest
    from vidpipe_dagster.domain.reference_selection import select_references_for_scene

    scene = Scene(project_id=project.id, scene_index=index, prompt=f"{project.slug} {index}")
    session.add(scene)
    session.flush()
    for position, (rel, digest) in zip(("start", "end"), keyframes, strict=True):
        session.add(
            Keyframe(scene_id=scene.id, position=position, image_url=rel, content_sha256=digest)
        )
    ordered = sorted(assets.values(), key=lambda a: a.asset_key)
    picks = select_references_for_scene(placements, ordered)
    session.add(
        SceneManifest(
            project_id=project.id,
            scene_index=index,
            manifest_json=placements,
            selected_reference_tags=[a.manifest_tag for a in picks],
        )
    )
    return scene


class Counters:
    """SQL statements sent on ``url``'s engine (each also counted under ``owner(frame)`` of its
    caller, when given) and images Pillow opens, while ``counting``."""

    def __init__(self, url: str, owner: Callable[[Any], str] | None = None) -> None:
        from PIL import Image
        from sqlalchemy import event

        from vidpipe_dagster.db.session import get_engine

        self.statements = 0
        self.by_owner: dict[str, int] = {}
        self.opens = 0
        self.active = False
        real_open = Image.open

        def count_open(*args: Any, **kwargs: Any) -> Any:
            if self.active:
                self.opens += 1
            return real_open(*args, **kwargs)

        def count_sql(*_args: Any) -> None:
            if self.active:
                self.statements += 1
                if owner is not None:
                    name = owner(sys._getframe(1))
                    self.by_owner[name] = self.by_owner.get(name, 0) + 1

        Image.open = count_open  # type: ignore[assignment]
        event.listen(get_engine(url), "before_cursor_execute", count_sql)

    @contextlib.contextmanager
    def counting(self) -> Iterator[Counters]:
        self.active = True
        try:
            yield self
        finally:
            self.active = False
