"""What a day of calls costs on whisperq, autoscaled from zero and on an always-on fleet:
one command, a side-by-side table of estimates (no AWS account, no model, seconds to run).

    python benchmarks/simulate.py                       # the built-in day: 10,000 calls
    python benchmarks/simulate.py --scale 10            # ten times that
    python benchmarks/simulate.py --trace day.csv       # your own day: arrival_s,audio_s
    python benchmarks/simulate.py --plot day.png --json

Assumptions (all overridable; every figure printed is an estimate):

- the built-in day: calls of 2-15 minutes (triangular, mostly about 5, mean 7.3) arriving
  08:00-20:00 with a lunchtime peak of three times the base rate at 13:00;
- speed: 7.0x real time for one 2-vCPU instance (the project's measured figure: base model,
  int8, sequential decoding, beam 5, BENCHMARKS.md), scaled linearly with vCPUs for bigger
  CPU types (optimistic); GPU types need --speed-x. The stack's CPU default model
  (distil-large-v3) is slower than base: give its measured speed with --speed-x;
- the scaler: whisperq.scaling.decide every 60 s, as the Lambda runs it; instances take
  work 95 s after launch (90 s boot + 5 s model load); the group shrinks to what the
  backlog needs by removing idle instances (busy ones are protected from scale-in) and to
  zero after --idle-minutes of an empty queue;
- spot: 0.05 interruptions per instance-hour (pessimistic), two minutes' notice, a job that
  cannot finish within the worker's 60 s grace starts again elsewhere;
- prices: us-east-1 list prices (on-demand) and typical spot prices as of 2026
  (whisperq.capacity.DEFAULT_PRICES), per second from launch to termination;
- the always-on fleet: as many instances as keep pace with the day's busiest hour,
  already up, billed 24 hours (or until the last job, if later);
- --max-instances defaults to 500 here (the stack's default is 10): the built-in day
  peaks near 30 c6a.large instances, the 10x day near 300;
- the managed comparison: AWS Transcribe batch at its list price, $0.024 per minute.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from whisperq.capacity import (
    DEFAULT_PRICES,
    MANAGED_PRICE_PER_MINUTE,
    OPENAI_WHISPER_PRICE_PER_MINUTE,
    batch_cost,
    hourly_price,
    merge_prices,
)
from whisperq.simulation import (
    BASE_SPEED_X,
    SimConfig,
    SimResult,
    builtin_day,
    load_trace,
    simulate,
    simulate_always_on,
    speed_for_instance,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("Assumptions") :],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the built-in day")
    parser.add_argument("--calls", type=int, default=10_000, help="calls in the built-in day")
    parser.add_argument("--seed", type=int, default=1, help="random seed (day and spot)")
    parser.add_argument("--trace", type=Path, help="CSV with a header and arrival_s,audio_s")
    parser.add_argument("--max-instances", type=int, default=500)
    parser.add_argument("--jobs-per-instance", type=int, default=4)
    parser.add_argument("--idle-minutes", type=float, default=10.0)
    parser.add_argument("--slots", type=int, default=1, help="concurrent jobs per instance")
    parser.add_argument(
        "--speed-x",
        type=float,
        help=f"audio s per wall s of one instance (default {BASE_SPEED_X}x per 2 vCPUs)",
    )
    parser.add_argument(
        "--instance-type",
        default="c6a.large",
        help=f"priced: {', '.join(sorted(DEFAULT_PRICES))}; others need --price",
    )
    parser.add_argument("--market", choices=["spot", "on_demand"], default="spot")
    parser.add_argument("--price", type=float, help="$ per instance-hour (overrides the table)")
    parser.add_argument(
        "--interruptions", type=float, default=0.05, help="spot notices per instance-hour"
    )
    parser.add_argument("--boot-s", type=float, default=90.0, help="launch to worker running")
    parser.add_argument("--plot", type=Path, help="write backlog and instances to this PNG")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60


def summary(result: SimResult, args: argparse.Namespace, prices: Any) -> dict[str, Any]:
    cost = batch_cost(
        result.audio_seconds, {args.instance_type: result.instance_seconds}, prices, args.market
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


def table(columns: dict[str, dict[str, Any]]) -> str:
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
    import matplotlib  # lazily: only --plot needs it

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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        prices = DEFAULT_PRICES
        if args.price is not None:
            # only the chosen market is used: an unpriced type gets the price for both
            markets = [args.market] if args.instance_type in prices else ["spot", "on_demand"]
            prices = merge_prices({args.instance_type: dict.fromkeys(markets, args.price)})
        price = hourly_price(args.instance_type, args.market, prices)
        speed = args.speed_x or speed_for_instance(args.instance_type)
        day = (
            load_trace(args.trace) if args.trace else builtin_day(args.calls, args.seed, args.scale)
        )
        config = SimConfig(
            jobs_per_instance=args.jobs_per_instance,
            max_instances=args.max_instances,
            idle_minutes=args.idle_minutes,
            boot_s=args.boot_s,
            speed_x=speed,
            slots_per_instance=args.slots,
            spot_interruptions_per_instance_hour=args.interruptions,
            price_per_instance_hour=price,
            seed=args.seed,
        )
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    autoscaled = simulate(day, config)
    always_on = simulate_always_on(day, config)
    took = time.perf_counter() - started
    columns = {
        "autoscaled": summary(autoscaled, args, prices),
        "always-on": summary(always_on, args, prices),
    }
    if args.plot:
        plot(args.plot, autoscaled, always_on)
    if args.json:
        settings = {key: value for key, value in vars(args).items() if key not in ("plot", "trace")}
        settings |= {"speed_x": speed, "price_per_instance_hour": price}
        print(json.dumps({"settings": settings, **columns, "simulated_s": took}, indent=2))
        return 0
    source = f"trace {args.trace}" if args.trace else f"built-in day x{args.scale:g}"
    print(
        f"{source}: {len(day):,} calls; {args.instance_type} {args.market} ${price:.4f}/h,"
        f" {speed:.1f}x per instance, {args.slots} slot(s); max {args.max_instances}"
        f" instances, {args.jobs_per_instance} jobs per instance, idle {args.idle_minutes:g}"
        f" min; {args.interruptions:g} spot notices per instance-hour"
    )
    print(table(columns))
    print(
        f"Managed prices of the same audio: AWS Transcribe ${MANAGED_PRICE_PER_MINUTE}/min"
        f" = ${MANAGED_PRICE_PER_MINUTE * 60:.2f}/audio hour; OpenAI whisper-1"
        f" ${OPENAI_WHISPER_PRICE_PER_MINUTE}/min = ${OPENAI_WHISPER_PRICE_PER_MINUTE * 60:.2f}"
        "/audio hour. Always-on: billed 24 h. All figures are estimates (see --help)."
    )
    if args.plot:
        print(f"plot: {args.plot}")
    print(f"simulated in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
