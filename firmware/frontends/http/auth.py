"""Who may call the API: bearer tokens, HTTP Basic, signed media links, Vonage JWTs, a failed-login limit.

Tokens must carry at least 128 random bits (22 characters of URL-safe base64,
32 hex digits); they are compared in constant time. HTTP Basic takes the
configured ``[http] username`` and ``password``, and, as Twilio's libraries
send it, the box's ``AccountSid`` as the user with one of the tokens as the
password.

Media links handed out in events and ``media_url`` are signed:
``?<params>&expires=<unix time>&signature=<hex>``, an HMAC-SHA256 with the
box's link secret over ``"<METHOD>\\n<path>\\n<query>"``, where ``<query>`` is
every query parameter but ``signature`` (``expires`` and the link's own, such
as ``RequestedChannels``), sorted and URL-encoded. So a link is good for
exactly what it was handed out for: changing, adding or dropping a parameter
breaks it. It is valid until ``expires`` (default 15 minutes ahead).

A recording link (``recording_url``, Twilio's ``RecordingUrl``) carries its
signature in the path instead, ``/v1/links/<expires>/<signature>/recordings/<id>``,
so that a client may append ``.wav`` or ``.mp3`` (and ``?RequestedChannels=``)
as Twilio's callers do: it opens that recording's audio in any form until it
expires. Its HMAC is over ``"LINK\\n/v1/recordings/<id>\\nexpires=<expires>"``;
query links are only ever signed and checked for ``GET``, so neither kind of
signature stands for the other.

A Vonage application's JWT (Vonage's Voice API recording guide: the recording
URL is fetched with ``Authorization: Bearer <jwt>``, RS256, signed with the
application's private key) opens media and nothing else (``VonageJwt``).
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

import jwt
from aiohttp import web

from ...config import MIN_TOKEN_BITS, TokenError, parse_tokens, token_bits

__all__ = [
    "ACTOR",
    "MIN_TOKEN_BITS",
    "Auth",
    "JwtRefused",
    "Limiter",
    "LinkSigner",
    "TokenError",
    "VonageJwt",
    "parse_tokens",
    "token_bits",
]

#: Who made a request, for the audit log: ``token#1``, ``twilio:token#1``, ``basic:USER``, ``signed-link``,
#: ``vonage:APPLICATION``.
ACTOR = web.RequestKey("actor", str)


class Auth:
    """``check(header)`` names the caller of a request for the audit log, or None when it is not let in.

    >>> auth = Auth(["3f9c0a7e51d2b8641ce97a035fb2d864"], account_sid="AC" + "0" * 32)
    >>> auth.check("Bearer 3f9c0a7e51d2b8641ce97a035fb2d864"), auth.check("Bearer nope")
    ('token#1', None)
    >>> auth.check("Basic " + base64.b64encode(b"AC" + b"0" * 32 + b":3f9c0a7e51d2b8641ce97a035fb2d864").decode())
    'twilio:token#1'
    """

    def __init__(self, tokens: list[str], username: str = "", password: str = "", account_sid: str = "") -> None:
        self._tokens = [t.encode() for t in tokens]
        self._basic = (username.encode(), password.encode()) if username else None
        self._account = account_sid.encode()

    def check(self, header: str | None) -> str | None:
        """The caller's name for the audit log when ``header`` authorises, else None."""
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            # surrogateescape: the header's bytes as they came, so one that is not UTF-8 is a wrong token
            return self._token(value.strip().encode("utf-8", "surrogateescape"))
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
            except ValueError:
                return None
            if self._basic is not None:
                good = hmac.compare_digest(user, self._basic[0]) & hmac.compare_digest(password, self._basic[1])
                if good:
                    return f"basic:{user.decode(errors='replace')}"
            if self._account and hmac.compare_digest(user, self._account):
                who = self._token(password)
                return f"twilio:{who}" if who else None
        return None

    def _token(self, given: bytes) -> str | None:
        """Which token ``given`` is, compared with every one in constant time."""
        who = None
        for index, token in enumerate(self._tokens):
            if hmac.compare_digest(given, token):
                who = f"token#{index + 1}"
        return who


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
    >>> expires, signature = s.sign_recording("RE1")
    >>> s.verify_recording("RE1", expires, signature), s.verify_recording("RE2", expires, signature)
    (True, False)
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

    def sign_recording(self, recording_id: str) -> tuple[str, str]:
        """``expires`` and ``signature`` of a link that opens the recording's audio, in any form, until then."""
        expires = str(int(self.clock()) + self.lifetime)
        return expires, self._mac("LINK", f"/v1/recordings/{recording_id}", [("expires", expires)]).decode()

    def verify_recording(self, recording_id: str, expires: str, signature: str) -> bool:
        """Whether ``expires`` and ``signature`` from a link's path open ``recording_id`` now."""
        return self.verify("LINK", f"/v1/recordings/{recording_id}", [("expires", expires), ("signature", signature)])


class JwtRefused(Exception):
    """A JWT that does not let its bearer in; ``str()`` says why, for the 401."""


class VonageJwt:
    """A Vonage application's JWTs (Vonage's recording guide), checked against ``[http] vonage_public_key``.

    The algorithm is pinned to RS256, so ``alg: none`` and an HS256 token keyed with the public key (which
    anyone has) are refused; ``exp`` and ``iat`` are checked with ``LEEWAY`` seconds for clocks that differ,
    and ``application_id`` must be the configured application's; a JWT may be good for ``MAX_LIFETIME`` at
    most (Vonage's libraries make them for 15 minutes), so a leaked one does not open media for years.
    ``check(token)`` names the caller for the audit log or raises ``JwtRefused`` saying what is wrong.
    """

    LEEWAY = 30
    MAX_LIFETIME = 86400
    REQUIRED = ("application_id", "iat", "exp", "jti")

    def __init__(self, public_key: str, application_id: str) -> None:
        self.key = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).prepare_key(public_key)
        self.application_id = application_id.lower()

    @staticmethod
    def looks_like(credential: str) -> bool:
        """A compact JWS (three dot-separated parts), as opposed to an API token."""
        return credential.count(".") == 2

    def check(self, token: str) -> str:
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError:
            raise JwtRefused("the Vonage JWT cannot be read: it is not a JWT") from None
        if alg != "RS256":
            raise JwtRefused(f"the Vonage JWT is signed with {_shown(alg)}; only RS256 is accepted")
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=["RS256"],
                leeway=self.LEEWAY,
                options={"require": list(self.REQUIRED), "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise JwtRefused("the Vonage JWT has expired (exp is past); make a new one") from None
        except jwt.ImmatureSignatureError:
            raise JwtRefused("the Vonage JWT is not valid yet (iat or nbf is in the future)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise JwtRefused(f"the Vonage JWT has no {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise JwtRefused("the Vonage JWT's signature does not match the application's public key") from None
        except jwt.InvalidTokenError as exc:
            raise JwtRefused(f"the Vonage JWT is not valid: {exc}") from None
        lifetime = claims["exp"] - claims["iat"]
        if not isinstance(lifetime, int | float) or lifetime > self.MAX_LIFETIME:
            raise JwtRefused(
                f"the Vonage JWT's lifetime (exp - iat) is over {self.MAX_LIFETIME} s; make one that expires sooner"
            )
        given = claims["application_id"]
        if not isinstance(given, str) or given.lower() != self.application_id:
            raise JwtRefused(f"the Vonage JWT is for application {_shown(given)}, not this box's")
        return f"vonage:{self.application_id}"


def _shown(value: object) -> str:
    """A value from a request, for a message: quoted, and short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
