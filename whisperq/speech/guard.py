"""The invented-text guard: text Whisper made up rather than heard, told from real speech.

``invented`` judges one decoded segment (silence, a tone, line noise, a fragment too short
to hold a word); ``share_in_doubt`` judges one file's share of a packed window, which is
decoded once, with no fallback.
"""

from __future__ import annotations

import zlib
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


def made_up(segment: Any, loop_check: bool = True) -> bool:
    """:func:`invented`, for a segment as faster-whisper yields it."""
    return invented(
        segment.no_speech_prob,
        segment.avg_logprob,
        segment.compression_ratio if loop_check else 0.0,
        segment.end - segment.start,
    )
