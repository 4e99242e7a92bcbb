"""The ingest Lambda's handler (infra_pulumi/ingest/handler.py) against moto server's S3 and
SQS: SQS events as Lambda delivers them, holding S3 notifications and EventBridge events,
with the environment the Pulumi program gives the function."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from urllib.parse import quote_plus

import pytest
from whisperq_infra.config import parse_config
from whisperq_infra.ingest import lambda_environment

from whisperq import keys, messages, storage

from helpers import load_file_module, silent_wav

HANDLER = Path(__file__).parents[2] / "infra_pulumi" / "ingest" / "handler.py"
ACCOUNT = "123456789012"


handler = load_file_module(HANDLER, "ingest_handler")  # handler.py, like the scaler's

PREFIXES = {"support": {"channels": "split", "speakers": "agent,customer"}}


def s3_notification(bucket: str, key: str, size: int) -> dict:
    """S3's event notification for one created object (the key URL-encoded, as S3 does)."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2025-01-01T00:00:00.000Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "incoming",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        "eTag": "0",
                        "sequencer": "0",
                    },
                },
            }
        ]
    }


def eventbridge_event(bucket: str, key: str, size: int) -> dict:
    """EventBridge's "Object Created" event (the key URL-encoded, as S3 does in its
    notifications: AWS's own parsers, Powertools' and Data Prepper's, decode it)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": ACCOUNT,
        "time": "2025-01-01T00:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {
                "key": quote_plus(key, safe="/"),
                "size": size,
                "etag": "0",
                "sequencer": "0",
            },
            "request-id": "0",
            "requester": ACCOUNT,
            "reason": "PutObject",
        },
    }


TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2025-01-01T00:00:00.000Z",
    "Bucket": "any",
    "RequestId": "0",
    "HostId": "0",
}


class Route:
    """The test's bucket and job queue, an ingest queue, and the Lambda's environment."""

    def __init__(self, aws, raw: dict | None = None) -> None:
        self.aws = aws
        self.s3 = storage.client(aws, "s3")
        self.sqs = storage.client(aws, "sqs")
        self.ingest_queue = self.sqs.create_queue(
            QueueName=f"{aws.bucket}-ingest", Attributes={"VisibilityTimeout": "720"}
        )["QueueUrl"]
        settings = parse_config(raw or {"ingestPrefixes": json.dumps(PREFIXES)}).ingest
        self.env = lambda_environment(settings, aws.bucket, aws.queue_url, self.ingest_queue)
        self.lines: list[dict] = []

    def config(self, **env: str):
        from whisperq.batches.ingest import IngestConfig

        return IngestConfig.from_env({**self.env, **env})

    def put(self, key: str, body: bytes, bucket: str | None = None) -> int:
        self.s3.put_object(Bucket=bucket or self.aws.bucket, Key=key, Body=body)
        return len(body)

    def sqs_event(self, *bodies: str) -> dict:
        """The bodies sent to the ingest queue and received, as Lambda hands them over."""
        for body in bodies:
            self.sqs.send_message(QueueUrl=self.ingest_queue, MessageBody=body)
        received: list[dict] = []
        deadline = time.monotonic() + 10
        while len(received) < len(bodies) and time.monotonic() < deadline:
            answer = self.sqs.receive_message(
                QueueUrl=self.ingest_queue, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            received += answer.get("Messages", [])
        assert len(received) == len(bodies)
        by_body = {message["Body"]: message for message in received}
        return {
            "Records": [
                {
                    "messageId": by_body[body]["MessageId"],
                    "receiptHandle": by_body[body]["ReceiptHandle"],
                    "body": body,
                    "attributes": {"ApproximateReceiveCount": "1"},
                    "messageAttributes": {},
                    "eventSource": "aws:sqs",
                    "eventSourceARN": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{self.aws.bucket}-ingest",
                    "awsRegion": "us-east-1",
                }
                for body in bodies
            ]
        }

    def handle(self, event: dict, config=None, **kwargs) -> list[str]:
        """The handler on ``event``; the ids of the records it reports for a retry."""
        response = handler.handle(
            event,
            self.s3,
            self.sqs,
            config or self.config(),
            log=self.lines.append,
            ingest_queue_url=self.ingest_queue,
            **kwargs,
        )
        return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]

    def jobs(self) -> list[dict]:
        found = []
        while True:
            answer = self.sqs.receive_message(
                QueueUrl=self.aws.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600
            )
            if not answer.get("Messages"):
                return found
            found += [messages.job_payload_of(m["Body"]) for m in answer["Messages"]]

    def keys_under(self, prefix: str) -> list[str]:
        return [item.key for item in storage.list_objects(self.s3, self.aws.bucket, prefix)]

    def statuses(self) -> list[str]:
        return [line["status"] for line in self.lines]


@pytest.fixture
def route(aws) -> Route:
    return Route(aws)


def test_s3_notifications_become_jobs_inputs_and_batch_records(route):
    bucket = route.aws.bucket
    audio = silent_wav(2.0)
    first = s3_notification(
        bucket,
        "incoming/support/queue 1/call.wav",
        route.put("incoming/support/queue 1/call.wav", audio),
    )
    second = s3_notification(
        bucket, "incoming/weekly/b.wav", route.put("incoming/weekly/b.wav", silent_wav(1.0))
    )
    event = route.sqs_event(json.dumps(first), json.dumps(second))

    assert route.handle(event) == []

    jobs = {(job["batch"], job["path"]): job for job in route.jobs()}
    assert set(jobs) == {("support", "queue 1/call.wav"), ("weekly", "b.wav")}
    support = jobs["support", "queue 1/call.wav"]
    assert support["input_key"] == "inputs/support/queue 1/call.wav"
    assert support["size"] == len(audio)
    assert (support["options"]["channels"], support["options"]["speakers"]) == (
        "split",
        ["agent", "customer"],
    )
    assert jobs["weekly", "b.wav"]["options"]["channels"] == "auto"  # the defaults
    stored = route.s3.get_object(Bucket=bucket, Key="inputs/support/queue 1/call.wav")
    assert stored["Body"].read() == audio
    info = json.loads(
        route.s3.get_object(Bucket=bucket, Key=keys.batch_info_key("support"))["Body"].read()
    )
    assert info["source"] == "ingest:incoming/" and info["options"]["channels"] == "split"
    assert route.keys_under(keys.entries_prefix("support")) == [
        "batches/support/files/queue 1/call.wav/2000.json"
    ]
    # One line per object, naming it; nothing of the content.
    assert route.lines == [
        {
            "status": "queued",
            "batch": "support",
            "path": "queue 1/call.wav",
            "reason": None,
            "source": f"s3://{bucket}/incoming/support/queue 1/call.wav",
        },
        {
            "status": "queued",
            "batch": "weekly",
            "path": "b.wav",
            "reason": None,
            "source": f"s3://{bucket}/incoming/weekly/b.wav",
        },
    ]


def test_the_same_object_delivered_twice_gives_one_job(route):
    size = route.put("incoming/support/a.wav", silent_wav(1.0))
    body = json.dumps(s3_notification(route.aws.bucket, "incoming/support/a.wav", size))
    assert route.handle(route.sqs_event(body)) == []
    assert route.handle(route.sqs_event(body)) == []  # S3 delivers at least once
    assert len(route.jobs()) == 1
    assert route.statuses() == ["queued", "duplicate"]
    assert len(route.keys_under(keys.entries_prefix("support"))) == 1


def test_a_bad_record_fails_alone_and_the_others_are_ingested(route):
    size = route.put("incoming/support/good.wav", silent_wav(1.0))
    good = json.dumps(s3_notification(route.aws.bucket, "incoming/support/good.wav", size))
    event = route.sqs_event("not json at all", good, json.dumps({"hello": "world"}))
    bad_ids = [event["Records"][0]["messageId"], event["Records"][2]["messageId"]]

    assert route.handle(event) == bad_ids
    assert [(job["batch"], job["path"]) for job in route.jobs()] == [("support", "good.wav")]
    assert route.statuses() == ["retry", "queued", "retry"]
    assert "unreadable event" in route.lines[0]["reason"]


def test_test_events_and_objects_that_are_not_audio_are_consumed_quietly(route):
    bucket = route.aws.bucket
    notes = route.put("incoming/support/notes.txt", b"call notes")
    loose = route.put("incoming/loose.wav", silent_wav(1.0))
    event = route.sqs_event(
        json.dumps(TEST_EVENT),  # S3 sends one when the notification is configured
        json.dumps(s3_notification(bucket, "incoming/support/notes.txt", notes)),
        json.dumps(s3_notification(bucket, "incoming/loose.wav", loose)),
    )
    assert route.handle(event) == []
    assert route.jobs() == []
    assert route.statuses() == ["ignored", "ignored"]  # nothing logged for the test event
    assert "not audio" in route.lines[0]["reason"]
    assert "no batch folder" in route.lines[1]["reason"]
    assert route.keys_under("inputs/") == []


def test_a_vanished_object_fails_alone_with_an_error_record(route):
    event = route.sqs_event(
        json.dumps(s3_notification(route.aws.bucket, "incoming/support/gone.wav", 10))
    )
    assert route.handle(event) == []  # a permanent failure is an end, not a retry
    assert route.statuses() == ["failed"]
    record = json.loads(
        route.s3.get_object(Bucket=route.aws.bucket, Key=keys.error_key("support", "gone.wav"))[
            "Body"
        ].read()
    )
    assert "deleted before it could be ingested" in record["reason"]


def test_external_bucket_events_from_eventbridge_and_own_incoming_both_ingest(aws):
    external = f"{aws.bucket}-telephony"
    route = Route(
        aws,
        {
            "ingestPrefixes": json.dumps(PREFIXES),
            "externalBucket": external,
            "externalPrefix": "calls/",
        },
    )
    route.s3.create_bucket(Bucket=external)
    size = route.put("calls/support/2025-01-01/c.wav", silent_wav(1.0), bucket=external)
    outside = route.put("other/support/d.wav", silent_wav(1.0), bucket=external)
    own = route.put("incoming/weekly/e.wav", silent_wav(1.0))
    event = route.sqs_event(
        json.dumps(eventbridge_event(external, "calls/support/2025-01-01/c.wav", size)),
        json.dumps(eventbridge_event(external, "other/support/d.wav", outside)),
        json.dumps(s3_notification(aws.bucket, "incoming/weekly/e.wav", own)),
    )
    assert route.handle(event) == []
    assert route.statuses() == ["queued", "ignored", "queued"]
    jobs = {(job["batch"], job["path"]): job for job in route.jobs()}
    assert set(jobs) == {("support", "2025-01-01/c.wav"), ("weekly", "e.wav")}
    assert jobs["support", "2025-01-01/c.wav"]["options"]["channels"] == "split"
    info = json.loads(
        route.s3.get_object(Bucket=aws.bucket, Key=keys.batch_info_key("support"))["Body"].read()
    )
    assert info["source"] == "ingest:calls/"


def test_a_record_waiting_for_another_ingest_comes_back_when_the_claim_expires(route):
    import hashlib

    audio = silent_wav(1.0)
    size = route.put("incoming/support/a.wav", audio)
    # Another delivery of the same object claimed the path a moment ago and is still at it.
    route.s3.put_object(
        Bucket=route.aws.bucket,
        Key="inputs/support/a.wav",
        Body=audio,
        Metadata={"sha256": hashlib.sha256(audio).hexdigest()},
    )
    event = route.sqs_event(
        json.dumps(s3_notification(route.aws.bucket, "incoming/support/a.wav", size))
    )
    config = route.config(WHISPERQ_INGEST_CLAIM_SECONDS="2")

    assert route.handle(event, config) == [event["Records"][0]["messageId"]]
    assert route.statuses() == ["retry"]
    assert route.jobs() == []
    # Back on the ingest queue within seconds, not after its 720 s visibility timeout.
    again = route.sqs.receive_message(QueueUrl=route.ingest_queue, WaitTimeSeconds=8)
    assert again.get("Messages"), "the waiting record did not come back early"
    # By now the claim has expired: the retry takes it over.
    redelivered = {**event["Records"][0], "receiptHandle": again["Messages"][0]["ReceiptHandle"]}
    assert route.handle({"Records": [redelivered]}, config) == []
    assert route.statuses()[-1] == "queued"
    assert len(route.jobs()) == 1


def test_records_left_when_time_runs_short_are_retried_not_lost(route):
    size = route.put("incoming/support/a.wav", silent_wav(1.0))
    body = json.dumps(s3_notification(route.aws.bucket, "incoming/support/a.wav", size))
    event = route.sqs_event(body)
    assert route.handle(event, remaining_ms=lambda: 5_000) == [event["Records"][0]["messageId"]]
    assert route.jobs() == []


def test_the_entry_point_reads_the_environment_the_stack_gives_it(route, monkeypatch):
    for name, value in route.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", route.aws.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(handler, "_state", None)
    size = route.put("incoming/support/a.wav", silent_wav(1.0))
    event = route.sqs_event(
        json.dumps(s3_notification(route.aws.bucket, "incoming/support/a.wav", size))
    )

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 100_000

    assert handler.handler(event, Context()) == {"batchItemFailures": []}
    (job,) = route.jobs()
    assert (job["batch"], job["path"], job["options"]["channels"]) == ("support", "a.wav", "split")


def test_the_schedule_closes_a_day_whose_files_are_all_settled(aws, monkeypatch):
    """whisperq:ingestBatch '{folder}-{date}': the stack's schedule invokes the entry point
    with a "Scheduled Event"; a daily batch whose day is over and whose files all have a
    result or an error record gets its done.json (and its event on the bus), once."""
    raw = {"ingestBatch": "{folder}-{date}"}
    route = Route(aws, raw)
    route.env = lambda_environment(
        parse_config(raw).ingest, aws.bucket, aws.queue_url, route.ingest_queue, "default"
    )
    for name, value in route.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(handler, "_state", None)
    # deleted before it was read: its batch is its event's day (2025-01-01), failed alone
    gone = route.sqs_event(json.dumps(s3_notification(aws.bucket, "incoming/support/x.wav", 5)))

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 100_000

    assert handler.handler(gone, Context()) == {"batchItemFailures": []}
    assert len(route.keys_under("open/")) == 1
    schedule = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": "2025-01-03T00:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:{ACCOUNT}:rule/whisperq-ingest-close-days"],
        "detail": {},
    }
    assert handler.is_schedule(schedule) and not handler.is_schedule(gone)
    assert handler.handler(schedule, Context()) == {"closed": {"support-2025-01-01": "written"}}
    done = route.s3.get_object(Bucket=aws.bucket, Key=keys.done_key("support-2025-01-01"))
    assert json.loads(done["Body"].read())["failed_paths"] == ["x.wav"]
    assert route.keys_under("open/") == []
    assert handler.handler(schedule, Context()) == {"closed": {}}


# Issue 26, item 7: object keys arrive URL-encoded in both kinds of event ('+' for a space,
# %XX for the rest, a literal '+' as %2B): decoded once, a key with a space or a '+' is the
# object's own; decoded twice, or not at all, it reads as missing and dead-letters.
AWKWARD_PATHS = [
    "Q1 2025/call 1.wav",  # spaces: '+' on the wire
    "c++ line+1.wav",  # literal '+': %2B on the wire, never a space
    "100% done/50%25.wav",  # '%', and a name that looks encoded: decoded once only
    "Café — Zoë/Ünïcödé 通话.wav",  # non-ASCII: UTF-8 %XX
]


@pytest.mark.parametrize("source", ["s3-notification", "eventbridge"])
def test_keys_with_spaces_plus_percent_and_non_ascii_are_the_objects_own(aws, source):
    from whisperq.batches import ingest

    external = f"{aws.bucket}-telephony"
    route = Route(aws, {"externalBucket": external, "externalPrefix": "calls/"})
    route.s3.create_bucket(Bucket=external)
    bodies, refs = [], []
    for path in AWKWARD_PATHS:
        if source == "eventbridge":
            key, bucket = f"calls/support/{path}", external
            event = eventbridge_event(bucket, key, route.put(key, silent_wav(1.0), bucket))
        else:
            key, bucket = f"incoming/support/{path}", aws.bucket
            event = s3_notification(bucket, key, route.put(key, silent_wav(1.0)))
        assert path not in json.dumps(event, ensure_ascii=False)  # encoded on the wire
        refs += ingest.objects_in_event(event)
        bodies.append(json.dumps(event))
    # the parser gives the keys the objects were stored under, each decoded exactly once
    prefix = "calls/support/" if source == "eventbridge" else "incoming/support/"
    assert [ref.key for ref in refs] == [prefix + path for path in AWKWARD_PATHS]

    assert route.handle(route.sqs_event(*bodies)) == []
    assert route.statuses() == ["queued"] * len(AWKWARD_PATHS)
    jobs = {job["path"]: job for job in route.jobs()}
    assert set(jobs) == set(AWKWARD_PATHS)
    for path, job in jobs.items():
        assert job["batch"] == "support" and job["input_key"] == f"inputs/support/{path}"
        stored = route.s3.get_object(Bucket=aws.bucket, Key=job["input_key"])["Body"].read()
        assert stored == silent_wav(1.0)


def test_a_key_is_decoded_once_not_twice():
    """'%2520' on the wire is a key holding '%20' (not a space); '%2B' a '+' (not a space)."""
    from whisperq.batches import ingest

    notification = s3_notification("b", "incoming/x/a%20b+c.wav", 1)
    assert notification["Records"][0]["s3"]["object"]["key"] == "incoming/x/a%2520b%2Bc.wav"
    bridged = eventbridge_event("b", "incoming/x/a%20b+c.wav", 1)
    assert bridged["detail"]["object"]["key"] == "incoming/x/a%2520b%2Bc.wav"
    for event in (notification, bridged):
        (ref,) = ingest.objects_in_event(event)
        assert ref.key == "incoming/x/a%20b+c.wav"
