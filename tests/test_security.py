"""Security defaults: loopback HTTP, Kafka TLS/SASL from env or files, secrets kept out of
reprs, logs and flags, safe config parsing, and escaping of everything that reaches HTML,
PromQL, Prometheus exposition and Alertmanager.

Kafka TLS and SASL are tested on the configuration objects and with a real TLS handshake
against a local TLS server: the embedded tansu 0.6.0 accepts ``--cert`` but does not terminate
TLS, and its ``--authentication`` needs SCRAM users that can only be created through an
authenticated connection on its memory-only storage, so no broker here can check them.
"""

from __future__ import annotations

import ast
import fcntl
import json
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
import yaml
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import AuthProtocol, SASLMechanism
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from typer.testing import CliRunner

from streams.cli import app as cli_app
from streams.config.catalog import ConfigError, load_catalog, load_config, load_partners
from streams.config.kafka_auth import client_kwargs, faust_credentials, ssl_context
from streams.config.settings import KafkaClientSettings, Settings
from streams.engine.core import Engine
from streams.generators.rules import render_rules
from streams.ingest.contract import Parsed, decode
from streams.ingest.topics import all_topics
from streams.outputs.exporter import KpiCollector, make_registry
from streams.runtime.kafka_admin import ensure_topics
from streams.tools.broker import EmbeddedBroker
from streams.tools.replay import load_mapping
from tests.harness import REPO, Worker, poll, produce

PASSWORD = "Zq9-pw-d0n0tl0g-4417"
KAFKA_ENV = ("PARTNERPULSE_KAFKA_",)


@pytest.fixture(autouse=True)
def _clean_kafka_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PARTNERPULSE_KAFKA_* from the host leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith(KAFKA_ENV):
            monkeypatch.delenv(name)


# --- TLS material: the `pki` fixture in conftest.py ----------------------------------------
class TlsServer:
    """A TLS server on 127.0.0.1 that requires a client certificate signed by the test CA."""

    def __init__(self, pki: dict[str, Path]) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca_pem"]))
        self.context.load_cert_chain(str(pki["server_pem"]), str(pki["server_key"]))
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.peers: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    cert = tls.getpeercert() or {}
                    subject = dict(x[0] for x in cert.get("subject", ()))
                    self.peers.append(str(subject.get("commonName")))
                    tls.sendall(b"ok")
            except (OSError, ssl.SSLError):
                conn.close()

    def close(self) -> None:
        self.sock.close()


def _handshake(context: ssl.SSLContext, port: int, host: str = "localhost") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        return tls.recv(2)


# --- Kafka TLS / SASL settings ----------------------------------------------------------------
def test_plaintext_is_the_default_and_builds_no_credentials() -> None:
    settings = Settings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert faust_credentials(settings) is None
    assert client_kwargs(settings) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_sasl_ssl_from_the_environment(monkeypatch: pytest.MonkeyPatch, pki: dict[str, Path],
                                       mechanism: str) -> None:
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SASL_MECHANISM", mechanism)
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SASL_USERNAME", "pp-worker")
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SSL_CAFILE", str(pki["ca_pem"]))
    settings = Settings()
    creds = faust_credentials(settings)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol is AuthProtocol.SASL_SSL
    assert creds.mechanism is SASLMechanism(mechanism)
    assert (creds.username, creds.password) == ("pp-worker", PASSWORD)
    assert creds.ssl_context is not None and creds.ssl_context.verify_mode is ssl.CERT_REQUIRED
    assert creds.ssl_context.check_hostname
    # what Faust hands aiokafka, and what our own clients get, say the same thing
    via_faust = dict(credentials_to_aiokafka_auth(creds))
    ours = client_kwargs(settings)
    for kwargs in (via_faust, ours):
        assert kwargs["security_protocol"] == "SASL_SSL"
        assert kwargs["sasl_mechanism"] == mechanism
        assert kwargs["sasl_plain_username"] == "pp-worker"
        assert kwargs["sasl_plain_password"] == PASSWORD
        assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert PASSWORD not in repr(creds)
    # the arguments are accepted by the real client classes (no connection is made here)
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def build() -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", **ours)
        assert consumer._client._security_protocol == "SASL_SSL"

    asyncio.run(build())


def test_sasl_password_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text(PASSWORD + "\n")  # as `echo` or an editor writes it
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SASL_USERNAME", "pp")
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SASL_PASSWORD_FILE", str(secret))
    settings = KafkaClientSettings()
    assert client_kwargs(settings) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "pp", "sasl_plain_password": PASSWORD}
    creds = faust_credentials(settings)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol is AuthProtocol.SASL_PLAINTEXT and creds.ssl_context is None
    # the environment and a file at once is ambiguous
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SASL_PASSWORD", PASSWORD)
    with pytest.raises(ValidationError, match="not both") as err:
        KafkaClientSettings()
    assert PASSWORD not in str(err.value)


@pytest.mark.parametrize("env, problem", [
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_PASSWORD": PASSWORD}, "needs kafka_sasl_username"),
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_USERNAME": "u"}, "kafka_sasl_password"),
    ({"SASL_USERNAME": "u", "SASL_PASSWORD": PASSWORD}, "PLAINTEXT"),
    ({"SSL_CAFILE": "ca_pem"}, "use SSL or SASL_SSL"),
    ({"SECURITY_PROTOCOL": "SSL", "SSL_CERTFILE": "client_pem"}, "go together"),
    ({"SECURITY_PROTOCOL": "SSL", "SSL_CAFILE": "/nonexistent/ca.pem"}, "does not exist"),
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_USERNAME": "u",
      "SASL_PASSWORD_FILE": "/nonexistent/pw"}, "cannot read"),
    ({"SECURITY_PROTOCOL": "TLS"}, "kafka_security_protocol"),
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "GSSAPI", "SASL_USERNAME": "u",
      "SASL_PASSWORD": PASSWORD}, "kafka_sasl_mechanism"),
])
def test_inconsistent_kafka_security_is_refused_without_echoing_the_password(
        monkeypatch: pytest.MonkeyPatch, pki: dict[str, Path], env: dict[str, str],
        problem: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(f"PARTNERPULSE_KAFKA_{name}", str(pki.get(value, value)))
    with pytest.raises(ValidationError, match=problem) as err:
        Settings()
    assert PASSWORD not in str(err.value)


def test_tls_context_from_files_completes_a_mutual_tls_handshake(
        monkeypatch: pytest.MonkeyPatch, pki: dict[str, Path]) -> None:
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SSL_CAFILE", str(pki["ca_pem"]))
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SSL_CERTFILE", str(pki["client_pem"]))
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SSL_KEYFILE", str(pki["client_key"]))
    settings = Settings()
    creds = faust_credentials(settings)
    assert isinstance(creds, faust.SSLCredentials) and creds.protocol is AuthProtocol.SSL
    server = TlsServer(pki)
    try:
        assert _handshake(creds.context, server.port) == b"ok"
        assert server.peers == ["pp-worker"]  # the client certificate was presented
        # the broker's name is checked: a certificate for localhost does not pass for another name
        with pytest.raises(ssl.SSLCertVerificationError):
            _handshake(creds.context, server.port, host="kafka.example.com")
        # and only the configured CA is trusted
        monkeypatch.setenv("PARTNERPULSE_KAFKA_SSL_CAFILE", str(pki["other_pem"]))
        other = ssl_context(Settings())
        assert other is not None
        with pytest.raises(ssl.SSLCertVerificationError):
            _handshake(other, server.port)
    finally:
        server.close()


def test_secrets_never_show_in_repr_str_or_json(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    key_password = tmp_path / "key-password"
    key_password.write_text("k3y-" + PASSWORD)
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SASL_USERNAME", "pp")
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SASL_PASSWORD", PASSWORD)
    settings = Settings()
    for text in (repr(settings), str(settings), settings.model_dump_json(),
                 repr(settings.model_dump()), repr(faust_credentials(settings))):
        assert PASSWORD not in text
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == PASSWORD


def test_no_command_line_flag_takes_a_secret() -> None:
    import typer.main

    command = typer.main.get_command(cli_app)
    names = []
    for sub in command.commands.values():  # type: ignore[attr-defined]
        for param in sub.params:
            names += [param.name or "", *param.opts]
    assert names and not [n for n in names if any(w in n.lower() for w in
                                                  ("password", "secret", "sasl", "token", "key"))]
    result = CliRunner().invoke(cli_app, ["worker", "--kafka-sasl-password", PASSWORD])
    assert result.exit_code != 0 and "No such option" in result.output
    for sub in ("worker", "simulate", "replay"):  # the help points at the environment instead
        help_text = CliRunner().invoke(cli_app, [sub, "--help"]).output
        assert "password" not in help_text.lower()


@pytest.mark.slow
def test_a_worker_starting_with_sasl_credentials_never_logs_the_password(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    """A real start through Faust and aiokafka with SASL configured, logging at debug level.

    tansu has no SASL here, so the clients get as far as the SASL handshake and retry; that is
    where a client library would log its configuration or credentials.
    """
    worker = Worker(broker.url, tmp_path, app_id="pp-sasl-log", extra=["--log-level", "debug"])
    env = {"PARTNERPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "PARTNERPULSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
           "PARTNERPULSE_KAFKA_SASL_USERNAME": "pp-worker",
           "PARTNERPULSE_KAFKA_SASL_PASSWORD": PASSWORD,
           "PARTNERPULSE_CREATE_TOPICS": "false"}  # straight to Faust's own clients
    import os

    log = worker.log_path.open("ab")
    proc = subprocess.Popen(worker.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"})
    log.close()
    try:
        poll(lambda: "SaslHandShake" in worker.log_path.read_text(errors="replace")
             or proc.poll() is not None, 90, "the worker's SASL handshake")
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = worker.log_path.read_text(errors="replace")
    assert "SaslHandShake" in text, text[-2000:]
    assert "pp-worker" in text or "SCRAM-SHA-256" in text  # the log is about this config
    assert PASSWORD not in text


# --- HTTP binds loopback -------------------------------------------------------------------------
def _listening(port: int) -> list[str]:
    """Local addresses of the LISTEN sockets on ``port``, from /proc/net/tcp and tcp6."""
    out = []
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(addr_hex)
            # /proc prints the address as 32-bit words in host (little-endian) order
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
            out.append(socket.inet_ntop(family, words))
    return out


def _own_ipv4_addresses() -> list[str]:
    """Every IPv4 address of this machine's interfaces (SIOCGIFADDR), loopback excluded."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                reply = fcntl.ioctl(s.fileno(), 0x8915, request)  # SIOCGIFADDR
            except OSError:
                continue  # no IPv4 address on that interface
            addr = socket.inet_ntoa(reply[20:24])
            if not addr.startswith("127."):
                found.append(addr)
    return found


def test_http_binds_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().web_bind == "127.0.0.1"
    from streams.runtime.pipeline import Pipeline

    pipeline = Pipeline(Settings(store="memory"))
    assert pipeline.app.conf.web_bind == "127.0.0.1"
    monkeypatch.setenv("PARTNERPULSE_WEB_BIND", "0.0.0.0")  # exposing it is a deliberate act
    assert Settings().web_bind == "0.0.0.0"


# --- the worker with hostile names and poison messages ---------------------------------------------
HOSTILE_NAME = "Evil \"Co\" </script><img src=x onerror=alert(1)>\n{{ $labels }}\\ \u202e"


@pytest.fixture(scope="module")
def hostile_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Worker, Any]]:
    """A worker on a fresh broker, with a hostile partner display name in partners.yaml."""
    tmp = tmp_path_factory.mktemp("hostile")
    config = tmp / "config"
    shutil.copytree(REPO / "config", config)
    partners = yaml.safe_load((config / "partners.yaml").read_text())
    partners["partners"].append({"id": "evil-co", "tier": "select", "name": HOSTILE_NAME})
    (config / "partners.yaml").write_text(yaml.safe_dump(partners, allow_unicode=True))
    with EmbeddedBroker(log_path=tmp / "broker.log") as running:
        ensure_topics(running.bootstrap, all_topics(4))
        worker = Worker(running.url, tmp, app_id="pp-hostile", clock="wall",
                        extra=["--config", str(config), "--log-level", "info"]).start()
        try:
            yield worker, running
        finally:
            worker.stop()


@pytest.mark.slow
def test_worker_http_is_not_reachable_off_loopback(hostile_worker: tuple[Worker, Any]) -> None:
    worker, _ = hostile_worker
    bound = _listening(worker.port)
    assert bound, "the worker's port is not listening"
    assert set(bound) <= {"127.0.0.1", "::1"}, bound
    for addr in _own_ipv4_addresses():
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(3)
            s.connect((addr, worker.port))


MARKER = "PPSECRET-7f3a9c"


@pytest.mark.slow
def test_poison_messages_are_logged_by_position_not_content(
        hostile_worker: tuple[Worker, Any]) -> None:
    worker, running = hostile_worker
    now = int(time.time() * 1000)
    base = {"event_id": "ok-1", "partner_id": "evil-co", "ts": now - 1000, "call_id": "C-1"}
    poison = [
        {**base, "type": MARKER},  # an unknown type is quoted by the decoder
        {**base, "type": "queued", "partner_id": MARKER + " x"},
        {**base, "type": "queued", "event_id": MARKER + "\n"},
        {**base, "type": "queued", "call_id": MARKER + "\x1f"},
        {**base, "type": "queued", "ts": MARKER},
        {"event_id": "s-1", "type": "response", "partner_id": "evil-co", "ts": now,
         "kind": MARKER, "score": 3},
    ]
    raw = [orjson.dumps(p) for p in poison] + [MARKER.encode() + b"\xff{", b'{"x": "' +
                                                MARKER.encode() + b'"']
    before = worker.processed()
    produce(running.bootstrap, [("calls", b"poison", r) for r in raw])
    poll(lambda: worker.processed() >= before + len(raw), 90, "poison messages processed")
    counts = worker.counts()
    assert counts.get("calls:rejected", 0) >= len(raw)
    text = worker.log_path.read_text(errors="replace")
    assert text.count("dead letter calls[") >= len(raw)
    assert MARKER not in text


@pytest.mark.slow
def test_hostile_display_name_is_data_in_wall_json_and_absent_from_html(
        hostile_worker: tuple[Worker, Any]) -> None:
    worker, running = hostile_worker
    now = int(time.time() * 1000)
    events = [{"event_id": f"q-{i}", "type": "queued", "partner_id": "evil-co", "ts": now - 5000,
               "call_id": f"Q-{i}"} for i in range(3)]
    produce(running.bootstrap, [("calls", b"evil-co", orjson.dumps(e)) for e in events])

    def tile() -> dict[str, Any] | None:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/api/wall", timeout=5) as r:
            assert r.headers["Content-Type"] == "application/json"
            body = json.loads(r.read())  # strict JSON: the name is an escaped string
        return next((p for p in body["partners"] if p["partner"] == "evil-co"), None)

    found = poll(tile, 60, "evil-co on the wall")
    assert found["name"] == HOSTILE_NAME  # verbatim data; the page sets it with textContent
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/wall", timeout=5) as r:
        html = r.read().decode()
    assert "onerror" not in html and "Evil" not in html  # no data is templated into the page
    metrics = worker.metrics_text()
    assert "Evil" not in metrics  # display names are not labels
    list(text_string_to_metric_families(metrics))  # and the exposition parses


def _get(port: int, path: str) -> tuple[int, Any, bytes]:
    """Status, headers and body of a GET on the worker, error statuses included."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


@pytest.mark.slow
def test_faust_router_endpoints_are_off(hostile_worker: tuple[Worker, Any]) -> None:
    """Faust's /router views list every worker's URL and key owners; nothing here uses them."""
    worker, _ = hostile_worker
    for path in ("/router/", "/router/topics", "/router/pp-hostile-journal/"):
        assert _get(worker.port, path)[0] == 404, path
    for path in ("/metrics", "/ready", "/wall", "/api/wall", "/api/report?month=2026-10"):
        assert _get(worker.port, path)[0] == 200, path  # ours are still served


def _policy(header: str) -> dict[str, set[str]]:
    """A Content-Security-Policy header as directive -> sources."""
    directives = [d.split() for d in header.split(";") if d.strip()]
    return {d[0]: set(d[1:]) for d in directives}


@pytest.mark.slow
def test_every_view_sends_the_browser_security_headers(hostile_worker: tuple[Worker, Any]) -> None:
    import base64
    import hashlib
    import re

    from streams.outputs.wall import WALL_HTML

    worker, _ = hostile_worker

    def inline(tag: bytes) -> set[str]:  # the page's own inline element, hashed as CSP hashes it
        (body,) = re.findall(b"<" + tag + b">(.*?)</" + tag + b">", WALL_HTML, re.DOTALL)
        return {f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"}

    for path in ("/wall", "/api/wall", "/api/report?month=2026-10", "/api/report?month=nope",
                 "/ready", "/metrics"):
        _status, headers, _ = _get(worker.port, path)
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path
        policy = _policy(headers["Content-Security-Policy"])
        assert policy["default-src"] == {"'none'"} and policy["frame-ancestors"] == {"'none'"}, path
        if path == "/wall":
            # only the page's own script and style (tests/test_wall.py shows it renders so)
            assert policy["script-src"] == inline(b"script")
            assert policy["style-src"] == inline(b"style")
            assert policy["connect-src"] == {"'self'"}  # its polls of /api/wall
            assert policy["base-uri"] == policy["form-action"] == {"'none'"}
        else:
            assert set(policy) == {"default-src", "frame-ancestors"}, path  # data: nothing runs


# --- safe parsing ----------------------------------------------------------------------------------
_UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}
_UNSAFE_YAML = {"load", "unsafe_load", "full_load", "load_all", "unsafe_load_all", "full_load_all"}
_UNSAFE_MODULES = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}


def _unsafe_uses(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in _UNSAFE_CALLS:
                found.append(f"{where}: {func.id}()")
            if isinstance(func, ast.Attribute) and func.attr in _UNSAFE_YAML and \
                    isinstance(func.value, ast.Name) and func.value.id == "yaml":
                found.append(f"{where}: yaml.{func.attr}()")
            for kw in node.keywords:
                if kw.arg == "shell" and isinstance(kw.value, ast.Constant) and kw.value.value:
                    found.append(f"{where}: shell=True")
                if kw.arg == "Loader" and "Safe" not in ast.unparse(kw.value):
                    found.append(f"{where}: Loader={ast.unparse(kw.value)}")
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            found += [f"{where}: import {n}" for n in names if n.split(".")[0] in _UNSAFE_MODULES]
        if isinstance(node, ast.Attribute) and node.attr in {"UnsafeLoader", "FullLoader", "Loader"} \
                and isinstance(node.value, ast.Name) and node.value.id == "yaml":
            found.append(f"{where}: yaml.{node.attr}")
    return found


RESTRICTED_PICKLE = REPO / "streams" / "engine" / "snapshot.py"
"""The one module allowed to import pickle: partner snapshots, read back by an unpickler that
may name only the classes a state holds (tests/test_snapshot.py plants os.system and sees it
refused)."""


def test_no_unsafe_parsing_or_evaluation_in_the_package() -> None:
    sources = sorted((REPO / "streams").rglob("*.py"))
    assert len(sources) > 10
    problems = [p for path in sources for p in _unsafe_uses(path.read_text(), str(path))
                if not (path == RESTRICTED_PICKLE and p.endswith(": import pickle"))]
    assert not problems, problems
    # ... and there, pickle is only ever read through the restricted unpickler
    tree = ast.parse(RESTRICTED_PICKLE.read_text())
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert not {"pickle.loads", "pickle.load", "pickle.Unpickler"} & calls
    finders = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
               and "pickle.Unpickler" in map(ast.unparse, node.bases)]
    assert [f.name for f in finders] == ["_StateUnpickler"]
    assert any(isinstance(n, ast.FunctionDef) and n.name == "find_class"
               for n in finders[0].body)
    # the scanner finds what it looks for
    planted = ("import yaml, pickle\nyaml.load(t)\nyaml.load(t, Loader=yaml.Loader)\n"
               "eval(x)\nsubprocess.run(c, shell=True)\n")
    assert len(_unsafe_uses(planted, "planted.py")) == 7  # yaml.Loader: as call and attribute


PYTHON_TAGS = [
    "!!python/object/apply:os.system ['touch {canary}']",
    "!!python/object/new:os.system ['touch {canary}']",
    "!!python/name:os.system",
    "!!python/object:builtins.object {{}}",
]


@pytest.mark.parametrize("tag", PYTHON_TAGS)
def test_python_yaml_tags_are_refused_by_every_loader(tmp_path: Path, tag: str) -> None:
    canary = tmp_path / "pwned"
    value = tag.format(canary=canary)
    catalog, _ = load_config()
    good = REPO / "config"
    cases = {
        "kpis.yaml": ((good / "kpis.yaml").read_text().replace(
            "version: 1", f"version: 1\nevil: {value}", 1), lambda p: load_catalog(p)),
        "partners.yaml": ((good / "partners.yaml").read_text().replace(
            "version: 1", f"version: 1\nevil: {value}", 1), lambda p: load_partners(p, catalog)),
        "mapping.yaml": (f"topic: tickets\nevil: {value}\n", lambda p: load_mapping(p)),
    }
    for name, (text, loader) in cases.items():
        assert "version: 1" in text or name == "mapping.yaml"
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            loader(path)
        message = str(err.value)
        assert message.startswith(f"{path}:") and "YAML" in message, message
        assert "python/" in message  # names the refused tag
    assert not canary.exists()


# --- escaping: PromQL, rules, dashboards, exposition, Alertmanager ------------------------------------
def _catalog_with(tmp_path: Path, edit: Any) -> Path:
    data = yaml.safe_load((REPO / "config" / "kpis.yaml").read_text())
    edit(data)
    path = tmp_path / "kpis.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


@pytest.mark.parametrize("name", ['1h"} or vector(1) #', "24h\n", "7d\\", "", "a b", "x" * 33])
def test_window_names_that_would_break_promql_are_refused(tmp_path: Path, name: str) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["windows"][name] = data["windows"].pop("1h")
        for kpi in data["kpis"]:
            if kpi.get("windows"):
                kpi["windows"] = [name if w == "1h" else w for w in kpi["windows"]]

    with pytest.raises(ConfigError, match="window name"):
        load_catalog(_catalog_with(tmp_path, edit))


@pytest.mark.parametrize("kpi_id", ['asa"} or 1', "ASA", "asa\n", "a-b"])
def test_kpi_ids_that_would_break_promql_are_refused(tmp_path: Path, kpi_id: str) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["kpis"][0]["id"] = kpi_id

    with pytest.raises(ConfigError):
        load_catalog(_catalog_with(tmp_path, edit))


HOSTILE_TITLE = 'Answer "speed" {{ $labels.partner }} }}} {{{ {x} \\ \n\'q\' {{- end }}'


def test_hostile_kpi_titles_cannot_break_rules_or_dashboards(tmp_path: Path) -> None:
    from streams.generators.dashboards import render_all

    def edit(data: dict[str, Any]) -> None:
        for kpi in data["kpis"]:
            kpi["title"] = HOSTILE_TITLE
            kpi["description"] = HOSTILE_TITLE

    catalog = load_catalog(_catalog_with(tmp_path, edit))
    rules = yaml.safe_load(render_rules(catalog))  # still one valid YAML document
    below = [r for g in rules["groups"] for r in g["rules"]
             if r.get("alert") == "PartnerKpiBelowTarget"]
    assert len(below) == len(catalog.kpis)
    for rule in below:
        for text in rule["annotations"].values():
            if "Answer" not in text:
                continue
            # the title is text: with it cut out, no brace of it is left to open an action
            start = text.index('Answer "speed"')
            shown = text[start:text.index("end } }", start) + len("end } }")]
            assert "{{" not in shown and "}}" not in shown, shown
            assert shown.replace(" ", "") == HOSTILE_TITLE.replace(" ", "")
    boards = [json.loads(text) for text in render_all(catalog).values()]  # still valid JSON
    assert HOSTILE_TITLE in set(_strings(boards))  # KPI panels carry the title verbatim


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _strings(value)


def test_rules_with_hostile_titles_pass_promtool(tmp_path: Path, promtool: str) -> None:
    def edit(data: dict[str, Any]) -> None:
        for kpi in data["kpis"]:
            kpi["title"] = HOSTILE_TITLE

    catalog = load_catalog(_catalog_with(tmp_path, edit))
    path = tmp_path / "rules.yml"
    path.write_text(render_rules(catalog))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_label_values_with_quotes_newlines_backslashes_round_trip_in_the_exposition() -> None:
    """Every label value comes from a validated id today; should one ever slip through, the
    exposition must still parse and give back the exact value (prometheus_client escapes)."""
    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="wall")
    now = int(time.time() * 1000)
    hostile = 'p"1\n\\x} # {le="1"}'
    good = decode("calls", orjson.dumps({"event_id": "e1", "type": "queued", "partner_id": "p1",
                                         "ts": now - 1000, "call_id": "c"}), now)
    for partner, event_id in ((hostile, "e1"), ("p1", "e2")):
        event = type(good.event)(**{**{f: getattr(good.event, f) for f in good.event.__struct_fields__},
                                    "partner_id": partner, "event_id": event_id})
        engine.apply(Parsed("calls", event, good.ts_ms, 0), now)
    registry = make_registry(KpiCollector(engine, lambda p: True, lambda: now))
    text = generate_latest(registry).decode()
    partners_seen = {s.labels["partner"] for f in text_string_to_metric_families(text)
                     for s in f.samples if "partner" in s.labels}
    assert partners_seen == {hostile, "p1"}


def test_alertmanager_payload_is_json_encoded(tmp_path: Path) -> None:
    from streams.outputs.alertmanager import AlertSender
    from tests.test_alertmanager_client import FakeAlertmanager, SenderThread, wait_for

    nasty = 'a"b\\c\n</script>{"x": 1}\u2028é'
    with FakeAlertmanager([]) as fake:
        sender = AlertSender(fake.url, resend_interval_s=60)
        with SenderThread(sender):
            sender.set_active("k", {"alertname": "PartnerKpiBreach", "partner": nasty},
                              {"summary": nasty, "description": nasty}, int(time.time() * 1000))
            wait_for(lambda: fake.posts, what="a post")
    (_status, body), *_ = fake.posts
    (alert,) = body  # the server parsed the body as JSON
    assert alert["labels"]["partner"] == nasty
    assert alert["annotations"] == {"summary": nasty, "description": nasty}


def test_the_commented_sasl_example_in_docker_compose_is_a_valid_configuration(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pki: dict[str, Path]) -> None:
    text = (REPO / "docker-compose.yml").read_text()
    start = text.index("# --- SASL_SSL example")
    block = text[start:text.index("# --- end of the SASL_SSL example", start)]
    example = yaml.safe_load("\n".join(line[2:] for line in block.splitlines()
                                       if line.startswith("# ") and not line.startswith("# ---")
                                       and line[2:3] in (" ", "s")))
    worker = example["services"]["worker-1"]
    secrets = example["secrets"]
    assert set(worker["secrets"]) == set(secrets)
    env = worker["environment"]
    assert not [k for k in env if k.endswith("_PASSWORD")]  # a file, not a value in the file
    # the secrets as Docker mounts them, with real content: the settings accept the example
    mounted = {f"/run/secrets/{name}": tmp_path / name for name in secrets}
    mounted["/run/secrets/kafka_password"].write_text(PASSWORD + "\n")
    shutil.copy(pki["ca_pem"], mounted["/run/secrets/kafka_ca"])
    for name, value in env.items():
        monkeypatch.setenv(name, str(mounted.get(str(value), value)))
    settings = Settings()
    assert client_kwargs(settings)["sasl_plain_password"] == PASSWORD
    assert isinstance(faust_credentials(settings), faust.SASLCredentials)
    yaml.safe_load(text)  # and the compose file itself is unchanged YAML


def test_alertmanager_credentials_in_the_url_stay_out_of_the_logs(
        caplog: pytest.LogCaptureFixture, free_port: int) -> None:
    from streams.outputs.alertmanager import AlertSender
    from tests.test_alertmanager_client import SenderThread, wait_for

    caplog.set_level("DEBUG", logger="partnerpulse")
    # nothing listens on free_port: every post fails and the sender logs the endpoint
    sender = AlertSender(f"http://pp:{PASSWORD}@127.0.0.1:{free_port}", backoff_initial_s=0.05)
    with SenderThread(sender):
        sender.set_active("k", {"alertname": "PartnerKpiBreach"}, {"summary": "s"},
                          int(time.time() * 1000))
        wait_for(lambda: "cannot post alerts" in caplog.text, what="the failure log line")
    assert f"http://127.0.0.1:{free_port}/api/v2/alerts" in caplog.text
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("args", [
    ["simulate", "--broker", "kafka://127.0.0.1:1", "--duration", "1"],
    ["replay", "missing.csv", "--topic", "tickets", "--mapping", "m.yaml",
     "--broker", "kafka://127.0.0.1:1"],
])
def test_simulate_and_replay_read_the_kafka_security_settings(
        monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    """The producer commands take TLS/SASL from the same variables as the worker: an
    incomplete SASL setup stops them before any connection, without echoing the password."""
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PARTNERPULSE_KAFKA_SASL_PASSWORD", PASSWORD)
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 1, result.output
    assert "kafka_sasl_username" in result.output
    assert PASSWORD not in result.output
