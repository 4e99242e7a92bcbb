#!/usr/bin/env bash
# The main job on the embedded stack: start it, transcribe the sample calls, fetch the results,
# write their review site.
set -euo pipefail
cd "$(dirname "$0")/.."
whisperq=".venv/bin/whisperq"

"$whisperq" local up
# Stereo calls are split by channel (agent left, customer right); the company name is a hotword.
"$whisperq" submit examples/calls --batch demo --speakers agent,customer --hotwords "Acme Fibre"
"$whisperq" wait demo --timeout 600 --interval 1
"$whisperq" status demo
"$whisperq" results demo --out transcripts

echo
echo "Transcripts (json, srt, vtt, txt) are in $(pwd)/transcripts/examples/calls/:"
find transcripts -name '*.txt' | sort | while read -r file; do
  printf '  %s: %s\n' "${file#transcripts/}" "$(tr '\n' ' ' < "$file")"
done
echo
echo "The local stack is still running: try '$whisperq status', then '$whisperq local down'."

# The review site: the batch at a glance, and a page per call (its audio beside the
# transcript, the speakers on a timeline). Static files: open index.html from disk.
index=$("$whisperq" report demo --html transcripts/review)
echo
echo "To listen to the calls while reading them, open in a browser:"
echo "  $index"
