"""What one pool process holds of AWS: its boto3 clients, its EC2 instance type, the queue's
visibility timeout.

boto3 clients must not cross a fork, and the ``JobRunner`` that holds this is made in the
worker's main process before Celery's prefork pool forks: the clients are made again in
each pool process, on first use there. Every other part of the worker asks this for a
client on each call rather than keeping one, for the same reason.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from whisperq import storage
from whisperq.settings import Settings
from whisperq.worker.instance import Imds


class ProcessClients:
    """The current process's boto3 clients, made on first use, and what they look up once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[str, Any] = {}
        self._clients_pid = 0

    def client(self, service: str) -> Any:
        # boto3 clients must not cross a fork: make them per pool process.
        if self._clients_pid != os.getpid():
            self._clients, self._clients_pid = {}, os.getpid()
        if service not in self._clients:
            self._clients[service] = storage.client(self.settings, service)
        return self._clients[service]

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @functools.cached_property
    def instance_type(self) -> str | None:
        """The EC2 type this worker runs on (for cost per batch): configured, else asked of
        IMDS once, and only off the local stack."""
        if self.settings.instance_type or self.settings.endpoint_url is not None:
            return self.settings.instance_type
        try:
            return Imds(self.settings.imds_endpoint).get("instance-type") or None
        except OSError:
            return None

    def visibility_timeout(self) -> int:
        """The visibility timeout to keep extending: configured, else the queue's own,
        read per job (one cheap call) so a change to the queue applies at once."""
        if self.settings.visibility_timeout:
            return self.settings.visibility_timeout
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=self.settings.queue_url, AttributeNames=["VisibilityTimeout"]
        )["Attributes"]
        return int(attributes["VisibilityTimeout"])
