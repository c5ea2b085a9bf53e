"""The `docker-build-push` composite action's scripts, against a recording fake `aws`.

GIVEN tags, a repository and (when pushing) an ECR that has or lacks the first tag, WHEN
prepare.sh and finish.sh run, THEN the image references, the skip-the-rebuild decision and the
digest-pinned image URI in $GITHUB_OUTPUT follow, and bad input fails naming the value.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fakebin import FakeBin

REPO = Path(__file__).resolve().parent.parent
ACTION = REPO / ".github" / "actions" / "docker-build-push"
REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
DIGEST = "sha256:" + "ab" * 32
SHA = "0123456789abcdef0123456789abcdef01234567"
# The workflow under test; tests/test_actions_mutations.py points it at a copy with a mistake planted.
TRAINER_IMAGE = Path(
    os.environ.get("PUSHTRAIN_TRAINER_IMAGE_WORKFLOW", REPO / ".github" / "workflows" / "trainer-image.yml")
)
# The contract the trigger reads (decided by the lead): a tag fullmatching `<x>-cuda` is the CUDA
# variant of `<x>`, here the git sha.
CUDA_TAG = re.compile(r"(?P<base>[0-9a-f]{40})-cuda")


def parse_outputs(path: Path) -> dict[str, str]:
    """$GITHUB_OUTPUT's `key=value` and `key<<DELIM … DELIM` forms."""
    outputs: dict[str, str] = {}
    lines = iter(path.read_text().splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            value: list[str] = []
            for body in lines:
                if body == delimiter:
                    break
                value.append(body)
            outputs[key] = "\n".join(value)
        else:
            key, value_text = line.split("=", 1)
            outputs[key] = value_text
    return outputs


def run_script(tmp_path: Path, fakes: FakeBin, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "github_output").touch()
    (tmp_path / "step_summary").touch()
    base = {
        "GITHUB_OUTPUT": str(tmp_path / "github_output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "step_summary"),
        "RUNNER_TEMP": str(tmp_path),
    }
    return subprocess.run(
        [str(ACTION / script)], env=fakes.env(**{**base, **env}), capture_output=True, text=True, check=False
    )


def test_build_only_names_the_local_image_by_each_tag_and_never_calls_aws(tmp_path: Path) -> None:
    # GIVEN a pull-request build (no push) with two tags
    fakes = FakeBin(tmp_path)
    fakes.install("aws")
    # WHEN prepare.sh runs
    result = run_script(
        tmp_path, fakes, "prepare.sh", PUSH="false", REPOSITORY="pushtrain-trainer", TAGS=f"{SHA}\npr-7\n"
    )
    # THEN the references are the bare repository with each tag, and ECR is not asked
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = parse_outputs(tmp_path / "github_output")
    assert outputs["refs"] == f"pushtrain-trainer:{SHA}\npushtrain-trainer:pr-7"
    assert outputs["existing-digest"] == ""
    assert fakes.calls("aws") == []


def test_push_of_a_new_tag_builds_into_the_registry(tmp_path: Path) -> None:
    # GIVEN ECR does not have the tag
    fakes = FakeBin(tmp_path)
    fakes.add("aws", ["ecr", "describe-images"], exit=254, stderr="An error occurred (ImageNotFoundException)\n")
    # WHEN prepare.sh runs for a push
    result = run_script(
        tmp_path, fakes, "prepare.sh", PUSH="true", REGISTRY=REGISTRY, REPOSITORY="pushtrain-trainer", TAGS=SHA
    )
    # THEN it asks ECR for exactly that tag and decides to build into the registry
    assert result.returncode == 0, result.stdout + result.stderr
    assert fakes.calls("aws")[0][:6] == [
        "ecr",
        "describe-images",
        "--repository-name",
        "pushtrain-trainer",
        "--image-ids",
        f"imageTag={SHA}",
    ]
    outputs = parse_outputs(tmp_path / "github_output")
    assert outputs["refs"] == f"{REGISTRY}/pushtrain-trainer:{SHA}"
    assert outputs["existing-digest"] == ""


def test_push_of_a_tag_already_in_ecr_skips_the_build_and_reuses_its_digest(tmp_path: Path) -> None:
    # GIVEN ECR already holds the tag (a re-run: ECR tags are immutable, a second push would fail)
    fakes = FakeBin(tmp_path)
    fakes.add("aws", ["ecr", "describe-images"], stdout=DIGEST + "\n")
    # WHEN prepare.sh runs for a push
    result = run_script(
        tmp_path, fakes, "prepare.sh", PUSH="true", REGISTRY=REGISTRY, REPOSITORY="pushtrain-trainer", TAGS=SHA
    )
    # THEN the existing digest is exported, which skips the build steps
    assert result.returncode == 0, result.stdout + result.stderr
    assert parse_outputs(tmp_path / "github_output")["existing-digest"] == DIGEST


def test_ecr_lookup_failure_other_than_not_found_fails_the_step(tmp_path: Path) -> None:
    # GIVEN ECR answers with an access error
    fakes = FakeBin(tmp_path)
    fakes.add("aws", ["ecr"], exit=254, stderr="An error occurred (AccessDeniedException)\n")
    # WHEN prepare.sh runs for a push
    result = run_script(
        tmp_path, fakes, "prepare.sh", PUSH="true", REGISTRY=REGISTRY, REPOSITORY="pushtrain-trainer", TAGS=SHA
    )
    # THEN it fails and shows the error instead of building blind
    assert result.returncode == 1
    assert "AccessDeniedException" in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TAGS": "latest"}, "the tag 'latest' is refused"),
        ({"TAGS": f"{SHA}\nlatest"}, "the tag 'latest' is refused"),
        ({"TAGS": "bad tag!"}, "'bad tag!' is not a valid image tag"),
        ({"TAGS": "\n \n"}, "no image tags given"),
        ({"REPOSITORY": ""}, "repository is not an ECR repository name: ''"),
        ({"REPOSITORY": "Pushtrain"}, "repository is not an ECR repository name: 'Pushtrain'"),
        ({"PUSH": "yes"}, "push must be true or false, got 'yes'"),
        ({"PUSH": "true", "REGISTRY": ""}, "no ECR registry from the login step"),
    ],
)
def test_bad_input_fails_naming_the_value(tmp_path: Path, env: dict[str, str], message: str) -> None:
    # GIVEN one wrong input
    fakes = FakeBin(tmp_path)
    fakes.install("aws")
    settings = {"PUSH": "false", "REPOSITORY": "pushtrain-trainer", "TAGS": SHA, **env}
    # WHEN prepare.sh runs
    result = run_script(tmp_path, fakes, "prepare.sh", **settings)
    # THEN it fails naming it, before any AWS call
    assert result.returncode == 1
    assert message in result.stdout
    assert fakes.calls("aws") == []


def test_finish_exports_the_digest_pinned_uri_after_a_push(tmp_path: Path) -> None:
    # GIVEN a pushed image's digest
    # WHEN finish.sh runs
    result = run_script(
        tmp_path, FakeBin(tmp_path), "finish.sh", PUSH="true", IMAGE=f"{REGISTRY}/pushtrain-trainer", DIGEST=DIGEST
    )
    # THEN the URI is pinned by digest (never by tag) and the summary names it
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = parse_outputs(tmp_path / "github_output")
    assert outputs == {"digest": DIGEST, "image-uri": f"{REGISTRY}/pushtrain-trainer@{DIGEST}"}
    assert f"{REGISTRY}/pushtrain-trainer@{DIGEST}" in (tmp_path / "step_summary").read_text()


def test_finish_fails_when_a_push_reports_no_digest(tmp_path: Path) -> None:
    # GIVEN a push step that produced no digest
    # WHEN finish.sh runs
    result = run_script(tmp_path, FakeBin(tmp_path), "finish.sh", PUSH="true", IMAGE="x/y", DIGEST="")
    # THEN the step fails instead of exporting a URI the trigger could not resolve
    assert result.returncode == 1
    assert "the push reported no image digest" in result.stdout


def test_finish_after_a_build_only_exports_no_uri(tmp_path: Path) -> None:
    # GIVEN a build that was not pushed
    # WHEN finish.sh runs
    result = run_script(tmp_path, FakeBin(tmp_path), "finish.sh", PUSH="false", IMAGE="pushtrain-trainer", DIGEST="")
    # THEN it succeeds with an empty URI
    assert result.returncode == 0, result.stdout + result.stderr
    assert parse_outputs(tmp_path / "github_output") == {"digest": "", "image-uri": ""}


def test_the_push_job_exposes_the_pushed_digest_and_buildx_is_pinned() -> None:
    import yaml

    # GIVEN trainer-image.yml's push job and the docker-build-push action
    workflow = yaml.safe_load(TRAINER_IMAGE.read_text())
    push = workflow["jobs"]["push"]
    (step,) = [s for s in build_steps(push) if s.get("id") == "image"]
    # THEN later jobs can pin to the pushed image by digest, the CPU one and the CUDA one alike
    assert step["with"]["tags"] == "${{ github.sha }}"
    assert "build-args" not in step["with"]
    assert push["outputs"] == {
        "digest": "${{ steps.image.outputs.digest }}",
        "image-uri": "${{ steps.image.outputs.image-uri }}",
        "cuda-digest": "${{ steps.image-cuda.outputs.digest }}",
        "cuda-image-uri": "${{ steps.image-cuda.outputs.image-uri }}",
    }
    # AND setup-buildx installs a pinned buildx release, not the latest of the day
    action = yaml.safe_load((REPO / ".github" / "actions" / "docker-build-push" / "action.yml").read_text())
    (setup,) = [s for s in action["runs"]["steps"] if "setup-buildx-action@" in str(s.get("uses", ""))]
    assert setup["with"]["version"] == "${{ inputs.buildx-version }}"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", action["inputs"]["buildx-version"]["default"])


def build_steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if str(s.get("uses", "")).endswith("/.github/actions/docker-build-push")]


def test_the_cuda_variant_is_pushed_beside_the_cpu_image_only_when_the_gpu_variable_is_on() -> None:
    import yaml

    # GIVEN trainer-image.yml's push job
    push = yaml.safe_load(TRAINER_IMAGE.read_text())["jobs"]["push"]
    cpu, cuda = build_steps(push)
    # THEN the second build is the CUDA variant, pushed to the same repository as the CPU image (its own
    # build cache), only when the repository variable PUSHTRAIN_GPU is true
    assert cuda["id"] == "image-cuda"
    assert cuda["if"] == "vars.PUSHTRAIN_GPU == 'true'"
    assert cuda["with"]["build-args"] == "TORCH_VARIANT=cuda"
    assert cuda["with"]["push"] == "true"
    assert cuda["with"]["repository"] == cpu["with"]["repository"]
    assert cuda["with"]["cache-scope"] != cpu["with"].get("cache-scope", "trainer")
    # AND it is tagged "<git sha>-cuda", the form the trigger reads as the CUDA variant of that commit
    tag = cuda["with"]["tags"].replace("${{ github.sha }}", SHA)
    match = CUDA_TAG.fullmatch(tag)
    assert match is not None, f"the CUDA image's tag {cuda['with']['tags']!r} is not <git sha>-cuda"
    assert match.group("base") == cpu["with"]["tags"].replace("${{ github.sha }}", SHA)


def test_pull_requests_keep_building_the_cuda_variant_without_pushing() -> None:
    import yaml

    build = yaml.safe_load(TRAINER_IMAGE.read_text())["jobs"]["build"]
    steps = build_steps(build)
    assert [s["with"]["push"] for s in steps] == ["false", "false"]
    assert [s["with"].get("build-args", "") for s in steps] == ["", "TORCH_VARIANT=cuda"]
    assert "if" not in steps[1]


def test_prepare_accepts_the_cuda_tag_and_looks_it_up_in_ecr(tmp_path: Path) -> None:
    # GIVEN the CUDA image's tag, not yet in ECR
    fakes = FakeBin(tmp_path)
    fakes.add("aws", ["ecr", "describe-images"], exit=254, stderr="An error occurred (ImageNotFoundException)\n")
    # WHEN prepare.sh runs for its push
    result = run_script(
        tmp_path,
        fakes,
        "prepare.sh",
        PUSH="true",
        REGISTRY=REGISTRY,
        REPOSITORY="pushtrain-trainer",
        TAGS=f"{SHA}-cuda",
    )
    # THEN the tag is valid and checked on its own (a re-run skips only a CUDA image already pushed)
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = parse_outputs(tmp_path / "github_output")
    assert outputs["refs"] == f"{REGISTRY}/pushtrain-trainer:{SHA}-cuda"
    assert any(f"imageTag={SHA}-cuda" in call for call in fakes.calls("aws"))


def test_finish_names_the_tags_in_the_summary_so_the_two_images_are_told_apart(tmp_path: Path) -> None:
    # GIVEN the CUDA image pushed under its tag
    result = run_script(
        tmp_path,
        FakeBin(tmp_path),
        "finish.sh",
        PUSH="true",
        IMAGE=f"{REGISTRY}/pushtrain-trainer",
        DIGEST=DIGEST,
        TAGS=f"{SHA}-cuda\n",
    )
    # THEN the summary line carries the digest-pinned URI and the tag
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (tmp_path / "step_summary").read_text()
    assert f"`{REGISTRY}/pushtrain-trainer@{DIGEST}` (tags `{SHA}-cuda`)" in summary
