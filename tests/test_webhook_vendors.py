"""Vendor-format callbacks as each vendor's own code takes them.

Each signature test posts through a real HTTP server on loopback and hands the
URL, headers and body it received to the vendor's own verification code, from
the vendor's package on PyPI (test dependencies in pyproject.toml):

- SignalWire: ``signalwire-sdk`` (``signalwire.core.security``): the ``X-SignalWire-Signature``
  (hex HMAC-SHA1 over URL + raw body) and ``X-SignalWire-Sha256-Signature`` its middleware prefers.
- Sinch: ``sinch`` (``SinchEvents.validate_authentication_header`` of its voice domain): the
  ``Authorization`` HMAC-SHA256 over method, Content-MD5, content type, ``x-timestamp`` and path.
- Vonage: ``vonage-jwt`` (``verify_signature``, what the ``vonage`` SDK's ``Voice.verify_signature``
  calls): the HS256 JWT in ``Authorization: Bearer``, whose ``payload_hash`` is then checked as
  Vonage's docs tell receivers to.

The rest checks what each format says, following the vendors' documents:
Twilio's error dictionary for ``ErrorCode``, SignalWire's two directions (its
SWML record reference), Sinch's notify events (its Voice guide "Recording
calls") and Vonage's record event (its Voice API recording guide and Vonage's
record webhook).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import pytest

from firmware import config
from firmware.delivery.errors import DeliveryError
from firmware.delivery.webhooks import Callback, deliver, render, wanted

from .test_webhooks import (
    CALL_ID,
    DEVICE,
    LOCATION,
    RATE,
    REC_ID,
    Received,
    Started,
    Track,
    _cloud,
    _recording,
    _send,
    events,
)
from .test_webhooks import receiver as _receiver

receiver = _receiver  # the fixture: a real HTTP server on loopback

# A SignalWire signing key, a Sinch application secret (base64, as Sinch issues them) and a
# Vonage signature secret all at once: the box signs every format with [events] signing_secret.
SECRET = "PSK_" + base64.b64encode(b"edge-recorder test signing key!!").decode()
SINCH_SECRET = "BeIukql3pTKJ8RGL5zo0DA=="  # Sinch's documentation example
SINCH_KEY = "669E367E-6BBA-48AB-AF15-266871C28135"


def _url(receiver, got: Received) -> str:
    """The URL as the box requested it: what SignalWire's validator is given."""
    base = receiver.url.rsplit("/hooks/", 1)[0]
    return base + got.path + ("?" + got.query if got.query else "")


# SignalWire: X-SignalWire-Signature, checked by signalwire-sdk.


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_signalwire_format_callback_passes_signalwire_s_validator(receiver, method):
    from signalwire.core.security.webhook_middleware import validate
    from signalwire.core.security.webhook_validator import (
        validate_webhook_signature,
        validate_webhook_signature_sha256,
    )

    callback = Callback(receiver.url + "?site=7", method, "signalwire")
    assert deliver(callback, events()["finished"], timeout=2.0, secret=SECRET) == 200
    got = receiver.last
    url, body = _url(receiver, got), got.body.decode()
    sha1 = got.headers["x-signalwire-signature"]
    sha256 = got.headers["x-signalwire-sha256-signature"]
    assert validate_webhook_signature(SECRET, sha1, url, body)
    assert validate_webhook_signature_sha256(SECRET, sha256, url, body)
    assert validate(method, url, got.headers, body, signing_key=SECRET) is None  # its middleware lets it in
    # What the signature holds: the URL (with its query) and the raw body.
    assert not validate_webhook_signature("another key", sha1, url, body)
    assert not validate_webhook_signature(SECRET, sha1, url.replace("site=7", "site=8"), body)
    if method == "POST":
        tampered = body.replace('"finished"', '"no_input"')
        assert tampered != body
        assert not validate_webhook_signature(SECRET, sha1, url, tampered)
        assert not validate_webhook_signature_sha256(SECRET, sha256, url, tampered)
        assert validate(method, url, got.headers, tampered, signing_key=SECRET) == (403, {}, "")


# Sinch: Authorization: Application <key>:<signature>, checked by the sinch SDK.


def _sinch_valid(got: Received, key: str, secret: str, body: bytes | None = None, path: str | None = None) -> bool:
    """Sinch's own check. Its voice domain validates the HMAC scheme under the name its Voice API v2
    gives it ("Service <key>:<signature>"); the Voice API v1 callbacks of Sinch's "Recording calls"
    carry the same key and signature as "Application <key>:<signature>" (Sinch's "Callback request
    signing"). The scheme word is not signed, so the header is handed over under the name the SDK
    reads."""
    from sinch.domains.voice.api.v2.sinch_events import SinchEvents

    scheme, _, credentials = got.headers["authorization"].partition(" ")
    assert scheme == "Application"
    headers = {**got.headers, "authorization": "Service " + credentials}
    return SinchEvents().validate_authentication_header(
        "POST", path or got.path, headers, got.body if body is None else body, key, secret
    )


def test_a_sinch_format_callback_passes_sinch_s_validator(receiver):
    event = events()["finished"]
    callback = Callback(receiver.url, "POST", "sinch")
    assert deliver(callback, event, timeout=2.0, secret=SINCH_SECRET, application_key=SINCH_KEY) == 200
    got = receiver.last
    assert got.headers["authorization"].startswith(f"Application {SINCH_KEY}:")
    stamp = datetime.strptime(got.headers["x-timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(stamp.timestamp() - time.time()) < 5  # ISO 8601 in UTC, as Sinch sends it
    assert _sinch_valid(got, SINCH_KEY, SINCH_SECRET)
    assert not _sinch_valid(got, SINCH_KEY, base64.b64encode(b"another secret").decode())
    assert not _sinch_valid(got, "another-application-key", SINCH_SECRET)
    assert not _sinch_valid(got, SINCH_KEY, SINCH_SECRET, body=got.body.replace(b"finished", b"availabl"))
    assert not _sinch_valid(got, SINCH_KEY, SINCH_SECRET, path="/hooks/other")


def test_sinch_s_application_key_is_the_device_id_unless_given(receiver):
    got = _send(receiver, "sinch", events()["finished"], secret=SINCH_SECRET)
    assert got.headers["authorization"].startswith(f"Application {DEVICE}:")
    assert _sinch_valid(got, DEVICE, SINCH_SECRET)


def test_a_secret_that_is_not_base64_signs_sinch_callbacks_as_its_own_bytes(receiver):
    """Sinch's SDK base64-decodes the application secret; a signing secret it cannot decode is the key
    itself, and the receiver gives the SDK base64 of it."""
    secret = "a plain signing secret"
    got = _send(receiver, "sinch", events()["finished"], secret=secret)
    assert _sinch_valid(got, DEVICE, base64.b64encode(secret.encode()).decode())


# Vonage: Authorization: Bearer <HS256 JWT>, checked by vonage-jwt, then its payload_hash.


def _bearer(got: Received) -> str:
    scheme, _, token = got.headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


def test_a_vonage_format_callback_carries_a_jwt_vonage_verifies(receiver):
    import jwt
    from vonage_jwt import verify_signature

    before = int(time.time())
    got = _send(receiver, "vonage", events()["finished"], secret=SECRET)
    token = _bearer(got)
    assert verify_signature(token, SECRET)
    assert not verify_signature(token, SECRET.replace("PSK_", "PSK-"))
    header, _, signature = token.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({"iat": before, "payload_hash": "0" * 64}).encode()).rstrip(b"=")
    assert not verify_signature(f"{header}.{forged.decode()}.{signature}", SECRET)
    # Then the payload, as Vonage's docs tell receivers: payload_hash is SHA-256 (hex) of the body.
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["payload_hash"] == hashlib.sha256(got.body).hexdigest()
    assert claims["payload_hash"] != hashlib.sha256(got.body.replace(b"992044", b"992045")).hexdigest()
    assert before <= claims["iat"] <= time.time() + 1
    assert claims["api_key"] == DEVICE and len(claims["jti"]) >= 32


def test_a_vonage_get_callback_hashes_its_query_parameters_as_vonage_does(receiver):
    """Vonage's receivers hash the query parameters of a GET as a JSON object without whitespace."""
    import jwt
    from vonage_jwt import verify_signature

    deliver(Callback(receiver.url + "?site=7", "GET", "vonage"), events()["finished"], timeout=2.0, secret=SECRET)
    got = receiver.last
    token = _bearer(got)
    assert verify_signature(token, SECRET)
    params = dict(parse_qsl(got.query, keep_blank_values=True))
    assert params["site"] == "7" and params["recording_uuid"]
    text = json.dumps(params, separators=(",", ":"), ensure_ascii=False)
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["payload_hash"] == hashlib.sha256(text.encode()).hexdigest()


def test_each_format_carries_its_own_vendor_signature_only(receiver):
    vendor = {
        "native": set(),
        "twilio": {"x-twilio-signature"},
        "signalwire": {"x-signalwire-signature", "x-signalwire-sha256-signature"},
        "sinch": {"authorization", "x-timestamp"},
        "vonage": {"authorization"},
    }
    every = set().union(*vendor.values())
    for fmt, expected in vendor.items():
        got = _send(receiver, fmt, events()["finished"], secret=SINCH_SECRET)
        assert every & set(got.headers) == expected, fmt
    for fmt in vendor:  # and nothing without a secret
        got = _send(receiver, fmt, events()["finished"])
        assert not every & set(got.headers), fmt


def test_credentials_in_the_url_keep_authorization_for_themselves(receiver):
    """HTTP Basic from user:password@ in the URL and a Sinch or Vonage signature share the header:
    the receiver asked for Basic, so it gets Basic."""
    url = receiver.url.replace("http://", "http://box:hunter2@")
    for fmt in ("sinch", "vonage"):
        deliver(Callback(url, "POST", fmt), events()["finished"], timeout=2.0, secret=SINCH_SECRET)
        assert receiver.last.headers["authorization"] == "Basic " + base64.b64encode(b"box:hunter2").decode()


# Twilio: what RecordingStatusCallback says.


def test_twilio_error_code_is_a_number_from_twilio_s_error_dictionary(receiver):
    every = events()
    codes = {
        "no_input": "16102",  # Voice Recording: Unavailable because recording is silent
        "finished_empty": "16101",  # Voice Recording: Unavailable because duration is too short
        "error": "12400",  # Internal Failure
    }
    for name, code in codes.items():
        form = _send(receiver, "twilio", every[name]).form()
        assert form["RecordingStatus"] == "absent" and form["ErrorCode"] == code, name


def test_twilio_recording_url_is_on_every_callback(receiver):
    every = events()
    base = "https://box-7.local:8443/recordings/" + REC_ID
    for name in ("started", "resumed", "finished", "no_input", "error", "finished_empty"):
        event = every[name]
        event["data"]["recording_url"] = base
        assert _send(receiver, "twilio", event).form()["RecordingUrl"] == base, name
    # Without recording_url, the media_url; without either, empty.
    assert _send(receiver, "twilio", events()["finished"]).form()["RecordingUrl"].startswith("file:///")
    assert _send(receiver, "twilio", events()["started"]).form()["RecordingUrl"] == ""


def test_twilio_says_completed_once_per_recording():
    """The completed callback goes out when the recording finishes; the upload's location reaches a
    twilio-format receiver through recording.available on MQTT and the API's uploads only."""
    callback = Callback("https://cc.example.com/cb", "POST", "twilio", ("in-progress", "completed", "absent"))
    fired = [name for name, event in events().items() if wanted(callback, event)]
    assert [n for n in fired if n in ("finished", "available")] == ["finished"]
    with pytest.raises(ValueError, match=r"twilio callbacks cannot carry 'recording\.available'"):
        render(callback, events()["available"])


# SignalWire: params.record.audio.direction.


@pytest.mark.parametrize("stereo", [False, True])
def test_signalwire_direction_is_speak_or_listen_as_seed_001_allows(receiver, stereo):
    from firmware.core.options import Channels

    cloud = _cloud()
    channels = Channels.DUAL if stereo else Channels.MONO
    expected = {"inbound": "speak", "outbound": "listen", "both": "speak"}
    for track, direction in expected.items():
        rec = _recording(track=Track(track), channels=channels)
        body = json.loads(_send(receiver, "signalwire", cloud.of(Started(rec, RATE, 0))).body)
        assert body["params"]["record"]["audio"] == {"format": "wav", "direction": direction, "stereo": stereo}


# Sinch: which recording, and nothing for one that is absent.


def test_sinch_notifications_say_which_recording_in_custom(receiver):
    every = events()
    finished = json.loads(_send(receiver, "sinch", every["finished"]).body)
    available = json.loads(_send(receiver, "sinch", every["available"]).body)
    assert finished == {
        "event": "notify",
        "callid": CALL_ID,
        "version": 1,
        "type": "recording_finished",
        "custom": REC_ID,
    }
    assert available["custom"] == REC_ID and available["destination"] == LOCATION
    # Three recordings of one call are three different notifications.
    seen = set()
    for n in range(3):
        event = events()["finished"]
        event["data"]["id"] = f"RE{n:032x}"
        seen.add(json.loads(_send(receiver, "sinch", event).body)["custom"])
    assert len(seen) == 3


def test_sinch_sends_nothing_for_an_absent_recording():
    callback = Callback("https://cc.example.com/cb", "POST", "sinch", ("in-progress", "completed", "absent"))
    every = events()
    assert {name for name, event in every.items() if wanted(callback, event)} == {"finished", "available"}
    for name in ("no_input", "error", "finished_empty"):
        with pytest.raises(ValueError, match="sinch callbacks cannot carry"):
            render(callback, every[name])
    with pytest.raises(DeliveryError) as caught:
        deliver(callback, every["no_input"])
    assert caught.value.permanent


# Vonage: the record event (Vonage's Voice API recording guide, "event webhook").


def test_vonage_callback_posts_the_record_event(receiver):
    event = events()["finished"]
    got = _send(receiver, "vonage", event)
    assert got.headers["content-type"] == "application/json"
    body = json.loads(got.body)
    assert body == {
        "start_time": "2024-05-01T12:00:01Z",
        "recording_url": event["data"]["media_url"],
        "size": 992_044,
        "recording_uuid": "01234567-89ab-cdef-0123-456789abcdef",
        "end_time": "2024-05-01T12:00:16Z",
        "conversation_uuid": "fedcba98-7654-3210-fedc-ba9876543210",
        "timestamp": "2024-05-01T12:00:16.500Z",
    }
    # Vonage's order, so a diff against its example reads cleanly.
    assert list(body) == [
        "start_time",
        "recording_url",
        "size",
        "recording_uuid",
        "end_time",
        "conversation_uuid",
        "timestamp",
    ]
    # The uuids are the box's ids without their prefix: RE/CA + the 32 hex digits.
    assert "RE" + body["recording_uuid"].replace("-", "") == REC_ID
    assert "CA" + body["conversation_uuid"].replace("-", "") == CALL_ID


def test_vonage_sends_only_a_recording_with_a_file():
    callback = Callback("https://cc.example.com/cb", "POST", "vonage", ("in-progress", "completed", "absent"))
    assert {name for name, event in events().items() if wanted(callback, event)} == {"finished"}


def test_vonage_is_a_callback_format_of_the_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[events]\ncallback_format = "vonage"\n')
    assert config.load(path).events["callback_format"] == "vonage"
    assert Callback.from_options("https://cc.example.com/cb", fmt="Vonage").format == "vonage"
