"""The worker's EC2 instance: spot interruption notices and the Auto Scaling group's
termination (IMDSv2), scale-in protection, the termination lifecycle hook, and marking the
instance unhealthy.

The watchers run as threads in the worker's main process. Nothing here does anything off
EC2 (or on the local stack) unless configured to.

IMDS paths read (under /latest/meta-data/): ``instance-id``, ``instance-type``,
``spot/instance-action`` (a spot interruption notice: JSON) and
``autoscaling/target-lifecycle-state`` (``InService``, ``Terminated``, ...: where the group
is taking the instance; ``Terminated`` while its termination lifecycle hook holds it).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger("whisperq.instance")

TOKEN_TTL_SECONDS = 21600
TERMINATED = "Terminated"  # autoscaling/target-lifecycle-state: the group is terminating us


class Imds:
    """A minimal IMDSv2 client: a session token, then GETs with it."""

    def __init__(self, endpoint: str, timeout: float = 1.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self._token: str | None = None

    def _request(self, method: str, path: str, headers: dict[str, str]) -> str | None:
        request = urllib.request.Request(f"{self.endpoint}{path}", method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read().decode("utf-8")
        except urllib.error.HTTPError as error:
            if error.code == 401:
                self._token = None  # expired: fetch a new one next time
            if error.code in (401, 404):
                return None
            raise

    def token(self) -> str | None:
        if self._token is None:
            self._token = self._request(
                "PUT",
                "/latest/api/token",
                {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
            )
        return self._token

    def get(self, path: str) -> str | None:
        """A metadata value, or None when it does not exist (404)."""
        token = self.token()
        headers = {"X-aws-ec2-metadata-token": token} if token else {}
        return self._request("GET", f"/latest/meta-data/{path}", headers)

    def available(self) -> bool:
        try:
            return self.token() is not None
        except OSError:
            return False

    def instance_id(self) -> str | None:
        return self.get("instance-id")

    def spot_notice(self) -> dict[str, Any] | None:
        """The interruption notice (``{"action": "terminate", "time": ...}``), if any."""
        body = self.get("spot/instance-action")
        return json.loads(body) if body else None

    def target_lifecycle_state(self) -> str | None:
        """Where the Auto Scaling group is taking this instance (``InService``,
        ``Terminated``, ...); None outside a group."""
        body = self.get("autoscaling/target-lifecycle-state")
        return body.strip() if body else None


class Poller:
    """Calls ``tick`` every ``interval`` seconds in a daemon thread (and at once when
    ``immediately``), until ``tick`` returns True or ``stop()`` is called."""

    def __init__(
        self,
        name: str,
        interval: float,
        tick: Callable[[], bool | None],
        immediately: bool = False,
    ) -> None:
        self.interval = interval
        self.tick = tick
        self.immediately = immediately
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Poller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        if self.immediately and self.tick():
            return
        while not self._stop.wait(self.interval):
            if self.tick():
                return


class SpotWatcher(Poller):
    """Polls for a spot interruption notice; calls ``on_notice`` once when one appears.
    The first look is at once: a worker restarted on an instance that has its notice
    already stops before it takes a job."""

    def __init__(
        self, imds: Imds, interval: float, on_notice: Callable[[dict[str, Any]], None]
    ) -> None:
        super().__init__("spot-watcher", interval, self._check, immediately=True)
        self.imds = imds
        self.on_notice = on_notice

    def _check(self) -> bool:
        try:
            notice = self.imds.spot_notice()
        except (OSError, ValueError) as error:
            log.debug("spot notice poll failed: %s", error)
            return False
        if not notice:
            return False
        log.warning("spot interruption notice: %s", notice)
        self.on_notice(notice)
        return True


class LifecycleWatcher(Poller):
    """Polls the group's target lifecycle state for this instance; calls ``on_terminated``
    once when it reads ``Terminated``: the group is terminating the instance (scale-in,
    capacity rebalancing, a spot interruption) and its termination lifecycle hook holds it
    until the worker completes the action (or the hook's heartbeat runs out). The first
    look is at once, as the spot watcher's."""

    def __init__(self, imds: Imds, interval: float, on_terminated: Callable[[], None]) -> None:
        super().__init__("lifecycle-watcher", interval, self._check, immediately=True)
        self.imds = imds
        self.on_terminated = on_terminated
        self.terminated = False

    def _check(self) -> bool:
        try:
            state = self.imds.target_lifecycle_state()
        except OSError as error:
            log.debug("target lifecycle state poll failed: %s", error)
            return False
        if state != TERMINATED:
            return False
        self.terminated = True
        log.warning("the Auto Scaling group is terminating this instance (%s)", state)
        self.on_terminated()
        return True


def complete_lifecycle_action(autoscaling: Any, group: str, hook: str, instance_id: str) -> None:
    """Let the group go on terminating ``instance_id`` now (its hook would otherwise hold
    it until the heartbeat runs out)."""
    autoscaling.complete_lifecycle_action(
        LifecycleHookName=hook,
        AutoScalingGroupName=group,
        LifecycleActionResult="CONTINUE",
        InstanceId=instance_id,
    )


def mark_unhealthy(autoscaling: Any, instance_id: str) -> None:
    """Have the group replace ``instance_id`` at once (no health check grace period)."""
    autoscaling.set_instance_health(
        InstanceId=instance_id, HealthStatus="Unhealthy", ShouldRespectGracePeriod=False
    )


class ScaleInProtection:
    """Protects the instance from scale-in while it holds a job; clears it when idle.

    Calls the Auto Scaling API only when the state changes.
    """

    def __init__(self, autoscaling: Any, group: str, instance_id: str) -> None:
        self.autoscaling = autoscaling
        self.group = group
        self.instance_id = instance_id
        self.protected: bool | None = None
        self._lock = threading.Lock()

    def set(self, protected: bool) -> None:
        with self._lock:
            if protected == self.protected:
                return
            try:
                self.autoscaling.set_instance_protection(
                    AutoScalingGroupName=self.group,
                    InstanceIds=[self.instance_id],
                    ProtectedFromScaleIn=protected,
                )
            except Exception as error:
                log.warning("could not set scale-in protection to %s: %s", protected, error)
                return
            self.protected = protected
            log.info("scale-in protection %s", "on" if protected else "off")
