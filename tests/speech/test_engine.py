"""The engine's audio path: decoded once, window by window, cut where nobody speaks."""

import subprocess

import numpy as np
import pytest
from faster_whisper import decode_audio

from whisperq.errors import AudioDecodeError
from whisperq.schemas import Segment, TranscriptionOptions
from whisperq.speech import audio, engine, guard, segments

from helpers import CLEAR_SENTENCE, _normalize, word_error_rate, words

RATE = audio.SAMPLE_RATE


def test_the_cut_falls_in_the_quiet_stretch():
    rng = np.random.default_rng(0)
    samples = rng.normal(0, 0.3, RATE * 10).astype(np.float32)
    samples[int(RATE * 6.2) : int(RATE * 6.6)] = 0.0  # 0.4 s of silence
    cut = audio.quietest_cut(samples, RATE * 5, RATE * 8)
    assert RATE * 6.2 <= cut <= RATE * 6.6


def test_a_search_range_shorter_than_a_frame_cuts_at_its_end():
    assert audio.quietest_cut(np.ones(100, dtype=np.float32), 10, 20) == 20


def _beeps(path, seconds: int, rate: int = 8000, channels: int = 1):
    """A 0.5 s beep every second (0.5 s of silence between): where a cut belongs is known."""
    output = ["-r", str(rate), "-c", str(channels), "-b", "16", str(path)]
    effects = ["synth", "0.5", "sine", "440", "pad", "0", "0.5", "repeat", str(seconds - 1)]
    subprocess.run(["sox", "-n", *output, *effects], check=True)
    return path


def test_windows_cover_the_file_exactly_and_end_in_silence(tmp_path):
    path = _beeps(tmp_path / "beeps.wav", 30)
    whole = decode_audio(str(path), sampling_rate=RATE)
    windows = list(audio.stream_audio(path, window_seconds=7, search_seconds=2))

    assert 5 <= len(windows) <= 6  # 30 s in windows of 5 to 7 s
    joined = np.concatenate([window.samples for window in windows])
    assert len(joined) == len(whole)
    assert np.array_equal(joined, whole)  # the same samples as faster-whisper decodes
    offset = 0.0
    for window in windows:
        assert window.offset == pytest.approx(offset)
        assert len(window.samples) <= 7 * RATE
        offset += len(window.samples) / RATE
    for window in windows[:-1]:  # each cut lands in a silent half-second, not in a beep
        end_in_second = (window.offset + len(window.samples) / RATE) % 1.0
        assert 0.5 <= end_in_second <= 1.0


def test_stereo_and_telephone_rates_come_out_16k_mono(tmp_path):
    path = _beeps(tmp_path / "stereo.wav", 4, rate=8000, channels=2)
    (window,) = audio.stream_audio(path)
    assert window.samples.dtype == np.float32
    assert window.samples.ndim == 1
    assert len(window.samples) == pytest.approx(4 * RATE, abs=RATE // 100)


def test_what_is_not_audio_is_a_decode_error(tmp_path):
    garbage = tmp_path / "notes.wav"
    garbage.write_bytes(b"this is not a recording" * 100)
    with pytest.raises(AudioDecodeError, match="cannot decode audio"):
        list(audio.stream_audio(garbage))
    empty = tmp_path / "empty.wav"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", str(empty), "trim", "0", "0"], check=True)
    with pytest.raises(AudioDecodeError, match="no audio samples"):
        list(audio.stream_audio(empty))


def test_segments_move_to_the_files_time_and_the_prompt_is_the_tail():
    segment = Segment(start=1.0, end=2.5, text="hello", avg_logprob=-0.1, no_speech_prob=0.0)
    assert segments.shift(segment, 600.0).start == 601.0
    assert segments.shift(segment, 600.0).end == 602.5
    many = [segment.model_copy(update={"text": f"w{i} x{i}"}) for i in range(40)]
    prompt = segments.context_prompt(many, max_words=6)
    assert prompt == "w37 x37 w38 x38 w39 x39"
    assert segments.context_prompt([]) is None


def test_a_file_longer_than_a_window_is_transcribed_in_the_files_time(make_speech, tmp_path):
    first = make_speech(tmp_path / "a.wav", CLEAR_SENTENCE)
    second = make_speech(tmp_path / "b.wav", "Please send the confirmation to my email address.")
    joined = tmp_path / "long.wav"
    subprocess.run(["sox", str(first), str(second), str(joined)], check=True)
    first_seconds = len(decode_audio(str(first), sampling_rate=RATE)) / RATE

    config = engine.EngineConfig(window_seconds=first_seconds + 1)  # cut near the join
    loaded = engine.load_model(config)
    transcript = engine.transcribe_file(loaded, joined, TranscriptionOptions(), config)

    assert transcript.duration == pytest.approx(2 * first_seconds + 0.5, abs=3)
    reference = CLEAR_SENTENCE + " Please send the confirmation to my email address."
    assert word_error_rate(reference, transcript.text) <= 0.35
    later = [s for s in transcript.segments if "confirmation" in s.text.lower()]
    assert later and later[0].start >= first_seconds - 1.5  # in the file's time
    assert transcript.language == "en"


# --- text nobody said --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("no_speech", "logprob", "ratio", "seconds", "made_up"),
    [
        (0.77, -1.84, 1.0, 0.09, True),  # base, batched, a 0.09 s fragment: "you."
        (0.80, -0.91, 1.0, 0.09, True),  # tiny.en, batched, the same fragment: "Thank you."
        (0.11, -4.07, 1.2, 30.0, True),  # a ringing tone without VAD: "Byzantium ..."
        (0.11, -2.16, 1.1, 30.0, True),  # the same: "Arrgh, ac'n est!"
        (0.11, -0.08, 12.0, 30.0, True),  # and then "N-N-N-N-N-..."
        (0.27, -0.46, 0.8, 1.01, False),  # "Yes."
        (0.43, -0.31, 0.7, 1.25, False),  # "No."
        (0.20, -0.84, 0.7, 0.25, False),  # a short "No." the model believes is speech
        (0.70, -0.60, 1.5, 4.0, False),  # doubted, but decoded with confidence (Whisper's rule)
        (0.05, -1.50, 1.9, 20.0, False),  # hard real speech: unsure, but speech
    ],
)
def test_invented_text_is_told_from_short_real_answers(no_speech, logprob, ratio, seconds, made_up):
    assert guard.invented(no_speech, logprob, ratio, seconds) is made_up


def invented_words(text: str, said: str) -> list[str]:
    """The words of ``text`` that are no part of what was ``said`` (after Whisper's English
    normalisation): "count" is part of "account", "thank" of nothing in it."""
    spoken = _normalize(said)
    return [word for word in _normalize(text).split() if word not in spoken]


def test_a_truncated_fragment_gives_no_invented_words_even_batched(make_speech, tmp_path):
    text = "The account number is in the letter."
    padded = make_speech(tmp_path / "padded.wav", text, rate=16000)
    sentence = tmp_path / "sentence.wav"
    subprocess.run(["sox", padded, sentence, "trim", "0.8"], check=True)  # starts mid-word
    fragment = tmp_path / "fragment.wav"
    fragment.write_bytes(sentence.read_bytes()[: 44 + int(0.09 * 16000) * 2])  # header says more
    yes = make_speech(tmp_path / "yes.wav", "yes.")
    config = engine.EngineConfig(batch_size=8)  # faster-whisper's batched path has no guard
    loaded = engine.load_model(config)

    nothing = engine.transcribe_file(loaded, fragment, TranscriptionOptions(), config)
    answer = engine.transcribe_file(loaded, yes, TranscriptionOptions(), config)

    # No invented words: 0.09 s holds a piece of one word at most, and what Whisper makes
    # of it unguarded ("Thank you.", "you.") is words nobody said.
    assert invented_words(nothing.text, text) == [] and len(words(nothing.text)) <= 1
    assert words(answer.text) & {"yes", "yeah"}, answer.text  # "Yeah", "Yes.": either way
