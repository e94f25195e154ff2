"""Token authentication with scopes, checked inside the guard of every recsvc RPC.

Tokens are never stored: ``RECSVC_TOKENS_FILE`` holds one line per token with the SHA-256 hex
digest of the token, its scopes (comma-separated) and an optional name for the logs::

    # sha256(token)                                                   scopes             name
    9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  recommend,feedback  crm

``recsvc token`` prints a new token and its line. Clients send ``authorization: Bearer TOKEN``.
Scopes: ``recommend`` (Recommend, RecommendBatch, GetModelInfo), ``feedback`` (RecordFeedback),
``admin`` (every method). Health and reflection are not guarded (probes need no token). The
file is read again when it changes (checked at most once a second), so tokens can be added
and revoked without a restart. A missing or unknown token is UNAUTHENTICATED, a known one
without the method's scope PERMISSION_DENIED; neither message repeats what the client sent.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from recsvc.core.errors import AuthenticationError, PermissionDeniedError, RecsvcError

SCOPES = frozenset({"recommend", "feedback", "admin"})
SCOPE_OF_METHOD = {
    "Recommend": "recommend",
    "RecommendBatch": "recommend",
    "GetModelInfo": "recommend",
    "RecordFeedback": "feedback",
}
DEFAULT_SCOPE = "admin"  # a method missing from the table needs admin: fail closed
_RELOAD_SECONDS = 1.0


@dataclass(frozen=True)
class Token:
    name: str
    scopes: frozenset[str]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token_line(scopes: Iterable[str], name: str = "") -> tuple[str, str]:
    """A fresh random token and the tokens-file line that admits it."""
    wanted = sorted(set(scopes))
    unknown = set(wanted) - SCOPES
    if not wanted or unknown:
        raise RecsvcError(f"scopes: choose from {', '.join(sorted(SCOPES))}, got "
                          f"{', '.join(wanted) or 'none'}")
    token = secrets.token_urlsafe(32)
    return token, f"{hash_token(token)}  {','.join(wanted)}  {name}".rstrip()


def parse_tokens(text: str, source: str) -> dict[str, Token]:
    """Digest -> token; a malformed line is an error naming the file and line number."""
    tokens: dict[str, Token] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{source}, line {number}"
        if len(parts) not in (2, 3):
            raise RecsvcError(f"{where}: expected 'SHA256-HEX SCOPES [NAME]'")
        digest, scopes_text = parts[0].lower(), parts[1]
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise RecsvcError(f"{where}: the first field must be a sha256 hex digest "
                              "(64 hex digits), never the token itself")
        scopes = frozenset(s for s in scopes_text.split(",") if s)
        if not scopes or scopes - SCOPES:
            raise RecsvcError(f"{where}: unknown scope in {scopes_text!r}; "
                              f"scopes are {', '.join(sorted(SCOPES))}")
        tokens[digest] = Token(parts[2] if len(parts) == 3 else f"line {number}", scopes)
    return tokens


class Authenticator:
    """Checks the ``authorization`` metadata of a call against the tokens file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._tokens: dict[str, Token] = {}
        self._mtime = -1.0
        self._checked = 0.0
        self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < _RELOAD_SECONDS:
            return
        self._checked = now
        try:
            mtime = os.stat(self.path).st_mtime
            if mtime == self._mtime:
                return
            with open(self.path) as handle:
                text = handle.read()
        except OSError as exc:
            if force:
                raise RecsvcError(f"RECSVC_TOKENS_FILE {self.path}: {exc.strerror}") from exc
            return  # keep the tokens we have; a file being replaced reappears
        try:
            self._tokens = parse_tokens(text, self.path)
        except RecsvcError:
            if force:
                raise
            return  # a half-written file: keep the previous tokens, retry later
        self._mtime = mtime

    def check(self, authorization: str | None, method: str) -> Token:
        """The caller's token if it may call ``method``; raises Authentication/PermissionDenied."""
        self._reload()
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthenticationError("missing bearer token (metadata 'authorization: Bearer "
                                      "TOKEN')")
        token = self._tokens.get(hash_token(authorization[7:].strip()))
        if token is None:
            raise AuthenticationError("invalid token")
        scope = SCOPE_OF_METHOD.get(method, DEFAULT_SCOPE)
        if scope not in token.scopes and "admin" not in token.scopes:
            raise PermissionDeniedError(f"this token lacks the {scope!r} scope needed by "
                                        f"{method}")
        return token


def from_settings(path: str) -> Authenticator | None:
    return Authenticator(path) if path else None
