"""The embedded local stack: moto server (S3, SQS, Auto Scaling) on 127.0.0.1 and N worker
processes.

Its state file (``<state_dir>/stack.json``) holds the endpoint, bucket, queue URLs, the
group name and the PIDs it started; while it exists, every whisperq command targets the
local stack (see settings.py). ``down`` stops exactly the processes it started, by PID.

The S3-event route is wired as on AWS: the bucket's object-created events under
``incoming/`` go to an ingest queue (with its own dead-letter queue), and an ingest process
(``whisperq ingest``, started and stopped by PID like the workers) turns each object into a
job, so a file copied into ``s3://whisperq-local/incoming/<batch>/`` with any S3 client is
transcribed with no ``whisperq submit``.

The workers are the fleet: an Auto Scaling group in moto has one instance per worker
process, and each worker is told its instance id, so `whisperq status` shows the workers
as the fleet and a worker's scale-in protection lands on its own instance, as on EC2.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisperq import defaults, storage
from whisperq.errors import LocalStackError
from whisperq.settings import Settings

BUCKET = "whisperq-local"
QUEUE = "whisperq-local"
DEAD_LETTER_QUEUE = "whisperq-local-dlq"
GROUP = "whisperq-local"
# moto's instances need a type. Nominal: the workers run on this machine, their results
# record no type and `whisperq cost` prices them as WHISPERQ_FLEET_INSTANCE_TYPE, whose
# default (the stack's first CPU type) this is.
GROUP_INSTANCE_TYPE = defaults.FLEET_INSTANCE_TYPE
GROUP_IMAGE = "ami-12c6146b"  # one of moto's built-in images
REGION = "us-east-1"
CREDENTIALS = ("local", "local")  # moto accepts any
VISIBILITY_TIMEOUT_S = defaults.VISIBILITY_TIMEOUT_SECONDS  # the stack's, as on AWS
MAX_RECEIVE_COUNT = defaults.MAX_RECEIVE_COUNT
READY_MARK = "whisperq worker ready"  # logged by a pool process once its model is loaded
INGEST_QUEUE = "whisperq-local-ingest"  # the bucket's object-created events (incoming/)
INGEST_DEAD_LETTER_QUEUE = "whisperq-local-ingest-dlq"
INGEST_PREFIX = "incoming/"  # keys.incoming_prefix(): what the notification sends
INGEST_VISIBILITY_TIMEOUT_S = 60  # an event whose ingest failed comes back after this
INGEST_MAX_RECEIVE_COUNT = 5  # then it waits in the ingest dead-letter queue
INGEST_READY_MARK = "whisperq ingest ready"  # logged by `whisperq ingest` once it polls


@dataclass(frozen=True)
class Managed:
    """A process the stack started: its PID and the kernel's start time for that PID,
    so a PID reused by an unrelated process after a reboot is never signalled."""

    name: str
    pid: int
    started: int | None
    log: str
    instance: str | None = None  # a worker's instance in the local group
    # Where this process's lines begin in its log: a restarted process appends to the log
    # of the one it replaces, and its ready mark must be its own.
    log_offset: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "started": self.started,
            "log": self.log,
            "instance": self.instance,
            "log_offset": self.log_offset,
        }


@dataclass(frozen=True)
class UpResult:
    """What `up` did: started a stack, found it running, or restarted processes that had
    died (their names), keeping the data and the logs."""

    state: dict[str, Any]
    started: bool
    restarted: tuple[str, ...] = ()


def default_worker_count(cores: int | None = None) -> int:
    """One worker per 4 cores (each uses all its cores' threads), at least one."""
    return max(1, (cores or os.cpu_count() or 1) // 4)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (Linux); None elsewhere."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_start_time(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None  # field 22 of stat: starttime


def is_alive(process: Managed) -> bool:
    try:
        os.kill(process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat(process.pid)
    if fields is None:
        return True  # no /proc: existence is all we can tell
    if fields[0] == "Z":
        return False  # exited, not yet reaped
    return process.started is None or int(fields[19]) == process.started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_state(settings: Settings) -> dict[str, Any] | None:
    try:
        return json.loads(settings.local_stack_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_stale(settings: Settings) -> bool:
    """True when a state file says the stack is up but its moto server is gone."""
    state = read_state(settings)
    if state is None:
        return False
    servers = [p for p in managed_processes(state) if p.name == "moto"]
    return not servers or not is_alive(servers[0])


def _write_state(settings: Settings, state: dict[str, Any]) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    temporary = settings.local_stack_file.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=2), encoding="utf-8")
    temporary.replace(settings.local_stack_file)  # atomic: readers never see half a file


def managed_processes(state: dict[str, Any]) -> list[Managed]:
    return [Managed(**item) for item in state.get("processes", [])]


def _spawn(
    name: str, command: list[str], log: Path, env: dict[str, str], instance: str | None = None
) -> Managed:
    log.parent.mkdir(parents=True, exist_ok=True)
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as handle:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: down stops its children too
        )
    started = _process_start_time(process.pid)
    return Managed(name, process.pid, started, str(log), instance, log_offset=offset)


def _wait_for_moto(settings: Settings, process: Managed, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    s3 = storage.client(settings, "s3")
    while time.monotonic() < deadline:
        if not is_alive(process):
            raise LocalStackError(f"moto server exited at start; see {process.log}")
        try:
            s3.list_buckets()
            return
        except Exception:
            time.sleep(0.2)
    raise LocalStackError(f"moto server did not answer within {timeout:.0f}s; see {process.log}")


def _queue_pair(
    sqs: Any, name: str, dead_letter_name: str, visibility_timeout: int, max_receive_count: int
) -> tuple[str, str]:
    """A queue that moves a message to its dead-letter queue after ``max_receive_count``
    receives, as the stack declares them: (queue URL, dead-letter URL)."""
    dlq_url = sqs.create_queue(QueueName=dead_letter_name)["QueueUrl"]
    redrive = {
        "deadLetterTargetArn": _queue_arn(sqs, dlq_url),
        "maxReceiveCount": str(max_receive_count),
    }
    queue_url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    return queue_url, dlq_url


def _create_resources(
    settings: Settings, visibility_timeout: int, max_receive_count: int
) -> tuple[str, str]:
    storage.client(settings, "s3").create_bucket(Bucket=BUCKET)
    sqs = storage.client(settings, "sqs")
    return _queue_pair(sqs, QUEUE, DEAD_LETTER_QUEUE, visibility_timeout, max_receive_count)


def route_bucket_events(s3: Any, sqs: Any, bucket: str, queue_url: str, prefix: str) -> None:
    """Send an event to ``queue_url`` for every object created under ``prefix`` in
    ``bucket`` (S3 -> SQS notification, as the stack wires its own bucket)."""
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "whisperq-ingest",
                    "QueueArn": _queue_arn(sqs, queue_url),
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                }
            ]
        },
    )


def _create_ingest_route(settings: Settings) -> tuple[str, str]:
    """The ingest queue (+ its dead-letter queue) and the bucket's notification to it:
    objects created under incoming/ become events there. Returns (queue URL, dead-letter
    queue URL)."""
    sqs = storage.client(settings, "sqs")
    queue_url, dlq_url = _queue_pair(
        sqs,
        INGEST_QUEUE,
        INGEST_DEAD_LETTER_QUEUE,
        INGEST_VISIBILITY_TIMEOUT_S,
        INGEST_MAX_RECEIVE_COUNT,
    )
    route_bucket_events(storage.client(settings, "s3"), sqs, BUCKET, queue_url, INGEST_PREFIX)
    return queue_url, dlq_url


def _queue_arn(sqs: Any, queue_url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]


def _create_group(settings: Settings, workers: int) -> str:
    """The local fleet: a launch template and a group with one instance per worker."""
    storage.client(settings, "ec2").create_launch_template(
        LaunchTemplateName=GROUP,
        LaunchTemplateData={"ImageId": GROUP_IMAGE, "InstanceType": GROUP_INSTANCE_TYPE},
    )
    storage.client(settings, "autoscaling").create_auto_scaling_group(
        AutoScalingGroupName=GROUP,
        LaunchTemplate={"LaunchTemplateName": GROUP, "Version": "$Latest"},
        MinSize=0,
        MaxSize=workers,
        DesiredCapacity=workers,
        AvailabilityZones=[f"{REGION}a"],
    )
    return GROUP


def _claim_instance(settings: Settings, state: dict[str, Any]) -> str | None:
    """An instance of the local group for a new worker: one no live worker holds, else
    the group grows by one. None for a stack without a group."""
    name = state["settings"].get("autoscaling_group")
    if not name:
        return None
    stack_settings = Settings(state_dir=settings.state_dir, **state["settings"])
    autoscaling = storage.client(stack_settings, "autoscaling")
    held = {p.instance for p in managed_processes(state) if p.instance and is_alive(p)}

    def free() -> tuple[list[str], dict[str, Any]]:
        (group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])[
            "AutoScalingGroups"
        ]
        ids = [i["InstanceId"] for i in group["Instances"] if i["LifecycleState"] == "InService"]
        return sorted(set(ids) - held), group

    available, group = free()
    if not available:
        size = max(int(group["DesiredCapacity"]), len(held)) + 1
        autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=name,
            MaxSize=max(int(group["MaxSize"]), size),
            DesiredCapacity=size,
        )
        available, _ = free()
    return available[0] if available else None


def _wait_for_workers(workers: list[Managed], timeout: float, mark: str = READY_MARK) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(workers)
    while waiting and time.monotonic() < deadline:
        for worker in list(waiting):
            if not is_alive(worker):
                last_lines = tail(Path(worker.log), 15)
                raise LocalStackError(f"{worker.name} exited at start; {worker.log}:\n{last_lines}")
            if mark in _log_since(worker):
                waiting.remove(worker)
        time.sleep(0.3)
    if waiting:
        names = ", ".join(worker.name for worker in waiting)
        raise LocalStackError(f"{names} not ready within {timeout:.0f}s; see `whisperq local logs`")


def _log_since(process: Managed) -> str:
    """What ``process`` itself wrote to its log (not the process it replaced)."""
    try:
        with Path(process.log).open("rb") as handle:
            handle.seek(process.log_offset)
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def dead_processes(state: dict[str, Any]) -> list[Managed]:
    """The stack's processes that are no longer running."""
    return [process for process in managed_processes(state) if not is_alive(process)]


def _moto_alive(state: dict[str, Any]) -> bool:
    servers = [p for p in managed_processes(state) if p.name == "moto"]
    return bool(servers) and is_alive(servers[0])


def restart_dead(settings: Settings, ready_timeout: float = 180.0) -> list[str]:
    """Start again the workers and the ingest process that died, on the same moto server
    (the batches, queues and logs stay); returns their names. The moto server itself
    cannot be restarted this way: its data was in its memory."""
    state = read_state(settings)
    if state is None:
        raise LocalStackError("The local stack is not running: `whisperq local up` first.")
    if not _moto_alive(state):
        raise LocalStackError(MOTO_GONE)
    dead = [p for p in dead_processes(state) if p.name != "moto"]
    if not dead:
        return []
    for process in dead:
        _reap(process.pid)
    state["processes"] = [p.as_dict() for p in managed_processes(state) if p not in dead]
    _write_state(settings, state)
    workers = [start_worker(settings) for p in dead if p.name.startswith("worker")]
    _wait_for_workers(workers, ready_timeout)
    if any(p.name == "ingest" for p in dead):
        _wait_for_workers([start_ingest(settings)], ready_timeout, INGEST_READY_MARK)
    return sorted(p.name for p in dead)


MOTO_GONE = (
    "The local stack's moto server is no longer running (a reboot, or it was killed), and "
    "the batches and queues it held in memory went with it. `whisperq local reset` starts "
    "a fresh, empty stack (the old logs are kept in logs/previous/); `whisperq local down` "
    "goes back to the configured AWS target."
)


def up(
    settings: Settings,
    workers: int | None = None,
    model: str | None = None,
    visibility_timeout: int = VISIBILITY_TIMEOUT_S,
    max_receive_count: int = MAX_RECEIVE_COUNT,
    ready_timeout: float = 180.0,
) -> UpResult:
    """Start the stack. Harmless when it is already up; a worker or the ingest process
    that died is started again, keeping the data and logs. A stack whose moto server died
    has lost its data: that is an error naming `local reset` (nothing is wiped here)."""
    state = read_state(settings)
    if state is not None:
        if not _moto_alive(state):
            raise LocalStackError(MOTO_GONE)
        restarted = restart_dead(settings, ready_timeout)
        return UpResult(read_state(settings) or state, started=False, restarted=tuple(restarted))

    workers = workers or default_worker_count()
    logs = settings.state_dir / "logs"
    _keep_previous_logs(logs)
    port = free_port()
    moto = _spawn(
        "moto",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        logs / "moto.log",
        dict(os.environ),
    )
    connection = {
        "endpoint_url": f"http://127.0.0.1:{port}",
        "region": REGION,
        "aws_access_key_id": CREDENTIALS[0],
        "aws_secret_access_key": CREDENTIALS[1],
        "bucket": BUCKET,
    }
    state = {
        "started_at": time.time(),
        "model": model or settings.model,
        "threads_per_worker": max(1, (os.cpu_count() or 1) // workers),
        "settings": connection,
        "processes": [moto.as_dict()],
    }
    _write_state(settings, state)
    try:
        stack_settings = Settings.model_validate({"state_dir": settings.state_dir, **connection})
        _wait_for_moto(stack_settings, moto, timeout=30)
        queue_url, dlq_url = _create_resources(
            stack_settings, visibility_timeout, max_receive_count
        )
        connection.update(queue_url=queue_url, dlq_url=dlq_url)
        connection["autoscaling_group"] = _create_group(stack_settings, workers)
        ingest_url, ingest_dlq_url = _create_ingest_route(stack_settings)
        connection.update(ingest_queue_url=ingest_url, ingest_dlq_url=ingest_dlq_url)
        _write_state(settings, state)
        ingesting = start_ingest(settings)
        started = [start_worker(settings) for _ in range(workers)]
        _wait_for_workers(started, ready_timeout)
        _wait_for_workers([ingesting], ready_timeout, INGEST_READY_MARK)
    except BaseException:
        down(settings)
        raise
    return UpResult(read_state(settings) or state, started=True)  # with the workers


def reset(settings: Settings, **options: Any) -> UpResult:
    """`local reset`: stop whatever is left of the stack and start a fresh, empty one."""
    down(settings)
    return up(settings, **options)


def _keep_previous_logs(logs: Path) -> None:
    """A fresh stack's logs start empty; the last stack's move to logs/previous/ (one
    generation), so a crash that led to the reset can still be read."""
    old = sorted(logs.glob("*.log"))
    if not old:
        return
    previous = logs / "previous"
    previous.mkdir(parents=True, exist_ok=True)
    for stale in previous.glob("*.log"):
        stale.unlink()
    for log in old:
        log.replace(previous / log.name)


def start_worker(settings: Settings) -> Managed:
    """Start one more worker process on the running stack (recorded for `down`)."""
    state = read_state(settings)
    if state is None:
        raise LocalStackError("The local stack is not running: `whisperq local up` first.")
    taken = {process.name for process in managed_processes(state)}
    name = next(f"worker-{n}" for n in range(1, len(taken) + 2) if f"worker-{n}" not in taken)
    instance = _claim_instance(settings, state)
    concurrency = settings.worker_concurrency or state["threads_per_worker"]
    env = dict(os.environ) | {
        "WHISPERQ_STATE_DIR": str(settings.state_dir),
        "WHISPERQ_MODEL": state["model"],
        # This worker's share of the cores, split between its pool processes: by default
        # one single-thread process per core (as choose_concurrency does on a whole machine).
        "WHISPERQ_WORKER_CONCURRENCY": str(concurrency),
        "WHISPERQ_CPU_THREADS": str(max(1, state["threads_per_worker"] // concurrency)),
        # SIGTERM = bounded soft shutdown (see `whisperq worker --help`)
        "REMAP_SIGTERM": "SIGQUIT",
    }
    env.setdefault("WHISPERQ_SQS_WAIT_SECONDS", "2")  # snappy hand-back on one machine
    if instance:
        # Its instance in the group: scale-in protection needs one, and without it the
        # worker would ask IMDS (169.254.169.254), which a laptop does not serve.
        env["WHISPERQ_INSTANCE_ID"] = instance
    worker = _spawn(
        name,
        [sys.executable, "-m", "whisperq", "worker"],
        settings.state_dir / "logs" / f"{name}.log",
        env,
        instance,
    )
    state["processes"].append(worker.as_dict())
    _write_state(settings, state)
    return worker


def start_ingest(settings: Settings) -> Managed:
    """Start the ingest process on the running stack (recorded for `down`): it reads the
    ingest queue and turns objects created under incoming/ into jobs."""
    state = read_state(settings)
    if state is None:
        raise LocalStackError("The local stack is not running: `whisperq local up` first.")
    env = dict(os.environ) | {
        "WHISPERQ_STATE_DIR": str(settings.state_dir),
        # The stack's own bucket and prefix, whatever the user's settings name for AWS.
        "WHISPERQ_INGEST_SOURCE_BUCKET": "",
        "WHISPERQ_INGEST_PREFIX": INGEST_PREFIX,
    }
    env.setdefault("WHISPERQ_SQS_WAIT_SECONDS", "2")  # a snappy stop on SIGTERM
    process = _spawn(
        "ingest",
        [sys.executable, "-m", "whisperq", "ingest"],
        settings.state_dir / "logs" / "ingest.log",
        env,
    )
    state["processes"].append(process.as_dict())
    _write_state(settings, state)
    return process


def _signal_group(process: Managed, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def stop_process(process: Managed, grace: float = 15.0) -> None:
    """SIGTERM its process group, then SIGKILL what is left after ``grace`` seconds."""
    if not is_alive(process):
        return
    _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and is_alive(process):
        _reap(process.pid)
        time.sleep(0.1)
    if is_alive(process):
        _signal_group(process, signal.SIGKILL)
        _reap(process.pid)


def _reap(pid: int) -> None:
    """Collect the exit status if it is our child (same-process up/down, as in tests)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def down(settings: Settings) -> list[Managed]:
    """Stop every process the stack started (workers first) and forget the stack."""
    state = read_state(settings)
    if state is None:
        return []
    processes = managed_processes(state)
    for process in sorted(processes, key=lambda item: item.name == "moto"):
        stop_process(process)
    settings.local_stack_file.unlink(missing_ok=True)
    return processes


def tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def log_files(settings: Settings) -> list[Path]:
    return sorted((settings.state_dir / "logs").glob("*.log"))
