#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages the tests use, if they are missing: espeak-ng and sox
# make speech; packer, shellcheck and systemd-analyze check the worker image (ami/);
# chromium (headless) drives the review site's pages (tests/transcripts/test_review_browser.py).
set -euo pipefail

declare -A package_of=(
  [espeak-ng]=espeak-ng
  [sox]=sox
  [packer]=packer
  [shellcheck]=shellcheck
  [systemd-analyze]=systemd
  [chromium]=chromium
)
missing=()
for tool in "${!package_of[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${package_of[$tool]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Please install: ${missing[*]} (with your system's package manager)" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "Installing ${missing[*]} with apt-get" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
