"""A simulated day as a report: autoscaled vs always-on, side by side, with costs.

One implementation for `whisperq simulate` and benchmarks/simulate.py. Standard library
only, except the plot (matplotlib, imported when a plot is asked for).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from whisperq import defaults
from whisperq.fleet import speeds
from whisperq.fleet.pricing import (
    DEFAULT_PRICES,
    MANAGED_PRICE_PER_MINUTE,
    OPENAI_WHISPER_PRICE_PER_MINUTE,
    InstancePrice,
    Market,
    estimate_cost,
    hourly_price,
    merge_prices,
)
from whisperq.fleet.simulation import (
    VOICEMAIL_SECONDS,
    SimConfig,
    SimResult,
    builtin_day,
    load_trace,
    simulate,
    simulate_always_on,
)


@dataclass(frozen=True)
class DayOptions:
    """What to simulate; the fields are the command-line options of both front ends."""

    scale: float = 1.0
    calls: int = 10_000
    seed: int = 1
    trace: Path | None = None
    # not the stack's default (defaults.MAX_INSTANCES): the simulated day's peak should not
    # be capped unless asked; the report prints the peak it reached
    max_instances: int = 500
    jobs_per_instance: int = defaults.JOBS_PER_INSTANCE
    idle_minutes: float = float(defaults.IDLE_MINUTES)
    slots: int = 1
    model: str = defaults.MODEL[defaults.COMPUTE]  # what the stack's workers load
    speed_x: float | None = None  # None: the model's figure (whisperq.fleet.speeds)
    instance_type: str = defaults.SIMULATED_INSTANCE_TYPE
    market: Market = "spot"
    price: float | None = None
    interruptions: float = defaults.SPOT_INTERRUPTIONS_PER_INSTANCE_HOUR
    boot_s: float = defaults.BOOT_SECONDS  # + defaults.MODEL_LOAD_SECONDS (SimConfig)
    voicemails: float = 0.0  # share of the built-in day's calls that are voicemails
    # whether short files share windows: not for batches with --diarize, --channels split
    # or --multilingual (speeds.may_pack)
    packing: bool = True


_SIM = SimConfig()

ASSUMPTIONS = """\
Assumptions (all overridable; every figure printed is an estimate):

- the built-in day: calls of 2-15 minutes (triangular, mostly about 5, mean 7.3) arriving
  08:00-20:00 with a lunchtime peak of three times the base rate at 13:00;
  --voicemails makes a share of them voicemails of {vm_low:g}-{vm_high:g} s (mostly about
  {vm_mode:g} s; assumed);
- short files (up to {short:g} s, a trace's too) run at their own speed: alone slower than
  long calls (each pays a whole 30 s window), packed several to a window as workers do,
  faster than alone (whisperq.fleet.speeds.SHORT, measured or estimated, in the header); a
  packed file is charged its share of a pack, as if others were always queued to share
  with (a lone voicemail in a quiet hour runs alone, slower); --no-packing for batches
  whose files are not packed (--diarize, --channels split, --multilingual);
- speed: the figure for --model (default: the stack's CPU model, {cpu_model}) on the
  instance type, from whisperq.fleet.speeds, where each figure says whether it was
  measured here, published elsewhere or estimated (docs/costs.md, "Which model");
  CPU figures are scaled linearly with vCPUs (optimistic for big types); --speed-x overrides;
- the scaler: whisperq.fleet.scaling.decide every {period:g} s, as the Lambda runs it;
  instances take work {up:g} s after launch ({boot:g} s boot + {ml:g} s model load); the
  group shrinks to what the backlog needs by removing idle instances (busy ones are
  protected from scale-in) and to zero after --idle-minutes of an empty queue;
- spot: {spot:g} interruptions per instance-hour (pessimistic), two minutes' notice, a job that
  cannot finish within the worker's {grace:g} s grace starts again elsewhere;
- prices: us-east-1 list prices (on-demand) and typical spot prices as of 2026
  (whisperq.defaults.INSTANCE_PRICES), per second from launch to termination;
- the always-on fleet: as many instances as keep pace with the day's busiest hour,
  already up, billed 24 hours (or until the last job, if later);
- --max-instances defaults to {day_max} here (the stack's default is {stack_max}), so the
  day's peak is not capped unless you ask: the report's "instances (peak / fixed)" row
  says how many it reached;
- the managed comparison: AWS Transcribe batch at its list price, ${managed} per minute.
""".format(
    cpu_model=defaults.MODEL["cpu"],
    vm_low=VOICEMAIL_SECONDS[0],
    vm_high=VOICEMAIL_SECONDS[1],
    vm_mode=VOICEMAIL_SECONDS[2],
    short=speeds.SHORT_FILE_SECONDS,
    period=_SIM.scaler_period_s,
    up=_SIM.ready_after_s,
    boot=_SIM.boot_s,
    ml=_SIM.model_load_s,
    spot=_SIM.spot_interruptions_per_instance_hour,
    grace=_SIM.spot_grace_s,
    day_max=DayOptions.max_instances,
    stack_max=defaults.MAX_INSTANCES,
    managed=MANAGED_PRICE_PER_MINUTE,
)


@dataclass
class DayReport:
    options: DayOptions
    calls: int
    price: float  # $ per instance-hour used
    speed: float  # audio s per wall s of one instance
    figure: speeds.SpeedFigure | None  # where the speed came from; None: --speed-x
    short: speeds.ShortFigure  # how short calls run against ``speed``
    short_calls: int  # calls short enough to share a window
    autoscaled: SimResult
    always_on: SimResult
    columns: dict[str, dict[str, Any]]
    simulated_s: float
    plot: Path | None = field(default=None)

    def header(self) -> str:
        o = self.options
        source = f"trace {o.trace}" if o.trace else f"built-in day x{o.scale:g}"
        return (
            f"{source}: {self.calls:,} calls; {o.instance_type} {o.market} ${self.price:.4f}/h,"
            f" {o.model} at {self.speed:.2g}x per instance ({self.basis()}), {o.slots} slot(s);"
            f" max {o.max_instances}"
            f" instances, {o.jobs_per_instance} jobs per instance, idle {o.idle_minutes:g}"
            f" min; {o.interruptions:g} spot notices per instance-hour" + self.short_text()
        )

    def short_text(self) -> str:
        """What the header says of short calls: nothing when there are none (the built-in
        day without voicemails), else how they were charged and on what figure."""
        if not self.short_calls:
            return ""
        short = f"; {self.short_calls:,} short calls (<= {speeds.SHORT_FILE_SECONDS:g} s)"
        packed = self.options.packing
        how = "packed" if packed else "not packed (--no-packing)"
        return f"{short} {how}, at {self.short.describe(packed)}"

    def basis(self) -> str:
        return "--speed-x" if self.figure is None else self.figure.basis

    def table(self) -> str:
        return table(self.columns)

    @staticmethod
    def footer() -> str:
        return (
            f"Managed prices of the same audio: AWS Transcribe ${MANAGED_PRICE_PER_MINUTE}/min"
            f" = ${MANAGED_PRICE_PER_MINUTE * 60:.2f}/audio hour; OpenAI whisper-1"
            f" ${OPENAI_WHISPER_PRICE_PER_MINUTE}/min ="
            f" ${OPENAI_WHISPER_PRICE_PER_MINUTE * 60:.2f}/audio hour. Always-on: billed 24 h."
            " All figures are estimates (see --help)."
        )

    def text(self) -> str:
        lines = [self.header(), self.table(), self.footer()]
        if self.plot:
            lines.append(f"plot: {self.plot}")
        lines.append(f"simulated in {self.simulated_s:.1f} s")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        settings = {k: v for k, v in asdict(self.options).items() if k != "trace"}
        settings |= {
            "speed_x": self.speed,
            "speed_basis": self.basis(),
            "speed_source": None if self.figure is None else self.figure.source,
            "short_calls": self.short_calls,
            "short_speed_factor": self.short.factor(self.options.packing),
            "short_alone": self.short.alone,
            "short_packed_speedup": self.short.packed if self.options.packing else None,
            "short_basis": self.short.basis,
            "short_source": self.short.source,
            "short_detail": self.short.detail,
            "price_per_instance_hour": self.price,
        }
        return {"settings": settings, **self.columns, "simulated_s": self.simulated_s}


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60


def summary(
    result: SimResult,
    instance_type: str,
    market: Market,
    prices: Mapping[str, InstancePrice],
) -> dict[str, Any]:
    """One column of the table."""
    cost = estimate_cost(
        result.audio_seconds, {instance_type: result.instance_seconds}, prices, market
    )
    return {
        "calls": result.calls,
        "audio_hours": result.audio_hours,
        "instances": result.fixed_instances or result.peak_instances,
        "turnaround_p50_min": _minutes(result.p50_turnaround_s),
        "turnaround_p95_min": _minutes(result.p95_turnaround_s),
        "turnaround_max_min": _minutes(result.max_turnaround_s),
        "instance_hours": result.instance_hours,
        "cost_dollars": cost.dollars,
        "dollars_per_audio_hour": cost.dollars_per_audio_hour,
        "spot_notices": result.interruptions,
        "jobs_redelivered": result.jobs_redelivered,
        "managed_dollars": cost.managed_dollars,
        "managed_over_cost": cost.ratio,
    }


ROWS = [
    ("calls", "calls", "{:,.0f}"),
    ("audio hours", "audio_hours", "{:,.1f}"),
    ("instances (peak / fixed)", "instances", "{:,.0f}"),
    ("turnaround p50 (min)", "turnaround_p50_min", "{:,.1f}"),
    ("turnaround p95 (min)", "turnaround_p95_min", "{:,.1f}"),
    ("turnaround max (min)", "turnaround_max_min", "{:,.1f}"),
    ("instance-hours", "instance_hours", "{:,.1f}"),
    ("cost ($)", "cost_dollars", "{:,.2f}"),
    ("$ per audio hour", "dollars_per_audio_hour", "{:,.4f}"),
    ("spot notices / jobs redone", None, ""),
    ("AWS Transcribe, same audio ($)", "managed_dollars", "{:,.2f}"),
    ("Transcribe / this", "managed_over_cost", "{:,.0f}x"),
]


def table(columns: Mapping[str, Mapping[str, Any]]) -> str:
    """The columns side by side, as plain text (it goes into READMEs and logs)."""
    names = list(columns)
    lines = [f"{'(estimates)':<32}" + "".join(f"{name:>14}" for name in names)]
    for label, key, fmt in ROWS:
        cells = []
        for name in names:
            data = columns[name]
            if key is None:
                text = f"{data['spot_notices']} / {data['jobs_redelivered']}"
            else:
                value = data[key]
                text = "-" if value is None else fmt.format(value)
            cells.append(f"{text:>14}")
        lines.append(f"{label:<32}" + "".join(cells))
    return "\n".join(lines)


def plot(path: Path, autoscaled: SimResult, always_on: SimResult) -> None:
    """Backlog and instances over the day, as a PNG."""
    import matplotlib  # lazily: only a plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [point.t / 3600 for point in autoscaled.timeline]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    top.plot(hours, [point.backlog for point in autoscaled.timeline], label="autoscaled")
    top.plot(
        [point.t / 3600 for point in always_on.timeline],
        [point.backlog for point in always_on.timeline],
        label="always-on",
    )
    top.set_ylabel("backlog (jobs)")
    top.legend()
    bottom.plot(hours, [point.instances for point in autoscaled.timeline], label="instances")
    bottom.plot(hours, [point.busy for point in autoscaled.timeline], label="busy")
    bottom.axhline(always_on.fixed_instances or 0, linestyle="--", color="grey", label="always-on")
    busy_from = next((p.t for p in autoscaled.timeline if p.backlog or p.instances), 0.0)
    bottom.set_xlim(left=max(0.0, busy_from / 3600 - 0.5))  # skip the empty night
    bottom.set_ylabel("instances (autoscaled)")
    bottom.set_xlabel("hour of the day")
    bottom.legend()
    figure.suptitle("whisperq: simulated day (estimates)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run_day(
    options: DayOptions,
    base_prices: Mapping[str, InstancePrice] = DEFAULT_PRICES,
    plot_path: Path | None = None,
) -> DayReport:
    """Simulate the day both ways. ValueError or OSError (a message for a person) for
    options that cannot work: an unpriced type (PriceError, a ValueError), a GPU type
    without speed, a bad trace."""
    prices = dict(base_prices)
    if options.price is not None:
        # only the chosen market is used: an unpriced type gets the price for both
        markets = [options.market] if options.instance_type in prices else ["spot", "on_demand"]
        prices = merge_prices(
            {options.instance_type: dict.fromkeys(markets, options.price)}, prices, "--price"
        )
    price = hourly_price(options.instance_type, options.market, prices)
    figure = None if options.speed_x else speeds.speed_for(options.model, options.instance_type)
    speed = options.speed_x or (figure.speed_x if figure else 0.0)
    short = speeds.short_figure(options.model)
    day = (
        load_trace(options.trace)
        if options.trace
        else builtin_day(options.calls, options.seed, options.scale, options.voicemails)
    )
    config = SimConfig(
        jobs_per_instance=options.jobs_per_instance,
        max_instances=options.max_instances,
        idle_minutes=options.idle_minutes,
        boot_s=options.boot_s,
        speed_x=speed,
        slots_per_instance=options.slots,
        short_factor=short.factor(options.packing),
        spot_interruptions_per_instance_hour=options.interruptions,
        price_per_instance_hour=price,
        seed=options.seed,
    )
    started = time.perf_counter()
    autoscaled = simulate(day, config)
    always_on = simulate_always_on(day, config)
    took = time.perf_counter() - started
    columns = {
        "autoscaled": summary(autoscaled, options.instance_type, options.market, prices),
        "always-on": summary(always_on, options.instance_type, options.market, prices),
    }
    if plot_path is not None:
        plot(plot_path, autoscaled, always_on)
    return DayReport(
        options=options,
        calls=len(day),
        price=price,
        speed=speed,
        figure=figure,
        short=short,
        short_calls=sum(1 for call in day if speeds.is_short(call.audio_s)),
        autoscaled=autoscaled,
        always_on=always_on,
        columns=columns,
        simulated_s=took,
        plot=plot_path,
    )
