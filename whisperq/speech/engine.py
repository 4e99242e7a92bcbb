"""The faster-whisper engine: load the model once per process, transcribe.

Its parts sit beside it in whisperq.speech: ``audio`` decodes files to 16 kHz samples,
``guard`` drops text Whisper made up, ``languages`` labels a multilingual file's segments,
``segments`` turns faster-whisper's segments into whisperq's, ``packing`` lays short files
in one window, and ``model_files`` finds and verifies the model (resolve_model, re-exported
here).

Nothing here knows about S3 or Celery: audio in (a path), segments out.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whisperq.errors import ModelError, OptionNotServed
from whisperq.schemas import (
    DEFAULT_SPEAKERS,
    ChannelInfo,
    ModelInfo,
    Segment,
    SpeakerLabel,
    TranscriptionOptions,
)
from whisperq.speech import guard, packing

# The worker uses SAMPLE_RATE, short_audio and language_shares through the engine
# (engine.short_audio, ...): they live in audio and languages, and are re-exported here.
from whisperq.speech.audio import (  # noqa: F401 (re-exported)
    SAMPLE_RATE,
    choose_channel_mode,
    decoded_as_stereo,
    short_audio,
    stream_audio,
)
from whisperq.speech.batch_language import (
    DETECTED,
    GIVEN,
    LEARNED,
    BatchLanguage,
    in_another_language,
)
from whisperq.speech.encoder_memo import EncoderMemo, remember_encodings
from whisperq.speech.guard import made_up, share_in_doubt, share_overfull
from whisperq.speech.languages import (  # noqa: F401 (re-exported)
    in_their_own_languages,
    language_shares,
)
from whisperq.speech.model_files import (  # noqa: F401 (re-exported)
    MODEL_CACHE,
    assemble_base_model,
    resolve_model,
)
from whisperq.speech.segments import context_prompt, label, segment_of, shift

BATCHED_MIN_SILENCE_MS = 600  # batched decoding's VAD cuts (see transcribe)

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
    # Each 30 s window decoded on its own, not prompted with the text before it
    # (faster-whisper's default): on 29.5 min of real recordings (8 kHz and 16 kHz) the
    # same WER (3.55% / 3.71% against 3.53% / 3.77%) at 1.4x the speed, the prompt being
    # what the decoder spends its time on (BENCHMARKS.md, "Short and long real recordings").
    condition_on_previous_text: bool = False


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
    speaker_labels: list[SpeakerLabel] | None = None  # diarized and named: how each name was

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
    # the model's encode, wrapped: language detection's pass is reused by the decode
    encoder_memo: EncoderMemo | None = None


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
        remember_encodings(model),
    )
    _loaded[config] = loaded
    return loaded


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
    speaker_labels = None
    if options.diarize and voices:
        mono = np.concatenate(voices).astype(np.float32)
        segments, speaker_labels = _with_speakers(mono, segments, options)
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
        speaker_labels=speaker_labels,
    )


# faster-whisper splits these languages' words without spaces between them; a packed
# window's text is rebuilt from words joined by spaces, so they are not packed.
WRITTEN_WITHOUT_SPACES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})


def packable(
    options: TranscriptionOptions,
    loaded: LoadedModel,
    batch_language: BatchLanguage | None = None,
) -> bool:
    """Whether a batch's short files may share a window (``transcribe_packed``): not when
    a file's own audio matters (diarization, split channels), nor when each segment's
    language is to be found (``multilingual``), nor for languages written without spaces
    (``WRITTEN_WITHOUT_SPACES``). With no language given to a multilingual model, the
    batch's language is learned from its first files (``batch_language``: what this
    process knows of the batch), until the batch proves too mixed to pack
    (``batch_language.packs``)."""
    language_known = options.language is not None or not loaded.model.model.is_multilingual
    learnable = batch_language is None or batch_language.packs
    return (
        (language_known or learnable)
        and options.language not in WRITTEN_WITHOUT_SPACES
        and not options.diarize
        and not options.multilingual
        and options.channels != "split"
    )


def transcribe_packed(
    loaded: LoadedModel,
    audios: list[np.ndarray],
    options: TranscriptionOptions,
    config: EngineConfig,
    batch_language: BatchLanguage | None = None,
) -> list[Transcript]:
    """Short files (mono 16 kHz, ``short_audio``), a transcript each, decoded several to a
    window (whisperq.speech.packing): each file's segments and words in its own time, none of
    one file's words in another's transcript. Only for ``packable`` options.

    One window is decoded in one language. With no language given to a multilingual
    model it is the batch's, learned (whisperq.speech.batch_language) from the languages
    detected in the batch's first files; ``batch_language`` is what this process knows of
    the batch and learns here (None: learn from these files only). Each transcript's
    ``options["language_source"]`` says how its language was decided: given, detected
    (the file decoded alone) or learned (packed in the batch's language)."""
    learning = options.language is None and loaded.model.model.is_multilingual
    batch = (batch_language or BatchLanguage()) if learning else None
    source = DETECTED if learning else GIVEN
    transcripts: dict[int, Transcript] = {}

    def alone(
        index: int, redone: str | None = None, language: tuple[str, float] | None = None
    ) -> Transcript:
        """File ``index`` decoded alone, in ``language`` when it was detected already
        (else Whisper detects it); ``redone``: why a file packed is decoded again alone."""
        known = language[0] if language else None
        part = transcribe(loaded, audios[index], options, config, language=known)
        used = part.options | {"channels": "mix", "packed_with": 0, "language_source": source}
        if redone:
            used["redone_alone"] = redone
        # told the language, faster-whisper reports 1.0: the detection's own is kept
        sure = language[1] if language else part.language_probability
        seconds = round(len(audios[index]) / SAMPLE_RATE, 3)
        return dataclasses.replace(part, duration=seconds, options=used, language_probability=sure)

    sound = [guard.sound_seconds(audio) for audio in audios]
    too_short = {i for i, seconds in enumerate(sound) if seconds < packing.MIN_SHARED_SOUND_SECONDS}
    detected: dict[int, tuple[str, float]] = {}  # languages found in files alone
    if batch is not None:
        detected = _learn_language(loaded, audios, too_short, batch)
        if batch.language is None or not batch.packs:
            # nothing learned (yet), or too mixed to pack: each file alone, as unpacked
            return [alone(index, language=detected.get(index)) for index in range(len(audios))]
        for index, found in detected.items():
            if found[0] != batch.language:  # outvoted: alone, in its own language
                transcripts[index] = alone(index, language=found)
                batch.add_packed(found[0])

    language = batch.language if batch is not None else None
    rest = [index for index in range(len(audios)) if index not in transcripts]
    files = [audios[index] for index in rest]  # placements index into this list
    speech = [packing.speech_bounds(audio) for audio in files]
    lengths = [len(audio) for audio in files]
    by_itself = [number for number, index in enumerate(rest) if index in too_short]
    # Words are how a window's text is split between its files.
    with_words = options.model_copy(update={"word_timestamps": True})
    for window in packing.plan(lengths, speech=speech, alone=by_itself):
        if len(window) == 1:  # nothing to share with: as any file alone
            index = rest[window[0].index]
            transcripts[index] = alone(index, language=detected.get(index))
            continue
        packed = packing.pack(files, window)
        part = transcribe(loaded, packed, with_words, config, language=language, one_pass=True)
        own = packing.split(part.segments, window, packed)
        doubtful = packing.lost(part.segments, window)
        doubtful |= packing.misplaced(part.segments, window, packed)
        for number, segments in own.items():
            if share_in_doubt(segments):
                doubtful.add(number)
            if share_overfull(segments, sound[rest[number]]):
                # it may hold its neighbours' words, which they then lack: all are redone
                doubtful |= {number} | packing.neighbours(number, window)
        used = part.options | {
            "word_timestamps": options.word_timestamps,
            "channels": "mix",
            "packed_with": len(window) - 1,
            "language_source": LEARNED if batch else GIVEN,
        }
        if language is not None:
            used["language"] = language  # forced: the batch's, as learned
        for placement in window:
            number, index = placement.index, rest[placement.index]
            if number in doubtful or not own[number]:
                # Whisper can give up on a window (base judged one of four real clips'
                # window "no speech"), lose its place in it, loop ("ha, ha, ha" over
                # three files from one laughing caller) or give a file its neighbours'
                # words: each file left empty or in doubt is decoded alone, with
                # Whisper's fallback, as if it had never shared.
                transcripts[index] = alone(index, "doubt", detected.get(index))
                if batch is not None:
                    batch.add_packed(transcripts[index].language)
                continue
            checked: dict[str, str] = {}
            if batch is not None:
                if in_another_language(own[number]):
                    # Whisper unsure of a share in the learned language: the file's own
                    # language is detected alone (one encoder pass); in another language
                    # the file is decoded alone in it, else its share stands.
                    found = detected.get(index) or detect_language(loaded, files[number])
                    batch.add_packed(found[0])
                    if found[0] != language:
                        transcripts[index] = alone(index, "language", found)
                        continue
                    checked = {"language_checked": found[0]}
                else:
                    batch.add_packed(part.language)
            transcripts[index] = Transcript(
                segments=own[number],
                language=part.language,
                language_probability=part.language_probability,
                duration=round(placement.duration, 3),
                options=used | checked,
            )
    return [transcripts[index] for index in range(len(audios))]


def _learn_language(
    loaded: LoadedModel, audios: list[np.ndarray], too_short: set[int], batch: BatchLanguage
) -> dict[int, tuple[str, float]]:
    """While ``batch``'s language is to be learned, the language of each of ``audios``
    that could share a window (not ``too_short``) is detected alone -- one encoder pass,
    nothing decoded -- and is a vote (``BatchLanguage.add_vote``). Returns what was found,
    by file."""
    detected: dict[int, tuple[str, float]] = {}
    for index, audio in enumerate(audios):
        if not batch.learning:
            break
        if index not in too_short:
            detected[index] = detect_language(loaded, audio)
            batch.add_vote(detected[index][0])
    if batch.language in WRITTEN_WITHOUT_SPACES:
        batch.stop(f"its language ({batch.language}) is written without spaces")
    return detected


def detect_language(loaded: LoadedModel, audio: np.ndarray) -> tuple[str, float]:
    """The language Whisper detects in ``audio``'s speech (its first 30 s from its first
    sound to its last, ``packing.speech_bounds``) and how sure it is: one encoder pass,
    nothing decoded. (Not faster-whisper's VAD: where it finds no speech, faster-whisper's
    detection has nothing to look at and fails.)"""
    first, end = packing.speech_bounds(audio)
    language, probability, _ = loaded.model.detect_language(audio[first:end])
    return language, float(probability)


def _with_speakers(
    audio: np.ndarray, segments: list[Segment], options: TranscriptionOptions
) -> tuple[list[Segment], list[SpeakerLabel] | None]:
    """Diarized segments, named by ``options.speakers`` when the batch gave names (the
    agent by cues in their words and the hotwords, else order of first appearance), and
    how each name was decided."""
    from whisperq.speech import diarization

    found = diarization.diarize(audio, segments, options.num_speakers)
    if options.speakers == DEFAULT_SPEAKERS:
        return found, None
    return diarization.name_speakers(found, options.speakers, options.hotwords)


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
    Audio with less sound than a word is not decoded; a word or two of sound is decoded
    once, at temperature 0; text its sound cannot hold, or that Whisper is unsure of
    there, is dropped (``guard.heard``).
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
    sound = guard.sound_seconds(audio)
    if sound < guard.MIN_SPEECH_SECONDS:  # less sound than a word: nothing to decode
        known = language or options.language
        if known is None and not loaded.model.model.is_multilingual:
            known = "en"  # what an English-only model reports
        return Transcript([], known or "", 1.0 if known else 0.0, seconds, used)
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
        "condition_on_previous_text": config.condition_on_previous_text
        and not options.multilingual,
    }
    if options.multilingual and not loaded.model.model.is_multilingual:
        raise OptionNotServed(
            f"the batch asks for multilingual transcription, but the model "
            f"{loaded.info.name!r} is English only: submit without --multilingual, or with "
            "--model set to a multilingual one (base, small, large-v3)."
        )
    wanted_words = decoding["word_timestamps"]
    if sound < guard.SHORT_SOUND_SECONDS and not one_pass:
        # A word or two: the guard weighs each word, and drops what Whisper is unsure of
        # rather than take its fallback's sampled guess (at temperature 1.0 a cut "No th-"
        # came back as "note that.", differently run to run).
        decoding |= {"word_timestamps": True, "temperature": 0.0}
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
        segment_of(segment)
        for segment in segments  # a generator: decoding happens here
        if not made_up(segment, loop_check=not one_pass)
    ]
    if not one_pass:  # a packed window's shares are judged by the caller, file by file
        result = guard.heard(result, audio)
    if options.multilingual:
        result = in_their_own_languages(loaded.model, audio, result, info.language, decoding)
    if not wanted_words:
        result = [segment.model_copy(update={"words": None}) for segment in result]
    return Transcript(
        segments=result,
        language=info.language,
        language_probability=info.language_probability,
        duration=info.duration,
        options=used,
    )
