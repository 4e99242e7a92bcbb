#!/usr/bin/env bash
# Last step of an image build: no secrets, no SSH, nothing machine-specific left behind.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 -y -q autoremove
apt-get -o DPkg::Lock::Timeout=600 -q clean
rm -rf /tmp/whisperq-ami /tmp/whisperq-check /root/.cache/pip /var/lib/apt/lists/*
# Shell access is through SSM Session Manager: no SSH daemon on workers (this takes
# effect from the next boot, so Packer's own session is not cut).
systemctl disable ssh.service ssh.socket 2>/dev/null || true
rm -f /etc/ssh/ssh_host_* /home/ubuntu/.ssh/authorized_keys /root/.ssh/authorized_keys
cloud-init clean --logs --seed
truncate -s 0 /etc/machine-id
