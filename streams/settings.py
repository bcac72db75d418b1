"""Worker settings: typed, read from the command line and ``PARTNERPULSE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .catalog import DEFAULT_CONFIG_DIR


class Settings(BaseSettings):
    """Everything a worker needs to run; each field is also ``PARTNERPULSE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PARTNERPULSE_", extra="forbid")

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

    store: Literal["memory", "rocksdb"] = "rocksdb"
    """Local table store: 'rocksdb' survives restarts without a full changelog replay."""

    data_dir: Path = Path("partnerpulse-data")
    """Directory for the worker's local state (one per worker)."""

    rebalance_timeout_s: float = Field(default=60.0, gt=0)
    """Consumer-group rebalance timeout, seconds; the session timeout is derived from it (at most 10 s)
    and a restarted worker waits about that long on the embedded broker, so keep it short there."""

    create_topics: bool = True
    """Create missing input, internal and dead-letter topics at start."""

    log_level: str = "info"
    """Worker log level."""

    alertmanager: str | None = None
    """Alertmanager base URL (e.g. http://127.0.0.1:9093): partner alerts are pushed to its v2 API."""

    judge_interval_s: float = Field(default=1.0, gt=0)
    """How often partners are judged on the wall clock (the event clock judges at minute boundaries)."""

    stale_after_s: float = Field(default=600.0, gt=0)
    """A topic silent this long is a stale feed: its partner alerts are held, one pipeline alert fires."""

    dashboard_url: str = "http://127.0.0.1:3000/d/partnerpulse-oncall"
    """On-call dashboard linked from alert annotations (``?var-partner=...`` is appended)."""

    runbook_url: str = "https://github.com/partnerpulse/partnerpulse/blob/main/README.md#alerts"
    """Runbook linked from alert annotations."""
