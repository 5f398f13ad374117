"""What ``<project>/scene_references`` shows in Dagster: each scene's chosen references as they are
selected, and its checks, per scene. The work is ``stages.scene_references``."""

from collections.abc import Iterator, Sequence

import dagster as dg

from vidpipe_dagster.assets import metadata as md
from vidpipe_dagster.assets.provenance import InputsOf, InputVersions, materialization
from vidpipe_dagster.stages import scene_references as stage
from vidpipe_dagster.stages.context import StageContext

CODE_VERSION = stage.CODE_VERSION
CHECK_DESCRIPTIONS = {
    stage.CHECK_AT_MOST_THREE: "Veo takes at most 3 reference images.",
    stage.CHECK_TAGS_IN_MANIFEST: "Every selected tag exists in the project's manifest.",
    stage.CHECK_PERSISTED: "The tags read back from the database equal the selection the "
    "manifest gives today.",
}


def events(
    context: dg.AssetExecutionContext,
    ctx: StageContext,
    slug: str,
    key: dg.AssetKey,
    keys: Sequence[str],
    inputs_of: InputsOf,
    sources: set[dg.AssetKey],
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """Select, persist and report each scene, then its checks (the persisted one read back)."""
    # the inputs' versions as the selection reads them, for every scene in one read
    versions = InputVersions(context.instance, keys, inputs_of, sources)
    selections = stage.select_scenes(ctx, slug, keys)
    for scene in selections:
        yield materialization(
            key,
            scene.key,
            data_version=scene.version,
            code_version=CODE_VERSION,
            input_tags=versions.tags(scene.key),
            metadata={
                "selected_reference_tags": dg.MetadataValue.json(scene.tags),
                "references": md.references_table(scene.chosen),
                "reference_count": len(scene.tags),
                "shot_type": scene.shot_type or "n/a",
                "reason": scene.reason,
                "skipped_undeclared_tags": dg.MetadataValue.json(scene.undeclared),
                "preview": dg.MetadataValue.md(_preview(ctx, scene)),
            },
        )
    persisted = stage.persisted_checks(ctx, slug, [s.key for s in selections])
    outcomes = {
        scene.key: [*stage.selection_checks(scene), persisted[scene.key][-1]]
        for scene in selections
    }
    yield from md.evaluations(context, key, outcomes)


def read_back(
    context: dg.AssetExecutionContext, ctx: StageContext, slug: str, key: dg.AssetKey
) -> Iterator[dg.AssetCheckEvaluation]:
    """The checks alone (a person ran them from the UI): everything read back from storage."""
    yield from md.evaluations(
        context, key, stage.persisted_checks(ctx, slug, context.partition_keys)
    )


def _preview(ctx: StageContext, scene: stage.SceneSelection) -> str:
    if not scene.chosen:
        return "_no references for this scene_"
    items, problems = stage.reference_images(ctx, scene.chosen)
    notes = "\n".join(f"- {problem}" for problem in problems)
    return md.gallery(items).value + (f"\n\n{notes}" if notes else "")
