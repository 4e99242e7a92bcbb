"""whisperq on AWS: `pulumi up` in this folder. The pieces are in whisperq_infra/."""

import json

import pulumi
from whisperq_infra.cli_policy import cli_user_policy
from whisperq_infra.config import load_config
from whisperq_infra.deployment import Deployment

deployment = Deployment("whisperq", load_config(pulumi.Config("whisperq")))

pulumi.export("bucket", deployment.storage.bucket.bucket)
pulumi.export("queueUrl", deployment.queues.queue.url)
pulumi.export("dlqUrl", deployment.queues.dead_letter.url)
pulumi.export("groupName", deployment.fleet.group.name)
pulumi.export("region", deployment.region)
pulumi.export("dashboardUrl", deployment.monitoring.dashboard_url)
# The alarms' SNS topic: whisperq:alertEmail subscribes an address; subscribe others here.
pulumi.export("alarmTopicArn", deployment.monitoring.topic.arn)
# For `whisperq status` (fleet lines, ETA) and `whisperq cost`, via `config from-stack`.
pulumi.export("jobsPerInstance", deployment.config.jobs_per_instance)
pulumi.export("maxInstances", deployment.config.max_instances)
pulumi.export("instanceType", deployment.instance_types[0])
# The group's types (those the subnets' zones offer) and their capacity weights.
pulumi.export("instanceWeights", deployment.instance_weights)
# Which image the workers boot: "baked" / "configured" (seconds to a worker) or "stock"
# (ami/provision.sh at every boot: minutes, and the model downloaded each time).
pulumi.export(
    "workerImage",
    {
        "id": deployment.image.id,
        "source": deployment.image.source,
        "model": deployment.image.model,
    },
)
pulumi.export("workerLogGroup", deployment.log_group_name)
# "whisperq batch finished" goes to this EventBridge bus (whisperq:eventBus); the CLI puts
# it too when it sees a batch finished first (config from-stack sets event_bus).
if deployment.config.event_bus:
    pulumi.export("eventBus", deployment.config.event_bus)
# S3-event ingestion: drop audio under ingestPrefix (or the external bucket's prefix).
if deployment.ingest is not None:
    pulumi.export("ingestPrefix", deployment.ingest.ingest_prefix)
    pulumi.export("ingestQueueUrl", deployment.ingest.queue.url)
    # Events whose ingest kept failing; `whisperq status` counts both (config from-stack).
    pulumi.export("ingestDlqUrl", deployment.ingest.dead_letter.url)
    if deployment.ingest.external_source:
        pulumi.export("externalSource", deployment.ingest.external_source)
# The least a CLI user (submit, status, wait, results, retry, dlq) needs: docs/deploy.md,
# "Permissions". With the ingest route, status also counts its queue and dead letters.
ingest_queue_arns = (
    [deployment.ingest.queue.arn, deployment.ingest.dead_letter.arn] if deployment.ingest else []
)
pulumi.export(
    "cliUserPolicy",
    pulumi.Output.all(
        deployment.storage.bucket.arn,
        deployment.queues.queue.arn,
        deployment.queues.dead_letter.arn,
        deployment.group_arn,
        *ingest_queue_arns,
    ).apply(
        lambda arns: json.dumps(
            cli_user_policy(
                *arns[:4], ingest_queue_arns=arns[4:], event_bus_arn=deployment.event_bus_arn
            ),
            indent=2,
        )
    ),
)
