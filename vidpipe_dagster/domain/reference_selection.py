"""Pick up to three reference images per scene, by placement role and shot type (the plan's rules).

Rules, in the plan's words:
- close-up: face crops of subject-role assets, then full-body subject assets, then environments;
- two-shot: up to two distinct characters from subject/interaction-target roles, then one
  environment;
- establishing: environments, then props and vehicles, characters last;
- anything else (medium, wide, ...): subject, then interaction target, then background.
Within a group the higher ``quality_score`` wins (ties keep placement order). A tag occupies one
slot, except that a close-up may use both the face crop and the full body of a subject. Face crops
are preferred for close-ups and two-shots, full bodies for every other shot. Tags the manifest lacks
are skipped. Leftover placements fill remaining slots in default order, never beyond three.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from vidpipe_dagster.domain.schemas import AssetPlacement, SceneManifestSchema

MAX_REFERENCES = 3
FACE_CROP_SHOTS = frozenset({"close_up", "extreme_close_up", "two_shot"})
CLOSE_UP_SHOTS = frozenset({"close_up", "extreme_close_up"})
ROLE_ORDER = {"subject": 0, "interaction_target": 1, "background": 2}


class ReferenceAsset(Protocol):
    """What selection reads from an asset (the ORM ``Asset`` satisfies it)."""

    manifest_tag: str
    asset_type: str
    quality_score: float | None
    is_face_crop: bool


A = TypeVar("A", bound=ReferenceAsset)


def _quality(asset: ReferenceAsset) -> float:
    return asset.quality_score if asset.quality_score is not None else 0.0


def _variant(candidates: Sequence[A], *, face_crop: bool) -> A:
    """The preferred crop of one tag: face crop or full body, best quality first."""
    preferred = [a for a in candidates if bool(a.is_face_crop) == face_crop]
    pool = preferred or list(candidates)
    return max(pool, key=_quality)


def _full_bodies(candidates: Sequence[A]) -> list[A]:
    return [a for a in candidates if not a.is_face_crop]


def select_references_for_scene(
    scene_manifest_json: Mapping[str, Any] | SceneManifestSchema | None,
    all_assets: Iterable[A],
) -> list[A]:
    """Return at most three assets to pass to the video model for this scene."""
    if not scene_manifest_json:
        return []
    manifest = (
        scene_manifest_json
        if isinstance(scene_manifest_json, SceneManifestSchema)
        else SceneManifestSchema.model_validate(scene_manifest_json)
    )
    by_tag: dict[str, list[A]] = {}
    for asset in all_assets:
        by_tag.setdefault(asset.manifest_tag, []).append(asset)

    placements: list[AssetPlacement] = []
    seen_tags: set[str] = set()
    for placement in manifest.placements:  # unknown tags are new-asset declarations: skip
        if placement.asset_tag in by_tag and placement.asset_tag not in seen_tags:
            placements.append(placement)
            seen_tags.add(placement.asset_tag)
    if not placements:
        return []

    shot = manifest.composition.shot_type
    prefer_face = shot in FACE_CROP_SHOTS
    order = {p.asset_tag: i for i, p in enumerate(placements)}

    def asset_type(p: AssetPlacement) -> str:
        return by_tag[p.asset_tag][0].asset_type

    def chosen(p: AssetPlacement) -> A:
        return _variant(by_tag[p.asset_tag], face_crop=prefer_face)

    def default_rank(p: AssetPlacement) -> tuple[int, float, int]:
        return (ROLE_ORDER[p.role], -_quality(chosen(p)), order[p.asset_tag])

    picks: list[A] = []
    used_tags: set[str] = set()

    def take(asset: A, *, allow_same_tag: bool = False) -> None:
        if len(picks) >= MAX_REFERENCES or any(asset is p for p in picks):
            return
        if asset.manifest_tag in used_tags and not allow_same_tag:
            return
        picks.append(asset)
        used_tags.add(asset.manifest_tag)

    def by_quality(items: Iterable[AssetPlacement], pick: Callable[[AssetPlacement], A]) -> list[A]:
        ranked = sorted(items, key=lambda p: (-_quality(pick(p)), order[p.asset_tag]))
        return [pick(p) for p in ranked]

    if shot in CLOSE_UP_SHOTS:
        subjects = [p for p in placements if p.role == "subject"]
        faces = [a for p in subjects for a in by_tag[p.asset_tag] if a.is_face_crop]
        for asset in sorted(faces, key=lambda a: (-_quality(a), order[a.manifest_tag])):
            take(asset)
        bodies = [
            max(b, key=_quality) for p in subjects if (b := _full_bodies(by_tag[p.asset_tag]))
        ]
        for asset in sorted(bodies, key=lambda a: (-_quality(a), order[a.manifest_tag])):
            take(asset, allow_same_tag=True)  # a different crop of a subject may take a 2nd slot
        envs = [p for p in placements if asset_type(p) == "ENVIRONMENT"]
        for asset in by_quality(envs, chosen):
            take(asset)
    elif shot == "two_shot":
        people = [
            p
            for p in placements
            if asset_type(p) == "CHARACTER" and p.role in ("subject", "interaction_target")
        ]
        for p in sorted(people, key=default_rank)[:2]:
            take(chosen(p))
        envs = [p for p in placements if asset_type(p) == "ENVIRONMENT"]
        for asset in by_quality(envs, chosen)[:1]:
            take(asset)
    elif shot == "establishing":
        type_order = {"ENVIRONMENT": 0, "PROP": 1, "VEHICLE": 1}
        ranked = sorted(
            placements,
            key=lambda p: (
                type_order.get(asset_type(p), 2),
                -_quality(chosen(p)),
                order[p.asset_tag],
            ),
        )
        for p in ranked:
            take(chosen(p))

    for p in sorted(placements, key=default_rank):  # default order, and leftovers elsewhere
        take(chosen(p))
    return picks


@dataclass(frozen=True)
class ChosenReference:
    """The image a selected asset contributes: its primary clean sheet, else its original."""

    tag: str
    asset_key: str
    face_crop: bool
    image_url: str | None  # relative to the media root
    source: str  # "original" or the clean sheet's tier, e.g. "tier2_rembg"

    def caption(self) -> str:
        crop = "face crop" if self.face_crop else "full body"
        return f"{self.tag} ({crop}, {self.source.replace('_', ' ')})"
