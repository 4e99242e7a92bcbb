"""whisperq on AWS: `pulumi up` in this folder. The pieces are in whisperq_infra/."""

import pulumi
from whisperq_infra.config import load_config
from whisperq_infra.deployment import Deployment

deployment = Deployment("whisperq", load_config(pulumi.Config("whisperq")))

pulumi.export("bucket", deployment.storage.bucket.bucket)
pulumi.export("queueUrl", deployment.queues.queue.url)
pulumi.export("dlqUrl", deployment.queues.dead_letter.url)
pulumi.export("groupName", deployment.fleet.group.name)
pulumi.export("region", deployment.region)
pulumi.export("dashboardUrl", deployment.monitoring.dashboard_url)
# For `whisperq status` (fleet lines, ETA) and `whisperq cost`, via `config from-stack`.
pulumi.export("jobsPerInstance", deployment.config.jobs_per_instance)
pulumi.export("maxInstances", deployment.config.max_instances)
pulumi.export("instanceType", deployment.config.instance_types[0])
