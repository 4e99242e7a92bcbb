"""One encoder pass for a file decoded with its language detected (whisperq.speech.encoder_memo)."""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper import decode_audio

from whisperq.schemas import TranscriptionOptions
from whisperq.speech import engine
from whisperq.speech.encoder_memo import EncoderMemo, same_window

from helpers import words


def features(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((80, 3000)).astype(np.float32)


def test_inputs_differing_in_one_frame_are_the_same_window():
    first = features()
    second = first.copy()
    second[:, 2999] = 0.0  # decoding pads after all but the extractor's last frame
    assert same_window(first, second)
    second[:, 1500] += 1.0
    assert not same_window(first, second)
    assert not same_window(first, features(1))
    assert not same_window(first, first[:, :2000])


class CountedEncoder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, given: np.ndarray) -> str:
        self.calls += 1
        return f"output {self.calls}"


def test_the_same_window_twice_is_encoded_once_and_given_once():
    encoder = CountedEncoder()
    memo = EncoderMemo(encoder)
    window = features()
    assert memo(window) == "output 1"
    assert memo(window) == "output 1"  # detection's pass, reused by the decode
    assert memo(window) == "output 2"  # given once: a third call encodes again
    assert memo(features(1)) == "output 3"
    assert (encoder.calls, memo.reused) == (3, 1)


@pytest.fixture(scope="module")
def base():
    config = engine.EngineConfig(model="base")
    return engine.load_model(config), config


def test_a_file_with_no_language_given_is_encoded_once(base, tmp_path, make_speech):
    loaded, config = base
    memo = loaded.encoder_memo
    assert memo is not None and loaded.model.encode is memo
    counted = CountedEncoder()
    real, memo.encode = memo.encode, lambda given: (counted(given), real(given))[1]
    said = "Hello, I am calling about my account, it was charged twice last week."
    # (English: base's detection of espeak-ng German is borderline, about 0.3)
    audio = decode_audio(str(make_speech(tmp_path / "en.wav", said)))
    reused = memo.reused  # the model (and its memo) is shared with other tests
    try:
        transcript = engine.transcribe(loaded, audio, TranscriptionOptions(), config)
    finally:
        memo.encode = real
    # the language detected and the file decoded from one encoder pass
    assert (counted.calls, memo.reused - reused) == (1, 1)
    assert transcript.language == "en" and transcript.options["language"] is None
    heard = words(" ".join(segment.text for segment in transcript.segments))
    assert {"calling", "account", "twice"} <= heard, heard
