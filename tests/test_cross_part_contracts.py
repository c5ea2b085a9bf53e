"""Constants that two or more parts copy, held to each other: a change on one side fails the build.

The parts never import each other at runtime (the trigger ships alone in its zip, the trainer in
its image, scripts/ci runs on an Actions runner), so the digest and request-id patterns, the run
states, the status and checkpoint key layouts and the retrain parameters are written in each part
that needs them. This test imports every side and compares the copies:

    trigger (lambda/src/trigger)  <->  trainer (trainer/src/trainer)
    trigger                       <->  scripts/ci/retrain.py  <->  .github/workflows/retrain.yml
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from ci import retrain as ci_retrain
from ci import runs as ci_runs
from ci import sweep as ci_sweep
from ci.github import CIError
from tf_docs import load_root, unquote
from trigger import config as trigger_config
from trigger import events as trigger_events
from trigger import records as trigger_records
from trigger import runs as trigger_runs
from trigger import stops as trigger_stops
from trigger import sweeps as trigger_sweeps
from trigger import taskdef as trigger_taskdef

from trainer import checkpoint as trainer_checkpoint
from trainer import config as trainer_config
from trainer import runstate as trainer_runstate

REPO = Path(__file__).resolve().parent.parent
TRIGGER_SRC = REPO / "lambda" / "src" / "trigger"
RETRAIN_WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"

DIGEST = "sha256:" + "0123456789abcdef" * 4
GIT_SHA = "0123456789abcdef0123456789abcdef01234567"
SAMPLE_RUN_IDS = [
    trigger_runs.push_run_id(DIGEST, {}),
    trigger_runs.push_run_id(DIGEST, {"epochs": 3, "lr": 0.5, "model": "cnn"}),
    trigger_runs.retrain_run_id("1234567890123456789", DIGEST, {}),
    trigger_runs.retrain_run_id("a_b-C", DIGEST, {"seed": 7}),
]


def pattern_body(pattern: re.Pattern[str]) -> str:
    """The pattern without the anchors some copies write (fullmatch needs none)."""
    text = pattern.pattern
    text = text.removeprefix("^")
    for anchor in ("\\Z", "$"):
        text = text.removesuffix(anchor)
    return text


def trainer_module_constant(name: str) -> Any:
    """A trainer constant, wherever in trainer.config (or a module it moved to) it lives today."""
    for module in (trainer_config, trainer_runstate, trainer_checkpoint):
        if hasattr(module, name):
            return getattr(module, name)
    pytest.fail(f"the trainer no longer defines {name}; update this test to its new home")


def trainer_config_class() -> type:
    """The trainer's configuration dataclass: the one with the retrain parameters among its fields."""
    for value in vars(trainer_config).values():
        if dataclasses.is_dataclass(value) and isinstance(value, type):
            names = {f.name for f in dataclasses.fields(value)}
            if {"epochs", "lr", "model"} <= names:
                return value
    pytest.fail("found no configuration dataclass with epochs, lr and model in trainer.config")


def base_type(hint: Any) -> type:
    """`int | None` -> int; `float` -> float."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (only,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return only
    return hint


# --- patterns ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger_pattern", "other_pattern", "where"),
    [
        (trigger_events.DIGEST, ci_retrain._DIGEST, "scripts/ci/retrain.py"),
        (trigger_events.DIGEST, trainer_module_constant("_DIGEST"), "trainer"),
        (trigger_events.REQUEST_ID, ci_retrain._REQUEST_ID, "scripts/ci/retrain.py"),
        (trigger_events.TAG, ci_retrain._TAG, "scripts/ci/retrain.py"),
        (trigger_events.GIT_SHA, ci_retrain._GIT_SHA, "scripts/ci/retrain.py"),
    ],
    ids=["digest-retrain-client", "digest-trainer", "request-id", "tag", "git-sha"],
)
def test_patterns_copied_between_parts_are_the_same(
    trigger_pattern: re.Pattern[str], other_pattern: re.Pattern[str], where: str
) -> None:
    assert pattern_body(trigger_pattern) == pattern_body(other_pattern), f"{where} disagrees with the trigger"


def test_every_git_sha_the_trigger_sends_is_one_the_trainer_accepts() -> None:
    # The trainer also takes short and upper-case shas (local runs); the trigger sends only full ones.
    trainer_git_sha = trainer_module_constant("_GIT_SHA")
    assert trigger_events.GIT_SHA.fullmatch(GIT_SHA)
    assert trainer_git_sha.fullmatch(GIT_SHA)
    assert pattern_body(trigger_events.GIT_SHA) == "[0-9a-f]{40}"


@pytest.mark.parametrize("run_id", SAMPLE_RUN_IDS)
def test_every_run_id_the_trigger_makes_is_one_the_trainer_and_the_retrain_client_accept(run_id: str) -> None:
    assert trainer_module_constant("_RUN_ID").fullmatch(run_id)
    assert ci_retrain._STATUS_KEY.fullmatch(trigger_records.record_key(run_id))
    assert len(trigger_runs.started_by(run_id)) <= trigger_runs.MAX_STARTED_BY


def test_the_longest_request_id_still_makes_a_run_id_ecs_accepts() -> None:
    longest = "9" * 19
    assert trigger_events.REQUEST_ID.fullmatch(longest)
    assert not trigger_events.REQUEST_ID.fullmatch(longest + "9")
    run_id = trigger_runs.retrain_run_id(longest, DIGEST, {})
    assert len(run_id) == trigger_runs.MAX_STARTED_BY
    assert len(trigger_runs.client_token(run_id, 99, on_demand=True)) <= trigger_runs.MAX_CLIENT_TOKEN


# --- run states and key layouts ------------------------------------------------------------------------


def test_run_states_are_the_same_in_trigger_trainer_and_retrain_client() -> None:
    assert tuple(trigger_records.STATES) == tuple(trainer_runstate.STATES)
    assert set(trigger_records.STATES) == ci_runs.TERMINAL_STATES | ci_runs.WAITING_STATES
    assert trigger_stops.FINAL_STATES == ci_runs.TERMINAL_STATES
    assert trigger_stops.RESUMABLE_STATES == ci_runs.WAITING_STATES


def test_the_record_schema_version_is_the_same_on_both_writers() -> None:
    assert trigger_records.SCHEMA == trainer_runstate.SCHEMA


@pytest.mark.parametrize("run_id", SAMPLE_RUN_IDS)
def test_status_and_checkpoint_keys_share_the_run_folder(run_id: str) -> None:
    status = trigger_records.record_key(run_id)
    assert status == trainer_runstate.status_key(run_id) == f"runs/{run_id}/status.json"
    assert trainer_checkpoint.checkpoint_key(run_id).startswith(f"runs/{run_id}/")


def test_the_trigger_index_folder_can_never_be_a_trainer_run() -> None:
    # runs/_taskdefs/ sits beside the run folders; no run id may name it
    folder = trigger_taskdef.INDEX_PREFIX.removeprefix("runs/").rstrip("/")
    assert not trainer_module_constant("_RUN_ID").fullmatch(folder)
    assert trigger_taskdef.index_key("pushtrain-trainer", DIGEST).startswith("runs/_taskdefs/")


def test_the_sweep_keys_and_limits_of_the_trigger_are_the_trainers() -> None:
    from trainer import asha as trainer_asha
    from trainer import run as trainer_run
    from trainer import sweeps_cli as trainer_sweeps_cli

    run_id = SAMPLE_RUN_IDS[2]
    assert trigger_sweeps.rung_key("1234", 3, run_id) == trainer_asha.rung_key("1234", 3, run_id)
    assert trigger_sweeps.final_key("1234", run_id) == trainer_run.final_key("1234", run_id)
    assert trigger_sweeps.sweep_key("1234") == trainer_sweeps_cli.sweep_key("1234")
    assert trigger_sweeps.MAX_ETA == trainer_config.MAX_ETA
    assert trigger_sweeps.MAX_VAL_IMAGES <= trainer_config.MAX_IMAGES
    # every request id the trigger accepts (one of its characters, at its length) is a sweep id the trainer accepts
    for request_id in ("-", "_", "a_b-C", "9" * 19, "-_" * 9 + "Z"):
        assert trigger_events.REQUEST_ID.fullmatch(request_id)
        assert trainer_config.TrainConfig(model="cnn").replace(sweep_id=request_id).sweep_id == request_id


# --- retrain parameters ---------------------------------------------------------------------------------


def test_every_retrain_parameter_is_a_trainer_setting_of_the_same_type() -> None:
    config_class = trainer_config_class()
    hints = typing.get_type_hints(config_class)
    for name, expected in (trigger_events.PARAM_TYPES | trigger_events.SWEEP_PARAM_TYPES).items():
        assert name in hints, f"retrain parameter {name} is not a field of {config_class.__name__}"
        trainer_type = base_type(hints[name])
        # The trigger passes each parameter as TRAINER_<NAME> text: an int it accepted is also a valid
        # float setting (epochs is a float since the recipe trains 9.9 epochs), never the other way round.
        widened = expected is int and trainer_type is float
        assert trainer_type is expected or widened, f"{name}: trigger {expected}, trainer {hints[name]}"


def test_the_retrain_client_sends_only_parameters_of_the_trigger_with_their_types() -> None:
    hints = typing.get_type_hints(ci_retrain.build_request)
    params = [name for name in inspect.signature(ci_retrain.build_request).parameters if name in hints]
    sent = [name for name in params if name not in {"request_id", "image", "git_sha"}]
    assert sent, "build_request takes no parameters"
    for name in sent:
        assert base_type(hints[name]) is trigger_events.PARAM_TYPES[name], name
    request = ci_retrain.build_request(request_id="1", image=GIT_SHA, git_sha=GIT_SHA, epochs=3, lr=0.5, model="cnn")
    assert trigger_events.validate_params(request["params"]) == request["params"]


def test_the_retrain_workflow_inputs_are_trigger_parameters_of_matching_types() -> None:
    workflow = yaml.safe_load(RETRAIN_WORKFLOW.read_text())
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    inputs = on["workflow_dispatch"]["inputs"]
    yaml_types = {"number": (int, float), "choice": (str,), "string": (str,)}
    # a sweep's inputs are comma-separated lists of one parameter (scripts/ci/sweep.py builds the grid)
    sweep_inputs = {"sweep_lrs": "lr", "sweep_seeds": "seed"}
    # the sweep's random space and settings are the request's `sweep` fields, not parameters
    # (tests/test_ci_sweep.py runs the step and has the trigger parse what it sends)
    sweep_settings = {"sweep_random", "sweep_max_parallel", "sweep_early_stop_eta", "sweep_max_cost_usd",
                      "sweep_val_images"}  # fmt: skip
    for name, spec in inputs.items():
        if name in {"image", "wait"} | sweep_settings:
            continue
        if name in sweep_inputs:
            assert spec["type"] == "string", name
            assert sweep_inputs[name] in trigger_events.PARAM_TYPES, name
            continue
        assert name in trigger_events.PARAM_TYPES, f"retrain.yml input {name} is not a retrain parameter"
        assert trigger_events.PARAM_TYPES[name] in yaml_types[spec["type"]], name
        for option in spec.get("options", []):
            assert trigger_events.validate_params({name: option}) == {name: option}


def test_the_sweep_client_builds_a_request_the_trigger_accepts() -> None:
    # GIVEN the request scripts/ci/sweep.py sends for the workflow's sweep_lrs and sweep_seeds
    base = ci_retrain.build_request(request_id="1", image=GIT_SHA, git_sha=GIT_SHA, epochs=3, lr=None, model="cnn")
    lrs = ci_sweep.parse_values("0.5, 1.5", "lrs", float)
    seeds = ci_sweep.parse_values("0, 1", "seeds", int)
    request = ci_sweep.sweep_request(base, lrs, seeds)
    # WHEN the trigger parses it THEN every lr x seed is one run, with the trigger's parameter types
    parsed = trigger_sweeps.parse_sweep_request(request)
    assert sorted((run["lr"], run["seed"]) for run in parsed.sets) == [(0.5, 0), (0.5, 1), (1.5, 0), (1.5, 1)]


def test_the_moving_tag_latest_is_refused_by_the_trigger_and_by_its_client() -> None:
    request = {"action": "retrain", "request_id": "1", "image": "latest", "params": {}}
    with pytest.raises(trigger_events.InvalidEventError, match="'latest' is refused"):
        trigger_events.parse_retrain_request(request)
    with pytest.raises(CIError, match="'latest' is refused"):
        ci_retrain.build_request(request_id="1", image="latest", git_sha=None, epochs=0, lr=0.0, model="")


# --- the parts stay apart -------------------------------------------------------------------------------


def imported_roots(folder: Path) -> set[str]:
    roots: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
    return roots


def test_the_trigger_imports_only_itself_the_standard_library_and_the_aws_sdk() -> None:
    foreign = imported_roots(TRIGGER_SRC) - set(sys.stdlib_module_names) - {"trigger", "boto3", "botocore"}
    assert foreign == set(), "the trigger's zip holds trigger/ alone; it cannot import these"


def test_every_run_id_shape_the_trigger_accepts_is_one_it_makes_and_the_trainer_accepts() -> None:
    for run_id in SAMPLE_RUN_IDS:
        assert trigger_runs.RUN_ID.fullmatch(run_id)
    assert not trigger_runs.RUN_ID.fullmatch(SAMPLE_RUN_IDS[0] + "\n")
    assert not trigger_runs.RUN_ID.fullmatch("_taskdefs")


# --- Terraform's settings for the trigger against the trigger's rules --------------------------------


def terraform_block(kind: str, type_name: str, name: str) -> dict[str, Any]:
    root = load_root(REPO / "terraform")
    for block in root.get(kind, []):
        for type_key, named in block.items():
            if unquote(type_key) == type_name and name in {unquote(n) for n in named}:
                return next(body for n, body in named.items() if unquote(n) == name)
    pytest.fail(f"terraform/ has no {kind} {type_name}.{name}")


def lambda_setting(name: str) -> int:
    (environment,) = terraform_block("resource", "aws_lambda_function", "this")["environment"]
    return int(unquote(str(environment["variables"][name])))


def test_the_claim_time_outlives_every_invocation_and_its_first_retry() -> None:
    # A claim younger than the function's timeout may belong to an invocation still running.
    timeout = int(terraform_block("resource", "aws_lambda_function", "this")["timeout"])
    claim = lambda_setting("PUSHTRAIN_CLAIM_SECONDS")
    assert claim >= 2 * timeout, (claim, timeout)
    assert trigger_config.MIN_CLAIM_SECONDS <= claim <= trigger_config.MAX_CLAIM_SECONDS


def test_run_records_outlive_the_reconcile_look_back() -> None:
    # An expired record would make an image inside the look-back look never trained: it would train again.
    look_back = lambda_setting("PUSHTRAIN_RECONCILE_LOOKBACK_DAYS")
    variables = {unquote(k): v for b in load_root(REPO / "terraform").get("variable", []) for k, v in b.items()}
    variable = variables["checkpoint_expiration_days"]
    (validation,) = variable["validation"]
    least = re.search(r"checkpoint_expiration_days\s*>=\s*([0-9]+)", unquote(str(validation["condition"])))
    assert least is not None, validation
    assert int(least.group(1)) > look_back
    assert int(variable["default"]) > look_back


def test_the_trainers_own_endings_are_not_failures_to_the_trigger_or_the_failure_rule() -> None:
    # GIVEN the trainer's exit codes that are not a failure of the run: done, a duplicate trainer that
    # stood down (another live trainer holds the lease), interrupted and resumable
    from trainer import run as trainer_run

    endings = {trainer_run.EXIT_SUCCEEDED, trainer_run.EXIT_DUPLICATE, trainer_run.EXIT_INTERRUPTED}
    # THEN the trigger marks none of them failed
    assert endings == trigger_stops.NOT_FAILURE_EXIT_CODES
    # AND the training-failed rule (SNS + trigger) matches every exit code but these
    template = (REPO / "terraform" / "event-patterns" / "training-failed.json.tftpl").read_text(encoding="utf-8")
    (excluded,) = re.findall(r'"exitCode": \[\{"anything-but": \[([0-9, ]+)\]\}\]', template)
    assert {int(code) for code in excluded.split(",")} == endings
