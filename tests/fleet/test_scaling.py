"""The scaling formula and one scaling step: pure."""

import pytest

from whisperq.fleet.scaling import Decision, decide, desired_capacity


@pytest.mark.parametrize(
    ("visible", "in_flight", "per", "maximum", "expected"),
    [
        (0, 0, 4, 10, 0),
        (1, 0, 4, 10, 1),  # from zero at the first message
        (0, 1, 4, 10, 1),  # a job still running keeps its instance
        (4, 0, 4, 10, 1),
        (5, 0, 4, 10, 2),
        (3, 6, 4, 10, 3),  # in-flight counts
        (1000, 0, 4, 10, 10),  # capped
        (-3, 0, 4, 10, 0),  # SQS approximations never make it negative
    ],
)
def test_desired_capacity(visible, in_flight, per, maximum, expected):
    assert desired_capacity(visible, in_flight, per, maximum) == expected


def test_jobs_per_instance_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        desired_capacity(1, 0, 0, 10)


def step(visible, in_flight=0, current=0, idle_since=None, now=1000.0):
    return decide(
        visible, in_flight, current, 4, 10, idle_minutes=10, idle_since=idle_since, now=now
    )


def test_work_sets_the_formula_and_clears_idle():
    assert step(9, current=0, idle_since=500) == Decision(3, None)
    assert step(2, current=5) == Decision(1, None)  # busy ones are protected from scale-in


def test_an_empty_queue_keeps_instances_for_the_idle_period_then_goes_to_zero():
    first = step(0, current=3, now=1000)
    assert first == Decision(3, 1000)
    assert step(0, current=3, idle_since=1000, now=1000 + 599) == Decision(3, 1000)
    assert step(0, current=3, idle_since=1000, now=1000 + 600) == Decision(0, 1000)
    assert step(0, current=0, idle_since=None, now=5) == Decision(0, 5)
