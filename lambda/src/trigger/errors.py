"""The errors the trigger raises. Every one reaches Lambda (so its retries and the dead-letter queue
see it); none is caught and logged away."""

from __future__ import annotations


class TriggerError(Exception):
    """Base of every error the trigger raises on purpose."""


class ConfigError(TriggerError):
    """An environment variable is missing or invalid (names the variable and the value)."""


class InvalidEventError(TriggerError, ValueError):
    """The event is none of the four inputs (push, task stop, retrain request, schedule), or is malformed.

    The message names the field and the value that is wrong."""


class ImageNotFoundError(TriggerError):
    """The requested tag or digest is not in the repository."""


class NotAnImageError(TriggerError):
    """The requested image is a signature, attestation, SBOM, chart or other artifact: nothing to run."""


class TaskDefinitionError(TriggerError):
    """The base task definition cannot be copied into a digest-pinned revision."""


class RunTaskFailedError(TriggerError):
    """RunTask answered with `failures` (or without a task)."""


class AttemptsExhaustedError(TriggerError):
    """A Spot-interrupted run has used all of its attempts (PUSHTRAIN_MAX_ATTEMPTS)."""


class StartInFlightError(TriggerError):
    """Another invocation holds a fresh claim on this start (or registration): retry later.

    Lambda's retries (and EventBridge's) deliver the event again; by then the claimant has started
    the task (a duplicate) or its claim has expired (PUSHTRAIN_CLAIM_SECONDS) and may be taken over.
    """


class RecordConflictError(TriggerError):
    """The run record in S3 kept changing under us, or contradicts the event."""


class StoreAccessError(TriggerError, PermissionError):
    """The artifacts bucket refused a read the trigger needs (names the missing grant)."""
