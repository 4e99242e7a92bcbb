"""Audio in: any file decoded to 16 kHz float32 samples, mono or left and right.

Long files come a window at a time (``stream_audio``), each cut where nobody speaks; a
short file comes whole (``short_audio``), to share a window with others. Decoding gives
faster-whisper's own samples, to the bit. Stereo files are mixed or split
(``decoded_as_stereo``, ``choose_channel_mode``). Nothing here transcribes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whisperq.errors import AudioDecodeError
from whisperq.schemas import Segment, TranscriptionOptions
from whisperq.speech import packing

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class AudioWindow:
    offset: float  # seconds from the start of the file
    samples: np.ndarray  # 16 kHz float32: shape (n,) mono, or (2, n) left and right


def quietest_cut(samples: np.ndarray, low: int, high: int, frame: int = SAMPLE_RATE // 20) -> int:
    """Where in ``samples[low:high]`` a window can end without cutting a word: the middle of
    the quietest ``frame``-long stretch (by mean energy)."""
    region = samples[low:high]
    frames = len(region) // frame
    if frames == 0:
        return high
    energy = np.square(region[: frames * frame].reshape(frames, frame)).mean(axis=1)
    quietest = frames - 1 - int(np.argmin(energy[::-1]))  # the latest of equals: long windows
    return low + quietest * frame + frame // 2


def stream_audio(
    path: str | Path,
    window_seconds: float = 600.0,
    search_seconds: float = 15.0,
    stereo: bool = False,
) -> Iterator[AudioWindow]:
    """Decode any audio file to 16 kHz float32 (mono, or left and right), a window at a time.

    Each window ends at the quietest point of its last ``search_seconds``, so a word is
    rarely cut in two. Memory holds one window, not the file. No temporary WAV is written.
    """
    window = int(window_seconds * SAMPLE_RATE)
    search = min(window // 2, int(search_seconds * SAMPLE_RATE))
    pending: list[np.ndarray] = []
    pending_samples = 0
    offset = 0
    for chunk in _decoded_chunks(path, stereo):
        pending.append(chunk)
        pending_samples += chunk.shape[-1]
        while pending_samples >= window:
            buffer = np.concatenate(pending, axis=-1)
            loudness = buffer.mean(axis=0) if stereo else buffer
            cut = quietest_cut(loudness, window - search, window)
            yield AudioWindow(offset / SAMPLE_RATE, buffer[..., :cut])
            offset += cut
            pending, pending_samples = [buffer[..., cut:]], buffer.shape[-1] - cut
    if pending_samples:
        yield AudioWindow(offset / SAMPLE_RATE, np.concatenate(pending, axis=-1))
    elif offset == 0:
        raise AudioDecodeError("the file holds no audio samples")


def decoded_as_stereo(path: str | Path, options: TranscriptionOptions) -> bool:
    """Whether the file is decoded as left and right (to split or to choose), not mono."""
    return options.channels != "mix" and audio_channels(path) >= 2


def audio_channels(path: str | Path) -> int:
    """How many channels the file's first audio stream has."""
    with open_audio(path) as container:
        return container.streams.audio[0].codec_context.channels


def open_audio(path: str | Path) -> Any:
    import av

    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except Exception as error:
        raise AudioDecodeError(f"cannot decode audio: {error}") from error
    if not container.streams.audio:
        container.close()
        raise AudioDecodeError("the file has no audio stream")
    return container


def _decoded_chunks(path: str | Path, stereo: bool = False) -> Iterator[np.ndarray]:
    """The file's audio as 16 kHz float32 pieces of about half a minute: shape (n,) for
    mono (FFmpeg's downmix), (2, n) for stereo."""
    import av

    layout = "stereo" if stereo else "mono"
    with open_audio(path) as container:
        # 16-bit, as faster-whisper's decode_audio does: the same samples to the bit. Decoding
        # is that sensitive: 1e-5 of noise moved one call's batched WER from 0.14 to 0.32.
        resampler = av.AudioResampler(format="s16p", layout=layout, rate=SAMPLE_RATE)
        # Resampling frames in groups is several times faster than one frame at a time.
        fifo = av.AudioFifo()
        try:
            for frame in valid_frames(container.decode(audio=0)):
                frame.pts = None
                fifo.write(frame)
                if fifo.samples >= SAMPLE_RATE * 30:
                    yield from _resampled(resampler, fifo.read(), stereo)
            if fifo.samples:
                yield from _resampled(resampler, fifo.read(), stereo)
            yield from _resampled(resampler, None, stereo)  # what the resampler still holds
        except av.FFmpegError as error:
            raise AudioDecodeError(f"cannot decode audio: {error}") from error


def valid_frames(frames: Iterator[Any]) -> Iterator[Any]:
    """Skip frames FFmpeg reports as invalid (a damaged stretch), as faster-whisper does."""
    import av

    iterator = iter(frames)
    while True:
        try:
            yield next(iterator)
        except StopIteration:
            return
        except av.InvalidDataError:
            continue


def _resampled(resampler: Any, frame: Any, stereo: bool) -> Iterator[np.ndarray]:
    for out in resampler.resample(frame):
        planes = out.to_ndarray().astype(np.float32) / 32768.0  # planar: a row per channel
        yield planes if stereo else planes.reshape(-1)


def choose_channel_mode(left: np.ndarray, right: np.ndarray) -> str:
    """ "split" when the two channels carry different speech, else "mix".

    Mix when one side is silent (over 20 dB quieter: a mono call in a stereo file) or
    when the sides are the same signal (correlation over 0.8: dual mono). Two speakers on
    their own channels correlate near 0, even with some echo of the other side.
    """
    loudness = [float(np.sqrt(np.mean(np.square(side)))) for side in (left, right)]
    if min(loudness) < 0.1 * max(loudness) or max(loudness) < 1e-4:
        return "mix"
    correlation = float(np.corrcoef(left, right)[0, 1])
    return "mix" if correlation > 0.8 else "split"


def short_audio(
    path: str | Path, options: TranscriptionOptions, limit: float = packing.WINDOW_SECONDS
) -> np.ndarray | None:
    """The file as mono 16 kHz samples when it is no longer than ``limit`` seconds and
    can be transcribed as one voice (mono, or a stereo file that ``options.channels``
    or ``choose_channel_mode`` mixes), else None. Stops decoding once past the limit."""
    stereo = decoded_as_stereo(path, options)
    chunks: list[np.ndarray] = []
    samples = 0
    for chunk in _decoded_chunks(path, stereo):
        chunks.append(chunk)
        samples += chunk.shape[-1]
        if samples > limit * SAMPLE_RATE:
            return None
    if not samples:
        raise AudioDecodeError("the file holds no audio samples")
    audio = np.concatenate(chunks, axis=-1)
    if not stereo:
        return audio
    if options.channels == "auto" and choose_channel_mode(audio[0], audio[1]) == "split":
        return None
    return audio.mean(axis=0)


def segment_audio(audio: np.ndarray, segment: Segment) -> np.ndarray:
    """The samples of one segment (at least one)."""
    first, last = int(segment.start * SAMPLE_RATE), int(segment.end * SAMPLE_RATE)
    return audio[first : max(last, first + 1)]
