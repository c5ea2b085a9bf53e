"""End to end: the real trigger and the real trainer against emulated AWS, one scenario of `make demo` per test.

GIVEN the stack provisioned in moto from terraform/ (one server for the module, reset per test) and a
small synthetic dataset in the bucket, WHEN a scenario runs (a push, a duplicate delivery, a Spot
interruption, a retrain request, a push that fails the gate), THEN the emulated ECS holds exactly the
tasks it should, on the digest-pinned revision, and the store holds the run records, the published
versions and the champion pointer the contracts describe.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pushtrain_local import scenarios, summary
from pushtrain_local.emulator import Emulator, running
from pushtrain_local.pipeline import EXIT_INTERRUPTED, DemoSettings, Pipeline, Reporter, open_pipeline
from tfread.terraform import TerraformModule
from trainer.gate import read_champion
from trainer.runs_cli import read_runs
from trainer.store import LocalStore

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
VERSION_FILES = {"report.md", "curves.png", "metrics.json", "manifest.json", "model.pt"}


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    region = TerraformModule.load(REPO / "terraform").default_region()
    with running(region) as server:
        yield server


# Half the demo's data and a lower floor keep each training to a few seconds: 2 epochs on 1,000
# synthetic images reach ~70 % (the demo's 2,000 reach ~99 %), the weak recipe stays near chance.
TEST_FLOOR = "0.5"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> DemoSettings:
    demo = DemoSettings()
    return replace(
        demo,
        train_images=1000,
        test_images=200,
        task_parameters={**demo.task_parameters, "TRAINER_ACCURACY_FLOOR": TEST_FLOOR},
        workdir=tmp_path_factory.mktemp("demo"),  # one per module: the dataset is generated once
    )


@pytest.fixture
def pipeline(emulator: Emulator, settings: DemoSettings) -> Iterator[Pipeline]:
    with open_pipeline(settings, Reporter(quiet=True), emulator=emulator) as provisioned:
        yield provisioned


def _task_definition(pipeline: Pipeline, arn: str) -> dict[str, Any]:
    return pipeline.ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]


def _version_files(pipeline: Pipeline, version: str) -> set[str]:
    prefix = f"models/{pipeline.model_name}/{version}/"
    listed = pipeline.s3.list_objects_v2(Bucket=pipeline.stack.names.bucket, Prefix=prefix)
    return {item["Key"][len(prefix) :] for item in listed.get("Contents", [])}


def test_push_trains_on_the_pinned_digest_and_promotes_then_a_weak_push_leaves_the_champion(
    pipeline: Pipeline,
) -> None:
    # One test for both pushes: the gate scenario needs a champion, and training one costs seconds.
    # WHEN an image is pushed and its event delivered
    outcome = scenarios.push(pipeline)

    # THEN exactly one task ran, on a revision whose image is the pushed digest
    assert len(pipeline.task_arns()) == 1
    (run,) = outcome.runs
    assert run.exit_code == 0
    definition = _task_definition(pipeline, run.task_definition_arn)
    repository_uri = pipeline.resources.repository_uri if pipeline.resources else ""
    assert definition["containerDefinitions"][0]["image"] == f"{repository_uri}@{outcome.digest}"
    assert definition["revision"] >= 2  # the base revision is Terraform's; the pinned copy comes after it
    # ... the run record says it succeeded on its first attempt, and names the version
    record = pipeline.status(run.run_id)
    assert record is not None
    assert (record["state"], record["attempt"], record["source"]) == ("succeeded", 1, "push")
    assert record["task_arn"] == run.task_arn
    version = record["version"]
    # ... the version is complete, records the digest, and is the champion
    assert _version_files(pipeline, version) >= VERSION_FILES
    manifest = pipeline.read_json(f"models/{pipeline.model_name}/{version}/manifest.json") or {}
    assert manifest["image_digest"] == outcome.digest
    assert outcome.champion_before is None
    assert (outcome.champion_after or {}).get("version") == version
    # ... and the demo copied the report and curves out of the emulated bucket
    copied = pipeline.settings.workdir / "models" / pipeline.model_name / version
    assert (copied / "report.md").is_file()
    assert (copied / "curves.png").is_file()
    # ... and the report it points to is the one with the gate's decision (the version's own predates the gate)
    gated_report = pipeline.settings.workdir / "reports" / f"{run.run_id}.md"
    assert "**Gate: promoted to champion**" in gated_report.read_text()
    # ... the trainer's success message reached the notifications topic, and the demo's verdict is PASS
    (subject,) = pipeline.notifications()
    assert subject.endswith("promoted to champion")
    assert summary.judge(pipeline, outcome).passed

    # WHEN the next push carries a deliberately weak recipe
    gated = scenarios.gate_fail(pipeline)

    # THEN its version is published but below the floor, and the champion pointer did not move
    assert gated.champion_before == outcome.champion_after
    assert gated.champion_after == gated.champion_before
    (weak,) = gated.runs
    assert weak.exit_code == 0
    weak_record = pipeline.status(weak.run_id) or {}
    assert weak_record["state"] == "succeeded"
    assert weak_record["version"] not in {None, version}
    metrics = pipeline.read_json(f"models/{pipeline.model_name}/{weak_record['version']}/metrics.json") or {}
    assert metrics["accuracy"] < float(pipeline.task_environment()["TRAINER_ACCURACY_FLOOR"])
    assert len(pipeline.task_arns()) == 2
    assert summary.judge(pipeline, gated).passed
    # ... and the store the demo keeps answers the trainer's own commands once the emulator is gone
    kept = LocalStore(pipeline.export_store())
    assert {row.run_id for row in read_runs(kept)} == {run.run_id, weak.run_id}
    assert (read_champion(kept, pipeline.model_name)[0] or {}).get("version") == version


def test_duplicate_push_event_starts_no_second_task(pipeline: Pipeline) -> None:
    outcome = scenarios.duplicate(pipeline)

    assert len(pipeline.task_arns()) == 1
    first, second = outcome.answers
    assert first["run_id"] == second["run_id"]
    assert first["outcome"] == "started"
    assert second["outcome"] != "started"
    record = pipeline.status(first["run_id"])
    assert record is not None
    assert record["attempt"] == 1
    assert record["task_arn"] == pipeline.task_arns()[0]


def test_spot_interruption_resumes_the_same_run_and_completes(pipeline: Pipeline) -> None:
    outcome = scenarios.spot(pipeline)

    # THEN two tasks ran for one run: attempt 1 interrupted (75), attempt 2 completed, same pinned revision
    first, second = outcome.runs
    assert len(pipeline.task_arns()) == 2
    assert (first.exit_code, second.exit_code) == (EXIT_INTERRUPTED, 0)
    assert first.run_id == second.run_id
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.task_definition_arn == second.task_definition_arn
    # ... the second attempt resumed from the checkpoint instead of starting over
    assert any("resum" in line for line in second.output)
    # ... and the record shows the interruption and the success
    record = pipeline.status(second.run_id) or {}
    assert (record["state"], record["attempt"]) == ("succeeded", 2)
    assert "interrupted" in [entry["state"] for entry in record["history"]]
    assert (outcome.champion_after or {}).get("version") == record["version"]


def test_retrain_request_trains_the_image_again_with_its_parameters(pipeline: Pipeline) -> None:
    outcome = scenarios.retrain(pipeline)

    (answer,) = outcome.answers
    (run,) = outcome.runs
    assert answer["run_id"].startswith("retrain-4242-")
    assert answer["image_digest"] == outcome.digest
    assert answer["task_arn"] == run.task_arn
    assert answer["status_key"] == f"runs/{answer['run_id']}/status.json"
    assert run.exit_code == 0
    record = pipeline.status(run.run_id) or {}
    assert (record["state"], record["source"]) == ("succeeded", "retrain")
    manifest = pipeline.read_json(f"models/{pipeline.model_name}/{record['version']}/manifest.json") or {}
    for name, value in scenarios.RETRAIN_PARAMS.items():
        assert manifest["config"][name] == value
