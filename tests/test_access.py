"""Each partner sees its own (issue 19, part 4): access tokens for the data views, and a worker
bound beyond loopback that refuses them without a token file.

End to end on the real broker: a partner's token reads only its partner's wall tiles, open
tickets and card, another partner's data comes back empty, an operator's token reads all, no
or a wrong token is refused, and no token ever reaches the worker's log."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.config.access import (
    EVERYONE,
    Refusal,
    Scope,
    decide,
    hash_token,
    is_loopback,
    load_tokens,
    new_token,
)
from streams.config.catalog import load_config
from streams.config.yamlfile import ConfigError
from streams.engine.core import MonthCalendar
from streams.ingest.topics import all_topics
from streams.runtime.kafka_admin import ensure_topics
from streams.tools.broker import EmbeddedBroker
from tests import reference
from tests.harness import REPO, Worker, as_messages, poll, produce
from tests.streams_gen import DAY, HOUR, _ms, random_events

PARTNERS = ["acme", "bluefiber", "northwind-telecom"]


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokens.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the token file and the decision ---------------------------------------------------------
def test_a_token_opens_what_its_entry_says(tmp_path: Path) -> None:
    acme, ops = new_token(), new_token()
    assert acme != ops and len(acme) >= 40
    tokens = load_tokens(_file(tmp_path, f"""tokens:
  - sha256: {hash_token(acme)}
    partner: acme
  - sha256: {hash_token(ops).upper()}
    operator: true
"""))
    # the file holds hashes only: the hash is the token's SHA-256, computed here independently
    import hashlib

    assert hash_token(acme) == hashlib.sha256(acme.encode()).hexdigest()
    assert decide(tokens, "0.0.0.0", f"Bearer {acme}") == Scope("acme")
    assert decide(tokens, "127.0.0.1", f"bearer {ops}") == EVERYONE
    for header in (None, "", "Bearer ", f"Basic {acme}", f"Bearer {acme}x"):
        refused = decide(tokens, "127.0.0.1", header)
        assert isinstance(refused, Refusal) and refused.status == 401, header
    assert Scope("acme").allows("acme") and not Scope("acme").allows("acme2")


@pytest.mark.parametrize(("bind", "open_"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False),
    ("worker-1", False),
])
def test_without_tokens_only_loopback_serves_data(bind: str, open_: bool) -> None:
    got = decide(None, bind, None)
    assert (got == EVERYONE) is open_ and is_loopback(bind) is open_
    if not open_:
        assert isinstance(got, Refusal) and got.status == 403
        assert "access_tokens_file" in got.reason and bind in got.reason


@pytest.mark.parametrize(("text", "message"), [
    ("tokens:\n  - sha256: abc\n    partner: acme\n", ":2: sha256: give the 64 hex"),
    (f"tokens:\n  - sha256: {'a' * 64}\n", ":2: give either partner"),
    (f"tokens:\n  - sha256: {'a' * 64}\n    partner: acme\n    operator: true\n",
     "give either partner"),
    (f"tokens:\n  - sha256: {'a' * 64}\n    operator: true\n  - sha256: {'A' * 64}\n"
     "    partner: x\n", ":4: this token is listed twice"),
    (f"tokens:\n  - sha256: {'a' * 64}\n    team: acme\n", "team"),
])
def test_a_bad_token_file_names_its_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_tokens(_file(tmp_path, text))


def test_the_shipped_token_file_opens_nothing() -> None:
    """docker-compose mounts config/access-tokens.yaml: as shipped, no token opens anything."""
    tokens = load_tokens(REPO / "config" / "access-tokens.yaml")
    assert tokens.scopes == {}
    assert isinstance(decide(tokens, "0.0.0.0", f"Bearer {new_token()}"), Refusal)


def test_the_token_command_prints_a_token_and_its_entry(tmp_path: Path) -> None:
    made = subprocess.run([sys.executable, "-m", "streams", "token", "--partner", "acme"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    token = made.stdout.strip()
    path = _file(tmp_path, "tokens:\n" + made.stderr)
    assert decide(load_tokens(path), "0.0.0.0", f"Bearer {token}") == Scope("acme")
    assert token not in made.stderr  # the file's entry holds the hash only


# --- end to end ------------------------------------------------------------------------------
@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of the test's own."""
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as running:
        ensure_topics(running.bootstrap, all_topics(4))
        yield running


def _get(worker: Worker, path: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{worker.port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    return status, orjson.loads(body) if path.startswith("/api/") else body


@pytest.mark.slow
def test_a_partner_token_reads_its_partner_only_end_to_end(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    end = int(time.time() * 1000) - 60_000
    events = random_events(7, PARTNERS, end - 3 * DAY, 3 * DAY - HOUR)
    events += random_events(7, PARTNERS, end - HOUR, HOUR, prefix="b-")
    events = [(t, e) for t, e in events if _ms(e["ts"]) <= end]
    acme, ops, stranger = new_token(), new_token(), new_token()
    tokens = _file(tmp_path, f"""tokens:
  - sha256: {hash_token(acme)}
    partner: acme
  - sha256: {hash_token(ops)}
    operator: true
""")
    worker = Worker(broker.url, tmp_path, env={"PARTNERPULSE_ACCESS_TOKENS_FILE": str(tokens)})
    worker.start()
    exposed = Worker(broker.url, tmp_path, name="exposed", app_id="pp-exposed",
                     extra=["--web-bind", "0.0.0.0"])
    try:
        produce(broker.bootstrap, as_messages(events))
        want = len(reference.accepted_events(events))
        poll(lambda: sum(v for k, v in worker.counts().items() if k.endswith(":accepted"))
             >= want, 120, "every event counted")
        catalog, _ = load_config()
        calendar = MonthCalendar(catalog.report_timezone)
        month = MonthCalendar.name(calendar.index(end))
        open_tickets = reference.open_tickets(events, _get(worker, "/api/open", ops)[1]["now_ms"])
        assert {p for p, _, _ in open_tickets} == set(PARTNERS)  # every partner has some

        for path in ("/api/wall", "/api/open?limit=5000", f"/api/report?month={month}"):
            for token in (None, stranger):
                status, body = _get(worker, path, token)
                assert status == 401 and "token" in body["error"], (path, token is None)
        status, wall = _get(worker, "/api/wall", acme)
        assert status == 200 and [t["partner"] for t in wall["partners"]] == ["acme"]
        status, wall = _get(worker, "/api/wall", ops)
        assert sorted(t["partner"] for t in wall["partners"]) == sorted(PARTNERS)
        status, body = _get(worker, "/api/wall?spark=many", ops)  # a clear refusal, no crash
        assert status == 400 and body["error"].startswith("spark='many'"), (status, body)
        _, mine = _get(worker, "/api/open?limit=5000", acme)
        assert {(r["partner"], r["entity_id"]) for r in mine["items"]
                if r["kpi"] in reference.OPEN_TICKET_KPIS} == {
            (p, t) for p, _, t in open_tickets if p == "acme"}
        _, theirs = _get(worker, "/api/open?partner=bluefiber&limit=5000", acme)
        assert theirs["items"] == [] and theirs["matched"] == 0
        _, all_open = _get(worker, "/api/open?partner=bluefiber&limit=5000", ops)
        assert all_open["matched"] > 0
        _, card = _get(worker, f"/api/report?month={month}", acme)
        assert set(card["partners"]) == {"acme"}
        _, card = _get(worker, f"/api/report?month={month}", ops)
        assert set(card["partners"]) == set(PARTNERS)
        # the commands carry the token too
        ran = subprocess.run(
            [sys.executable, "-m", "streams", "open", "--worker",
             f"http://127.0.0.1:{worker.port}", "--format", "json", "--limit", "5000"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
            env={**worker.env, "PARTNERPULSE_TOKEN": acme})
        assert ran.returncode == 0, ran.stderr
        assert {r["partner"] for r in orjson.loads(ran.stdout)["items"]} == {"acme"}
        refused = subprocess.run(
            [sys.executable, "-m", "streams", "report", "--month", month, "--worker",
             f"http://127.0.0.1:{worker.port}"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
            env={**worker.env, "PARTNERPULSE_TOKEN": stranger})
        assert refused.returncode == 1 and "unknown access token" in refused.stderr
        # what stays open: metrics, readiness, the page itself (no data in it)
        assert _get(worker, "/metrics")[0] == 200 and _get(worker, "/wall")[0] == 200
        # a worker bound beyond loopback without a token file serves no data
        exposed.start()
        status, body = _get(exposed, "/api/wall")
        assert status == 403 and "access_tokens_file" in body["error"]
        assert _get(exposed, "/api/open")[0] == 403
        assert _get(exposed, "/metrics")[0] == 200
    finally:
        worker.stop()
        exposed.stop()
    log = Path(worker.log_path).read_text(errors="replace")
    assert all(token not in log for token in (acme, ops, stranger))
