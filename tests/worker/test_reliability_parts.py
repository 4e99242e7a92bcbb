"""The reliability parts one by one, against moto server and a fake IMDS on 127.0.0.1:
visibility heartbeat, kombu's message internals, unstarted jobs handed back on shutdown,
spot notices, the group terminating the instance (its lifecycle hook), scale-in
protection, marking the instance unhealthy.

Nothing here depends on the machine's speed: "nothing happened" is asserted only after an
event that would have come after it (a heartbeat, an IMDS answer, a watcher that stopped
looking), never after a fixed sleep, and nothing asserts on elapsed time."""

import multiprocessing
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from botocore.stub import Stubber
from celery.worker import state
from celery.worker.worker import WorkController
from kombu import Connection
from typer.testing import CliRunner

from whisperq import storage
from whisperq.batches.submit import submit
from whisperq.celery_app import broker_url, decode_job_message, transport_options
from whisperq.cli import app
from whisperq.settings import Settings
from whisperq.stacks import local as local_stack
from whisperq.worker.app import create_worker_app
from whisperq.worker.heartbeat import MessageHandle, VisibilityHeartbeat, hand_back, message_handle
from whisperq.worker.instance import Imds, LifecycleWatcher, ScaleInProtection, SpotWatcher
from whisperq.worker.instance_guard import InstanceGuard
from whisperq.worker.shutdown import StartGate, UnstartedJobs, start_key

from helpers import FakeImds, JobHolds, create_group, wait_for, words


def receive(sqs, url, wait=0):
    reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=wait)
    return reply.get("Messages", [])


TIMEOUT = 3  # the short queue's visibility timeout, in seconds


@pytest.fixture
def short_queue(aws):
    """The test's queue with a 3-second visibility timeout and one message on it."""
    sqs = storage.client(aws, "sqs")
    attributes = {"VisibilityTimeout": str(TIMEOUT)}
    sqs.set_queue_attributes(QueueUrl=aws.queue_url, Attributes=attributes)
    sqs.send_message(QueueUrl=aws.queue_url, MessageBody="job")
    return sqs, aws.queue_url


def test_without_a_heartbeat_the_message_comes_back_after_the_timeout(short_queue):
    """What the heartbeat must prevent: a received message, invisible at first, is given
    out again once its timeout has passed, with nobody doing anything."""
    sqs, url = short_queue
    (first,) = receive(sqs, url)
    assert receive(sqs, url) == []
    (again,) = wait_for(lambda: receive(sqs, url, wait=1), 60, "the message back")
    assert again["MessageId"] == first["MessageId"]


def test_the_heartbeat_keeps_a_running_job_invisible_then_hands_it_back(short_queue):
    """While the heartbeat runs, the message stays invisible across two timeouts and
    more; handed back, it is visible at once."""
    sqs, url = short_queue
    (message,) = receive(sqs, url)
    handle = MessageHandle(url, message["ReceiptHandle"])
    with VisibilityHeartbeat(sqs, handle, timeout=TIMEOUT) as heartbeat:
        # a beat comes a third of the timeout after the last, at the earliest: by the
        # sixth, the message was received two timeouts ago
        for beat in range(1, 7):
            wait_for(lambda n=beat: heartbeat.beats >= n, 60, f"heartbeat {beat}")
            assert receive(sqs, url) == []
        assert heartbeat.hand_back()
    # at once: the last beat made it invisible for another timeout
    (again,) = receive(sqs, url, wait=1)
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
    """A process killed while it held the gate's lock: the main process hands nothing
    back and no pool process starts a job."""
    monkeypatch.setattr(StartGate, "LOCK_TIMEOUT", 0.2)
    gate = StartGate()
    context = multiprocessing.get_context("fork")
    locked = context.Event()
    holder = context.Process(target=lambda: (gate._lock.acquire(), locked.set(), time.sleep(60)))
    holder.start()
    try:
        assert locked.wait(30), "the process did not take the lock"
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


SPOT = "/latest/meta-data/spot/instance-action"
LIFECYCLE = "/latest/meta-data/autoscaling/target-lifecycle-state"


@pytest.fixture
def imds():
    with FakeImds() as fake:
        yield fake


def stopped_looking(watcher) -> bool:
    """Wait until a watcher's thread has ended: after that, it can call nothing back."""
    watcher._thread.join(30)
    return not watcher._thread.is_alive()


def test_imds_v2_token_then_metadata(imds):
    client = Imds(imds.endpoint)
    assert client.available()
    assert client.instance_id() == "i-0123456789abcdef0"
    assert client.spot_notice() is None
    assert imds.requests["token"] == 1  # the token is reused


def test_imds_is_unavailable_off_ec2():
    assert not Imds(f"http://127.0.0.1:{local_stack.free_port()}", timeout=0.5).available()


def test_the_spot_watcher_calls_back_once_when_a_notice_appears(imds):
    """No call while IMDS says there is no notice; one when a notice appears, and no more
    (the watcher stops looking)."""
    notices = []
    watcher = SpotWatcher(Imds(imds.endpoint), interval=0.1, on_notice=notices.append).start()
    try:
        wait_for(lambda: imds.answered[(SPOT, "404")] >= 2, 30, "two looks without a notice")
        assert notices == []
        imds.notice = {"action": "terminate", "time": "2026-11-22T00:02:00Z"}
        wait_for(lambda: notices, 30, "the notice")
        assert stopped_looking(watcher)
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


# --- the group terminating the instance: its termination lifecycle hook ---------------------

HOOK = "whisperq-terminating"


def test_imds_says_where_the_group_takes_the_instance(imds):
    client = Imds(imds.endpoint)
    assert client.target_lifecycle_state() is None  # not in a group: 404
    imds.lifecycle_state = "InService"
    assert client.target_lifecycle_state() == "InService"
    imds.lifecycle_state = "Terminated"
    assert client.target_lifecycle_state() == "Terminated"
    assert imds.requests["/latest/meta-data/autoscaling/target-lifecycle-state"] == 3


def test_the_lifecycle_watcher_calls_back_once_when_the_group_terminates(imds):
    """No call while IMDS says InService; one when it says Terminated, and no more (the
    watcher stops looking)."""
    imds.lifecycle_state = "InService"
    calls = []
    watcher = LifecycleWatcher(Imds(imds.endpoint), 0.1, lambda: calls.append("terminated"))
    watcher.start()
    try:
        wait_for(lambda: imds.answered[(LIFECYCLE, "InService")] >= 2, 30, "two looks")
        assert calls == [] and not watcher.terminated
        imds.lifecycle_state = "Terminated"
        wait_for(lambda: calls, 30, "the watcher to see Terminated")
        assert stopped_looking(watcher)
        assert calls == ["terminated"] and watcher.terminated
    finally:
        watcher.stop()


def test_the_lifecycle_watcher_looks_at_once(imds):
    """A worker restarted on an instance being terminated stops before taking a job."""
    imds.lifecycle_state = "Terminated"
    calls = []
    watcher = LifecycleWatcher(Imds(imds.endpoint), 60, lambda: calls.append(1)).start()
    try:
        wait_for(lambda: calls, 30, "the first look")
    finally:
        watcher.stop()


@pytest.fixture
def signals_to_self(monkeypatch):
    """The signals the worker sends itself (recorded, not delivered)."""
    sent = []
    real_kill = os.kill

    def kill(pid, sig):
        if pid == os.getpid():
            sent.append(sig)
        else:
            real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", kill)
    return sent


def guard_for(settings, imds, name, **changes):
    """An InstanceGuard as the worker makes one, for a fake app, watching ``imds``."""
    settings = settings.model_copy(
        update={
            "autoscaling_group": name,
            "lifecycle_hook": HOOK,
            "imds_endpoint": imds.endpoint,
            "spot_watch": "off",
            "spot_poll_seconds": 0.1,
            "shutdown_grace_seconds": 60,
            "spot_grace_seconds": 7,
            **changes,
        }
    )
    fake_app = SimpleNamespace(conf=SimpleNamespace(worker_soft_shutdown_timeout=60))
    return InstanceGuard(fake_app, settings)


def expect_completion(guard, instance_id, group_name):
    """CompleteLifecycleAction on a botocore Stubber: moto server does not implement it
    (it answers 500), so the call is checked against the service model instead."""
    client = storage.client(guard.settings, "autoscaling")
    stubber = Stubber(client)
    stubber.add_response(
        "complete_lifecycle_action",
        {},
        expected_params={
            "LifecycleHookName": HOOK,
            "AutoScalingGroupName": group_name,
            "LifecycleActionResult": "CONTINUE",
            "InstanceId": instance_id,
        },
    )
    guard.autoscaling = client
    return stubber


def test_the_group_terminating_the_instance_stops_the_worker_as_a_spot_notice_does(
    aws, group, imds, signals_to_self
):
    """InService: nothing. Terminated: one SIGQUIT with the spot grace, never a second
    (not even for a spot notice after it); once stopped, the hook is completed once."""
    _, name, instance_id = group
    imds.instance_id = instance_id  # moto's instance, as IMDS would say on it
    imds.lifecycle_state = "InService"
    guard = guard_for(aws, imds, name)
    guard.start()
    try:
        assert guard.instance_id == instance_id and guard.lifecycle is not None
        wait_for(lambda: imds.answered[(LIFECYCLE, "InService")] >= 2, 30, "two looks")
        assert signals_to_self == []
        imds.lifecycle_state = "Terminated"
        wait_for(lambda: signals_to_self, 30, "the worker to stop itself")
        # Celery's cold shutdown (SIGQUIT) after a soft phase with the spot grace: no new
        # jobs; the running one finishes within the grace or goes back; unstarted go back
        assert stopped_looking(guard.lifecycle)  # no other signal can come from it now
        assert signals_to_self == [signal.SIGQUIT]
        assert guard.app.conf.worker_soft_shutdown_timeout == 7
        guard.on_spot_notice({"action": "terminate"})  # the notice too: no second signal
        assert signals_to_self == [signal.SIGQUIT]  # a second SIGQUIT would cut the grace
    finally:
        guard.stop()  # worker_shutting_down

    # Once the worker has stopped (its jobs done or handed back): the hook, once.
    stubber = expect_completion(guard, instance_id, name)
    with stubber:
        assert guard.finish() is True
        assert guard.finish() is True  # done already: no second call (the stub has none)
    stubber.assert_no_pending_responses()


def test_a_termination_that_begins_during_a_shutdown_is_completed_too(
    aws, group, imds, signals_to_self
):
    """The worker stops first (InService then); the group starts terminating the
    instance meanwhile: finish() asks IMDS once more and completes the hook."""
    _, name, instance_id = group
    imds.instance_id = instance_id
    imds.lifecycle_state = "InService"
    guard = guard_for(aws, imds, name, spot_poll_seconds=30)
    guard.start()
    wait_for(lambda: imds.answered[(LIFECYCLE, "InService")], 30, "the first look")
    guard.stop()  # SIGTERM (systemd), or a spot notice: the worker stops first...
    imds.lifecycle_state = "Terminated"  # ...then the group terminates the instance
    looks = imds.requests[LIFECYCLE]  # the next look is 30 s away
    stubber = expect_completion(guard, instance_id, name)
    with stubber:
        assert guard.finish() is True
    stubber.assert_no_pending_responses()
    assert imds.requests[LIFECYCLE] == looks + 1  # IMDS asked once more as the worker stopped
    assert signals_to_self == []  # the worker was stopping already


def test_a_worker_the_group_keeps_completes_nothing(aws, group, imds, signals_to_self, caplog):
    """The worker stops while the group keeps its instance (IMDS, asked once more, says
    InService): no CompleteLifecycleAction is even tried. finish() swallows a failed call,
    so the calls are recorded as they are made, not read from its answer."""
    _, name, instance_id = group
    imds.instance_id = instance_id
    imds.lifecycle_state = "InService"
    guard = guard_for(aws, imds, name, spot_poll_seconds=30)
    guard.start()
    wait_for(lambda: imds.answered[(LIFECYCLE, "InService")], 30, "the first look")
    guard.stop()
    looks = imds.requests[LIFECYCLE]  # the next look is 30 s away
    client = storage.client(guard.settings, "autoscaling")
    tried = []
    client.meta.events.register(
        "provide-client-params.autoscaling", lambda model, **_: tried.append(model.name)
    )
    with Stubber(client):  # nothing stubbed: a call would fail, after being recorded
        guard.autoscaling = client
        assert guard.finish() is False
    assert tried == []
    assert imds.requests[LIFECYCLE] == looks + 1  # it did ask where the group takes it
    assert "could not complete lifecycle hook" not in caplog.text
    assert signals_to_self == []


def test_a_lifecycle_action_that_cannot_be_completed_is_logged(
    aws, group, imds, signals_to_self, caplog
):
    _, name, instance_id = group
    imds.instance_id = instance_id
    imds.lifecycle_state = "Terminated"
    guard = guard_for(aws, imds, name)
    guard.start()
    wait_for(lambda: signals_to_self, 30, "the worker to stop itself")
    guard.stop()
    client = storage.client(guard.settings, "autoscaling")
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "complete_lifecycle_action",
            "ValidationError",
            f"No active Lifecycle Action found with instance ID {instance_id}",
        )
        guard.autoscaling = client
        assert guard.finish() is False  # the hook's heartbeat runs out; the group goes on
    assert f"could not complete lifecycle hook {HOOK}" in caplog.text


def test_without_a_hook_or_a_group_nothing_is_watched(aws, group, imds, caplog):
    _, name, _ = group
    no_hook = guard_for(aws, imds, name, lifecycle_hook=None)
    no_hook.start()
    no_hook.stop()
    assert no_hook.lifecycle is None and no_hook.finish() is False
    no_group = guard_for(aws, imds, None)
    no_group.start()
    assert no_group.lifecycle is None and no_group.finish() is False
    assert "a lifecycle hook but no Auto Scaling group" in caplog.text


def test_the_worker_completes_the_hook_once_it_has_stopped(aws, monkeypatch):
    """create_worker_app's Worker: finish() runs when Celery's start() returns -- every
    shutdown, warm or cold, ends inside it -- and also when it raises."""
    order = []
    monkeypatch.setattr(WorkController, "start", lambda self: order.append("stopped"))
    monkeypatch.setattr(InstanceGuard, "finish", lambda self: order.append("finish"))
    worker_class = create_worker_app(aws).Worker
    worker_class.start(worker_class.__new__(worker_class))
    assert order == ["stopped", "finish"]

    def broken(self):
        raise RuntimeError("broker gone")

    monkeypatch.setattr(WorkController, "start", broken)
    with pytest.raises(RuntimeError):
        worker_class.start(worker_class.__new__(worker_class))
    assert order == ["stopped", "finish", "finish"]


@pytest.mark.e2e
def test_a_worker_whose_instance_the_group_terminates_hands_its_job_back(
    isolated_settings, monkeypatch, make_speech, tmp_path
):
    """The real thing: a worker process of the local stack (its instance in moto's group),
    a job running (held past the 1 s grace), the fake IMDS says Terminated: the worker
    stops as on a spot notice, the job goes back and another worker finishes it; then it
    completes the hook (moto answers that call with a 500, so the log shows the try)."""
    call = make_speech(
        tmp_path / "in" / "call.wav",
        "Thank you for calling customer support. How can I help you today?",
    )
    holds = JobHolds(tmp_path / "holds", monkeypatch)
    with FakeImds() as imds:
        imds.lifecycle_state = "InService"
        for name, value in {
            "LIFECYCLE_HOOK": HOOK,
            "IMDS_ENDPOINT": imds.endpoint,
            "SPOT_WATCH": "off",
            "SPOT_POLL_SECONDS": "0.5",
            "SPOT_GRACE_SECONDS": "1",
            "SHUTDOWN_GRACE_SECONDS": "60",
        }.items():
            monkeypatch.setenv(f"WHISPERQ_{name}", value)
        try:
            local_stack.up(Settings(), workers=1, visibility_timeout=120)
            stack = Settings()
            (worker,) = worker_processes(stack)
            submit(stack, [str(call)], batch="terminated")
            log = Path(worker.log)
            holds.started("call.wav")
            imds.lifecycle_state = "Terminated"
            wait_for(lambda: not local_stack.is_alive(worker), 60, "the worker to stop")
            text = log.read_text()
            assert "the Auto Scaling group is terminating this instance: stopping, grace 1s" in (
                text
            )
            assert f"could not complete lifecycle hook {HOOK}" in text  # tried, after
            assert text.index("stopping, grace") < text.index("could not complete")
            assert "succeeded in" not in text
            sqs = storage.client(stack, "sqs")
            # handed back (Celery restores it with the 2 s SQS wait time as its visibility),
            # not left to the 120 s timeout
            (message,) = wait_for(
                lambda: receive(sqs, stack.queue_url, wait=1), 60, "the job back on the queue"
            )
            assert decode_job_message(message["Body"]).path == "call.wav"
            sqs.change_message_visibility(
                QueueUrl=stack.queue_url,
                ReceiptHandle=message["ReceiptHandle"],
                VisibilityTimeout=0,
            )

            # nothing lost: a worker the group keeps finishes it
            holds.release("call.wav")
            monkeypatch.delenv("WHISPERQ_LIFECYCLE_HOOK")
            local_stack.start_worker(stack)
            s3 = storage.client(stack, "s3")
            key = "results/terminated/call.wav.json"
            result = wait_for(
                lambda: storage.get_json(s3, stack.bucket, key), 120, "the job redone"
            )
            assert {"customer", "support"} <= words(result["text"]), result["text"]
        finally:
            settings = Settings()
            state_now = local_stack.read_state(settings)
            local_stack.down(settings)
            for process in local_stack.managed_processes(state_now or {}):
                if local_stack.is_alive(process):
                    os.killpg(process.pid, signal.SIGKILL)


def worker_processes(settings):
    found = local_stack.read_state(settings) or {}
    return [p for p in local_stack.managed_processes(found) if p.name.startswith("worker")]


# --- marking the instance unhealthy ---------------------------------------------------------

cli = CliRunner()


def health(autoscaling, instance_id):
    (item,) = autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])[
        "AutoScalingInstances"
    ]
    return item["HealthStatus"]


def test_mark_unhealthy_has_the_group_replace_this_instance(cli_env, imds, monkeypatch):
    autoscaling = storage.client(cli_env, "autoscaling")
    name = f"{cli_env.bucket}-asg"
    mine, other = create_group(autoscaling, name, desired=2)
    imds.instance_id = mine
    monkeypatch.setenv("WHISPERQ_AUTOSCALING_GROUP", name)
    monkeypatch.setenv("WHISPERQ_IMDS_ENDPOINT", imds.endpoint)
    sent = []
    autoscaling_client = storage.client

    def recording_client(settings, service):
        client = autoscaling_client(settings, service)
        client.meta.events.register(
            "provide-client-params.autoscaling.SetInstanceHealth",
            lambda params, **_: sent.append(dict(params)),
        )
        return client

    monkeypatch.setattr(storage, "client", recording_client)

    result = cli.invoke(app, ["mark-unhealthy", "--reason", "the worker hit its start limit"])

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"marked {mine} unhealthy in Auto Scaling group {name} (reason: the worker hit its "
        "start limit): the group replaces it"
    )
    assert sent == [
        {"InstanceId": mine, "HealthStatus": "Unhealthy", "ShouldRespectGracePeriod": False}
    ]
    assert health(autoscaling, mine) == "Unhealthy"
    assert health(autoscaling, other) == "Healthy"
    assert imds.requests["/latest/meta-data/instance-id"] == 1


def test_mark_unhealthy_says_why_it_could_not(cli_env, imds, monkeypatch):
    def run(*args):
        result = cli.invoke(app, ["mark-unhealthy", *args])
        return result.exit_code, " ".join(result.output.split())

    code, text = run("--reason", "boot failed")
    assert code == 1
    assert "not marked (reason: boot failed): no Auto Scaling group configured" in text

    monkeypatch.setenv("WHISPERQ_AUTOSCALING_GROUP", "workers")
    monkeypatch.setenv("WHISPERQ_IMDS_ENDPOINT", f"http://127.0.0.1:{local_stack.free_port()}")
    code, text = run()
    assert code == 1
    assert "not marked (reason: not given): cannot read this instance's id from IMDS" in text
    assert "not on EC2?" in text

    monkeypatch.setenv("WHISPERQ_IMDS_ENDPOINT", imds.endpoint)  # an instance moto lacks
    code, text = run("--reason", "x")
    assert code == 1
    assert "could not mark i-0123456789abcdef0 unhealthy in Auto Scaling group workers" in text
    assert "InvalidInstanceID.NotFound" in text

    monkeypatch.setenv("WHISPERQ_SPOT_POLL_SECONDS", "-1")  # an invalid setting: still 1
    code, text = run()
    assert code == 1 and "not marked" in text and "WHISPERQ_SPOT_POLL_SECONDS" in text
