"""Event validation: the four inputs are accepted; a well-formed event not for us is skipped with a
logged reason; anything malformed is refused by name before any AWS call (every pattern matches the
whole value); a property test throws malformed events at the parser."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trigger.config import Config, load_config
from trigger.errors import InvalidEventError
from trigger.events import PushEvent, RetrainRequest, ScheduledEvent, SkippedEvent, TaskStopEvent
from trigger.handler import handle
from trigger.handler import parse as parse_event
from trigger_testkit import DIGEST, ENVIRONMENT, GIT_SHA, Stubbed, clock, load_event, no_sleep

PUSH = load_event("ecr_image_push.json")
STOP = load_event("ecs_task_stopped_spot.json")
RETRAIN = load_event("retrain_request.json")
SCHEDULED = load_event("scheduled_event.json")


def changed(event: dict[str, Any], path: tuple[str, ...], value: Any = ..., *, delete: bool = False) -> dict[str, Any]:
    """A deep copy of `event` with the value at `path` replaced (or deleted)."""
    result = copy.deepcopy(event)
    node = result
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return result


def stop_with_region(event: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(event).replace("us-west-2", "us-east-1"))


def test_the_four_fixture_events_parse_into_their_types(config: Config) -> None:
    push = parse_event(PUSH, config)
    assert push == PushEvent(event_id=PUSH["id"], digest=DIGEST, tag=GIT_SHA)
    assert push.git_sha == GIT_SHA
    stop = parse_event(STOP, config)
    assert isinstance(stop, TaskStopEvent)
    assert stop.resumable
    assert stop.exit_code == 75
    assert stop.environment["TRAINER_RUN_ID"] == "push-9a749648e91499fcfb67"
    retrain = parse_event(RETRAIN, config)
    assert retrain == RetrainRequest(
        request_id="11223344556", image=GIT_SHA, params={"epochs": 12, "lr": 0.2, "model": "airbench"}, git_sha=None
    )
    assert isinstance(parse_event(SCHEDULED, config), ScheduledEvent)


def test_a_push_tagged_latest_has_no_git_sha(config: Config) -> None:
    push = parse_event(changed(PUSH, ("detail", "image-tag"), "latest"), config)
    assert isinstance(push, PushEvent)
    assert push.git_sha is None


# Well-formed, but not for us: answered with a logged reason, no AWS call, no error (nothing to retry).
SKIPPED: dict[str, tuple[object, str]] = {
    "delete action": (changed(PUSH, ("detail", "action-type"), "DELETE"), "action-type='DELETE' is not PUSH"),
    "failed push": (changed(PUSH, ("detail", "result"), "FAILURE"), "result='FAILURE' is not SUCCESS"),
    "another repository": (changed(PUSH, ("detail", "repository-name"), "other"), "'other' is not our repository"),
    "another cluster": (
        changed(STOP, ("detail", "clusterArn"), "arn:aws:ecs:us-west-2:123456789012:cluster/other"),
        "is not our cluster",
    ),
    "another family": (
        changed(STOP, ("detail", "taskDefinitionArn"), "arn:aws:ecs:us-west-2:123456789012:task-definition/web:3"),
        "is not a revision of 'pushtrain-trainer'",
    ),
    "spot stop without run id": (
        changed(STOP, ("detail", "overrides", "containerOverrides", 0, "environment"), []),
        "no TRAINER_RUN_ID override",
    ),
}


@pytest.mark.parametrize("name", list(SKIPPED))
def test_event_not_for_us_is_logged_and_skipped_without_aws_or_error(
    name: str, stubbed: Stubbed, config: Config
) -> None:
    event, reason = SKIPPED[name]
    if isinstance(event, dict) and event.get("source") == "aws.ecs":
        event = stop_with_region(event)

    decision = handle(event, config, stubbed.clients, clock=clock, sleep=no_sleep)

    assert decision["outcome"] in {"not-for-us", "no-restart"}
    assert reason in decision["reason"]
    stubbed.assert_done()


NEWLINE = "\n"
REFUSED: dict[str, tuple[object, str]] = {
    "digest with a trailing newline": (changed(PUSH, ("detail", "image-digest"), DIGEST + NEWLINE), "image-digest="),
    "tag with a trailing newline": (changed(PUSH, ("detail", "image-tag"), GIT_SHA + NEWLINE), "image-tag="),
    "request id with a trailing newline": (changed(RETRAIN, ("request_id",), "1122" + NEWLINE), "request_id="),
    "image with a trailing newline": (changed(RETRAIN, ("image",), GIT_SHA + NEWLINE), "image="),
    "git sha with a trailing newline": (changed(RETRAIN, ("git_sha",), GIT_SHA + NEWLINE), "git_sha="),
    "model with a trailing newline": (changed(RETRAIN, ("params", "model"), "cnn" + NEWLINE), "params.model="),
    "latest": (changed(RETRAIN, ("image",), "latest"), "'latest' is refused"),
    "superscript attempt": (
        changed(STOP, ("detail", "overrides", "containerOverrides", 0, "environment", 0, "value"), "²"),
        "no valid TRAINER_ATTEMPT",
    ),
    "arabic-indic attempt": (
        changed(STOP, ("detail", "overrides", "containerOverrides", 0, "environment", 0, "value"), "\u0663"),
        "no valid TRAINER_ATTEMPT",
    ),
    "huge digest": (changed(PUSH, ("detail", "image-digest"), "sha256:" + "a" * 200_000), r"characters\)"),
    "missing digest": (changed(PUSH, ("detail", "image-digest"), delete=True), "image-digest must be a non-empty"),
    "short digest": (
        changed(
            PUSH, ("detail", "image-digest"), "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234"
        ),
        "is not a sha256:<64 hex> digest",
    ),
    "detail is a list": (changed(PUSH, ("detail",), []), "event.detail must be an object"),
    "missing id": (changed(PUSH, ("id",), delete=True), "event.id must be a non-empty string"),
    "bad tag": (changed(PUSH, ("detail", "image-tag"), "-bad tag"), "is not a valid image tag"),
    "not an object": (["ECR Image Action"], "must be a JSON object, got list"),
    "nothing": (None, "must be a JSON object, got NoneType"),
    "unknown detail-type": (changed(PUSH, ("detail-type",), "ECR Image Scan"), "unsupported event"),
    "unknown source": (changed(PUSH, ("source",), "aws.s3"), "unsupported event"),
    "unknown action": (changed(RETRAIN, ("action",), "delete"), "action='delete' is unknown"),
    "unknown request key": (changed(RETRAIN, ("force",), True), "unknown keys \\['force'\\]"),
    "unknown parameter": (changed(RETRAIN, ("params", "gpus"), 8), "params.gpus is not a parameter"),
    "oversized string parameter": (changed(RETRAIN, ("params", "model"), "m" * 65), "must be 1-64 characters"),
    "oversized int parameter": (changed(RETRAIN, ("params", "epochs"), 2**40), "is outside"),
    "string for int": (changed(RETRAIN, ("params", "epochs"), "12"), "must be int, got str"),
    "bool for int": (changed(RETRAIN, ("params", "epochs"), True), "must be int, got bool"),
    "float for int": (changed(RETRAIN, ("params", "epochs"), 1.5), "must be int, got float"),
    "nan for float": (changed(RETRAIN, ("params", "lr"), float("nan")), "must be a finite number"),
    "shell in str": (changed(RETRAIN, ("params", "model"), "x; rm -rf /"), "must be 1-64 characters"),
    "params not an object": (changed(RETRAIN, ("params",), [1]), "params must be an object"),
    "long request id": (changed(RETRAIN, ("request_id",), "1" * 20), "request_id="),
    "numeric request id": (changed(RETRAIN, ("request_id",), 11223344556), "request_id must be a non-empty string"),
    "bad image": (changed(RETRAIN, ("image",), "repo:tag"), "neither an image tag nor"),
    "bad git sha": (changed(RETRAIN, ("git_sha",), "main"), "not a 40-character hex commit sha"),
    "non-int exit code": (changed(STOP, ("detail", "containers", 0, "exitCode"), "75"), "is not an integer"),
    "cluster arn with a trailing newline": (
        changed(STOP, ("detail", "clusterArn"), "arn:aws:ecs:us-west-2:123456789012:cluster/pushtrain\n"),
        "is not an ECS cluster ARN",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_event_raises_naming_the_problem_and_calls_no_aws(name: str, stubbed: Stubbed, config: Config) -> None:
    # GIVEN clients that answer nothing (any AWS call would raise a Stubber error, not InvalidEventError)
    event, message = REFUSED[name]
    if isinstance(event, dict) and event.get("source") == "aws.ecs":
        event = stop_with_region(event)

    # WHEN the handler receives the event / THEN it raises InvalidEventError naming the problem
    with pytest.raises(InvalidEventError, match=message) as raised:
        handle(event, config, stubbed.clients, clock=clock, sleep=no_sleep)
    stubbed.assert_done()
    # AND the message stays short, whatever the event carried
    assert len(str(raised.value)) < 1000


# --- property: malformed events ----------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    """A real event with one to three values replaced by arbitrary JSON or deleted."""
    event = stop_with_region(copy.deepcopy(draw(st.sampled_from([PUSH, STOP, RETRAIN, SCHEDULED]))))
    for _ in range(draw(st.integers(1, 3))):
        options = paths(event)
        if not options:
            break
        path = draw(st.sampled_from(options))
        node = event
        for key in path[:-1]:
            node = node[key]
        if isinstance(node, dict) and draw(st.booleans()):
            del node[path[-1]]
        else:
            node[path[-1]] = draw(JSON)
    return event


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=mutated_events())
def test_mutated_events_are_refused_by_name_or_parse_into_valid_values(event: dict[str, Any]) -> None:
    # GIVEN any mutation of a real event; WHEN it is parsed
    config = load_config(ENVIRONMENT)
    try:
        parsed = parse_event(event, config)
    except InvalidEventError as error:
        assert str(error)  # THEN either a named refusal (never KeyError, TypeError, AttributeError…)
        return
    # … or every value it carries still satisfies the contract
    if isinstance(parsed, SkippedEvent):
        assert parsed.reason
    elif isinstance(parsed, PushEvent):
        assert event["detail"]["repository-name"] == config.repository_name
        assert event["detail"]["action-type"] == "PUSH"
        assert event["detail"]["result"] == "SUCCESS"
        assert parsed.digest.startswith("sha256:")
        assert len(parsed.digest) == 71
    elif isinstance(parsed, TaskStopEvent):
        assert parsed.task_definition_arn.rsplit("/", 1)[1].startswith("pushtrain-trainer:")
        assert all(isinstance(v, str) for v in parsed.environment.values())
    elif isinstance(parsed, RetrainRequest):
        assert set(parsed.params) <= {"model", "epochs", "lr", "batch_size", "seed", "label_smoothing", "weight_decay"}
        assert len(parsed.request_id) <= 19
    else:
        assert isinstance(parsed, ScheduledEvent)


@settings(max_examples=200, deadline=None)
@given(event=JSON)
def test_arbitrary_json_is_refused_by_name_never_crashing_the_parser(event: Any) -> None:
    try:
        parse_event(event, load_config(ENVIRONMENT))
    except InvalidEventError as error:
        assert str(error)
    else:  # a random document that happens to be a valid event must at least be a well-formed one
        assert isinstance(event, dict)
