"""The `docker-build-push` composite action's scripts, against a recording fake `aws`.

GIVEN tags, a repository and (when pushing) an ECR that has or lacks the first tag, WHEN
prepare.sh and finish.sh run, THEN the image references, the skip-the-rebuild decision and the
digest-pinned image URI in $GITHUB_OUTPUT follow, and bad input fails naming the value.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from fakebin import FakeBin

REPO = Path(__file__).resolve().parent.parent
ACTION = REPO / ".github" / "actions" / "docker-build-push"
REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
DIGEST = "sha256:" + "ab" * 32
SHA = "0123456789abcdef0123456789abcdef01234567"


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
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "trainer-image.yml").read_text())
    push = workflow["jobs"]["push"]
    (step,) = [s for s in push["steps"] if str(s.get("uses", "")).endswith("/.github/actions/docker-build-push")]
    # THEN later jobs can pin to the pushed image by digest
    assert step["id"] == "image"
    assert push["outputs"] == {
        "digest": "${{ steps.image.outputs.digest }}",
        "image-uri": "${{ steps.image.outputs.image-uri }}",
    }
    # AND setup-buildx installs a pinned buildx release, not the latest of the day
    action = yaml.safe_load((REPO / ".github" / "actions" / "docker-build-push" / "action.yml").read_text())
    (setup,) = [s for s in action["runs"]["steps"] if "setup-buildx-action@" in str(s.get("uses", ""))]
    assert setup["with"]["version"] == "${{ inputs.buildx-version }}"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", action["inputs"]["buildx-version"]["default"])
