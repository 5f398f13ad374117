"""Reference selection per scene: choose up to 3 (``domain.reference_selection``), persist the
tags to ``SceneManifest.selected_reference_tags``, and read them back as a later stage will.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from vidpipe_dagster.db import queries
from vidpipe_dagster.domain.media import MediaError, read_image_bytes
from vidpipe_dagster.domain.reference_selection import (
    MAX_REFERENCES,
    ChosenReference,
)
from vidpipe_dagster.stages.context import CheckOutcome, StageContext

# What a selection is made of; bump it when the rules choose differently for the same inputs
# (tests/test_code_versions.py fails until you do).
CODE_VERSION = "selection-2"
CHECK_AT_MOST_THREE = "at_most_three_references"
CHECK_TAGS_IN_MANIFEST = "selected_tags_are_in_manifest"
CHECK_PERSISTED = "persisted_tags_match_selection"


@dataclass(frozen=True)
class SceneSelection:
    key: str
    tags: list[str]
    chosen: list[ChosenReference]
    manifest_tags: set[str]
    undeclared: list[str]
    shot_type: str | None
    reason: str

    @property
    def version(self) -> str:
        """Changes when the selection or any chosen image changes, so clips downstream go stale."""
        payload = [(c.tag, c.asset_key, c.image_url, c.source) for c in self.chosen]
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:24]


def select_scene(ctx: StageContext, slug: str, key: str) -> SceneSelection:
    """Select one scene's references and persist the tags (a later stage reads them back)."""
    index = int(key)
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        manifest_assets = list(project.manifest.assets) if project.manifest else []
        scene_manifest = queries.scene_manifest(session, project.id, index)
        manifest_json = (scene_manifest.manifest_json or {}) if scene_manifest else {}
        selected = queries.current_selection(session, project, index) or []
        chosen = [queries.chosen_reference(session, asset) for asset in selected]
        tags = [asset.manifest_tag for asset in selected]
        if scene_manifest is not None:
            scene_manifest.selected_reference_tags = tags
        manifest_tags = {asset.manifest_tag for asset in manifest_assets}
    shot_type = manifest_json.get("composition", {}).get("shot_type") if scene_manifest else None
    if not manifest_assets:
        reason = "project has no manifest: no references (frames only)"
    elif scene_manifest is None:
        reason = "scene has no placements: no references"
    else:
        reason = f"{len(tags)} reference(s) for a {shot_type} shot"
    placed = {p.get("asset_tag") for p in manifest_json.get("placements", [])}
    return SceneSelection(
        key=key,
        tags=tags,
        chosen=chosen,
        manifest_tags=manifest_tags,
        undeclared=sorted(t for t in placed - manifest_tags if t),
        shot_type=shot_type,
        reason=reason,
    )


def select_scenes(ctx: StageContext, slug: str, keys: Sequence[str]) -> list[SceneSelection]:
    selections = []
    for key in keys:
        scene = select_scene(ctx, slug, key)
        ctx.log.info(f"scene {key}: {scene.reason}: {scene.tags}")
        if scene.undeclared:
            ctx.log.info(f"scene {key}: skipped undeclared tags {scene.undeclared}")
        selections.append(scene)
    return selections


def selection_checks(scene: SceneSelection) -> list[CheckOutcome]:
    """The cheap checks on one scene's selection (the read-back one is ``persisted_checks``)."""
    outside = sorted(set(scene.tags) - scene.manifest_tags)
    return [
        CheckOutcome(
            CHECK_AT_MOST_THREE,
            passed=len(scene.tags) <= MAX_REFERENCES,
            metadata={"count": len(scene.tags)},
        ),
        CheckOutcome(
            CHECK_TAGS_IN_MANIFEST,
            passed=not outside,
            description=f"not in the manifest: {outside}" if outside else None,
            metadata={"not_in_manifest": outside},
        ),
    ]


def persisted_checks(
    ctx: StageContext, slug: str, keys: Sequence[str]
) -> dict[str, list[CheckOutcome]]:
    """Read back, per scene: the stored tags equal the selection the manifest gives today (None:
    never selected, or cleared by a re-import that changed the placements), and the cheap checks
    on what is stored (a person can run these alone from the UI)."""
    outcomes: dict[str, list[CheckOutcome]] = {}
    with ctx.database.session() as session:
        project = queries.project_by_slug(session, slug)
        assets = project.manifest.assets if project.manifest else []
        manifest_tags = {a.manifest_tag for a in assets}
        rows = queries.scene_manifests(session, project.id)
        for key in keys:
            row = rows.get(int(key))
            selected = queries.current_selection(session, project, int(key)) or []
            today = [a.manifest_tag for a in selected]
            stored = row.selected_reference_tags if row is not None else []
            persisted = CheckOutcome(
                CHECK_PERSISTED,
                passed=stored == today,
                description=None
                if stored == today
                else f"stored {stored}, the manifest selects {today} today: materialize "
                "scene_references for this scene again",
                metadata={"persisted": stored, "selection_today": today},
            )
            cheap = SceneSelection(key, stored or [], [], manifest_tags, [], None, "read back")
            outcomes[key] = [*selection_checks(cheap), persisted]
    return outcomes


def reference_images(
    ctx: StageContext, chosen: Sequence[ChosenReference]
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """(caption, bytes) of each chosen image for previews, and what could not be read."""
    items: list[tuple[str, bytes]] = []
    problems: list[str] = []
    for ref in chosen:
        try:
            data = read_image_bytes(ctx.media.path(ref.image_url or ""), label=ref.caption())
        except MediaError as exc:
            problems.append(str(exc))
            continue
        items.append((ref.caption(), data))
    return items, problems
