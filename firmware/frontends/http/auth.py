"""Who may call the API: bearer tokens, optional HTTP Basic, signed media links, a failed-login limit.

Tokens must carry at least 128 random bits (22 characters of URL-safe base64,
32 hex digits); they are compared in constant time. Media links handed out in
events and ``media_url`` are signed: ``?expires=<unix time>&signature=<hex>``,
an HMAC-SHA256 over ``"<METHOD>\\n<path>\\n<expires>"`` with the box's link
secret, valid until ``expires`` (default 15 minutes ahead).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import urlencode

from ...config import MIN_TOKEN_BITS, TokenError, parse_tokens, token_bits

__all__ = ["MIN_TOKEN_BITS", "Auth", "Limiter", "LinkSigner", "TokenError", "parse_tokens", "token_bits"]


class Auth:
    def __init__(self, tokens: list[str], username: str = "", password: str = "") -> None:
        self._tokens = [t.encode() for t in tokens]
        self._basic = (username.encode(), password.encode()) if username else None

    def check(self, header: str | None) -> str | None:
        """The caller's name for the audit log when ``header`` authorises, else None."""
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip().encode()
            ok = False
            for index, token in enumerate(self._tokens):
                if hmac.compare_digest(given, token):
                    ok, who = True, f"token#{index + 1}"
            return who if ok else None
        if scheme.lower() == "basic" and self._basic is not None:
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
            except ValueError:
                return None
            good = hmac.compare_digest(user, self._basic[0]) & hmac.compare_digest(password, self._basic[1])
            return f"basic:{user.decode(errors='replace')}" if good else None
        return None


class Limiter:
    """At most ``per_minute`` failed logins per address in a sliding minute."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: it may)."""
        with self._lock:
            recent = self._recent(address)
            if len(recent) < self.per_minute:
                return 0.0
            return max(0.0, recent[0] + 60.0 - self.clock())

    def failed(self, address: str) -> None:
        with self._lock:
            self._recent(address).append(self.clock())
            if len(self._failures) > 10000:  # forget the quiet ones
                for key in [k for k, v in self._failures.items() if not v]:
                    del self._failures[key]

    def _recent(self, address: str) -> deque[float]:
        recent = self._failures.setdefault(address, deque())
        while recent and recent[0] < self.clock() - 60.0:
            recent.popleft()
        return recent


class LinkSigner:
    """Signed, expiring media links.

    >>> s = LinkSigner(b"k" * 32, lifetime=900, clock=lambda: 1000.0)
    >>> query = s.sign("GET", "/v1/recordings/RE1.wav")
    >>> query.startswith("expires=1900&signature=")
    True
    >>> s.verify("GET", "/v1/recordings/RE1.wav", "1900", query.split("signature=")[1])
    True
    >>> s.verify("GET", "/v1/recordings/RE2.wav", "1900", query.split("signature=")[1])
    False
    """

    def __init__(
        self, secret: bytes | None = None, lifetime: int = 900, clock: Callable[[], float] = time.time
    ) -> None:
        self.secret = secret or secrets.token_bytes(32)
        self.lifetime = lifetime
        self.clock = clock

    def _mac(self, method: str, path: str, expires: str) -> str:
        return hmac.new(self.secret, f"{method.upper()}\n{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, method: str, path: str) -> str:
        expires = str(int(self.clock()) + self.lifetime)
        return urlencode({"expires": expires, "signature": self._mac(method, path, expires)})

    def verify(self, method: str, path: str, expires: str | None, signature: str | None) -> bool:
        if not expires or not signature or not expires.isdigit() or int(expires) < self.clock():
            return False
        return hmac.compare_digest(self._mac(method, path, expires), signature)
