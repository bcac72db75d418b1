"""Files generated from the catalog (rules, dashboards): write them, or check they are current."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from streams.config.catalog import Catalog, ConfigError, load_catalog


def load_catalog_or_report(config_dir: Path) -> Catalog | None:
    """The catalog of ``config_dir``, or None after printing why it cannot be used."""
    try:
        return load_catalog(config_dir / "kpis.yaml")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def write_or_check(files: Mapping[Path, str], check: bool, command: str) -> int:
    """Write each generated file that differs; with ``check`` only report it and return 1."""
    stale = 0
    for path, text in files.items():
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            print(f"{path} is up to date")
        elif check:
            print(f"{path} is stale: regenerate it with `{command}`", file=sys.stderr)
            stale = 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return stale
