#!/usr/bin/env bash
# Has the Auto Scaling group replace this instance: a worker that cannot run must not sit
# there looking healthy, never taking a job, until the scaler lets it go days later.
# Installed as /opt/whisperq/bin/mark-unhealthy. Run by whisperq-mark-unhealthy.service
# when whisperq-worker.service has given up (its start limit hit), and when the boot fails
# (the launch template's user data, and provision.sh through WHISPERQ_ON_FAILURE).
#
#   mark-unhealthy [--if-failed UNIT] REASON...
#
# `whisperq mark-unhealthy` sets the instance (from IMDS) Unhealthy in its group (from
# worker.env; exit 0 when done); the group then replaces it, through its termination
# lifecycle hook. Without
# a working whisperq (the boot failed before installing it) the instance powers off: the
# group's EC2 health check replaces an instance that is not running. Either way one line
# "marked-unhealthy: REASON" goes to the worker's log, which the stack's alarm counts (a
# metric filter on the workers' log group matches "marked-unhealthy"). Once per boot.
#
# Environment: WHISPERQ_PREFIX  the install root (tests); systemctl and logger come from PATH.
set -uo pipefail

prefix="${WHISPERQ_PREFIX:-}"
whisperq="$prefix/opt/whisperq/venv/bin/whisperq"
etc="$prefix/etc/whisperq"
marked="$prefix/run/whisperq/marked-unhealthy"
agent="$prefix/opt/aws/amazon-cloudwatch-agent"

note() { printf 'whisperq-mark-unhealthy: %s\n' "$*" >&2; }

if [ "${1:-}" = --if-failed ]; then
  unit="${2:?--if-failed needs a unit}"
  shift 2
  # systemd >= 249 starts OnFailure= units on every failure, automatic restarts included:
  # only a unit that has given up counts, and nothing does while the machine shuts down.
  if [ "$(systemctl is-system-running 2>/dev/null)" = stopping ]; then
    note "the system is shutting down: not marking"
    exit 0
  fi
  if ! systemctl is-failed --quiet "$unit"; then
    note "$unit is restarting: not marking"
    exit 0
  fi
fi
reason="${*:-no reason given}"
if [ -e "$marked" ]; then
  note "done already this boot (now: $reason)"
  exit 0
fi
mkdir -p "$(dirname "$marked")" && : >"$marked"

# So that this line and the boot's output reach the log group: the agent, if the boot got
# as far as installing it (the user data writes its configuration first).
if [ -x "$agent/bin/amazon-cloudwatch-agent-ctl" ] && [ -r "$agent/etc/whisperq.json" ] &&
  ! "$agent/bin/amazon-cloudwatch-agent-ctl" -a status 2>/dev/null | grep -q '"status": "running"'; then
  "$agent/bin/amazon-cloudwatch-agent-ctl" -a fetch-config -m ec2 -s \
    -c "file:$agent/etc/whisperq.json" >&2 || note "the CloudWatch agent did not start"
fi

# The worker's settings (its group, its region), as the unit reads them.
set -a
for file in "$etc/image.env" "$etc/worker.env"; do
  # shellcheck disable=SC1090
  if [ -r "$file" ]; then . "$file"; fi
done
set +a

if [ -x "$whisperq" ] && "$whisperq" mark-unhealthy --reason "$reason"; then
  logger -t whisperq-worker -- "marked-unhealthy: $reason" || note "logger failed"
  exit 0
fi
logger -t whisperq-worker -- "marked-unhealthy: $reason (by powering off)" ||
  note "logger failed"
note "whisperq could not mark the instance: powering off in 30 s (the group replaces it)"
sleep 30 # the log agent ships the line meanwhile
systemctl poweroff
