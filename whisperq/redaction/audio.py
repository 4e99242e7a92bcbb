"""The reviewer's copy of a call: its audio with the redacted spans silenced.

``--redact-audio`` writes it next to the results (:func:`whisperq.keys.redacted_audio_key`)
as 16-bit PCM WAV at the input's own sample rate and channel count. Every channel is
silenced over every span -- the agent may repeat what the customer said -- and each span
is widened by :data:`MARGIN_S` on both sides, because word timings are only accurate to
a tenth of a second or so. Outside the spans the samples are the decoder's, untouched.
Decoding streams frame by frame: memory does not grow with the recording's length.
"""

from __future__ import annotations

import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from whisperq.errors import AudioDecodeError
from whisperq.schemas import RedactedSpan
from whisperq.speech.audio import open_audio, valid_frames

MARGIN_S: Final = 0.25  # word timings are ~0.1 s accurate; a clipped digit must not leak
CONTENT_TYPE: Final = "audio/wav"


@dataclass(frozen=True)
class RedactedAudio:
    sample_rate: int
    channels: int
    samples: int  # per channel
    silenced_samples: int  # per channel


def silence_spans(
    redactions: Iterable[RedactedSpan], margin: float = MARGIN_S
) -> list[tuple[float, float]]:
    """The stretches to silence: each redaction widened by ``margin`` (not before 0),
    overlapping or touching ones merged, in time order."""
    widened = sorted((max(0.0, r.start - margin), r.end + margin) for r in redactions)
    merged: list[tuple[float, float]] = []
    for start, end in widened:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def sample_ranges(spans: Sequence[tuple[float, float]], sample_rate: int) -> list[tuple[int, int]]:
    """Spans in seconds to ``[first, last)`` sample indices (rounded outward)."""
    return [(int(np.floor(a * sample_rate)), int(np.ceil(b * sample_rate))) for a, b in spans]


def silence(block: np.ndarray, offset: int, ranges: Sequence[tuple[int, int]]) -> int:
    """Zero, in place, the samples of ``block`` (shape (n, channels), its first sample at
    index ``offset`` of the file) that fall in ``ranges``; how many rows were zeroed."""
    zeroed = 0
    end = offset + block.shape[0]
    for first, last in ranges:
        a, b = max(first, offset), min(last, end)
        if a < b:
            block[a - offset : b - offset] = 0
            zeroed += b - a
    return zeroed


def write_redacted_wav(
    source: str | Path, target: str | Path, spans: Sequence[tuple[float, float]]
) -> RedactedAudio:
    """Decode ``source`` at its own rate and channels, silence ``spans`` (seconds), write
    ``target`` as 16-bit PCM WAV. Raises AudioDecodeError when the input cannot be read."""
    import av

    with open_audio(source) as container:
        codec = container.streams.audio[0].codec_context
        rate, layout = codec.sample_rate, codec.layout.name
        channels = codec.channels
        ranges = sample_ranges(spans, rate)
        resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)  # format only
        written = zeroed = 0
        with wave.open(str(target), "wb") as out:
            out.setnchannels(channels)
            out.setsampwidth(2)
            out.setframerate(rate)
            try:
                for frame in _frames(container, resampler):
                    block = frame.to_ndarray().reshape(-1, channels).copy()
                    zeroed += silence(block, written, ranges)
                    out.writeframes(block.astype("<i2").tobytes())
                    written += block.shape[0]
            except av.FFmpegError as error:
                raise AudioDecodeError(f"cannot decode audio: {error}") from error
    return RedactedAudio(rate, channels, written, zeroed)


def _frames(container: Any, resampler: Any) -> Iterable[Any]:
    for frame in valid_frames(container.decode(audio=0)):
        frame.pts = None
        yield from resampler.resample(frame)
    yield from resampler.resample(None)
