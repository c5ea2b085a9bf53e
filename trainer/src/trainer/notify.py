"""One short SNS message when a run succeeds: model, version, accuracy, promoted or not, cost.

Failures already reach the topic as CloudWatch alarms (terraform/monitoring.tf); this says "done"
for the runs that worked, so a push is answered either way. It is sent only when the setting
`notify_topic_arn` (`TRAINER_NOTIFY_TOPIC_ARN`, set by Terraform on the task definition) names a
topic. Sending is best effort: a refused or unreachable SNS is logged and never changes the run's
outcome or exit code (the version is published and gated by then).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

# arn:aws:sns:<region>:<account>:<topic>; the region is where the client must send.
TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:(?P<region>[a-z0-9-]+):\d{12}:[A-Za-z0-9_.-]{1,256}")
SUBJECT_LIMIT = 99  # SNS subjects: under 100 ASCII characters, no line breaks


def region_of(topic_arn: str) -> str:
    """The region of an SNS topic ARN; ValueError naming the value when it is not one."""
    match = TOPIC_ARN.fullmatch(topic_arn)
    if match is None:
        raise ValueError(f"{topic_arn!r} is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)")
    return match["region"]


VERDICTS = {"promoted": "promoted to champion", "kept": "not promoted", "pending": "gate pending"}


def success_message(
    manifest: Mapping[str, Any], *, outcome: str, reason: str, cost: str, report_uri: str
) -> tuple[str, str]:
    """(subject, body) of the message for a succeeded run; outcome: the gate's (promoted, kept, pending)."""
    accuracy = 100 * float(manifest["metrics"]["accuracy"])
    verdict = VERDICTS.get(outcome, outcome)
    subject = f"pushtrain: {manifest['model_name']} {accuracy:.2f}% {verdict}"
    subject = subject.encode("ascii", "replace").decode()[:SUBJECT_LIMIT]
    config = manifest["config"]
    body = "\n".join(
        [
            f"Run {manifest['run_id']} succeeded.",
            f"model:    {manifest['model_name']} version {manifest['version']}",
            f"accuracy: {accuracy:.2f} % ({config['model']}, {config['epochs']} epochs)",
            f"gate:     {verdict}: {reason}",
            f"cost:     {cost}",
            f"git sha:  {manifest.get('git_sha') or 'unknown'}",
            f"report:   {report_uri}",
        ]
    )
    return subject, body


def publish(topic_arn: str, subject: str, body: str, client: Any = None) -> str | None:
    """Publish to the topic; the message id, or None (logged) when SNS refused or was unreachable."""
    try:
        if client is None:
            import boto3
            from botocore.config import Config

            # Short timeouts: without a route to SNS (a private subnet with no SNS endpoint) the run
            # would otherwise wait minutes at its very end for a message that cannot go out.
            client = boto3.client(
                "sns",
                region_name=region_of(topic_arn),
                config=Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 2}),
            )
        message_id = str(client.publish(TopicArn=topic_arn, Subject=subject, Message=body)["MessageId"])
    except Exception as exc:  # noqa: BLE001 -- best effort: a notification must never fail a finished run
        log.warning("could not notify %s: %s: %s", topic_arn, type(exc).__name__, exc)
        return None
    log.info("notified %s (message %s): %s", topic_arn, message_id, subject)
    return message_id
