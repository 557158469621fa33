"""The local API against a hostile client on the shared LAN: slow senders are cut off, signed links cannot be
bent, and no input (a bad signature, deep JSON, a fuzzed query or body) gets a 5xx or leaves a traceback."""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from urllib.parse import quote, quote_from_bytes

import pyrage
import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from firmware.frontends.http import server as http_server

from .test_api import TOKEN, Running, _record

SHORT = 2.0  # the read timeout the slow-client tests run with, in seconds


def _tracebacks(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# -- slow clients ---------------------------------------------------------------------------------


@pytest.fixture
def quick(tmp_path, monkeypatch):
    """A box whose API gives clients SHORT seconds to send a request, and closes idle connections after as long."""
    monkeypatch.setattr(http_server, "READ_TIMEOUT", SHORT)
    running = Running(tmp_path)
    yield running
    running.stop()


def _closed_after(sock: socket.socket, started: float, trickle: bytes = b"", limit: float = 20.0) -> float:
    """Seconds from ``started`` until the server closes ``sock``, sending ``trickle`` a byte a second meanwhile."""
    sock.settimeout(1.0)
    sent = 0
    while time.monotonic() - started < limit:
        try:
            if sent < len(trickle):
                sock.sendall(trickle[sent : sent + 1])
                sent += 1
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
    raise AssertionError(f"the server kept the connection open for {limit} s")


@pytest.mark.parametrize(
    "opening",
    [b"GET /v1/reco", b"GET /v1/health HTTP/1.1\r\nHost: box\r\nX-Slow: "],
    ids=["partial request line", "headers a byte at a time"],
)
def test_a_client_that_trickles_its_request_is_cut_off_after_the_read_timeout(quick, opening):
    with socket.create_connection(("127.0.0.1", quick.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(opening)
        after = _closed_after(sock, started, trickle=b"a" * 30)
    assert SHORT - 0.5 <= after <= SHORT + 2.5, after
    assert requests.get(quick.url + "/v1/health", timeout=5).status_code == 200  # the API itself is fine


def test_a_connection_that_sends_nothing_or_idles_after_an_answer_is_closed(quick):
    with socket.create_connection(("127.0.0.1", quick.port), timeout=5) as silent:
        assert _closed_after(silent, time.monotonic()) <= SHORT + 2.5
    with socket.create_connection(("127.0.0.1", quick.port), timeout=5) as idle:
        idle.sendall(b"GET /v1/health HTTP/1.1\r\nHost: box\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        assert _closed_after(idle, time.monotonic()) <= SHORT + 2.5


def test_a_body_sent_slowly_gets_a_json_408_and_starts_nothing(quick):
    with socket.create_connection(("127.0.0.1", quick.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /v1/recordings HTTP/1.1\r\nHost: box\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        sock.settimeout(SHORT + 3)
        answer = sock.recv(65536)
        took = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and took <= SHORT + 2.5, (answer, took)
    assert json.loads(body)["code"] == "slow_body"
    assert quick.box.catalog.query("SELECT id FROM recordings") == []


def test_a_request_aiohttp_cannot_parse_is_refused_and_logged_in_one_line(api, caplog):
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: box\r\nX-Null: \x00\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.split(b" ")[1] == b"400", answer  # aiohttp's parser answers, in plain text: it never reaches the API
    said = [r for r in caplog.records if r.name.startswith("edge-recorder.api")]
    assert any("Invalid header value char" in r.getMessage() for r in said), [r.getMessage() for r in said]
    assert _tracebacks(caplog) == []


def test_the_read_timeout_is_bounded_for_slowloris():
    assert 5 <= http_server.READ_TIMEOUT <= 15


# -- signed links -----------------------------------------------------------------------------------


def _refused(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["status"] == status and body["code"] == code and body["message"], body
    return body


def test_a_signed_link_covers_its_path_and_every_query_parameter(api):
    done = _record(api, 0.5)
    link = done["media_url"]
    assert requests.get(link, timeout=5).status_code == 200
    expires = link.split("expires=")[1].split("&")[0]
    for bent in (
        link + "&RequestedChannels=1",  # a parameter added
        link + "&x=1",  # even one the route ignores
        link.replace(f"expires={expires}", f"expires={int(expires) + 3600}"),  # a longer life
        link.replace("?", "?expires=1&"),  # a second expires
    ):
        _refused(requests.get(bent, timeout=5), 403, "bad_link")
    row = api.box.catalog.get(done["id"])
    mono = api.box.api.media_url(row, {"RequestedChannels": "1"})
    assert "RequestedChannels=1" in mono and requests.get(mono, timeout=5).status_code == 200
    _refused(requests.get(mono.replace("RequestedChannels=1", "RequestedChannels=2"), timeout=5), 403, "bad_link")
    _refused(requests.get(mono.replace("RequestedChannels=1&", ""), timeout=5), 403, "bad_link")  # one taken away


@pytest.mark.parametrize(
    "query",
    [
        "expires={future}&signature=%C3%A9",  # not ASCII: hmac.compare_digest refuses such str
        "expires={future}&signature=%ED%A0%80",  # not even UTF-8
        "expires=%C2%B2&signature=00",  # a digit to str.isdigit, not to int()
        "expires=" + "9" * 5000 + "&signature=00",  # past int()'s digit limit
        "expires={future}&signature=00&signature=00",
        "expires=&signature=",
        "expires={future}",  # half a link
    ],
)
def test_a_malformed_signed_link_is_refused_as_a_bad_link(api, query):
    rid = _record(api, 0.2)["id"]
    url = f"{api.url}/v1/recordings/{rid}.wav?" + query.format(future=int(time.time()) + 600)
    _refused(requests.get(url, timeout=5), 403, "bad_link")


def test_a_link_with_its_signature_in_the_path_cannot_be_bent_or_outlive_its_expiry(api):
    one, two = _record(api, 0.3), _record(api, 0.3)
    row = api.box.catalog.get(one["id"])
    link = api.box.api.recording_url(row)
    expires, signature, _, rid = link.partition("/v1/links/")[2].split("/")
    assert rid == one["id"] and int(expires) > time.time() and len(signature) == 64
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    for bent in (
        link.replace(one["id"], two["id"]),  # another recording's id
        link.replace(signature, flipped),
        link.replace(signature, signature.upper()),
        link.replace(f"/{expires}/", f"/{int(expires) + 3600}/"),  # a longer life
        link.replace(f"/{expires}/", f"/0{expires}/"),  # the same time, written otherwise
        link.replace(f"/{expires}/", "/%C2%B2/"),  # a digit to str.isdigit, not to int()
    ):
        for suffix in ("", ".wav", ".mp3", ".mp3?RequestedChannels=1"):
            _refused(requests.get(bent + suffix, timeout=5), 403, "bad_link")
        assert requests.head(bent, timeout=5).status_code == 403  # not even whether it is there, or its size
    query_link = api.box.api.media_url(row)  # a query link's signature opens no path link, nor the other way
    query_signature = query_link.split("signature=")[1]
    _refused(requests.get(link.replace(signature, query_signature), timeout=5), 403, "bad_link")
    signer, clock = api.box.api.signer, api.box.api.signer.clock
    signer.clock = lambda: clock() + signer.lifetime + 1  # the link's lifetime has passed
    try:
        for suffix in ("", ".wav", ".mp3"):
            _refused(requests.get(link + suffix, timeout=5), 403, "bad_link")
    finally:
        signer.clock = clock
    assert requests.get(link + ".mp3", timeout=5).status_code == 200
    _refused(requests.get(link + ".ogg", timeout=5), 404, "not_found")
    _refused(requests.get(link + ".wav?RequestedChannels=3", timeout=5), 422, "invalid")
    api.session.delete(f"{api.url}/v1/recordings/{one['id']}", timeout=5)
    _refused(requests.get(link, timeout=5), 404, "deleted")  # a good link to a deleted recording


# -- bodies and media that used to answer 500 -----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 60000,
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b'{"sinch": {"name": "StartRecording", "options": {"x": ' + b"[" * 600 + b"]" * 600 + b"}}}",
    ],
    ids=["60000 open arrays", "5000 nested objects", "a deep vendor document"],
)
def test_deeply_nested_json_bodies_are_refused_with_400(api, caplog, body):
    live = api.post("/v1/recordings", {"format": "wav"}).json()["recording"]
    for path in ("/v1/recordings", f"/v1/recordings/{live['id']}"):
        response = api.session.post(api.url + path, data=body, timeout=10)
        assert "nested" in _refused(response, 400, "too_deep")["message"]
    too_large = api.session.post(api.url + "/v1/recordings", data=b"[" * 100000, timeout=10)
    _refused(too_large, 413, "too_large")  # past max_body_bytes, never parsed
    assert _tracebacks(caplog) == []


def test_the_media_of_a_recording_encrypted_at_rest_are_refused_with_409_saying_why(tmp_path, caplog):
    identity = pyrage.x25519.Identity.generate()
    running = Running(tmp_path, sections={"encryption": {"public_key": str(identity.to_public())}})
    try:
        done = _record(running, 1.5)
        assert done["encryption"] and done["status"] == "completed", done
        for suffix in (".wav", ".mp3", ".wav?RequestedChannels=1", ".mp3?RequestedChannels=1"):
            message = _refused(running.get(f"/v1/recordings/{done['id']}{suffix}"), 409, "encrypted")["message"]
            assert "encrypted at rest" in message and "private key" in message, message
        _refused(requests.get(done["media_url"], timeout=5), 409, "encrypted")
        assert running.get(f"/v1/recordings/{done['id']}.json").json()["id"] == done["id"]
    finally:
        running.stop()
    assert _tracebacks(caplog) == []


def test_an_unexpected_failure_answers_a_json_500_that_names_nothing_inside(api, monkeypatch, caplog):
    def broken():
        raise RuntimeError("/var/lib/edge-recorder/secret.key is unreadable")

    monkeypatch.setattr(api.box.control, "figures", broken)
    body = _refused(api.get("/metrics"), 500, "internal")
    assert "secret" not in json.dumps(body) and "RuntimeError" not in json.dumps(body)
    assert [r.getMessage() for r in _tracebacks(caplog)] == ["API GET /metrics failed"]  # the bug is logged


# -- fuzzing the routes that take input -------------------------------------------------------------


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    running = Running(tmp_path_factory.mktemp("box"), seconds=60.0)
    _record(running, 0.3)
    yield running
    running.stop()


def _stop_all(box: Running) -> None:
    """Stop what a fuzzed body started, through the API: finishing a recording is where bad text used to fail."""
    for rec in box.box.control.active():
        _answered(box.post(f"/v1/recordings/{rec['id']}", {"status": "stopped"}))  # 409 if it ended meanwhile
    assert box.thread.is_alive(), "the box stopped"


def _answered(response: requests.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    body = response.json() if response.status_code != 204 else {}
    if response.status_code >= 400:
        assert body["status"] == response.status_code and body["code"] and body["message"], body


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_SURROGATES = st.text(st.characters(exclude_categories=()), max_size=20)  # lone surrogates included
_QUERY_KEYS = [
    "page_size",
    "PageSize",
    "page_token",
    "date_created",
    "DateCreated",
    "DateCreated<",
    "DateCreated>",
    "status",
    "call_id",
    "call_sid",
    "include_soft_deleted",
    "expires",
    "signature",
]


def _token(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


_QUERY_VALUES = st.one_of(
    st.text(max_size=30).map(lambda t: quote(t, safe="")),
    st.binary(max_size=30).map(quote_from_bytes),  # not UTF-8, once decoded
    st.sampled_from(["", "0", "1", "1000", "1001", "-1", "true", "in-progress", "deleted", "<=", ">="]),
    st.integers().map(str),
    st.dates().map(str).map(lambda d: quote(d, safe="")),
    st.datetimes().map(lambda d: quote(d.isoformat(), safe="")),
    st.tuples(st.sampled_from(["", "<", "<=", ">", ">="]), st.dates()).map(lambda p: quote(f"{p[0]}{p[1]}", safe="")),
    _JSON.map(_token),  # a page_token of any shape
    st.tuples(st.text(max_size=30), st.integers()).map(_token),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    query=st.lists(
        st.tuples(st.sampled_from(_QUERY_KEYS) | st.text(min_size=1, max_size=8).map(quote), _QUERY_VALUES),
        max_size=5,
    )
)
@example(query=[("page_token", _token(["2026-01-01T00:00:00.000Z", 1 << 70]))])  # past SQLite's integers
@example(query=[("page_token", _token(["\ud800", 1]))])
@example(query=[("date_created", "9999-12-31")])  # its next day is past datetime's range
@example(query=[("DateCreated>", "0001-01-01T00:00:00%2B05:00")])  # so is this moment in UTC
@example(query=[("page_size", "%C2%B2")])  # a digit to isdigit(), not to int()
def test_any_query_of_the_list_route_gets_a_json_answer_below_500(box, query):
    url = box.url + "/v1/recordings?" + "&".join(f"{quote(k, safe='%<>')}={v}" for k, v in query)
    _answered(box.session.get(url, timeout=10))


_OPTION_NAMES = [
    "name",
    "format",
    "sample_rate",
    "channels",
    "track",
    "beep",
    "warning_tone_interval",
    "end_on_key",
    "end_on_silence",
    "input_sensitivity",
    "initial_timeout",
    "max_length",
    "trim",
    "pre_roll",
    "mp3_bitrate",
    "destination",
    "status_callback",
    "status_callback_events",
    "status_callback_method",
    "options",
    "ncco",
    "swml",
    "twiml",
    "sinch",
    "status",
    "Status",
    "pause_behavior",
    "PauseBehavior",
]
_BODIES = st.one_of(
    st.dictionaries(st.sampled_from(_OPTION_NAMES), _JSON | _SURROGATES, max_size=4).map(json.dumps),
    _JSON.map(json.dumps),
    st.sampled_from(["NaN", "Infinity", '{"max_length": NaN}', '{"pre_roll": -Infinity}', '{"a": 1e999}']),
    st.binary(max_size=64),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(body='{"status_callback": "http://\\ud800"}', target="")  # failed when the recording finished
@example(body='{"max_length": 1' + "0" * 400 + "}", target="")  # float() of it overflows
@given(body=_BODIES, target=st.sampled_from(["", "/current", "/{done}", "/{done}.wav", "/RE" + "0" * 32]))
def test_any_body_of_the_start_and_update_routes_gets_a_json_answer_below_500(box, body, target):
    done = box.box.catalog.query("SELECT id FROM recordings ORDER BY date_created LIMIT 1")[0]["id"]
    data = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
    try:
        _answered(box.session.post(box.url + "/v1/recordings" + target.format(done=done), data=data, timeout=10))
    finally:
        _stop_all(box)


# -- Twilio's routes: form bodies and Twilio's query parameters ------------------------------------------------------

_TWILIO_QUERY_KEYS = [
    "PageSize",
    "Page",
    "PageToken",
    "DateCreated",
    "DateCreated<",
    "DateCreated>",
    "CallSid",
    "ConferenceSid",
    "IncludeSoftDeleted",
]
_FORM_NAMES = [
    "RecordingStatusCallback",
    "RecordingStatusCallbackMethod",
    "RecordingStatusCallbackEvent",
    "Trim",
    "RecordingChannels",
    "RecordingTrack",
    "RecordingConfigurationId",
    "Status",
    "PauseBehavior",
]
_FORMS = st.one_of(
    st.lists(
        st.tuples(
            st.sampled_from(_FORM_NAMES) | st.text(max_size=8),
            st.sampled_from(["paused", "in-progress", "stopped", "skip", "mono", "dual", "GET", "completed", ""])
            | st.text(max_size=20),
        ),
        max_size=5,
    ).map(lambda pairs: "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs).encode()),
    st.binary(max_size=64),
    st.binary(max_size=30).map(lambda b: b"Status=" + quote_from_bytes(b).encode()),  # not UTF-8, once decoded
)


def _twilio_answered(response: requests.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        body = response.json()
        assert body["status"] == response.status_code and isinstance(body["code"], int) and body["message"], body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    query=st.lists(
        st.tuples(st.sampled_from(_TWILIO_QUERY_KEYS) | st.text(min_size=1, max_size=8).map(quote), _QUERY_VALUES),
        max_size=5,
    ),
    calls=st.booleans(),
)
def test_any_query_of_twilios_list_routes_gets_a_twilio_answer_below_500(box, query, calls):
    account = box.box.control.account_sid
    done = box.box.catalog.query("SELECT call_id FROM recordings ORDER BY date_created LIMIT 1")[0]
    where = f"Calls/{done['call_id']}/Recordings.json" if calls else "Recordings.json"
    url = f"{box.url}/2010-04-01/Accounts/{account}/{where}?" + "&".join(
        f"{quote(k, safe='%<>')}={v}" for k, v in query
    )
    _twilio_answered(box.session.get(url, timeout=10))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(
    body=b"Status=paused&PauseBehavior=%ED%A0%80",
    target="/Twilio.CURRENT.json",
    kind="application/x-www-form-urlencoded",
)
@given(
    body=_FORMS,
    target=st.sampled_from([".json", "", "/Twilio.CURRENT.json", "/{live}.json", "/{live}.wav", "/RE" + "0" * 32]),
    kind=st.sampled_from(["application/x-www-form-urlencoded", "application/json", "text/plain"]),
)
def test_any_form_to_twilios_create_and_update_gets_a_twilio_answer_below_500(box, body, target, kind):
    live = box.post("/v1/recordings", {"format": "wav"}).json()["recording"]
    url = f"{box.url}/2010-04-01/Accounts/{box.box.control.account_sid}/Calls/{live['call_id']}/Recordings"
    try:
        response = box.session.post(
            url + target.format(live=live["id"]), data=body, headers={"Content-Type": kind}, timeout=10
        )
        _twilio_answered(response)
    finally:
        _stop_all(box)
