"""KPI state changes are logged one by one up to a rate, the rest counted in one line; every
change still goes to the alerts topic (streams/runtime/alerting.py)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from streams.config.settings import Settings
from streams.judgement.alerts import Alert
from streams.runtime import alerting
from streams.runtime.alerting import Alerting, LogBudget


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _alert(i: int) -> Alert:
    return Alert(partner=f"p{i}", tier="select", kpi="asa_seconds", window="1h", old="ok",
                 new="breach", value=90.0, target=60.0, lower=None, upper=None, samples=40,
                 since_ms=i, dedup_key=f"p{i}/asa_seconds/1h")


def test_state_changes_over_the_rate_are_counted_in_one_line(
        caplog: pytest.LogCaptureFixture) -> None:
    sent: list[Any] = []
    topic = SimpleNamespace(send_soon=lambda **kw: sent.append(kw))
    clock = _Clock()
    routed = Alerting(Settings(), topic, watch=SimpleNamespace())  # type: ignore[arg-type]
    routed.state_lines = LogBudget(alerting.STATE_LINES_PER_S, clock)
    per_s = alerting.STATE_LINES_PER_S
    caplog.set_level(logging.WARNING, logger="partnerpulse")
    routed.deliver([_alert(i) for i in range(3 * per_s + 7)])  # one second's burst
    lines = [r.getMessage() for r in caplog.records]
    assert len(sent) == 3 * per_s + 7  # every change on the topic
    assert lines == [f"kpi state {_alert(i).summary()}" for i in range(per_s)]
    caplog.clear()
    routed.log_held_states()  # the second is not over: nothing yet
    assert not caplog.records
    clock.t += 1.0
    routed.log_held_states()
    assert [r.getMessage() for r in caplog.records] == [
        f"kpi state: {2 * per_s + 7} more changes in the last seconds, not logged one by one "
        f"(over {per_s} a second); each is on the alerts topic"]
    caplog.clear()
    routed.deliver([_alert(1)])  # a new second: logged again, nothing held
    assert [r.getMessage() for r in caplog.records] == [f"kpi state {_alert(1).summary()}"]
    routed.log_held_states()
    assert len(caplog.records) == 1
