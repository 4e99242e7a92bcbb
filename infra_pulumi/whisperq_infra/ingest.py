"""The S3-event ingest route: an object created under ``incoming/<batch>/<path>`` (or under
the external bucket's ``<externalPrefix><batch>/<path>``) becomes a job of ``<batch>``.

::

    own bucket  incoming/*  --S3 notification--\\
                                                 > ingest queue --> ingest Lambda --> job queue
    external bucket PREFIX* --EventBridge rule--/    (redrive: ingest DLQ, alarmed)

The Lambda runs whisperq's own ingest code (``whisperq/batches/ingest.py`` and the modules it
imports, shipped as they are in its zip, as the scaler ships ``whisperq/fleet/scaling.py``), so an
ingested file becomes exactly what ``whisperq submit`` would have made of it. S3 and
EventBridge deliver at least once and out of order: ``whisperq.batches.ingest`` makes a repeated
event a duplicate, and a record that fails is retried alone (partial batch responses)
until the redrive policy parks it in the ingest dead-letter queue.

whisperq never changes a bucket it does not own: the external bucket's owner turns on
"Send notifications to Amazon EventBridge" for it, and the Lambda may only read objects
under its prefix.
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
from whisperq_infra.config import ConfigError, IngestSettings
from whisperq_infra.iam import assume_role_policy
from whisperq_infra.queues import queue_pair

from whisperq import keys
from whisperq.keys import BATCHES, ERROR_SUFFIX, FILES, INPUTS, RESULTS

REPO = Path(__file__).resolve().parents[2]
HANDLER = REPO / "infra_pulumi" / "ingest" / "handler.py"
PACKAGE = "whisperq"
# What the Lambda runtime has besides the standard library.
RUNTIME_PACKAGES = frozenset({"boto3", "botocore"})

FUNCTION_TIMEOUT_S = 120  # a few big recordings copied into inputs/ per invocation
# AWS: an SQS event source's visibility timeout at least six times the function's timeout.
INGEST_VISIBILITY_S = 6 * FUNCTION_TIMEOUT_S
INGEST_MAX_RECEIVE_COUNT = 5
MEMORY_MB = 1024  # also buys network and CPU for the copy and the checksum
EPHEMERAL_MB = 2048  # /tmp: room for a long recording on its way to inputs/
# At most this many invocations at once: the SQS event source's maximum concurrency (AWS:
# 2 to 1000). Bursts wait on the ingest queue; they are not throttled back onto it. No
# reserved concurrency: a new account's limit is often 10, and Lambda refuses a reservation
# that leaves fewer than 10 unreserved, so `pulumi up` would fail there.
CONCURRENCY = 10
BATCH_SIZE = 10
LOG_RETENTION_DAYS = 14
# Daily batches' closing (one S3 listing a run while none is due): a batch is finished
# within this long after its day (and grace) is over and its last file is done.
CLOSE_DAYS_SCHEDULE = "rate(5 minutes)"


# --- the zip: the handler and the whisperq modules it imports, as they are ---------------


def _imported_modules(path: Path, package: str | None) -> Iterator[tuple[str, list[str]]]:
    """(module, names) for every import of ``path``, skipping ``if TYPE_CHECKING:`` blocks;
    relative imports are resolved against ``package``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    type_checking_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                type_checking_only.update(id(inner) for inner in ast.walk(statement))
    for node in ast.walk(tree):  # imports inside functions count: they run in the Lambda
        if id(node) in type_checking_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = (package or "").split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            yield module, [alias.name for alias in node.names]


def module_path(module: str, root: Path = REPO) -> str | None:
    """'whisperq.batches.ingest' -> 'whisperq/batches/ingest.py' (its path in the repository
    and in the zip; a package's is its __init__.py); None when the repository has no such module."""
    base = module.replace(".", "/")
    for path in (f"{base}.py", f"{base}/__init__.py"):
        if (root / path).is_file():
            return path
    return None


def _defined_names(path: Path) -> set[str]:
    """The names a module defines at its top level (what ``from it import NAME`` can get)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def lambda_modules(handler: Path = HANDLER, root: Path = REPO) -> list[str]:
    """Every whisperq module the handler needs, following imports from module to module.
    Raises ConfigError (at preview) when one imports what the Lambda runtime lacks (it has
    the standard library and boto3) or a whisperq module the repository does not have."""
    found = {PACKAGE}  # the package's __init__.py, always
    pending: list[tuple[Path, str | None]] = [
        (handler, None),
        (root / PACKAGE / "__init__.py", PACKAGE),
    ]
    while pending:
        path, package = pending.pop()
        where = path.relative_to(root)
        for module, names in _imported_modules(path, package):
            top = module.split(".")[0]
            if top != PACKAGE:
                if top not in sys.stdlib_module_names and top not in RUNTIME_PACKAGES:
                    raise ConfigError(
                        f"{where} imports {module!r}, which the ingest Lambda does not have "
                        "(standard library and boto3 only)"
                    )
                continue
            module_file = module_path(module, root)
            if module_file is None:
                raise ConfigError(f"{where} imports {module!r}, which is not in the repository")
            # a module inside a subpackage needs each package's __init__.py above it
            parts = module.split(".")
            needed = [".".join(parts[:i]) for i in range(2, len(parts))] + [module]
            for name in names:
                if module_path(f"{module}.{name}", root) is not None:
                    needed.append(f"{module}.{name}")
                elif name != "*" and name not in _defined_names(root / module_file):
                    raise ConfigError(
                        f"{where} imports {name!r} from {module!r}, which has no such "
                        "module or name"
                    )
            for each in needed:
                if each not in found:
                    found.add(each)
                    each_file = str(module_path(each, root))
                    # what a relative import inside it is relative to
                    is_package = each_file.endswith("__init__.py")
                    package_of = each if is_package else each.rpartition(".")[0]
                    pending.append((root / each_file, package_of))
    return sorted(found)


def lambda_archive() -> pulumi.AssetArchive:
    """handler.py at the zip's root, whisperq/... beside it: the handler's own imports work."""
    files: dict[str, pulumi.Asset | pulumi.Archive] = {"handler.py": pulumi.FileAsset(str(HANDLER))}
    for module in lambda_modules():
        path = str(module_path(module))
        files[path] = pulumi.FileAsset(str(REPO / path))
    return pulumi.AssetArchive(files)


# --- policies ------------------------------------------------------------------------------


def external_object_arn(bucket: str, prefix: str) -> str:
    return f"arn:aws:s3:::{bucket}/{prefix}*"


def event_pattern(bucket: str, prefix: str) -> dict[str, Any]:
    """EventBridge: objects created in the external bucket under its prefix."""
    detail: dict[str, Any] = {"bucket": {"name": [bucket]}}
    if prefix:
        detail["object"] = {"key": [{"prefix": prefix}]}
    return {"source": ["aws.s3"], "detail-type": ["Object Created"], "detail": detail}


def ingest_policy(
    bucket_arn: str,
    job_queue_arn: str,
    ingest_queue_arn: str,
    log_group_arn: str,
    settings: IngestSettings,
    region: str,
    event_bus_arn: str | None = None,
) -> dict[str, Any]:
    """What ``whisperq.batches.ingest`` does, on exactly its own resources; read-only on the
    sources. With daily batches (``{date}`` in the template), also what closing them takes
    (``whisperq.finished.close_open_batches``): their open marks, and the "whisperq batch
    finished" event on ``event_bus_arn``."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ReadIncoming",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": [f"{bucket_arn}/{keys.incoming_prefix()}*"],
        },
    ]
    if settings.external_bucket:
        statements.append(
            {
                "Sid": "ReadExternalSource",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [
                    external_object_arn(settings.external_bucket, settings.external_prefix)
                ],
            }
        )
    if settings.external_kms_key:
        statements.append(
            {
                "Sid": "DecryptExternalSource",
                "Effect": "Allow",
                "Action": ["kms:Decrypt"],
                "Resource": [settings.external_kms_key],
                "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
            }
        )
    statements += [
        {
            # HeadObject is authorised as GetObject.
            "Sid": "ReadInputsAndBatchRecords",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": [f"{bucket_arn}/{INPUTS}/*", f"{bucket_arn}/{BATCHES}/*"],
        },
        {
            "Sid": "WriteInputsBatchRecordsAndErrorRecords",
            "Effect": "Allow",
            "Action": ["s3:PutObject"],
            "Resource": [
                f"{bucket_arn}/{INPUTS}/*",
                f"{bucket_arn}/{BATCHES}/*",
                f"{bucket_arn}/{RESULTS}/*{ERROR_SUFFIX}",
            ],
        },
        {
            "Sid": "ReplaceFileEntries",
            "Effect": "Allow",
            "Action": ["s3:DeleteObject"],
            "Resource": [f"{bucket_arn}/{BATCHES}/*/{FILES}/*"],
        },
        {
            # Listing batches/ (a batch's entries). Not narrowed with an s3:prefix condition:
            # S3 answers a GET or HEAD of a missing key (a new batch's batch.json) with 404
            # only to a caller with s3:ListBucket on the bucket, checked without a prefix;
            # with the condition it answers 403 and every new batch's first file would fail.
            "Sid": "ListOwnBucket",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [bucket_arn],
        },
        {
            "Sid": "SendJobs",  # SendMessageBatch is authorised as SendMessage
            "Effect": "Allow",
            "Action": ["sqs:SendMessage"],
            "Resource": [job_queue_arn],
        },
        {
            "Sid": "WorkIngestQueue",  # the event source mapping polls as the function's role
            "Effect": "Allow",
            "Action": [
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                # a record waiting for another ingest's claim comes back when it expires
                "sqs:ChangeMessageVisibility",
            ],
            "Resource": [ingest_queue_arn],
        },
        {
            "Sid": "WriteOwnLog",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [f"{log_group_arn}:*"],
        },
    ]
    if closes_days(settings):
        statements.append(
            {
                # done.json is under batches/ (written above); the marks are not
                "Sid": "MarkDailyBatchesOpenAndClosed",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:DeleteObject"],
                "Resource": [f"{bucket_arn}/{keys.open_batches_prefix()}*"],
            }
        )
    if event_bus_arn:
        # a day's batch closed by the schedule, or a batch whose last file was gone
        statements.append(
            {
                "Sid": "PutBatchFinishedEvents",
                "Effect": "Allow",
                "Action": ["events:PutEvents"],
                "Resource": [event_bus_arn],
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def closes_days(settings: IngestSettings) -> bool:
    """Daily batches (``{date}`` in whisperq:ingestBatch) are closed by a schedule."""
    return "{date}" in settings.batch_template


def ingest_queue_policy(
    queue_arn: str, bucket_arn: str, account: str, rule_arn: str | None
) -> dict[str, Any]:
    """Who may put events on the ingest queue: S3 for the stack's own bucket, and the
    external bucket's EventBridge rule."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "OwnBucketEvents",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {
                "ArnEquals": {"aws:SourceArn": bucket_arn},
                "StringEquals": {"aws:SourceAccount": account},
            },
        }
    ]
    if rule_arn is not None:
        statements.append(
            {
                "Sid": "ExternalBucketEvents",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def compact(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def lambda_environment(
    settings: IngestSettings,
    bucket: str,
    job_queue_url: str,
    ingest_queue_url: str,
    event_bus: str | None = None,
) -> dict[str, str]:
    """The function's environment: what ``whisperq.batches.ingest.IngestConfig.from_env`` reads
    (the source is the external bucket if there is one; the handler always ingests the
    stack's own ``incoming/`` too), and the ingest queue for early retries."""
    external = settings.external_bucket
    return {
        "WHISPERQ_BUCKET": bucket,
        "WHISPERQ_QUEUE_URL": job_queue_url,
        "WHISPERQ_INGEST_SOURCE_BUCKET": external or bucket,
        "WHISPERQ_INGEST_PREFIX": settings.external_prefix if external else keys.incoming_prefix(),
        "WHISPERQ_INGEST_OPTIONS": compact(settings.options_by_batch),
        "WHISPERQ_INGEST_DEFAULT_OPTIONS": compact(settings.default_options),
        "WHISPERQ_INGEST_BATCH": settings.batch_template,
        "WHISPERQ_INGEST_QUEUE_URL": ingest_queue_url,
    } | ({"WHISPERQ_EVENT_BUS": event_bus} if event_bus else {})


# --- the component -------------------------------------------------------------------------


class IngestRoute(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        settings: IngestSettings,
        function_name: str,
        bucket: aws.s3.Bucket,
        job_queue: aws.sqs.Queue,
        account: str,
        region: str,
        alarm_topic_arn: pulumi.Input[str] | None = None,
        event_bus: str | None = None,
        event_bus_arn: str | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("whisperq:index:IngestRoute", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        archive = lambda_archive()  # before anything is declared: a bad import fails preview

        self.queue, self.dead_letter = queue_pair(
            name, INGEST_VISIBILITY_S, INGEST_MAX_RECEIVE_COUNT, child
        )

        self.rule: aws.cloudwatch.EventRule | None = None
        self.target: aws.cloudwatch.EventTarget | None = None
        rule_arn: pulumi.Input[str | None] = None
        if settings.external_bucket:
            self.rule = aws.cloudwatch.EventRule(
                f"{name}-external",
                description=(
                    f"Objects created in s3://{settings.external_bucket}/"
                    f"{settings.external_prefix}: whisperq ingests them"
                ),
                event_pattern=compact(
                    event_pattern(settings.external_bucket, settings.external_prefix)
                ),
                opts=child,
            )
            self.target = aws.cloudwatch.EventTarget(
                f"{name}-external", rule=self.rule.name, arn=self.queue.arn, opts=child
            )
            rule_arn = self.rule.arn
        self.queue_policy = aws.sqs.QueuePolicy(
            name,
            queue_url=self.queue.url,
            policy=pulumi.Output.all(self.queue.arn, bucket.arn, rule_arn).apply(
                lambda values: json.dumps(
                    ingest_queue_policy(values[0], values[1], account, values[2])
                )
            ),
            opts=child,
        )

        log_group = aws.cloudwatch.LogGroup(
            name,
            name=f"/aws/lambda/{function_name}",
            retention_in_days=LOG_RETENTION_DAYS,
            opts=child,
        )
        self.role = aws.iam.Role(
            name, assume_role_policy=assume_role_policy("lambda.amazonaws.com"), opts=child
        )
        self.role_policy = aws.iam.RolePolicy(
            name,
            role=self.role.id,
            policy=pulumi.Output.all(
                bucket.arn, job_queue.arn, self.queue.arn, log_group.arn
            ).apply(
                lambda arns: json.dumps(
                    ingest_policy(
                        *arns, settings=settings, region=region, event_bus_arn=event_bus_arn
                    )
                )
            ),
            opts=child,
        )
        self.function = aws.lambda_.Function(
            name,
            name=function_name,
            description="whisperq: S3 object events -> transcription jobs",
            runtime="python3.12",
            handler="handler.handler",
            role=self.role.arn,
            timeout=FUNCTION_TIMEOUT_S,
            memory_size=MEMORY_MB,
            ephemeral_storage={"size": EPHEMERAL_MB},
            code=archive,
            environment={
                "variables": pulumi.Output.all(bucket.bucket, job_queue.url, self.queue.url).apply(
                    lambda values: lambda_environment(settings, *values, event_bus=event_bus)
                )
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, self.role_policy]),
        )
        # The role must be able to read the queue before the mapping is created.
        self.mapping = aws.lambda_.EventSourceMapping(
            name,
            event_source_arn=self.queue.arn,
            function_name=self.function.arn,
            batch_size=BATCH_SIZE,
            function_response_types=["ReportBatchItemFailures"],
            scaling_config=aws.lambda_.EventSourceMappingScalingConfigArgs(
                maximum_concurrency=CONCURRENCY
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.role_policy]),
        )
        # Daily batches: closed once their day is over, also when no worker is left.
        self.close_days: aws.cloudwatch.EventRule | None = None
        self.close_days_permission: aws.lambda_.Permission | None = None
        if closes_days(settings):
            self.close_days = aws.cloudwatch.EventRule(
                f"{name}-close-days",
                description="whisperq: daily batches whose day is over get their done.json",
                schedule_expression=CLOSE_DAYS_SCHEDULE,
                opts=child,
            )
            aws.cloudwatch.EventTarget(
                f"{name}-close-days",
                rule=self.close_days.name,
                arn=self.function.arn,
                opts=child,
            )
            self.close_days_permission = aws.lambda_.Permission(
                f"{name}-close-days",
                action="lambda:InvokeFunction",
                function=self.function.name,
                principal="events.amazonaws.com",
                source_arn=self.close_days.arn,
                opts=child,
            )
        self.dead_letter_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-dead-letters",
            alarm_description=(
                "S3 events the ingest Lambda could not handle after "
                f"{INGEST_MAX_RECEIVE_COUNT} tries: its log says why; redrive them to the "
                "ingest queue once fixed."
            ),
            namespace="AWS/SQS",
            metric_name="ApproximateNumberOfMessagesVisible",
            dimensions={"QueueName": self.dead_letter.name},
            statistic="Maximum",
            period=60,
            evaluation_periods=1,
            threshold=0,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[alarm_topic_arn] if alarm_topic_arn is not None else [],
            opts=child,
        )
        self.ingest_prefix = pulumi.Output.concat(
            "s3://", bucket.bucket, "/", keys.incoming_prefix()
        )
        self.external_source = (
            f"s3://{settings.external_bucket}/{settings.external_prefix}"
            if settings.external_bucket
            else None
        )
        self.register_outputs(
            {"ingest_prefix": self.ingest_prefix, "ingest_queue_url": self.queue.url}
        )
