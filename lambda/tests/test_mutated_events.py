"""Property: whatever a mutated event carries (other types, unicode, trailing whitespace, huge strings),
the whole handler against an emulated account starts one valid task or none, writes nothing when
it refuses the event, and raises only the trigger's own errors (never a KeyError, a ClientError…)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws
from trigger.errors import TriggerError
from trigger.handler import handle
from trigger_testkit import Emulated, clock, env_of, load_event, no_sleep

RUN_ID = re.compile(r"(push-[0-9a-f]{20}|retrain-[A-Za-z0-9_-]{1,19}-[0-9a-f]{8})", re.ASCII)
DIGEST = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)

ODD_STRINGS = st.sampled_from(
    ["", " ", "\n", "\t", "\u00a0", "\u200b", "²", "\u0663", "é", "😀", "\x00", "a" * 100_000, "latest", "-1", "1e9"]
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    ODD_STRINGS,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


@st.composite
def mutations(draw: st.DrawFn, events: list[dict[str, Any]]) -> dict[str, Any]:
    """A real event with one or two values replaced: by another type, or by the value plus odd text."""
    event = copy.deepcopy(draw(st.sampled_from(events)))
    for _ in range(draw(st.integers(1, 2))):
        path = draw(st.sampled_from(paths(event)))
        node = event
        for key in path[:-1]:
            node = node[key]
        old = node[path[-1]]
        if isinstance(old, str) and draw(st.booleans()):
            odd = draw(ODD_STRINGS)
            node[path[-1]] = draw(st.sampled_from([old + odd, odd + old, old.upper(), old[:-1]]))
        else:
            node[path[-1]] = draw(VALUES)
    return event


@pytest.fixture(scope="module")
def account() -> Iterator[tuple[Emulated, list[dict[str, Any]]]]:
    """An emulated account where the push sample trained, and the three real events aimed at it."""
    with mock_aws():
        aws = Emulated()
        push = load_event("ecr_image_push.json")
        handle(push, aws.config, aws.clients, clock=clock, sleep=no_sleep)
        stop = json.loads(json.dumps(load_event("ecs_task_stopped_spot.json")).replace("us-west-2", "us-east-1"))
        stop["detail"]["taskArn"] = aws.tasks()[0]["taskArn"]
        yield aws, [push, stop, load_event("retrain_request.json")]
        aws.close()


def snapshot(aws: Emulated) -> dict[str, str]:
    listing = aws.s3.list_objects_v2(Bucket=aws.config.bucket).get("Contents", [])
    return {item["Key"]: item["ETag"] for item in listing}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_events_start_one_valid_task_or_none_and_write_nothing_when_refused(
    account: tuple[Emulated, list[dict[str, Any]]], data: st.DataObject
) -> None:
    aws, events = account
    event = data.draw(mutations(events))
    objects, tasks = snapshot(aws), {t["taskArn"] for t in aws.tasks()}

    try:
        handle(event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    except TriggerError as error:
        # THEN a refusal names the problem in one bounded line and leaves the account as it was
        assert 0 < len(str(error)) < 5000
        assert snapshot(aws) == objects
        assert {t["taskArn"] for t in aws.tasks()} == tasks
        return

    started = [t for t in aws.tasks() if t["taskArn"] not in tasks]
    assert len(started) <= 1
    for task in started:  # a started task carries a valid identity and runs a pinned digest
        env = env_of(task)
        assert RUN_ID.fullmatch(env["TRAINER_RUN_ID"])
        assert re.fullmatch(r"[1-9][0-9]?", env["TRAINER_ATTEMPT"], re.ASCII)
        assert DIGEST.fullmatch(env["TRAINER_IMAGE_DIGEST"])
        pinned = aws.ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
        assert pinned["containerDefinitions"][0]["image"].endswith("@" + env["TRAINER_IMAGE_DIGEST"])
        assert aws.record(env["TRAINER_RUN_ID"])["task_arn"] == task["taskArn"]
