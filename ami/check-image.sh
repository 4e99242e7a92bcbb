#!/usr/bin/env bash
# The image build's last proof (ami/whisperq.pkr.hcl runs it as root, after provision.sh
# and a reboot): a worker started from this image can work. The baked model is loaded and
# transcribes CLIP, whose transcript must hold WORD, as the worker's unit runs the worker:
# its user, NoNewPrivileges and the unit's other hardening, /etc/whisperq/image.env. On a
# GPU image first: whisperq-gpu-devices.service made the NVIDIA device nodes at boot (the
# worker may not), nvidia-smi sees the GPU, and CTranslate2 sees a CUDA device; the
# transcription then runs on it in float16.
#
# Usage: check-image.sh CLIP WORD  (WHISPERQ_PREFIX: a root to look under instead of /, tests)
set -euo pipefail

clip="$1"
word="$2"
prefix="${WHISPERQ_PREFIX:-}"
unit="$prefix/etc/systemd/system/whisperq-worker.service"
image_env="$prefix/etc/whisperq/image.env"
python="$prefix/opt/whisperq/venv/bin/python"

log() { printf 'whisperq-check: %s\n' "$*" >&2; }
fail() {
  log "FAILED: $*"
  exit 1
}

device="$(sed -n 's/^WHISPERQ_DEVICE=//p' "$image_env")"
if [ "$device" = cuda ]; then
  # Before anything runs CUDA as root here: the nodes must be the device unit's doing.
  systemctl is-active --quiet whisperq-gpu-devices.service \
    || fail "whisperq-gpu-devices.service did not run at boot: $(systemctl status whisperq-gpu-devices.service 2>&1 | tail -5)"
  for node in "$prefix"/dev/nvidiactl "$prefix"/dev/nvidia0 "$prefix"/dev/nvidia-uvm; do
    [ -c "$node" ] || fail "no $node after the boot: the worker could not use the GPU"
  done
  nvidia-smi || fail "nvidia-smi sees no GPU"
fi

# The unit's user and sandbox, as systemd applies them to the worker (image.env only:
# worker.env is the launch template's, written at a worker's boot).
properties=("--property=EnvironmentFile=$image_env")
while IFS= read -r line; do
  case "$line" in
    User=* | Group=* | NoNewPrivileges=* | PrivateTmp=* | Protect* | ReadWritePaths=* | Restrict*)
      properties+=("--property=$line")
      ;;
  esac
done <"$unit"

# Readable by the worker's user, outside /tmp (PrivateTmp gives the worker its own).
work="$(mktemp -d "$prefix/opt/whisperq/check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
clip_copy="$work/$(basename "$clip")"
install -m 0644 "$clip" "$clip_copy"
cat >"$work/check.py" <<'PY'
"""As the worker: the image's model, device and compute type (image.env) on a clip."""

import os
import sys

from whisperq.schemas import TranscriptionOptions
from whisperq.speech.engine import EngineConfig, load_model, transcribe_file

clip, word = sys.argv[1], sys.argv[2]
model, device, compute_type = (
    os.environ[f"WHISPERQ_{name}"] for name in ("MODEL", "DEVICE", "COMPUTE_TYPE")
)
if device == "cuda":
    import ctranslate2

    count = ctranslate2.get_cuda_device_count()
    if count < 1:
        sys.exit("CTranslate2 sees no CUDA device: a worker of this image cannot run")
    print(f"CTranslate2 sees {count} CUDA device(s)", flush=True)
config = EngineConfig(model=model, device=device, compute_type=compute_type)
loaded = load_model(config)
if (loaded.info.device, loaded.info.compute_type) != (device, compute_type):
    sys.exit(
        f"{model} loaded on {loaded.info.device}/{loaded.info.compute_type}, "
        f"not {device}/{compute_type}"
    )
text = transcribe_file(loaded, clip, TranscriptionOptions(), config).text
print(f"{model} on {device}/{compute_type}: {text}", flush=True)
if word.lower() not in text.lower():
    sys.exit(f"the clip's transcript lacks {word!r}")
PY
chmod 0644 "$work/check.py"

log "the worker's check, as its unit runs it: ${properties[*]}"
systemd-run --wait --pipe --quiet --collect "${properties[@]}" \
  "$python" "$work/check.py" "$clip_copy" "$word" \
  || fail "the worker could not transcribe $clip with this image"
log "the image works"
