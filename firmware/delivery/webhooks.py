"""Status callbacks: a recording's CloudEvents as the webhooks central servers already take.

Theory of operation
-------------------
A ``Callback`` is where one webhook goes: the per-recording ``status_callback``
with its ``status_callback_method`` and ``status_callback_events`` (start
options, ``core.options``), or the device-wide webhook, and the wire format
(``[events] callback_format``, docs/configuration.md; the formats in the
README, "Delivery: what central servers see"). Three questions are answered
here, each in one place:

1. *Does this event fire this callback?* (``wanted``). Every recording event
   belongs to one of Twilio's callback events (``CALLBACK_EVENT_OF``, below),
   and a callback fires when that event is in its ``events``, for every format:
   Twilio's ``recordingStatusCallbackEvent`` semantics (Twilio's TwiML
   ``<Recording>`` reference, "Noun attributes, recordingStatusCallbackEvent";
   Twilio's Recording resource reference, "Create a Recording resource,
   recording_status_callback_event"). The format must also have a way to say
   the event, for that callback event (``SAYS``): Twilio has no paused status
   and says ``completed`` once; Sinch and Vonage only speak of a file.
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
    ``RecordingStatusCallback`` form fields (Twilio's Recording resource
    reference, "RecordingStatusCallback"; Twilio's TwiML ``<Recording>``
    reference, "recordingStatusCallback"): ``AccountSid`` = ``account_sid``
    of the device id (``AC`` and 32 hex digits, the same for a box always),
    ``CallSid`` = ``call_id``, ``RecordingSid`` = ``id``, ``RecordingUrl``,
    ``RecordingStatus`` (``in-progress``, ``completed``, ``absent``),
    ``RecordingDuration`` (whole seconds, only when ``completed``),
    ``RecordingChannels`` (1 or 2), ``RecordingStartTime`` (RFC 2822 in GMT, as
    the Recording resource's ``start_time``), ``RecordingSource`` (see
    ``TWILIO_SOURCES``), ``RecordingTrack``, and ``ErrorCode`` when ``absent``:
    a number from Twilio's error dictionary (``TWILIO_ERROR_CODES``).
    ``RecordingUrl`` is on every callback: the event's ``recording_url`` (the
    media URL without extension, which takes ``.mp3`` or ``.wav`` as Twilio's
    does), else its ``media_url``, else empty. ``completed`` goes out once per
    recording, when it finishes (``recording.finished``): where the upload put
    the file reaches a twilio-format receiver only through the native and MQTT
    ``recording.available`` and the API's ``uploads``.
``signalwire``
    The ``calling.call.record`` status callback JSON (SignalWire's SWML
    reference, ``record`` method, "StatusCallbacks", "Raw JSON example").
    ``params.state`` is the recording's state (``recording``, ``paused``,
    ``finished``, ``no_input``, ``error``), ``params.control_id`` and
    ``params.recording_id`` its id; ``duration`` and ``size`` only for
    ``finished``/``no_input``, ``start_time``/``end_time`` (Unix seconds) once
    it has ended, ``pause_behavior`` only when paused.
    ``params.record.audio.direction`` is one of the two SignalWire allows
    (``SIGNALWIRE_DIRECTIONS``): ``speak`` for the inbound track, ``listen``
    for outbound (the ``track`` start option), and ``speak`` for both tracks, the default
    direction of SignalWire's ``record``; ``stereo`` says whether the two tracks
    are apart (left = inbound = speak).
``sinch``
    The ``notify`` events ``recording_finished`` and ``recording_available``
    (Sinch's Voice guide "Recording calls", "Notification events"),
    ``callid`` = ``call_id``, and ``custom`` = the recording's ``id``, so the
    recordings of one call can be told apart (not in that guide: ``custom`` is
    the field of Sinch's Notify event for "notification-specific
    information"). The guide has no notification for a recording that failed
    or holds nothing, so an absent recording sends none.
``vonage``
    The record action's event webhook (Vonage's Voice API recording guide: "a
    webhook to the event_url [...] contains a URL where the recording file can
    be downloaded from"), in the fields and order of Vonage's record event: ``start_time``,
    ``recording_url`` (the ``media_url``), ``size``, ``recording_uuid``,
    ``end_time``, ``conversation_uuid``, ``timestamp`` (ISO 8601 in UTC, the
    times to the second, ``timestamp`` to the millisecond). The uuids are the
    box's ids in UUID form: ``recording_uuid`` is ``id`` and
    ``conversation_uuid`` is ``call_id`` without their two-letter prefix
    (``RE``/``CA`` + the 32 hex digits, dashes removed, gives them back).
    Vonage sends it when a recording with a file has ended; so does the box, at
    ``recording.finished``.

Durations in the Twilio and SignalWire formats are whole seconds rounded down,
as in SignalWire's example (15.5 s between ``start_time`` and ``end_time``,
``duration`` 15). ``params.url`` and Sinch's ``destination`` are the remote
location (``data.location``) for ``recording.available`` and the recording's
``media_url`` otherwise.

Signatures
----------
With a secret (``[events] signing_secret``), each request carries
``X-EdgeRecorder-Signature: t=<ts>,v1=<hex>`` (the scheme Stripe uses):
``<hex>`` is HMAC-SHA256 with the secret over ``f"{ts}."`` followed by the
body, or for GET by the raw query string (what follows ``?`` in the request
line). The timestamp is inside the MAC, so a receiver that rejects old
timestamps (``verify``, 5 minutes) cannot be fed a replayed request.
``X-EdgeRecorder-Event-Id`` carries the CloudEvent id in every format, so
receivers can drop the duplicates a retrying outbox sends. Every POST also
carries the Standard Webhooks headers ``webhook-id`` (the CloudEvent id, the
same on every retry), ``webhook-timestamp`` and ``webhook-signature``
(``standard_signature``): receivers built on a Standard Webhooks library verify
it unchanged, and ``X-EdgeRecorder-Signature`` stays for receivers written
against it until they move over.

Each vendor format also carries that vendor's own signature, made with the same
secret standing for the vendor's credential, so a central server's validation
code for that vendor takes it unchanged:

- ``twilio``: ``X-Twilio-Signature`` (``twilio_signature``), the secret as
  Twilio's auth token.
- ``signalwire``: ``X-SignalWire-Signature``, hex HMAC-SHA1 over the URL as
  requested followed by the raw body (empty for GET), and
  ``X-SignalWire-Sha256-Signature``, the same with SHA-256
  (``signalwire_signature``), the secret as SignalWire's signing key: what the
  JSON (RELAY/SWML) branch of SignalWire's validators checks.
- ``sinch``, POST only: ``x-timestamp`` (ISO 8601, UTC) and ``Authorization:
  Application <key>:<signature>``, Sinch's callback request signing
  (``sinch_signature``), the secret as Sinch's application secret: like
  Sinch, the box base64-decodes it; a secret that is not base64 is the key
  itself (give a Sinch validator base64 of it). ``<key>`` is ``deliver``'s
  ``application_key``, the device id unless given.
- ``vonage``: ``Authorization: Bearer <JWT>``, HS256 with the secret as
  Vonage's signature secret (``vonage_jwt``), whose claims are ``iat``,
  ``jti`` (unique per request), ``api_key`` (the same key as Sinch's) and
  ``payload_hash``: SHA-256 (hex) of the body, or for GET of the query
  parameters as a JSON object without whitespace, which is how Vonage tells
  receivers to check a webhook's payload (``vonage_payload_hash``).

Sinch's and Vonage's signatures go in ``Authorization``; a callback URL with
``user:password@`` keeps that header for its HTTP Basic, and then goes without
them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import math
import re
import time
import uuid
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

FORMATS = ("native", "twilio", "signalwire", "sinch", "vonage")
METHODS = ("POST", "GET")
DEFAULT_EVENTS = ("completed",)

SIGNATURE_HEADER = "X-EdgeRecorder-Signature"
#: Twilio's own signature, on twilio-format callbacks, so Twilio's RequestValidator takes them.
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
#: SignalWire's, on signalwire-format callbacks (SHA-1, and the SHA-256 its newer validators prefer).
SIGNALWIRE_SIGNATURE_HEADER = "X-SignalWire-Signature"
SIGNALWIRE_SHA256_SIGNATURE_HEADER = "X-SignalWire-Sha256-Signature"
#: Sinch's signed callbacks: the time that is signed, beside ``Authorization: Application <key>:<signature>``.
SINCH_TIMESTAMP_HEADER = "x-timestamp"
EVENT_ID_HEADER = "X-EdgeRecorder-Event-Id"
USER_AGENT = f"edge-recorder/{__version__}"
TOLERANCE = 300  # seconds a signature's timestamp may be away from the receiver's clock

# Which of Twilio's callback events each CloudEvent type belongs to. A paused
# recording is still in progress (Twilio's in-flight statuses, Twilio's
# Recording resource reference, "Update a Recording resource"); a recording
# that ended belongs to "completed" or "absent" by its status (``_ENDS``,
# below). Types not listed (dtmf.key, recording.deleted, device.*) fire no
# status callback.
CALLBACK_EVENT_OF = {
    "recording.started": "in-progress",
    "recording.paused": "in-progress",
    "recording.resumed": "in-progress",
    "recording.available": "completed",
}
# The ends: completed when the status says so, otherwise (absent: no input or
# nothing left after trimming; failed: an error) Twilio's "absent", which covers
# "a system error" too (Twilio's TwiML <Recording> reference,
# recordingStatusCallbackEvent).
_ENDS = {"recording.finished": "completed", "recording.no_input": "absent", "recording.error": "absent"}

# What each format can say, as (CloudEvent type, Twilio callback event) pairs:
# a pair missing from a format's set is never sent in that format, whatever the
# callback's events.
_IN_PROGRESS = {(kind, "in-progress") for kind in ("recording.started", "recording.paused", "recording.resumed")}
_COMPLETED = {("recording.finished", "completed"), ("recording.available", "completed")}
_ABSENT = {(kind, "absent") for kind in _ENDS}
_EVERY = frozenset(_IN_PROGRESS | _COMPLETED | _ABSENT)
SAYS: dict[str, frozenset[tuple[str, str]]] = {
    "native": _EVERY,
    # RecordingStatus has no "paused" (Twilio's TwiML <Recording> reference); "completed" is said once,
    # when the recording finishes.
    "twilio": _EVERY - {("recording.paused", "in-progress"), ("recording.available", "completed")},
    # calling.call.record has no "uploaded" state; its "finished" carries the url (SignalWire's SWML
    # record reference).
    "signalwire": _EVERY - {("recording.available", "completed")},
    # Only recording_finished and recording_available exist, and nothing for a failed recording (Sinch's
    # Voice guide "Recording calls").
    "sinch": frozenset(_COMPLETED),
    # Vonage's record event: a recording with a file has ended (Vonage's Voice API recording guide).
    "vonage": frozenset({("recording.finished", "completed")}),
}

# ErrorCode of an absent twilio-format recording, from Twilio's error dictionary
# (https://www.twilio.com/docs/api/errors). Twilio's "absent" covers a recording
# that is silent, one too short (nothing left after trimming) and "a system
# error" (Twilio's TwiML <Recording> reference, recordingStatusCallbackEvent);
# the box has all three.
TWILIO_ERROR_CODES = {
    "no_input": "16102",  # Warning 16102: Voice Recording: Unavailable because recording is silent
    "empty": "16101",  # Warning 16101: Voice Recording: Unavailable because duration is too short
    "failed": "12400",  # Error 12400: Internal Failure (no 161xx code covers a recording that failed)
}

# Our ``source`` as Twilio's RecordingSource (Twilio's Recording resource
# reference, Recording properties, "source"). A recording started on a call
# already going on, by a request or a person, is Twilio's "Post to Recording
# resource of an in-progress Call SID": StartCallRecordingAPI. ``auto``
# (``[call] auto_record``: every call recorded from when it is answered) is
# what ``<Dial record>`` does: DialVerb.
TWILIO_SOURCES = {
    "api": "StartCallRecordingAPI",
    "mqtt": "StartCallRecordingAPI",
    "cli": "StartCallRecordingAPI",
    "button": "StartCallRecordingAPI",
    "dtmf": "StartCallRecordingAPI",
    "auto": "DialVerb",
}

# Our track (the ``track`` start option) as SignalWire's audio direction: speak = inbound,
# listen = outbound. The callback knows only those two (SignalWire's SWML record
# reference: "Direction of the audio recorded: speak or listen"); record_call's
# "both" is not one of them, so both tracks are "speak", the default direction
# of SignalWire's record, and ``stereo`` tells whether the tracks are apart.
SIGNALWIRE_DIRECTIONS = {"inbound": "speak", "outbound": "listen", "both": "speak"}

_CONTENT_TYPES = {
    "native": "application/cloudevents+json; charset=utf-8",
    "twilio": "application/x-www-form-urlencoded",
    "signalwire": "application/json",
    "sinch": "application/json",
    "vonage": "application/json",
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
        # at all is Twilio's default, "completed" only (Twilio's TwiML <Recording> reference,
        # recordingStatusCallbackEvent).
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


def says(fmt: str, event: Mapping[str, Any]) -> bool:
    """Whether the format has a way to say this CloudEvent (``SAYS``).

    >>> finished = {"type": "recording.finished", "data": {"status": "absent"}}
    >>> says("twilio", finished), says("sinch", finished)
    (True, False)
    """
    return (event.get("type"), callback_event(event)) in SAYS[fmt]


def wanted(callback: Callback, event: Mapping[str, Any]) -> bool:
    """Whether this CloudEvent fires this callback.

    Twilio's ``recordingStatusCallbackEvent`` semantics for every format
    (Twilio's TwiML ``<Recording>`` reference): ``in-progress`` for started
    (and paused, resumed), ``completed`` for a finished recording with status
    ``completed`` and for ``recording.available``, ``absent`` for no input,
    nothing left after trimming, or an error. The format must have a way to say
    the event (``says``).
    """
    return says(callback.format, event) and callback_event(event) in callback.events


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


def signalwire_signature(url: str, body: bytes, secret: str, digest: Any = hashlib.sha1) -> str:
    """``X-SignalWire-Signature``: hex HMAC-SHA1 with the secret (SignalWire's signing key) over the URL
    as requested followed by the raw body (empty for GET); with ``digest=hashlib.sha256``,
    ``X-SignalWire-Sha256-Signature``. What SignalWire's validators check for JSON callbacks.

    >>> signalwire_signature("https://cc.example.com/cb", b'{"a":1}', "PSK_s3cret")
    '5479f4ae7a5b64bf8fee8c3403ee58ca2c07ed25'
    >>> signalwire_signature("https://cc.example.com/cb", b'{"a":1}', "PSK_s3cret", hashlib.sha256)[:16]
    'b10622d79451c899'
    """
    return hmac.new(secret.encode(), url.encode() + body, digest).hexdigest()


def sinch_signature(method: str, content_type: str, timestamp: str, path: str, body: bytes, secret: str) -> str:
    """The ``<signature>`` of Sinch's ``Authorization: Application <key>:<signature>``: base64 of
    HMAC-SHA256 over the method, base64 of the body's MD5, the content type, ``x-timestamp:<timestamp>``
    and the URL's path, one a line, keyed with the base64-decoded secret (Sinch's application secret;
    one that is not base64 is the key itself). Sinch's example ("Callback request signing"):

    >>> body = b'{"event":"ace","callid":"822aa4b7-05b4-4d83-87c7-1f835ee0b6f6_257","timestamp":"2014-09-24T10:59:41Z","version":1}'
    >>> sinch_signature("POST", "application/json", "2014-09-24T10:59:41Z", "/sinch/callback/ace", body, "BeIukql3pTKJ8RGL5zo0DA==")
    'Tg6fMyo8mj9pYfWQ9ssbx3Tc1BNC87IEygAfLbJqZb4='
    """
    content_md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
    text = "\n".join([method, content_md5, content_type, f"x-timestamp:{timestamp}", path])
    return base64.b64encode(hmac.new(_sinch_key(secret), text.encode(), hashlib.sha256).digest()).decode()


def vonage_payload_hash(body: bytes, query: str = "") -> str:
    """``payload_hash`` of a Vonage signed webhook: SHA-256 (hex) of the body, or, for a GET (no body), of
    its query parameters as a JSON object without whitespace, in their order, as Vonage tells receivers.

    >>> vonage_payload_hash(b'{"size":1}') == hashlib.sha256(b'{"size":1}').hexdigest()
    True
    >>> vonage_payload_hash(b"", "size=1&a=b") == hashlib.sha256(b'{"size":"1","a":"b"}').hexdigest()
    True
    """
    if not body and query:
        params = dict(parse_qsl(query, keep_blank_values=True))
        body = json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(body).hexdigest()


def vonage_jwt(payload_hash: str, secret: str, issued_at: int, jti: str, api_key: str) -> str:
    """The JWT of ``Authorization: Bearer <JWT>`` on a vonage-format callback: HS256 with the secret
    (Vonage's signature secret) over the claims ``iat``, ``jti``, ``api_key`` and ``payload_hash``.
    What Vonage's ``verify_signature`` (vonage-jwt, and the vonage SDK's ``Voice.verify_signature``)
    checks; the receiver then compares ``payload_hash`` with the body's.

    >>> vonage_jwt("ab" * 32, "s3cret", 1700000000, "jti-1", "pi-frontdesk").split(".")[2]
    '6EoCLXCXSmSblzj9MqgiPEW0Ro1UMbKQAiNsnS9Eb_g'
    """
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {"iat": issued_at, "jti": jti, "api_key": api_key, "payload_hash": payload_hash}
    signing_input = ".".join(_base64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
    mac = hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_base64url(mac)}"


def render(callback: Callback, event: Mapping[str, Any]) -> tuple[str, str, dict[str, str], bytes]:
    """The request for this callback: ``(method, url, headers, body)``.

    POST carries the body; GET carries the same fields in the query string
    (after any query the callback URL has) and an empty body. Raises
    ``ValueError`` for an event type the format cannot say (see ``wanted``).
    """
    kind = event.get("type")
    if callback.format != "native" and not says(callback.format, event):
        sayable = ", ".join(f"{name} ({belongs})" for name, belongs in sorted(SAYS[callback.format]))
        raise ValueError(f"{callback.format} callbacks cannot carry {kind!r} ({callback_event(event)}), only {sayable}")
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
    # A fragment is never sent: signed as it is not sent, a receiver's check (Twilio's, SignalWire's) would fail.
    return "POST", urlunsplit(urlsplit(callback.url)._replace(fragment="")), headers, body


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
    application_key: str = "",
    timeout: float = 10.0,
    session: requests.Session | None = None,
) -> int:
    """Send one callback and return the HTTP status (2xx).

    With a ``secret``, the request is signed (see "Signatures" above);
    ``application_key`` is the key a sinch-format signature names and the
    vonage JWT's ``api_key`` (the event's device id when empty).

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
            signed = _signatures(callback.format, method, prepared.url, body, event, secret, application_key)
            if "Authorization" in signed and "Authorization" in prepared.headers:
                # HTTP Basic from the URL's user:password@ (or .netrc): the receiver asked for it.
                signed = {k: v for k, v in signed.items() if k not in ("Authorization", SINCH_TIMESTAMP_HEADER)}
            prepared.headers.update(signed)
        settings = http.merge_environment_settings(prepared.url, {}, None, None, None)
        response = http.send(prepared, timeout=timeout, allow_redirects=False, **settings)
    except requests.Timeout as exc:
        raise DeliveryError(f"{method} {shown}: no answer within {timeout:g} s", permanent=False) from exc
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.InvalidSchema,
        requests.exceptions.MissingSchema,
    ) as exc:
        raise DeliveryError(f"{method} {shown}: unusable URL ({_reason(exc)})", permanent=True) from exc
    except requests.ConnectionError as exc:
        raise DeliveryError(f"{method} {shown}: cannot connect ({_reason(exc)})", permanent=False) from exc
    except requests.RequestException as exc:
        raise DeliveryError(f"{method} {shown}: {_reason(exc)}", permanent=False) from exc
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


def _signatures(
    fmt: str, method: str, url: str, body: bytes, event: Mapping[str, Any], secret: str, application_key: str
) -> dict[str, str]:
    """Every signature header of one request: ours, Standard Webhooks' and the format's vendor's."""
    stamp = int(time.time())
    query = urlsplit(url).query
    signed = query.encode("ascii") if method == "GET" else body
    headers = {SIGNATURE_HEADER: f"t={stamp},v1={sign(signed, secret, stamp)}"}
    if method == "POST":  # Standard Webhooks: what its libraries (standardwebhooks, svix...) verify
        webhook_id = str(event.get("id") or "")
        headers["webhook-id"] = webhook_id
        headers["webhook-timestamp"] = str(stamp)
        headers["webhook-signature"] = standard_signature(webhook_id, stamp, body, secret)
    key = application_key or _device_id(event)
    if fmt == "twilio":  # what Twilio's own RequestValidator checks
        params = parse_qsl(body.decode(), keep_blank_values=True) if method == "POST" and body else []
        headers[TWILIO_SIGNATURE_HEADER] = twilio_signature(url, params, secret)
    elif fmt == "signalwire":
        headers[SIGNALWIRE_SIGNATURE_HEADER] = signalwire_signature(url, body, secret)
        headers[SIGNALWIRE_SHA256_SIGNATURE_HEADER] = signalwire_signature(url, body, secret, hashlib.sha256)
    elif fmt == "sinch" and method == "POST":  # Sinch signs callback bodies; a GET has none
        moment = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        signature = sinch_signature(method, _CONTENT_TYPES[fmt], moment, urlsplit(url).path or "/", body, secret)
        headers[SINCH_TIMESTAMP_HEADER] = moment
        headers["Authorization"] = f"Application {key}:{signature}"
    elif fmt == "vonage":
        token = vonage_jwt(vonage_payload_hash(body, query), secret, stamp, uuid.uuid4().hex, key)
        headers["Authorization"] = f"Bearer {token}"
    return headers


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
        "RecordingUrl": str(data.get("recording_url") or data.get("media_url") or ""),
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
        failed = (
            data.get("status") == "failed" or data.get("state") == "error" or event.get("type") == "recording.error"
        )
        reason = "no_input" if data.get("state") == "no_input" else data.get("end_reason")
        fields["ErrorCode"] = twilio_error_code("failed" if failed else "absent", reason) or ""
    return fields


def twilio_error_code(status: str, end_reason: str | None) -> str | None:
    """The ErrorCode of Twilio's error dictionary for a recording that is ``absent`` or ``failed`` (``status``),
    by why it ended (``TWILIO_ERROR_CODES``); None for one that is not. The twilio-format callbacks and the
    Twilio-compatible API both say it.

    >>> twilio_error_code("absent", "no_input"), twilio_error_code("absent", "stop"), twilio_error_code("completed", "stop")
    ('16102', '16101', None)
    """
    if status not in ("absent", "failed"):
        return None
    if end_reason == "no_input":
        return TWILIO_ERROR_CODES["no_input"]
    if status == "failed":
        return TWILIO_ERROR_CODES["failed"]
    return TWILIO_ERROR_CODES["empty"]  # finished, with nothing in it (nothing left after trimming)


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
            "direction": SIGNALWIRE_DIRECTIONS.get(data.get("track") or "both", "speak"),
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
    payload["custom"] = data.get("id")
    return payload


def _vonage(event: Mapping[str, Any]) -> dict[str, Any]:
    data = event.get("data") or {}
    return {
        "start_time": _iso(data.get("start_time")),
        "recording_url": str(data.get("media_url") or ""),
        "size": int(data.get("size") or 0),
        "recording_uuid": _uuid(data.get("id")),
        "end_time": _iso(data.get("end_time")),
        "conversation_uuid": _uuid(data.get("call_id")),
        "timestamp": _iso(event.get("time"), milliseconds=True),
    }


_PAYLOADS = {"native": _native, "twilio": _twilio, "signalwire": _signalwire, "sinch": _sinch, "vonage": _vonage}


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


def _iso(moment: Any, milliseconds: bool = False) -> str:
    """RFC 3339 as Vonage writes it: ``2024-05-01T12:00:01Z``, or ``...:01.500Z`` with milliseconds."""
    if not moment:
        return ""
    when = datetime.fromisoformat(str(moment)).astimezone(UTC)
    fraction = f".{when.microsecond // 1000:03d}" if milliseconds else ""
    return when.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def _uuid(box_id: Any) -> str:
    """A box id (``RE``/``CA`` and 32 hex digits) in UUID form; anything else as it is."""
    text = str(box_id or "")
    try:
        return str(uuid.UUID(hex=text[2:])) if len(text) == 34 else text
    except ValueError:
        return text


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _sinch_key(secret: str) -> bytes:
    """The HMAC key of a Sinch signature: the secret base64-decoded, as Sinch's SDKs read an application
    secret, or its own bytes when it is not base64."""
    try:
        return base64.b64decode(secret)
    except (binascii.Error, ValueError):
        return secret.encode()


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


def _reason(exc: BaseException) -> str:
    """What went wrong, naming no URL: requests' own texts repeat the whole request URL, whose query may hold a
    secret of the callback URL's and, for GET, a media link that works without a token. The error is kept in
    the catalog and logged, so only the innermost cause is told, with any URL in it cut out.

    >>> _reason(ValueError("Max retries exceeded with url: /hook?token=s3cret (Caused by x)"))
    'ValueError: Max retries exceeded with <url> (Caused by x)'
    """
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host", "Network is unreachable"):
        if marker in text:
            return marker.lower()
    while exc.__context__ is not None and str(exc.__context__):  # requests nests urllib3's, and those the OS's
        exc = exc.__context__
    return f"{type(exc).__name__}: {_URL_IN_TEXT.sub('<url>', str(exc))}"


#: A URL, or the path and query requests and urllib3 quote after "url:", in an exception's text.
_URL_IN_TEXT = re.compile(r"url: \S+|\S+://\S+|/\S*\?\S+")


def _snippet(response: requests.Response) -> str:
    try:
        text = " ".join(response.text.split())
    except Exception:  # an undecodable body says nothing useful
        return ""
    return f": {text[:120]}" if text else ""
