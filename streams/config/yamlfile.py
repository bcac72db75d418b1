"""The YAML files of the configuration: durations, loading, and errors that name file and line.

Every file (kpis.yaml, partners.yaml, a replay mapping) is parsed with the safe loader (no object
construction) and validated with msgspec; a bad file fails at start with :class:`ConfigError`,
whose message names the file, the line and the problem, so the operator edits the right line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
import yaml

Scalar = str | int | float | bool | None
"""A YAML scalar, as in ``where:`` filters and replay field constants."""

Where = list[str | int]
"""A path inside a YAML document: mapping keys and sequence indexes (``["kpis", 2, "id"]``)."""

_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}
# msgspec names the failing value as a JSON path ("... - at `$.kpis[0].start`"); [...] stands
# for a dict's values, where no line can be told
_PATH_RE: Final = re.compile(r"\$((?:\.[A-Za-z_][\w-]*|\[\d+\]|\[\.\.\.\])*)")

_T = TypeVar("_T")


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names file and line."""


Fail = Callable[[Where, str], ConfigError]
"""Builds the ConfigError of a problem at a path of one file (:meth:`YamlFile.error`)."""


def duration_ms(value: str | int | float) -> int:
    """'90s', '2h', '30d', '1500ms' or a number of seconds, as milliseconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        return round(value * 1000)
    match = _DURATION_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration like '90s', '2h' or '30d'")
    return round(float(match.group(1)) * _UNIT_MS[match.group(2)])


def _line_of(node: yaml.Node | None, path: Where) -> int | None:
    """1-based line of the YAML node at ``path`` (or of the deepest existing parent)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for step in path:
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            for key, value in node.value:
                if getattr(key, "value", None) == step:
                    nxt = value
                    break
        elif (isinstance(node, yaml.SequenceNode) and isinstance(step, int)
              and 0 <= step < len(node.value)):
            nxt = node.value[step]
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


def error_path(text: str) -> Where:
    """The path of the first ``$.a[1].b`` in a msgspec error message (empty when none)."""
    match = _PATH_RE.search(text)
    if not match:
        return []
    steps: Where = []
    for part in re.findall(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]", match.group(1)):
        steps.append(part[0] if part[0] else int(part[1]))
    return steps


@dataclass(frozen=True, slots=True)
class YamlFile:
    """A parsed YAML file: its data, and its node tree to tell the line of a path."""

    path: Path
    data: Any
    node: yaml.Node | None

    def error(self, where: Where, problem: str) -> ConfigError:
        """The ConfigError of ``problem`` at the line of ``where`` (line 1 when unknown)."""
        line = _line_of(self.node, where)
        return ConfigError(f"{self.path}:{line if line is not None else 1}: {problem}")

    def convert(self, shape: type[_T]) -> _T:
        """The data validated as ``shape`` (a msgspec Struct); ConfigError at the failing line."""
        try:
            return msgspec.convert(self.data, shape)
        except msgspec.ValidationError as exc:
            raise self.error(error_path(str(exc)), str(exc)) from None


def load_yaml(path: Path) -> YamlFile:
    """Read and parse a YAML file; ConfigError when it cannot be read or is not YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    return YamlFile(path, data, node)
