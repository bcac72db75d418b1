"""Worker settings: typed, read from the command line and ``PARTNERPULSE_*`` environment variables.

Secrets (the SASL password, the TLS key password) come from the environment or from a file,
never from a command-line flag (visible in ``ps`` and shell history); they are ``SecretStr``,
so they print as ``**********`` in a repr, a log line or a validation error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streams.config.catalog import DEFAULT_CONFIG_DIR

SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})


def _read_secret(path: Path, what: str) -> SecretStr:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{what} file {path}: cannot read: {exc.strerror}") from None
    # a trailing newline is the editor's or `echo`'s, not part of the secret
    secret = text.rstrip("\r\n")
    if not secret:
        raise ValueError(f"{what} file {path} is empty")
    return SecretStr(secret)


class KafkaClientSettings(BaseSettings):
    """How every Kafka client (worker, simulate, replay, topic creation) connects: TLS and SASL.

    Shared by the worker's :class:`Settings` and the producer commands, which read the same
    ``PARTNERPULSE_KAFKA_*`` variables.
    """

    # hide_input_in_errors: a validation error would otherwise print every input, the
    # password included, in clear (found by tests/test_security.py)
    model_config = SettingsConfigDict(env_prefix="PARTNERPULSE_", extra="forbid",
                                      hide_input_in_errors=True)

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Kafka security protocol: SSL (TLS), SASL_SSL (TLS + SASL), SASL_PLAINTEXT or PLAINTEXT."""

    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    """SASL mechanism for the SASL_* protocols; PLAIN sends the password as is, so only over TLS."""

    kafka_sasl_username: str | None = None
    """SASL user name (required with the SASL_* protocols)."""

    kafka_sasl_password: SecretStr | None = None
    """SASL password, from the environment only (PARTNERPULSE_KAFKA_SASL_PASSWORD); or use the file."""

    kafka_sasl_password_file: Path | None = None
    """File holding the SASL password (a mounted secret); trailing newlines are stripped."""

    kafka_ssl_cafile: Path | None = None
    """PEM bundle of the CAs that sign the brokers' certificates (default: the system CAs)."""

    kafka_ssl_certfile: Path | None = None
    """PEM client certificate for mutual TLS (with kafka_ssl_keyfile)."""

    kafka_ssl_keyfile: Path | None = None
    """PEM private key of the client certificate."""

    kafka_ssl_key_password: SecretStr | None = None
    """Password of an encrypted client key, from the environment only; or use the file."""

    kafka_ssl_key_password_file: Path | None = None
    """File holding the password of an encrypted client key."""

    kafka_ssl_check_hostname: bool = True
    """Check that the broker's certificate names the host connected to; keep it on."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        protocol = self.kafka_security_protocol
        for secret, file in (("kafka_sasl_password", "kafka_sasl_password_file"),
                             ("kafka_ssl_key_password", "kafka_ssl_key_password_file")):
            if getattr(self, secret) is not None and getattr(self, file) is not None:
                raise ValueError(f"set {secret} or {file}, not both")
            if getattr(self, file) is not None:
                setattr(self, secret, _read_secret(getattr(self, file), file))
        if protocol in SASL_PROTOCOLS:
            if not self.kafka_sasl_username or self.kafka_sasl_password is None:
                raise ValueError(f"{protocol} needs kafka_sasl_username and kafka_sasl_password "
                                 "(or kafka_sasl_password_file)")
        elif self.kafka_sasl_username or self.kafka_sasl_password is not None:
            raise ValueError(f"SASL credentials are set but kafka_security_protocol is {protocol}")
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if protocol not in TLS_PROTOCOLS and any(f is not None for f in tls_files):
            raise ValueError(f"TLS files are set but kafka_security_protocol is {protocol} "
                             "(use SSL or SASL_SSL)")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("kafka_ssl_certfile and kafka_ssl_keyfile go together")
        for f in tls_files:
            if f is not None and not f.is_file():
                raise ValueError(f"TLS file {f} does not exist")
        return self


class Settings(KafkaClientSettings):
    """Everything a worker needs to run; each field is also ``PARTNERPULSE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PARTNERPULSE_", extra="forbid",
                                      hide_input_in_errors=True)

    broker: str = "kafka://127.0.0.1:9092"
    """Kafka bootstrap servers, ``kafka://host:port[,host:port]``."""

    app_id: str = "partnerpulse"
    """Consumer group and prefix of internal topics; workers with one id share the load."""

    clock: Literal["wall", "event"] = "wall"
    """'wall': windows slide with real time (live); 'event': now = the largest event time (replay)."""

    config_dir: Path = DEFAULT_CONFIG_DIR
    """Directory holding kpis.yaml and partners.yaml."""

    partitions: int = Field(default=4, ge=1, le=1024)
    """Partitions of the input topics; internal topics and changelogs get the same count."""

    web_bind: str = "127.0.0.1"
    """Address of the HTTP endpoint (/metrics, /ready); loopback unless exposed on purpose."""

    web_port: int = Field(default=6066, ge=0, le=65535)
    """Port of the HTTP endpoint."""

    access_tokens_file: Path | None = None
    """YAML file of access-token hashes, each opening one partner's data or every partner's
    (streams/config/access.py; ``partnerpulse token`` makes one). With it, /api/wall, /api/open
    and /api/report need ``Authorization: Bearer <token>``; without it they answer only while
    ``web_bind`` is loopback. /metrics, /ready and the wall page stay open either way."""

    store: Literal["memory", "rocksdb"] = "memory"
    """Local table store. 'memory' (the default, and what every end-to-end and fault test runs):
    the journal lives in memory and is loaded from its changelog topic in bulk at each start.
    'rocksdb' (opt-in, needs the ``rocksdb`` extra): the journal also lives on disk under
    ``data_dir``, so a restart reads only the changelog's tail; tested by its own restart test."""

    data_dir: Path = Path("partnerpulse-data")
    """Directory for the worker's local state (one per worker): on the memory store, the
    journal's checkpoints (``checkpoints/``), so a restart on the same directory reads the
    changelog from them on; on the RocksDB store, its databases."""

    session_timeout_s: float = Field(default=6.0, ge=1.0)
    """Consumer-group session timeout, seconds. A worker that stops heartbeating (killed, frozen,
    cut off) loses its partitions after this long, and a worker restarted after a crash waits
    about this long for them: the group drops the dead member first. 6 s is the least Apache
    Kafka accepts by default (``group.min.session.timeout.ms``); the worker heartbeats every third
    of it and holds its writes once half of it has passed without an answer (``runtime/fence.py``).
    The end-to-end and fault tests run this default."""

    rebalance_timeout_s: float = Field(default=60.0, gt=0)
    """Consumer-group rebalance timeout, seconds: how long the coordinator waits for every member
    to rejoin a rebalance (a member first finishes the events it holds) before it drops the late
    ones. A member that crashed is dropped after ``session_timeout_s`` whatever this is."""

    create_topics: bool = True
    """Create missing input, internal and dead-letter topics at start."""

    topic_replication_factor: int = Field(default=1, ge=1, le=16)
    """Replicas of each topic the worker creates (input, repartition, alerts, dead letter, and the
    journal changelog and leader topic Faust creates). 1 suits the embedded broker and a one-node
    dev cluster; 3 on a real cluster, so a broker can be lost without losing data. Topics that
    already exist are left as they are."""

    topic_min_insync_replicas: int = Field(default=1, ge=1, le=16)
    """``min.insync.replicas`` of the topics the worker creates: how many replicas must hold a
    write before it is acknowledged (the worker produces with acks=all). 2 with a replication
    factor of 3: one broker may be down, and every acknowledged write is on two. At 1 the topics
    get no such config, so a broker-wide default stays in force."""

    table_standby_replicas: int = Field(default=0, ge=0, le=16)
    """Standby copies of each journal partition, kept warm by other workers from the changelog, so
    a failover reads less of the changelog, at the cost of every changelog being read twice. A
    worker rebuilds its windows from the whole journal on every assignment either way (the larger
    part of a recovery), so a standby saves only the changelog read; 0 unless that read dominates."""

    @model_validator(mode="after")
    def _replicas(self) -> Self:
        # Kafka accepts such a topic, then refuses every acks=all write to it (NOT_ENOUGH_REPLICAS)
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError(
                f"topic_min_insync_replicas ({self.topic_min_insync_replicas}) exceeds "
                f"topic_replication_factor ({self.topic_replication_factor}): every write to the "
                "topics would be refused; use at most the replication factor (2 with 3)")
        return self

    max_partners: int = Field(default=20_000, ge=1)
    """Most partners one worker keeps state for. With the open partner list, events of a partner
    first seen beyond it are dead-lettered (reason names the cap) and counted, so a flood of
    made-up partner ids cannot grow memory without bound. Partners restored from the journal at
    a rebalance are kept even past it: they were accepted within a cap."""

    log_level: str = "info"
    """Worker log level."""

    alertmanager: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Alertmanager base URLs (e.g. http://127.0.0.1:9093): partner alerts are pushed to the v2 API
    of each, every alert to every one (give all members of an HA cluster). Repeat --alertmanager,
    or separate them with commas in PARTNERPULSE_ALERTMANAGER."""

    @field_validator("alertmanager", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        # NoDecode hands over the environment's text as is (pydantic-settings would parse a list
        # from the environment as JSON): one URL, or several separated by commas
        if isinstance(value, str):
            return [url.strip() for url in value.split(",") if url.strip()]
        return value

    judge_interval_s: float = Field(default=0.5, gt=0)
    """How often partners are judged on the wall clock (the event clock judges at minute boundaries).
    A pass starts this often (at once after one that took longer) and judges only partners whose
    numbers changed (or whose breach timer is due), oldest news first, so it is cheap when little
    changed; it bounds how late an alert on the wall clock can be."""

    ticket_alerts_max: int = Field(default=20, ge=1, le=1000)
    """Ticket alerts (``ticket_alerts: true`` KPIs) firing at once per partner: its most urgent
    tickets. More are held back (``partnerpulse_ticket_alerts_held_back``) and take a freed
    place: a backlog of a thousand late tickets is twenty alerts, not a thousand."""

    ticket_alerts_interval_s: float = Field(default=15.0, gt=0)
    """How often, on the wall clock, every owned partner's open tickets are checked for ticket
    alerts (they age without events); on the event clock, at each minute of a partner's events."""

    snapshot_interval_s: float = Field(default=600.0, gt=0)
    """A partner with events since its last snapshot is snapshotted within about this long
    (streams/engine/snapshot.py): a restart then replays only the events after its snapshot, at
    most this long of its traffic, instead of every event in the journal. A filled partner's
    snapshot costs about 8 ms of the worker's time: 1,000 partners every 600 s take 1.3% of a
    core, 10,000 take 13% (raise it there)."""

    snapshot_events: int = Field(default=2_000, ge=1)
    """Events since a partner's last snapshot that make the next one due at once, whatever
    ``snapshot_interval_s`` says: in a backfill the replay after a restart stays bounded too.
    2,000 keeps the snapshots' cost under a tenth of the engine's per-event work."""

    snapshot_max_bytes: int = Field(default=900_000, ge=10_000)
    """Largest snapshot record written: a partner whose state compresses to more is not
    snapshotted (logged, counted in /ready) and restarts from its events as before. Below the
    1 MB Kafka's topics and Faust's producer take by default."""

    checkpoint_interval_s: float = Field(default=300.0, gt=0)
    """How often the in-memory journal's changelog partitions that changed are checkpointed to
    ``data_dir`` (streams/runtime/checkpoints.py), besides once after each recovery: a restart
    on the same disk reads each partition from its checkpoint on, at most about this long of
    journal writes, instead of from the beginning. Each pass holds the ingest agent until the
    journal writes on their way are acknowledged (milliseconds), then writes the files in a
    thread: about the size of the journal the worker holds."""

    fetch_max_wait_s: float = Field(default=0.1, gt=0, le=1.5)
    """Longest a consumer fetch waits at the broker for data: a floor under the event-to-alert
    latency on brokers that hold a fetch for its whole wait (Faust's own setting is 1.5 s)."""

    batch_within_s: float = Field(default=0.01, gt=0, le=5.0)
    """Longest the agent waits to fill a batch before processing what it has: added latency, in
    exchange for fewer, larger batches at low rates."""

    stale_after_s: float = Field(default=600.0, gt=0)
    """A topic silent this long is a stale feed: its partner alerts are held, one pipeline alert fires."""

    dashboard_url: str = "http://127.0.0.1:3000/d/partnerpulse-oncall"
    """On-call dashboard linked from alert annotations (``?var-partner=...`` is appended)."""

    runbook_url: str = "https://github.com/partnerpulse/partnerpulse/blob/main/README.md#alerts"
    """Runbook linked from alert annotations."""
