"""One source of defaults: the stack (infra_pulumi), the CLI's settings, the local stack and
the simulator agree, because they all read whisperq/defaults.py. These compare the objects'
own defaults, so a copy that creeps back into any of them fails here."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner
from whisperq_infra.config import DeploymentConfig, parse_config
from whisperq_infra.scaling import SCHEDULE, rate_expression

from whisperq import defaults
from whisperq.cli import app
from whisperq.fleet import group_status as fleet
from whisperq.fleet import pricing
from whisperq.fleet.simulation import SimConfig
from whisperq.fleet.simulation_report import ASSUMPTIONS, DayOptions, run_day
from whisperq.fleet.speeds import speed_for
from whisperq.settings import Settings
from whisperq.speech import engine
from whisperq.stacks import local as local_stack

KINDS = ("cpu", "gpu")


def stack(**raw: str) -> DeploymentConfig:
    """The stack's config as `pulumi up` reads it, from `pulumi config` values."""
    return parse_config(raw)


def test_the_stack_and_its_dataclass_have_the_same_defaults():
    assert stack() == DeploymentConfig()


def test_jobs_per_instance_agree():
    assert (
        DeploymentConfig().jobs_per_instance
        == Settings().fleet_jobs_per_instance
        == DayOptions().jobs_per_instance
        == SimConfig().jobs_per_instance
    )


def test_max_instances_agree():
    assert DeploymentConfig().max_instances == Settings().fleet_max_instances
    assert SimConfig().max_instances == DeploymentConfig().max_instances
    # `whisperq simulate` deliberately allows more (a day's peak); it says so in --help
    assert DayOptions().max_instances > DeploymentConfig().max_instances
    assert f"the stack's default is {DeploymentConfig().max_instances})" in ASSUMPTIONS


def test_idle_minutes_agree():
    assert DeploymentConfig().idle_minutes == DayOptions().idle_minutes == SimConfig().idle_minutes


def test_boot_time_agrees():
    # status's ETA waits for a launched instance as long as the simulator does
    assert DayOptions().boot_s == SimConfig().boot_s
    assert Settings().fleet_boot_seconds == SimConfig().ready_after_s
    assert f"{SimConfig().ready_after_s:g} s after launch" in ASSUMPTIONS


def test_the_scaler_period_agrees():
    period = SimConfig().scaler_period_s
    assert SCHEDULE == rate_expression(period) == "rate(1 minute)"
    assert f"decide every {period:g} s" in ASSUMPTIONS


def test_status_reports_the_scaler_period_the_stack_runs(isolated_settings):
    from whisperq.storage import QueueCounts

    group = fleet.GroupState("g", 1, 0, 10, 1, 0, {})
    status = fleet.fleet_status(Settings(), group, QueueCounts(0, 0, 0), [], now=0.0)
    assumed = status.as_dict()["eta_assumes"]["scaler_period_seconds"]
    assert rate_expression(assumed) == SCHEDULE


def test_rate_expression():
    assert rate_expression(60) == "rate(1 minute)"
    assert rate_expression(300.0) == "rate(5 minutes)"
    for bad in (30, 90, 0):
        with pytest.raises(ValueError, match="whole minutes"):
            rate_expression(bad)


def test_the_priced_instance_type_is_the_stacks_first():
    # the stack exports instance_types[0] as instanceType, which `config from-stack` writes
    # into fleet_instance_type; the local stack's group launches the same nominal type
    assert Settings().fleet_instance_type == DeploymentConfig().instance_types[0]
    assert Settings().fleet_instance_type == local_stack.GROUP_INSTANCE_TYPE


def test_queue_defaults_agree():
    up = inspect.signature(local_stack.up).parameters
    assert up["visibility_timeout"].default == DeploymentConfig().visibility_timeout
    assert up["max_receive_count"].default == DeploymentConfig().max_receive_count


def test_spot_grace_agrees_with_the_worker_settings():
    settings = Settings()
    assert SimConfig().spot_grace_s == min(
        settings.shutdown_grace_seconds, settings.spot_grace_seconds
    )
    assert settings.spot_grace_seconds <= SimConfig().spot_notice_s
    assert DayOptions().interruptions == SimConfig().spot_interruptions_per_instance_hour


@pytest.mark.parametrize("kind", KINDS)
def test_each_compute_kind_has_a_model_types_and_the_engines_compute_type(kind):
    config = stack(compute=kind)
    assert config.model and config.instance_types and config.root_volume_gb > 0
    # what the stack tells the workers is what the engine would pick on that device
    device = "cuda" if kind == "gpu" else "cpu"
    assert config.compute_type == engine.choose_compute_type(device, "auto")


def test_the_price_table_covers_every_default_instance_type():
    types = {name for kind in KINDS for name in stack(compute=kind).instance_types}
    types |= {
        Settings().fleet_instance_type,
        DayOptions().instance_type,
        local_stack.GROUP_INSTANCE_TYPE,
    }
    for name in sorted(types):
        spot = pricing.hourly_price(name, "spot")
        assert 0 < spot < pricing.hourly_price(name, "on_demand"), name


def test_the_simulator_prices_and_speeds_its_default_type():
    assert SimConfig().price_per_instance_hour == pricing.hourly_price(
        DayOptions().instance_type, "spot"
    )
    options = DayOptions(calls=20)
    assert options.model == stack(compute="cpu").model  # what the stack's workers load
    report = run_day(options)
    assert report.speed == speed_for(options.model, options.instance_type).speed_x
    assert f"(default: the stack's CPU model, {stack(compute='cpu').model})" in ASSUMPTIONS


def test_help_texts_show_the_managed_price():
    price = f"${pricing.MANAGED_PRICE_PER_MINUTE}"
    assert price + " per minute" in ASSUMPTIONS
    result = CliRunner().invoke(app, ["cost", "--help"], env={"COLUMNS": "200"})
    assert f"({price}/min)" in result.output


def test_defaults_imports_the_standard_library_only():
    """The Pulumi program imports it; nothing in it may need the CLI's dependencies."""
    tree = ast.parse(Path(defaults.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
