"""A reviewed plan nobody can spoof, replay or dodge: terraform-apply, destroy and ci.reviewed_plan.

GIVEN the plan job of terraform-apply.yml (and destroy.yml) run step by step the way the runner runs
it (`if:` conditions, `continue-on-error`, the scripts of `run:` with their `env:`), against a
recording fake of `gh` that answers as GitHub's REST API would, WHEN the merged commit, the merge
queue's plan run and its artifact are as each attack leaves them (a fork's run uploading an
artifact with the same name, a re-run of an old apply, an expired artifact, a plan that changes a
value but not an action), THEN the plan file is uploaded for the apply job only when the change set
equals the merge queue's plan of main's head (or, started by hand, when the commit is main's head),
and two merges in a row each apply their own reviewed changes.

PUSHTRAIN_APPLY_WORKFLOW and PUSHTRAIN_CI_SCRIPTS point the tests at mutated copies
(tests/test_actions_mutations.py): each planted mistake must fail this file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

if os.environ.get("PUSHTRAIN_CI_SCRIPTS"):  # a mutated copy of scripts/ci (tests/test_actions_mutations.py)
    sys.path.insert(0, os.environ["PUSHTRAIN_CI_SCRIPTS"])
from ci import gate, reviewed_plan
from ci.github import CIError
from ci.plan_changes import change_set
from fakebin import FakeBin

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"
APPLY = Path(os.environ.get("PUSHTRAIN_APPLY_WORKFLOW", WORKFLOWS / "terraform-apply.yml"))
SCRIPTS = Path(os.environ.get("PUSHTRAIN_CI_SCRIPTS", REPO / "scripts"))
R = "octo/pushtrain"
SHA = "0123456789abcdef0123456789abcdef01234567"
NEWER = "89abcdef0123456789abcdef0123456789abcdef"
RUNS = (
    f"repos/{R}/actions/workflows/terraform-plan.yml/runs?event=merge_group&head_sha={SHA}&status=success&per_page=100"
)


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    document["on"] = document.pop(True)
    return document


# --- a plan, as terraform show -json writes it ---------------------------------------------------------


def plan_json(memory: int = 2048, *, role_trust: str = "github") -> dict[str, Any]:
    return {
        "resource_changes": [
            {
                "address": "aws_ecs_task_definition.trainer",
                "change": {
                    "actions": ["delete", "create"],
                    "after": {"memory": memory, "arn": None, "secret": "s3cr3t"},
                    "after_unknown": {"arn": True},
                    "after_sensitive": {"secret": True},
                    "replace_paths": [["memory"]],
                },
            },
            {
                "address": "aws_iam_role.task",
                "change": {"actions": ["update"], "after": {"trust": role_trust}, "after_unknown": {}},
            },
            {"address": "aws_s3_bucket.this", "change": {"actions": ["no-op"], "after": {}}},
        ]
    }


def changes_text(plan: dict[str, Any]) -> str:
    return "\n".join(change_set(plan)) + "\n"


def test_the_change_set_keeps_values_marks_unknowns_hashes_secrets_and_drops_no_ops() -> None:
    lines = [json.loads(line) for line in change_set(plan_json())]
    # THEN no-ops are left out, one line per change, sorted by address
    assert [r["address"] for r in lines] == ["aws_ecs_task_definition.trainer", "aws_iam_role.task"]
    task = lines[0]
    assert task["after"]["memory"] == 2048
    assert task["after"]["arn"] == "(known after apply)"
    assert task["replace_paths"] == [["memory"]]
    # AND a sensitive value never appears, only its hash
    assert "s3cr3t" not in json.dumps(lines)
    assert set(task["after"]["secret"]) == {"sha256"}
    # AND two plans with the same addresses and actions but another value differ
    assert change_set(plan_json(memory=4096)) != change_set(plan_json())


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"resource_changes": {"x": 1}}, "not a list"),
        ({"resource_changes": [{"change": {"actions": ["create"]}}]}, "without an address"),
        ({"resource_changes": [{"address": "a.b", "change": {"actions": "create"}}]}, "is not a list of actions"),
    ],
)
def test_a_broken_plan_json_is_refused_naming_what_is_wrong(document: dict[str, Any], message: str) -> None:
    with pytest.raises(CIError, match=message):
        change_set(document)


# --- the plan job, run the way the runner runs it ------------------------------------------------------


class Github:
    """What the fake `gh` answers: main's head, the plan runs, their artifacts and change sets."""

    def __init__(self, tmp_path: Path, *, head: str = SHA) -> None:
        self.fakes = FakeBin(tmp_path)
        self.fakes.add("gh", ["api", f"repos/{R}/git/ref/heads/main"], stdout=json.dumps({"object": {"sha": head}}))

    def plan_run(
        self, run_id: int, changes: str | None, *, fork: bool = False, expired: bool = False, event: str = ""
    ) -> None:
        """A run GitHub lists for the query (a fork's is listed too: the filter must not rely on the query)."""
        self.runs = [*getattr(self, "runs", []), run(run_id, fork=fork, event=event)]
        self.fakes.rules["gh"] = [r for r in self.fakes.rules["gh"] if r["args"][:2] != ["api", RUNS]]
        self.fakes.add("gh", ["api", RUNS], stdout=json.dumps({"workflow_runs": self.runs}))
        name = f"tfplan-{SHA}"
        artifacts = {"artifacts": [{"id": run_id * 10, "name": name, "expired": expired}]}
        self.fakes.add("gh", ["api", f"repos/{R}/actions/runs/{run_id}/artifacts?name={name}&per_page=100"],
                       stdout=json.dumps(artifacts))  # fmt: skip
        if changes is not None:
            self.fakes.add("gh", ["run", "download", str(run_id)], writes={f"{{last}}/{name}.changes": changes})

    def downloads(self) -> list[str]:
        return [c[2] for c in self.fakes.calls("gh") if c[:2] == ["run", "download"]]


def run(run_id: int, *, fork: bool = False, event: str = "") -> dict[str, Any]:
    return {
        "id": run_id,
        "run_number": run_id,
        "run_attempt": 1,
        "event": event or ("pull_request" if fork else "merge_group"),
        "head_sha": SHA,
        "conclusion": "success",
        "status": "completed",
        "path": ".github/workflows/terraform-plan.yml",
        "head_repository": {"full_name": "mallory/pushtrain" if fork else R},
    }


EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")


def evaluate(condition: str, context: dict[str, Any], job_ok: bool) -> bool:
    """A step's `if:` as GitHub evaluates the few forms the workflows use (an unknown name fails the test)."""
    text = EXPRESSION.sub(lambda m: m.group(1), str(condition)).strip() or "success()"
    if not re.search(r"\b(success|always|failure|cancelled)\(\)", text):
        text = f"success() && ({text})"
    names = {"success()": job_ok, "always()": True, "failure()": not job_ok, "cancelled()": False}
    python = re.sub(r"\b[a-z_]+\(\)", lambda m: repr(names[m.group(0)]), text)
    python = re.sub(
        r"\b((?:github|steps|vars|inputs|needs)\.[A-Za-z0-9_.-]+)", lambda m: repr(lookup(context, m.group(1))), python
    )
    python = python.replace("&&", " and ").replace("||", " or ").replace("!=", " != ").replace("!", " not ")
    python = python.replace(" not  = ", " != ")
    return bool(eval(python, {"__builtins__": {}}, {}))  # noqa: S307 -- the test's own workflow conditions


def lookup(context: dict[str, Any], name: str) -> Any:
    """A context value; a skipped step's output is empty, as on GitHub; any other unknown name fails the test."""
    if name.startswith("steps."):
        return context.get(name, "")
    return context[name]


def resolve(value: Any, context: dict[str, Any]) -> str:
    return EXPRESSION.sub(lambda m: str(lookup(context, m.group(1))), str(value))


def run_plan_job(workflow: Path, tmp_path: Path, github: Github, event: str, plan: dict[str, Any]):
    """Run the plan job's steps in order; (steps that ran, what was uploaded, the failing step's output)."""
    job = load(workflow)["jobs"]["plan"]
    temp = tmp_path / "runner_temp"
    temp.mkdir(exist_ok=True)
    plan_file = temp / f"tfplan-{SHA}"
    (tmp_path / "scripts").exists() or (tmp_path / "scripts").symlink_to(SCRIPTS)
    context: dict[str, Any] = {
        "github.sha": SHA,
        "github.event_name": event,
        "github.repository": R,
        "github.token": "ghs_fake",
        "github.run_attempt": "1",
        "github.ref": "refs/heads/main",
        "runner.temp": str(temp),
    }
    ran, uploaded, log = [], [], ""
    job_ok = True
    for step in job["steps"]:
        label = step.get("name") or step.get("id") or step.get("uses")
        if not evaluate(step.get("if", ""), context, job_ok):
            continue
        ran.append(label)
        uses, ok = str(step.get("uses", "")), True
        if step.get("id") == "plan":  # the terraform action: the plan file, its JSON, hash and lock file
            plan_file.write_bytes(b"plan")
            plan_file.with_name(plan_file.name + ".json").write_text(json.dumps(plan))
            context["steps.plan.outputs.plan-file"] = str(plan_file)
            context["steps.plan.outputs.has-changes"] = "true"
            context["steps.plan.outputs.plan-sha256"] = "0" * 64
        elif uses.startswith("actions/upload-artifact@"):
            uploaded.append(resolve(step["with"]["name"], context))
            context[f"steps.{step.get('id')}.outputs.artifact-id"] = "1"
        elif re.search(r"python3 -m ci\.(reviewed_plan|plan_changes)\b", str(step.get("run", ""))):
            # the steps under test; the rest (checkout, zip, login, policies: tests/test_plan_policies.py) succeed
            env = {k: resolve(v, context) for k, v in (step.get("env") or {}).items()}
            result = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", str(step["run"])],
                env=github.fakes.env(**{**env, "PYTHONPATH": str(tmp_path / "scripts")}),
                cwd=tmp_path,
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            log += result.stdout + result.stderr
            ok = result.returncode == 0
        if not ok and not step.get("continue-on-error"):
            job_ok = False
    return ran, uploaded, log, job_ok


APPLY_PLAN = "tfplan-" + SHA + "-1"


# These run first: the mutation checks (tests/test_actions_mutations.py) stop at the first failure.
def test_a_plan_that_changes_a_value_the_merge_queue_did_not_plan_uploads_nothing(tmp_path: Path) -> None:
    # GIVEN the merge queue planned memory 2048; main's plan (the same addresses and actions) sets 4096
    github = Github(tmp_path)
    github.plan_run(41, changes_text(plan_json(memory=2048)))
    # WHEN the plan job of the push runs
    _ran, uploaded, log, ok = run_plan_job(APPLY, tmp_path, github, "push", plan_json(memory=4096))
    # THEN it fails naming the difference, and the plan file is never uploaded for the apply job
    assert "aws_ecs_task_definition.trainer differs in after" in log
    assert "Nothing will be applied" in log
    assert (ok, uploaded) == (False, [])


@pytest.mark.parametrize(
    ("workflow", "event"),
    [
        ("terraform-apply.yml", "push"),
        ("terraform-apply.yml", "workflow_dispatch"),
        ("destroy.yml", "workflow_dispatch"),
    ],
)
def test_a_re_run_for_a_commit_that_is_no_longer_mains_head_uploads_nothing(
    tmp_path: Path, workflow: str, event: str
) -> None:
    # GIVEN main moved on to a newer commit, and the merge queue's plan of the old one is still there
    github = Github(tmp_path, head=NEWER)
    github.plan_run(41, changes_text(plan_json()))
    path = APPLY if workflow == "terraform-apply.yml" else WORKFLOWS / workflow
    # WHEN an old run is re-run (the same commit, today's state), on every path to production
    _, uploaded, log, ok = run_plan_job(path, tmp_path, github, event, plan_json())
    # THEN it is refused before anything is uploaded
    assert f"the planned commit {SHA} is not main's head ({NEWER})" in log
    assert (ok, uploaded) == (False, [])


def test_an_expired_merge_queue_artifact_is_refused(tmp_path: Path) -> None:
    # GIVEN the run's artifact expired (GitHub still lists it, with expired: true)
    github = Github(tmp_path)
    github.plan_run(41, changes_text(plan_json()), expired=True)
    _, uploaded, log, ok = run_plan_job(APPLY, tmp_path, github, "push", plan_json())
    # THEN it says so, downloads nothing and uploads nothing
    assert f"the plan artifact tfplan-{SHA} of run 41 is expired" in log
    assert (ok, uploaded, github.downloads()) == (False, [], [])


def test_a_plan_equal_to_the_merge_queues_is_uploaded_for_the_apply_job(tmp_path: Path) -> None:
    github = Github(tmp_path)
    github.plan_run(41, changes_text(plan_json()))
    ran, uploaded, log, ok = run_plan_job(APPLY, tmp_path, github, "push", plan_json())
    assert ok, log
    assert "the same 2 resource changes as the merge queue's plan (run 41)" in log
    assert uploaded == [APPLY_PLAN]
    assert ran.index("Compare with the plan the merge queue required") < ran.index(
        "Upload the plan file for the apply job"
    )


def test_a_run_started_by_hand_on_mains_head_is_its_own_reviewed_plan(tmp_path: Path) -> None:
    # GIVEN no merge queue plan at all (a dispatch after a refused push, or a partial apply)
    github = Github(tmp_path)
    # WHEN started by hand on main's head
    _, uploaded, log, ok = run_plan_job(APPLY, tmp_path, github, "workflow_dispatch", plan_json())
    # THEN its own plan goes to the production reviewers, and GitHub is not asked for another plan
    assert ok, log
    assert "its own plan (2 resource changes, in this summary) is the plan to review" in log
    assert uploaded == [APPLY_PLAN]
    assert not any("actions/workflows" in " ".join(c) for c in github.fakes.calls("gh"))


def test_a_forks_run_with_an_artifact_named_like_the_plan_is_never_read(tmp_path: Path) -> None:
    # GIVEN a fork's pull_request run for the same commit (newer, successful, its artifact named
    # tfplan-<sha> and holding the attacker's change set) beside the merge queue's run
    github = Github(tmp_path)
    github.plan_run(41, changes_text(plan_json()))
    github.plan_run(77, changes_text(plan_json(role_trust="mallory")), fork=True)
    # WHEN main's plan (the reviewed changes) is compared
    _, uploaded, log, ok = run_plan_job(APPLY, tmp_path, github, "push", plan_json())
    # THEN the merge queue's artifact is the one compared, by its run id; the fork's is never downloaded
    assert ok, log
    assert github.downloads() == ["41"]
    assert uploaded == [APPLY_PLAN]


@pytest.mark.parametrize(
    ("event", "fork"),
    [("pull_request", True), ("merge_group", True), ("pull_request", False)],
    ids=["a fork's pull request", "a fork's run of any event", "a branch's pull request (its own workflow file)"],
)
def test_a_forks_or_branchs_run_alone_is_no_plan_of_the_commit(tmp_path: Path, event: str, fork: bool) -> None:
    # GIVEN only such a run planned the commit (a pull request runs its own terraform-plan.yml, which
    # can upload any change set under the name tfplan-<sha>), with a change set equal to main's plan
    github = Github(tmp_path)
    github.plan_run(77, changes_text(plan_json()), fork=fork, event=event)
    _, uploaded, log, ok = run_plan_job(APPLY, tmp_path, github, "push", plan_json())
    # THEN there is no required plan of the commit: refused, nothing downloaded, nothing uploaded
    assert "no successful merge-queue run of terraform-plan.yml planned" in log
    assert (ok, uploaded, github.downloads()) == (False, [], [])


@pytest.mark.parametrize("event", ["schedule", "pull_request", "merge_group", "repository_dispatch"])
def test_no_other_event_can_reach_the_apply(tmp_path: Path, event: str) -> None:
    github = Github(tmp_path)
    changes = tmp_path / "x.changes"
    changes.write_text(changes_text(plan_json()))
    with pytest.raises(reviewed_plan.PlanMismatchError, match="never applies"):
        reviewed_plan.check(FakeApi({}), R, SHA, event, changes)
    assert github.fakes.calls("gh") == []


# --- the wiring the runner follows -----------------------------------------------------------------------


def test_the_comparison_is_unconditional_and_its_failure_stops_the_job() -> None:
    steps = load(APPLY)["jobs"]["plan"]["steps"]
    (compare,) = [s for s in steps if "ci.reviewed_plan check" in str(s.get("run", ""))]
    # THEN it runs on every event, fails the job when it fails, and is told the real event
    assert "if" not in compare
    assert not compare.get("continue-on-error")
    assert compare["env"]["EVENT"] == "${{ github.event_name }}"
    assert '--event "$EVENT"' in compare["run"]
    # AND the upload runs only after it (success() of every step before)
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert steps.index(compare) < steps.index(upload)
    assert "always()" not in str(upload.get("if", ""))


@pytest.mark.parametrize("workflow", ["terraform-apply.yml", "destroy.yml"])
def test_the_apply_job_checks_mains_head_after_the_approval_and_lets_run_sh_report_an_expired_plan(
    workflow: str,
) -> None:
    document = load(APPLY if workflow == "terraform-apply.yml" else WORKFLOWS / workflow)
    job = next(j for j in document["jobs"].values() if j.get("environment") == "production")
    steps = job["steps"]
    head = next(i for i, s in enumerate(steps) if "ci.reviewed_plan head" in str(s.get("run", "")))
    download = next(i for i, s in enumerate(steps) if str(s.get("uses", "")).startswith("actions/download-artifact@"))
    apply = next(i for i, s in enumerate(steps) if str(s.get("uses", "")).endswith("/.github/actions/terraform"))
    assert head < download < apply
    # An expired artifact makes download-artifact fail; run.sh then refuses with its own message
    assert steps[download].get("continue-on-error") is True
    assert steps[apply]["with"]["plan-file"] == "${{ runner.temp }}/reviewed-plan/tfplan-${{ github.sha }}"


def test_the_pull_request_gate_and_the_apply_trigger_share_one_path_list() -> None:
    assert tuple(load(APPLY)["on"]["push"]["paths"]) == gate.STACK_PATHS
    step = next(
        s
        for s in load(WORKFLOWS / "terraform-plan.yml")["jobs"]["changes"]["steps"]
        if "ci.gate" in str(s.get("run", ""))
    )
    assert "--stack" in step["run"] and "--include" not in step["run"]


@pytest.mark.parametrize(
    ("path", "matched"),
    [
        ("terraform/ecs.tf", True),
        ("terraform/modules/x/main.tf", True),
        ("terraform/bootstrap/iam.tf", False),
        ("lambda/src/trigger/app.py", True),
        (".github/workflows/terraform-plan.yml", True),
        (".github/workflows/ci.yml", False),
        ("scripts/package_lambda.pyc", False),
        ("README.md", False),
    ],
)
def test_the_stack_paths_match_as_githubs_path_filter_does(path: str, matched: bool) -> None:
    assert gate.matches_filters(path, gate.STACK_PATHS) is matched


def test_the_merge_queue_plan_runs_the_pull_request_plans_steps_and_waits_for_pending_applies() -> None:
    jobs = load(WORKFLOWS / "terraform-plan.yml")["jobs"]
    assert jobs["queue-plan"]["steps"] == jobs["plan"]["steps"]  # one YAML anchor: the same steps
    assert jobs["queue-plan"]["environment"] == "merge-queue"
    assert "github.event_name == 'merge_group'" in jobs["queue-plan"]["if"]
    assert "github.actor != 'dependabot[bot]'" in jobs["plan"]["if"]
    settle = next(s for s in jobs["plan"]["steps"] if "ci.reviewed_plan settled" in str(s.get("run", "")))
    assert settle["if"] == "github.event_name == 'merge_group'"
    assert jobs["result"]["needs"] == ["changes", "plan", "queue-plan"]


# --- two merges in a row, each through the merge queue -----------------------------------------------------


class FakeApi:
    """GitHub's REST answers from in-memory runs (the Protocol ci.reviewed_plan talks to)."""

    def __init__(self, artifacts: dict[int, str], *, head: str = SHA, runs: list[dict[str, Any]] | None = None) -> None:
        self.artifacts, self.head, self.runs, self.applies = artifacts, head, runs or [], []

    def api(self, path: str) -> Any:
        if path.endswith("/git/ref/heads/main"):
            return {"object": {"sha": self.head}}
        if "/workflows/terraform-apply.yml/runs?status=" in path:
            status = path.split("status=")[1].split("&", maxsplit=1)[0]
            return {"workflow_runs": [r for r in self.applies if r["status"] == status]}
        if "/workflows/terraform-plan.yml/runs?" in path:
            sha = path.split("head_sha=")[1].split("&", maxsplit=1)[0]
            return {"workflow_runs": [r for r in self.runs if r["head_sha"] == sha]}
        run_id = int(path.split("/runs/")[1].split("/", maxsplit=1)[0])
        name = path.split("name=")[1].split("&", maxsplit=1)[0]
        return {"artifacts": [{"name": name, "expired": False}]} if run_id in self.artifacts else {"artifacts": []}

    def download(self, run_id: int, name: str, folder: Path) -> None:
        (folder / f"{name}.changes").write_text(self.artifacts[run_id])


class Stack:
    """Terraform in miniature: a commit declares resources; a plan is the difference from the state."""

    def __init__(self) -> None:
        self.state: dict[str, dict[str, Any]] = {}

    def plan(self, declared: dict[str, dict[str, Any]]) -> dict[str, Any]:
        changes = []
        for address in sorted(set(declared) | set(self.state)):
            if address not in self.state:
                actions = ["create"]
            elif address not in declared:
                actions = ["delete"]
            else:
                actions = ["no-op"] if declared[address] == self.state[address] else ["update"]
            changes.append({"address": address, "change": {"actions": actions, "after": declared.get(address)}})
        return {"resource_changes": changes}

    def apply(self, declared: dict[str, dict[str, Any]]) -> None:
        self.state = {k: dict(v) for k, v in declared.items()}


def merge_queue(prs: list[dict[str, dict[str, Any]]], *, wait_for_applies: bool, tmp_path: Path) -> list[str]:
    """Merge the pull requests one after another through the queue; what each apply did, in words.

    For each pull request, in GitHub's order: the queue builds a merge group on main and plans it
    (after `settled`, when the workflow waits); while the group's checks finish, the production
    reviewers approve the apply still pending from the previous merge; the group merges (main moves
    to exactly the planned commit) and its push starts an apply that waits for approval.
    """
    api, stack, main = FakeApi({}), Stack(), {}
    outcomes: list[str] = []
    pending: list[tuple[str, dict[str, dict[str, Any]]]] = []

    def approve_pending() -> None:
        while pending:
            commit, declared = pending.pop(0)
            changes = tmp_path / f"{commit}.changes"
            changes.write_text(changes_text(stack.plan(declared)))
            try:
                reviewed_plan.check(api, R, commit, "push", changes)
            except reviewed_plan.PlanMismatchError as error:
                outcomes.append(f"{commit[-1]}: refused ({error})")
            else:
                stack.apply(declared)
                outcomes.append(f"{commit[-1]}: applied")
            api.applies = [r for r in api.applies if r["head_sha"] != commit]

    for number, pr in enumerate(prs, start=1):
        group, commit = {**main, **pr}, f"{number:040x}"
        if wait_for_applies:
            try:
                reviewed_plan.settled(api, R, timeout_s=0, poll_s=0)
            except CIError:
                approve_pending()  # the queue's plan job waits until the reviewers have decided
                reviewed_plan.settled(api, R, timeout_s=0, poll_s=0)
        api.artifacts[100 + number] = changes_text(stack.plan(group))
        api.runs.append({**run(100 + number), "head_sha": commit})
        approve_pending()
        main, api.head = group, commit
        pending.append((commit, group))
        api.applies.append({"id": 900 + number, "status": "waiting", "head_sha": commit})
    approve_pending()
    return outcomes


PR_A = {"aws_sqs_queue.a": {"name": "a"}}
PR_B = {"aws_sqs_queue.b": {"name": "b"}}


def test_two_merges_in_a_row_each_apply_their_own_reviewed_changes(tmp_path: Path) -> None:
    # GIVEN two pull requests queued back to back, the second queued while the first's apply awaits approval
    outcomes = merge_queue([PR_A, PR_B], wait_for_applies=True, tmp_path=tmp_path)
    # THEN each merge applies, without anyone starting a run by hand
    assert outcomes == ["1: applied", "2: applied"]


def test_without_waiting_for_the_first_apply_the_second_merge_is_refused(tmp_path: Path) -> None:
    # GIVEN the queue planned B's group while A's apply was still pending (no `settled` step)
    outcomes = merge_queue([PR_A, PR_B], wait_for_applies=False, tmp_path=tmp_path)
    # THEN B's group plan held A's pending change too, and after A applied, B's apply is refused:
    # the `settled` step is what makes back-to-back merges apply
    assert outcomes[0] == "1: applied"
    assert outcomes[1].startswith("2: refused (the plan of main makes other changes")
    assert "only in the required plan: create aws_sqs_queue.a" in outcomes[1]


def test_settled_waits_for_a_pending_apply_and_gives_up_naming_it(tmp_path: Path) -> None:
    api = FakeApi({})
    api.applies = [{"id": 5, "status": "waiting", "head_sha": SHA}]
    with pytest.raises(CIError, match=r"still pending after 0 minutes: 5 \(waiting, 0123456789ab\)"):
        reviewed_plan.settled(api, R, timeout_s=0, poll_s=0)
    api.applies = []
    assert "no terraform-apply run is pending" in reviewed_plan.settled(api, R, timeout_s=0, poll_s=0)
