"""``model_available`` on each project's ``storyboard``: can its clips still be generated with the
models it names? The inputs sensor reports it whenever the answer changes (so a model retiring
shows as a failing check without anyone running anything); a person can run it from the UI.

It sits on the source that names the models, not on ``scene_clip``: a check on ``scene_clip``
joins every run that materializes clips, where it waits on an output the per-scene step never
yields (it reports one materialization per scene instead) and shows as SKIPPED."""

import dagster as dg

from vidpipe_dagster.assets import metadata as md
from vidpipe_dagster.db.project_graphs import ProjectGraph
from vidpipe_dagster.jobs import stage_key
from vidpipe_dagster.resources.database import DatabaseResource
from vidpipe_dagster.resources.vertex import VertexResource
from vidpipe_dagster.stages.model_check import CHECK_MODEL_AVAILABLE, model_check, model_problems


def build_model_check(graph: ProjectGraph) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=stage_key(graph, "storyboard"),
        name=CHECK_MODEL_AVAILABLE,
        description="The project's video model (and every scene's own) is in the model catalog "
        "and not retired, with the project's resolution and takes.",
    )
    def model_available(database: DatabaseResource, vertex: VertexResource) -> dg.AssetCheckResult:
        catalog = vertex.backends().catalog()
        problems = model_problems(database.database(), catalog, [graph.slug]).get(graph.slug, [])
        return md.check_result(model_check(problems, graph.slug))

    return model_available


def evaluation(graph: ProjectGraph, problems: list[str]) -> dg.AssetCheckEvaluation:
    """The check's result as an event the sensor reports without a run."""
    outcome = model_check(problems, graph.slug)
    return dg.AssetCheckEvaluation(
        asset_key=stage_key(graph, "storyboard"),
        check_name=outcome.name,
        passed=outcome.passed,
        description=outcome.description,
    )
