"""How fast each model runs on each kind of instance: the figures the simulator and
docs/costs.md use, each marked measured (with the command), published (with the source) or
estimated (with the reasoning). Standard library only.

A CPU figure is for an instance of ``vcpus`` vCPUs and is scaled linearly to other CPU
sizes (optimistic for big instances: memory bandwidth and the sequential parts of decoding
do not scale). A GPU figure is for one instance type only.
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
