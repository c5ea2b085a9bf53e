"""Run identity (docs/contracts.md) and the limits ECS puts on what carries it."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trigger.events import REQUEST_ID
from trigger.runs import RunSpec, client_token, container_environment, push_run_id, retrain_run_id, started_by
from trigger_testkit import DIGEST


def test_push_run_id_is_the_contract_hash_of_digest_and_canonical_parameters() -> None:
    expected = "push-" + hashlib.sha256((DIGEST + '{"epochs":3,"lr":0.1}').encode()).hexdigest()[:20]

    assert push_run_id(DIGEST, {"lr": 0.1, "epochs": 3}) == expected
    assert push_run_id(DIGEST, {"epochs": 3, "lr": 0.1}) == expected  # key order does not matter
    assert push_run_id(DIGEST, {}) != push_run_id(DIGEST, {"epochs": 3})


def test_retrain_run_id_carries_the_request_id() -> None:
    run_id = retrain_run_id("11223344556", DIGEST, {})

    assert run_id == "retrain-11223344556-" + hashlib.sha256((DIGEST + "{}").encode()).hexdigest()[:8]
    assert retrain_run_id("11223344557", DIGEST, {}) != run_id


@given(request_id=st.from_regex(REQUEST_ID, fullmatch=True), attempt=st.integers(1, 99))
def test_every_valid_request_id_fits_client_token_and_started_by(request_id: str, attempt: int) -> None:
    run_id = retrain_run_id(request_id, DIGEST, {"epochs": 1})

    assert len(client_token(run_id, attempt, on_demand=True)) <= 64
    assert started_by(run_id) == run_id


def test_a_raw_digest_would_not_fit_a_client_token() -> None:
    # the reason run ids are hashes: "sha256:" + 64 hex is already 71 characters
    with pytest.raises(ValueError, match="ECS allows 64"):
        client_token(DIGEST, 1)


def test_parameters_become_sorted_trainer_overrides() -> None:
    spec = RunSpec(run_id="push-x", attempt=2, digest=DIGEST, git_sha=None, params={"model": "resnet", "lr": 0.5})

    assert container_environment(spec) == [
        {"name": "TRAINER_ATTEMPT", "value": "2"},
        {"name": "TRAINER_IMAGE_DIGEST", "value": DIGEST},
        {"name": "TRAINER_LR", "value": "0.5"},
        {"name": "TRAINER_MODEL", "value": "resnet"},
        {"name": "TRAINER_RUN_ID", "value": "push-x"},
    ]
