"""Estimates: what a batch cost (`cost`) and a simulated day on the fleet (`simulate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from whisperq import storage
from whisperq.batches import tracking
from whisperq.cli.app import (
    JsonFlag,
    app,
    duration_text,
    err,
    out,
    print_json,
    settings_for_storage,
)
from whisperq.errors import UsageError, WhisperqError
from whisperq.fleet import batch_cost, pricing
from whisperq.fleet.batch_cost import BatchCost
from whisperq.fleet.pricing import Market
from whisperq.fleet.simulation_report import ASSUMPTIONS, DayOptions, run_day
from whisperq.settings import Settings, load_settings

_MARKETS: dict[str, Market] = {"spot": "spot", "on_demand": "on_demand", "on-demand": "on_demand"}

MarketOption = Annotated[str, typer.Option("--market", help="spot | on_demand prices.")]


def _market(value: str) -> Market:
    market = _MARKETS.get(value.lower())
    if market is None:
        raise UsageError(f"--market must be spot or on_demand (got {value!r}).")
    return market


_COST_HELP = f"""Estimate what a batch cost: audio hours, instance time, dollars, $ per audio
hour, next to AWS Transcribe's list price (${pricing.MANAGED_PRICE_PER_MINUTE}/min) for the
same audio.

Reads every result JSON of the batch (the one command that does; --threads at a time).
Counts job time only (download, decode, transcribe, upload; jobs that overlap on one
machine once): instances' idle and boot time, jobs redone after spot notices and
failed jobs are not in it; `whisperq simulate` estimates a whole day's bill.

Prices: built-in us-east-1 estimates per instance type, overridable with
instance_prices in the config file or WHISPERQ_INSTANCE_PRICES; results without an
instance type (the local stack) are priced as WHISPERQ_FLEET_INSTANCE_TYPE.

Example: `whisperq cost weekly --market on-demand`
"""


@app.command(help=_COST_HELP)
def cost(
    batch: Annotated[str, typer.Argument(help="The batch to price.")],
    market: MarketOption = "spot",
    threads: Annotated[
        int, typer.Option("--threads", min=1, max=64, help="Result JSONs read at once.")
    ] = 16,
    as_json: JsonFlag = False,
) -> None:
    # The help is _COST_HELP (it shows the managed price from whisperq.defaults).
    chosen = _market(market)
    settings = settings_for_storage()
    price_table = pricing.configured_prices(settings)
    s3 = storage.client(settings, "s3")
    view = tracking.load_batch(settings, s3, batch)
    if view is None:
        raise WhisperqError(f"No batch named {batch!r} on {settings.target}.")
    with err.status(f"Reading the results of {batch}..."):
        records, unreadable = batch_cost.read_batch_records(settings, s3, batch, threads)
    if not records:
        raise WhisperqError(
            f"Batch {batch!r} has no finished results yet ({len(view.files)} file(s) "
            f"submitted): `whisperq wait {batch}`, then ask again."
        )
    report = batch_cost.cost_of_records(
        batch, records, chosen, price_table, settings.fleet_instance_type, unreadable
    )
    if as_json:
        print_json(report.as_dict())
        return
    _print_cost(report, settings, len(view.files))


def _dollars(value: float) -> str:
    """Cents for real money; significant digits for the fractions of a cent small
    batches cost."""
    return f"{value:,.2f}" if value >= 10 else f"{value:.3g}"


def _print_cost(report: BatchCost, settings: Settings, submitted: int) -> None:
    estimate = report.estimate
    market = report.market.replace("_", "-")
    table = Table(title=f"cost of {report.batch} (estimates, {market} prices)")
    for column in ("instance type", "jobs", "job time", "instance time", "$/hour", "$"):
        table.add_column(column, justify="left" if column == "instance type" else "right")
    for item in report.by_type:
        table.add_row(
            item.instance_type + (" *" if item.assumed else ""),
            str(item.jobs),
            duration_text(item.job_seconds),
            duration_text(item.instance_seconds),
            f"{item.price_per_hour:.4f}",
            _dollars(item.dollars),
        )
    table.add_row(
        "total",
        str(report.results),
        duration_text(report.job_seconds),
        duration_text(estimate.worker_seconds),
        "",
        f"[bold]{_dollars(estimate.dollars)}[/]",
    )
    out.print(table)
    per_hour = estimate.dollars_per_audio_hour
    out.print(
        f"audio: {estimate.audio_hours:.3g} h in {report.results} of {submitted} file(s); "
        f"${_dollars(per_hour)} per audio hour"
        if per_hour is not None
        else "audio: none",
        highlight=False,
    )
    ratio = f", {estimate.ratio:,.0f}x this" if estimate.ratio else ""
    out.print(
        f"AWS Transcribe for the same audio (${pricing.MANAGED_PRICE_PER_MINUTE}/min): "
        f"${_dollars(estimate.managed_dollars)}{ratio}",
        highlight=False,
    )
    out.print(
        "Job time only: no idle or boot time, spot redos or failed jobs "
        "(`whisperq simulate` has them).",
        highlight=False,
    )
    if any(item.assumed for item in report.by_type):
        out.print(
            f"* no instance type recorded: priced as {settings.fleet_instance_type} "
            "(WHISPERQ_FLEET_INSTANCE_TYPE).",
            highlight=False,
        )
    if report.unreadable:
        err.print(f"[yellow]{report.unreadable} result JSON(s) could not be read; not counted.")


_DAY = DayOptions()


@app.command(epilog=ASSUMPTIONS)
def simulate(
    scale: Annotated[
        float, typer.Option("--scale", min=0, help="Multiply the built-in day.")
    ] = _DAY.scale,
    calls: Annotated[
        int, typer.Option("--calls", min=1, help="Calls in the built-in day.")
    ] = _DAY.calls,
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed (the day and spot).")
    ] = _DAY.seed,
    trace: Annotated[
        Path | None,
        typer.Option("--trace", help="Your day: a CSV with a header and arrival_s,audio_s."),
    ] = None,
    max_instances: Annotated[
        int, typer.Option("--max-instances", min=1, help="The fleet's cap (whisperq:maxInstances).")
    ] = _DAY.max_instances,
    jobs_per_instance: Annotated[
        int,
        typer.Option(
            "--jobs-per-instance",
            min=1,
            help="Backlog per instance the scaler aims at (whisperq:jobsPerInstance).",
        ),
    ] = _DAY.jobs_per_instance,
    idle_minutes: Annotated[
        float,
        typer.Option(
            "--idle-minutes", min=0, help="An empty queue for this long scales the fleet to zero."
        ),
    ] = _DAY.idle_minutes,
    slots: Annotated[
        int, typer.Option("--slots", min=1, help="Jobs an instance runs at once.")
    ] = _DAY.slots,
    model: Annotated[
        str,
        typer.Option(
            "--model", help="The workers' model; its speed comes from docs/costs.md's table."
        ),
    ] = _DAY.model,
    speed_x: Annotated[
        float | None,
        typer.Option(
            "--speed-x",
            help="Audio s per wall s of one instance (default: the model's figure for the "
            "instance type, measured, published or estimated).",
        ),
    ] = None,
    instance_type: Annotated[
        str, typer.Option("--instance-type", help="The fleet's instance type (speed and price).")
    ] = _DAY.instance_type,
    market: MarketOption = _DAY.market,
    price: Annotated[
        float | None,
        typer.Option("--price", min=0, help="$ per instance-hour (overrides the price table)."),
    ] = None,
    interruptions: Annotated[
        float, typer.Option("--interruptions", min=0, help="Spot notices per instance-hour.")
    ] = _DAY.interruptions,
    boot_s: Annotated[
        float, typer.Option("--boot-s", min=0, help="Launch to worker running.")
    ] = _DAY.boot_s,
    voicemails: Annotated[
        float,
        typer.Option(
            "--voicemails",
            min=0,
            max=1,
            help="Share of the built-in day's calls that are voicemails (3-29 s).",
        ),
    ] = _DAY.voicemails,
    packing: Annotated[
        bool,
        typer.Option(
            "--packing/--no-packing",
            help="Whether short files share windows (not for batches with --diarize, "
            "--channels split or --multilingual).",
        ),
    ] = _DAY.packing,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write backlog and instances to a PNG.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Simulate a day of calls on the fleet, autoscaled from zero and always-on, side by
    side: turnaround, instance-hours, cost (estimates; no AWS, no model, seconds to run).

    The same as benchmarks/simulate.py. Prices: the built-in table with instance_prices
    from the configuration applied.

    Example: `whisperq simulate --calls 50000 --max-instances 20 --model small`; a day of
    voicemails: `whisperq simulate --voicemails 1`
    """
    options = DayOptions(
        scale=scale,
        calls=calls,
        seed=seed,
        trace=trace,
        max_instances=max_instances,
        jobs_per_instance=jobs_per_instance,
        idle_minutes=idle_minutes,
        slots=slots,
        model=model,
        speed_x=speed_x,
        instance_type=instance_type,
        market=_market(market),
        price=price,
        interruptions=interruptions,
        boot_s=boot_s,
        voicemails=voicemails,
        packing=packing,
    )
    price_table = pricing.configured_prices(load_settings())
    try:
        with err.status("Simulating the day..."):
            report = run_day(options, price_table, plot)
    except (OSError, ValueError) as error:
        # A trace file that cannot be read or parsed, a type with no price.
        raise WhisperqError(str(error)) from None
    if as_json:
        print_json(report.as_dict())
        return
    out.print(report.text(), markup=False, highlight=False, soft_wrap=True)
