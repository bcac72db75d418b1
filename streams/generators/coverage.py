"""Which windows the generated rules and dashboards read, against the windows exported.

``settings.export_windows`` narrows ``/metrics`` for large fleets (10,000 partners x every
window is 3.4 million series). The rules and dashboards are generated for every window of the
catalog, so a window left out of the export leaves their panels empty and their alerts silent.
``partnerpulse check-config`` and the worker say so, naming each reader, instead of letting a
wall go blank without a word.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from streams.config.catalog import Catalog

_WINDOW_LABEL = re.compile(r'window="([^"$]+)"')


def exported_windows(catalog: Catalog) -> tuple[str, ...]:
    """The windows ``/metrics`` exports: ``settings.export_windows``, or every window."""
    return catalog.export_windows or tuple(catalog.windows)


def window_readers(catalog: Catalog) -> dict[str, list[str]]:
    """Window name -> the generated alerts, recording rules and dashboard panels that select it
    by name (``window="7d"``), plus dashboards offering it in their window picker."""
    from streams.generators.dashboards import render_all  # generated-file modules import this one's callers
    from streams.generators.rules import render_rules

    readers: dict[str, list[str]] = {}

    def add(window: str, reader: str) -> None:
        found = readers.setdefault(window, [])
        if reader not in found:
            found.append(reader)

    for group in yaml.safe_load(render_rules(catalog))["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            for window in _WINDOW_LABEL.findall(rule["expr"]):
                add(window, f"rule {name}")
    for file_name, text in sorted(render_all(catalog).items()):
        board = json.loads(text)
        title = board.get("title", file_name)
        for panel in _panels(board.get("panels", [])):
            for target in panel.get("targets", []):
                for window in _WINDOW_LABEL.findall(target.get("expr", "")):
                    add(window, f"dashboard {title!r}, panel {panel.get('title')!r}")
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("name") == "window":
                for option in variable.get("options", []):
                    add(option["value"], f"dashboard {title!r}, window picker")
    return readers


def unexported_readers(catalog: Catalog) -> dict[str, list[str]]:
    """Windows that generated files read but ``/metrics`` does not export, with their readers."""
    exported = set(exported_windows(catalog))
    return {w: r for w, r in sorted(window_readers(catalog).items()) if w not in exported}


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in panels:
        out.append(panel)
        out.extend(_panels(panel.get("panels", [])))  # panels inside collapsed rows
    return out
