#!/usr/bin/env bash
# The reliability tests, run after run, under busy CPU loops (issue 33: tests that prove
# what they claim on any machine, however fast or loaded). Fails at the first failing run.
# Usage: scripts/stress-test.sh [RUNS (3)] [BUSY LOOPS (2)]; PYTHON: the virtualenv's.
# The loops are this script's own children, stopped by PID when it ends, also on failure
# or Ctrl+C.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
runs=${1:-3}
loops=${2:-2}
tests=(tests/worker/test_stack_reliability.py tests/worker/test_reliability_parts.py)

busy=()
stop_loops() {
  local pid
  for pid in "${busy[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${busy[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap stop_loops EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for _ in $(seq "$loops"); do
  "$python" -c 'while True: pass' &
  busy+=("$!")
done
echo "stress-test: $loops busy loop(s), PIDs ${busy[*]}" >&2

for run in $(seq "$runs"); do
  echo "stress-test: run $run of $runs" >&2
  if ! "$python" -m pytest -q -p no:cacheprovider "${tests[@]}"; then
    echo "stress-test: run $run of $runs failed" >&2
    exit 1
  fi
done
echo "stress-test: $runs of $runs runs passed under $loops busy loop(s)" >&2
