"""The Twilio-compatible Recordings API (``/2010-04-01/...``) driven by Twilio's own Python SDK.

A central server written against Twilio keeps its code: ``twilio.rest.Client(account_sid, token)`` with
the box's AccountSid and one of its ``[http] tokens``, and an HTTP client that sends each request to the
box instead of api.twilio.com. Only the scheme, host and port of each URL change (``BoxHttpClient``),
never its path, so every path, form body, paging link and error below is the SDK's own.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from .http_servers import FlakyHttpServer
from .test_api import TOKEN, _record

RE_SID = re.compile(r"^RE[0-9a-f]{32}$")
RFC2822 = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000$")


class BoxHttpClient(TwilioHttpClient):
    """Twilio's HTTP client, sending to the box: each URL keeps its path and query, only the scheme, host and
    port become the box's. ``urls`` lists what was requested, to count pages."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base = urlsplit(base_url)
        self.session.trust_env = False  # no proxy from the environment between the SDK and the box
        self.urls: list[str] = []

    def request(self, method, url, *args, **kwargs):
        parts = urlsplit(url)
        url = urlunsplit(parts._replace(scheme=self.base.scheme, netloc=self.base.netloc))
        self.urls.append(f"{method} {url}")
        return super().request(method, url, *args, **kwargs)


@pytest.fixture
def twilio(api):
    """Twilio's ``Client`` for the running box, with its AccountSid and API token."""
    return Client(api.box.control.account_sid, TOKEN, http_client=BoxHttpClient(api.url))


def test_the_account_sid_is_ac_and_32_hex_digits_of_the_device_id(api):
    from firmware.delivery.webhooks import account_sid

    assert api.box.control.account_sid == account_sid("test-box")
    assert re.match(r"^AC[0-9a-f]{32}$", api.box.control.account_sid)


def test_the_sdk_lists_every_recording_page_by_page_with_twilio_fields(api, twilio):
    done = [_record(api, 0.3) for _ in range(3)]
    http = twilio.http_client
    listed = twilio.recordings.list(page_size=2)
    assert [r.sid for r in listed] == [d["id"] for d in reversed(done)]  # newest first, across two pages
    assert sum("/Recordings.json" in url for url in http.urls) == 2
    first = listed[-1]
    assert first.account_sid == twilio.account_sid and first.call_sid == done[0]["call_id"]
    assert first.status == "completed" and first.source == "StartCallRecordingAPI"
    assert first.channels == 1 and first.api_version == "2010-04-01" and first.conference_sid is None
    assert first.duration == str(int(done[0]["duration"]))  # a string of whole seconds, as Twilio's
    assert first.error_code is None and first.price is None
    assert first.uri == f"/2010-04-01/Accounts/{twilio.account_sid}/Recordings/{first.sid}.json"
    assert first.media_url == f"{api.url}/2010-04-01/Accounts/{twilio.account_sid}/Recordings/{first.sid}"
    for field in ("date_created", "date_updated", "start_time"):  # RFC 2822 on the wire, datetimes in the SDK
        assert isinstance(getattr(first, field), datetime), field
    started = datetime.fromisoformat(done[0]["start_time"]).replace(microsecond=0)
    assert abs(first.start_time - started).total_seconds() < 1

    fetched = twilio.recordings(first.sid).fetch()
    assert (fetched.sid, fetched.duration, fetched.start_time) == (first.sid, first.duration, first.start_time)
    assert [r.sid for r in twilio.calls(done[1]["call_id"]).recordings.list()] == [
        d["id"] for d in reversed(done) if d["call_id"] == done[1]["call_id"]
    ]
    of_call = twilio.calls(done[1]["call_id"]).recordings(done[1]["id"]).fetch()
    assert of_call.sid == done[1]["id"] and of_call.track == "both"  # the call's resource has the track
    assert [r.sid for r in twilio.recordings.list(call_sid=done[2]["call_id"], limit=1)] == [done[2]["id"]]
    assert twilio.recordings.list(date_created_before=datetime(2000, 1, 1, tzinfo=UTC)) == []
    assert len(twilio.recordings.list(date_created_after=datetime(2000, 1, 1, tzinfo=UTC))) == 3


def test_the_wire_format_is_twilios_paging_envelope_and_resource(api, twilio):
    done = _record(api, 0.3)
    page = requests.get(
        f"{api.url}/2010-04-01/Accounts/{twilio.account_sid}/Recordings.json?PageSize=1",
        auth=(twilio.account_sid, TOKEN),
        timeout=5,
    ).json()
    assert set(page) == {
        "recordings",
        "start",
        "end",
        "page",
        "page_size",
        "uri",
        "first_page_uri",
        "next_page_uri",
        "previous_page_uri",
    }
    assert (page["start"], page["end"], page["page"], page["page_size"]) == (0, 0, 0, 1)
    (rec,) = page["recordings"]
    assert rec["sid"] == done["id"] and isinstance(rec["duration"], str) and isinstance(rec["channels"], int)
    for field in ("date_created", "date_updated", "start_time"):
        assert RFC2822.match(rec[field]), rec[field]
        assert parsedate_to_datetime(rec[field]).tzinfo is not None
    assert rec["subresource_uris"] == {} and rec["error_code"] is None
    assert rec["encryption_details"] is None
    alone = requests.get(  # Page only counts the pages a PageToken finds
        f"{api.url}/2010-04-01/Accounts/{twilio.account_sid}/Recordings.json?Page=2",
        auth=(twilio.account_sid, TOKEN),
        timeout=5,
    )
    assert alone.status_code == 400 and alone.json()["code"] == 400 and "PageToken" in alone.json()["message"]


def test_the_sdk_starts_a_recording_on_the_call_with_twilios_options_and_its_status_callback(api, twilio):
    with FlakyHttpServer() as receiver:
        monitor = api.post("/v1/recordings", {"name": "monitor", "format": "wav", "sample_rate": 8000}).json()
        call = monitor["recording"]["call_id"]
        created = twilio.calls(call).recordings.create(
            recording_status_callback=receiver.url + "/recording",
            recording_status_callback_event=["in-progress", "completed"],
            recording_status_callback_method="POST",
            recording_channels="mono",
            recording_track="both",
            trim="do-not-trim",
        )
        assert RE_SID.match(created.sid) and created.call_sid == call and created.status == "in-progress"
        assert created.track == "both" and created.source == "StartCallRecordingAPI"
        options = api.box.catalog.get(created.sid)["options"]
        assert options["status_callback"] == receiver.url + "/recording"
        assert options["status_callback_events"] == ["in-progress", "completed"]
        assert options["status_callback_method"] == "POST"
        assert (options["track"], options["channels"], options["trim"]) == ("both", "mono", "do-not-trim")
        time.sleep(0.3)
        stopped = twilio.calls(call).recordings(created.sid).update(status="stopped")
        assert stopped.status == "stopped"  # an update answers Twilio's in-flight status
        assert twilio.recordings(created.sid).fetch().status == "completed"
        deadline = time.monotonic() + 15
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(receiver.received) >= 2, receiver.received
    with pytest.raises(TwilioRestException) as unknown:  # a call the box is not on
        twilio.calls("CA" + "0" * 32).recordings.create()
    assert unknown.value.status == 404 and "CA" + "0" * 32 in unknown.value.msg
    with pytest.raises(TwilioRestException) as bad:
        twilio.calls(call).recordings.create(recording_channels="quad")
    assert bad.value.status == 400 and "RecordingChannels" in bad.value.msg  # in Twilio's name for it


def test_the_sdk_pauses_resumes_and_stops_by_sid_and_by_twilio_current(api, twilio):
    first = api.post("/v1/recordings", {"format": "wav", "sample_rate": 8000}).json()["recording"]
    call = first["call_id"]
    second = twilio.calls(call).recordings.create()
    with pytest.raises(TwilioRestException) as two:  # two are active on the call: CURRENT is ambiguous
        twilio.calls(call).recordings("Twilio.CURRENT").update(status="paused")
    assert two.value.status == 409 and "2 are active" in two.value.msg
    assert twilio.calls(call).recordings(first["id"]).update(status="stopped").status == "stopped"
    current = twilio.calls(call).recordings("Twilio.CURRENT")
    paused = current.update(status="paused", pause_behavior="skip")
    assert paused.sid == second.sid and paused.status == "paused"
    assert api.get(f"/v1/recordings/{second.sid}").json()["status"] == "paused"
    with pytest.raises(TwilioRestException) as again:
        current.update(status="paused")
    assert again.value.status == 409
    assert current.update(status="in-progress").status == "in-progress"
    time.sleep(0.3)
    assert current.update(status="stopped").status == "stopped"
    with pytest.raises(TwilioRestException) as none:
        current.update(status="stopped")
    assert none.value.status == 409 and "0 are active" in none.value.msg
    with pytest.raises(TwilioRestException) as other_call:  # a recording of another call is not this call's
        twilio.calls("CA" + "1" * 32).recordings(second.sid).update(status="paused")
    assert other_call.value.status == 404
    with pytest.raises(TwilioRestException) as bad:
        twilio.calls(call).recordings(second.sid).update(status="exploded")
    assert bad.value.status == 400 and "paused, in-progress or stopped" in bad.value.msg


def test_the_sdk_deletes_softly_as_twilio_does(api, twilio):
    kept, gone, by_call = (_record(api, 0.3) for _ in range(3))
    media = Path(api.box.catalog.get(gone["id"])["path"])
    assert twilio.recordings(gone["id"]).delete() is True
    assert not media.exists()
    with pytest.raises(TwilioRestException) as fetch:
        twilio.recordings(gone["id"]).fetch()
    assert fetch.value.status == 404 and fetch.value.code == 20404
    soft = twilio.recordings(gone["id"]).fetch(include_soft_deleted=True)
    assert soft.status == "deleted" and soft.media_url is None
    assert gone["id"] not in [r.sid for r in twilio.recordings.list()]
    assert {r.sid: r.status for r in twilio.recordings.list(include_soft_deleted=True)}[gone["id"]] == "deleted"
    assert twilio.calls(by_call["call_id"]).recordings(by_call["id"]).delete() is True
    with pytest.raises(TwilioRestException) as twice:
        twilio.recordings(gone["id"]).delete()
    assert twice.value.status == 404
    live = api.post("/v1/recordings", {"format": "wav"}).json()["recording"]
    with pytest.raises(TwilioRestException) as active:  # only finished recordings can be deleted
        twilio.recordings(live["id"]).delete()
    assert active.value.status == 409 and "only finished recordings" in active.value.msg
    assert twilio.recordings(kept["id"]).fetch().status == "completed"


def test_media_by_appending_wav_or_mp3_to_the_uri_with_basic_auth_as_twilios_docs_do(api, twilio):
    done = _record(api, 1.0)
    stored = Path(api.box.catalog.get(done["id"])["path"]).read_bytes()
    rec = twilio.recordings(done["id"]).fetch()
    base = api.url + rec.uri.removesuffix(".json")
    auth = (twilio.account_sid, TOKEN)
    wav = requests.get(base + ".wav", auth=auth, timeout=5)
    assert wav.status_code == 200 and wav.content == stored and wav.headers["Content-Type"] == "audio/x-wav"
    bare = requests.get(base, auth=auth, timeout=5)  # without an extension: WAV, as Twilio's
    assert bare.status_code == 200 and bare.content == stored
    mp3 = requests.get(base + ".mp3", auth=auth, timeout=5)
    assert mp3.status_code == 200 and mp3.headers["Content-Type"] == "audio/mpeg"
    assert mp3.content[0] == 0xFF and mp3.content[1] & 0xE0 == 0xE0  # an MPEG frame sync
    assert requests.get(rec.media_url + ".mp3", auth=auth, timeout=5).content == mp3.content
    mono = requests.get(base + ".wav?RequestedChannels=1", auth=auth, timeout=5)
    assert mono.status_code == 200 and mono.content == stored
    # a mono recording: Not Found, as Twilio's reference says
    missing = requests.get(base + ".mp3?RequestedChannels=2", auth=auth, timeout=5)
    assert missing.status_code == 404 and missing.json()["code"] == 20404
    assert requests.get(base + ".wav", timeout=5).status_code == 401
    assert requests.get(base + ".ogg", auth=auth, timeout=5).status_code == 404


def test_errors_have_twilios_shape_so_the_sdk_raises_with_the_status(api, twilio):
    done = _record(api, 0.3)
    with pytest.raises(TwilioRestException) as unknown:
        twilio.recordings("RE" + "0" * 32).fetch()
    assert (unknown.value.status, unknown.value.code) == (404, 20404)
    wrong_token = Client(twilio.account_sid, "x" * 43, http_client=BoxHttpClient(api.url))
    with pytest.raises(TwilioRestException) as denied:
        wrong_token.recordings(done["id"]).fetch()
    assert (denied.value.status, denied.value.code) == (401, 20003)
    another_box = Client("AC" + "0" * 32, TOKEN, http_client=BoxHttpClient(api.url))
    with pytest.raises(TwilioRestException) as foreign:  # the token is good, the user is not this box's AccountSid
        another_box.recordings(done["id"]).fetch()
    assert foreign.value.status == 401
    url = f"{api.url}/2010-04-01/Accounts/AC{'0' * 32}/Recordings/{done['id']}.json"
    elsewhere = requests.get(url, auth=(twilio.account_sid, TOKEN), timeout=5)  # another account's path
    body = elsewhere.json()
    assert elsewhere.status_code == 404 and set(body) >= {"code", "message", "more_info", "status"}
    assert body["code"] == 20404 and body["status"] == 404 and body["more_info"].startswith("https://")
    assert "AC" + "0" * 32 in body["message"]
    bearer = requests.get(
        f"{api.url}/2010-04-01/Accounts/{twilio.account_sid}/Recordings.json",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert bearer.status_code == 200  # a bearer token works here as on /v1
    nothing = requests.get(f"{api.url}/2010-04-01/Accounts/{twilio.account_sid}/Recordings.json", timeout=5)
    assert nothing.status_code == 401 and nothing.headers["WWW-Authenticate"].startswith("Basic ")
    assert nothing.json()["code"] == 20003


def test_a_twilio_format_callback_from_the_box_validates_and_its_recording_url_takes_an_extension(tmp_path):
    """End to end, as a Twilio-built central server sees a box: every callback of a recording passes Twilio's
    ``RequestValidator``, carries a ``RecordingUrl``, and that URL with ``.mp3`` or ``.wav`` appended downloads
    the recording without credentials, as Twilio's media URLs do."""
    import io
    from urllib.parse import parse_qsl

    import soundfile as sf
    from twilio.request_validator import RequestValidator

    from .test_api import Running

    secret = "twilio-auth-token-of-the-central-server"
    with FlakyHttpServer() as hooks:
        events = {
            "callback_format": "twilio",
            "signing_secret": secret,
            "webhook": hooks.url + "/hook",
            "webhook_events": "in-progress completed",
        }
        box = Running(tmp_path, sections={"events": events})
        try:
            done = _record(box, 1.0)
            deadline = time.monotonic() + 15
            while len(hooks.received) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            got = [dict(parse_qsl(r.body.decode(), keep_blank_values=True)) for r in hooks.received]
            assert [g["RecordingStatus"] for g in got] == ["in-progress", "completed"], got
            validator = RequestValidator(secret)
            for received, fields in zip(hooks.received, got, strict=True):
                assert validator.validate(hooks.url + "/hook", fields, received.header("X-Twilio-Signature"))
                assert fields["RecordingSid"] == done["id"] and fields["RecordingUrl"], fields
            url = got[-1]["RecordingUrl"]
            plain = requests.Session()
            plain.trust_env = False  # no credentials, no proxy: the link alone
            early = plain.get(got[0]["RecordingUrl"] + ".mp3", timeout=10)  # the in-progress callback's link
            assert early.status_code == 200, "its recording has finished since: the same link serves it"
            mp3 = plain.get(url + ".mp3", timeout=10)
            assert mp3.status_code == 200 and mp3.headers["Content-Type"] == "audio/mpeg"
            wav = plain.get(url + ".wav", timeout=10)
            assert wav.status_code == 200
            audio, rate = sf.read(io.BytesIO(wav.content), dtype="int16")
            assert rate == 8000 and len(audio) == round(done["duration"] * rate)
            assert plain.get(url.replace(done["id"], "RE" + "0" * 32) + ".mp3", timeout=10).status_code == 403
        finally:
            box.stop()


def test_a_recordings_link_answers_404_until_it_has_media(api):
    """Every callback carries a RecordingUrl, the in-progress ones too: fetched before the recording has
    media, it answers 404 saying so, never a 5xx."""
    rec = api.post("/v1/recordings", {"format": "wav"}).json()["recording"]
    try:
        url = api.box.api.recording_url(api.box.catalog.get(rec["id"]))
        plain = requests.Session()
        plain.trust_env = False
        early = plain.get(url + ".mp3", timeout=10)
        assert early.status_code == 404 and early.json()["code"] == "no_media", early.text
    finally:
        api.post(f"/v1/recordings/{rec['id']}", {"status": "stopped"})


def test_an_absent_recording_has_the_error_code_its_callbacks_say(api, twilio):
    """Twilio gives an absent recording a number from its error dictionary; the box gives the one its
    twilio-format callbacks carry. The rows are set as the journal leaves a recording that ended with no
    input and one that failed (a real one of each needs a silent line and a failing card)."""
    from firmware.delivery.webhooks import TWILIO_ERROR_CODES

    silent, broken = _record(api, 0.3), _record(api, 0.3)
    api.box.catalog.update(silent["id"], status="absent", end_reason="no_input")
    api.box.catalog.update(broken["id"], status="failed", end_reason="error")
    assert twilio.recordings(silent["id"]).fetch().error_code == int(TWILIO_ERROR_CODES["no_input"])
    assert twilio.recordings(broken["id"]).fetch().error_code == int(TWILIO_ERROR_CODES["failed"])
