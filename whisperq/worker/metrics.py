"""Jobs done and failed, and the seconds of audio transcribed, for the fleet's dashboard
(CloudWatch, per minute). Publishing never fails a job: a metric that cannot be sent is
only logged. Off unless ``metrics_namespace`` is set.
"""

from __future__ import annotations

import logging

from whisperq.settings import Settings
from whisperq.worker.clients import ProcessClients

log = logging.getLogger("whisperq.worker")


class JobMetrics:
    """One job's outcome as CloudWatch metrics."""

    def __init__(self, settings: Settings, clients: ProcessClients) -> None:
        self.settings = settings
        self.clients = clients

    def publish(self, outcome: str, audio_seconds: float) -> None:
        """Jobs and audio seconds per minute for the dashboard; never fails a job."""
        if not self.settings.metrics_namespace:
            return
        name = "JobsCompleted" if outcome == "done" else "JobsFailed"
        data = [{"MetricName": name, "Value": 1, "Unit": "Count"}]
        if outcome == "done":
            data.append({"MetricName": "AudioSeconds", "Value": audio_seconds, "Unit": "Seconds"})
        try:
            self.clients.client("cloudwatch").put_metric_data(
                Namespace=self.settings.metrics_namespace, MetricData=data
            )
        except Exception as error:
            log.warning("could not publish metrics: %s", error)
