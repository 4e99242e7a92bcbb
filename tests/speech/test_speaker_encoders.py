"""The speaker encoders: CAM++'s numpy fbank against Kaldi's, real voices told apart, the
two ways of cutting windows agreeing, and the encoders chosen by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from whisperq.speech import speaker_encoders
from whisperq.speech.speaker_encoders import fbank, load_encoder

REAL = Path(__file__).parents[2] / "benchmarks" / "data" / "real"

# kaldi-native-fbank 1.23.0 (dither 0, 80 bins, snip edges; its other options at their
# defaults, which are 3D-Speaker's) on the first second of
# librivox-sense-and-sensibility-0870.flac as faster_whisper.decode_audio reads it: each
# band's mean over the 98 frames, and frame 50, rounded to 3 decimals.
KALDI_BAND_MEANS = [
    -7.324, -6.165, -5.991, -6.539, -6.696, -6.528, -6.27, -6.411, -6.789, -6.987,
    -6.806, -6.713, -6.501, -6.311, -6.349, -6.226, -5.88, -5.738, -5.778, -5.993,
    -6.002, -5.901, -6.223, -6.312, -6.445, -6.418, -6.526, -6.136, -6.248, -6.393,
    -6.252, -5.82, -5.631, -5.36, -5.118, -4.925, -4.976, -4.991, -4.886, -4.899,
    -4.666, -4.583, -4.707, -4.731, -4.461, -4.511, -4.542, -3.772, -3.255, -3.195,
    -3.263, -3.501, -3.16, -2.972, -2.899, -2.946, -2.799, -2.984, -3.237, -3.584,
    -4.029, -4.151, -4.392, -5.281, -6.17, -7.373, -7.621, -7.065, -7.078, -6.833,
    -6.967, -7.142, -7.032, -7.478, -8.095, -8.725, -9.411, -10.226, -11.778, -12.812,
]  # fmt: skip
KALDI_FRAME_50 = [
    -9.284, -9.461, -12.2, -11.823, -11.298, -10.932, -10.878, -11.353, -11.471, -12.297,
    -13.98, -14.342, -12.981, -11.154, -11.277, -11.325, -9.693, -9.546, -10.917, -11.877,
    -10.19, -9.742, -10.917, -10.24, -10.703, -12.417, -11.426, -9.064, -9.175, -10.507,
    -9.351, -8.48, -8.56, -9.826, -8.412, -8.626, -9.488, -9.103, -8.46, -8.654,
    -7.672, -8.96, -8.075, -7.241, -8.666, -7.517, -6.433, -7.162, -6.333, -5.504,
    -5.705, -7.631, -5.511, -4.642, -4.395, -3.706, -2.133, -2.257, -1.384, -1.091,
    -1.221, -2.047, -1.035, -1.033, -2.03, -4.867, -4.625, -3.351, -4.471, -3.998,
    -4.149, -3.92, -4.307, -4.834, -5.594, -5.557, -6.825, -7.587, -9.407, -10.705,
]  # fmt: skip


def read(name: str) -> np.ndarray:
    from faster_whisper import decode_audio

    return decode_audio(str(REAL / name), sampling_rate=16_000)


def test_the_fbank_is_kaldis():
    feats = fbank(read("librivox-sense-and-sensibility-0870.flac")[:16_000])

    assert feats.shape == (98, 80)  # 25 ms frames every 10 ms, edges snipped
    assert np.abs(feats.mean(axis=0) - KALDI_BAND_MEANS).max() < 2e-3
    assert np.abs(feats[50] - KALDI_FRAME_50).max() < 2e-3


def voice(encoder: speaker_encoders.Encoder, samples: np.ndarray) -> np.ndarray:
    """The mean voice print of 1.6 s windows every 0.8 s, unit length."""
    starts = np.arange(0.0, len(samples) / 16_000 - 1.6, 0.8)
    return speaker_encoders.unit(encoder.embed_at(samples, starts).mean(axis=0))


def test_two_real_people_are_further_apart_than_one_person_with_themselves():
    encoder = load_encoder("campplus")
    reader = np.concatenate(
        [read(f"librivox-sense-and-sensibility-{n:04d}.flac") for n in (870, 880)]
    )
    michael = read("mfa-acoustic-corpus.flac")
    half = len(reader) // 2
    first, second = voice(encoder, reader[:half]), voice(encoder, reader[half:])
    other = voice(encoder, michael[: 20 * 16_000])

    same = float(first @ second)
    different = max(float(first @ other), float(second @ other))
    assert same - different > 0.5, (same, different)  # measured: 0.92 against 0.05


def test_cutting_windows_or_slicing_one_fbank_gives_the_same_prints():
    samples = read("mfa-cold-corpus.flac")[: 12 * 16_000]
    starts = np.array([0.0, 0.8, 1.6, 3.21, 10.0, 11.5])  # on the 10 ms grid; the last padded
    for name in speaker_encoders.ENCODERS:
        encoder = load_encoder(name)
        cut = encoder.embed(speaker_encoders.cut_windows(samples, starts))
        sliced = encoder.embed_at(samples, starts)

        assert cut.shape == sliced.shape == (len(starts), encoder.dim)
        np.testing.assert_allclose(np.linalg.norm(sliced, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(sliced, cut, atol=1e-4)
    assert load_encoder().embed_at(samples, np.zeros(0)).shape == (0, 192)


def test_encoders_are_chosen_by_name():
    assert speaker_encoders.DEFAULT_ENCODER == "campplus"
    assert load_encoder() is load_encoder("campplus")
    assert load_encoder("ge2e").dim == 256
    with pytest.raises(ValueError, match="no speaker encoder 'xvector'"):
        load_encoder("xvector")
