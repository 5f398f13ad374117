"""A project whose model retires after import: definitions still load, and the project's
``model_available`` check fails with the catalog's reason, reported without any run."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

from tests.conftest import small_spec
from vidpipe_dagster.definitions import default_resources, defs
from vidpipe_dagster.domain.catalog import PACKAGED_CATALOG
from vidpipe_dagster.sensors import INPUTS_SENSOR
from vidpipe_dagster.settings import Settings

CHECK = dg.AssetCheckKey(dg.AssetKey(["spring_ad", "storyboard"]), "model_available")


def retiring_catalog(tmp_path: Path) -> Path:
    """The packaged catalog with Veo 3.1 retired (as a user's catalog file)."""
    packaged = Path(__file__).parents[1] / "vidpipe_dagster" / "domain" / PACKAGED_CATALOG
    data = yaml.safe_load(packaged.read_text(encoding="utf-8"))
    entry = data["video_models"]["veo-3.1-generate-001"]
    entry["status"], entry["retired_on"] = "retired", "2026-11-30"
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_retired_model_fails_its_check_without_a_crash(
    settings: Settings, imported, tmp_path: Path
) -> None:
    imported(small_spec("spring-ad"))
    definitions = defs()  # loads: a retired model is reported, never raised
    sensor = definitions.get_sensor_def(INPUTS_SENSOR)
    with dg.instance_for_test() as instance:
        for catalog, passed in ((None, True), (retiring_catalog(tmp_path), False)):
            changed = settings.replace(model_catalog_path=catalog)
            with dg.build_sensor_context(
                instance=instance, resources=default_resources(changed)
            ) as context:
                result = sensor(context)
            [evaluation] = [
                e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)
            ]
            assert evaluation.asset_check_key == CHECK and evaluation.passed is passed
        assert "project.video_model 'veo-3.1-generate-001'" in (evaluation.description or "")
        assert "retired" in (evaluation.description or "")
        assert "import it again" in (evaluation.description or "")


def test_the_check_runs_on_its_own_as_the_ui_launches_it(
    settings: Settings, imported, tmp_path: Path
) -> None:
    """Executed from the UI (a run selecting only the check): it runs, passes on the packaged
    catalog and fails naming the retired model on the user's catalog. It sits on the storyboard,
    so runs that materialize clips do not carry it as a SKIPPED step."""
    imported(small_spec("spring-ad"))
    definitions = defs()
    job = definitions.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection={CHECK}
    )
    for catalog, passed in ((None, True), (retiring_catalog(tmp_path), False)):
        resources = default_resources(settings.replace(model_catalog_path=catalog))
        with dg.instance_for_test() as instance:
            result = job.execute_in_process(
                instance=instance,
                resources=resources,
                raise_on_error=False,
            )
            [evaluation] = result.get_asset_check_evaluations()
        assert evaluation.asset_check_key == CHECK and evaluation.passed is passed
    assert "retired" in (evaluation.description or "")
    scene_clip = dg.AssetKey(["spring_ad", "scene_clip"])
    checks = definitions.resolve_asset_graph().asset_check_keys
    assert CHECK in checks and dg.AssetCheckKey(scene_clip, "model_available") not in checks
