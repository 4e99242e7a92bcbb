"""The reliability parts one by one, against moto server and a fake IMDS on 127.0.0.1:
visibility heartbeat, kombu's message internals, unstarted jobs handed back on shutdown,
spot notices, scale-in protection."""

import multiprocessing
import os
import signal
import time
import uuid
from collections import Counter

import pytest
from celery.worker import state
from kombu import Connection

from whisperq import local_stack, storage
from whisperq.celery_app import broker_url, transport_options
from whisperq.heartbeat import MessageHandle, VisibilityHeartbeat, hand_back, message_handle
from whisperq.instance import Imds, ScaleInProtection, SpotWatcher
from whisperq.worker import StartGate, UnstartedJobs, start_key

from helpers import FakeImds, create_group


def receive(sqs, url, wait=0):
    reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=wait)
    return reply.get("Messages", [])


@pytest.fixture
def short_queue(aws):
    """The test's queue with a 2-second visibility timeout and one message on it."""
    sqs = storage.client(aws, "sqs")
    sqs.set_queue_attributes(QueueUrl=aws.queue_url, Attributes={"VisibilityTimeout": "2"})
    sqs.send_message(QueueUrl=aws.queue_url, MessageBody="job")
    return sqs, aws.queue_url


def test_without_a_heartbeat_the_message_comes_back_after_the_timeout(short_queue):
    sqs, url = short_queue
    assert len(receive(sqs, url)) == 1
    assert receive(sqs, url) == []
    time.sleep(2.5)
    assert len(receive(sqs, url)) == 1  # what the heartbeat must prevent


def test_the_heartbeat_keeps_a_running_job_invisible_then_hands_it_back(short_queue):
    sqs, url = short_queue
    (message,) = receive(sqs, url)
    handle = MessageHandle(url, message["ReceiptHandle"])
    with VisibilityHeartbeat(sqs, handle, timeout=2) as heartbeat:
        for _ in range(5):  # 5 s: two and a half timeouts
            time.sleep(1)
            assert receive(sqs, url) == []
        assert heartbeat.beats >= 6  # every third of the timeout
        assert heartbeat.hand_back()
    (again,) = receive(sqs, url, wait=1)  # at once, not after the timeout
    assert again["Body"] == "job"


def test_kombu_still_exposes_receipt_handle_and_queue_url(aws):
    """kombu internals the heartbeat relies on (pinned in pyproject.toml): this fails if
    a kombu upgrade moves delivery_tag or delivery_info['sqs_queue']."""
    with Connection(broker_url(aws), transport_options=transport_options(aws)) as connection:
        queue = connection.SimpleQueue(aws.queue_name)
        queue.put({"hello": "sqs"}, serializer="json")
        message = queue.get(timeout=10)
        handle = message_handle(message.properties)
        assert handle is not None
        assert handle.queue_url == aws.queue_url
        assert handle.receive_count == 1
        sqs = storage.client(aws, "sqs")
        sqs.change_message_visibility(
            QueueUrl=handle.queue_url, ReceiptHandle=handle.receipt_handle, VisibilityTimeout=0
        )  # the handle really is this message's receipt handle
        message.ack()
        queue.close()


def test_message_handle_tolerates_other_transports():
    assert message_handle(None) is None
    assert message_handle({"delivery_tag": 7, "delivery_info": {}}) is None


# --- jobs received but not started, on shutdown ------------------------------------------


def in_forked_process(action):
    """``action()``'s result, run in a forked process (as Celery's pool runs jobs)."""
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=lambda: writer.send(action()))
    process.start()
    try:
        assert reader.poll(10), "the forked process did not answer"
        return reader.recv()
    finally:
        process.join(10)


def test_the_start_gate_lets_a_job_start_or_stops_it_never_both():
    gate = StartGate()  # made before the fork, as create_worker_app makes it
    first, second = b"a" * 16, b"b" * 16
    assert in_forked_process(lambda: gate.start(first)) is True  # runs; recorded
    assert gate.stop() == {first}  # the main process sees what the pool started
    assert in_forked_process(lambda: gate.start(second)) is False  # stopping: declined
    assert gate.stop() == {first}  # again: the same answer


def test_the_start_gate_keeps_the_latest_starts():
    gate = StartGate()
    keys = [index.to_bytes(16, "big") for index in range(StartGate.SLOTS + 3)]
    for key in keys:
        assert gate.start(key)
    assert gate.stop() == set(keys[3:])


def test_a_start_gate_whose_lock_died_hands_nothing_back_and_starts_nothing(monkeypatch):
    monkeypatch.setattr(StartGate, "LOCK_TIMEOUT", 0.2)
    gate = StartGate()
    context = multiprocessing.get_context("fork")
    holder = context.Process(target=lambda: (gate._lock.acquire(), time.sleep(60)))
    holder.start()
    try:
        time.sleep(0.5)
        os.kill(holder.pid, signal.SIGKILL)  # killed while it held the lock
        holder.join(10)
        assert gate.stop() is None  # cannot tell what started: hand nothing back...
        assert in_forked_process(lambda: gate.start(b"c" * 16)) is False  # ...start nothing
    finally:
        if holder.is_alive():
            holder.kill()


class Received:
    """What UnstartedJobs reads of a Celery request in the worker's main process."""

    name = "whisperq.transcribe"

    def __init__(self, message, time_start=None):
        self.id = str(uuid.uuid4())
        self.message = message
        self.time_start = time_start
        self.acknowledged = False

    @property
    def key(self):
        return start_key(self.id, message_handle(self.message.properties))


def test_unstarted_jobs_go_back_at_once_and_celery_never_touches_them_again(aws):
    sqs = storage.client(aws, "sqs")
    sqs.set_queue_attributes(QueueUrl=aws.queue_url, Attributes={"VisibilityTimeout": "120"})
    with Connection(broker_url(aws), transport_options=transport_options(aws)) as connection:
        queue = connection.SimpleQueue(aws.queue_name)
        for name in ("unstarted", "started", "running"):
            queue.put({"job": name}, serializer="json")
        messages = {}
        for _ in range(3):
            message = queue.get(timeout=10)
            messages[message.payload["job"]] = message
        unstarted = Received(messages["unstarted"])
        started = Received(messages["started"])  # by a pool process that has not said so
        running = Received(messages["running"], time_start=time.time())
        gate = StartGate()
        assert gate.start(started.key)
        requests = [unstarted, started, running]
        state.reserved_requests.update(requests)
        try:
            jobs = UnstartedJobs(aws, gate)
            assert jobs.hand_back() == 1
            assert jobs.hand_back() == 0  # again, as worker_shutting_down does: nothing

            reply = sqs.receive_message(QueueUrl=aws.queue_url, WaitTimeSeconds=1)
            (back,) = reply["Messages"]  # at once, not after the 120 s timeout
            sqs_message = unstarted.message.delivery_info["sqs_message"]
            assert back["MessageId"] == sqs_message["MessageId"]

            assert unstarted.acknowledged  # Celery will not ack (delete) or reject it
            assert unstarted not in state.reserved_requests
            qos = unstarted.message.channel.qos
            qos._flush()
            assert unstarted.message.delivery_tag not in qos._delivered  # nor restore it
            assert not started.acknowledged and not running.acknowledged
            assert running.message.delivery_tag in qos._delivered
            assert gate.start(b"d" * 16) is False  # and no pool process starts a job now
        finally:
            for request in requests:
                state.reserved_requests.discard(request)
            queue.close()


def test_hand_back_makes_a_message_visible_at_once(short_queue):
    sqs, url = short_queue
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "120"})
    (message,) = receive(sqs, url)
    assert hand_back(sqs, MessageHandle(url, message["ReceiptHandle"]))
    assert len(receive(sqs, url, wait=1)) == 1
    assert not hand_back(sqs, MessageHandle(url, "not-a-receipt-handle"))  # logged, no raise


# --- IMDS ---------------------------------------------------------------------------------


@pytest.fixture
def imds():
    with FakeImds() as fake:
        yield fake


def test_imds_v2_token_then_metadata(imds):
    client = Imds(imds.endpoint)
    assert client.available()
    assert client.instance_id() == "i-0123456789abcdef0"
    assert client.spot_notice() is None
    assert imds.requests["token"] == 1  # the token is reused


def test_imds_is_unavailable_off_ec2():
    assert not Imds(f"http://127.0.0.1:{local_stack.free_port()}", timeout=0.5).available()


def test_the_spot_watcher_calls_back_once_when_a_notice_appears(imds):
    notices = []
    watcher = SpotWatcher(Imds(imds.endpoint), interval=0.1, on_notice=notices.append).start()
    try:
        time.sleep(0.5)
        assert notices == []
        imds.notice = {"action": "terminate", "time": "2026-11-22T00:02:00Z"}
        deadline = time.monotonic() + 5
        while not notices and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert notices == [{"action": "terminate", "time": "2026-11-22T00:02:00Z"}]
    finally:
        watcher.stop()


# --- scale-in protection ---------------------------------------------------------------------


@pytest.fixture
def group(aws):
    """An Auto Scaling group with one instance, in moto server."""
    autoscaling = storage.client(aws, "autoscaling")
    name = f"{aws.bucket}-asg"
    (instance_id,) = create_group(autoscaling, name, desired=1, max_size=2)
    return autoscaling, name, instance_id


def protected(autoscaling, instance_id):
    (item,) = autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])[
        "AutoScalingInstances"
    ]
    return item["ProtectedFromScaleIn"]


def test_scale_in_protection_follows_work_and_calls_only_on_change(group):
    autoscaling, name, instance_id = group
    calls = Counter()
    autoscaling.meta.events.register(
        "before-call.autoscaling.SetInstanceProtection", lambda **_: calls.update(["set"])
    )
    protection = ScaleInProtection(autoscaling, name, instance_id)
    protection.set(True)
    protection.set(True)
    assert protected(autoscaling, instance_id) is True
    protection.set(False)
    assert protected(autoscaling, instance_id) is False
    assert calls["set"] == 2
