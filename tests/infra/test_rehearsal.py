"""The deploy rehearsal, without AWS: the IAM policies the Pulumi program declares, enforced.

Pulumi's mocks accept any permission set, so a role that lacks one action passes every
other test and fails on its first real job. Here the program runs under the mocks
``test_infra.py`` uses (``pulumi_mocks.py``), and its policy documents (worker, scaler,
ingest Lambda) and the CLI user's (``whisperq_infra.cli_policy``) are given, ARNs
substituted, to IAM users on a moto server of our own that enforces IAM
(``INITIAL_NO_AUTH_ACTION_COUNT``). The real code paths then run with those users' keys: a
worker job end to end, the scaler's decision, the ingest step, and the CLI user's submit /
status / results / retry / dlq.

What moto 5.2 enforces, and how this file makes up for the rest (read from
moto/core/authorization.py and moto/iam/access_control.py):

- Every request after the first N is signed and checked against the caller's IAM user
  policies, for every service. The action is named ``<SigV4 signing name>:<API name>``:
  CloudWatch's is ``monitoring:PutMetricData``, not ``cloudwatch:``, and the SQS batch
  calls are checked as ``sqs:SendMessageBatch`` (AWS checks ``sqs:SendMessage``).
- Resources are checked for S3 (``arn:aws:s3:::bucket`` and ``bucket/key``) and SQS (the
  queue's ARN) only; every other service is checked against ``"*"``, so a statement
  narrowed to the group's ARN never matches there. Conditions are never evaluated (moto
  passes no request context), resource-based policies (the bucket policy) are ignored, and
  a GET of a missing key answers 404 whether or not the caller may list the bucket.
- So each user gets ``moto_view(policy)``: the same actions, renamed as moto names them,
  with resources kept for S3 and SQS and widened to ``"*"`` elsewhere. And every call the
  code paths make is recorded (botocore's ``before-call`` event on every client) and
  checked against the policy *as declared*, ARNs and conditions included, by ``evaluate``
  below (a small IAM evaluator: fnmatch-style wildcards on Action and Resource, the
  condition operators the policies use, explicit deny first), with the bucket policy and
  S3's 404-needs-ListBucket rule.

Enough, and not more: each code path asserts that every call it made is allowed (by moto
and by ``evaluate``), that a sample of calls outside the role is refused, and that every
action and resource of the role's policy was used by some call (``Stage.unused``), except
statements for other programs that run with the role (the CloudWatch and SSM agents, the
Lambda runtime's log). A new statement needs a code path here, or it is reported unused.

Users, not roles: moto authorises a role's policies only for STS AssumeRole credentials
(a session token on every request); an IAM user's inline policy is checked the same way
with plain access keys, which Settings and kombu's broker URL already carry.

Static checks beside it, which mocks cannot make: the rendered user data of every (compute,
baked or stock image) pair against EC2's 16 KB limit, and its settings against the worker's
Settings; every resource argument name (nested ones too) against the installed pulumi_aws;
the instance types against botocore's EC2 model; the Lambda runtimes against botocore's
Lambda model; the Lambda zips against their handlers' imports.
"""

from __future__ import annotations

import ast
import base64
import collections.abc
import contextlib
import dataclasses
import fnmatch
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time
import typing
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pulumi
import pulumi._types as pulumi_types
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.core import DEFAULT_ACCOUNT_ID
from pulumi_mocks import AwsMocks
from typer.testing import CliRunner
from whisperq_infra.cli_policy import cli_user_policy
from whisperq_infra.config import parse_config
from whisperq_infra.userdata import USER_DATA_LIMIT

from whisperq import defaults, entry_states, keys
from whisperq.messages import send_jobs
from whisperq.schemas import ErrorRecord, utc_now
from whisperq.settings import Settings
from whisperq.stacks import local as local_stack

from helpers import (
    CLEAR_SENTENCE,
    FakeImds,
    create_group,
    load_file_module,
    upload_job,
    wait_for,
    write_batch,
    write_result,
)

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = DEFAULT_ACCOUNT_ID  # the mocks answer as moto's account, so derived ARNs line up
STACK = "rehearsal"
SUBNETS = {"subnet-0a1b2c3d4e5f60718": f"{REGION}a", "subnet-1a1b2c3d4e5f60718": f"{REGION}b"}
GROUP = f"whisperq-{STACK}-workers"  # as deployment.py names it: the moto group is made so
INGEST_READY = all(
    (REPO / path).is_file()
    for path in ("whisperq/batches/ingest.py", "infra_pulumi/whisperq_infra/ingest.py")
)
INGEST_MISSING = (
    "whisperq/batches/ingest.py (the ingest step the ingest Lambda ships) does not exist yet"
)
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "403"})


# --- an IAM policy evaluator (pure) ----------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What IAM authorises for one API call: an action on a resource, in a context."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    why: str = ""  # when it is not the obvious one


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def glob_match(pattern: str, value: str, case_sensitive: bool = True) -> bool:
    """IAM's wildcards: ``*`` any run of characters, ``?`` one; nothing else is special
    (fnmatch's ``[...]`` is escaped). Actions match case-insensitively, resources not."""
    pattern = pattern.replace("[", "[[]")
    if not case_sensitive:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern)


def _equals(wanted: str, got: str) -> bool:
    return wanted == got


def _like(wanted: str, got: str) -> bool:
    return glob_match(wanted, got)


def _bool(wanted: str, got: str) -> bool:
    return str(wanted).lower() == str(got).lower()


# operator -> (test of one wanted value against the request's, negated)
CONDITION_OPERATORS = {
    "StringEquals": (_equals, False),
    "StringNotEquals": (_equals, True),
    "StringLike": (_like, False),
    "StringNotLike": (_like, True),
    "ArnEquals": (_equals, False),
    "ArnNotEquals": (_equals, True),
    "ArnLike": (_like, False),
    "ArnNotLike": (_like, True),
    "Bool": (_bool, False),
}


def condition_holds(operator: str, key: str, wanted: Any, context: Mapping[str, str]) -> bool:
    """One condition of a statement. A key missing from the request fails a positive
    operator and passes a negated one (AWS's rule); ``...IfExists`` passes when missing.
    An operator this evaluator does not know raises: it never approves by ignorance."""
    base = operator.removesuffix("IfExists")
    if base not in CONDITION_OPERATORS:
        raise ValueError(f"the rehearsal's evaluator does not know condition operator {operator}")
    test, negated = CONDITION_OPERATORS[base]
    lowered = {name.lower(): value for name, value in context.items()}
    if key.lower() not in lowered:
        return operator.endswith("IfExists") or negated
    got = lowered[key.lower()]
    matched = any(test(str(each), got) for each in _as_list(wanted))
    return not matched if negated else matched


def statement_matches(statement: Mapping[str, Any], request: Request) -> bool:
    if "Action" in statement:
        acts = any(glob_match(p, request.action, False) for p in _as_list(statement["Action"]))
    else:
        acts = not any(
            glob_match(p, request.action, False) for p in _as_list(statement["NotAction"])
        )
    if "NotResource" in statement:
        on = not any(glob_match(p, request.resource) for p in _as_list(statement["NotResource"]))
    else:
        on = any(glob_match(p, request.resource) for p in _as_list(statement.get("Resource", "*")))
    if not (acts and on):
        return False
    context = dict(request.context)
    return all(
        condition_holds(operator, key, wanted, context)
        for operator, pairs in statement.get("Condition", {}).items()
        for key, wanted in pairs.items()
    )


def evaluate(policies: Sequence[Mapping[str, Any]], request: Request) -> str:
    """ "allow", "explicit-deny" or "implicit-deny": an explicit Deny in any policy wins,
    else any Allow, else nothing allows it. Resource-based policies may be among
    ``policies``: their statements are taken to name the caller (Principal "*")."""
    allowed = False
    for policy in policies:
        for statement in _as_list(policy["Statement"]):
            if statement_matches(statement, request):
                if statement["Effect"] == "Deny":
                    return "explicit-deny"
                allowed = True
    return "allow" if allowed else "implicit-deny"


# --- what IAM authorises for each API call the code paths make ----------------------------


@dataclass
class Call:
    """One API call a client made, and how it ended (None = success)."""

    principal: str
    service: str  # botocore's service name: s3, sqs, autoscaling, cloudwatch
    operation: str
    params: dict[str, Any]
    error: str | None = None
    status: int | None = None

    @property
    def denied(self) -> bool:
        return self.error in DENIED_CODES or self.status == 403

    def __str__(self) -> str:
        shown = {k: v for k, v in self.params.items() if k in _SHOWN_PARAMS}
        outcome = f" -> {self.error}" if self.error else ""
        return f"{self.principal}: {self.service}:{self.operation} {shown}{outcome}"


_SHOWN_PARAMS = ("Bucket", "Key", "Prefix", "QueueUrl", "AutoScalingGroupName", "Namespace")


@dataclass
class Arns:
    """The real ARNs behind the names a call carries (queue URLs, group names)."""

    queues: dict[str, str] = field(default_factory=dict)  # URL -> ARN
    groups: dict[str, str] = field(default_factory=dict)  # name -> ARN
    instances: dict[str, str] = field(default_factory=dict)  # instance id -> group name

    def queue(self, url: str) -> str:
        name = url.rstrip("/").rsplit("/", 1)[-1]
        return self.queues.get(url, f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")

    def group(self, name: str) -> str:
        return self.groups.get(
            name,
            f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:"
            f"00000000-0000-0000-0000-000000000000:autoScalingGroupName/{name}",
        )


_S3_OBJECT_ACTIONS = {  # multipart parts are authorised as the PutObject they make up
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "DeleteObject": "s3:DeleteObject",
}
_S3_BUCKET_ACTIONS = {
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "HeadBucket": "s3:ListBucket",
}
_SQS_BATCH_ACTIONS = {  # AWS authorises a batch call as its single-message action
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})


def iam_requests(call: Call, arns: Arns) -> list[Request]:
    """What IAM checks for ``call``. Raises LookupError for a call this table does not
    know, so a new kind of call in the code paths cannot go unchecked."""
    op, params = call.operation, call.params
    if call.service == "s3":
        bucket_arn = f"arn:aws:s3:::{params['Bucket']}"
        if op == "CopyObject":  # a read of the source, a write of the copy
            source = params["CopySource"]  # {"Bucket", "Key"}, or "bucket/key" quoted
            if isinstance(source, str):
                source = urllib.parse.unquote(source.partition("?")[0])
            else:
                source = f"{source['Bucket']}/{source['Key']}"
            return [
                Request("s3:GetObject", f"arn:aws:s3:::{source}"),
                Request("s3:PutObject", f"{bucket_arn}/{params['Key']}"),
            ]
        if op in _S3_OBJECT_ACTIONS:
            found = [Request(_S3_OBJECT_ACTIONS[op], f"{bucket_arn}/{params['Key']}")]
            if op in ("GetObject", "HeadObject") and call.error in _NOT_FOUND:
                # S3 answers a missing key with 404 only to a caller that may list the
                # bucket (a check with no prefix in it); anyone else gets 403.
                found.append(
                    Request("s3:ListBucket", bucket_arn, why=f"{op} of a missing key: 404")
                )
            return found
        if op in _S3_BUCKET_ACTIONS:
            context = tuple(
                (f"s3:{name.lower()}", str(params[name]))
                for name in ("Prefix", "Delimiter")
                if name in params
            )
            return [Request(_S3_BUCKET_ACTIONS[op], bucket_arn, context)]
    if call.service == "sqs" and "QueueUrl" in params:
        action = f"sqs:{_SQS_BATCH_ACTIONS.get(op, op)}"
        return [Request(action, arns.queue(params["QueueUrl"]))]
    if call.service == "autoscaling":
        if op.startswith("Describe"):  # no resource-level permissions
            return [Request(f"autoscaling:{op}", "*")]
        if "AutoScalingGroupName" in params:
            return [Request(f"autoscaling:{op}", arns.group(params["AutoScalingGroupName"]))]
        if op == "SetInstanceHealth":  # authorised on the instance's group
            group = arns.instances.get(params["InstanceId"], "no-group-of-this-instance")
            return [Request(f"autoscaling:{op}", arns.group(group))]
        if op in ("CreateOrUpdateTags", "DeleteTags"):
            return [
                Request(f"autoscaling:{op}", arns.group(tag["ResourceId"]))
                for tag in params["Tags"]
            ]
    if call.service == "events" and op == "PutEvents":  # authorised on each entry's bus
        return [
            Request("events:PutEvents", _event_bus_arn(entry.get("EventBusName") or "default"))
            for entry in params["Entries"]
        ]
    if call.service == "cloudwatch" and op == "PutMetricData":
        return [
            Request(
                "cloudwatch:PutMetricData", "*", (("cloudwatch:namespace", params["Namespace"]),)
            )
        ]
    raise LookupError(
        f"the rehearsal does not know how IAM authorises {call.service}:{op}: add it to "
        "iam_requests"
    )


def _event_bus_arn(bus: str) -> str:
    return bus if bus.startswith("arn:") else f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{bus}"


# Every request the stack's clients make goes over TLS (the bucket policy denies the rest).
TLS = (("aws:SecureTransport", "true"),)


def with_tls(request: Request) -> Request:
    return Request(request.action, request.resource, request.context + TLS, request.why)


# --- the policies as moto can enforce them -------------------------------------------------

MOTO_RESOURCE_SERVICES = frozenset({"s3", "sqs"})  # the only ones moto passes an ARN for
MOTO_SERVICE_PREFIX = {"cloudwatch": "monitoring"}  # moto names actions by signing name
MOTO_SQS_ALIASES = {f"sqs:{single}": f"sqs:{batch}" for batch, single in _SQS_BATCH_ACTIONS.items()}


def moto_view(policy: Mapping[str, Any]) -> dict[str, Any]:
    """The same actions as moto names and checks them: the batch aliases of SQS actions,
    ``monitoring:`` for CloudWatch, resources kept where moto checks them (S3, SQS) and
    ``"*"`` elsewhere, conditions dropped (moto has no request context to test them on).
    What this widens, ``evaluate`` checks on every recorded call."""
    statements = []
    for statement in _as_list(policy["Statement"]):
        if "Action" not in statement or "Resource" not in statement:
            raise ValueError(f"moto_view takes Action and Resource statements only: {statement}")
        by_service: dict[str, list[str]] = defaultdict(list)
        for action in _as_list(statement["Action"]):
            by_service[action.split(":")[0]].append(action)
        for service, actions in by_service.items():
            named = []
            for action in actions:
                prefix, _, name = action.partition(":")
                named.append(f"{MOTO_SERVICE_PREFIX.get(prefix, prefix)}:{name}")
                if action in MOTO_SQS_ALIASES:
                    named.append(MOTO_SQS_ALIASES[action])
            statements.append(
                {
                    "Effect": statement["Effect"],
                    "Action": named,
                    "Resource": statement["Resource"] if service in MOTO_RESOURCE_SERVICES else "*",
                }
            )
    return {"Version": "2012-10-17", "Statement": statements}


def substitute(document: Any, replacements: Mapping[str, str]) -> Any:
    """``document`` with each fake value the mocks made (an ARN, a URL, a name) replaced by
    the moto resource's real one, where a string is that value or starts with it followed
    by ``/`` or ``:`` (an object ARN, a log stream ARN)."""
    if isinstance(document, dict):
        return {key: substitute(value, replacements) for key, value in document.items()}
    if isinstance(document, list):
        return [substitute(value, replacements) for value in document]
    if isinstance(document, str):
        for fake, real in replacements.items():
            if document == fake or document.startswith((f"{fake}/", f"{fake}:")):
                return real + document[len(fake) :]
    return document


# --- recording every call --------------------------------------------------------------------


class CallRecorder:
    """Records every API call of every botocore client created while installed (ours,
    boto3's, kombu's, s3transfer's threads): operation and parameters at ``before-call``,
    the outcome at ``after-call``. Knows principals by their access key id."""

    def __init__(self) -> None:
        self.principals: dict[str, str] = {}
        self.calls: list[Call] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = botocore.session.Session.create_client
        recorder = self

        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            recorder.watch(client)
            return client

        monkeypatch.setattr(botocore.session.Session, "create_client", create_client)

    def watch(self, client: Any) -> None:
        service = client.meta.service_model.service_name
        credentials = client._request_signer._credentials
        key = credentials.access_key if credentials is not None else None
        principal = self.principals.get(key or "", key or "anonymous")

        def remember_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            context["rehearsal_params"] = {k: v for k, v in params.items() if k != "Body"}

        def before_call(model: Any, context: dict[str, Any], **_: Any) -> None:
            call = Call(principal, service, model.name, context.get("rehearsal_params", {}))
            call.error = "no answer"  # until after-call (none when the answer is unreadable)
            context["rehearsal_call"] = call
            self.calls.append(call)

        def after_call(
            http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
        ) -> None:
            call = context.get("rehearsal_call")
            if call is not None:
                call.status = http_response.status_code
                call.error = None
                if http_response.status_code >= 300:
                    call.error = str(parsed.get("Error", {}).get("Code") or call.status)

        client.meta.events.register("before-parameter-build", remember_params)
        client.meta.events.register("before-call", before_call)
        client.meta.events.register("after-call", after_call)

    def take(self) -> list[Call]:
        taken, self.calls = self.calls, []
        return taken


# --- the program under Pulumi's mocks ---------------------------------------------------------


def rehearsal_mocks(images_built: bool = True) -> AwsMocks:
    """The shared mocks, answering in moto's region and account (so derived ARNs line up)."""
    return AwsMocks(images_built, region=REGION, account=ACCOUNT, zones=SUBNETS)


def run_program(raw: Mapping[str, str], images_built: bool = True) -> AwsMocks:
    """The Deployment component under mocks, run to the end (every resource registered)."""
    from whisperq_infra.deployment import Deployment

    mocks = rehearsal_mocks(images_built)
    pulumi.runtime.set_mocks(mocks, project="whisperq", stack=STACK, preview=False)

    @pulumi.runtime.test
    def program():
        return Deployment("whisperq", parse_config(raw)).fleet.group.name

    program()
    return mocks


def rehearsal_config(**overrides: str) -> dict[str, str]:
    """The stack's config for the rehearsal: the defaults, and the ingest route only once
    its code exists (until then the program cannot build the ingest Lambda's zip)."""
    return ({} if INGEST_READY else {"ingest": "false"}) | overrides


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], AwsMocks]:
    """The program for every (compute, image) pair: baked (a whisperq image exists) or
    stock (none: the wheel and provisioning script ride in the user data)."""
    import whisperq_infra.deployment as deployment_module

    dist = tmp_path_factory.mktemp("dist")
    (dist / "whisperq-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    found = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deployment_module, "DIST_DIR", dist)
        for compute in defaults.COMPUTE_KINDS:
            for image in ("baked", "stock"):
                found[compute, image] = run_program(
                    rehearsal_config(compute=compute), images_built=image == "baked"
                )
    return found


# --- the rehearsal's moto server, with IAM on -----------------------------------------------

# Requests moto serves before it checks any: the admin user, its policy and its key. Every
# later request, the rest of the setup included, is signed and authorised.
BOOTSTRAP_REQUESTS = 3
ALLOW_ALL = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
_FAST = Config(retries={"max_attempts": 1, "mode": "standard"})


@dataclass
class Stage:
    """The rehearsal moto server, the stack's resources on it, and one IAM user per
    principal, whose inline policy is ``moto_view`` of the declared one."""

    endpoint: str
    program: AwsMocks
    recorder: CallRecorder
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # principal -> key, secret
    declared: dict[str, dict[str, Any]] = field(default_factory=dict)  # principal -> policy
    bucket_policy: dict[str, Any] = field(default_factory=dict)
    replacements: dict[str, str] = field(default_factory=dict)  # fake -> real
    arns: Arns = field(default_factory=Arns)
    bucket: str = "rehearsal-data"
    other_bucket: str = "rehearsal-elsewhere"
    urls: dict[str, str] = field(default_factory=dict)  # role -> queue URL
    instance_id: str = ""

    clients: dict[tuple[str, str], Any] = field(default_factory=dict)

    def client(self, principal: str, service: str) -> Any:
        """A client with the principal's keys (made once: boto3 clients are thread-safe)."""
        if (principal, service) not in self.clients:
            self.clients[principal, service] = self._new_client(principal, service)
        return self.clients[principal, service]

    def _new_client(self, principal: str, service: str) -> Any:
        key, secret = self.keys[principal]
        return boto3_session().client(
            service,
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=_FAST,
        )

    def settings(self, principal: str, **values: Any) -> Settings:
        key, secret = self.keys[principal]
        base = {
            "endpoint_url": self.endpoint,
            "region": REGION,
            "aws_access_key_id": key,
            "aws_secret_access_key": secret,
            "bucket": self.bucket,
            "queue_url": self.urls["jobs"],
            "dlq_url": self.urls["dead-letters"],
            "sqs_wait_seconds": 1,
        }
        return Settings(**(base | values))

    def policies(self, principal: str) -> list[dict[str, Any]]:
        """What AWS would evaluate for the principal's S3/SQS/... calls: its identity
        policy as declared, and the bucket's policy (resource-based)."""
        return [self.declared[principal], self.bucket_policy]

    def check_allowed(self, calls: Sequence[Call]) -> list[str]:
        """Problems: calls moto refused, and calls the declared policies would not allow."""
        problems = []
        for call in calls:
            if call.denied:
                problems.append(f"moto refused {call} ({call.error})")
            for request in iam_requests(call, self.arns):
                verdict = evaluate(self.policies(call.principal), with_tls(request))
                if verdict != "allow":
                    why = f" ({request.why})" if request.why else ""
                    problems.append(
                        f"{verdict}: {call} needs {request.action} on {request.resource}{why}"
                    )
        return problems

    def unused(self, principal: str, calls: Sequence[Call], exempt: Mapping[str, str]) -> list[str]:
        """(statement, action) and (statement, resource) pairs of the principal's declared
        policy that no allowed request of ``calls`` used: permissions the code paths do not
        need. ``exempt``: services whose calls another program makes with the same role
        (action prefix -> who: the CloudWatch agent, the SSM agent, the Lambda runtime);
        a statement of those services only is left out."""
        used: set[tuple[int, str]] = set()
        statements = _as_list(self.declared[principal]["Statement"])
        for call in calls:
            if call.principal != principal:
                continue
            for request in iam_requests(call, self.arns):
                for index, statement in enumerate(statements):
                    if statement["Effect"] == "Allow" and statement_matches(
                        statement, with_tls(request)
                    ):
                        used.update(
                            (index, pattern)
                            for pattern in _as_list(statement["Action"])
                            if glob_match(pattern, request.action, False)
                        )
                        used.update(
                            (index, pattern)
                            for pattern in _as_list(statement["Resource"])
                            if glob_match(pattern, request.resource)
                        )
        found = []
        for index, statement in enumerate(statements):
            actions = _as_list(statement["Action"])
            if all(action.startswith(tuple(exempt)) for action in actions):
                continue
            sid = statement.get("Sid", f"#{index}")
            for pattern in actions + _as_list(statement["Resource"]):
                if (index, pattern) not in used:
                    found.append(f"{principal} {sid}: {pattern} (no code path here used it)")
        return found


def boto3_session() -> Any:
    return boto3.session.Session()


def _wait_until_serving(endpoint: str, process: subprocess.Popen, log: Path) -> None:
    """The moto-api config page answers without counting as a request to authorise."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/config", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(
                    f"the rehearsal's moto server did not start; see {log}"
                ) from None
            time.sleep(0.1)


@pytest.fixture(scope="module")
def moto_iam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server of the rehearsal's own that authorises every request after the
    first BOOTSTRAP_REQUESTS (the session's shared server authorises none)."""
    port = local_stack.free_port()
    log = tmp_path_factory.mktemp("moto-iam") / "moto.log"
    env = os.environ | {
        "INITIAL_NO_AUTH_ACTION_COUNT": str(BOOTSTRAP_REQUESTS),
        # each code path starts from empty queues (AWS allows a purge a minute)
        "MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR": "false",
    }
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(endpoint, process, log)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _raw_client(endpoint: str, service: str, key: str, secret: str) -> Any:
    return boto3_session().client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=_FAST,
    )


def _queue_attributes(inputs: Mapping[str, Any], replacements: Mapping[str, str]) -> dict:
    """A Queue resource's declared settings as SQS attributes (the rehearsal's queues
    are made as the program declares them)."""
    names = {
        "visibilityTimeoutSeconds": "VisibilityTimeout",
        "receiveWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
        "messageRetentionSeconds": "MessageRetentionPeriod",
        "redrivePolicy": "RedrivePolicy",
        "sqsManagedSseEnabled": "SqsManagedSseEnabled",
    }
    attributes = {}
    for name, attribute in names.items():
        if name in inputs:
            value = inputs[name]
            if name == "redrivePolicy":
                value = json.dumps(substitute(json.loads(value), replacements))
            elif isinstance(value, bool):
                value = str(value).lower()
            elif isinstance(value, float):
                value = str(int(value))
            attributes[attribute] = str(value)
    return attributes


# The queues of the stack, by the role the policies give them: mock resource name -> role.
QUEUE_ROLES = {
    "whisperq-jobs-dlq": "dead-letters",  # made first: the job queue's redrive names it
    "whisperq-jobs": "jobs",
    "whisperq-ingest-dlq": "ingest-dead-letters",
    "whisperq-ingest": "ingest",
}
# The program's role policies, by principal.
ROLE_POLICIES = {
    "worker": "whisperq-worker",
    "scaler": "whisperq-scaler",
    "ingest": "whisperq-ingest",
}


@pytest.fixture(scope="module")
def stage(moto_iam: str, programs: dict) -> Iterator[Stage]:
    """The stack on the rehearsal server: what the program declares, made with the admin
    user's keys, and one IAM user per principal with its policy.

    Mapping the mocks' fake values to moto's, by resource role:
    - bucket: the mocks' auto-named bucket (ARN, name) -> ``rehearsal-data``;
    - queues: each Queue resource (ARN, URL, name) -> the moto queue of the same role
      (QUEUE_ROLES), whose ARN comes from GetQueueAttributes;
    - group: nothing to map: the program derives the name from the stack
      (``whisperq-rehearsal-workers``) and its ARN from the region and account, which the
      mocks answer as moto's; moto's group gets that name and a real ARN (with a UUID the
      policy's ``autoScalingGroup:*:`` must match);
    - log groups and roles: left as the mocks made them (nothing here calls CloudWatch Logs).
    """
    program = programs["cpu", "baked"]
    recorder = CallRecorder()
    stage = Stage(moto_iam, program, recorder)
    root = _raw_client(moto_iam, "iam", "bootstrap", "bootstrap")
    root.create_user(UserName="admin")
    root.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(ALLOW_ALL))
    created = root.create_access_key(UserName="admin")["AccessKey"]
    stage.keys["admin"] = (created["AccessKeyId"], created["SecretAccessKey"])
    recorder.principals[created["AccessKeyId"]] = "admin"

    s3, sqs = stage.client("admin", "s3"), stage.client("admin", "sqs")
    bucket_outputs = program.one("aws:s3/bucket:Bucket", "whisperq-data")
    stage.replacements[bucket_outputs["arn"]] = f"arn:aws:s3:::{stage.bucket}"
    stage.replacements[bucket_outputs["bucket"]] = stage.bucket
    for name in (stage.bucket, stage.other_bucket):
        s3.create_bucket(Bucket=name)
    for resource, role in QUEUE_ROLES.items():
        found = [
            (i, o)
            for t, n, i, o in program.resources
            if t.endswith("queue:Queue") and n == resource
        ]
        if not found:
            continue  # the ingest route's queues, when it is off
        inputs, outputs = found[0]
        real_name = f"rehearsal-{role}"
        url = sqs.create_queue(
            QueueName=real_name, Attributes=_queue_attributes(inputs, stage.replacements)
        )["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        stage.urls[role] = url
        stage.arns.queues[url] = arn
        stage.replacements.update(
            {outputs["arn"]: arn, outputs["url"]: url, outputs["name"]: real_name}
        )
    stage.urls["elsewhere"] = sqs.create_queue(QueueName="rehearsal-elsewhere")["QueueUrl"]

    autoscaling = stage.client("admin", "autoscaling")
    (stage.instance_id,) = create_group(autoscaling, GROUP, desired=1)
    stage.arns.instances[stage.instance_id] = GROUP
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
    stage.arns.groups[GROUP] = group["AutoScalingGroups"][0]["AutoScalingGroupARN"]

    (declared, _) = program.one_with_inputs("aws:s3/bucketPolicy:BucketPolicy", "whisperq-data")
    stage.bucket_policy = substitute(json.loads(declared["policy"]), stage.replacements)
    for principal, resource in ROLE_POLICIES.items():
        if any(
            t.endswith("rolePolicy:RolePolicy") and n == resource
            for t, n, _, _ in program.resources
        ):
            stage.declared[principal] = substitute(program.policy(resource), stage.replacements)
    stage.declared["cli"] = cli_user_policy(
        f"arn:aws:s3:::{stage.bucket}",
        stage.arns.queue(stage.urls["jobs"]),
        stage.arns.queue(stage.urls["dead-letters"]),
        stage.arns.groups[GROUP],
        # as infra_pulumi/__main__.py passes them: with the ingest route, its two queues
        [
            stage.arns.queue(stage.urls[r])
            for r in ("ingest", "ingest-dead-letters")
            if r in stage.urls
        ],
        event_bus_arn=_event_bus_arn("default"),  # whisperq:eventBus's default
    )

    iam = stage.client("admin", "iam")
    for principal, policy in stage.declared.items():
        # As declared, too: moto's policy validator reads what the mocks took as a string.
        iam.create_policy(PolicyName=f"{principal}-as-declared", PolicyDocument=json.dumps(policy))
        iam.create_user(UserName=principal)
        iam.put_user_policy(
            UserName=principal, PolicyName="rehearsal", PolicyDocument=json.dumps(moto_view(policy))
        )
        created = iam.create_access_key(UserName=principal)["AccessKey"]
        stage.keys[principal] = (created["AccessKeyId"], created["SecretAccessKey"])
        recorder.principals[created["AccessKeyId"]] = principal

    with pytest.MonkeyPatch.context() as patch:
        recorder.install(patch)
        yield stage


@pytest.fixture
def rehearsal(stage: Stage) -> Stage:
    """The stage for one code path: queues emptied, the group at one instance, unprotected,
    no idle tag, nothing recorded yet."""
    sqs, autoscaling = stage.client("admin", "sqs"), stage.client("admin", "autoscaling")
    for url in stage.urls.values():
        sqs.purge_queue(QueueUrl=url)
    autoscaling.set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=1)
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
    (stage.instance_id,) = [i["InstanceId"] for i in group["AutoScalingGroups"][0]["Instances"]]
    stage.arns.instances[stage.instance_id] = GROUP
    autoscaling.set_instance_protection(
        AutoScalingGroupName=GROUP, InstanceIds=[stage.instance_id], ProtectedFromScaleIn=False
    )
    tag = {"ResourceId": GROUP, "ResourceType": "auto-scaling-group", "Key": "whisperq:idle-since"}
    autoscaling.delete_tags(Tags=[tag])
    stage.recorder.take()
    return stage


@dataclass(frozen=True)
class Denied:
    """A call outside a principal's policy. ``moto``: whether moto can refuse it itself
    (S3 and SQS resources, and any action missing from the policy); the others (a
    resource or condition outside S3/SQS) only the evaluator can judge."""

    principal: str
    what: str
    service: str
    operation: str
    params: dict[str, Any]
    moto: bool = True


def refused(principal: str, *rows: tuple[Any, ...]) -> list[Denied]:
    """Samples from (what, "service:Operation", params[, whether moto refuses it]) rows."""
    found = []
    for what, call, params, *moto in rows:
        service, operation = call.split(":")
        found.append(Denied(principal, what, service, operation, params, *moto))
    return found


def check_denied(stage: Stage, samples: Sequence[Denied]) -> list[str]:
    """Problems: a sample the declared policy would allow, or that moto served."""
    problems = []
    for sample in samples:
        call = Call(sample.principal, sample.service, sample.operation, sample.params)
        for request in iam_requests(call, stage.arns):
            verdict = evaluate(stage.policies(sample.principal), with_tls(request))
            if verdict == "allow":
                problems.append(f"{sample.principal} may {sample.what}: {request}")
        if sample.moto:
            client = stage.client(sample.principal, sample.service)
            method = getattr(client, _snake(sample.operation))
            try:
                method(**sample.params)
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code")
                status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code not in DENIED_CODES and status != 403:
                    problems.append(f"{sample.principal} {sample.what}: {code}, not denied")
            else:
                problems.append(f"moto let {sample.principal} {sample.what}")
    stage.recorder.take()
    return problems


def assert_none(problems: Sequence[str]) -> None:
    assert not problems, "\n".join(problems)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# --- the evaluator itself ------------------------------------------------------------------------

POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::b/inputs/*"]},
        {"Effect": "Allow", "Action": "sqs:Send?essage", "Resource": "arn:aws:sqs:r:1:q"},
        {
            "Effect": "Allow",
            "Action": ["cloudwatch:PutMetricData"],
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": "whisperq"}},
        },
        {
            "Effect": "Allow",
            "Action": ["autoscaling:SetInstanceProtection"],
            "Resource": ["arn:aws:autoscaling:r:1:autoScalingGroup:*:autoScalingGroupName/g"],
        },
        {"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::b/inputs/secret/*"},
        {"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:aws:logs:r:1:log-group:[x]"},
    ],
}


@pytest.mark.parametrize(
    ("request_", "verdict"),
    [
        (Request("s3:GetObject", "arn:aws:s3:::b/inputs/x/y.wav"), "allow"),
        (Request("S3:getobject", "arn:aws:s3:::b/inputs/a.wav"), "allow"),  # actions: any case
        (Request("s3:GetObject", "arn:aws:s3:::B/inputs/a.wav"), "implicit-deny"),  # ARNs: not
        (Request("s3:GetObject", "arn:aws:s3:::b/results/a.json"), "implicit-deny"),
        (Request("s3:GetObject", "arn:aws:s3:::other/inputs/a.wav"), "implicit-deny"),
        (Request("s3:DeleteObject", "arn:aws:s3:::b/inputs/a.wav"), "implicit-deny"),
        (Request("s3:GetObject", "arn:aws:s3:::b/inputs/secret/a"), "explicit-deny"),
        (Request("sqs:SendMessage", "arn:aws:sqs:r:1:q"), "allow"),  # ? is one character
        (Request("sqs:SendMessageBatch", "arn:aws:sqs:r:1:q"), "implicit-deny"),
        (Request("sqs:SendMessage", "arn:aws:sqs:r:1:q2"), "implicit-deny"),
        (
            Request("cloudwatch:PutMetricData", "*", (("cloudwatch:namespace", "whisperq"),)),
            "allow",
        ),
        (
            Request("cloudwatch:PutMetricData", "*", (("Cloudwatch:Namespace", "whisperq"),)),
            "allow",
        ),
        (
            Request("cloudwatch:PutMetricData", "*", (("cloudwatch:namespace", "other"),)),
            "implicit-deny",
        ),
        (Request("cloudwatch:PutMetricData", "*"), "implicit-deny"),  # a missing key fails
        (
            Request(
                "autoscaling:SetInstanceProtection",
                "arn:aws:autoscaling:r:1:autoScalingGroup:1f-2e:autoScalingGroupName/g",
            ),
            "allow",
        ),
        (
            Request(
                "autoscaling:SetInstanceProtection",
                "arn:aws:autoscaling:r:1:autoScalingGroup:1f-2e:autoScalingGroupName/g2",
            ),
            "implicit-deny",
        ),
        (Request("logs:PutLogEvents", "arn:aws:logs:r:1:log-group:[x]"), "allow"),  # [ literal
        (Request("logs:PutLogEvents", "arn:aws:logs:r:1:log-group:x"), "implicit-deny"),
        (Request("iam:PassRole", "arn:aws:logs:r:1:log-group:[x]"), "implicit-deny"),  # NotAction
    ],
)
def test_the_evaluator_allows_what_a_statement_matches_and_nothing_else(request_, verdict):
    assert evaluate([POLICY], request_) == verdict


def test_the_evaluator_handles_negated_and_if_exists_conditions_and_refuses_unknown_ones():
    context = {"aws:SecureTransport": "false"}
    assert condition_holds("Bool", "aws:SecureTransport", "false", context)
    assert not condition_holds("Bool", "aws:SecureTransport", "false", {})
    assert condition_holds("StringNotEquals", "s3:prefix", "inputs/", {})  # missing: holds
    assert condition_holds("StringLikeIfExists", "s3:prefix", "results/*", {})
    assert not condition_holds("StringLike", "s3:prefix", ["results/*", "batches/*"], {})
    assert condition_holds(
        "StringLike", "s3:prefix", ["results/*", "batches/*"], {"s3:prefix": "batches/x/"}
    )
    with pytest.raises(ValueError, match="NumericLessThan"):
        condition_holds("NumericLessThan", "aws:MultiFactorAuthAge", "3600", {})


def test_calls_map_to_what_iam_authorises():
    arns = Arns({"https://q/1/jobs": "arn:aws:sqs:r:1:jobs"}, {"g": "arn:aws:autoscaling:r:1:x"})
    head_missing = Call("p", "s3", "HeadObject", {"Bucket": "b", "Key": "k"}, error="404")
    assert iam_requests(head_missing, arns) == [
        Request("s3:GetObject", "arn:aws:s3:::b/k"),
        Request("s3:ListBucket", "arn:aws:s3:::b", why="HeadObject of a missing key: 404"),
    ]
    listing = Call(
        "p", "s3", "ListObjectsV2", {"Bucket": "b", "Prefix": "batches/", "Delimiter": "/"}
    )
    assert iam_requests(listing, arns) == [
        Request(
            "s3:ListBucket", "arn:aws:s3:::b", (("s3:prefix", "batches/"), ("s3:delimiter", "/"))
        )
    ]
    batch = Call("p", "sqs", "SendMessageBatch", {"QueueUrl": "https://q/1/jobs", "Entries": []})
    assert iam_requests(batch, arns) == [Request("sqs:SendMessage", "arn:aws:sqs:r:1:jobs")]
    tags = Call("p", "autoscaling", "DeleteTags", {"Tags": [{"ResourceId": "g", "Key": "k"}]})
    assert iam_requests(tags, arns) == [
        Request("autoscaling:DeleteTags", "arn:aws:autoscaling:r:1:x")
    ]
    arns.instances["i-1"] = "g"
    health = Call("p", "autoscaling", "SetInstanceHealth", {"InstanceId": "i-1"})
    assert iam_requests(health, arns) == [
        Request("autoscaling:SetInstanceHealth", "arn:aws:autoscaling:r:1:x")
    ]
    metrics = Call("p", "cloudwatch", "PutMetricData", {"Namespace": "n", "MetricData": []})
    assert iam_requests(metrics, arns)[0].context == (("cloudwatch:namespace", "n"),)
    with pytest.raises(LookupError, match="ec2:RunInstances"):
        iam_requests(Call("p", "ec2", "RunInstances", {}), arns)


def test_a_prefix_condition_on_list_bucket_would_turn_a_new_batchs_404_into_403():
    """Why the CLI policy lists the bucket without an s3:prefix condition: submit's first
    GET of a new batch's batch.json is a missing key."""
    bucket = "arn:aws:s3:::b"
    narrowed = cli_user_policy(bucket, "arn:aws:sqs:r:1:q", "arn:aws:sqs:r:1:d", "arn:g")
    for statement in narrowed["Statement"]:
        if statement["Action"] == ["s3:ListBucket"]:
            statement["Condition"] = {"StringLike": {"s3:prefix": ["batches/*", "results/*"]}}
    first_read = Call(
        "cli", "s3", "GetObject", {"Bucket": "b", "Key": "batches/new/batch.json"}, "NoSuchKey"
    )
    verdicts = [evaluate([narrowed], r) for r in iam_requests(first_read, Arns())]
    assert verdicts == ["allow", "implicit-deny"]
    as_shipped = cli_user_policy(bucket, "arn:aws:sqs:r:1:q", "arn:aws:sqs:r:1:d", "arn:g")
    assert [evaluate([as_shipped], r) for r in iam_requests(first_read, Arns())] == ["allow"] * 2


def test_moto_view_names_actions_as_moto_does_and_widens_only_where_moto_cannot_check():
    view = moto_view({"Statement": POLICY["Statement"][:-1]})
    by_action = {tuple(s["Action"]): s["Resource"] for s in view["Statement"]}
    assert by_action[("s3:GetObject",)] == ["arn:aws:s3:::b/inputs/*"]
    assert by_action[("monitoring:PutMetricData",)] == "*"
    assert by_action[("autoscaling:SetInstanceProtection",)] == "*"
    assert all("Condition" not in s for s in view["Statement"])
    sqs = moto_view(
        {"Statement": [{"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": "q"}]}
    )
    assert sqs["Statement"][0]["Action"] == ["sqs:SendMessage", "sqs:SendMessageBatch"]


def test_substitute_replaces_whole_values_and_their_sub_paths_only():
    fake = {"arn:aws:s3:::whisperq-data-1": "arn:aws:s3:::real", "q-1": "real-q"}
    document = {
        "Resource": ["arn:aws:s3:::whisperq-data-1/inputs/*", "arn:aws:s3:::whisperq-data-10"],
        "Other": "q-1",
        "Kept": "q-12",
    }
    assert substitute(document, fake) == {
        "Resource": ["arn:aws:s3:::real/inputs/*", "arn:aws:s3:::whisperq-data-10"],
        "Other": "real-q",
        "Kept": "q-12",
    }


# --- static checks: what the mocks cannot --------------------------------------------------------

# EC2: "User data is limited to 16 KB, in raw form, before it is base64-encoded"; the API's
# own constraint is on the base64 text: at most 21,847 characters (so 16,383 raw bytes).
USER_DATA_RAW_LIMIT = USER_DATA_LIMIT  # 16,383: the base64 of 16,384 bytes is over the next
USER_DATA_BASE64_LIMIT = 21847


@pytest.mark.parametrize("image", ["baked", "stock"])
@pytest.mark.parametrize("compute", defaults.COMPUTE_KINDS)
def test_user_data_fits_ec2s_limit(programs, compute, image):
    text = programs[compute, image].user_data()
    raw = len(text.encode())
    encoded = len(base64.b64encode(text.encode()))
    print(f"user data {compute}/{image}: {raw} bytes raw, {encoded} base64")
    assert raw <= USER_DATA_RAW_LIMIT, (compute, image, raw)
    assert encoded <= USER_DATA_BASE64_LIMIT, (compute, image, encoded)
    assert ("provision.sh" in text) == (image == "stock")


@pytest.mark.parametrize("image", ["baked", "stock"])
@pytest.mark.parametrize("compute", defaults.COMPUTE_KINDS)
def test_every_setting_the_user_data_writes_is_a_worker_setting(programs, compute, image):
    env = user_data_env(programs[compute, image].user_data())
    assert set(env) <= set(Settings.model_fields), set(env) - set(Settings.model_fields)
    Settings(**env)  # and each value parses


def user_data_env(text: str) -> dict[str, str]:
    """The worker's settings as the user data writes them (``/etc/whisperq/worker.env``)."""
    body = text.split("<<'WHISPERQ_ENV'\n", 1)[1].split("\nWHISPERQ_ENV", 1)[0]
    values = {}
    for line in body.splitlines():
        name, _, quoted = line.partition("=")
        (value,) = shlex.split(quoted) or [""]
        values[name.removeprefix("WHISPERQ_").lower()] = value
    return values


def pulumi_args_class(token: str) -> type:
    """``aws:sqs/queue:Queue`` -> ``pulumi_aws.sqs.queue.QueueArgs`` (``lambda`` is
    ``lambda_``)."""
    _, path, name = token.split(":")
    module_name = path.split("/")[0]
    try:
        module = importlib.import_module(f"pulumi_aws.{module_name}")
    except ImportError:
        module = importlib.import_module(f"pulumi_aws.{module_name}_")
    # The one the resource's own module defines: where a nested input type has the name
    # (pulumi_aws.s3.BucketServerSideEncryptionConfigurationArgs is Bucket's), the
    # resource's is ...InitArgs.
    home = importlib.import_module(getattr(module, name).__module__)
    for candidate in (f"{name}InitArgs", f"{name}Args"):
        found = getattr(home, candidate, None)
        if found is not None and found.__module__ == home.__name__:
            return found
    raise LookupError(f"no arguments class for {token} in {home.__name__}")


def _unwrap(typ: Any) -> Any:
    """Input[X] / Optional[X] / Union[X, Awaitable[X], Output[X]] -> X."""
    typ = pulumi_types.unwrap_type(typ) if isinstance(typ, type) else typ
    if typing.get_origin(typ) is typing.Union:
        plain = [
            arg
            for arg in typing.get_args(typ)
            if arg is not type(None)
            and typing.get_origin(arg) not in (collections.abc.Awaitable, pulumi.Output)
        ]
        return _unwrap(plain[0]) if plain else typ
    return typ


def unknown_arguments(value: Any, typ: Any, where: str) -> list[str]:
    """Names in ``value`` (as the mocks saw it: Pulumi names, nested) that the installed
    pulumi_aws type ``typ`` does not declare. The SDK rejects an unknown keyword at the
    top level, but passes an unknown key of a nested dict through as it is."""
    typ = _unwrap(typ)
    if isinstance(typ, type) and pulumi_types.is_input_type(typ):
        if not isinstance(value, dict):
            return []
        declared = pulumi_types._types_from_py_properties(typ)  # Pulumi name -> type
        problems = []
        for name, inner in value.items():
            if name not in declared:
                problems.append(f"{where}.{name} (not in {typ.__name__})")
            else:
                problems += unknown_arguments(inner, declared[name], f"{where}.{name}")
        return problems
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (list, collections.abc.Sequence) and isinstance(value, list) and args:
        return [
            p for i, v in enumerate(value) for p in unknown_arguments(v, args[0], f"{where}[{i}]")
        ]
    if origin in (dict, collections.abc.Mapping) and isinstance(value, dict) and len(args) == 2:
        return [
            p for k, v in value.items() for p in unknown_arguments(v, args[1], f"{where}[{k!r}]")
        ]
    return []


def test_every_resource_argument_name_exists_in_the_installed_pulumi_aws(programs):
    problems, checked = [], 0
    for mocks in programs.values():
        for typ, name, inputs, _ in mocks.resources:
            if typ.startswith("aws:"):
                checked += 1
                problems += unknown_arguments(inputs, pulumi_args_class(typ), f"{typ} {name}")
    assert checked > 30
    assert not sorted(set(problems)), "\n".join(sorted(set(problems)))


def test_the_argument_check_catches_a_misspelt_nested_name_the_sdk_lets_through():
    import pulumi_aws as aws

    mocks = rehearsal_mocks()
    pulumi.runtime.set_mocks(mocks, project="whisperq", stack=STACK, preview=False)

    @pulumi.runtime.test
    def program():
        function = aws.lambda_.Function(
            "typo", role="r", environment={"variabls": {"A": "b"}}, ephemeral_storage={"size": 512}
        )
        return function.id

    program()
    (inputs, _) = mocks.one_with_inputs("aws:lambda/function:Function", "typo")
    assert inputs["environment"] == {"variabls": {"A": "b"}}  # passed on as written
    assert unknown_arguments(inputs, pulumi_args_class("aws:lambda/function:Function"), "f") == [
        "f.environment.variabls (not in FunctionEnvironmentArgs)"
    ]


# The families docs/deploy.md's config table names for each compute kind.
FAMILIES = {"cpu": {"c6a", "c6i", "c7a", "m6a"}, "gpu": {"g4dn", "g5", "g6"}}


def test_instance_types_exist_in_their_families_in_botocores_ec2_model(programs):
    model = botocore.session.get_session().get_service_model("ec2")
    known = set(model.shape_for("InstanceType").enum)
    for compute, types in defaults.INSTANCE_TYPES.items():
        for kind in types:
            assert kind in known, f"{kind} ({compute}) is not an EC2 instance type"
            assert kind.split(".")[0] in FAMILIES[compute], (compute, kind)
        (group, _) = programs[compute, "baked"].one_with_inputs(
            "aws:autoscaling/group:Group", "whisperq-fleet"
        )
        overrides = group["mixedInstancesPolicy"]["launchTemplate"]["overrides"]
        assert [o["instanceType"] for o in overrides] == list(types)
    priced = set(defaults.INSTANCE_PRICES) | {defaults.SIMULATED_INSTANCE_TYPE}
    assert priced <= known, priced - known
    packer = (REPO / "ami" / "whisperq.pkr.hcl").read_text()
    built = set(re.findall(r'"([a-z][a-z0-9-]*\.[0-9]*x?large)"', packer))
    assert built and built <= known, built - known


def test_lambda_runtimes_are_ones_lambda_offers(programs):
    model = botocore.session.get_session().get_service_model("lambda")
    runtimes = set(model.shape_for("Runtime").enum)
    functions = [
        i for t, _, i, _ in programs["cpu", "baked"].resources if t.endswith("function:Function")
    ]
    assert functions and all(f["runtime"] in runtimes for f in functions)


LAMBDA_RUNTIME_PACKAGES = frozenset({"boto3", "botocore"})


def _imports(source: str) -> Iterator[tuple[str, int]]:
    """(module, level) for every import that runs in the Lambda: not under ``if
    TYPE_CHECKING:``, and not in an ``except ImportError:`` fallback (the repository's
    way in, when the zip's is not there)."""
    tree = ast.parse(source)
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for inner in ast.walk(node))
        if isinstance(node, ast.Try):
            for handler in node.handlers:
                if handler.type is not None and "ImportError" in ast.unparse(handler.type):
                    skipped.update(id(inner) for inner in ast.walk(handler))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                yield (f"{node.module}.{alias.name}" if node.module else alias.name), node.level
                yield node.module or "", node.level


def missing_from_zip(files: Mapping[str, str]) -> list[str]:
    """Imports of the zip's Python files (path -> source) that neither the Lambda runtime
    (standard library, boto3) nor the zip provides."""
    in_zip = {
        path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for path in files
        if path.endswith(".py")
    }
    missing = []
    for path, source in files.items():
        if not path.endswith(".py"):
            continue
        package = path.removesuffix(".py").replace("/", ".").rpartition(".")[0]
        for module, level in _imports(source):
            if level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - level + 1]
                module = ".".join([*base, module] if module else base)
            top = module.split(".")[0]
            if not module or top == "__future__":
                continue
            if top in sys.stdlib_module_names or top in LAMBDA_RUNTIME_PACKAGES:
                continue
            if module in in_zip:
                continue
            # "from package import name": fine when the package defines the name
            parent, _, name = module.rpartition(".")
            if parent in in_zip and _defines(files, parent, name):
                continue
            missing.append(f"{path}: {module}")
    return sorted(set(missing))


def _defines(files: Mapping[str, str], module: str, name: str) -> bool:
    base = module.replace(".", "/")
    source = files.get(f"{base}.py", files.get(f"{base}/__init__.py", ""))
    pattern = rf"^(def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*[:=]"
    return re.search(pattern, source, re.M) is not None


def lambda_zip(mocks: AwsMocks, name: str) -> dict[str, str]:
    (inputs, _) = mocks.one_with_inputs("aws:lambda/function:Function", name)
    archive = inputs["code"]
    return {path: Path(asset.path).read_text() for path, asset in archive.assets.items()}


def test_the_scaler_zip_holds_every_module_its_handler_imports(programs):
    files = lambda_zip(programs["cpu", "baked"], "whisperq-scaler")
    assert set(files) == {"handler.py", "scaling.py"}
    assert missing_from_zip(files) == []
    without = {path: text for path, text in files.items() if path != "scaling.py"}
    assert missing_from_zip(without) == ["handler.py: scaling"]  # the check does bite


@pytest.mark.skipif(not INGEST_READY, reason=INGEST_MISSING)
def test_the_ingest_zip_holds_every_module_its_handler_imports(programs):
    files = lambda_zip(programs["cpu", "baked"], "whisperq-ingest")
    assert "handler.py" in files and "whisperq/batches/ingest.py" in files
    assert missing_from_zip(files) == []


# --- the code paths, with the declared policies enforced ------------------------------------


def test_moto_enforces_iam_once_the_bootstrap_requests_are_spent(stage):
    root = _raw_client(stage.endpoint, "s3", "bootstrap", "bootstrap")
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        root.list_buckets()
    with pytest.raises(ClientError, match="AccessDenied"):
        stage.client("worker", "s3").list_buckets()  # no statement allows it
    assert stage.client("admin", "s3").list_buckets()["Buckets"]
    stage.recorder.take()


class _HeldJob:
    """Stands for the Celery request a real worker holds while a job runs."""


# Calls the worker's role makes outside whisperq's code, by other programs on the instance.
WORKER_EXEMPT = {
    "logs:": "the CloudWatch agent ships the worker's log (ami/cloudwatch-agent.json)",
    "ssm:": "the SSM agent (Session Manager)",
    "ssmmessages:": "the SSM agent (Session Manager)",
}


def provision_wheel_download(text: str) -> str:
    """provision.sh's own Python that fetches the wheel from S3 at boot (stock image)."""
    match = re.search(r'"\$local_wheel" <<\'PY\'\n(.*?)\nPY\n', text, re.S)
    assert match, "provision.sh no longer downloads the wheel as this test expects"
    return match.group(1)


def test_a_worker_job_end_to_end_with_the_worker_roles_policy(
    rehearsal, make_speech, tmp_path, monkeypatch
):
    with contextlib.ExitStack() as stack:
        _worker_end_to_end(rehearsal, make_speech, tmp_path, monkeypatch, stack)


def _worker_end_to_end(stage, make_speech, tmp_path, monkeypatch, stack):
    from celery.worker import state

    from whisperq.celery_app import make_celery
    from whisperq.worker.heartbeat import message_handle
    from whisperq.worker.instance_guard import InstanceGuard
    from whisperq.worker.runner import JobRunner

    imds = FakeImds(instance_id=stage.instance_id)
    imds.lifecycle_state = "InService"
    stack.enter_context(imds)
    # A batch left noted is looked at again from a timer thread (whisperq/worker/batch_end.py):
    # off here, so that no call of this path lands in a later one's record.
    monkeypatch.setattr("whisperq.worker.batch_end.RECHECK_SECONDS", 0)
    # The worker as the user data configures it, with the rehearsal's endpoint and keys.
    # What the rehearsal changes: the test model on CPU, IMDS, and (below) the timings.
    written = user_data_env(stage.program.user_data())
    assert written["metrics_namespace"] and written["autoscaling_group"] == GROUP

    def worker_settings(**rehearsal: Any) -> Settings:
        return stage.settings(
            "worker",
            **substitute(written, stage.replacements)
            | {
                "model": "tiny.en",
                "device": "cpu",
                "compute_type": "int8",
                "sqs_wait_seconds": 1,
                "imds_endpoint": imds.endpoint,  # the instance id and lifecycle state
                "spot_watch": "off",
            }
            | rehearsal,
        )

    # First a batch of short and long files through packing (issue 26, item 4).
    packing = _packing_under_the_worker_policy(
        stage,
        # one more job per pack; "short" is at most 30 s of the rehearsal's 8 kHz speech
        worker_settings(visibility_timeout=30, pack_max_files=2, pack_max_bytes=480_000),
        make_speech,
        tmp_path / "pack",
    )

    # A batch's last file settled on a dry queue: its done.json and event (issue 28).
    packing += _batch_end_under_the_worker_policy(
        stage, worker_settings(), make_speech, tmp_path / "end"
    )

    admin = stage.settings("admin")
    audio = make_speech(tmp_path / "call.wav", f"{CLEAR_SENTENCE} {CLEAR_SENTENCE}")
    payload = upload_job(admin, audio, "reh-worker", "calls/call.wav")
    handed_back = upload_job(admin, audio, "reh-worker", "calls/again.wav")
    admin_sqs = stage.client("admin", "sqs")
    restored = upload_job(admin, audio, "reh-worker", "calls/restored.wav")
    expired = upload_job(admin, audio, "reh-worker", "calls/expired.wav")
    stage.client("admin", "s3").delete_object(Bucket=stage.bucket, Key=expired["input_key"])
    send_jobs(admin_sqs, stage.urls["jobs"], [payload, handed_back, restored])
    stage.client("admin", "s3").put_object(
        Bucket=stage.bucket, Key="artifacts/whisperq-0.1.0-py3-none-any.whl", Body=b"wheel"
    )
    stage.recorder.take()

    # A visibility timeout of 1 s: the heartbeat beats every third of it, so it beats
    # during this short job.
    settings = worker_settings(visibility_timeout=1)
    assert settings.lifecycle_hook and settings.instance_id is None
    assert (settings.bucket, settings.queue_url) == (stage.bucket, stage.urls["jobs"])

    # At boot on a stock image: provision.sh fetches the wheel with the instance's role.
    wheel = tmp_path / "whisperq.whl"
    key, secret = stage.keys["worker"]
    for name, value in {
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL_S3": stage.endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # no cached credentials
    monkeypatch.setattr(
        sys,
        "argv",
        ["-", f"s3://{stage.bucket}/artifacts/whisperq-0.1.0-py3-none-any.whl", str(wheel)],
    )
    exec(provision_wheel_download((REPO / "ami" / "provision.sh").read_text()), {})
    assert wheel.read_bytes() == b"wheel"

    app = make_celery(settings)
    guard = InstanceGuard(app, settings)
    runner = JobRunner(settings)
    autoscaling = stage.client("admin", "autoscaling")

    def protected() -> bool:
        groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])
        return groups["AutoScalingGroups"][0]["Instances"][0]["ProtectedFromScaleIn"]

    held = _HeldJob()
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue(settings.queue_name)
        try:
            guard.start()
            message = queue.get(block=True, timeout=15)
            handle = message_handle(message.properties)
            assert handle is not None and handle.queue_url == stage.urls["jobs"]
            state.reserved_requests.add(held)  # what Celery does on task_received ...
            guard.job_received()  # ... and the guard's signal handler
            assert protected()
            job = message.decode()[0][0]
            assert runner.run(job, handle) == "done"
            message.ack()  # the Celery ack: DeleteMessage
            state.reserved_requests.discard(held)
            wait_for(lambda: not protected(), 10, "the guard to drop scale-in protection")

            # A job the worker hands back (WorkerUnfit -> Reject): kombu reads the queue's
            # redrive policy to leave it for SQS to dead-letter.
            second = queue.get(block=True, timeout=15)
            second.reject(requeue=False)
            # One neither acked nor rejected when the connection closes (a cold shutdown):
            # kombu restores it (visible again after the wait time).
            queue.get(block=True, timeout=15)
            # A job whose input expired (the bucket's lifecycle rule) before it ran: a
            # permanent failure with a record, which S3 tells apart from a missing
            # permission (404, not 403) only to a caller that may list the bucket.
            assert runner.run(expired) == "failed"
        finally:
            state.reserved_requests.discard(held)
            guard.stop()
            queue.close()

    # The group terminates the instance (scale-in, rebalancing): once the worker has
    # stopped, its termination hook is completed. (Set after stop(): a watcher that read
    # it earlier would SIGQUIT this process.) moto authorises CompleteLifecycleAction, then
    # fails it (not implemented: a 500), so finish() says False; a client without retries
    # spares the backoff.
    imds.lifecycle_state = "Terminated"
    guard.autoscaling = stage.client("worker", "autoscaling")
    assert guard.finish() is False
    # A worker that cannot run asks the group to replace its instance (the image's
    # whisperq-worker unit runs this when the service gives up), with the worker's env.
    env = {f"WHISPERQ_{name.upper()}": str(value) for name, value in written.items()}
    env = substitute(env, stage.replacements) | {
        "WHISPERQ_ENDPOINT_URL": stage.endpoint,
        "WHISPERQ_AWS_ACCESS_KEY_ID": stage.keys["worker"][0],
        "WHISPERQ_AWS_SECRET_ACCESS_KEY": stage.keys["worker"][1],
        "WHISPERQ_IMDS_ENDPOINT": imds.endpoint,
    }
    from whisperq.cli import app as cli_app

    marked = CliRunner().invoke(cli_app, ["mark-unhealthy", "--reason", "rehearsal"], env=env)
    assert marked.exit_code == 0, marked.output

    calls = packing + stage.recorder.take()
    done = [c for c in calls if c.principal == "worker"]
    operations = {(c.service, c.operation) for c in done}
    for expected in [
        ("s3", "HeadObject"),  # download_file
        ("s3", "GetObject"),
        ("s3", "PutObject"),  # renderings, then the JSON
        ("s3", "DeleteObject"),  # a stale error record, if any
        ("sqs", "ReceiveMessage"),
        ("sqs", "SendMessage"),  # packing hands on a job it cannot pack
        ("sqs", "ChangeMessageVisibility"),  # the heartbeat; kombu's restore
        ("sqs", "DeleteMessage"),  # the ack
        ("sqs", "GetQueueAttributes"),  # kombu, on reject: the redrive policy
        ("cloudwatch", "PutMetricData"),
        ("events", "PutEvents"),  # a finished batch's event (issue 28)
        ("autoscaling", "SetInstanceProtection"),
        ("autoscaling", "CompleteLifecycleAction"),
        ("autoscaling", "SetInstanceHealth"),
    ]:
        assert expected in operations, (expected, sorted(operations))
    assert [c.principal for c in calls if c.principal != "worker"] == ["admin"] * (
        len(calls) - len(done)
    )
    print("\n".join(f"allowed  {c}" for c in done))
    assert_none(stage.check_allowed(done))
    assert_none(stage.unused("worker", done, WORKER_EXEMPT))
    queued = admin_sqs.get_queue_attributes(
        QueueUrl=stage.urls["jobs"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert queued["ApproximateNumberOfMessagesNotVisible"] in ("1", "2")  # the rejected job
    wait_for(
        lambda: (
            admin_sqs.get_queue_attributes(
                QueueUrl=stage.urls["jobs"], AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]["ApproximateNumberOfMessages"]
            == "1"
        ),
        10,
        "kombu's restore to make the unacked job visible again",
    )
    results = stage.client("admin", "s3").list_objects_v2(
        Bucket=stage.bucket, Prefix="results/reh-worker/"
    )
    assert {o["Key"].rsplit(".", 1)[-1] for o in results["Contents"]} == {
        "json",
        "srt",
        "vtt",
        "txt",
    }


def _packing_under_the_worker_policy(
    stage: Stage, settings: Settings, make_speech: Any, folder: Path
) -> list[Call]:
    """Issue 26, item 4: a batch of short and long files through packing, the worker's
    policy enforced; the calls made. A worker with a short job takes the next message
    along (``pack_max_files`` 2): the long job, which cannot share its window, is handed
    on -- sent again as a new message, the received copy deleted -- by one packing worker
    after another, more of them than the deliveries that dead-letter a job (the queue's
    maxReceiveCount). Handed back instead, each would have counted a receive, and the job
    would have reached the dead-letter queue without running. It then runs on its first
    delivery, two short jobs share a window, and nothing is dead-lettered."""
    from whisperq.messages import job_payload_of
    from whisperq.worker.heartbeat import MessageHandle
    from whisperq.worker.runner import JobRunner

    admin, batch = stage.settings("admin"), "reh-pack"
    admin_sqs, worker_sqs = stage.client("admin", "sqs"), stage.client("worker", "sqs")
    jobs, dead = stage.urls["jobs"], stage.urls["dead-letters"]
    short = make_speech(folder / "short.wav", CLEAR_SENTENCE)
    long = make_speech(folder / "long.wav", " ".join([CLEAR_SENTENCE] * 10))
    assert short.stat().st_size < settings.pack_max_bytes < long.stat().st_size
    redrive = admin_sqs.get_queue_attributes(QueueUrl=jobs, AttributeNames=["RedrivePolicy"])
    max_receives = json.loads(redrive["Attributes"]["RedrivePolicy"])["maxReceiveCount"]
    leads = [f"short-{n}.wav" for n in range(max_receives + 2)]
    names = [*leads, "pair-a.wav", "pair-b.wav"]
    payloads = {name: upload_job(admin, short, batch, name) for name in names}
    payloads["long.wav"] = upload_job(admin, long, batch, "long.wav")
    runner = JobRunner(settings)
    stage.recorder.take()

    def receive() -> tuple[dict[str, Any], MessageHandle]:
        """The next job as Celery hands one to a pool process (prefetch 1)."""
        (message,) = worker_sqs.receive_message(
            QueueUrl=jobs,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=1,
            VisibilityTimeout=settings.visibility_timeout,
            AttributeNames=["ApproximateReceiveCount"],
            MessageAttributeNames=["All"],
        )["Messages"]
        count = int(message["Attributes"]["ApproximateReceiveCount"])
        return job_payload_of(message["Body"]), MessageHandle(jobs, message["ReceiptHandle"], count)

    def run(payload: dict[str, Any], handle: MessageHandle) -> None:
        """The task, then Celery's ack (DeleteMessage)."""
        assert runner.run(payload, handle) == "done", payload["path"]
        worker_sqs.delete_message(QueueUrl=jobs, ReceiptHandle=handle.receipt_handle)

    # SQS (and moto) deliver in order here: each short lead finds the long job first.
    send_jobs(admin_sqs, jobs, [payloads[leads[0]]])
    lead = receive()
    send_jobs(admin_sqs, jobs, [payloads["long.wav"], payloads[leads[1]]])
    for number in range(1, len(leads)):
        run(*lead)  # takes the long job along, and hands it on behind the next lead
        lead = receive()
        assert lead[0]["path"] == leads[number], (
            "the long job came back first: handed back (a receive counted), not handed on"
        )
        if number + 1 < len(leads):
            send_jobs(admin_sqs, jobs, [payloads[leads[number + 1]]])
    run(*lead)  # the last lead hands it on once more
    long_job, long_handle = receive()
    # met by max_receives + 2 packing workers, and still on its first delivery
    assert (long_job["path"], long_handle.receive_count) == ("long.wav", 1)
    run(long_job, long_handle)
    send_jobs(admin_sqs, jobs, [payloads["pair-a.wav"], payloads["pair-b.wav"]])
    run(*receive())  # pair-a takes pair-b along: one window, two results

    calls = stage.recorder.take()
    handed_on = [
        c
        for c in calls
        if (c.principal, c.operation, c.params.get("QueueUrl")) == ("worker", "SendMessage", jobs)
    ]
    assert len(handed_on) == max_receives + 2 and not [c for c in handed_on if c.error]
    counts = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    for url in (jobs, dead):
        left = admin_sqs.get_queue_attributes(QueueUrl=url, AttributeNames=counts)["Attributes"]
        assert left == {name: "0" for name in counts}, (url, left)  # nothing dead-lettered
    results = stage.client("admin", "s3").list_objects_v2(
        Bucket=stage.bucket, Prefix=f"results/{batch}/"
    )
    done = {o["Key"].removeprefix(f"results/{batch}/") for o in results["Contents"]}
    assert {name for name in payloads if f"{name}.json" in done} == set(payloads)
    assert not [key for key in done if key.endswith(".error.json")]
    return calls


def _batch_end_under_the_worker_policy(
    stage: Stage, settings: Settings, make_speech: Any, folder: Path
) -> list[Call]:
    """Issue 28: the worker that settles a batch's last file, its queue dry, writes the
    batch's done.json (a conditional write) and puts "whisperq batch finished" on the
    stack's bus (whisperq:eventBus, in the user data); another worker finds the marker
    there; a batch with no records (batch.json, or a legacy manifest.json) is left alone.
    The calls made."""
    from whisperq.worker.runner import JobRunner

    admin, batch = stage.settings("admin"), "reh-done"
    assert settings.event_bus == "default"  # the user data's: the config's default
    admin_s3, admin_sqs = stage.client("admin", "s3"), stage.client("admin", "sqs")
    write_batch(admin, batch, ["a.wav", "b.wav"], duration=5)
    error = json.dumps({"reason": "could not decode"}).encode()
    admin_s3.put_object(Bucket=stage.bucket, Key=keys.error_key(batch, "b.wav"), Body=error)
    entry_states.mark(admin_s3, stage.bucket, batch, "b.wav", "failed")  # as its worker did
    folder.mkdir(parents=True, exist_ok=True)
    payload = upload_job(admin, make_speech(folder / "a.wav", CLEAR_SENTENCE), batch, "a.wav")
    counts = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    left = admin_sqs.get_queue_attributes(QueueUrl=stage.urls["jobs"], AttributeNames=counts)
    assert left["Attributes"] == {name: "0" for name in counts}  # the queue has run dry
    stage.recorder.take()

    assert JobRunner(settings).run(payload) == "done"
    # its entry renamed "done" by the worker (under the worker role's policy)
    entries = admin_s3.list_objects_v2(Bucket=stage.bucket, Prefix=keys.entries_prefix(batch))
    assert sorted(item["Key"] for item in entries["Contents"]) == [
        keys.entry_key(batch, "a.wav", 5, "done"),
        keys.entry_key(batch, "b.wav", 5, "failed"),
    ]
    marker = admin_s3.get_object(Bucket=stage.bucket, Key=keys.done_key(batch))["Body"].read()
    done = json.loads(marker)
    assert (done["submitted"], done["done"], done["failed_paths"]) == (2, 1, ["b.wav"])
    later = JobRunner(settings).batch_ends
    later.settled(batch)
    later.settled("reh-no-records")
    assert later.after_job() == {batch: "finished", "reh-no-records": "unknown"}
    calls = stage.recorder.take()
    put = [c for c in calls if (c.principal, c.operation) == ("worker", "PutEvents")]
    assert len(put) == 1 and put[0].error is None, put  # one event, by the one writer
    return calls


def test_the_worker_role_refuses_what_a_worker_does_not_do(rehearsal):
    stage = rehearsal
    admin_s3 = stage.client("admin", "s3")
    admin_s3.put_object(Bucket=stage.bucket, Key="inputs/reh-deny/a.wav", Body=b"a")
    admin_s3.put_object(Bucket=stage.other_bucket, Key="inputs/reh-deny/a.wav", Body=b"a")
    bucket, other = stage.bucket, stage.other_bucket
    audio, record = "inputs/reh-deny/a.wav", "batches/reh-deny/batch.json"
    transcript = "results/reh-deny/a.wav.json"
    admin_s3.put_object(Bucket=stage.bucket, Key=transcript, Body=b"{}")
    entry = keys.entry_key("reh-deny", "a.wav", 1.0)
    admin_s3.put_object(Bucket=stage.bucket, Key=entry, Body=b"{}")
    jobs, dead, elsewhere = stage.urls["jobs"], stage.urls["dead-letters"], stage.urls["elsewhere"]
    group = {"AutoScalingGroupName": GROUP}
    samples = refused(
        "worker",
        ("delete an input", "s3:DeleteObject", {"Bucket": bucket, "Key": audio}),
        ("delete a transcript", "s3:DeleteObject", {"Bucket": bucket, "Key": transcript}),
        ("overwrite an input", "s3:PutObject", {"Bucket": bucket, "Key": audio, "Body": b"x"}),
        ("read another bucket", "s3:GetObject", {"Bucket": other, "Key": audio}),
        ("write batch records", "s3:PutObject", {"Bucket": bucket, "Key": record, "Body": b"{}"}),
        # a batch's end it reads and marks (issue 28), its files' entries it renames; not
        # the batch's own record, nor another bucket's entries
        ("delete batch records", "s3:DeleteObject", {"Bucket": bucket, "Key": record}),
        ("rename another bucket's entry", "s3:DeleteObject", {"Bucket": other, "Key": entry}),
        ("list another bucket", "s3:ListObjectsV2", {"Bucket": other, "Prefix": "inputs/"}),
        # its own queue it may send to: packing hands jobs on (issue 26, item 4); nothing else
        ("send to another queue", "sqs:SendMessage", {"QueueUrl": elsewhere, "MessageBody": "x"}),
        ("send to the dead letters", "sqs:SendMessage", {"QueueUrl": dead, "MessageBody": "x"}),
        ("take dead letters", "sqs:ReceiveMessage", {"QueueUrl": dead, "WaitTimeSeconds": 0}),
        ("purge the queue", "sqs:PurgeQueue", {"QueueUrl": jobs}),
        ("resize the fleet", "autoscaling:SetDesiredCapacity", {**group, "DesiredCapacity": 5}),
        # moto checks Auto Scaling and CloudWatch against "*", conditions never: these two
        # only the evaluator can refuse
        (
            "protect another group's instance",
            "autoscaling:SetInstanceProtection",
            {
                "AutoScalingGroupName": "someone-elses",
                "InstanceIds": ["i-1"],
                "ProtectedFromScaleIn": True,
            },
            False,
        ),
        (
            "publish metrics in another namespace",
            "cloudwatch:PutMetricData",
            {"Namespace": "AWS/EC2", "MetricData": []},
            False,
        ),
        (
            "put events on another bus",
            "events:PutEvents",
            {"Entries": [{"Source": "x", "DetailType": "x", "Detail": "{}", "EventBusName": "b"}]},
            False,
        ),
    )
    assert_none(check_denied(stage, samples))
    admin_s3.delete_object(Bucket=bucket, Key=entry)  # no batch without its batch.json
    assert admin_s3.get_object(Bucket=bucket, Key="inputs/reh-deny/a.wav")["Body"].read() == b"a"
    # ... and what it may: hand a job it cannot pack on to its own queue (issue 26, item 4;
    # the end-to-end rehearsal makes these calls)
    hand_on = Request("sqs:SendMessage", stage.arns.queue(jobs))
    assert evaluate(stage.policies("worker"), with_tls(hand_on)) == "allow"


SCALER_EXEMPT = {"logs:": "the Lambda runtime writes the function's log"}


def test_the_scaler_decides_with_the_scaler_roles_policy(rehearsal):
    import handler

    stage = rehearsal
    (function, _) = stage.program.one_with_inputs("aws:lambda/function:Function", "whisperq-scaler")
    env = substitute(dict(function["environment"]["variables"]), stage.replacements)
    assert env["QUEUE_URL"] == stage.urls["jobs"] and env["GROUP_NAME"] == GROUP
    sqs, autoscaling = stage.client("scaler", "sqs"), stage.client("scaler", "autoscaling")
    admin_sqs = stage.client("admin", "sqs")
    idle = float(env["IDLE_MINUTES"]) * 60

    assert handler.scale_once(sqs, autoscaling, env, now=0) == {"desired": 1, "was": 1}  # idle tag
    for _ in range(int(env["JOBS_PER_INSTANCE"]) + 1):
        admin_sqs.send_message(QueueUrl=stage.urls["jobs"], MessageBody="job")
    assert handler.scale_once(sqs, autoscaling, env, now=60) == {"desired": 2, "was": 1}
    admin_sqs.purge_queue(QueueUrl=stage.urls["jobs"])
    handler.scale_once(sqs, autoscaling, env, now=120)
    assert handler.scale_once(sqs, autoscaling, env, now=120 + idle) == {"desired": 0, "was": 2}

    calls = [c for c in stage.recorder.take() if c.principal == "scaler"]
    print("\n".join(f"allowed  {c}" for c in calls))
    assert {c.operation for c in calls} == {
        "GetQueueAttributes",
        "DescribeAutoScalingGroups",
        "SetDesiredCapacity",
        "CreateOrUpdateTags",
        "DeleteTags",
    }
    assert_none(stage.check_allowed(calls))
    assert_none(stage.unused("scaler", calls, SCALER_EXEMPT))

    jobs, dead, elsewhere = stage.urls["jobs"], stage.urls["dead-letters"], stage.urls["elsewhere"]
    group = {"AutoScalingGroupName": GROUP}
    samples = refused(
        "scaler",
        ("send to another queue", "sqs:SendMessage", {"QueueUrl": elsewhere, "MessageBody": "x"}),
        ("take jobs", "sqs:ReceiveMessage", {"QueueUrl": jobs, "WaitTimeSeconds": 0}),
        ("count dead letters", "sqs:GetQueueAttributes", {"QueueUrl": dead}),
        ("read the bucket", "s3:GetObject", {"Bucket": stage.bucket, "Key": "results/x.json"}),
        (
            "protect instances",
            "autoscaling:SetInstanceProtection",
            {**group, "InstanceIds": [stage.instance_id], "ProtectedFromScaleIn": True},
        ),
        (
            "resize another group",
            "autoscaling:SetDesiredCapacity",
            {"AutoScalingGroupName": "someone-elses", "DesiredCapacity": 1},
            False,
        ),
    )
    assert_none(check_denied(stage, samples))


def _cli(stage: Stage, *args: str) -> Any:
    from whisperq.cli import app

    key, secret = stage.keys["cli"]
    env = {
        "WHISPERQ_ENDPOINT_URL": stage.endpoint,
        "WHISPERQ_REGION": REGION,
        "WHISPERQ_BUCKET": stage.bucket,
        "WHISPERQ_QUEUE_URL": stage.urls["jobs"],
        "WHISPERQ_DLQ_URL": stage.urls["dead-letters"],
        "WHISPERQ_AUTOSCALING_GROUP": GROUP,
        # as `config from-stack` sets them from ingestQueueUrl / ingestDlqUrl
        "WHISPERQ_INGEST_QUEUE_URL": stage.urls.get("ingest", ""),
        "WHISPERQ_INGEST_DLQ_URL": stage.urls.get("ingest-dead-letters", ""),
        "WHISPERQ_EVENT_BUS": "default",  # from the stack's eventBus
        "WHISPERQ_AWS_ACCESS_KEY_ID": key,
        "WHISPERQ_AWS_SECRET_ACCESS_KEY": secret,
        "COLUMNS": "200",
    }
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, (args, result.output)
    return result


def test_the_cli_user_policy_runs_submit_status_results_retry_and_dlq(
    rehearsal, make_speech, tmp_path
):
    stage = rehearsal
    admin = stage.settings("admin")
    admin_sqs = stage.client("admin", "sqs")
    calls_dir = Path.cwd() / "calls"
    make_speech(calls_dir / "a.wav", "Good morning.")
    make_speech(calls_dir / "b.wav", CLEAR_SENTENCE)
    batch = "reh-cli"

    _cli(stage, "submit", "calls", "--batch", batch, "--json")
    make_speech(calls_dir / "a.wav", f"Good morning. {CLEAR_SENTENCE}")  # longer: a new entry
    _cli(stage, "submit", "calls/a.wav", "--batch", batch, "--json")
    submitted = [c for c in stage.recorder.take() if c.principal == "cli"]

    # The fleet's side, as workers would leave it: b is done, a failed, and a's job is
    # also on the dead-letter queue.
    write_result(
        admin,
        batch,
        "calls/b.wav",
        duration=4.0,
        job_seconds=3.0,
        finished_at=utc_now(),
        instance_type="c6a.xlarge",
    )
    record = ErrorRecord(
        batch=batch,
        path="calls/a.wav",
        input_key=keys.input_key(batch, "calls/a.wav"),
        reason="could not decode",
        kind="permanent",
        error_type="DecodeError",
        attempts=1,
        worker_id="host:1",
        failed_at=utc_now(),
    )
    admin_s3 = stage.client("admin", "s3")
    admin_s3.put_object(
        Bucket=stage.bucket,
        Key=keys.error_key(batch, "calls/a.wav"),
        Body=record.model_dump_json().encode(),
    )
    entry_states.mark(admin_s3, stage.bucket, batch, "calls/a.wav", "failed")  # as its worker
    taken = []
    while len(taken) < 3:  # the three jobs the two submits queued
        reply = admin_sqs.receive_message(
            QueueUrl=stage.urls["jobs"], MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        taken += reply.get("Messages", [])
    admin_sqs.send_message(QueueUrl=stage.urls["dead-letters"], MessageBody=taken[0]["Body"])
    admin_sqs.purge_queue(QueueUrl=stage.urls["jobs"])
    if INGEST_READY:  # an S3 event whose ingest kept failing
        admin_sqs.send_message(QueueUrl=stage.urls["ingest-dead-letters"], MessageBody="{}")
    stage.recorder.take()

    status = json.loads(_cli(stage, "status", batch, "--failed", "--json").stdout)
    (mine,) = status["batches"]
    assert (mine["submitted"], mine["done"], mine["failed"]) == (2, 1, 1)
    assert mine["failures"][0]["reason"] == "could not decode"
    assert status["queue"]["dead_lettered"] == 1
    if INGEST_READY:  # the ingest queue and its dead letters, with the policy's statement
        assert status["ingest_queue"] == {"visible": 0, "in_flight": 0, "dead_lettered": 1}
    assert status["fleet"]["found"] and status["fleet"]["throughput"]["results_read"] == 1
    assert batch in _cli(stage, "status").stdout  # every batch: a listing of batches/
    # status reads the scaling activities only while the group runs fewer than it wants,
    # which moto's groups never do: the same call on a group state made short.
    from whisperq.fleet import group_status as fleet

    autoscaling = stage.client("cli", "autoscaling")
    group = fleet.describe_group(stage.settings("cli"), GROUP, autoscaling)
    assert group is not None
    short = dataclasses.replace(group, desired=group.running + 2)
    problem = fleet.read_launch_problem(autoscaling, short)
    assert problem is None or problem.code is None, problem
    _cli(stage, "results", batch, "--out", str(tmp_path / "out"))
    assert (tmp_path / "out" / "calls" / "b.wav.json").is_file()
    assert (tmp_path / "out" / "calls" / "a.wav.error.json").is_file()
    peeked = json.loads(_cli(stage, "dlq", "--json").stdout)
    assert len(peeked["messages"]) == 1
    retried = json.loads(_cli(stage, "retry", batch, "--json").stdout)
    assert retried["failed"] == ["calls/a.wav"] and len(retried["dead_lettered"]) == 1
    admin_sqs.send_message(QueueUrl=stage.urls["dead-letters"], MessageBody=taken[1]["Body"])
    assert "Moved 1 job(s)" in _cli(stage, "dlq", "--redrive").output
    # A batch status sees finished before any worker did: status writes its done.json and
    # puts the "batch finished" event on the stack's bus (issue 28).
    _cli(stage, "submit", "calls/b.wav", "--batch", "reh-cli-done", "--json")
    write_result(admin, "reh-cli-done", "calls/b.wav", duration=4.0, finished_at=utc_now())
    _cli(stage, "status", "reh-cli-done", "--json")
    marker = stage.client("admin", "s3").get_object(
        Bucket=stage.bucket, Key=keys.done_key("reh-cli-done")
    )
    assert json.loads(marker["Body"].read())["batch"] == "reh-cli-done"

    calls = submitted + [c for c in stage.recorder.take() if c.principal == "cli"]
    put = [c for c in calls if c.operation == "PutEvents"]  # (plain status finishes others)
    assert all(c.error is None for c in put), put
    assert sum("reh-cli-done" in json.dumps(c.params) for c in put) == 1, put
    print("\n".join(f"allowed  {c}" for c in calls))
    assert_none(stage.check_allowed(calls))
    assert_none(stage.unused("cli", calls, {}))
    # submit's first read of the new batch was a 404 (so ListBucket was needed for it)
    assert any(c.operation == "GetObject" and c.error == "NoSuchKey" for c in calls)

    bucket = stage.bucket
    audio = keys.input_key(batch, "calls/b.wav")
    transcript = keys.result_key(batch, "calls/b.wav", "json")
    jobs, dead, elsewhere = stage.urls["jobs"], stage.urls["dead-letters"], stage.urls["elsewhere"]
    group = {"AutoScalingGroupName": GROUP}
    samples = refused(
        "cli",
        ("purge the dead-letter queue", "sqs:PurgeQueue", {"QueueUrl": dead}),
        ("read the uploaded audio back", "s3:GetObject", {"Bucket": bucket, "Key": audio}),
        ("delete an input", "s3:DeleteObject", {"Bucket": bucket, "Key": audio}),
        ("delete a transcript", "s3:DeleteObject", {"Bucket": bucket, "Key": transcript}),
        ("write a transcript", "s3:PutObject", {"Bucket": bucket, "Key": transcript, "Body": b"x"}),
        ("read another bucket", "s3:GetObject", {"Bucket": stage.other_bucket, "Key": "x"}),
        ("take jobs off the queue", "sqs:ReceiveMessage", {"QueueUrl": jobs, "WaitTimeSeconds": 0}),
        ("purge the queue", "sqs:PurgeQueue", {"QueueUrl": jobs}),
        ("send to another queue", "sqs:SendMessage", {"QueueUrl": elsewhere, "MessageBody": "x"}),
        ("resize the fleet", "autoscaling:SetDesiredCapacity", {**group, "DesiredCapacity": 3}),
    )
    if INGEST_READY:  # the ingest queues: counted, never worked
        ingest, ingest_dead = stage.urls["ingest"], stage.urls["ingest-dead-letters"]
        samples += refused(
            "cli",
            ("take S3 events", "sqs:ReceiveMessage", {"QueueUrl": ingest, "WaitTimeSeconds": 0}),
            ("send an S3 event", "sqs:SendMessage", {"QueueUrl": ingest, "MessageBody": "x"}),
            ("purge the ingest dead letters", "sqs:PurgeQueue", {"QueueUrl": ingest_dead}),
        )
    assert_none(check_denied(stage, samples))


INGEST_EXEMPT = {"logs:": "the Lambda runtime writes the function's log"}


def _s3_event(bucket: str, key: str, size: int) -> dict[str, Any]:
    """An S3 ObjectCreated notification, as S3 puts it on the ingest queue."""
    record = {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": size}},
    }
    return {"Records": [record]}


@pytest.mark.skipif(not INGEST_READY, reason=INGEST_MISSING)
def test_the_ingest_lambda_with_the_ingest_roles_policy(rehearsal, make_speech, tmp_path):
    from whisperq.batches import ingest

    stage = rehearsal
    ingest_handler = load_file_module(
        REPO / "infra_pulumi" / "ingest" / "handler.py", "whisperq_ingest_handler"
    )
    (function, _) = stage.program.one_with_inputs("aws:lambda/function:Function", "whisperq-ingest")
    env = substitute(dict(function["environment"]["variables"]), stage.replacements)
    config = ingest.IngestConfig.from_env(env)
    s3, sqs = stage.client("ingest", "s3"), stage.client("ingest", "sqs")
    admin_s3, admin_sqs = stage.client("admin", "s3"), stage.client("admin", "sqs")
    ingest_url = stage.urls["ingest"]

    def deliver(key: str, size: int, failures: int = 0) -> list[str]:
        """S3's notification on the ingest queue; the event source mapping polls it as the
        function's role, the handler runs, the mapping deletes what it finished."""
        body = json.dumps(_s3_event(stage.bucket, key, size))
        admin_sqs.send_message(QueueUrl=ingest_url, MessageBody=body)
        sqs.get_queue_attributes(QueueUrl=ingest_url, AttributeNames=["All"])
        messages = sqs.receive_message(
            QueueUrl=ingest_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )["Messages"]
        event = {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "body": m["Body"],
                    "receiptHandle": m["ReceiptHandle"],
                }
                for m in messages
            ]
        }
        lines: list[dict[str, Any]] = []
        response = ingest_handler.handle(
            event,
            s3,
            sqs,
            config,
            log=lines.append,
            ingest_queue_url=env.get(ingest_handler.INGEST_QUEUE_URL),
            events=stage.client("ingest", "events"),
        )
        assert len(response["batchItemFailures"]) == failures, lines
        failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
        for message in messages:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=ingest_url, ReceiptHandle=message["ReceiptHandle"])
        return [line["status"] for line in lines]

    key = "incoming/reh-ingest/calls/call.wav"
    short = make_speech(tmp_path / "short.wav", "Good morning.")
    long = make_speech(tmp_path / "long.wav", CLEAR_SENTENCE)
    stage.recorder.take()
    admin_s3.put_object(Bucket=stage.bucket, Key=key, Body=short.read_bytes())
    assert deliver(key, short.stat().st_size) == ["queued"]
    assert deliver(key, short.stat().st_size) == ["duplicate"]  # S3 delivers at least once
    admin_s3.put_object(Bucket=stage.bucket, Key=key, Body=long.read_bytes())  # a new take
    assert deliver(key, long.stat().st_size) == ["queued"]  # its entry replaces the old one
    assert deliver("incoming/reh-ingest/calls/gone.wav", 10) == ["failed"]  # deleted first
    # The only file of a batch, gone: ingest finishes the batch (done.json, the event).
    assert deliver("incoming/reh-gone/calls/gone.wav", 10) == ["failed"]
    assert admin_s3.get_object(Bucket=stage.bucket, Key="batches/reh-gone/done.json")
    # Another delivery of the same object is half way (its input claimed, no entry yet):
    # this one waits, its record back on the queue when that claim would expire.
    claimed = "incoming/reh-ingest/calls/claimed.wav"
    data = short.read_bytes()
    admin_s3.put_object(Bucket=stage.bucket, Key=claimed, Body=data)
    admin_s3.put_object(
        Bucket=stage.bucket,
        Key="inputs/reh-ingest/calls/claimed.wav",
        Body=data,
        Metadata={ingest.META_SHA256: hashlib.sha256(data).hexdigest()},
    )
    assert deliver(claimed, len(data), failures=1) == ["retry"]

    calls = [c for c in stage.recorder.take() if c.principal == "ingest"]
    print("\n".join(f"allowed  {c}" for c in calls))
    assert_none(stage.check_allowed(calls))
    assert_none(stage.unused("ingest", calls, INGEST_EXEMPT))
    queued = admin_sqs.get_queue_attributes(
        QueueUrl=stage.urls["jobs"], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert queued == "2"

    bucket = stage.bucket
    jobs, dead, elsewhere = stage.urls["jobs"], stage.urls["dead-letters"], stage.urls["elsewhere"]
    group = {"AutoScalingGroupName": GROUP}
    samples = refused(
        "ingest",
        ("send to another queue", "sqs:SendMessage", {"QueueUrl": elsewhere, "MessageBody": "x"}),
        ("read results", "s3:GetObject", {"Bucket": bucket, "Key": "results/x.json"}),
        (
            "write a transcript",
            "s3:PutObject",
            {"Bucket": bucket, "Key": "results/x.json", "Body": b"x"},
        ),
        ("delete an incoming object", "s3:DeleteObject", {"Bucket": bucket, "Key": key}),
        (
            "delete an input",
            "s3:DeleteObject",
            {"Bucket": bucket, "Key": "inputs/reh-ingest/calls/call.wav"},
        ),
        ("read another bucket", "s3:GetObject", {"Bucket": stage.other_bucket, "Key": "x"}),
        ("take jobs", "sqs:ReceiveMessage", {"QueueUrl": jobs, "WaitTimeSeconds": 0}),
        (
            "send to the dead-letter queue",
            "sqs:SendMessage",
            {"QueueUrl": dead, "MessageBody": "x"},
        ),
        (
            "queue events for itself",
            "sqs:SendMessage",
            {"QueueUrl": ingest_url, "MessageBody": "x"},
        ),
        ("resize the fleet", "autoscaling:SetDesiredCapacity", {**group, "DesiredCapacity": 3}),
    )
    assert_none(check_denied(stage, samples))
