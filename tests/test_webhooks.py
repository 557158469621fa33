"""Status callbacks in the wire formats, sent to a real HTTP server on loopback.

Expected bodies follow the vendors' documents: Twilio's RecordingStatusCallback
parameters (Twilio's Recording resource reference, "RecordingStatusCallback";
Twilio's TwiML <Recording> reference, "recordingStatusCallback"), SignalWire's
calling.call.record example (SignalWire's SWML record reference, "Raw JSON
example") and Sinch's notification events (Sinch's Voice guide "Recording
calls", "Notification events"). The vendors' own signature checks and the
Vonage format are in test_webhook_vendors.py.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import itertools
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from firmware.cloudevents import CloudEvents, Timebase
from firmware.core import EndReason, Finished, Paused, Recording, RecordingOptions, Resumed, Started, State, Status
from firmware.core.options import Channels, Format, PauseBehavior, Track
from firmware.delivery.errors import DeliveryError
from firmware.delivery.webhooks import (
    FORMATS,
    SIGNATURE_HEADER,
    Callback,
    account_sid,
    deliver,
    render,
    sign,
    verify,
    wanted,
)
from firmware.media.writers import Written
from firmware.spool import Take

RATE = 16000
DEVICE = "pi-frontdesk"
SECRET = "whsec-test"
REC_ID = "RE" + "0123456789abcdef" * 2
CALL_ID = "CA" + "fedcba9876543210" * 2
LOCATION = "https://files.example.com/recordings/20240501120001_pi-frontdesk_" + CALL_ID + ".wav"


# Events made by the real CloudEvents mapper, so a change of its shape shows here.


def _recording(source: str = "button", track: Track = Track.BOTH, channels: Channels = Channels.DUAL) -> Recording:
    options = RecordingOptions(format=Format.WAV, channels=channels, track=track)
    return Recording(REC_ID, "front-desk", CALL_ID, source, options, start=RATE, first=RATE)


def _cloud() -> CloudEvents:
    return CloudEvents(DEVICE, Timebase(datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC), RATE))


def _ended(state: State, status: Status, reason: EndReason, seconds: float = 15.5, written: bool = True) -> dict:
    rec = _recording()
    frames = int(seconds * RATE)
    done = Finished(rec, RATE + frames, state, status, reason, frames, RATE)
    path = Path("/var/lib/edge-recorder/spool/front-desk.wav")
    media = Written(path, frames, 992_044, "ab" * 32) if written else None
    return _cloud().finished(Take(done, media))


def events() -> dict[str, dict]:
    rec = _recording()
    cloud = _cloud()
    finished = _ended(State.FINISHED, Status.COMPLETED, EndReason.STOP)
    available = cloud.envelope("recording.available", RATE * 20, {**finished["data"], "location": LOCATION})
    error = _ended(State.ERROR, Status.FAILED, EndReason.ERROR, seconds=3.0)
    error["data"].update(error_code="storage", error_message="No space left on device")
    return {
        "started": cloud.of(Started(rec, RATE, 0)),
        "paused": cloud.of(Paused(rec, RATE * 5, PauseBehavior.SKIP)),
        "resumed": cloud.of(Resumed(rec, RATE * 8)),
        "finished": finished,
        "finished_empty": _ended(State.FINISHED, Status.ABSENT, EndReason.STOP, seconds=0.0, written=False),
        "no_input": _ended(State.NO_INPUT, Status.ABSENT, EndReason.NO_INPUT, seconds=5.0, written=False),
        "error": error,
        "available": available,
        "dtmf": cloud.envelope("dtmf.key", RATE * 3, {"key": "5", "track": "inbound", "start": 3.0, "end": 3.08}),
    }


# A real HTTP server on loopback that records what it receives.


@dataclass
class Received:
    method: str
    path: str
    query: str  # raw, as in the request line
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, str]:
        text = self.body.decode("ascii") if self.method == "POST" else self.query
        return dict(parse_qsl(text, keep_blank_values=True))


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 200
        self.headers: dict[str, str] = {}
        self.stall = False
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.handle(self)

            do_GET = do_POST

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/recording"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        parts = urlsplit(request.path)
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.received.append(Received(request.command, parts.path, parts.query, headers, body))
        if self.stall:
            self.release.wait(5)
            return
        request.send_response(self.status)
        for key, value in self.headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", "2")
        request.end_headers()
        request.wfile.write(b"ok")

    @property
    def last(self) -> Received:
        assert self.received, "the server received nothing"
        return self.received[-1]


@pytest.fixture
def receiver():
    running = Receiver()
    running.thread.start()
    yield running
    running.release.set()
    running.server.shutdown()
    running.server.server_close()


def _send(receiver: Receiver, fmt: str, event: dict, method: str = "POST", **kwargs) -> Received:
    status = deliver(Callback(receiver.url, method, fmt), event, timeout=2.0, **kwargs)
    assert status == 200
    return receiver.last


# Each format's body for a finished recording.


def test_native_callback_posts_the_cloudevent_itself(receiver):
    event = events()["finished"]
    got = _send(receiver, "native", event)
    assert got.method == "POST" and got.path == "/hooks/recording"
    assert got.headers["content-type"] == "application/cloudevents+json; charset=utf-8"
    assert json.loads(got.body) == event
    assert got.headers["x-edgerecorder-event-id"] == event["id"]
    assert got.headers["user-agent"].startswith("edge-recorder/")


def test_twilio_callback_posts_the_recording_status_callback_form_fields(receiver):
    event = events()["finished"]
    got = _send(receiver, "twilio", event)
    assert got.headers["content-type"] == "application/x-www-form-urlencoded"
    assert got.form() == {
        "AccountSid": account_sid(DEVICE),
        "CallSid": CALL_ID,
        "RecordingSid": REC_ID,
        "RecordingUrl": event["data"]["media_url"],
        "RecordingStatus": "completed",
        "RecordingDuration": "15",
        "RecordingChannels": "2",
        "RecordingStartTime": "Wed, 01 May 2024 12:00:01 +0000",
        "RecordingSource": "StartCallRecordingAPI",
        "RecordingTrack": "both",
    }
    assert event["data"]["media_url"].startswith("file:///")
    assert re.fullmatch(r"AC[0-9a-f]{32}", got.form()["AccountSid"])  # the shape Twilio's SDK and servers expect


def test_twilio_recording_source_says_how_the_recording_was_started(receiver):
    cloud = _cloud()
    expected = {
        "api": "StartCallRecordingAPI",
        "mqtt": "StartCallRecordingAPI",
        "cli": "StartCallRecordingAPI",
        "button": "StartCallRecordingAPI",
        "dtmf": "StartCallRecordingAPI",
        "auto": "DialVerb",
    }
    for source, twilio in expected.items():
        event = cloud.of(Started(_recording(source), RATE, 0))
        _send(receiver, "twilio", event)
        assert receiver.last.form()["RecordingSource"] == twilio, source


def test_twilio_in_progress_has_no_duration_and_absent_has_an_error_code(receiver):
    every = events()
    started = _send(receiver, "twilio", every["started"]).form()
    assert started["RecordingStatus"] == "in-progress"
    assert "RecordingDuration" not in started and "ErrorCode" not in started
    assert started["RecordingUrl"] == ""
    no_input = _send(receiver, "twilio", every["no_input"]).form()
    assert no_input["RecordingStatus"] == "absent" and no_input["ErrorCode"].isdigit()
    assert "RecordingDuration" not in no_input
    failed = _send(receiver, "twilio", every["error"]).form()
    assert failed["RecordingStatus"] == "absent" and failed["ErrorCode"].isdigit()
    empty = _send(receiver, "twilio", every["finished_empty"]).form()
    assert empty["RecordingStatus"] == "absent"


def test_signalwire_callback_posts_calling_call_record_with_state_finished(receiver):
    event = events()["finished"]
    got = _send(receiver, "signalwire", event)
    assert got.headers["content-type"] == "application/json"
    body = json.loads(got.body)
    start = datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC).timestamp()
    assert body == {
        "event_type": "calling.call.record",
        "event_channel": f"edge-recorder/{DEVICE}",
        "timestamp": start + 15.5,
        "project_id": DEVICE,
        "space_id": DEVICE,
        "params": {
            "state": "finished",
            "control_id": REC_ID,
            "call_id": CALL_ID,
            "node_id": DEVICE,
            "url": event["data"]["media_url"],
            "duration": 15,
            "size": 992_044,
            "recording_id": REC_ID,
            "start_time": start,
            "end_time": start + 15.5,
            "record": {"audio": {"format": "wav", "direction": "speak", "stereo": True}},
        },
    }
    # The key order of SignalWire's example, so a diff against it reads cleanly.
    assert list(body) == ["event_type", "event_channel", "timestamp", "project_id", "space_id", "params"]


def test_signalwire_states_and_directions_follow_the_recording(receiver):
    every = events()
    paused = json.loads(_send(receiver, "signalwire", every["paused"]).body)["params"]
    assert paused["state"] == "paused" and paused["pause_behavior"] == "skip"
    assert "duration" not in paused and "size" not in paused and "end_time" not in paused
    no_input = json.loads(_send(receiver, "signalwire", every["no_input"]).body)["params"]
    assert no_input["state"] == "no_input" and no_input["duration"] == 5 and no_input["size"] == 0
    error = json.loads(_send(receiver, "signalwire", every["error"]).body)["params"]
    assert error["state"] == "error" and "duration" not in error
    cloud = _cloud()
    for track, direction in (("inbound", "speak"), ("outbound", "listen"), ("both", "speak")):
        rec = _recording(track=Track(track), channels=Channels.MONO)
        audio = json.loads(_send(receiver, "signalwire", cloud.of(Started(rec, RATE, 0))).body)["params"]["record"]
        assert audio == {"audio": {"format": "wav", "direction": direction, "stereo": False}}


def test_sinch_callbacks_are_recording_finished_and_recording_available(receiver):
    every = events()
    finished = _send(receiver, "sinch", every["finished"])
    assert finished.headers["content-type"] == "application/json"
    assert json.loads(finished.body) == {
        "event": "notify",
        "callid": CALL_ID,
        "version": 1,
        "type": "recording_finished",
        "custom": REC_ID,
    }
    available = _send(receiver, "sinch", every["available"])
    assert json.loads(available.body) == {
        "event": "notify",
        "callid": CALL_ID,
        "version": 1,
        "type": "recording_available",
        "destination": LOCATION,
        "custom": REC_ID,
    }


# GET and POST.


def test_twilio_get_puts_the_same_fields_in_the_query_string(receiver):
    event = events()["finished"]
    posted = _send(receiver, "twilio", event).form()
    got = _send(receiver, "twilio", event, method="GET")
    assert got.method == "GET" and got.body == b""
    assert "content-type" not in got.headers
    assert got.form() == posted


def test_get_keeps_the_callback_urls_own_query_and_flattens_json_formats(receiver):
    event = events()["finished"]
    callback = Callback(receiver.url + "?token=abc%2Fdef", "GET", "signalwire")
    assert deliver(callback, event, timeout=2.0) == 200
    query = dict(parse_qsl(receiver.last.query))
    assert query["token"] == "abc/def"
    assert query["event_type"] == "calling.call.record"
    assert query["params.state"] == "finished"
    assert query["params.duration"] == "15"
    assert query["params.record.audio.stereo"] == "true"
    assert query["params.record.audio.format"] == "wav"


def test_render_without_sending():
    method, url, headers, body = render(Callback("https://cc.example.com/cb", "GET", "sinch"), events()["finished"])
    assert method == "GET" and body == b""
    assert url == (
        f"https://cc.example.com/cb?event=notify&callid={CALL_ID}&version=1&type=recording_finished&custom={REC_ID}"
    )
    assert headers["X-EdgeRecorder-Event-Id"]


# Signatures.


def test_a_signed_post_verifies_with_the_secret_only(receiver):
    event = events()["finished"]
    got = _send(receiver, "twilio", event, secret=SECRET)
    header = got.headers[SIGNATURE_HEADER.lower()]
    stamp = int(header.split(",")[0].removeprefix("t="))
    assert abs(stamp - time.time()) < 5
    expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + got.body, hashlib.sha256).hexdigest()
    assert header == f"t={stamp},v1={expected}"
    assert verify(got.headers, got.body, SECRET)
    assert not verify(got.headers, got.body, "another secret")
    assert not verify(got.headers, got.body.replace(b"completed", b"absent"), SECRET)


def test_a_signed_get_signs_the_query_string(receiver):
    got = _send(receiver, "native", events()["finished"], method="GET", secret=SECRET)
    assert got.body == b""
    assert verify(got.headers, got.query, SECRET)
    assert not verify(got.headers, got.query.replace("finished", "no_input"), SECRET)


def test_a_stale_or_future_signature_is_refused():
    body = b'{"type":"recording.finished"}'
    signed_at = 1_700_000_000
    headers = {SIGNATURE_HEADER: f"t={signed_at},v1={sign(body, SECRET, signed_at)}"}
    assert verify(headers, body, SECRET, now=signed_at + 299)
    assert not verify(headers, body, SECRET, now=signed_at + 301)
    assert not verify(headers, body, SECRET, now=signed_at - 301)
    assert verify(headers, body, SECRET, tolerance=600, now=signed_at + 599)


def test_a_missing_or_malformed_signature_is_refused():
    body = b"{}"
    now = 1_700_000_000
    good = sign(body, SECRET, now)
    assert not verify({}, body, SECRET, now=now)
    assert not verify({SIGNATURE_HEADER: good}, body, SECRET, now=now)
    assert not verify({SIGNATURE_HEADER: f"v1={good}"}, body, SECRET, now=now)
    assert not verify({SIGNATURE_HEADER: f"t={now}"}, body, SECRET, now=now)
    assert not verify({SIGNATURE_HEADER: f"t={now},v1=é"}, body, SECRET, now=now)
    assert not verify({SIGNATURE_HEADER: f"t={now},v1={good}"}, body, "", now=now)
    # A second v1, as while a secret is rotated.
    assert verify({SIGNATURE_HEADER: f"t={now},v1={'0' * 64},v1={good}"}, body, SECRET, now=now)


def test_without_a_secret_nothing_is_signed(receiver):
    got = _send(receiver, "native", events()["finished"])
    assert SIGNATURE_HEADER.lower() not in got.headers


# Which events fire which callbacks.

# The Twilio callback event each test event belongs to (Twilio's TwiML <Recording> reference,
# recordingStatusCallbackEvent).
BELONGS = {
    "started": "in-progress",
    "paused": "in-progress",
    "resumed": "in-progress",
    "finished": "completed",
    "finished_empty": "absent",
    "no_input": "absent",
    "error": "absent",
    "available": "completed",
    "dtmf": None,
}
# What each format can say at all: Twilio has no paused status and says completed once, when the
# recording finishes; SignalWire has no uploaded state; Sinch and Vonage only speak of a file.
SAYS = {
    "native": set(BELONGS) - {"dtmf"},
    "twilio": set(BELONGS) - {"dtmf", "paused", "available"},
    "signalwire": set(BELONGS) - {"dtmf", "available"},
    "sinch": {"finished", "available"},
    "vonage": {"finished"},
}
SUBSETS = [c for n in (1, 2, 3) for c in itertools.combinations(("in-progress", "completed", "absent"), n)]


@pytest.mark.parametrize("chosen", SUBSETS, ids=" ".join)
@pytest.mark.parametrize("fmt", FORMATS)
def test_wanted_follows_status_callback_events(fmt, chosen):
    callback = Callback("https://cc.example.com/cb", "POST", fmt, chosen)
    for name, event in events().items():
        expected = name in SAYS[fmt] and BELONGS[name] in chosen
        assert wanted(callback, event) is expected, (fmt, chosen, name)


def test_by_default_only_completed_fires():
    callback = Callback.from_options("https://cc.example.com/cb")
    assert callback.events == ("completed",)
    fired = {name for name, event in events().items() if wanted(callback, event)}
    assert fired == {"finished", "available"}


def test_a_format_that_cannot_say_an_event_refuses_to_render_it():
    with pytest.raises(ValueError, match=r"sinch callbacks cannot carry 'recording\.started'"):
        render(Callback("https://cc.example.com/cb", format="sinch"), events()["started"])
    with pytest.raises(DeliveryError) as caught:
        deliver(Callback("https://cc.example.com/cb", format="twilio"), events()["paused"])
    assert caught.value.permanent


# Failures: what the outbox is told.


@pytest.mark.parametrize("status", [404, 410, 415, 400, 401])
def test_a_client_error_is_permanent(receiver, status):
    receiver.status = status
    with pytest.raises(DeliveryError) as caught:
        deliver(Callback(receiver.url), events()["finished"], timeout=2.0)
    assert caught.value.permanent and caught.value.status == status
    assert receiver.url in str(caught.value) and str(status) in str(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_a_server_error_timeout_or_rate_limit_is_transient(receiver, status):
    receiver.status = status
    with pytest.raises(DeliveryError) as caught:
        deliver(Callback(receiver.url, "GET", "twilio"), events()["finished"], timeout=2.0)
    assert not caught.value.permanent and caught.value.status == status
    assert receiver.url in str(caught.value) and f"HTTP {status}" in str(caught.value)


def test_a_redirect_is_not_followed(receiver):
    receiver.status = 301
    receiver.headers = {"Location": "https://cc.example.com/new"}
    with pytest.raises(DeliveryError) as caught:
        deliver(Callback(receiver.url), events()["finished"], timeout=2.0)
    assert caught.value.permanent and caught.value.status == 301
    assert "https://cc.example.com/new" in str(caught.value)
    assert len(receiver.received) == 1


def test_a_stalled_server_is_transient_within_the_timeout(receiver):
    receiver.stall = True
    began = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        deliver(Callback(receiver.url), events()["finished"], timeout=1.0)
    elapsed = time.monotonic() - began
    assert not caught.value.permanent and caught.value.status is None
    assert 0.9 <= elapsed < 2.5
    assert receiver.url in str(caught.value) and "no answer within 1 s" in str(caught.value)


def test_a_refused_connection_is_transient():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hooks"
    with pytest.raises(DeliveryError) as caught:
        deliver(Callback(url), events()["finished"], timeout=1.0)
    assert not caught.value.permanent and caught.value.status is None
    assert url in str(caught.value) and "cannot connect" in str(caught.value)


def test_a_password_in_the_url_is_not_in_the_error(receiver):
    receiver.status = 503
    url = receiver.url.replace("http://", "http://box:hunter2@")
    with pytest.raises(DeliveryError) as caught:
        deliver(Callback(url), events()["finished"], timeout=2.0)
    assert "hunter2" not in str(caught.value) and "http://***@" in str(caught.value)
    assert receiver.last.headers["authorization"].startswith("Basic ")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_failed_callback_names_neither_its_secret_query_nor_the_media_link(receiver, method):
    """TLS spoken to a plain-HTTP server fails inside requests, whose text repeats the request's URL: its
    ``token`` and, for GET, the RecordingUrl that opens the recording. The error (logged, and kept in the
    catalog with every retry) says what failed and nothing of either."""
    url = receiver.url.replace("http://", "https://") + "?token=SUPERSECRET"
    event = events()["finished"]
    event["data"]["recording_url"] = "http://box/v1/links/1999999999/" + "ab" * 32 + "/recordings/" + REC_ID
    with pytest.raises(DeliveryError) as caught:
        deliver(Callback(url, method, "twilio"), event, timeout=2.0)
    text = str(caught.value)
    assert "SUPERSECRET" not in text and "abab" not in text and "links" not in text, text
    assert "token=***" in text and "SSL" in text, text


# Validation.


def test_from_options_takes_values_as_users_write_them():
    callback = Callback.from_options("https://cc.example.com/cb", "get", "in-progress, absent absent", "Twilio")
    assert callback == Callback("https://cc.example.com/cb", "GET", "twilio", ("in-progress", "absent"))
    assert Callback.from_options("http://10.0.0.5:8080/cb", None, [], None).events == ("completed",)


def test_a_callback_survives_the_outboxs_json():
    callback = Callback("https://cc.example.com/cb", "GET", "sinch", ("in-progress", "absent"))
    stored = json.loads(json.dumps(dataclasses.asdict(callback)))
    assert Callback(**stored) == callback
    assert Callback("https://cc.example.com/cb", events=()).events == ("completed",)


@pytest.mark.parametrize(
    ("args", "field", "allowed"),
    [
        (("ftp://cc.example.com/cb",), "status_callback", "http:// or https://"),
        (("cc.example.com/cb",), "status_callback", "http:// or https://"),
        (("https:///cb",), "status_callback", "http:// or https://"),
        (("https://cc.example.com:port/cb",), "status_callback", "http:// or https://"),
        (("https://cc.example.com/a b",), "status_callback", "http:// or https://"),
        (("https://cc.example.com/cb", "PUT"), "status_callback_method", "POST or GET"),
        (("https://cc.example.com/cb", "POST", "started"), "status_callback_events", "in-progress, completed, absent"),
        (("https://cc.example.com/cb", "POST", 5), "status_callback_events", "in-progress, completed, absent"),
        (("https://cc.example.com/cb", "POST", None, "xml"), "callback_format", "native, twilio, signalwire, sinch"),
    ],
)
def test_a_bad_callback_names_the_field_and_what_is_allowed(args, field, allowed):
    with pytest.raises(ValueError) as caught:
        Callback.from_options(*args)
    message = str(caught.value)
    assert message.startswith(f"{field}: ") and allowed in message


# Twilio's own signature, checked by Twilio's own validator (the twilio package's RequestValidator).


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_a_twilio_format_callback_passes_twilio_s_request_validator(receiver, method):
    from twilio.request_validator import RequestValidator

    secret = "c0ffee" * 6
    event = events()["finished"]
    # the fragment is not sent, so it cannot be signed either
    callback = Callback(receiver.url + "?site=7&desk=front#desk", method, "twilio")
    assert deliver(callback, event, timeout=2.0, secret=secret) == 200
    got = receiver.last
    url = receiver.url.rsplit("/hooks/", 1)[0] + got.path + ("?" + got.query if got.query else "")
    params = dict(parse_qsl(got.body.decode(), keep_blank_values=True)) if method == "POST" else {}
    validator = RequestValidator(secret)
    assert validator.validate(url, params, got.headers["x-twilio-signature"])
    assert not RequestValidator("another token").validate(url, params, got.headers["x-twilio-signature"])
    if method == "POST":  # a field changed on the way is caught
        assert not validator.validate(url, {**params, "RecordingStatus": "absent"}, got.headers["x-twilio-signature"])


def test_other_formats_carry_no_twilio_signature(receiver):
    for fmt in ("native", "signalwire", "sinch", "vonage"):
        deliver(Callback(receiver.url, "POST", fmt), events()["finished"], timeout=2.0, secret="s" * 32)
        assert "x-twilio-signature" not in receiver.last.headers


# The Standard Webhooks signature, checked by the specification's own library (standardwebhooks on PyPI).


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("secret", ["a plain signing secret", "whsec_" + base64.b64encode(b"k" * 24).decode()])
def test_every_post_callback_passes_a_standard_webhooks_verifier(receiver, fmt, secret):
    from standardwebhooks import Webhook, WebhookVerificationError

    event = events()["finished"]
    assert deliver(Callback(receiver.url, "POST", fmt), event, timeout=2.0, secret=secret) == 200
    got = receiver.last
    whsecret = secret if secret.startswith("whsec_") else "whsec_" + base64.b64encode(secret.encode()).decode()
    Webhook(whsecret).verify(got.body, got.headers, json_parse=False)  # raises when it does not verify
    assert got.headers["webhook-id"] == event["id"]
    with pytest.raises(WebhookVerificationError):
        Webhook(whsecret).verify(got.body + b" ", got.headers, json_parse=False)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"another").decode()).verify(got.body, got.headers, json_parse=False)


def test_a_whsec_secret_that_is_not_base64_still_signs_every_callback(receiver):
    """The text is then the key: a typo in the secret must not stop the box's callbacks."""
    from standardwebhooks import Webhook

    assert deliver(Callback(receiver.url), events()["finished"], timeout=2.0, secret="whsec_a") == 200
    got = receiver.last
    Webhook(b"whsec_a").verify(got.body, got.headers, json_parse=False)  # bytes: the key as it is
