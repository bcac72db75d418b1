"""Push alerts to Alertmanager's v2 API (``POST {url}/api/v2/alerts``), as Prometheus does.

:class:`AlertSender` keeps the active alerts and the resolutions not yet delivered.
``set_active`` and ``resolve`` only change that state (they never block and may be called
from any thread); ``run()`` is the loop that posts:

* right after a change, the changed alerts and the pending resolutions;
* every ``resend_interval_s``, every active alert. Active alerts carry
  ``endsAt = now + 4 x resend_interval_s`` (Prometheus' rule), so an alert whose sender
  died resolves by itself in Alertmanager instead of firing forever;
* resolutions carry their ``endsAt`` and are kept until Alertmanager accepted them once.

Connection errors, timeouts, 5xx, 408 and 429 keep everything and retry with capped
exponential backoff; ``run()`` never raises (except on cancellation). A 4xx that a retry
cannot fix (a rejected alert) drops the batch's resolutions instead of retrying them forever;
labels are validated up front so that should not happen. Logs name alert keys, never labels or
annotations (they may carry customer data).

Alertmanager identifies an alert by its label set: when ``set_active`` changes the labels of a
key, the old label set is resolved.

:class:`AlertFanout` gives every alert to several Alertmanagers (the members of an HA cluster),
as Prometheus does: one :class:`AlertSender` per URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp

log = logging.getLogger(__name__)

_LABEL_NAME_RE: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")  # \Z: no final newline
_BATCH_SIZE: Final = 500
"""Alerts per POST: a full resend of many alerts goes out in several requests."""
_RETRY_STATUSES: Final = frozenset({408, 429})

Fingerprint = tuple[tuple[str, str], ...]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_strings(what: str, key: str, values: dict[str, str], *, labels: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in values.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"alert {key!r}: {what} {name!r} must map a string to a string, "
                            f"got {type(value).__name__}")
        if labels and not _LABEL_NAME_RE.match(name):
            raise ValueError(f"alert {key!r}: {name!r} is not a valid label name")
        if labels and value == "":
            raise ValueError(f"alert {key!r}: label {name!r} is empty (an empty label is no label)")
        out[name] = value
    return out


@dataclass(slots=True)
class _Alert:
    key: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at_ms: int
    ends_at_ms: int | None  # None while active
    version: int
    dirty: bool = True  # changed since Alertmanager last accepted it

    @property
    def fingerprint(self) -> Fingerprint:
        return tuple(sorted(self.labels.items()))


class AlertSender:
    """Keeps partnerpulse's alerts in an Alertmanager (v2 API); see the module docstring."""

    def __init__(self, url: str, resend_interval_s: float = 30, timeout_s: float = 5,
                 max_pending: int = 10000, *, backoff_initial_s: float = 0.5,
                 backoff_max_s: float | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Alertmanager URL must be http(s)://host:port[/prefix], got {url!r}")
        if resend_interval_s <= 0 or timeout_s <= 0 or max_pending < 1 or backoff_initial_s <= 0:
            raise ValueError("resend_interval_s, timeout_s, backoff_initial_s must be > 0, "
                             "max_pending >= 1")
        self.url = url.rstrip("/")
        self.endpoint = f"{self.url}/api/v2/alerts"
        # for log lines: credentials in the URL (http://user:password@host) stay out of logs
        parts = urlsplit(self.endpoint)
        self.shown_endpoint = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        self.resend_interval_s = float(resend_interval_s)
        self.timeout_s = float(timeout_s)
        self.max_pending = max_pending
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = (backoff_max_s if backoff_max_s is not None
                              else max(backoff_initial_s, min(30.0, self.resend_interval_s)))
        # counters, for metrics
        self.sent_batches = 0
        self.failed_posts = 0
        self.dropped = 0
        self.last_success_ms: int | None = None
        self.last_error: str | None = None

        self._lock = threading.Lock()
        self._active: dict[str, _Alert] = {}
        self._resolved: dict[Fingerprint, _Alert] = {}
        self._version = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = False
        self._finished = threading.Event()
        self._done: asyncio.Event | None = None

    # --- state (any thread) --------------------------------------------------------
    @property
    def pending(self) -> int:
        """Alert updates Alertmanager has not accepted yet: changed alerts and resolutions."""
        with self._lock:
            return sum(1 for a in self._active.values() if a.dirty) + len(self._resolved)

    @property
    def active(self) -> int:
        """Active alerts (all re-sent every resend interval)."""
        with self._lock:
            return len(self._active)

    def set_active(self, key: str, labels: dict[str, str], annotations: dict[str, str],
                   starts_at_ms: int) -> None:
        """Fire (or update) the alert ``key``. Values must be plain strings."""
        labels = _check_strings("label", key, labels, labels=True)
        annotations = _check_strings("annotation", key, annotations, labels=False)
        if not labels:
            raise ValueError(f"alert {key!r}: Alertmanager needs at least one label")
        changed = False
        with self._lock:
            old = self._active.get(key)
            if old is not None and old.labels == labels and old.annotations == annotations \
                    and old.starts_at_ms == starts_at_ms:
                return
            if old is None and len(self._active) + len(self._resolved) >= self.max_pending \
                    and not self._make_room():
                self.dropped += 1
                log.warning("alert %s dropped: %d alerts already pending (max_pending)",
                            key, self.max_pending)
                return
            self._version += 1
            alert = _Alert(key, labels, annotations, starts_at_ms, None, self._version)
            if old is not None and old.fingerprint != alert.fingerprint:
                # Another label set is another alert for Alertmanager: resolve the old one.
                self._queue_resolution(old, _now_ms())
            self._resolved.pop(alert.fingerprint, None)  # firing again supersedes a resolution
            self._active[key] = alert
            changed = True
        if changed:
            self._notify()

    def resolve(self, key: str, ends_at_ms: int) -> None:
        """Resolve the alert ``key`` (no-op when it is not active)."""
        with self._lock:
            alert = self._active.pop(key, None)
            if alert is None:
                return
            self._queue_resolution(alert, ends_at_ms)
        self._notify()

    def _queue_resolution(self, alert: _Alert, ends_at_ms: int) -> None:
        self._version += 1
        alert.ends_at_ms = max(ends_at_ms, alert.starts_at_ms)  # Alertmanager rejects end < start
        alert.version, alert.dirty = self._version, True
        self._resolved[alert.fingerprint] = alert
        while len(self._active) + len(self._resolved) > self.max_pending and self._make_room():
            pass

    def _make_room(self) -> bool:
        """Drop the oldest resolution; Alertmanager expires it at its last endsAt anyway."""
        if not self._resolved:
            return False
        fingerprint = next(iter(self._resolved))
        dropped = self._resolved.pop(fingerprint)
        self.dropped += 1
        log.warning("resolution of alert %s dropped (max_pending %d): it expires in Alertmanager "
                    "within %.0fs", dropped.key, self.max_pending, 4 * self.resend_interval_s)
        return True

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return  # run() sends everything pending when it starts
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wake.set)

    # --- the loop --------------------------------------------------------------------
    async def run(self) -> None:
        """Post until :meth:`stop`; never raises (cancellation excepted)."""
        loop = asyncio.get_running_loop()
        self._wake, self._stop, self._done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._finished.clear()
        self._loop = loop  # before reading _stopping: stop() sets it, then reads _loop
        if self._stopping:
            self._stop.set()
        if self.pending:
            self._wake.set()
        failures, full = 0, False
        next_full = loop.time() + self.resend_interval_s
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as session:
                while not self._stopping:
                    if failures:
                        delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (failures - 1))
                        await self._wait(self._stop, delay * random.uniform(0.8, 1.0))
                    else:
                        await self._wait(self._wake, next_full - loop.time())
                    if self._stopping:
                        break
                    self._wake.clear()
                    if loop.time() >= next_full:
                        full = True
                    try:
                        ok = await self._flush(session, full=full)
                    except Exception:  # a bug must not end alerting
                        log.exception("unexpected error while posting alerts")
                        self.last_error = "unexpected error"
                        ok = False
                    if ok:
                        if failures:
                            log.info("Alertmanager %s accepts alerts again after %d failed attempts",
                                     self.shown_endpoint, failures)
                        if full:
                            next_full = loop.time() + self.resend_interval_s
                        failures, full = 0, False
                    else:
                        if not failures:
                            log.warning("cannot post alerts to %s (%s): %d pending, retrying with "
                                        "backoff", self.shown_endpoint, self.last_error, self.pending)
                        # the retry sends everything: endsAt needs refreshing after an outage
                        failures, full = failures + 1, True
                if self.pending:  # last chance for what changed just before stop()
                    try:
                        await self._flush(session, full=False)
                    except Exception:
                        log.exception("unexpected error while posting alerts at stop")
        finally:
            self._loop = None
            self._done.set()
            self._finished.set()

    async def stop(self) -> None:
        """Stop :meth:`run` (after one last attempt to post pending changes) and wait for it.

        May be awaited on run()'s event loop or on another one (another thread).
        """
        self._stopping = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not running
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._signal_stop()
            if self._done is not None:
                await self._done.wait()
        else:
            try:
                loop.call_soon_threadsafe(self._signal_stop)
            except RuntimeError:
                return  # the loop closed meanwhile
            await asyncio.to_thread(self._finished.wait)

    def _signal_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._wake is not None:
            self._wake.set()

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float) -> None:
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def _batch(self, full: bool, now_ms: int) -> tuple[list[dict[str, Any]], list[tuple[_Alert, int]]]:
        ends_active = _iso(now_ms + round(4 * self.resend_interval_s * 1000))
        payload: list[dict[str, Any]] = []
        sent: list[tuple[_Alert, int]] = []
        with self._lock:
            for alert in self._active.values():
                if full or alert.dirty:
                    payload.append(self._json(alert, ends_active))
                    sent.append((alert, alert.version))
            for alert in self._resolved.values():
                assert alert.ends_at_ms is not None
                payload.append(self._json(alert, _iso(alert.ends_at_ms)))
                sent.append((alert, alert.version))
        return payload, sent

    @staticmethod
    def _json(alert: _Alert, ends_at: str) -> dict[str, Any]:
        return {"labels": alert.labels, "annotations": alert.annotations,
                "startsAt": _iso(alert.starts_at_ms), "endsAt": ends_at}

    def _delivered(self, sent: list[tuple[_Alert, int]]) -> None:
        with self._lock:
            for alert, version in sent:
                if alert.version != version:
                    continue  # changed while in flight: the newer version is still to send
                if alert.ends_at_ms is None:
                    if self._active.get(alert.key) is alert:
                        alert.dirty = False
                elif self._resolved.get(alert.fingerprint) is alert:
                    del self._resolved[alert.fingerprint]

    async def _flush(self, session: aiohttp.ClientSession, full: bool) -> bool:
        """Post the due alerts in batches; True when Alertmanager took all of them."""
        payload, sent = self._batch(full, _now_ms())
        for start in range(0, len(payload), _BATCH_SIZE):
            chunk, chunk_sent = payload[start:start + _BATCH_SIZE], sent[start:start + _BATCH_SIZE]
            keys = [a.key for a, _ in chunk_sent]
            shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5})" if len(keys) > 5 else "")
            try:
                async with session.post(self.endpoint, json=chunk) as response:
                    status = response.status
                    await response.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.failed_posts += 1
                self.last_error = type(exc).__name__
                log.debug("posting %d alerts to %s failed (%s): %s", len(chunk), self.shown_endpoint,
                          self.last_error, shown)
                return False
            if 200 <= status < 300:
                self.sent_batches += 1
                self.last_success_ms = _now_ms()
                self._delivered(chunk_sent)
                log.debug("posted %d alerts: %s", len(chunk), shown)
                continue
            self.failed_posts += 1
            self.last_error = f"HTTP {status}"
            if status >= 500 or status in _RETRY_STATUSES:
                log.debug("Alertmanager answered %d to %d alerts: %s", status, len(chunk), shown)
                return False
            # A 4xx a retry cannot fix. Alertmanager still stores the valid alerts of the
            # batch: count the batch as done rather than re-posting it forever.
            log.error("Alertmanager rejected alerts with HTTP %d (not retried): %s", status, shown)
            self._delivered(chunk_sent)
        return True


class AlertFanout:
    """Every alert to every Alertmanager given: Prometheus' HA model, where each member of an
    Alertmanager cluster receives all alerts and the members deduplicate notifications among
    themselves.

    One :class:`AlertSender` per URL, so each Alertmanager has its own queue, retries and backoff:
    one that is down neither delays nor drops what the others receive. The figures are sums over
    the senders (the exporter's delivery metrics carry no labels); the log names the endpoint
    that fails.
    """

    def __init__(self, urls: Sequence[str], resend_interval_s: float = 30, timeout_s: float = 5,
                 max_pending: int = 10000, *, backoff_initial_s: float = 0.5,
                 backoff_max_s: float | None = None) -> None:
        # the same Alertmanager given twice would get every alert twice: once is enough
        unique = list(dict.fromkeys(url.rstrip("/") for url in urls))
        if not unique:
            raise ValueError("at least one Alertmanager URL is needed")
        self.senders = [AlertSender(url, resend_interval_s, timeout_s, max_pending,
                                    backoff_initial_s=backoff_initial_s,
                                    backoff_max_s=backoff_max_s) for url in unique]

    def set_active(self, key: str, labels: dict[str, str], annotations: dict[str, str],
                   starts_at_ms: int) -> None:
        """Fire (or update) the alert ``key`` in every Alertmanager; see :meth:`AlertSender.set_active`."""
        # bad labels raise in the first sender, before any sender changed: all or none
        for sender in self.senders:
            sender.set_active(key, labels, annotations, starts_at_ms)

    def resolve(self, key: str, ends_at_ms: int) -> None:
        """Resolve the alert ``key`` in every Alertmanager."""
        for sender in self.senders:
            sender.resolve(key, ends_at_ms)

    async def run(self) -> None:
        """Run every sender's loop until :meth:`stop`; never raises (cancellation excepted)."""
        await asyncio.gather(*(sender.run() for sender in self.senders))

    async def stop(self) -> None:
        """Stop every sender (each after its last attempt to post) and wait for them."""
        await asyncio.gather(*(sender.stop() for sender in self.senders))

    @property
    def sent_batches(self) -> int:
        """Batches accepted, summed over the Alertmanagers."""
        return sum(s.sent_batches for s in self.senders)

    @property
    def failed_posts(self) -> int:
        """Failed posts, summed over the Alertmanagers."""
        return sum(s.failed_posts for s in self.senders)

    @property
    def dropped(self) -> int:
        """Alerts and resolutions dropped past ``max_pending``, summed over the Alertmanagers."""
        return sum(s.dropped for s in self.senders)

    @property
    def pending(self) -> int:
        """Updates not yet accepted, summed over the Alertmanagers."""
        return sum(s.pending for s in self.senders)
