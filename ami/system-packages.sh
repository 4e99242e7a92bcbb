#!/usr/bin/env bash
# The system packages a worker needs; ami/provision.sh runs it as root (not with
# WHISPERQ_SKIP_CLOUD=1). Two cases:
#
#   baking an image (WHISPERQ_BAKE=1: Packer, ami/whisperq.pkr.hcl): wait for cloud-init
#     (its first-boot apt run holds the package lock), then apply the OS updates once, here.
#     On a GPU image the kernel, NVIDIA driver and CUDA packages are held first: the Deep
#     Learning Base image's driver modules are built for its kernel, and an update of either
#     without a reboot and a rebuild leaves the GPU unusable.
#   a stock image's boot (its user data, inside cloud-init: never wait for cloud-init there):
#     install only what is missing, and upgrade nothing (minutes at every boot, and on the
#     Deep Learning image a driver whose user-space libraries and loaded module disagree).
#
# Every apt-get waits up to WHISPERQ_APT_LOCK_SECONDS (default 600) for the package lock
# (unattended-upgrades, cloud-init), then fails: the boot is then marked unhealthy.
#
# Environment: WHISPERQ_COMPUTE (cpu | gpu), WHISPERQ_BAKE (1 when baking),
# WHISPERQ_APT_LOCK_SECONDS, WHISPERQ_PREFIX (tests: where the CloudWatch agent is looked for).
set -euo pipefail

compute="${WHISPERQ_COMPUTE:-cpu}"
bake="${WHISPERQ_BAKE:-0}"
lock_seconds="${WHISPERQ_APT_LOCK_SECONDS:-600}"
agent_ctl="${WHISPERQ_PREFIX:-}/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl"
agent_deb=https://amazoncloudwatch-agent.s3.amazonaws.com/ubuntu/amd64/latest/amazon-cloudwatch-agent.deb
packages=(python3 python3-venv rsyslog)
# What must not move under a baked GPU image: the kernel, the NVIDIA driver (its modules,
# libraries and tools) and CUDA.
hold_pattern='^(linux-(image|headers|modules|modules-extra|aws|generic|virtual)([-.].*)?|nvidia-.*|libnvidia-.*|cuda-.*|libcuda.*|libcublas.*|libnccl.*|dkms)$'

log() { printf 'whisperq-provision: %s\n' "$*" >&2; }
apt_get() { apt-get -o DPkg::Lock::Timeout="$lock_seconds" -y -q "$@"; }
installed() {
  local status
  # shellcheck disable=SC2016  # dpkg-query's own ${...} format, not the shell's
  status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
  [ "$status" = "install ok installed" ]
}

export DEBIAN_FRONTEND=noninteractive
# No automatic updates or reboots while jobs run: the next image carries them.
systemctl disable --now apt-daily.timer apt-daily-upgrade.timer unattended-upgrades.service 2>/dev/null || true

if [ "$bake" = 1 ]; then
  if command -v cloud-init >/dev/null; then
    log "waiting for cloud-init to finish (it may be running apt)"
    cloud-init status --wait >/dev/null || log "cloud-init finished with errors (exit $?): going on"
  fi
  if [ "$compute" = gpu ]; then
    # shellcheck disable=SC2016  # dpkg-query's own ${...} format, not the shell's
    mapfile -t held < <(dpkg-query -W -f='${Package}\n' | grep -E "$hold_pattern" || true)
    if [ "${#held[@]}" -gt 0 ]; then
      log "holding the kernel, NVIDIA driver and CUDA packages (${#held[@]}): ${held[*]}"
      apt-mark hold "${held[@]}" >/dev/null
    fi
  fi
  log "system packages: OS updates applied now, while baking (never at a worker's boot)"
  apt_get update
  apt_get upgrade
  apt_get install --no-install-recommends "${packages[@]}"
else
  missing=()
  for package in "${packages[@]}"; do
    installed "$package" || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "system packages the stock image lacks: ${missing[*]} (nothing upgraded at boot)"
    apt_get update
    apt_get install --no-install-recommends "${missing[@]}"
  fi
fi

if [ ! -x "$agent_ctl" ]; then
  log "CloudWatch agent (started at boot with the stack's log group)"
  curl -fsSL -o /tmp/amazon-cloudwatch-agent.deb "$agent_deb"
  apt_get install /tmp/amazon-cloudwatch-agent.deb
  rm -f /tmp/amazon-cloudwatch-agent.deb
fi
