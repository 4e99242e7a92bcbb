"""Scale-in protection is never dropped under a job that was received but not yet
reserved: Celery sends task_received before it reserves the job, and the idle check runs
on its own thread every 2 s (a race the reliability tests caught about once in 14 runs)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from celery.worker import state

from whisperq.settings import Settings
from whisperq.worker.instance import ScaleInProtection
from whisperq.worker.instance_guard import InstanceGuard


class HeldAutoscaling:
    """SetInstanceProtection that holds the first "on" call until the test lets it go."""

    def __init__(self) -> None:
        self.calls: list[bool] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def set_instance_protection(self, **kwargs: object) -> None:
        if kwargs["ProtectedFromScaleIn"] and not self.calls:
            self.entered.set()
            assert self.release.wait(timeout=30)
        self.calls.append(bool(kwargs["ProtectedFromScaleIn"]))


class Job:  # what Celery keeps in reserved_requests (weakly)
    pass


def test_an_idle_check_during_a_receipt_keeps_the_protection():
    autoscaling = HeldAutoscaling()
    guard = InstanceGuard(SimpleNamespace(conf=SimpleNamespace()), Settings())
    guard.protection = ScaleInProtection(autoscaling, "workers", "i-0123456789abcdef0")
    job = Job()
    assert not state.reserved_requests
    try:
        received = threading.Thread(target=guard.job_received)  # task_received
        received.start()
        assert autoscaling.entered.wait(timeout=30)  # "on" is being set right now
        idle = threading.Thread(target=guard.drop_protection_when_idle)  # the 2 s poller
        idle.start()
        autoscaling.release.set()
        received.join(timeout=30)
        idle.join(timeout=30)
        assert autoscaling.calls == [True] and guard.protection.protected is True

        state.reserved_requests.add(job)  # Celery reserves the job; it runs
        guard.drop_protection_when_idle()
        assert autoscaling.calls == [True]
        state.reserved_requests.discard(job)  # done, nothing else came: idle now
        guard.drop_protection_when_idle()
        assert autoscaling.calls == [True, False] and guard.protection.protected is False
    finally:
        autoscaling.release.set()
        state.reserved_requests.discard(job)
