"""Delivery through the running box: status callbacks, the bounded outbox, retention, Home Assistant."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import pytest

from firmware import __version__, journal
from firmware import config as cfg
from firmware.catalog import Catalog, OutboxItem
from firmware.core.options import CALLBACK_FORMATS
from firmware.delivery import retention, webhooks
from firmware.delivery.outbox import Outbox
from firmware.delivery.service import Delivery
from firmware.delivery.webhooks import verify

from .daemon_run import Box, counter_signal

RATE = 8000


class Hooks:
    """A central server's callback endpoint on loopback: answers ``status`` and keeps what came."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[tuple[str, str, dict, bytes]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hooks.requests.append(("POST", self.path, dict(self.headers), body))
                self.send_response(hooks.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def hooks():
    server = Hooks()
    yield server
    server.close()


def _wait(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_status_callbacks_are_signed_and_in_the_chosen_format(tmp_path, hooks):
    box = Box.make(
        tmp_path,
        counter_signal(6.0),
        RATE,
        events={"webhook": hooks.url + "/device", "callback_format": "twilio", "signing_secret": "s3cret"},
        recording={"status_callback": hooks.url + "/per-recording", "status_callback_events": "in-progress completed"},
        sim={"scenario": "1=button, 3=button", "pace": "realtime"},
    )
    result = box.run()
    assert result.code == 0, result.stderr
    assert _wait(lambda: len(hooks.requests) >= 3), hooks.requests
    [row] = box.rows()
    by_path = {}
    for method, path, headers, body in hooks.requests:
        assert method == "POST"
        assert verify(headers, body, "s3cret"), "signature does not verify"
        assert not verify(headers, body, "wrong"), "a wrong secret must not verify"
        by_path.setdefault(path, []).append(dict(parse_qsl(body.decode())))
    assert [f["RecordingStatus"] for f in by_path["/per-recording"]] == ["in-progress", "completed"]
    assert [f["RecordingStatus"] for f in by_path["/device"]] == ["completed"]
    done = by_path["/device"][0]
    assert done["RecordingSid"] == row["id"] and done["CallSid"] == row["call_id"]
    assert done["RecordingDuration"] == str(int(row["duration"]))


def test_the_callback_formats_a_start_option_names_are_the_formats_webhooks_renders():
    # core declares them (it may not import delivery); webhooks renders each one.
    assert webhooks.FORMATS == CALLBACK_FORMATS


#: A document of each dialect whose callbacks go to ``url``. A Sinch document names none: its notify events go
#: to the box's [recording] status_callback. TwiML's default is dual and trim-silence: the test line is mono,
#: and a counter signal, which trimming would leave empty.
VENDOR_DOCUMENTS = {
    "vonage": lambda url: {"ncco": [{"action": "record", "eventUrl": [url]}]},
    "twilio": lambda url: {
        "twiml": f'<Start><Recording channels="mono" trim="do-not-trim" recordingStatusCallback="{url}"/></Start>'
    },
    "signalwire": lambda url: {"swml": {"record_call": {"status_url": url}}},
    "sinch": lambda url: {"sinch": {"recordingOptions": {"destinationUrl": "s3://archive/box/"}}},
}


def _vendor_shape(dialect: str, headers: dict, body: bytes, row: dict) -> None:
    if dialect == "vonage":
        record = json.loads(body)
        assert record["recording_uuid"].replace("-", "") == row["id"][2:]
        assert record["conversation_uuid"].replace("-", "") == row["call_id"][2:]
        assert record["size"] == row["size"] and "recording_url" in record
    elif dialect == "twilio":
        form = dict(parse_qsl(body.decode()))
        assert form["RecordingStatus"] == "completed"
        assert (form["RecordingSid"], form["CallSid"]) == (row["id"], row["call_id"])
    elif dialect == "signalwire":
        call = json.loads(body)
        assert call["event_type"] == "calling.call.record"
        assert (call["params"]["state"], call["params"]["recording_id"]) == ("finished", row["id"])
    else:
        notify = json.loads(body)
        assert (notify["event"], notify["type"], notify["callid"]) == ("notify", "recording_finished", row["call_id"])


@pytest.mark.parametrize("dialect", sorted(VENDOR_DOCUMENTS))
def test_a_vendor_documents_callbacks_reach_their_url_in_the_vendors_shape(tmp_path, hooks, dialect):
    """The recording a vendor's document starts calls back in that vendor's wire format, whatever the box's
    ``[events] callback_format`` (native: CloudEvents), which the device-wide webhook keeps."""
    from firmware.core import RecordingOptions
    from firmware.delivery.routes import Routes

    from .test_control import Inline

    config = cfg.parse({"events": {"webhook": hooks.url + "/device", "callback_format": "native"}})
    box = Inline(tmp_path)
    try:
        box.journal.routes = Routes(config, "inline").items
        # the box's own per-recording callback, where a Sinch document's notify events go
        box.control.defaults = lambda: RecordingOptions.from_mapping(
            {"format": "wav", "sample_rate": RATE, "status_callback": hooks.url + "/sinch"}
        )
        action, rec, _ = box.control.request(VENDOR_DOCUMENTS[dialect](hooks.url + "/" + dialect), source="api")
        assert action == "start"
        box.feed(0.5)
        box.control.stop()
        for entry in Outbox(box.catalog).due("webhook"):  # as the delivery service's webhook worker sends them
            c = entry.payload["callback"]
            callback = webhooks.Callback(c["url"], c["method"], c["format"], tuple(c["events"]))
            webhooks.deliver(callback, entry.payload["event"])
        row = box.catalog.get(rec["id"])
    finally:
        box.catalog.close()
    got = {path: (headers, body) for method, path, headers, body in hooks.requests}
    assert sorted(got) == sorted(["/device", "/" + dialect]), sorted(got)
    _vendor_shape(dialect, *got["/" + dialect], row)
    headers, body = got["/device"]
    assert headers["Content-Type"].startswith("application/cloudevents+json")
    assert json.loads(body)["type"] == "recording.finished"


def test_a_failing_callback_stays_in_the_outbox_and_goes_out_after_a_restart(tmp_path, hooks):
    hooks.status = 503
    box = Box.make(
        tmp_path,
        counter_signal(3.0),
        RATE,
        events={"webhook": hooks.url + "/device"},
        sim={"scenario": "1=button, 2=button"},
    )
    assert box.run().code == 0
    assert hooks.requests, "the callback was tried"
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    [(attempts, error)] = catalog.query("SELECT attempts, last_error FROM outbox WHERE kind = 'webhook'")
    catalog.close()
    assert attempts >= 1 and "503" in error
    hooks.status, hooks.requests = 200, []
    # a restart with nothing to record: the outbox row is due after its backoff (a second or two)
    box.sections["sim"]["scenario"] = ""
    box.sections["sim"]["pace"] = "realtime"
    assert box.run().code == 0
    assert [json.loads(r[3])["type"] for r in hooks.requests] == ["recording.finished"]
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    assert catalog.query("SELECT COUNT(*) FROM outbox WHERE kind = 'webhook'")[0][0] == 0


def test_a_permanent_callback_error_is_not_retried(tmp_path, hooks):
    hooks.status = 410
    box = Box.make(
        tmp_path, counter_signal(3.0), RATE, events={"webhook": hooks.url}, sim={"scenario": "1=button, 2=button"}
    )
    result = box.run()
    assert result.code == 0
    assert len(hooks.requests) == 1
    assert "giving up webhook" in result.stderr and "410" in result.stderr
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    assert catalog.query("SELECT COUNT(*) FROM outbox")[0][0] == 0


def test_the_outbox_is_bounded_and_drops_the_oldest_events_first(tmp_path):
    catalog = Catalog(tmp_path / "c.sqlite3")
    outbox = Outbox(catalog, limit=150)
    catalog.enqueue([OutboxItem("upload", "s3://b/", {"n": i}, f"RE{i}") for i in range(10)])
    catalog.enqueue([OutboxItem("event", "mqtt", {"n": i}) for i in range(200)])
    assert outbox.trim() == 60
    assert outbox.depth("upload") == 10  # uploads are never dropped
    assert [e.payload["n"] for e in outbox.due("event", limit=1)] == [60]
    assert outbox.dropped == 60


# -- retention, with a fake clock ------------------------------------------------------------------------


DAY = 86400.0


def _retention_box(tmp_path, *, synced=True, free=10**12):
    config = cfg.parse({"retention": {"days": 30, "deleted_metadata_days": 40, "low_space_mb": 500}})
    catalog = Catalog(tmp_path / "c.sqlite3")
    space = {"free": free}
    delivery = Delivery(
        config,
        catalog,
        device_id="box",
        envelope=lambda kind, data: {"type": kind, "data": data},
        public=dict,
        snapshot=dict,
        clock_synced=lambda: synced,
        free_bytes=lambda: space["free"],
    )
    return delivery, catalog, space


def _recording(catalog, tmp_path, rid, created, uploaded=None, size=1000, synced=True):
    media = tmp_path / f"{rid}.wav"
    media.write_bytes(b"x" * size)
    catalog.insert(
        {
            "id": rid,
            "name": rid,
            "call_id": "CA1",
            "source": "button",
            "status": "completed",
            "state": "finished",
            "format": "wav",
            "sample_rate": 8000,
            "channels": 1,
            "track": "both",
            "options": {},
            "start_time": created,
            "date_created": created,
            "path": str(media),
        }
    )
    if uploaded is not None:
        with catalog.transaction() as db:
            db.execute(
                "INSERT INTO uploads (recording_id, destination, state, date_updated, clock_synced) "
                "VALUES (?, 's3://b/', ?, ?, ?)",
                (rid, "done" if uploaded else "pending", uploaded or created, int(synced)),
            )
    return media


def test_retention_deletes_media_30_days_after_upload_and_never_before(tmp_path):
    delivery, catalog, _ = _retention_box(tmp_path)
    old = _recording(catalog, tmp_path, "REold", "2026-01-01T00:00:00.000Z", uploaded="2026-01-02T00:00:00.000Z")
    new = _recording(catalog, tmp_path, "REnew", "2026-01-20T00:00:00.000Z", uploaded="2026-01-21T00:00:00.000Z")
    waiting = _recording(catalog, tmp_path, "REwait", "2025-06-01T00:00:00.000Z", uploaded=False)
    local = _recording(catalog, tmp_path, "RElocal", "2025-06-01T00:00:00.000Z")
    now = 1769990400.0  # 2026-02-02T00:00:00Z: 31 days after the first upload, 12 after the second
    assert retention.run(delivery, now) == ["REold"]
    assert not old.exists() and new.exists() and waiting.exists() and local.exists()
    row = catalog.get("REold")
    assert row["status"] == "deleted" and row["path"] is None and row["deleted_at"].startswith("2026-02-02")
    events = catalog.query("SELECT payload FROM outbox")
    assert not events  # no broker, no callbacks: nothing to queue
    # 41 days later the metadata go too
    assert retention.run(delivery, now + 41 * DAY) == ["REnew"]
    assert catalog.get("REold") is None and catalog.get("REnew")["status"] == "deleted"


def test_low_space_deletes_uploaded_media_oldest_first_and_never_what_waits_for_upload(tmp_path, monkeypatch):
    delivery, catalog, space = _retention_box(tmp_path, free=100 * 10**6)
    first = _recording(catalog, tmp_path, "RE1", "2026-01-01T00:00:00.000Z", uploaded="2026-01-01T01:00:00.000Z")
    second = _recording(catalog, tmp_path, "RE2", "2026-01-02T00:00:00.000Z", uploaded="2026-01-02T01:00:00.000Z")
    waiting = _recording(catalog, tmp_path, "RE3", "2025-01-01T00:00:00.000Z", uploaded=False)
    real_delete = journal.delete_media

    def freeing(path, recording_id=None):
        real_delete(path, recording_id)
        space["free"] += 300 * 10**6  # each file frees 300 MB in this story (a fake: the disk is not that big)

    monkeypatch.setattr(journal, "delete_media", freeing)
    now = 1767312000.0  # 2026-01-02: nothing is 30 days past its upload
    assert retention.run(delivery, now) == ["RE1", "RE2"]  # 100 -> 400 -> 700 MB, above the 500 MB floor
    assert not first.exists() and not second.exists() and waiting.exists()
    space["free"] = 0
    assert retention.run(delivery, now) == []  # only media not yet uploaded are left: never deleted
    assert waiting.exists()


def test_an_upload_confirmed_before_the_clock_was_synchronised_counts_its_age_from_the_sync(tmp_path):
    """A Pi boots with a guess of the time (here two months behind), uploads, then NTP steps the clock: the
    upload was minutes ago, not two months; its 30 days start at the first synchronised run."""
    delivery, catalog, _ = _retention_box(tmp_path)
    early = _recording(
        catalog, tmp_path, "REboot", "2025-12-01T00:00:00.000Z", uploaded="2025-12-01T00:05:00.000Z", synced=False
    )
    synced_at = 1769990400.0  # 2026-02-02T00:00:00Z, 63 days after the stamp the unsynchronised clock gave
    assert retention.run(delivery, synced_at) == [] and early.exists()
    assert retention.run(delivery, synced_at + 29 * DAY) == [] and early.exists()
    assert retention.run(delivery, synced_at + 31 * DAY) == ["REboot"] and not early.exists()


def test_retention_does_nothing_while_the_clock_is_not_synchronised(tmp_path):
    delivery, catalog, _ = _retention_box(tmp_path, synced=False)
    media = _recording(catalog, tmp_path, "REold", "2020-01-01T00:00:00.000Z", uploaded="2020-01-01T00:00:00.000Z")
    assert retention.run(delivery, time.time()) == []
    assert media.exists()


HA_OBJECTS = [("button", "record")] + [
    ("sensor", name) for name in ("state", "input_level", "free_storage", "upload_backlog")
]


def test_home_assistant_discovery_documents(tmp_path, broker):
    from .test_mqtt import BASE, Central

    central = Central(broker)
    central.client.subscribe("homeassistant/#", qos=1)
    try:
        # At real pace, so the box is connected (and has published discovery) well before it stops:
        # recording never waits for the broker, and a box that ends first may never connect at all.
        box = Box.make(
            tmp_path,
            counter_signal(2.0),
            RATE,
            mqtt={"url": broker.url, "ha_discovery": True, "command_auth": "broker"},
            sim={"pace": "realtime"},
        )
        assert box.run().code == 0
        expected = {f"homeassistant/{kind}/test-box/{name}/config" for kind, name in HA_OBJECTS}
        assert _wait(lambda: expected <= {t for t, _ in central.log}), [t for t, _ in central.log]
        docs = {t: json.loads(p) for t, p in central.log if t.startswith("homeassistant/")}
        button = docs["homeassistant/button/test-box/record/config"]
        assert button["command_topic"] == f"{BASE}/cmd" and json.loads(button["payload_press"]) == {"op": "button"}
        level = docs["homeassistant/sensor/test-box/input_level/config"]
        assert level["state_topic"] == f"{BASE}/state" and level["availability_topic"] == f"{BASE}/status"
        assert {"state", "input_level", "free_storage", "upload_backlog"} <= {t.split("/")[3] for t in docs}
        assert all(doc["origin"] == {"name": "edge-recorder", "sw_version": __version__} for doc in docs.values())
    finally:
        central.close()


def test_home_assistants_record_button_works_on_a_box_that_asks_for_a_command_token(tmp_path, broker):
    """Home Assistant publishes the discovery document's ``payload_press`` as it is on ``command_topic``. On a
    box with a command token that payload carries a token good for the button alone: pressing records and
    stops, while the same token cannot start with options, delete, or anything else."""
    import secrets
    import signal

    import numpy as np

    from .test_mqtt import BASE, Central

    token = secrets.token_urlsafe(32)
    central = Central(broker, token=token)
    home_assistant = Central(broker)
    central.client.subscribe("homeassistant/#", qos=1)
    box = Box.make(
        tmp_path,
        np.resize(counter_signal(8.0), 120 * RATE),
        RATE,
        mqtt={"url": broker.url, "ha_discovery": True, "command_token": token},
        sim={"pace": "realtime"},
    )
    proc = box.start()
    try:
        _, payload, _ = central.wait_for(lambda t, p: t == "homeassistant/button/test-box/record/config")
        button = json.loads(payload)
        assert token not in payload.decode(), "the command token itself is never published"
        press = button["payload_press"]
        assert button["command_topic"] == f"{BASE}/cmd"

        def pressed() -> dict:
            return home_assistant.command(press.encode())

        answer = pressed()
        assert answer["ok"] and answer["state"]["state"] == "recording", answer
        answer = pressed()
        assert answer["ok"] and answer["state"]["state"] != "recording", answer
        scoped = json.loads(press)["token"]
        for request in (
            {"op": "start", "options": {"name": "x"}},
            {"op": "stop", "target": "current"},
            {"op": "delete", "id": "RE" + "0" * 32},
            {"op": "list"},
        ):
            request_id = secrets.token_hex(4)
            home_assistant.client.publish(
                f"{BASE}/cmd", json.dumps(request | {"token": scoped, "request_id": request_id})
            )
            _, reply, _ = home_assistant.wait_for(  # refused: answered on the box's own reply topic
                lambda t, p, rid=request_id: t == f"{BASE}/cmd/reply" and json.loads(p).get("request_id") == rid
            )
            assert json.loads(reply)["code"] == "unauthorised", (request, reply)
        assert central.command({"op": "list"})["ok"], "the command token still works for everything"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        central.close()
        home_assistant.close()
    assert "Traceback" not in err
    rows = box.rows()
    assert len(rows) == 1 and rows[0]["source"] == "button", rows
