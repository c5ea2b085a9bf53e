"""The launcher seam: what the start protocol (trigger.starts) needs of a compute, and nothing more.

A launcher starts one attempt of a run on its compute and finds the launch an earlier attempt made:

- `find_existing(spec)`: the ARN of a task or job this run's attempt already launched, in any state, or
  None. It is what makes a lost answer harmless: a start that crashed, timed out or got a 5xx after the
  launch went through is adopted, never doubled. It looks by the run's own name (ECS `startedBy` and
  the attempt's TRAINER_ATTEMPT, Batch's job name `<run_id>-a<attempt>`), never by a client token.
- `launch(spec)`: pin the image (one definition revision per digest, trigger.taskdef) and launch once.
  It may raise; the protocol then asks `find_existing` before it releases the claim.

Implementations: trigger.ecs.EcsLauncher (Fargate, and the GPU capacity providers on EC2) and
trigger.batch.BatchLauncher (multi-node jobs). The protocol around them (claim, adopt, record) has
one home, trigger.starts; docs/contracts.md describes the seam.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from trigger.runs import RunSpec


@dataclass(frozen=True)
class Launched:
    """One launch: the task or job ARN, where it was placed, and the pinned revision it runs."""

    arn: str
    capacity_provider: str | None
    definition_arn: str
    registered: bool  # whether this launch registered the digest's revision


class Launcher(Protocol):
    def find_existing(self, spec: RunSpec) -> str | None: ...

    def launch(self, spec: RunSpec) -> Launched: ...
