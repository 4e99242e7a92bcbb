"""What a day of calls costs on whisperq, autoscaled from zero and on an always-on fleet:
one command, a side-by-side table of estimates (no AWS account, no model, seconds to run).

    python benchmarks/simulate.py                       # the built-in day: 10,000 calls
    python benchmarks/simulate.py --scale 10            # ten times that
    python benchmarks/simulate.py --trace day.csv       # your own day: arrival_s,audio_s
    python benchmarks/simulate.py --plot day.png --json
    python benchmarks/simulate.py --voicemails 1        # a day of voicemails, packed
    python benchmarks/simulate.py --quick               # 1,000 calls (a test runs it)

The same as `whisperq simulate`: both run whisperq.fleet.simulation_report (assumptions in
--help and there).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from whisperq.fleet.pricing import DEFAULT_PRICES
from whisperq.fleet.simulation_report import ASSUMPTIONS, DayOptions, run_day


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = DayOptions()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=ASSUMPTIONS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scale", type=float, default=defaults.scale, help="multiply the day")
    parser.add_argument("--calls", type=int, default=defaults.calls, help="calls in the day")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (day, spot)")
    parser.add_argument("--trace", type=Path, help="CSV with a header and arrival_s,audio_s")
    parser.add_argument("--max-instances", type=int, default=defaults.max_instances)
    parser.add_argument("--jobs-per-instance", type=int, default=defaults.jobs_per_instance)
    parser.add_argument("--idle-minutes", type=float, default=defaults.idle_minutes)
    parser.add_argument(
        "--slots", type=int, default=defaults.slots, help="concurrent jobs per instance"
    )
    parser.add_argument("--model", default=defaults.model, help="the workers' model")
    parser.add_argument(
        "--speed-x",
        type=float,
        help="audio s per wall s of one instance (default: the model's figure, "
        "whisperq.fleet.speeds)",
    )
    parser.add_argument(
        "--instance-type",
        default=defaults.instance_type,
        help=f"priced: {', '.join(sorted(DEFAULT_PRICES))}; others need --price",
    )
    parser.add_argument("--market", choices=["spot", "on_demand"], default=defaults.market)
    parser.add_argument("--price", type=float, help="$ per instance-hour (overrides the table)")
    parser.add_argument(
        "--interruptions",
        type=float,
        default=defaults.interruptions,
        help="spot notices per instance-hour",
    )
    parser.add_argument(
        "--boot-s", type=float, default=defaults.boot_s, help="launch to worker running"
    )
    parser.add_argument(
        "--voicemails",
        type=float,
        default=defaults.voicemails,
        help="share of the built-in day's calls that are voicemails (3-29 s)",
    )
    parser.add_argument(
        "--no-packing",
        dest="packing",
        action="store_false",
        help="short files do not share windows (--diarize, --channels split, --multilingual)",
    )
    parser.add_argument("--plot", type=Path, help="write backlog and instances to this PNG")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quick", action="store_true", help="a day of 1,000 calls")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls = 1000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fields = {k: v for k, v in vars(args).items() if k not in ("plot", "json", "quick")}
    try:
        report = run_day(DayOptions(**fields), plot_path=args.plot)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        print(report.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
