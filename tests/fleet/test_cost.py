"""`whisperq cost BATCH` (dollars by hand, errors) against moto, and `whisperq simulate`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from whisperq.cli import app
from whisperq.fleet import batch_cost

from helpers import write_batch, write_result

runner = CliRunner()
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PATHS = ["a.wav", "b.wav", "c.wav", "d.wav"]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def priced_batch(cli_env, monkeypatch):
    """Four finished jobs, 30 min of audio:

    - machine ip-1 (c6a.xlarge), two pool processes: jobs of 100 s over 0-100 and 50-150,
      so the instance was busy 150 s (not 200);
    - machine ip-2 (c6a.xlarge): one job of 60 s;
    - the local stack (no instance type): one job of 60 s, priced as c6a.large.
    """
    monkeypatch.setenv("WHISPERQ_INSTANCE_PRICES", json.dumps({"c6a.xlarge": {"spot": 0.1}}))
    monkeypatch.setenv("WHISPERQ_FLEET_INSTANCE_TYPE", "c6a.large")
    write_batch(cli_env, "wk", [*PATHS, "pending.wav"])
    jobs = [
        ("a.wav", 600, 100, at(100), "ip-1:11", "c6a.xlarge"),
        ("b.wav", 600, 100, at(150), "ip-1:12", "c6a.xlarge"),
        ("c.wav", 300, 60, at(60), "ip-2:21", "c6a.xlarge"),
        ("d.wav", 300, 60, at(60), "laptop:31", None),
    ]
    for path, duration, seconds, finished, worker, instance_type in jobs:
        write_result(
            cli_env, "wk", path, duration=duration, job_seconds=seconds, finished_at=finished,
            worker_id=worker, instance_type=instance_type,
        )  # fmt: skip
    return "wk"


def cost_json(*args: str) -> dict:
    result = runner.invoke(app, ["cost", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cost_of_a_batch_by_hand(priced_batch):
    data = cost_json(priced_batch)
    assert data["estimate"] is True and data["market"] == "spot"
    assert data["results"] == 4 and data["unreadable_results"] == 0
    assert data["audio_hours"] == pytest.approx(0.5)
    assert data["job_seconds"] == pytest.approx(320)  # the jobs' own timings, summed
    assert data["instance_seconds"] == pytest.approx(150 + 60 + 60)
    # c6a.xlarge at the configured $0.10 spot, c6a.large at the table's $0.033
    dollars = (150 + 60) / 3600 * 0.1 + 60 / 3600 * 0.033
    assert data["dollars"] == pytest.approx(dollars, abs=1e-6)
    assert data["dollars_per_audio_hour"] == pytest.approx(dollars / 0.5, abs=1e-6)
    assert data["managed_dollars"] == pytest.approx(30 * 0.024)
    by_type = {item["instance_type"]: item for item in data["by_type"]}
    assert by_type["c6a.xlarge"]["jobs"] == 3 and not by_type["c6a.xlarge"]["assumed"]
    assert by_type["c6a.large"]["assumed"] and by_type["c6a.large"]["instance_seconds"] == 60

    on_demand = cost_json(priced_batch, "--market", "on_demand")
    assert on_demand["dollars"] == pytest.approx(210 / 3600 * 0.153 + 60 / 3600 * 0.0765)


def test_cost_table_for_people(priced_batch):
    result = runner.invoke(app, ["cost", priced_batch])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "estimates, spot" in text and "c6a.xlarge" in text and "c6a.large *" in text
    assert "audio: 0.5 h in 4 of 5 file(s)" in text
    assert "AWS Transcribe for the same audio ($0.024/min): $0.72" in text
    assert "Job time only: no idle or boot time" in text
    assert "no instance type recorded: priced as c6a.large" in text


def test_cost_errors_say_what_to_do(cli_env, monkeypatch):
    result = runner.invoke(app, ["cost", "nope"])
    assert result.exit_code == 1 and "No batch named 'nope'" in result.output

    write_batch(cli_env, "fresh", ["a.wav", "b.wav"])
    result = runner.invoke(app, ["cost", "fresh"])
    assert result.exit_code == 1
    assert "no finished results yet (2 file(s) submitted)" in result.output
    assert "whisperq wait fresh" in result.output

    write_result(
        cli_env, "fresh", "a.wav", duration=60, job_seconds=5, finished_at=T0,
        instance_type="z9.huge",
    )  # fmt: skip
    result = runner.invoke(app, ["cost", "fresh"])
    assert result.exit_code == 1
    assert "no price for instance type z9.huge" in result.output
    assert "WHISPERQ_INSTANCE_PRICES" in result.output and "instance_prices" in result.output
    assert '"z9.huge" = { on_demand' in result.output  # the type to add, not a placeholder
    monkeypatch.setenv(
        "WHISPERQ_INSTANCE_PRICES", json.dumps({"z9.huge": {"on_demand": 3, "spot": 1}})
    )
    assert cost_json("fresh")["dollars"] == pytest.approx(5 / 3600)

    monkeypatch.setenv("WHISPERQ_INSTANCE_PRICES", json.dumps({"q.large": {"spot": 1}}))
    result = runner.invoke(app, ["cost", "fresh"])
    assert result.exit_code == 1
    assert "instance_prices (config file or WHISPERQ_INSTANCE_PRICES)" in result.output
    assert "no on_demand price for instance type q.large" in result.output

    result = runner.invoke(app, ["cost", "fresh", "--market", "reserved"])
    assert result.exit_code == 2 and "--market must be spot or on_demand" in result.output


def test_cost_help_says_it_reads_every_result():
    result = runner.invoke(app, ["cost", "--help"], env={"COLUMNS": "200"})
    assert "Reads every result JSON of the batch" in result.output


def test_busy_seconds_counts_overlaps_once():
    assert batch_cost.busy_seconds([]) == 0
    assert batch_cost.busy_seconds([(0, 100), (50, 150), (200, 260), (255, 256)]) == 150 + 60
    assert batch_cost.busy_seconds([(10, 20), (0, 5)]) == 15


# --- whisperq simulate ------------------------------------------------------------------


def test_simulate_prints_the_table(isolated_settings):
    result = runner.invoke(
        app, ["simulate", "--calls", "300", "--max-instances", "5"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "built-in day x1: 300 calls; c6a.large spot $0.0330/h" in text
    assert "autoscaled" in text and "always-on" in text and "(estimates)" in text
    assert "AWS Transcribe, same audio ($)" in text and "simulated in" in text


def test_simulate_json_and_plot(isolated_settings, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "day.png"
    result = runner.invoke(app, ["simulate", "--calls", "100", "--plot", str(png), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["autoscaled"]["calls"] == 100 and data["always-on"]["calls"] == 100
    assert data["settings"]["price_per_instance_hour"] == pytest.approx(0.033)
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_simulate_uses_configured_prices_and_explains_bad_options(isolated_settings, monkeypatch):
    monkeypatch.setenv("WHISPERQ_INSTANCE_PRICES", json.dumps({"c6a.large": {"spot": 0.05}}))
    result = runner.invoke(app, ["simulate", "--calls", "50", "--json"])
    assert json.loads(result.stdout)["settings"]["price_per_instance_hour"] == 0.05
    result = runner.invoke(app, ["simulate", "--calls", "50", "--instance-type", "g4dn.xlarge"])
    message = " ".join(result.output.split())
    assert result.exit_code == 1 and "no speed figure for small on GPU type g4dn.xlarge" in message
    assert "give --speed-x" in message
    gpu = ["simulate", "--calls", "50", "--instance-type", "g4dn.xlarge", "--json"]
    result = runner.invoke(app, [*gpu, "--model", "large-v3"])
    assert json.loads(result.stdout)["settings"]["speed_basis"] == "published"
    result = runner.invoke(app, ["simulate", "--instance-type", "z9.large"])
    assert result.exit_code == 1 and "no price for instance type z9.large" in result.output
