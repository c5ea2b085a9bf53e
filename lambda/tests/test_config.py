"""Configuration: every PUSHTRAIN_* variable validated at once, each problem named."""

from __future__ import annotations

import pytest
from trigger import handler
from trigger.config import load_config
from trigger.errors import ConfigError
from trigger_testkit import ENVIRONMENT


def test_terraform_style_environment_parses_into_typed_settings() -> None:
    config = load_config(ENVIRONMENT)

    assert config.subnets == ("subnet-0abc1234def567890", "subnet-0fed9876cba543210")
    assert config.security_groups == ("sg-0123456789abcdef0",)
    assert config.max_attempts == 3


def test_empty_environment_names_every_missing_variable() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({})

    for name in ENVIRONMENT:
        assert name in str(raised.value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PUSHTRAIN_MAX_ATTEMPTS", "three", "PUSHTRAIN_MAX_ATTEMPTS='three' is not a whole number in ASCII decimal"),
        ("PUSHTRAIN_MAX_ATTEMPTS", "²", "PUSHTRAIN_MAX_ATTEMPTS='²' is not a whole number in ASCII decimal"),
        ("PUSHTRAIN_MAX_ATTEMPTS", "\u0663", "PUSHTRAIN_MAX_ATTEMPTS='\u0663' is not a whole number in ASCII decimal"),
        ("PUSHTRAIN_MAX_ATTEMPTS", " 3", "PUSHTRAIN_MAX_ATTEMPTS=' 3' is not a whole number in ASCII decimal"),
        ("PUSHTRAIN_CLAIM_SECONDS", "59", "PUSHTRAIN_CLAIM_SECONDS=59 is outside 60..3600"),
        ("PUSHTRAIN_RECONCILE_LOOKBACK_DAYS", "0", "PUSHTRAIN_RECONCILE_LOOKBACK_DAYS=0 is outside 1..365"),
        ("PUSHTRAIN_BUCKET", "bucket-name\n", "PUSHTRAIN_BUCKET='bucket-name\\n' does not match"),
        ("PUSHTRAIN_MAX_ATTEMPTS", "0", "PUSHTRAIN_MAX_ATTEMPTS=0 is outside 1..99"),
        ("PUSHTRAIN_MAX_ATTEMPTS", "100", "PUSHTRAIN_MAX_ATTEMPTS=100 is outside 1..99"),
        ("PUSHTRAIN_ASSIGN_PUBLIC_IP", "yes", "PUSHTRAIN_ASSIGN_PUBLIC_IP='yes' is not ENABLED or DISABLED"),
        ("PUSHTRAIN_SUBNETS", "subnet-1,vpc-0abc1234", "PUSHTRAIN_SUBNETS has invalid entries"),
        ("PUSHTRAIN_SUBNETS", " , ", "PUSHTRAIN_SUBNETS is not set"),
        ("PUSHTRAIN_SECURITY_GROUPS", "default", "PUSHTRAIN_SECURITY_GROUPS has invalid entries ['default']"),
        ("PUSHTRAIN_REPOSITORY_URI", "docker.io/library/python", "PUSHTRAIN_REPOSITORY_URI='docker.io/library/python'"),
        (
            "PUSHTRAIN_REPOSITORY_URI",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/other",
            "does not end in PUSHTRAIN_REPOSITORY_NAME='pushtrain-trainer'",
        ),
        ("PUSHTRAIN_BUCKET", "Not_A_Bucket", "PUSHTRAIN_BUCKET='Not_A_Bucket'"),
    ],
)
def test_invalid_variable_is_named_with_its_value(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({**ENVIRONMENT, name: value})

    assert message in str(raised.value)


def test_lambda_handler_validates_configuration_before_looking_at_the_event(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a function deployed without PUSHTRAIN_BUCKET (a cold container: nothing cached)
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PUSHTRAIN_BUCKET")
    handler.current_config.cache_clear()

    # WHEN it is invoked / THEN it fails naming the variable
    try:
        with pytest.raises(ConfigError, match="PUSHTRAIN_BUCKET is not set"):
            handler.lambda_handler({"anything": True}, None)
    finally:
        handler.current_config.cache_clear()
