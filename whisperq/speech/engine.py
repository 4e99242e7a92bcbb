"""The faster-whisper engine: load the model once per process, transcribe.

Finding and verifying the model is whisperq.speech.model_files' job (resolve_model,
re-exported here).

Nothing here knows about S3 or Celery: audio in (a path), segments out.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whisperq.errors import AudioDecodeError, ModelError, OptionNotServed
from whisperq.schemas import (
    DEFAULT_SPEAKERS,
    ChannelInfo,
    LanguageShare,
    ModelInfo,
    Segment,
    TranscriptionOptions,
    Word,
)
from whisperq.speech import packing
from whisperq.speech.model_files import (  # noqa: F401 (re-exported)
    MODEL_CACHE,
    assemble_base_model,
    resolve_model,
)

SAMPLE_RATE = 16_000

# The invented-text guard (``invented``). Whisper's own rule for "nothing was said" -- a
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
BATCHED_MIN_SILENCE_MS = 600
# Silero VAD's settings (faster-whisper's VadOptions), measured on real speech
# (benchmarks/real_speech.py, BENCHMARKS.md): at its default threshold (0.5) Silero misses
# real speech on telephone audio -- it kept 5.8 s of a 25.7 s 8 kHz recording of one man
# speaking -- and whisperq lost 15 WER points there against no VAD at all. At 0.05, with
# a second of padding and only silences over 3 s cut, it skips what is really silent
# (hold, the other side's turns) and keeps the speech: 8 kHz 0.348 -> 0.201 (no VAD 0.195).
VAD_PARAMETERS: dict[str, float] = {
    "threshold": 0.05,
    "speech_pad_ms": 1000,
    "min_silence_duration_ms": 3000,
}
# The same for the clips of a split call, on each channel (stereo 0.333 -> 0.181). Cuts
# stay short (1 s of silence, 0.4 s pads): a clip must not run across the other side's
# turn, or its segment spans both (padding 0.8 s and 2 s cuts: 0.172, and merged turns).
CLIP_VAD_PARAMETERS: dict[str, float] = {
    "threshold": 0.05,
    "speech_pad_ms": 400,
    "min_silence_duration_ms": 1000,
}


@dataclass(frozen=True)
class EngineConfig:
    model: str = "tiny.en"
    device: str = "auto"
    compute_type: str = "auto"
    cpu_threads: int = 0
    concurrency: int = 1
    beam_size: int = 5
    vad: bool = True
    batch_size: int = 0  # 0 = auto: 1 (sequential) on CPU, 16 on CUDA
    # Long files are decoded and transcribed this many seconds at a time, so memory stays
    # bounded whatever the length (a whole 3-hour file would need several GB).
    window_seconds: float = 600.0


def choose_batch_size(requested: int, device: str) -> int:
    """Windows decoded together. On CPU the default stays sequential: measured on 16 min of
    calls (base, int8, 2 cores), batch 8 ran 1.6x faster but raised WER from 0.107 to 0.135
    (BENCHMARKS.md). On CUDA, batching is how the GPU is kept busy (not measured here)."""
    if requested > 0:
        return requested
    return 16 if device == "cuda" else 1


@dataclass
class Transcript:
    segments: list[Segment]
    language: str
    language_probability: float
    duration: float
    options: dict[str, Any] = field(default_factory=dict)
    channel_mode: str = "mix"
    channels: list[ChannelInfo] | None = None

    @property
    def text(self) -> str:
        return " ".join(segment.text.strip() for segment in self.segments if segment.text.strip())


def choose_device(requested: str) -> str:
    if requested != "auto":
        return requested
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def choose_compute_type(device: str, requested: str) -> str:
    """int8 on CPU (fastest there at equal accuracy), float16 on CUDA."""
    if requested != "auto":
        return requested
    return "float16" if device == "cuda" else "int8"


def choose_concurrency(
    requested: int, device: str, cores: int | None = None, memory_gb: float | None = None
) -> int:
    """Pool processes per worker. On CPU one per core, each with one thread: measured on 2
    cores (base, beam 5), two 1-thread processes ran 1.16x faster than one 2-thread process,
    and while one waits on S3 the other computes. Each process holds its own model, so
    leave 2 GB per process. On CUDA one process: batching is what keeps the GPU busy."""
    if requested > 0:
        return requested
    if device == "cuda":
        return 1
    cores = cores or os.cpu_count() or 1
    memory_gb = memory_gb if memory_gb is not None else _memory_gb()
    return max(1, min(cores, int(memory_gb // 2)))


def _memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return 4.0


def choose_cpu_threads(requested: int, concurrency: int, cores: int | None = None) -> int:
    """Split the cores between the worker's processes unless told otherwise."""
    if requested > 0:
        return requested
    return max(1, (cores or os.cpu_count() or 1) // max(1, concurrency))


@dataclass
class LoadedModel:
    model: Any  # faster_whisper.WhisperModel
    info: ModelInfo
    batched: Any = None  # faster_whisper.BatchedInferencePipeline over the same model


_loaded: dict[EngineConfig, LoadedModel] = {}


def load_model(config: EngineConfig) -> LoadedModel:
    """The model for ``config``, loaded on first use and kept for the process's life."""
    if config in _loaded:
        return _loaded[config]
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    device = choose_device(config.device)
    compute_type = choose_compute_type(device, config.compute_type)
    path = resolve_model(config.model)
    try:
        model = WhisperModel(
            path,
            device=device,
            compute_type=compute_type,
            cpu_threads=choose_cpu_threads(config.cpu_threads, config.concurrency),
        )
    except Exception as error:
        raise ModelError(
            f"Cannot load model {config.model!r} ({path}) on {device}/{compute_type}: {error}. "
            "Use a local model directory, a packaged name (tiny.en), or a hub name on a "
            "machine that reaches the Hugging Face hub."
        ) from error
    loaded = LoadedModel(
        model,
        ModelInfo(name=config.model, device=device, compute_type=compute_type),
        BatchedInferencePipeline(model),
    )
    _loaded[config] = loaded
    return loaded


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


@dataclass
class _Track:
    """One voice being transcribed: the mix, or one channel of a split file."""

    speaker: str | None
    channel: int | None
    language: str | None
    language_probability: float = 1.0
    prompt: str | None = None
    words: int = 0


def transcribe_file(
    loaded: LoadedModel, path: str | Path, options: TranscriptionOptions, config: EngineConfig
) -> Transcript:
    """Transcribe a file window by window, so memory stays bounded for any length.

    Stereo files are mixed or split (``options.channels``; auto decides on the first
    window). Split: each channel is transcribed on its own, with VAD so the silent side
    costs little, and the segments are merged in time order with the channel's speaker.
    For files longer than a window, each voice keeps the language found in its first
    window, and each window is prompted with the end of that voice's text before it, as
    Whisper itself conditions each 30-second window on the previous one.
    """
    stereo = decoded_as_stereo(path, options)
    mode = "split" if stereo and options.channels == "split" else None if stereo else "mix"
    tracks: list[_Track] = []
    segments: list[Segment] = []
    duration = 0.0
    options_used: dict[str, Any] = {}
    voices: list[np.ndarray] = []  # the mono audio, kept for diarization (float16: 115 MB/h)
    for window in stream_audio(path, config.window_seconds, stereo=stereo):
        if mode is None:
            mode = choose_channel_mode(window.samples[0], window.samples[1])
        if not tracks:
            tracks = (
                [
                    _Track(label, index, options.language)
                    for index, label in enumerate(options.speakers)
                ]
                if mode == "split"
                else [_Track(None, None, options.language)]
            )
        if mode == "split":
            signals = list(window.samples)
        elif stereo:
            signals = [window.samples.mean(axis=0)]
        else:
            signals = [window.samples]
        if options.diarize:
            voices.append(signals[0].astype(np.float16))
        for track, signal in zip(tracks, signals, strict=True):
            prompt = " ".join(p for p in (options.initial_prompt, track.prompt) if p) or None
            clips = speech_clips(signal) if mode == "split" and vad_on(options, config) else None
            # multilingual: every window finds its own language, not the first window's
            language = None if options.multilingual else track.language
            part = transcribe(
                loaded, signal, options, config, language=language, prompt=prompt, clips=clips
            )
            if track.language is None and part.language:
                track.language = part.language
                track.language_probability = part.language_probability
            track.prompt = context_prompt(part.segments) or track.prompt
            track.words += len(part.text.split())
            segments += [
                label(shift(segment, window.offset), track.speaker, track.channel)
                for segment in part.segments
            ]
            options_used = part.options
        duration += window.samples.shape[-1] / SAMPLE_RATE
    segments.sort(key=lambda segment: (segment.start, segment.channel or 0))
    if options.diarize and voices:
        segments = _with_speakers(np.concatenate(voices).astype(np.float32), segments, options)
    main = max(tracks, key=lambda track: track.words)  # the language of who spoke most
    channels = None
    if mode == "split":
        channels = [
            ChannelInfo(
                channel=track.channel or 0,
                speaker=track.speaker or "",
                language=track.language or "",
                language_probability=round(track.language_probability, 4),
            )
            for track in tracks
        ]
    return Transcript(
        segments=segments,
        language=main.language or "",
        language_probability=main.language_probability,
        duration=round(duration, 3),
        options=options_used | {"channels": mode},
        channel_mode=mode or "mix",
        channels=channels,
    )


# faster-whisper splits these languages' words without spaces between them; a packed
# window's text is rebuilt from words joined by spaces, so they are not packed.
WRITTEN_WITHOUT_SPACES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})


def packable(options: TranscriptionOptions, loaded: LoadedModel) -> bool:
    """Whether a batch's short files may share a window (``transcribe_packed``): not when
    a file's own audio matters (diarization, split channels), nor when each file's
    language is to be found (one window, one language: a German voicemail packed with
    English ones would be decoded as English), nor for languages written without spaces
    (``WRITTEN_WITHOUT_SPACES``)."""
    language_known = options.language is not None or not loaded.model.model.is_multilingual
    return (
        language_known
        and options.language not in WRITTEN_WITHOUT_SPACES
        and not options.diarize
        and not options.multilingual
        and options.channels != "split"
    )


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


def transcribe_packed(
    loaded: LoadedModel,
    audios: list[np.ndarray],
    options: TranscriptionOptions,
    config: EngineConfig,
) -> list[Transcript]:
    """Short files (mono 16 kHz, ``short_audio``), a transcript each, decoded several to a
    window (whisperq.speech.packing): each file's segments and words in its own time, none of
    one file's words in another's transcript. Only for ``packable`` options."""
    # Words are how a window's text is split between its files.
    with_words = options.model_copy(update={"word_timestamps": True})
    transcripts: dict[int, Transcript] = {}

    def alone(placement: packing.Placement) -> Transcript:
        part = transcribe(loaded, audios[placement.index], options, config)
        used = part.options | {"channels": "mix", "packed_with": 0}
        return dataclasses.replace(part, duration=round(placement.duration, 3), options=used)

    speech = [packing.speech_bounds(audio) for audio in audios]
    for window in packing.plan([len(audio) for audio in audios], speech=speech):
        if len(window) == 1:  # nothing to share with: as any file alone
            transcripts[window[0].index] = alone(window[0])
            continue
        packed = packing.pack(audios, window)
        part = transcribe(loaded, packed, with_words, config, one_pass=True)
        own = packing.split(part.segments, window, packed)
        doubtful = packing.lost(part.segments, window) | {
            index for index, segments in own.items() if share_in_doubt(segments)
        }
        used = part.options | {
            "word_timestamps": options.word_timestamps,
            "channels": "mix",
            "packed_with": len(window) - 1,
        }
        for placement in window:
            index = placement.index
            if index in doubtful or not own[index]:
                # Whisper can give up on a window (base judged one of four real clips'
                # window "no speech"), lose its place in it, or loop ("ha, ha, ha" over
                # three files from one laughing caller): each file left empty or in doubt
                # is decoded alone, with Whisper's fallback, as if it had never shared.
                transcripts[index] = alone(placement)
                continue
            transcripts[index] = Transcript(
                segments=own[index],
                language=part.language,
                language_probability=part.language_probability,
                duration=round(placement.duration, 3),
                options=used,
            )
    return [transcripts[index] for index in range(len(audios))]


def _with_speakers(
    audio: np.ndarray, segments: list[Segment], options: TranscriptionOptions
) -> list[Segment]:
    """Diarized segments, named by ``options.speakers`` when the batch gave names."""
    from whisperq.speech import diarization

    found = diarization.diarize(audio, segments, options.num_speakers)
    if options.speakers != DEFAULT_SPEAKERS:
        found = diarization.rename(found, options.speakers)
    return found


def _in_their_own_languages(
    loaded: LoadedModel,
    audio: np.ndarray,
    segments: list[Segment],
    decoded_in: str,
    decoding: dict[str, Any],
) -> list[Segment]:
    """Each segment labelled with its language; a segment in another language than the one
    its window was decoded in is decoded again, alone, in its own (faster-whisper picks one
    language per 30 s window: a German sentence between two English ones came back as
    English-sounding nonsense)."""
    done: list[Segment] = []
    for segment in segments:
        clip = segment_audio(audio, segment)
        language = clip_language(loaded, clip)
        if language == decoded_in:
            done.append(segment.model_copy(update={"language": language}))
            continue
        again = decoding | {
            "language": language,
            "multilingual": False,
            "vad_filter": False,
            "initial_prompt": None,
        }
        again.pop("clip_timestamps", None)
        again.pop("vad_parameters", None)
        parts, _ = loaded.model.transcribe(clip, **again)
        redone = [
            shift(_segment_of(part), segment.start).model_copy(update={"language": language})
            for part in parts
            if part.text.strip() and not _made_up(part)
        ]
        done += redone or [segment.model_copy(update={"language": language})]
    return done


def _segment_of(segment: Any) -> Segment:
    """faster-whisper's segment as whisperq stores it."""
    return Segment(
        start=round(segment.start, 3),
        end=round(segment.end, 3),
        text=segment.text.strip(),
        avg_logprob=segment.avg_logprob,
        no_speech_prob=segment.no_speech_prob,
        words=None
        if segment.words is None
        else [
            Word(
                start=round(word.start, 3),
                end=round(word.end, 3),
                word=word.word.strip(),
                probability=round(word.probability, 4),
            )
            for word in segment.words
        ],
    )


def segment_audio(audio: np.ndarray, segment: Segment) -> np.ndarray:
    """The samples of one segment (at least one)."""
    first, last = int(segment.start * SAMPLE_RATE), int(segment.end * SAMPLE_RATE)
    return audio[first : max(last, first + 1)]


def clip_language(loaded: LoadedModel, clip: np.ndarray) -> str:
    """The language spoken in one segment's audio: Whisper's language detection on it
    alone (faster-whisper's ``multilingual`` switches the decoder per window but does not
    say which language each segment is in)."""
    language, _, _ = loaded.model.detect_language(clip)
    return str(language)


def language_shares(segments: list[Segment]) -> list[LanguageShare]:
    """Each language's share of the segments' time, largest first."""
    seconds: dict[str, float] = {}
    for segment in segments:
        if segment.language:
            seconds[segment.language] = (
                seconds.get(segment.language, 0.0) + segment.end - segment.start
            )
    total = sum(seconds.values()) or 1.0
    return [
        LanguageShare(language=lang, seconds=round(time, 3), share=round(time / total, 4))
        for lang, time in sorted(seconds.items(), key=lambda item: -item[1])
    ]


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


def _made_up(segment: Any, loop_check: bool = True) -> bool:
    """:func:`invented`, for a segment as faster-whisper yields it."""
    return invented(
        segment.no_speech_prob,
        segment.avg_logprob,
        segment.compression_ratio if loop_check else 0.0,
        segment.end - segment.start,
    )


def vad_on(options: TranscriptionOptions, config: EngineConfig) -> bool:
    """The batch's VAD choice, else the worker's."""
    return config.vad if options.vad is None else options.vad


def speech_clips(audio: np.ndarray) -> list[tuple[float, float]]:
    """Where someone speaks on one channel of a split call (Silero VAD), in seconds.

    Each clip is decoded on its own, so a segment never runs from one turn across the
    other speaker's into the next (faster-whisper's own VAD filter joins all the speech
    into one stream first). Pauses under a second stay inside a clip.
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    vad = VadOptions(max_speech_duration_s=30, **CLIP_VAD_PARAMETERS)
    return [
        (round(r["start"] / SAMPLE_RATE, 3), round(r["end"] / SAMPLE_RATE, 3))
        for r in get_speech_timestamps(audio, vad)
    ]


def shift(segment: Segment, seconds: float) -> Segment:
    """A window's segment (and its words) in the file's time."""
    if not seconds:
        return segment

    def moved(start: float, end: float) -> dict[str, float]:
        return {"start": round(start + seconds, 3), "end": round(end + seconds, 3)}

    words = None
    if segment.words is not None:
        words = [word.model_copy(update=moved(word.start, word.end)) for word in segment.words]
    return segment.model_copy(update=moved(segment.start, segment.end) | {"words": words})


def label(segment: Segment, speaker: str | None, channel: int | None) -> Segment:
    """Who said it: on the segment and on each of its words."""
    if speaker is None:
        return segment
    who = {"speaker": speaker, "channel": channel}
    words = None
    if segment.words is not None:
        words = [word.model_copy(update=who) for word in segment.words]
    return segment.model_copy(update=who | {"words": words})


def context_prompt(segments: list[Segment], max_words: int = 50) -> str | None:
    """The last words of a window, to prompt the next one with (Whisper's prompt holds
    at most 223 tokens; 50 words stay well inside it)."""
    words = " ".join(segment.text for segment in segments).split()
    return " ".join(words[-max_words:]) or None


def transcribe(
    loaded: LoadedModel,
    audio: np.ndarray,
    options: TranscriptionOptions,
    config: EngineConfig,
    *,
    language: str | None = None,
    prompt: str | None = None,
    clips: list[tuple[float, float]] | None = None,
    one_pass: bool = False,
) -> Transcript:
    """Transcribe decoded mono audio; batch options override the worker's defaults.

    ``clips``: decode only these stretches (seconds), each on its own, instead of letting
    faster-whisper's VAD filter find the speech. ``one_pass``: decode once, greedy
    beam at temperature 0, with no fallback and no repetition-loop check, for a packed
    window: its files may say the same thing (not a loop), and a window that goes wrong
    would cost every file a fallback; the caller judges each file's share instead.
    """
    beam_size = options.beam_size or config.beam_size
    vad = vad_on(options, config)
    batch_size = choose_batch_size(config.batch_size, loaded.info.device)
    # The batch's options as submitted, with the worker's defaults filled in.
    used = options.model_dump(mode="json") | {
        "beam_size": beam_size,
        "vad": vad,
        "batch_size": batch_size,
        "model": loaded.info.name,
    }
    seconds = len(audio) / SAMPLE_RATE
    if clips is not None and not clips:  # nobody speaks here: nothing to decode
        return Transcript([], language or "", 0.0, seconds, used)
    decoding: dict[str, Any] = {
        "language": language or options.language,
        "task": options.task,
        "beam_size": beam_size,
        "vad_filter": vad,
        # Redaction places its tags by word timings: it needs them even when not asked,
        # and diarization cuts segments where the speaker changes between words.
        "word_timestamps": options.word_timestamps or options.redacting or options.diarize,
        "hotwords": options.hotwords,
        "initial_prompt": prompt if prompt is not None else options.initial_prompt,
        "multilingual": options.multilingual,
        # a window in another language must not be prompted with the last one's text
        "condition_on_previous_text": not options.multilingual,
    }
    if options.multilingual and not loaded.model.model.is_multilingual:
        raise OptionNotServed(
            f"the batch asks for multilingual transcription, but the model "
            f"{loaded.info.name!r} is English only: submit without --multilingual, or with "
            "--model set to a multilingual one (base, small, large-v3)."
        )
    if vad:
        decoding["vad_parameters"] = dict(VAD_PARAMETERS)
    if one_pass:
        decoding |= {"temperature": 0.0, "compression_ratio_threshold": None}
    if batch_size > 1:
        if vad:
            # faster-whisper's batched default cuts speech at 160 ms pauses, inside
            # sentences; 600 ms measured WER 0.122 against 0.135 (BENCHMARKS.md).
            decoding["vad_parameters"]["min_silence_duration_ms"] = BATCHED_MIN_SILENCE_MS
        if clips:
            decoding |= {
                "vad_filter": False,
                "clip_timestamps": [{"start": start, "end": end} for start, end in clips],
            }
        segments, info = loaded.batched.transcribe(audio, batch_size=batch_size, **decoding)
    else:
        if clips:
            decoding |= {
                "vad_filter": False,
                "clip_timestamps": [t for clip in clips for t in clip],
            }
        segments, info = loaded.model.transcribe(audio, **decoding)
    result = [
        _segment_of(segment)
        for segment in segments  # a generator: decoding happens here
        if not _made_up(segment, loop_check=not one_pass)
    ]
    if options.multilingual:
        result = _in_their_own_languages(loaded, audio, result, info.language, decoding)
    return Transcript(
        segments=result,
        language=info.language,
        language_probability=info.language_probability,
        duration=info.duration,
        options=used,
    )
