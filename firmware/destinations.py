"""Upload destinations, and the credentials that belong to each.

Theory of operation
-------------------
A finished recording goes to a *destination*. The config names them all: the
box's default, ``[upload] destination`` with the credentials beside it in
``[upload]``; any number of named ones, ``[destinations.NAME]`` tables, each
with its own ``url`` and credentials; and ``mqtt`` (the file goes over the
broker, with the broker's credentials, when ``[mqtt] url`` is set).

A recording's ``destination`` start option (MQTT, the HTTP API, a vendor
document's ``destinationUrl``) comes from outside the box, so it never decides
where credentials go. It may be "" (the default destination), a destination's
name, ``mqtt``, or a URL *under* a configured destination: the same scheme,
host and port, and a path inside the destination's folder (its URL ends in
``/``) or exactly its file. That URL is sent the covering destination's
credentials, and nothing else ever is. Anything else is refused with
``OptionError`` before the recording starts. The outbox row of an upload keeps
the destination's name, and the sender checks again at send time against the
config then in force, so a destination removed from the config takes its
credentials with it.

Secrets never travel in URLs: a user and password in a destination URL are
refused (they would end up in logs, events, the catalog and API answers), and
``redact`` is the one rule for showing any URL in those places.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .core import OptionError
from .core.options import redact

__all__ = ["DEFAULT", "MQTT", "Credentials", "Destination", "Destinations", "Target", "redact"]

#: The name of ``[upload] destination``, for start options that pick it by name.
DEFAULT = "default"
#: The file goes over the broker (``firmware.delivery.mqtt_files``).
MQTT = "mqtt"
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def is_loopback(host: str | None) -> bool:
    """True for a host that never leaves this machine: ``localhost`` and loopback addresses, the only
    hosts plain ``http://`` may carry recordings and credentials to.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost"), is_loopback("10.0.0.5")
    (True, True, True, False)
    """
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_PLAIN_PATH = re.compile(r"[A-Za-z0-9._~/-]*")


@dataclass(frozen=True)
class Credentials:
    """How to authenticate at a destination; only the fields it needs are used.

    HTTP uses ``bearer_token`` if set, else HTTP Basic with ``username`` and
    ``password``. S3 uses the ``s3_*`` fields; empty keys fall back to
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` and an empty region to
    ``AWS_REGION``/``AWS_DEFAULT_REGION`` (then the client asks the bucket).
    ``s3_endpoint`` is a URL such as ``http://127.0.0.1:8333`` or
    ``https://s3.eu-west-1.amazonaws.com``; empty means AWS.

    The secrets never appear in ``repr()`` (it ends up in logs):

    >>> Credentials(bearer_token="t0ps3cret")
    Credentials(bearer_token='***', username='', password='', s3_access_key='', s3_secret_key='', s3_endpoint='', s3_region='')
    """

    bearer_token: str = ""
    username: str = ""
    password: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_endpoint: str = ""
    s3_region: str = ""

    @classmethod
    def none(cls) -> Destinations:
        """A box with no destinations: every file stays on it."""
        return cls({})

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> Credentials:
        """The credentials of ``[upload]`` or of a ``[destinations.NAME]`` table.

        >>> Credentials.from_config({"token": "t"}).bearer_token
        't'
        """
        return cls(
            bearer_token=section.get("token", ""),
            username=section.get("username", ""),
            password=section.get("password", ""),
            s3_access_key=section.get("s3_access_key", ""),
            s3_secret_key=section.get("s3_secret_key", ""),
            s3_endpoint=section.get("s3_endpoint", ""),
            s3_region=section.get("s3_region", ""),
        )

    def __repr__(self) -> str:
        shown = (
            f"{f.name}={'***' if f.name in _SECRETS and getattr(self, f.name) else getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
        )
        return f"Credentials({', '.join(shown)})"


_SECRETS = frozenset({"bearer_token", "password", "s3_secret_key"})


@dataclass(frozen=True)
class Destination:
    """A configured destination: its name, its URL (or ``mqtt``), how files are sent there and its credentials.

    >>> d = Destination("central", "https://central.example.com/calls/")
    >>> d.covers("https://central.example.com/calls/front-desk/"), d.covers("https://evil.example.com/calls/")
    (True, False)
    >>> d.covers("https://central.example.com/calls/../admin/")
    False
    """

    name: str
    url: str
    method: str = "PUT"
    credentials: Credentials = field(default_factory=Credentials)

    def covers(self, url: str) -> bool:
        """``url`` is this destination's URL or lies in its folder: same scheme, host and port, no user or
        password, no ``.``/``..`` or encoded separators in the path below, the same query."""
        if url == self.url:
            return True
        if self.url == MQTT:
            return False
        try:
            own, other = urlsplit(self.url), urlsplit(url)
            same_place = (
                own.scheme.lower() == other.scheme.lower()
                and (own.hostname or "") == (other.hostname or "")
                and _port(own) == _port(other)
            )
        except ValueError:  # a port that is not a number
            return False
        if not same_place or other.username is not None or other.password is not None or other.fragment:
            return False
        if other.query != own.query:
            return False
        if own.scheme.lower() == "s3" and own.netloc != other.netloc:  # bucket names are case-sensitive
            return False
        if not own.path.endswith("/") or not other.path.startswith(own.path):
            return own.path == other.path
        # Below the folder only plain names: no escapes, backslashes or ";" that some server could read as a
        # separator or a step up (IIS takes "\" for "/", Tomcat "..;/" for "../"), no "." or ".." segments.
        below = other.path[len(own.path) :]
        return _PLAIN_PATH.fullmatch(below) is not None and not any(s in (".", "..") for s in below.split("/"))


def _port(parts) -> int | None:
    return parts.port or {"https": 443, "http": 80}.get(parts.scheme.lower())


@dataclass(frozen=True)
class Target:
    """Where one recording goes: the destination whose credentials it gets, and the URL (that one's or below)."""

    destination: Destination
    url: str


class Destinations:
    """The destinations a config names; ``resolve`` turns a ``destination`` start option into a ``Target``.

    >>> ds = Destinations.from_config(
    ...     {"destination": "https://central.example.com/calls/", "token": "t", "method": "PUT"},
    ...     {"archive": {"url": "s3://archive/box-7/", "method": "PUT"}},
    ...     mqtt=False,
    ... )
    >>> ds.resolve("").url, ds.resolve("archive").url, ds.resolve("https://central.example.com/calls/x/").url
    ('https://central.example.com/calls/', 's3://archive/box-7/', 'https://central.example.com/calls/x/')
    >>> ds.resolve("https://any.host/x/")
    Traceback (most recent call last):
    ...
    firmware.core.options.OptionError: destination: 'https://any.host/x/' is not valid; expected a configured destination (default, archive) or a URL under one of https://central.example.com/calls/, s3://archive/box-7/; credentials go only to destinations in the config
    """

    def __init__(self, destinations: Mapping[str, Destination], mqtt: bool = False) -> None:
        self.named = dict(destinations)
        self.mqtt = mqtt

    @classmethod
    def none(cls) -> Destinations:
        """A box with no destinations: every file stays on it."""
        return cls({})

    @classmethod
    def from_config(
        cls, upload: Mapping[str, Any], named: Mapping[str, Mapping[str, Any]], mqtt: bool = False
    ) -> Destinations:
        """From ``[upload]``, the ``[destinations.NAME]`` tables and whether ``[mqtt] url`` is set."""
        out: dict[str, Destination] = {}
        if upload.get("destination"):
            out[DEFAULT] = Destination(
                DEFAULT, upload["destination"], upload.get("method", "PUT"), Credentials.from_config(upload)
            )
        for name, table in named.items():
            out[name] = Destination(name, table["url"], table.get("method", "PUT"), Credentials.from_config(table))
        return cls(out, mqtt)

    def resolve(self, value: str, option: str = "destination") -> Target | None:
        """``value`` as a start option gives it: "" (the default), a name, ``mqtt`` or a URL under a destination.

        None when it means nowhere ("" on a box without a default destination);
        ``OptionError`` naming what would be accepted when no destination is it
        or covers it.
        """
        if value == "":
            default = self.named.get(DEFAULT)
            return None if default is None else Target(default, default.url)
        if value == MQTT:
            if not self.mqtt:
                raise OptionError(option, value, "a broker for mqtt uploads: [mqtt] url is not set")
            return Target(Destination(MQTT, MQTT), MQTT)
        if value in self.named:
            return Target(self.named[value], self.named[value].url)
        if "://" in value:
            for destination in self.named.values():
                if destination.covers(value):
                    return Target(destination, value)
        raise OptionError(option, redact(value), self.allowed())

    def target(self, name: str | None, url: str) -> Target:
        """At send time: the destination ``name`` as the config now has it, if it still covers ``url``.

        ``LookupError`` saying why not (an outbox row from before the config changed).
        """
        if name == MQTT and url == MQTT:
            return Target(Destination(MQTT, MQTT), MQTT)
        if name is None:  # a row from before uploads named their destination: whichever covers its URL
            found = next((d for d in self.named.values() if d.covers(url)), None)
        else:
            found = self.named.get(name)
            if found is not None and not found.covers(url):
                raise LookupError(
                    f"destination {name!r} no longer covers {redact(url)}; its credentials are not sent there "
                    "and the file stays on the box"
                )
        if found is None:
            raise LookupError(f"destination {name or redact(url)!r} is not in the config; the file stays on the box")
        return Target(found, url)

    def allowed(self) -> str:
        names = [*self.named, *([MQTT] if self.mqtt else [])]
        urls = [d.url for d in self.named.values()]
        if not names:
            return (
                "a destination the config names, and this box names none ([upload] destination or "
                "[destinations.NAME]); credentials go only to destinations in the config"
            )
        return (
            f"a configured destination ({', '.join(names)})"
            + (f" or a URL under one of {', '.join(map(redact, urls))}" if urls else "")
            + "; credentials go only to destinations in the config"
        )
