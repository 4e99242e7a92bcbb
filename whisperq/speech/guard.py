"""The invented-text guard: text Whisper made up rather than heard, told from real speech.

``invented`` judges one decoded segment (silence, a tone, line noise, a fragment too short
to hold a word); ``share_in_doubt`` judges one file's share of a packed window, which is
decoded once, with no fallback. ``sound_seconds`` measures how much sound a recording
holds, and so how many words it can hold (``word_capacity``): less sound than a word
gives no text at all, and text longer than its sound can hold is not kept (``heard``).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from whisperq.schemas import Segment

# Whisper's own rule for "nothing was said" -- a
# window it thinks holds no speech, decoded with low confidence -- which faster-whisper
# applies only when decoding sequentially: batched decoding turned a 0.09 s fragment into
# "you." (no_speech 0.77, avg_logprob -1.84).
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
# Text this improbable is invented whatever no_speech says: a ringing tone without VAD
# came back as "Byzantium - louder than x9 here" (avg_logprob -4.07) and "Arrgh,
# ac'n est!" (-2.16).
INVENTED_LOG_PROB = -2.0
# A repetition loop: the same tone without VAD, once the invented text above was dropped,
# gave "N-N-N-N-..." at avg_logprob -0.08 (sure of itself) and a gzip ratio far above
# Whisper's own 2.4 limit, which it keeps when every temperature fails.
LOOP_COMPRESSION_RATIO = 2.4
# A segment too short to hold a word, which the model doubts holds speech: tiny.en, batched,
# heard "Thank you." in a 0.09 s fragment (no_speech 0.80, avg_logprob -0.91).
MIN_WORD_SECONDS = 0.3

# Sound, for counting what a recording can hold: 20 ms frames whose loudness (RMS) is
# within 40 dB of the recording's loud frames (their 99th percentile: one click does not
# set the scale) and above -66 dBFS (digital silence, dither). Low on purpose: the quiet
# ends of real words count (MFA's whispered and creaky clips: 1.3-1.8 s of sound for 5-9
# words), and a noisy line counts as all sound, so the limits below fail open there.
SOUND_FRAME_SECONDS = 0.02
SOUND_BELOW_LOUDEST = 0.01  # -40 dB
SOUND_FLOOR = 0.0005  # RMS, -66 dBFS
# Less sound than this holds no word: tiny.en turned 0.09-0.2 s of cut speech into "Thank
# you.", "Thank you very much for watching this video ...", "Subscribe to our channel."
# (a short real "no": 0.4 s of sound).
MIN_SPEECH_SECONDS = 0.3
# The most words a second of sound holds: the fastest real clip (MFA's "I have a thousand
# thoughts about that thing", 8 words in 1.36 s of sound) says 5.9 a second, espeak-ng at
# 150 words a minute 3; 10% more than the fastest. 0.6 s of sound holds three words (tiny.en
# made "It may be right." of 0.6 s of "Maybe la-"), 0.45 s two.
WORDS_PER_SOUND_SECOND = 6.5
# Whisper's segment times are rough (a 0.09 s clip's "Thank you." ran 0.0-1.0 s): a
# segment's sound is counted this far either side of it.
SEGMENT_REACH_SECONDS = 0.5
# Sound this short is a word or a short phrase (packing leaves such files alone), and there
# an unsure decode is mostly made up: clips of espeak-ng and real speech cut to 0.15-1 s
# came back as "Have a great day." for "had he marr-", "Keep it going." for "he began",
# "Thank you." for "not to-" (avg_logprob -1.0 to -1.2, a word at probability 0.01-0.06).
# A segment Whisper is unsure of (``LOG_PROB_THRESHOLD``, its own fallback threshold) or
# with a word under ``UNSURE_WORD_PROBABILITY`` is dropped there: of 476 decodes of such
# clips, that dropped a third of those with a word not said and 4% of the right ones.
SHORT_SOUND_SECONDS = 1.5
UNSURE_WORD_PROBABILITY = 0.1


def invented(
    no_speech_prob: float, avg_logprob: float, compression_ratio: float, seconds: float
) -> bool:
    """Whether a decoded segment (``seconds`` long) is text Whisper made up rather than
    heard: silence, a tone, line noise, a fragment too short to hold a word. Real short
    answers ("yes", "no", "okay": 1 s, no_speech 0.2-0.45, avg_logprob -0.3 to -0.9) pass."""
    doubts_speech = no_speech_prob > NO_SPEECH_THRESHOLD
    return (
        (doubts_speech and avg_logprob < LOG_PROB_THRESHOLD)
        or (doubts_speech and seconds < MIN_WORD_SECONDS)
        or avg_logprob < INVENTED_LOG_PROB
        or compression_ratio > LOOP_COMPRESSION_RATIO
    )


def share_in_doubt(segments: list[Segment]) -> bool:
    """Whether one file's share of a packed window (decoded once, with no fallback) fails
    the checks Whisper applies to a window before it falls back to sampling: a repetition
    loop (its text over its zlib-compressed length above ``LOOP_COMPRESSION_RATIO``) or an
    unsure decode (mean log probability under ``LOG_PROB_THRESHOLD``, here of the file's
    own words: a segment may span files). Per file: several files saying the same thing
    are not a loop."""
    text = " ".join(segment.text for segment in segments).encode()
    looping = bool(text) and len(text) / len(zlib.compress(text)) > LOOP_COMPRESSION_RATIO
    chances = [word.probability for segment in segments for word in segment.words or []]
    mean_log = float(np.mean(np.log(np.maximum(chances, 1e-6)))) if chances else 0.0
    return looping or mean_log < LOG_PROB_THRESHOLD


def share_overfull(segments: list[Segment], heard: float) -> bool:
    """Whether one file's share of a packed window holds more than the file said: a phrase
    twice in a row (``repeats_itself``: "okay, yes, okay, yes" for a file that says "yes,
    okay" once, its neighbours' copies taken in) or more words than its ``heard`` seconds
    of sound can hold (``word_capacity``)."""
    said = spoken_words(" ".join(segment.text for segment in segments))
    return repeats_itself(said) or len(said) > word_capacity(heard)


def made_up(segment: Any, loop_check: bool = True) -> bool:
    """:func:`invented`, for a segment as faster-whisper yields it."""
    return invented(
        segment.no_speech_prob,
        segment.avg_logprob,
        segment.compression_ratio if loop_check else 0.0,
        segment.end - segment.start,
    )


def sounding(audio: np.ndarray, rate: int = 16_000) -> np.ndarray:
    """Per 20 ms frame of ``audio`` (mono samples at ``rate``; a last partial frame is a
    frame), whether it holds sound: no more than 40 dB under the recording's loud frames
    and above the digital floor (``SOUND_BELOW_LOUDEST``, ``SOUND_FLOOR``). Energy only: a
    tone or line noise is sound too, so what this counts bounds the speech from above."""
    frame = max(1, round(SOUND_FRAME_SECONDS * rate))
    whole = len(audio) // frame
    frames = np.asarray(audio[: whole * frame], dtype=np.float32).reshape(whole, frame)
    energy = np.einsum("ij,ij->i", frames, frames) / frame  # no copy of a long window
    if len(audio) % frame:
        tail = np.asarray(audio[whole * frame :], dtype=np.float32)
        energy = np.append(energy, np.dot(tail, tail) / len(tail))
    levels = np.sqrt(energy)
    loud = float(np.percentile(levels, 99)) if levels.size else 0.0
    return levels >= max(SOUND_FLOOR, SOUND_BELOW_LOUDEST * loud)


def sound_seconds(audio: np.ndarray, rate: int = 16_000) -> float:
    """Seconds of ``audio`` that hold sound (``sounding``)."""
    return _seconds(sounding(audio, rate), len(audio), rate)


def _seconds(frames: np.ndarray, samples: int, rate: int) -> float:
    """The seconds ``sounding``'s frames of ``samples`` samples hold (a partial last frame
    for what it holds)."""
    frame = max(1, round(SOUND_FRAME_SECONDS * rate))
    seconds = int(np.count_nonzero(frames)) * frame / rate
    if frames.size and frames[-1] and samples % frame:
        seconds -= (frame - samples % frame) / rate
    return seconds


def heard(segments: list[Segment], audio: np.ndarray, rate: int = 16_000) -> list[Segment]:
    """The decoded ``segments`` of ``audio`` that its sound can hold: none when it holds
    less sound than a word (``MIN_SPEECH_SECONDS``); a segment with more words than the
    sound in and around it can hold (``word_capacity``, ``SEGMENT_REACH_SECONDS``) is
    dropped, and if those left hold more words than all of the sound could, none. Under
    ``SHORT_SOUND_SECONDS`` of sound, a segment Whisper is unsure of is dropped too
    (``unsure``). Nothing is cut short: text that does not fit its sound is made up,
    and there is no telling which of its words are real."""
    frames = sounding(audio, rate)
    total = _seconds(frames, len(audio), rate)
    if total < MIN_SPEECH_SECONDS:
        return []

    def around(segment: Segment) -> float:
        first = max(0, int((segment.start - SEGMENT_REACH_SECONDS) / SOUND_FRAME_SECONDS))
        end = int(np.ceil((segment.end + SEGMENT_REACH_SECONDS) / SOUND_FRAME_SECONDS))
        return min(total, int(np.count_nonzero(frames[first:end])) * SOUND_FRAME_SECONDS)

    kept = [
        segment
        for segment in segments
        if len(spoken_words(segment.text)) <= word_capacity(around(segment))
        and not (total < SHORT_SOUND_SECONDS and unsure(segment))
    ]
    if sum(len(spoken_words(segment.text)) for segment in kept) > word_capacity(total):
        return []
    return kept


def unsure(segment: Segment) -> bool:
    """Whether Whisper was unsure of ``segment``: its mean log probability under
    ``LOG_PROB_THRESHOLD`` or, where it has word timings, a word under
    ``UNSURE_WORD_PROBABILITY``."""
    words = segment.words or []
    return segment.avg_logprob < LOG_PROB_THRESHOLD or any(
        word.probability < UNSURE_WORD_PROBABILITY for word in words
    )


def word_capacity(seconds: float) -> int:
    """The most words ``seconds`` of sound can hold: none under ``MIN_SPEECH_SECONDS``,
    else ``WORDS_PER_SOUND_SECOND`` a second (one at least)."""
    if seconds < MIN_SPEECH_SECONDS:
        return 0
    return max(1, int(seconds * WORDS_PER_SOUND_SECOND))


def spoken_words(text: str) -> list[str]:
    """The words of ``text`` as said: lower case, punctuation gone ("Okay," -> "okay")."""
    return [word for word in re.sub(r"[^\w\s']", " ", text.lower()).split() if word.strip("'")]


def repeats_itself(words: Sequence[str]) -> bool:
    """Whether ``words`` say one thing twice in a row -- a phrase of two words or more
    ("okay yes okay yes") or one word three times ("alright alright alright"): how Whisper
    loops, and how one file's share takes its neighbour's copy of the same words."""
    for length in range(1, len(words) // 2 + 1):
        times = 3 if length == 1 else 2
        for first in range(len(words) - length * times + 1):
            phrase = words[first : first + length]
            if all(
                words[first + k * length : first + (k + 1) * length] == phrase
                for k in range(1, times)
            ):
                return True
    return False
