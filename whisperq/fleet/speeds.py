"""How fast each model runs on each kind of instance: the figures the simulator and
docs/costs.md use, each marked measured (with the command), published (with the source) or
estimated (with the reasoning). Standard library only.

A CPU figure is for an instance of ``vcpus`` vCPUs and is scaled linearly to other CPU
sizes (optimistic for big instances: memory bandwidth and the sequential parts of decoding
do not scale). A GPU figure is for one instance type only.

Short files (``SHORT_FILE_SECONDS``) run at another speed: alone, each pays a whole 30 s
window; packed several to a window by the worker (whisperq.speech.packing), less.
``SHORT`` says how fast, per model, measured or estimated; ``job_speed`` applies it, packed
where a batch's files may be packed (``may_pack``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

Basis = Literal["measured", "published", "estimate"]


@dataclass(frozen=True)
class SpeedFigure:
    model: str
    kind: Literal["cpu", "gpu"]
    speed_x: float  # audio seconds per wall second of the instance below, all its workers
    basis: Basis
    source: str  # the command, the publication, or how it was estimated
    vcpus: int | None = None  # cpu: the instance size the figure is for
    instance_type: str | None = None  # gpu: the type the figure is for

    def describe(self) -> str:
        where = self.instance_type or f"{self.vcpus} vCPUs"
        return f"{self.model}: {self.speed_x:g}x per {where} ({self.basis}: {self.source})"


# small, published: faster-whisper 1.1.0's README, 13 min of audio in 1m42s, int8, beam 5,
# 8 threads of an Intel Core i7-12700K = 7.6x. Taken as 8 vCPUs (optimistic: a c6a vCPU is
# half an EPYC core).
_SMALL_8_VCPUS: Final = 13 * 60 / 102
# Larger models on CPU, estimated from small's figure by the work per second of audio:
# the encoder (large: 32 layers of width 1280; small: 12 of 768) costs 7.4x small's; the
# decoder (beam 5) 7.4x for large-v3 (32 layers), 0.46x for distil-large-v3 (2 layers).
# With the encoder about 40% of small's CPU time: large-v3 7.4x slower, distil-large-v3 3.2x.
_ENCODER_RATIO: Final = (32 * 1280**2) / (12 * 768**2)
_DISTIL_DECODER_RATIO: Final = (2 * 1280**2) / (12 * 768**2)
_SMALL_2_VCPUS: Final = _SMALL_8_VCPUS / 4

SPEEDS: Final[tuple[SpeedFigure, ...]] = (
    SpeedFigure(
        "tiny.en",
        "cpu",
        14.0,
        "estimate",
        "about twice base's measured speed (tiny.en has 4 layers to base's 6, width 384 to 512)",
        vcpus=2,
    ),
    SpeedFigure(
        "base",
        "cpu",
        7.0,
        "measured",
        "`benchmarks/throughput.py`, int8, beam 5, sequential, 2-core x86 VM "
        "(BENCHMARKS.md: 6.8-7.6x baseline, 7.3-9.2x end to end)",
        vcpus=2,
    ),
    SpeedFigure(
        "small",
        "cpu",
        round(_SMALL_2_VCPUS, 2),
        "published",
        "faster-whisper 1.1.0 README: 13 min in 1m42s, int8, beam 5, 8 threads of an "
        "i7-12700K, taken as 8 vCPUs and scaled to 2",
        vcpus=2,
    ),
    SpeedFigure(
        "distil-large-v3",
        "cpu",
        round(_SMALL_2_VCPUS / (0.4 * _ENCODER_RATIO + 0.6 * _DISTIL_DECODER_RATIO), 2),
        "estimate",
        "small's published figure scaled by the encoder and decoder work (32-layer large "
        "encoder, 2-layer decoder); never run here",
        vcpus=2,
    ),
    SpeedFigure(
        "large-v3",
        "cpu",
        round(_SMALL_2_VCPUS / _ENCODER_RATIO, 2),
        "estimate",
        "small's published figure scaled by the encoder and decoder work (32 + 32 layers "
        "of width 1280); never run here",
        vcpus=2,
    ),
    SpeedFigure(
        "large-v3",
        "gpu",
        51.0,
        "published",
        "faster-whisper large-v2 (the same size), batch 16, fp16, on a T4 (design notes); "
        "not run here: no GPU was lent",
        instance_type="g4dn.xlarge",
    ),
    SpeedFigure(
        "distil-large-v3",
        "gpu",
        89.0,
        "published",
        "faster-distil-whisper-large-v3, batch 24, fp16, on a T4 (design notes); not run "
        "here: no GPU was lent",
        instance_type="g4dn.xlarge",
    ),
)

_SIZE_VCPUS: Final = {"medium": 1, "large": 2, "xlarge": 4}


def instance_vcpus(instance_type: str) -> int:
    """vCPUs of an EC2 type from its size: large = 2, xlarge = 4, Nxlarge = 4N."""
    match = re.fullmatch(r"[a-z][a-z0-9-]*\.(\d*)(medium|large|xlarge)", instance_type)
    if match is None:
        raise ValueError(f"cannot tell the vCPUs of instance type {instance_type!r}")
    multiple, size = match.groups()
    if multiple and size != "xlarge":
        raise ValueError(f"cannot tell the vCPUs of instance type {instance_type!r}")
    return _SIZE_VCPUS[size] * (int(multiple) if multiple else 1)


def is_gpu_type(instance_type: str) -> bool:
    return instance_type.split(".")[0][:1] in ("g", "p")


def speed_for(model: str, instance_type: str) -> SpeedFigure:
    """The figure for ``model`` on ``instance_type``: a CPU figure scaled to its vCPUs, a
    GPU figure for that very type. ValueError, saying what to give instead, when none."""
    if is_gpu_type(instance_type):
        for figure in SPEEDS:
            if (figure.model, figure.instance_type) == (model, instance_type):
                return figure
        raise ValueError(
            f"no speed figure for {model} on GPU type {instance_type}; give --speed-x "
            "(audio seconds per wall second of one instance)"
        )
    for figure in SPEEDS:
        if figure.model == model and figure.kind == "cpu" and figure.vcpus:
            scaled = figure.speed_x * instance_vcpus(instance_type) / figure.vcpus
            return SpeedFigure(
                model,
                "cpu",
                round(scaled, 3),
                figure.basis,
                figure.source
                + ("" if scaled == figure.speed_x else f"; scaled linearly to {instance_type}"),
                vcpus=instance_vcpus(instance_type),
            )
    known = sorted({figure.model for figure in SPEEDS if figure.kind == "cpu"})
    raise ValueError(
        f"no speed figure for model {model!r} on CPU (known: {', '.join(known)}); give "
        "--speed-x (audio seconds per wall second of one instance)"
    )


# --- short files, packed several to a window ------------------------------------------------

# A file this long or shorter may share a window (whisperq.speech.packing.WINDOW_SECONDS,
# which a test keeps equal: this module stays standard library only).
SHORT_FILE_SECONDS: Final = 29.0
# Languages the engine never packs (engine.WRITTEN_WITHOUT_SPACES; a test keeps them equal).
_NOT_PACKED_LANGUAGES: Final = frozenset({"zh", "ja", "th", "lo", "my", "yue"})


@dataclass(frozen=True)
class ShortFigure:
    """How short files run, against the model's figure in ``SPEEDS`` (long calls)."""

    model: str
    alone: float  # short files alone: their speed as a share of the same audio as one long file
    packed: float  # short files packed: this many times faster than the same files alone
    basis: Basis
    source: str  # the command and what it ran on, or how it was estimated
    detail: str = ""  # the runs behind the figures

    def factor(self, packed: bool) -> float:
        """Short files' speed as a multiple of the model's figure."""
        return self.alone * (self.packed if packed else 1.0)

    def describe(self, packed: bool = True) -> str:
        how = f"packed {self.packed:g}x faster than alone" if packed else "not packed"
        return (
            f"{self.factor(packed):.2g}x the speed above (alone {self.alone:g}x it, {how}; "
            f"{self.basis}: {self.source})"
        )


# Measured with benchmarks/packed_speed.py on the 40 real clips of benchmarks/data/real
# (1.1-26.7 s, 263 s, read and spontaneous speech; language given): packs of 8 in a shuffled
# (queue) order, each pack alone then packed, every two packs' clips then joined into one
# recording of about two minutes (the long calls a model's figure stands for), all in one
# process, so that the load of the 2-core VM (shared with other work, load average 3-13)
# weighs on each side alike. Ratios only: the speeds themselves were the load's.
# 2026-12-05, after the privacy checks of issue 27 (a file in doubt is decoded again alone).
SHORT: Final[tuple[ShortFigure, ...]] = (
    ShortFigure(
        "base",
        0.34,
        1.4,
        "measured",
        "`python benchmarks/packed_speed.py --model base`, 40 real clips, 2-core VM",
        "alone 0.30-0.54x the speed of the clips joined (4 runs, median 0.34; 16 kHz and "
        "8 kHz mu-law); packed 1.16-2.27x faster than alone (7 runs, 16 kHz and 8 kHz, "
        "median 1.4: single runs vary that much under the load); a third to a half of the "
        "clips decoded alone when packed (too little sound to share, or in doubt)",
    ),
    ShortFigure(
        "tiny.en",
        0.5,
        1.1,
        "measured",
        "`python benchmarks/packed_speed.py --model tiny.en`, real clips, 2-core VM",
        "16 kHz: alone 0.31-0.61x the clips joined (4 runs), packed 0.89-1.23x faster than "
        "alone (6 runs, median 1.08)",
    ),
)


def short_figure(model: str) -> ShortFigure:
    """How ``model``'s short files run: its own measured figure, else base's, marked an
    estimate (packing saves encoder passes, a larger share of a larger model's time, so
    base's gain is likely low for them; never run on a GPU)."""
    for figure in SHORT:
        if figure.model == model:
            return figure
    base = next(figure for figure in SHORT if figure.model == "base")
    return ShortFigure(
        model,
        base.alone,
        base.packed,
        "estimate",
        f"base's measured figures, taken for {model}: never run",
        base.detail,
    )


def may_pack(
    *,
    language: str | None = None,
    diarize: bool = False,
    channels: str = "auto",
    multilingual: bool = False,
) -> bool:
    """Whether estimates take a batch's short files to be packed: ``engine.packable``'s
    rule (not with diarization, split channels, per-segment languages, or a language
    written without spaces), except that an unknown language counts as packable (packing
    without a given language is being built, issue 29). The one place to change when the
    worker's rule changes."""
    return (
        language not in _NOT_PACKED_LANGUAGES
        and not diarize
        and not multilingual
        and channels != "split"
    )


def is_short(audio_seconds: float) -> bool:
    """Whether a file is short enough to share a window."""
    return audio_seconds <= SHORT_FILE_SECONDS


def job_speed(audio_seconds: float, speed_x: float, short_factor: float = 1.0) -> float:
    """Audio seconds per wall second for one file: the model's (long-call) ``speed_x``,
    times ``short_factor`` for a short one (``ShortFigure.factor``)."""
    return speed_x * short_factor if is_short(audio_seconds) else speed_x
