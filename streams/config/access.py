"""Who may read a worker's data views (/api/wall, /api/open, /api/report): access tokens.

A partner manager at a partner, or a partner's own NOC, should see that partner's wall, tickets
and card, and nobody else's. A token file lists the SHA-256 of each token and what it opens::

    tokens:
      - sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
        partner: acme          # this partner only
      - sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
        operator: true         # every partner

Only hashes are kept, so the file reveals no token; a token reaches a worker in the
``Authorization: Bearer`` header (the wall page reads it from its URL's fragment, which a browser
never sends), so it is never in a URL a log would keep. ``partnerpulse token`` makes one.

Without a token file, the data views answer everyone only while the worker listens on loopback
(as before); bound to another address they refuse, so a worker exposed on purpose is not also
exposed by accident. /metrics, /ready and the wall page itself (no data) stay open: Prometheus
and health checks do not carry tokens.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from streams.config.yamlfile import ConfigError, Where, load_yaml

_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
LOOPBACK_NAMES: Final = frozenset({"localhost"})


class _Token(msgspec.Struct, forbid_unknown_fields=True):
    sha256: str
    partner: str | None = None
    operator: bool = False


class _File(msgspec.Struct, forbid_unknown_fields=True):
    tokens: list[_Token] = []


@dataclass(frozen=True, slots=True)
class Scope:
    """What a request may read: one partner's data, or every partner's (``partner`` None)."""

    partner: str | None

    def allows(self, partner: str) -> bool:
        return self.partner is None or self.partner == partner


EVERYONE: Final = Scope(None)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: HTTP ``status`` (401: no valid token; 403: not served here)."""

    status: int
    reason: str


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token, as the token file keeps it."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class AccessTokens:
    """Token hash -> its scope."""

    scopes: dict[str, Scope]

    def scope(self, token: str) -> Scope | None:
        """The scope of ``token``; None for an unknown one."""
        return self.scopes.get(hash_token(token))


def load_tokens(path: Path) -> AccessTokens:
    """The token file; ConfigError naming the line of a bad entry."""
    doc = load_yaml(path)
    raw = doc.convert(_File)
    scopes: dict[str, Scope] = {}
    for i, entry in enumerate(raw.tokens):
        at: Where = ["tokens", i]
        digest = entry.sha256.strip().lower()
        if not _HEX64.match(digest):
            raise doc.error([*at, "sha256"], "sha256: give the 64 hex digits of the token's "
                            "SHA-256 (partnerpulse token prints it)")
        if (entry.partner is None) == (not entry.operator):
            raise doc.error(at, "give either partner: <id> or operator: true")
        if digest in scopes:
            raise doc.error(at, "this token is listed twice")
        scopes[digest] = Scope(entry.partner)
    return AccessTokens(scopes)


def is_loopback(bind: str) -> bool:
    """Whether a bind address reaches only this machine (127.0.0.0/8, ::1, localhost)."""
    if bind.strip().lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(bind.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def decide(tokens: AccessTokens | None, bind: str, authorization: str | None) -> Scope | Refusal:
    """What a data request may read, from the worker's tokens (None: no token file), its bind
    address and the request's ``Authorization`` header."""
    if tokens is None:
        if is_loopback(bind):
            return EVERYONE
        return Refusal(403, f"this worker listens on {bind} and has no access tokens: set "
                            "access_tokens_file (PARTNERPULSE_ACCESS_TOKENS_FILE) to serve data "
                            "beyond loopback")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return Refusal(401, "an access token is required (Authorization: Bearer <token>)")
    scope = tokens.scope(token.strip())
    if scope is None:
        return Refusal(401, "unknown access token")
    return scope


def check_tokens_file(path: Path | None) -> AccessTokens | None:
    """The tokens of the configured file (None when none is configured); ConfigError when the
    file cannot be used, so a worker fails at start rather than serving with no tokens."""
    if path is None:
        return None
    if not path.is_file():
        raise ConfigError(f"{path}: access token file not found")
    return load_tokens(path)
