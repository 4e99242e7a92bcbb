"""The defaults more than one place uses, in one place: the deployed fleet (the Pulumi
program's stack config), the CLI's settings, the local stack, the simulator and the prices.

Standard library only and no whisperq imports: the Pulumi program imports it (its venv has
whisperq installed), and anything shipped alone may copy it. ``tests/contracts/test_defaults.py``
compares the objects that use these (``DeploymentConfig()``, ``Settings()``,
``DayOptions()``, ``SimConfig()``) so that they cannot drift apart again.

Copies this module cannot reach (keep them in step by hand): ``ami/whisperq.pkr.hcl`` (the
CPU model, the build instance per kind, the root volume per kind), ``ami/provision.sh``
(compute type per kind), ``infra_pulumi/Pulumi.dev.yaml`` (a commented example) and the
tables in docs/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

# --- per compute kind (whisperq:compute) ---------------------------------------------------

COMPUTE_KINDS: Final = ("cpu", "gpu")
COMPUTE: Final = "cpu"
# What the workers load (whisperq:model).
# Chosen by accuracy and $ per audio hour: docs/costs.md, "Which model" (whisperq.fleet.speeds).
MODEL: Final[Mapping[str, str]] = {"cpu": "small", "gpu": "large-v3"}
# CTranslate2 compute type the image and the stack give the workers.
COMPUTE_TYPE: Final[Mapping[str, str]] = {"cpu": "int8", "gpu": "float16"}
# Three to five types per kind: spot capacity comes from several pools. The first is the
# one the stack exports as instanceType (what `whisperq cost` prices unrecorded results as).
INSTANCE_TYPES: Final[Mapping[str, tuple[str, ...]]] = {
    "cpu": ("c6a.xlarge", "c6a.2xlarge", "c6i.xlarge", "c7a.xlarge", "m6a.xlarge"),
    "gpu": ("g4dn.xlarge", "g4dn.2xlarge", "g5.xlarge", "g6.xlarge"),
}
ROOT_VOLUME_GB: Final[Mapping[str, int]] = {"cpu": 30, "gpu": 80}  # OS, venv, CUDA, model
# What one instance of a type can do at once, for the group's capacity weights (a CPU fleet
# weighs its types by vCPUs, a GPU fleet by GPUs: the worker runs one pool process per GPU):
# EC2's figures for the default types, the priced ones and their families' other common
# sizes. Types not listed are weighed by their size (large = 2 vCPUs, xlarge = 4, Nxlarge =
# 4N) and GPU types as one GPU; tests/infra/test_deploy_consistency.py checks these against names.
INSTANCE_VCPUS: Final[Mapping[str, int]] = {
    "c6a.large": 2,
    "c6a.xlarge": 4,
    "c6a.2xlarge": 8,
    "c6a.4xlarge": 16,
    "c6i.xlarge": 4,
    "c6i.2xlarge": 8,
    "c7a.xlarge": 4,
    "c7a.2xlarge": 8,
    "m6a.xlarge": 4,
    "m6a.2xlarge": 8,
    "g4dn.xlarge": 4,
    "g4dn.2xlarge": 8,
    "g4dn.4xlarge": 16,
    "g4dn.12xlarge": 48,
    "g5.xlarge": 4,
    "g5.2xlarge": 8,
    "g5.12xlarge": 48,
    "g6.xlarge": 4,
    "g6.2xlarge": 8,
    "g6.12xlarge": 48,
}
INSTANCE_GPUS: Final[Mapping[str, int]] = {
    "g4dn.xlarge": 1,
    "g4dn.2xlarge": 1,
    "g4dn.4xlarge": 1,
    "g4dn.12xlarge": 4,
    "g5.xlarge": 1,
    "g5.2xlarge": 1,
    "g5.12xlarge": 4,
    "g6.xlarge": 1,
    "g6.2xlarge": 1,
    "g6.12xlarge": 4,
}

# --- the fleet and its scaler ------------------------------------------------------------

JOBS_PER_INSTANCE: Final = 4  # queue messages (waiting + running) per instance
MAX_INSTANCES: Final = 10  # the fleet's cap
IDLE_MINUTES: Final = 10  # empty-queue minutes before scaling to zero
SCALER_PERIOD_SECONDS: Final = 60.0  # the scaler Lambda's schedule (whole minutes)
BOOT_SECONDS: Final = 90.0  # spot launch to a running worker service (baked image)
MODEL_LOAD_SECONDS: Final = 5.0  # measured 0.9-1.1 s for base, locally; a margin for S3
READY_SECONDS: Final = BOOT_SECONDS + MODEL_LOAD_SECONDS  # launch to a worker taking jobs
# The type results without one are priced as: the stack's first CPU type.
FLEET_INSTANCE_TYPE: Final = INSTANCE_TYPES[COMPUTE][0]

# --- the queue -----------------------------------------------------------------------------

VISIBILITY_TIMEOUT_SECONDS: Final = 300  # workers extend it every third while a job runs
MAX_RECEIVE_COUNT: Final = 5  # deliveries before the dead-letter queue

# --- ingestion ---------------------------------------------------------------------------

# An ingest that claimed a file and queued nothing for this long is taken to be dead.
INGEST_CLAIM_SECONDS: Final = 120.0
# A daily ingest batch (``{date}`` in WHISPERQ_INGEST_BATCH) takes files until the end of its
# UTC day plus this (``open_until`` in its batch.json): an object created just before
# midnight reaches the ingest step late -- S3's event delivery, an ingest that waits out a
# claim (above), the ingest queue's redeliveries -- and still joins its day's batch before
# the batch can be finished (``whisperq.finished``).
DAILY_BATCH_GRACE_SECONDS: Final = 3600.0

# --- spot interruptions and the worker's grace ---------------------------------------------

SPOT_NOTICE_SECONDS: Final = 120.0  # EC2's two minutes' notice
# On SIGTERM, for the running job. The deployed workers' too: the image and the user data
# set no grace of their own (ami/whisperq-worker.service's TimeoutStopSec outlasts it;
# tests/infra/test_deploy_consistency.py checks they agree).
SHUTDOWN_GRACE_SECONDS: Final = 60.0
SPOT_GRACE_SECONDS: Final = 90.0  # after a spot notice, for the running job
# The group's termination lifecycle hook (scale-in, capacity rebalancing) holds an instance
# this long for its worker to hand back or finish the running job and complete the action;
# then the group goes on (CONTINUE). As long as a spot notice gives.
TERMINATION_HOOK_SECONDS: Final = 120
# Deliberately pessimistic: AWS's Spot Advisor "<5%" bucket is per month, not per hour.
SPOT_INTERRUPTIONS_PER_INSTANCE_HOUR: Final = 0.05

# The worker's exit status when it stopped because its instance is going away (a spot
# notice, the group's lifecycle hook): ami/whisperq-worker.service does not restart it.
WORKER_EXIT_INSTANCE_LEAVING: Final = 75  # EX_TEMPFAIL

# --- the simulator ------------------------------------------------------------------------

# Speeds per model and instance: whisperq.fleet.speeds (each figure marked measured, published
# or estimated).
SIMULATED_INSTANCE_TYPE: Final = "c6a.large"

# --- prices (estimates) ------------------------------------------------------------------

# $ per instance-hour, Linux, us-east-1, as of 2026: on-demand from the public list price,
# spot a typical price (about 55-60% off for c6a, about 60% off for g4dn; it moves by hour,
# zone and type). The same shape as the instance_prices setting, which overrides it.
INSTANCE_PRICES: Final[Mapping[str, Mapping[str, float]]] = {
    "c6a.large": {"on_demand": 0.0765, "spot": 0.033},
    "c6a.xlarge": {"on_demand": 0.153, "spot": 0.066},
    "c6a.2xlarge": {"on_demand": 0.306, "spot": 0.132},
    "c6a.4xlarge": {"on_demand": 0.612, "spot": 0.264},
    "g4dn.xlarge": {"on_demand": 0.526, "spot": 0.21},
    "g4dn.2xlarge": {"on_demand": 0.752, "spot": 0.30},
    # The other types of INSTANCE_TYPES, so that `whisperq cost` prices a default
    # deployment's results; spot by the same rule of thumb.
    "c6i.xlarge": {"on_demand": 0.17, "spot": 0.073},
    "c7a.xlarge": {"on_demand": 0.2053, "spot": 0.088},
    "m6a.xlarge": {"on_demand": 0.1728, "spot": 0.074},
    "g5.xlarge": {"on_demand": 1.006, "spot": 0.40},
    "g6.xlarge": {"on_demand": 0.8048, "spot": 0.32},
}
# AWS Transcribe batch, standard tier, first 250,000 minutes a month (list price).
MANAGED_PRICE_PER_MINUTE: Final = 0.024
# OpenAI whisper-1 API (list price), for a second point of comparison.
OPENAI_WHISPER_PRICE_PER_MINUTE: Final = 0.006
