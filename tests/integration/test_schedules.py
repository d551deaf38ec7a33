"""EventBridge schedules, locally: the template's `Type: Schedule` events run their function on a
timer, with EventBridge's Scheduled Event, and `make dev` runs the job sweeper every minute."""

from __future__ import annotations

from typing import Any

import pytest

from seekless_local.schedules import Schedule, Schedules, rate_seconds, scheduled_event, schedules
from seekless_local.stack import LocalStack, StackConfig
from seekless_local.template import load_template
from tests.waiting import wait_for


def test_rates_read_as_eventbridge_spells_them() -> None:
    assert rate_seconds("rate(1 minute)") == 60
    assert rate_seconds("rate(5 minutes)") == 300
    assert rate_seconds("rate(2 hours)") == 7200
    assert rate_seconds("rate(1 day)") == 86400
    for wrong in ("rate(1 minutes)", "rate(2 minute)", "rate(0 minutes)", "cron(0 12 * * ? *)", "rate(5 weeks)"):
        with pytest.raises(ValueError):
            rate_seconds(wrong)


def test_the_templates_schedule_is_the_sweeper_every_minute() -> None:
    assert schedules(load_template()) == [Schedule("JobSweeperFunction", "JobSweeperFunction.EveryMinute", 60.0)]


def test_a_disabled_schedule_does_not_run() -> None:
    template = {
        "Resources": {
            "Fn": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "Events": {
                        "Off": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 minute)", "Enabled": False}},
                        "On": {"Type": "Schedule", "Properties": {"Schedule": "rate(3 minutes)"}},
                    }
                },
            }
        }
    }
    assert schedules(template) == [Schedule("Fn", "Fn.On", 180.0)]


def test_each_run_gets_a_scheduled_event_and_a_failing_run_does_not_stop_the_timer() -> None:
    seen: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> None:
        seen.append(event)
        if len(seen) == 1:
            raise RuntimeError("the first run fails")

    schedule = Schedule("Fn", "Fn.Every", 60.0)
    with Schedules([schedule], load=lambda logical_id: handler, period_seconds=0.05) as running:
        wait_for(lambda: running.runs["Fn.Every"] >= 3, what="three scheduled runs")
    assert len(seen) >= 3 and running.failures["Fn.Every"] == 1
    shape = scheduled_event(schedule)
    assert all(event.keys() == shape.keys() for event in seen)
    assert {event["detail-type"] for event in seen} == {"Scheduled Event"}
    assert len({event["id"] for event in seen}) == len(seen)


def test_the_stack_runs_the_sweeper_on_its_schedule(redis_url: str) -> None:
    config = StackConfig(
        rest_port=0, ws_port=0, redis_url=redis_url, event_sources=False, schedules=True, schedule_period_seconds=0.2
    )
    with LocalStack(config) as running:
        wait_for(lambda: running.schedules.runs["JobSweeperFunction.EveryMinute"] >= 2, timeout=30, what="two sweeps")
        assert running.schedules.failures["JobSweeperFunction.EveryMinute"] == 0
        assert "Schedule     JobSweeperFunction every 60 s" in running.summary()
