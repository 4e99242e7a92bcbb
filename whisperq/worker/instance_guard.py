"""Keeping the instance's life and the worker's in step, in the worker's main process: a
spot interruption notice or the Auto Scaling group terminating the instance (its
termination lifecycle hook) stops the worker within the spot grace; scale-in protection is
on while the worker holds a job; the lifecycle hook is completed once the worker has
stopped, so the group goes on at once.

The pieces that talk to IMDS and Auto Scaling (watchers, protection, the hook's
completion) are ``instance``'s; this decides when to use them.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from celery import Celery

from whisperq import storage
from whisperq.settings import Settings
from whisperq.worker.instance import (
    TERMINATED,
    Imds,
    LifecycleWatcher,
    Poller,
    ScaleInProtection,
    SpotWatcher,
    complete_lifecycle_action,
)

log = logging.getLogger("whisperq.worker")


class InstanceGuard:
    """In the worker's main process: watches for spot interruption notices and for the
    Auto Scaling group terminating the instance (its termination lifecycle hook), keeps
    scale-in protection on while the worker holds a job, and completes the lifecycle hook
    once the worker has stopped."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.imds = Imds(settings.imds_endpoint)
        self.watcher: SpotWatcher | None = None
        self.lifecycle: LifecycleWatcher | None = None
        self.protection: ScaleInProtection | None = None
        self.poller: Poller | None = None
        self.autoscaling: Any = None
        self.instance_id: str | None = None
        self.stopping = False  # a shutdown has begun (ours, or SIGTERM's)
        # The instance is going away (a spot notice, the group terminating it): the worker
        # exits with WORKER_EXIT_INSTANCE_LEAVING, which systemd does not restart.
        self.leaving = False
        self.lifecycle_completed = False
        # Reentrant: stop() runs in Celery's signal handler, which a second signal can
        # interrupt with stop() again.
        self._lock = threading.RLock()
        # Scale-in protection: Celery sends task_received before it reserves the job, so an
        # idle check between the two would see no job and drop the protection just set.
        # Receipts are counted; a check that finds one since the last check keeps it, and
        # one lock orders "on" and "off" so the later decision is the one that stays.
        self._protection_lock = threading.Lock()
        self._received = 0
        self._received_at_last_check = 0

    def spot_watch_enabled(self) -> bool:
        if self.settings.spot_watch == "auto":
            # The local stack is never on EC2; elsewhere, ask whether IMDS answers.
            return self.settings.endpoint_url is None and self.imds.available()
        return self.settings.spot_watch == "on"

    def start(self, **_: Any) -> None:
        if self.spot_watch_enabled():
            self.watcher = SpotWatcher(
                self.imds, self.settings.spot_poll_seconds, self.on_spot_notice
            )
            self.watcher.start()
            log.info("watching for spot interruption notices at %s", self.imds.endpoint)
        group = self.settings.autoscaling_group
        if not group:
            if self.settings.lifecycle_hook:
                log.warning("a lifecycle hook but no Auto Scaling group: the hook is not watched")
            return
        instance_id = self.settings.instance_id
        if instance_id is None:
            try:
                instance_id = self.imds.instance_id()
            except OSError as error:  # off EC2 with a group configured: say so, go on
                log.warning("cannot ask IMDS for the instance id: %s", error)
        if not instance_id:
            log.warning("no instance id: scale-in protection and the lifecycle hook are off")
            return
        self.instance_id = instance_id
        self.autoscaling = storage.client(self.settings, "autoscaling")
        self.protection = ScaleInProtection(self.autoscaling, group, instance_id)
        self.poller = Poller("scale-in-protection", 2.0, self.drop_protection_when_idle).start()
        if self.settings.lifecycle_hook:
            self.lifecycle = LifecycleWatcher(
                self.imds, self.settings.spot_poll_seconds, self.on_terminating
            )
            self.lifecycle.start()
            log.info(
                "watching %s for the group terminating this instance (lifecycle hook %s)",
                self.imds.endpoint,
                self.settings.lifecycle_hook,
            )

    def stop(self, **_: Any) -> None:
        """At worker_shutting_down (in Celery's signal handler): the worker stops; no
        watcher may start another shutdown, which would cut the running job's grace."""
        with self._lock:
            self.stopping = True
        for thread in (self.watcher, self.poller, self.lifecycle):
            if thread is not None:
                thread.stop()

    def job_received(self, **_: Any) -> None:
        with self._protection_lock:
            self._received += 1
            if self.protection is not None:
                self.protection.set(True)

    def drop_protection_when_idle(self) -> None:
        from celery.worker import state

        with self._protection_lock:
            received_since = self._received != self._received_at_last_check
            self._received_at_last_check = self._received
            if self.protection is not None and not received_since and not state.reserved_requests:
                self.protection.set(False)

    def on_spot_notice(self, notice: dict[str, Any]) -> None:
        """Two minutes' notice: finish what fits in the spot grace, hand back the rest."""
        self.shut_down(f"spot interruption ({notice.get('action')})")

    def on_terminating(self) -> None:
        """The group is terminating the instance (scale-in, capacity rebalancing): as on
        a spot notice; the hook is completed once the worker has stopped (``finish``)."""
        self.shut_down("the Auto Scaling group is terminating this instance")

    def shut_down(self, why: str) -> None:
        """Stop taking work; the running job gets the spot grace, then goes back."""
        with self._lock:
            self.leaving = True  # also when SIGTERM came first: the instance still goes
            if self.stopping:
                log.warning("%s: the worker is stopping already", why)
                return
            self.stopping = True
        grace = min(self.settings.shutdown_grace_seconds, self.settings.spot_grace_seconds)
        self.app.conf.worker_soft_shutdown_timeout = grace
        log.warning("%s: stopping, grace %.0fs", why, grace)
        os.kill(os.getpid(), signal.SIGQUIT)  # Celery: soft shutdown, then cold

    def finish(self) -> bool:
        """After the worker has stopped (its jobs done or handed back): if the group is
        terminating the instance, complete its lifecycle hook (CONTINUE) so that it goes
        on at once. True when completed. Whatever stopped the worker -- the watcher, a
        spot notice, SIGTERM -- IMDS is asked once more, so a termination that began
        during the shutdown is completed too. Once per worker."""
        hook, group = self.settings.lifecycle_hook, self.settings.autoscaling_group
        if self.lifecycle is None or not (hook and group and self.instance_id):
            return False
        self.lifecycle.stop()
        if self.lifecycle_completed:
            return True
        if not self.lifecycle.terminated:
            try:
                if self.imds.target_lifecycle_state() != TERMINATED:
                    return False
            except OSError as error:
                log.warning("cannot read the target lifecycle state: %s", error)
                return False
        self.leaving = True  # the group is terminating the instance
        try:
            complete_lifecycle_action(self.autoscaling, group, hook, self.instance_id)
        except Exception as error:  # the hook's heartbeat runs out; the group goes on then
            log.warning("could not complete lifecycle hook %s: %s", hook, error)
            return False
        self.lifecycle_completed = True
        log.warning(
            "lifecycle hook %s completed (CONTINUE): the group terminates %s now",
            hook,
            self.instance_id,
        )
        return True
