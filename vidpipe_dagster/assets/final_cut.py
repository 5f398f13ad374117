"""``<project>/final_cut``: the project's clips joined in scene order into one mp4."""

import base64
import io

import dagster as dg
from sqlalchemy import select

from vidpipe_dagster.assets.partitions import ProjectPartitions, stage_key
from vidpipe_dagster.db.models import Project, Scene, VideoClip
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.domain.render import concat_mp4, probe_mp4, thumbnail_strip
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.media import MediaStoreResource


def build_final_cut(graph: ProjectGraph, parts: ProjectPartitions) -> dg.AssetsDefinition:
    @dg.asset(
        key=stage_key(graph, "final_cut"),
        group_name=graph.prefix,
        deps=[
            dg.AssetDep(stage_key(graph, "scene_clip"), partition_mapping=dg.AllPartitionMapping())
        ],
        description="Every scene's clip, in scene order, joined into one mp4 with its total cost.",
        code_version="1",
        kinds={"python", "video"},
        tags={"vidpipe/project": graph.slug},
    )
    def final_cut(
        context: dg.AssetExecutionContext, database: DatabaseResource, media: MediaStoreResource
    ) -> dg.MaterializeResult:
        with database.session() as session:
            project = session.scalars(select(Project).where(Project.slug == graph.slug)).one()
            rows = session.execute(
                select(Scene.scene_index, VideoClip)
                .outerjoin(VideoClip, VideoClip.scene_id == Scene.id)
                .where(Scene.project_id == project.id)
                .order_by(Scene.scene_index)
            ).all()
            aspect = project.aspect_ratio
        missing = [
            f"scene {i} ({clip.status if clip else 'never generated'})"
            for i, clip in rows
            if clip is None or clip.status != "done" or not clip.file_url
        ]
        paths = [media.path(clip.file_url) for _, clip in rows if clip and clip.file_url]
        missing += [f"file {p} is missing" for p in paths if not p.is_file()]
        if missing:
            raise dg.Failure(
                f"cannot cut {graph.slug}: missing clips: {', '.join(missing)}. Materialize "
                f"{graph.prefix}/scene_clip for those scenes first.",
                allow_retries=False,
            )
        data, starts = concat_mp4(paths, aspect_ratio=aspect)  # type: ignore[arg-type]
        rel = f"projects/{graph.slug}/final_cut.mp4"
        media.write(rel, data)
        info = probe_mp4(data)
        clips = [clip for _, clip in rows]
        previews = sorted({c.backend for c in clips if c.backend == "animatic"})
        total = round(sum(c.cost_usd or 0.0 for c in clips), 4)
        strip = thumbnail_strip(data, n=min(8, max(2, len(clips))))
        buffer = io.BytesIO()
        strip.convert("RGB").save(buffer, format="JPEG", quality=75)
        uri = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        note = "**contains animatic previews (local renders, not Veo)**\n\n" if previews else ""
        context.log.info(f"final cut {rel}: {info.duration_seconds:.2f} s, {len(clips)} scenes")
        return dg.MaterializeResult(
            metadata={
                "path": str(media.path(rel)),
                "duration_seconds": round(info.duration_seconds, 3),
                "scene_boundaries_seconds": dg.MetadataValue.json(
                    {str(i): round(t, 3) for (i, _), t in zip(rows, starts, strict=True)}
                ),
                "total_cost_usd": total,
                "contains_previews": bool(previews),
                "preview": dg.MetadataValue.md(f"{note}![final cut]({uri})"),
            },
            data_version=dg.DataVersion(
                "-".join((c.fingerprint or "")[:8] for c in clips)[:120] or "empty"
            ),
        )

    return final_cut
