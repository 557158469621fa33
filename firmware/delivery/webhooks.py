"""Status callbacks: a recording's CloudEvents as the webhooks central servers already take.

Theory of operation
-------------------
A ``Callback`` is where one webhook goes: the per-recording ``status_callback``
with its ``status_callback_method`` and ``status_callback_events`` (SPEC section
3), or the device-wide webhook, and the wire format (SPEC section 5,
``[events] callback_format``). Three questions are answered here, each in one
place:

1. *Does this event fire this callback?* (``wanted``). Every recording event
   belongs to one of Twilio's callback events (``CALLBACK_EVENT_OF``, below),
   and a callback fires when that event is in its ``events``, for every format:
   Twilio's ``recordingStatusCallbackEvent`` semantics (seed 004, "Noun
   attributes, recordingStatusCallbackEvent"; seed 003, "Create a Recording
   resource, recording_status_callback_event"). The format must also have a way
   to say the event (``SAYS``): Sinch only knows a recording that finished and
   a file that is available, Twilio has no paused status.
2. *What is sent?* (``render``): method, URL, headers and body, no I/O. POST
   carries the body; GET carries the same fields in the query string (JSON
   formats flattened with dotted names, ``params.state=finished``) and no body.
3. *Did it arrive?* (``deliver``): one HTTP request with ``requests``. The
   outbox owns retries; it gets back the status or a ``DeliveryError`` that says
   whether retrying can help.

Formats
-------
``native``
    The CloudEvent itself, structured mode, ``application/cloudevents+json``.
``twilio``
    ``RecordingStatusCallback`` form fields (seed 003, "RecordingStatusCallback";
    seed 004, "recordingStatusCallback"): ``AccountSid`` = ``account_sid``
    of the device id (``AC`` and 32 hex digits, the same for a box always),
    ``CallSid`` = ``call_id``, ``RecordingSid`` = ``id``, ``RecordingUrl``,
    ``RecordingStatus`` (``in-progress``, ``completed``, ``absent``),
    ``RecordingDuration`` (whole seconds, only when ``completed``),
    ``RecordingChannels`` (1 or 2), ``RecordingStartTime`` (RFC 2822 in GMT, as
    the Recording resource's ``start_time``), ``RecordingSource`` (see
    ``TWILIO_SOURCES``), ``RecordingTrack``, and ``ErrorCode`` when ``absent``.
``signalwire``
    The ``calling.call.record`` status callback JSON (seed 001,
    "StatusCallbacks", "Raw JSON example"). ``params.state`` is the recording's
    state (``recording``, ``paused``, ``finished``, ``no_input``, ``error``),
    ``params.control_id`` and ``params.recording_id`` its id; ``duration`` and
    ``size`` only for ``finished``/``no_input``, ``start_time``/``end_time``
    (Unix seconds) once it has ended, ``pause_behavior`` only when paused.
    ``params.record.audio.direction`` is ``speak`` for the inbound track,
    ``listen`` for outbound (SPEC section 3) and ``both`` for both, as
    SignalWire's ``record_call`` has it.
``sinch``
    The ``notify`` events ``recording_finished`` and ``recording_available``
    (seed 002, "Notification events"), ``callid`` = ``call_id``.

Durations in the Twilio and SignalWire formats are whole seconds rounded down,
as in SignalWire's example (15.5 s between ``start_time`` and ``end_time``,
``duration`` 15). ``RecordingUrl``, ``params.url`` and ``destination`` are the
remote location (``data.location``) for ``recording.available`` and the
recording's ``media_url`` otherwise.

Signatures
----------
With a secret, each request carries ``X-EdgeRecorder-Signature: t=<ts>,v1=<hex>``
(the scheme Stripe uses): ``<hex>`` is HMAC-SHA256 with the secret over
``f"{ts}."`` followed by the body, or for GET by the raw query string (what
follows ``?`` in the request line). The timestamp is inside the MAC, so a
receiver that rejects old timestamps (``verify``, 5 minutes) cannot be fed a
replayed request. ``X-EdgeRecorder-Event-Id`` carries the CloudEvent id in
every format, so receivers can drop the duplicates a retrying outbox sends.
Every POST also carries the Standard Webhooks headers ``webhook-id`` (the
CloudEvent id, the same on every retry), ``webhook-timestamp`` and
``webhook-signature`` (``standard_signature``): receivers built on a Standard
Webhooks library verify it unchanged, and ``X-EdgeRecorder-Signature`` stays
for receivers written against it until they move over.
A twilio-format callback also carries ``X-Twilio-Signature``, computed as
Twilio computes it with the secret as the auth token (``twilio_signature``), so
a central server's Twilio validation middleware takes it unchanged.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from .. import __version__
from ..core.options import CALLBACK_EVENTS, OptionError
from ..destinations import redact
from .errors import DeliveryError, is_permanent_http, retry_after

FORMATS = ("native", "twilio", "signalwire", "sinch")
METHODS = ("POST", "GET")
DEFAULT_EVENTS = ("completed",)

SIGNATURE_HEADER = "X-EdgeRecorder-Signature"
#: Twilio's own signature, on twilio-format callbacks, so Twilio's RequestValidator takes them.
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
EVENT_ID_HEADER = "X-EdgeRecorder-Event-Id"
USER_AGENT = f"edge-recorder/{__version__}"
TOLERANCE = 300  # seconds a signature's timestamp may be away from the receiver's clock

# Which of Twilio's callback events each CloudEvent type belongs to. A paused
# recording is still in progress (Twilio's in-flight statuses, seed 003 "Update
# a Recording resource"); a recording that ended belongs to "completed" or
# "absent" by its status (``_ENDS``, below). Types not listed (dtmf.key,
# recording.deleted, device.*) fire no status callback.
CALLBACK_EVENT_OF = {
    "recording.started": "in-progress",
    "recording.paused": "in-progress",
    "recording.resumed": "in-progress",
    "recording.available": "completed",
}
# The ends: completed when the status says so, otherwise (absent: no input or
# nothing left after trimming; failed: an error) Twilio's "absent", which covers
# "a system error" too (seed 004, recordingStatusCallbackEvent).
_ENDS = {"recording.finished": "completed", "recording.no_input": "absent", "recording.error": "absent"}

# What each format can say. A CloudEvent type missing from a format's set is
# never sent in that format, whatever the callback's events.
_RECORDING_TYPES = frozenset({*CALLBACK_EVENT_OF, *_ENDS})
SAYS: dict[str, frozenset[str]] = {
    "native": _RECORDING_TYPES,
    # RecordingStatus has no "paused" (seed 004).
    "twilio": _RECORDING_TYPES - {"recording.paused"},
    # calling.call.record has no "uploaded" state; its "finished" carries the url (seed 001).
    "signalwire": _RECORDING_TYPES - {"recording.available"},
    # Only recording_finished and recording_available exist (seed 002).
    "sinch": frozenset({"recording.finished", "recording.no_input", "recording.error", "recording.available"}),
}

# Our ``source`` as Twilio's RecordingSource (seed 003, Recording properties
# "source"). A recording started on a call already going on, by a request or a
# person, is Twilio's "Post to Recording resource of an in-progress Call SID":
# StartCallRecordingAPI. ``auto`` (``[call] auto_record``: every call recorded
# from when it is answered) is what ``<Dial record>`` does: DialVerb.
TWILIO_SOURCES = {
    "api": "StartCallRecordingAPI",
    "mqtt": "StartCallRecordingAPI",
    "cli": "StartCallRecordingAPI",
    "button": "StartCallRecordingAPI",
    "dtmf": "StartCallRecordingAPI",
    "auto": "DialVerb",
}

# Our track as SignalWire's audio direction (SPEC section 3: speak = inbound,
# listen = outbound; "both" as in SignalWire's record_call).
SIGNALWIRE_DIRECTIONS = {"inbound": "speak", "outbound": "listen", "both": "both"}

_CONTENT_TYPES = {
    "native": "application/cloudevents+json; charset=utf-8",
    "twilio": "application/x-www-form-urlencoded",
    "signalwire": "application/json",
    "sinch": "application/json",
}


@dataclass(frozen=True)
class Callback:
    """Where one status callback goes, how, in which format and for which events.

    Invalid values raise ``OptionError`` (a ``ValueError``) naming the option and
    what it accepts; ``from_options`` also takes them loosely typed.

    >>> hook = Callback.from_options("https://cc.example.com/rec", "get", "in-progress completed", "twilio")
    >>> hook.method, hook.events
    ('GET', ('in-progress', 'completed'))
    >>> Callback("ftp://cc.example.com/rec")
    Traceback (most recent call last):
    ...
    firmware.core.options.OptionError: status_callback: 'ftp://cc.example.com/rec' is not valid; expected an http:// or https:// URL
    """

    url: str
    method: str = "POST"
    format: str = "native"
    events: tuple[str, ...] = DEFAULT_EVENTS

    def __post_init__(self) -> None:
        _check_url(self.url)
        if self.method not in METHODS:
            raise OptionError("status_callback_method", self.method, " or ".join(METHODS))
        if self.format not in FORMATS:
            raise OptionError("callback_format", self.format, "one of " + ", ".join(FORMATS))
        if not isinstance(self.events, list | tuple):
            raise OptionError("status_callback_events", self.events, "a list of " + ", ".join(CALLBACK_EVENTS))
        # A list (the callback read back from the outbox's JSON) is taken as a tuple; none
        # at all is Twilio's default, "completed" only (seed 004, recordingStatusCallbackEvent).
        object.__setattr__(self, "events", tuple(self.events) or DEFAULT_EVENTS)
        for event in self.events:
            if event not in CALLBACK_EVENTS:
                raise OptionError("status_callback_events", event, "one of " + ", ".join(CALLBACK_EVENTS))

    @classmethod
    def from_options(
        cls,
        url: str,
        method: str | None = "POST",
        events: str | list[str] | tuple[str, ...] | None = None,
        fmt: str | None = "native",
    ) -> Callback:
        """A callback from option values as users write them.

        ``method`` in any case; ``events`` a space- or comma-separated string or a
        list, empty or None for Twilio's default (``completed`` only).
        """
        method = "POST" if method is None else str(method).upper()
        fmt = "native" if fmt is None else str(fmt).lower()
        if events is None:
            items: Any = []
        elif isinstance(events, str):
            items = events.replace(",", " ").split()
        else:
            items = events
        if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
            raise OptionError("status_callback_events", events, "a list of " + ", ".join(CALLBACK_EVENTS))
        chosen = tuple(dict.fromkeys(item.strip().lower() for item in items)) or DEFAULT_EVENTS
        return cls(url, method, fmt, chosen)


def callback_event(event: Mapping[str, Any]) -> str | None:
    """The Twilio callback event (``in-progress``, ``completed``, ``absent``) a CloudEvent belongs to."""
    kind = event.get("type")
    if kind in _ENDS:
        status = (event.get("data") or {}).get("status")
        if status is None:
            return _ENDS[kind]
        return "completed" if status == "completed" else "absent"
    return CALLBACK_EVENT_OF.get(kind)


def wanted(callback: Callback, event: Mapping[str, Any]) -> bool:
    """Whether this CloudEvent fires this callback.

    Twilio's ``recordingStatusCallbackEvent`` semantics for every format (seed
    004): ``in-progress`` for started (and paused, resumed), ``completed`` for a
    finished recording with status ``completed`` and for ``recording.available``,
    ``absent`` for no input, nothing left after trimming, or an error. The
    format must have a way to say the event (``SAYS``).
    """
    return event.get("type") in SAYS[callback.format] and callback_event(event) in callback.events


def standard_signature(webhook_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """``webhook-signature`` of the Standard Webhooks specification: ``v1,`` and base64 of HMAC-SHA256 over
    ``"<id>.<timestamp>.<body>"``. The key is the secret's bytes, or the bytes a ``whsec_<base64>`` secret
    stands for (the form Standard Webhooks libraries take: give them ``whsec_`` + base64 of the secret).

    >>> standard_signature("msg_1", 1700000000, b'{"a": 1}', "s3cret")
    'v1,UYi/JbrVKz7pBWDbcPxjTPD1IwAnSlwuGj+Y+JU0ydc='
    """
    key = secret.encode()
    if secret.startswith("whsec_"):
        with contextlib.suppress(binascii.Error, ValueError):  # not base64 after all: the text is the key
            key = base64.b64decode(secret[6:] + "==")
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def twilio_signature(url: str, params: Iterable[tuple[str, str]], secret: str) -> str:
    """``X-Twilio-Signature``: HMAC-SHA1 with the secret (Twilio's auth token) over the URL as requested and,
    for a POST, each parameter's name and value, sorted by name (and value), base64.

    >>> twilio_signature("https://cc.example.com/cb", [("To", "+1"), ("From", "+2")], "secret")
    '4KxM6LIRYNUYC08LbtSKcPefTkg='
    """
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    text = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()).decode()


def render(callback: Callback, event: Mapping[str, Any]) -> tuple[str, str, dict[str, str], bytes]:
    """The request for this callback: ``(method, url, headers, body)``.

    POST carries the body; GET carries the same fields in the query string
    (after any query the callback URL has) and an empty body. Raises
    ``ValueError`` for an event type the format cannot say (see ``wanted``).
    """
    kind = event.get("type")
    if callback.format != "native" and kind not in SAYS[callback.format]:
        says = ", ".join(sorted(SAYS[callback.format]))
        raise ValueError(f"{callback.format} callbacks cannot carry {kind!r}, only {says}")
    payload = _PAYLOADS[callback.format](event)
    headers = {"User-Agent": USER_AGENT, EVENT_ID_HEADER: str(event.get("id", ""))}
    if callback.method == "GET":
        fields = payload if callback.format == "twilio" else dict(_flatten(payload))
        parts = urlsplit(callback.url)
        query = "&".join(q for q in (parts.query, urlencode(fields)) if q)
        return "GET", urlunsplit(parts._replace(query=query, fragment="")), headers, b""
    headers["Content-Type"] = _CONTENT_TYPES[callback.format]
    if callback.format == "twilio":
        body = urlencode(payload).encode("ascii")
    else:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return "POST", callback.url, headers, body


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """HMAC-SHA256 (hex) with ``secret`` over ``f"{timestamp}."`` and ``body``.

    For GET, ``body`` is the raw query string. The header is
    ``X-EdgeRecorder-Signature: t=<timestamp>,v1=<this>``.

    >>> sign(b'{"a":1}', "s3cret", 1700000000)[:16]
    '1698a50bc74d1ff1'
    """
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def verify(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str,
    tolerance: float = TOLERANCE,
    now: float | None = None,
) -> bool:
    """Whether a request's ``X-EdgeRecorder-Signature`` is good: for receivers and tests.

    ``body`` is the request body, or for GET the raw query string. False when
    the header is missing or malformed, the timestamp is more than ``tolerance``
    seconds from ``now`` (either way), or no ``v1`` signature matches (several
    are allowed, for a secret being rotated). Constant-time comparison.

    >>> headers = {"x-edgerecorder-signature": "t=1700000000,v1=" + sign(b"{}", "s3cret", 1700000000)}
    >>> verify(headers, b"{}", "s3cret", now=1700000060), verify(headers, b"{}", "s3cret", now=1700000400)
    (True, False)
    """
    value = _header(headers, SIGNATURE_HEADER)
    if not value or not secret:
        return False
    timestamp, signatures = None, []
    for item in value.split(","):
        key, _, text = item.strip().partition("=")
        if key == "t" and text.isdigit():
            timestamp = int(text)
        elif key == "v1":
            signatures.append(text.strip())
    if timestamp is None or not signatures:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    expected = sign(data, secret, timestamp).encode("ascii")
    return any(hmac.compare_digest(expected, candidate.encode("utf-8")) for candidate in signatures)


def deliver(
    callback: Callback,
    event: Mapping[str, Any],
    *,
    secret: str = "",
    timeout: float = 10.0,
    session: requests.Session | None = None,
) -> int:
    """Send one callback and return the HTTP status (2xx).

    Raises ``DeliveryError`` naming the URL: permanent for a 4xx other than 408
    and 429 (``is_permanent_http``), a redirect (callbacks do not follow them: a
    POST redirected would arrive as a GET without its body) or a URL requests
    cannot use; transient for 5xx, 408, 429, a refused connection and no answer
    within ``timeout`` seconds (connecting, and between bytes of the answer).
    """
    shown = redact(callback.url)
    try:
        method, url, headers, body = render(callback, event)
    except ValueError as exc:
        raise DeliveryError(f"{callback.method} {shown}: {exc}", permanent=True) from exc
    own = session is None
    http = requests.Session() if own else session
    try:
        prepared = http.prepare_request(requests.Request(method, url, headers=headers, data=body or None))
        if secret:
            # Sign what goes on the wire: requests may requote the URL it was given.
            signed = urlsplit(prepared.url).query.encode("ascii") if method == "GET" else body
            stamp = int(time.time())
            prepared.headers[SIGNATURE_HEADER] = f"t={stamp},v1={sign(signed, secret, stamp)}"
            if method == "POST":  # Standard Webhooks: what its libraries (standardwebhooks, svix...) verify
                webhook_id = str(event.get("id") or "")
                prepared.headers["webhook-id"] = webhook_id
                prepared.headers["webhook-timestamp"] = str(stamp)
                prepared.headers["webhook-signature"] = standard_signature(webhook_id, stamp, body or b"", secret)
            if callback.format == "twilio":  # what Twilio's own RequestValidator checks
                params = parse_qsl(body.decode(), keep_blank_values=True) if method == "POST" and body else []
                prepared.headers[TWILIO_SIGNATURE_HEADER] = twilio_signature(prepared.url, params, secret)
        settings = http.merge_environment_settings(prepared.url, {}, None, None, None)
        response = http.send(prepared, timeout=timeout, allow_redirects=False, **settings)
    except requests.Timeout as exc:
        raise DeliveryError(f"{method} {shown}: no answer within {timeout:g} s", permanent=False) from exc
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.InvalidSchema,
        requests.exceptions.MissingSchema,
    ) as exc:
        raise DeliveryError(f"{method} {shown}: unusable URL ({exc})", permanent=True) from exc
    except requests.ConnectionError as exc:
        raise DeliveryError(f"{method} {shown}: cannot connect ({_reason(exc)})", permanent=False) from exc
    except requests.RequestException as exc:
        raise DeliveryError(f"{method} {shown}: {exc}", permanent=False) from exc
    finally:
        if own:
            http.close()
    status = response.status_code
    detail = _snippet(response)
    response.close()
    if 200 <= status < 300:
        return status
    what = f"{method} {shown}: HTTP {status} {response.reason or ''}".rstrip() + detail
    if 300 <= status < 400:
        where = response.headers.get("Location", "")
        raise DeliveryError(
            f"{what}; redirected to {where!r}, callbacks do not follow redirects: set the callback URL to it",
            permanent=True,
            status=status,
        )
    raise DeliveryError(
        what, permanent=is_permanent_http(status), status=status, retry_after=retry_after(response.headers)
    )


# The payloads, one function per format.


def _native(event: Mapping[str, Any]) -> dict[str, Any]:
    return dict(event)


def _twilio(event: Mapping[str, Any]) -> dict[str, str]:
    data = event.get("data") or {}
    status = callback_event(event) or "in-progress"
    fields = {
        "AccountSid": account_sid(_device_id(event)),
        "CallSid": str(data.get("call_id") or ""),
        "RecordingSid": str(data.get("id") or ""),
        "RecordingUrl": _location(event),
        "RecordingStatus": status,
    }
    if status == "completed":
        fields["RecordingDuration"] = str(_whole_seconds(data.get("duration")))
    fields.update(
        RecordingChannels=str(data.get("channels") or 1),
        RecordingStartTime=_rfc2822(data.get("start_time")),
        RecordingSource=TWILIO_SOURCES.get(data.get("source") or "", "StartCallRecordingAPI"),
        RecordingTrack=str(data.get("track") or "both"),
    )
    if status == "absent":
        # Twilio's codes are numbers from its error dictionary; ours say what happened.
        fields["ErrorCode"] = str(data.get("error_code") or data.get("end_reason") or data.get("state") or "")
    return fields


def _signalwire(event: Mapping[str, Any]) -> dict[str, Any]:
    data = event.get("data") or {}
    device = _device_id(event)
    state = str(data.get("state") or "")
    params: dict[str, Any] = {
        "state": state,
        "control_id": data.get("id"),
        "call_id": data.get("call_id"),
        "node_id": device,
    }
    url = _location(event)
    if url:
        params["url"] = url
    if state in ("finished", "no_input"):
        params["duration"] = _whole_seconds(data.get("duration"))
        params["size"] = int(data.get("size") or 0)
    params["recording_id"] = data.get("id")
    if state in ("finished", "no_input", "error"):
        for key in ("start_time", "end_time"):
            if data.get(key):
                params[key] = _unix(data[key])
    if state == "paused":
        params["pause_behavior"] = data.get("pause_behavior") or "silence"
    params["record"] = {
        "audio": {
            "format": data.get("format"),
            "direction": SIGNALWIRE_DIRECTIONS.get(data.get("track") or "both", "both"),
            "stereo": data.get("channels") == 2,
        }
    }
    return {
        "event_type": "calling.call.record",
        "event_channel": str(event.get("source") or ""),
        "timestamp": _unix(event["time"]) if event.get("time") else time.time(),
        "project_id": device,
        "space_id": device,
        "params": params,
    }


def _sinch(event: Mapping[str, Any]) -> dict[str, Any]:
    data = event.get("data") or {}
    payload: dict[str, Any] = {"event": "notify", "callid": data.get("call_id"), "version": 1}
    if event.get("type") == "recording.available":
        payload.update(type="recording_available", destination=_location(event))
    else:
        payload["type"] = "recording_finished"
    return payload


_PAYLOADS = {"native": _native, "twilio": _twilio, "signalwire": _signalwire, "sinch": _sinch}


# Small conversions.


def account_sid(device_id: str) -> str:
    """The box's Twilio ``AccountSid``: ``AC`` and 32 hex digits, derived from its device id, so it is the
    same in every callback and across restarts, and of the shape Twilio's libraries and servers expect.

    >>> account_sid("front-desk")
    'AC27c928ef113c90033aedeeb583966612'
    """
    return "AC" + hashlib.sha256(f"edge-recorder:{device_id}".encode()).hexdigest()[:32]


def _device_id(event: Mapping[str, Any]) -> str:
    source = str(event.get("source") or "")
    prefix, slash, device = source.partition("/")
    return device if slash and prefix == "edge-recorder" else source


def _location(event: Mapping[str, Any]) -> str:
    """The remote location for recording.available, the media_url otherwise ("" when none)."""
    data = event.get("data") or {}
    if event.get("type") == "recording.available" and data.get("location"):
        return str(data["location"])
    return str(data.get("media_url") or "")


def _whole_seconds(seconds: Any) -> int:
    try:
        return max(0, math.floor(float(seconds)))
    except (TypeError, ValueError):
        return 0


def _rfc2822(moment: Any) -> str:
    """RFC 3339 as Twilio writes dates: ``Wed, 01 May 2024 12:00:01 +0000``."""
    if not moment:
        return ""
    return format_datetime(datetime.fromisoformat(str(moment)).astimezone(UTC).replace(microsecond=0))


def _unix(moment: str) -> float:
    return round(datetime.fromisoformat(moment).timestamp(), 3)


def _flatten(value: Any, prefix: str = ""):
    """(dotted name, text) pairs of a JSON value, for a GET query string; nulls are left out."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif value is None:
        return
    elif isinstance(value, bool):
        yield prefix, "true" if value else "false"
    elif isinstance(value, list | tuple):
        yield prefix, json.dumps(value, separators=(",", ":"))
    else:
        yield prefix, str(value)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def _check_url(url: Any) -> None:
    allowed = "an http:// or https:// URL"
    if not isinstance(url, str) or any(ord(ch) <= 32 or ord(ch) == 127 for ch in url):
        raise OptionError("status_callback", redact(url), allowed)
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise OptionError("status_callback", redact(url), allowed) from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise OptionError("status_callback", redact(url), allowed)


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host", "Network is unreachable"):
        if marker in text:
            return marker.lower()
    return text


def _snippet(response: requests.Response) -> str:
    try:
        text = " ".join(response.text.split())
    except Exception:  # an undecodable body says nothing useful
        return ""
    return f": {text[:120]}" if text else ""
