"""Who may call the API: bearer tokens, optional HTTP Basic, signed media links, a failed-login limit.

Tokens must carry at least 128 random bits (22 characters of URL-safe base64,
32 hex digits); they are compared in constant time. Media links handed out in
events and ``media_url`` are signed: ``?<params>&expires=<unix time>&signature=<hex>``,
an HMAC-SHA256 with the box's link secret over ``"<METHOD>\\n<path>\\n<query>"``,
where ``<query>`` is every query parameter but ``signature`` (``expires`` and
the link's own, such as ``RequestedChannels``), sorted and URL-encoded. So a
link is good for exactly what it was handed out for: changing, adding or
dropping a parameter breaks it. It is valid until ``expires`` (default 15
minutes ahead).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import quote, urlencode

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
    """Signed, expiring media links over a path and all of its query.

    >>> from urllib.parse import parse_qsl
    >>> s = LinkSigner(b"k" * 32, lifetime=900, clock=lambda: 1000.0)
    >>> query = s.sign("GET", "/v1/recordings/RE1.wav", {"RequestedChannels": "1"})
    >>> query.startswith("RequestedChannels=1&expires=1900&signature=")
    True
    >>> s.verify("GET", "/v1/recordings/RE1.wav", parse_qsl(query))
    True
    >>> s.verify("GET", "/v1/recordings/RE2.wav", parse_qsl(query))
    False
    >>> s.verify("GET", "/v1/recordings/RE1.wav", parse_qsl(query.replace("Channels=1", "Channels=2")))
    False
    >>> s.verify("GET", "/v1/recordings/RE1.wav", parse_qsl(query + "&x=1"))
    False
    """

    #: Digits an ``expires`` may have: unix times until the year 33658, and never past int()'s limit.
    MAX_EXPIRES_DIGITS = 12

    def __init__(
        self, secret: bytes | None = None, lifetime: int = 900, clock: Callable[[], float] = time.time
    ) -> None:
        self.secret = secret or secrets.token_bytes(32)
        self.lifetime = lifetime
        self.clock = clock

    def _mac(self, method: str, path: str, pairs: list[tuple[str, str]]) -> bytes:
        # surrogatepass: whatever text a client's query decodes to is signed, never an encoding error
        query = urlencode(sorted(pairs), quote_via=quote, errors="surrogatepass")
        text = f"{method.upper()}\n{path}\n{query}".encode(errors="surrogatepass")
        return hmac.new(self.secret, text, hashlib.sha256).hexdigest().encode()

    def sign(self, method: str, path: str, params: Mapping[str, str] | None = None) -> str:
        """The query string of a link to ``path`` with ``params``: they, ``expires`` and the ``signature``."""
        pairs = list((params or {}).items())
        if any(key in ("expires", "signature") for key, _ in pairs):
            raise ValueError("expires and signature are the signer's own parameters")
        pairs.append(("expires", str(int(self.clock()) + self.lifetime)))
        signature = self._mac(method, path, pairs).decode()
        return urlencode([*pairs, ("signature", signature)], quote_via=quote)

    def verify(self, method: str, path: str, query: Iterable[tuple[str, str]]) -> bool:
        """Whether ``query`` (every pair of the request's query, repeats included) signs ``method path`` now."""
        pairs = list(query)
        signatures = [value for key, value in pairs if key == "signature"]
        expires = [value for key, value in pairs if key == "expires"]
        if len(signatures) != 1 or len(expires) != 1:
            return False
        when = expires[0]
        if not (when.isascii() and when.isdigit() and len(when) <= self.MAX_EXPIRES_DIGITS) or int(when) < self.clock():
            return False
        given = signatures[0].encode(errors="replace")  # bytes: compare_digest refuses non-ASCII str
        expected = self._mac(method, path, [(key, value) for key, value in pairs if key != "signature"])
        return hmac.compare_digest(expected, given)
