"""``<project>/final_cut``: the project's clips joined in scene order into one mp4, with the
editorial timeline, a contact sheet and the identity matrix beside it.

The work is ``stages.final_cut``; this module is its Dagster face, and says when the cut is due
(``final_cut_condition``: evaluated by the sensor ``vidpipe_final_cut_automation``, stopped by
default).
"""

import dagster as dg
from PIL import Image
from pydantic import Field

from vidpipe_dagster.assets import metadata as md
from vidpipe_dagster.assets.partitions import ProjectPartitions
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.domain.preview import CUT_NOTE
from vidpipe_dagster.domain.timeline import TIMELINE_FORMATS
from vidpipe_dagster.jobs import PROJECT_TAG, stage_key
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource
from vidpipe_dagster.stages import final_cut as stage
from vidpipe_dagster.stages.context import StageError

PREVIEW_WIDTH = 560  # px: the widest image the asset's metadata panel shows uncut


class FinalCutConfig(dg.Config):
    """Run config for the cut. By default clips that share a layout are stream-copied."""

    height: int | None = Field(
        default=None,
        description="Short side in pixels when the cut is re-encoded; never below the largest "
        "clip's (default: the largest clip's).",
    )
    force_reencode: bool = Field(
        default=False,
        description="Re-encode even when the clips share a layout (default: stream copy).",
    )
    timeline_formats: list[str] = Field(
        default=list(TIMELINE_FORMATS),
        description="OpenTimelineIO files to write beside the cut: otio, otioz, otiod.",
    )

    def options(self) -> stage.FinalCutOptions:
        return stage.FinalCutOptions(
            height=self.height,
            force_reencode=self.force_reencode,
            timeline_formats=tuple(self.timeline_formats),
        )


def final_cut_condition() -> dg.AutomationCondition:
    """Cut again when a scene clip changed, once every scene has a clip, none is being made, and
    every scene clip passes its blocking checks (``characters_recognisable`` with
    ``identity_check: block``).

    Not ``all_deps_blocking_checks_passed()``: for a dependency on *all* partitions of
    ``scene_clip``, Dagster's dependency conditions hold when *any* partition matches, so one
    passing scene would let the cut through while another scene's blocking check failed. Here
    the cut waits while any scene partition has a blocking check that has not passed (failed, or
    not evaluated on its current clip): the negation of "any dependency partition matches".
    """
    unpassed = dg.AutomationCondition.any_checks_match(
        ~dg.AutomationCondition.check_passed() & ~dg.AutomationCondition.will_be_requested(),
        blocking_only=True,
    ).with_label("a blocking check has not passed")
    held_back = dg.AutomationCondition.any_deps_match(unpassed).with_label(
        "a scene clip has a blocking check that has not passed"
    )
    return (dg.AutomationCondition.eager() & ~held_back).with_label(
        "eager, once every scene clip passes its blocking checks"
    )


# Built once, not per project: a typed ``config`` parameter would make Dagster infer this schema
# again for every project's asset; the asset rebuilds the typed config from ``op_config``.
CONFIG_SCHEMA = FinalCutConfig.to_fields_dict()


def build_final_cut(
    graph: ProjectGraph, parts: ProjectPartitions, owners: list[str]
) -> dg.AssetsDefinition:
    @dg.asset(
        key=stage_key(graph, "final_cut"),
        group_name=graph.prefix,
        deps=[
            dg.AssetDep(stage_key(graph, "scene_clip"), partition_mapping=dg.AllPartitionMapping())
        ],
        description=(
            "Every scene's clip, in scene order, joined into one mp4 (stream copy when the clips "
            "allow it) with chapters, an OpenTimelineIO timeline and a contact sheet."
        ),
        code_version="2",
        kinds={"pyav", "opentimelineio", "video", "sqlalchemy"},
        tags={PROJECT_TAG: graph.slug},
        owners=owners,
        automation_condition=final_cut_condition(),
        config_schema=CONFIG_SCHEMA,
    )
    def final_cut(
        context: dg.AssetExecutionContext,
        database: DatabaseResource,
        media: MediaStoreResource,
    ) -> dg.MaterializeResult:
        ctx = md.stage_context(context.log, database, media)
        try:
            options = FinalCutConfig(**context.op_execution_context.op_config).options()
            cut = stage.make_final_cut(ctx, graph.slug, graph.prefix, options)
        except StageError as exc:
            raise md.failure(exc) from exc
        note = f"**{CUT_NOTE}**\n\n" if cut.contains_previews else ""
        preview = note + md.thumbnail(_fit_width(cut.contact_sheet), "contact sheet", size=None)
        metadata = {
            "path": str(ctx.media.path(cut.relative_path)),
            "cut": cut.reason,
            "cut_mode": cut.mode,
            "duration_seconds": round(cut.info.duration_seconds, 3),
            "resolution": f"{cut.info.width}x{cut.info.height}",
            "fps": round(cut.info.fps, 3),
            "has_audio": cut.info.has_audio,
            "size_mb": round(ctx.media.path(cut.relative_path).stat().st_size / 1e6, 2),
            "scene_boundaries_seconds": dg.MetadataValue.json(cut.scene_starts),
            "scene_markers": dg.MetadataValue.json([m.as_dict() for m in cut.markers]),
            "chapters": len(cut.markers),
            "total_cost_usd": cut.total_cost_usd,
            "contains_previews": cut.contains_previews,
            "contact_sheet": str(ctx.media.path(cut.contact_sheet_path)),
            "preview": dg.MetadataValue.md(preview),
        }
        if "otio" in cut.timeline_paths:
            metadata["timeline"] = str(ctx.media.path(cut.timeline_paths["otio"]))
        if cut.timeline_paths:
            metadata["timeline_files"] = dg.MetadataValue.json(
                {fmt: str(ctx.media.path(rel)) for fmt, rel in cut.timeline_paths.items()}
            )
        # scenes x characters: green recognised, red not, gray not scored (and why)
        if cut.identity_matrix_path is not None:
            matrix_path = ctx.media.path(cut.identity_matrix_path)
            with Image.open(matrix_path) as matrix:
                metadata["identity_matrix"] = dg.MetadataValue.md(
                    md.thumbnail(_fit_width(matrix), "identity matrix", size=None)
                )
            metadata["identity_matrix_path"] = str(matrix_path)
        if cut.identity_summary is not None:
            metadata["identity"] = cut.identity_summary
        return dg.MaterializeResult(
            metadata=metadata, data_version=dg.DataVersion(cut.data_version)
        )

    return final_cut


def _fit_width(image: Image.Image, width: int = PREVIEW_WIDTH) -> Image.Image:
    """Scaled down to ``width`` so the metadata panel shows it whole (never scaled up)."""
    if image.width <= width:
        return image
    height = max(1, round(image.height * width / image.width))
    return image.resize((width, height), Image.Resampling.LANCZOS)
