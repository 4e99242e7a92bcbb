#!/usr/bin/env bash
# Rebuilds the long real-speech set: 8 recordings of 3-5 minutes (29 min in all) of read
# English speech, each a run of consecutive LibriSpeech utterances of one chapter
# (mini LibriSpeech train-clean-5, CC BY 4.0) joined in order, with their transcripts
# joined in the same order: references.tsv in the form benchmarks/real_speech.py reads
# (--folder OUT). Where it comes from, licences, caveats:
# benchmarks/data/long_real_SOURCES.md.
#
#   benchmarks/data/fetch_long_real.sh GIT_DIR [OUT]     (OUT default: ./long_real)
#
# GIT_DIR: a git directory (bare or with a work tree) of the public GitHub repository
# zhangrui0712/Voice-Age that holds commit 8a1ed0888dd906e95fb66ff678eed7eb2332ac4d; in a
# session that is what the search tool's fetch of github:zhangrui0712/Voice-Age returns
# (.../repo). Nothing is downloaded here. Every chapter folder is pinned by its git tree
# id (which pins every byte of every file in it), the joined audio by the sha256 of its
# decoded 16-bit samples. Needs git, sox with FLAC support, sha256sum, python3.
set -euo pipefail

GIT_DIR=${1:?usage: $0 GIT_DIR [OUT]}
OUT=${2:-long_real}
COMMIT=8a1ed0888dd906e95fb66ff678eed7eb2332ac4d
BASE=LibriSpeech/train-clean-5
LICENSE_SHA256=908b0b565ae9bf61b7b41447cb0b83564f320375723bcc884ec30e5537a0d5dc

# file stem | speaker/chapter | last utterance used (from 0000) | git tree id of the chapter
# folder | sha256 of the joined audio's samples (sox -t s16 -r 16000 -c 1)
SET="
librispeech-5789-70653|5789/70653|15|d6f006556ea500b45c115bc800f2438777e437b3|0d700701337336145c23f34247b7a269bf87a8a86e798fedf324862d45526189
librispeech-32-21631|32/21631|19|561578d1fedc61af1361c9fec138de948190e102|a837ddbe65fcf4c204f0cd32076aa14c1e0133145f6d33295db654a807dfbe95
librispeech-1088-134318|1088/134318|21|3a1ed009e99dd6b7942ffc744d223ddecb297773|67369bb2d01c6bb798824899743396a05b150375c478355724cc5a2649840d3d
librispeech-669-129074|669/129074|15|b2d1ddf445d928dc74295bf3c8f5c46ec5c18668|400cf27d8b101a553aef4bfcb8ed5ad035c88af757cc044ecb226460e2557986
librispeech-7312-92432|7312/92432|14|4e7fbe5838deaa175e659fde8819d3749939ee1b|0bc25d28bc7c77c5bcb257cda27d6b586e1f1490e0e463d82843cc51968c0927
librispeech-118-47824|118/47824|16|857d0058ac0234889293d15817b1d6dd1b40dbe1|cb76e6c2c7f1a4ff1cae85bc1295e6e390edad92d1b7b0f9bd24959e643bbc16
librispeech-1867-154075|1867/154075|17|ae8232403a80f68463015d224a9176fb052b0208|790fcd2fa1e66892d782b79d8009be3e4a03f4e959982613649dea529bfe5429
librispeech-3664-178355|3664/178355|13|eec721180ab0945f2c51c684c8dbf102b9729e33|4ff576a80936d31bc77c9d141700d85f155b409b5d2e907b3ea498b0aa401a8b
"

git="git --git-dir=$GIT_DIR"
$git cat-file -e "$COMMIT^{commit}" 2>/dev/null \
  || { echo "$GIT_DIR does not hold commit $COMMIT" >&2; exit 1; }
mkdir -p "$OUT/originals"
$git show "$COMMIT:LibriSpeech/LICENSE.TXT" > "$OUT/originals/LICENSE.TXT"
echo "$LICENSE_SHA256  $OUT/originals/LICENSE.TXT" | sha256sum -c --quiet -

rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
printf 'file\tspeaker\tduration_s\treference\n' > "$OUT/references.tsv"
echo "$SET" | while IFS='|' read -r stem chapter last tree pcm; do
  [ -n "$stem" ] || continue
  speaker=${chapter%/*}
  id=${chapter/\//-}
  got=$($git rev-parse "$COMMIT:$BASE/$chapter")
  [ "$got" = "$tree" ] || { echo "$chapter: tree $got, expected $tree" >&2; exit 1; }
  keep="$OUT/originals/$id"
  mkdir -p "$keep"
  $git show "$COMMIT:$BASE/$chapter/$id.trans.txt" > "$keep/$id.trans.txt"
  inputs=()
  words=()
  for n in $(seq 0 "$last"); do
    utt=$(printf '%s-%04d' "$id" "$n")
    $git show "$COMMIT:$BASE/$chapter/$utt.flac" > "$keep/$utt.flac"
    inputs+=("$keep/$utt.flac")
    line=$(grep "^$utt " "$keep/$id.trans.txt") || { echo "$utt: no transcript" >&2; exit 1; }
    words+=("${line#* }")
  done
  # the chapter's utterances after the last one used are not part of the recording
  sox "${inputs[@]}" "$OUT/$stem.flac"
  sha=$(sox "$OUT/$stem.flac" -t s16 -r 16000 -c 1 - | sha256sum | cut -d' ' -f1)
  if [ "$sha" != "$pcm" ]; then
    echo "$stem.flac: samples sha256 $sha, expected $pcm" >&2; exit 1
  fi
  samples=$(soxi -s "$OUT/$stem.flac")
  seconds=$(python3 -c "print(f'{$samples / 16000:.2f}')")
  printf '%s.flac\tlibrispeech-%s\t%s\t%s\n' "$stem" "$speaker" "$seconds" "${words[*]}" \
    >> "$OUT/references.tsv"
  echo "$stem.flac  $((last + 1)) utterances  ${seconds} s  samples sha256 $sha"
done
echo "wrote $OUT/references.tsv"
