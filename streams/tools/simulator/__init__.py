"""Deterministic partner traffic: tickets, calls, install orders and surveys as contract events.

Pure Python (no Kafka, no Faust). ``Simulator.events_between(t0, t1)`` returns every event
with ``t0 <= ts < t1`` (ts: integer epoch ms), sorted by ts, as ``(topic, event)``. Each
entity's lifecycle is a pure function of (seed, start_ms, partner, stream, arrival index),
and follow-up events are kept in an internal schedule, so consecutive calls over adjacent
ranges hand out every event exactly once, however the time axis is cut, and two
simulators built with the same arguments produce the same events.

Shape of the traffic (per partner, at the default rate, 12 partners)
--------------------------------------------------------------------
* Three arrival streams with regular, jittered spacing: ~53 tickets/min (23 down_hard,
  23 service_affecting, 7 question), 28 calls/min, 28 install orders/min; plus
  failure-after-install tickets (an ``order_id`` on the opened event, minutes after the
  install), csat/xla survey answers after the resolution linked by ``ticket_id`` (half of
  the tickets each, 3-45 min after it), and a partner's follow-up of poor CSAT answers.
  Overall ~85 events/s; ``rate`` scales all volumes linearly (per partner:
  rate / len(partners)).
* Delays and yes/no decisions come from low-discrepancy (Kronecker) sequences instead of
  independent draws, so counts per minute and shares over a few hundred entities stay
  close to their means: every partner produces >= ~22 samples of every KPI of the default
  catalog in every simulated minute, except the two counted once per escalated ticket
  (good_escalation_ratio, escalation_review_agreement: ~7 and ~6 a minute on average).
* Escalated tickets get a review by the vendor (``escalation_reviewed``, 80 %, 20-40 min after
  the first hop) whose verdict is the escalation's true quality (3 % of verdicts flipped).
  Delays of durations are lognormal, truncated (not clipped: no spike at the cap).
* Durations are plausible against the targets: open->first contact ~0.2-1.2x 7200 s,
  open->resolved ~0.25-1x 14400 s, call waits ~24-95 s. Compressed: install lead times
  (minutes, not days), follow-up tickets (3-25 min after an install), escalation hops
  (every 20-30 min), closing and reopening (minutes).
* Tickets are generated backwards from their first contact, so OTS samples arrive at a
  steady rate and a drift in OTS shows in contact time (when the engine sees it).

Warm start
----------
A ticket takes hours from opened to resolved, so a monitor switched on at ``start_ms``
would see no OTS/MTTR samples for hours. By default (``warm_start=True``) the partners
already have work in flight at ``start_ms``: every entity still active then exists, and
the part of its history that later KPI samples depend on is replayed at its true, earlier
event times (a ticket's opened event, its earliest escalation/resolution before start when
another follows; an order's scheduled events; a call's queued event). These ~90k events
(default rate, 12 partners, up to ~13 h before start) lie in
``[history_start_ms, start_ms)``: ask for them once, e.g. start the cursor at
``sim.history_start_ms`` instead of ``start_ms``. ``warm_start=False``: only entities
whose first event is at or after ``start_ms``.

Profiles
--------
``strong``/``weak`` are better/worse than the default targets, ``steady`` comfortably
within them; ``gaming`` has 30 % of its tickets needing escalation but escalates one only
while its running escalation rate is under 14.9 % (``throttle.py``: counted from an hour
before start, in event time, as handed out), so it holds just under its 15 % target; most of
its escalations are undocumented or KB-solvable, and it flags most of those good anyway
(the vendor's ``escalation_reviewed`` verdicts, on 80 % of escalations, say bad);
``watermelon`` is as fast as ``strong`` but its customers answer like a weak partner's
(green on SLA, red on experience); ``selective`` surveys 35 % of its customers, and only
15 % of those whose answer would be poor (its CSAT flattered, its survey_coverage low);
``drifting`` starts well within
its ASA and OTS targets and rises linearly past them over ``drift_minutes`` of event time:
ASA 40 s -> 120 s by queue time, down_hard OTS 3000 s -> 9000 s by first-contact time.
"""

from streams.tools.simulator.core import Simulator
from streams.tools.simulator.profiles import DEFAULT_PARTNERS, PROFILES, SimPartner

__all__ = ["DEFAULT_PARTNERS", "PROFILES", "SimPartner", "Simulator"]
