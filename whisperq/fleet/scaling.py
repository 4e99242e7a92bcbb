"""How many worker instances the queue needs: the one formula the fleet's scaler runs
(packaged as-is into the scaling Lambda), the status command's ETA and the simulator use.

No imports beyond the standard library: this file is shipped alone inside the Lambda.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def desired_capacity(
    visible: int, in_flight: int, jobs_per_instance: int, max_instances: int
) -> int:
    """clamp(ceil((visible + in_flight) / jobs_per_instance), 0, max_instances).

    In-flight messages count: scaling in on visible messages alone would remove busy workers.
    """
    if jobs_per_instance < 1:
        raise ValueError("jobs_per_instance must be at least 1")
    backlog = max(0, visible) + max(0, in_flight)
    return max(0, min(max_instances, math.ceil(backlog / jobs_per_instance)))


@dataclass(frozen=True)
class Decision:
    desired: int
    idle_since: float | None  # when the backlog was first seen empty; None while busy


def decide(
    visible: int,
    in_flight: int,
    current: int,
    jobs_per_instance: int,
    max_instances: int,
    idle_minutes: float,
    idle_since: float | None,
    now: float,
) -> Decision:
    """One scaling step, run every minute.

    With work: the formula (from zero to one at the first message). Scale-in to fewer
    instances is safe because busy workers protect their instances. With no work: keep
    the current instances for ``idle_minutes`` (the next batch need not wait for a boot),
    then go to zero.
    """
    wanted = desired_capacity(visible, in_flight, jobs_per_instance, max_instances)
    if wanted > 0:
        return Decision(wanted, None)
    since = now if idle_since is None else idle_since
    if now - since >= idle_minutes * 60:
        return Decision(0, since)
    return Decision(min(current, max_instances), since)
